"""``make_data``: generate E2E jet datasets (Pythia 8 + anti-kt + CMS-like detector) into Parquet/HDF5.

Determinism: the n jets are cut into fixed-size work units of ``unit_size`` jets; unit k gets its
own seeds derived from (seed, k) with ``numpy.random.SeedSequence`` (Pythia ``Random:seed`` and
the detector's numpy generator). Units are written in order, so the output depends only on
(process, n, seed, options, unit_size) — not on the number of worker processes.

Processes and defaults (GeV): ``top`` anti-kt R = 0.8, 400 ≤ pT < 1000, y = 1; ``qg`` anti-kt
R = 0.4, 70 ≤ pT < 200, half quark (y = 1) and half gluon (y = 0) jets, shuffled within each unit;
``quark`` / ``gluon`` only one flavour. Jets have |η| < eta_max = 1.5. Pythia's pT-hat window is
the jet pT window.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from e2econd.errors import E2EInputError
from e2econd.generate.detector import DetectorConfig, simulate
from e2econd.generate.imaging import render, seed_tower
from e2econd.utils import bar_disabled

PROCESSES: dict[str, dict] = {
    "top": {"R": 0.8, "pt_min": 400.0, "pt_max": 1000.0, "kinds": ("top",)},
    "qg": {"R": 0.4, "pt_min": 70.0, "pt_max": 200.0, "kinds": ("quark", "gluon")},
    "quark": {"R": 0.4, "pt_min": 70.0, "pt_max": 200.0, "kinds": ("quark",)},
    "gluon": {"R": 0.4, "pt_min": 70.0, "pt_max": 200.0, "kinds": ("gluon",)},
}
ETA_MAX = 1.5
UNIT_SIZE = 100
PU_POOL = 200
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".h5": "hdf5", ".hdf5": "hdf5"}


def _unit_seeds(seed: int, process: str, unit: int) -> tuple[list[int], np.random.Generator]:
    """Pythia seeds (quark/gluon/top generator, pileup) and the numpy generator of one work unit."""
    from e2econd.generate.pythia_jets import pythia_seed

    ss = np.random.SeedSequence([int(seed), zlib.crc32(process.encode()), int(unit)])
    py_ss, np_ss = ss.spawn(2)
    seeds = [pythia_seed(int(s)) for s in py_ss.generate_state(3, dtype=np.uint64)]
    return seeds, np.random.default_rng(np_ss)


def generate_unit(task: dict, progress: Callable[[int], None] | None = None) -> dict:
    """Generate one work unit: ``task`` has process, unit, n, seed, R, pt_min, pt_max, eta_max,
    detector (dict), pileup. Returns images (n,3,125,125) float32, pt, m0, eta (float64), y (float32),
    events (int) and cpu_s (float)."""
    from e2econd.generate.pythia_jets import JetGenerator, MinBiasPool

    t0 = time.process_time()
    cfg = DetectorConfig.from_dict(task["detector"])
    n = int(task["n"])
    pseeds, rng = _unit_seeds(task["seed"], task["process"], task["unit"])
    kinds = PROCESSES[task["process"]]["kinds"]
    if len(kinds) == 2:  # qg: alternate labels by global jet index, shuffled within the unit
        start = int(task["unit"]) * int(task["unit_size"])
        labels = rng.permutation((np.arange(start, start + n) % 2).astype(np.float32))
        need = {"quark": int((labels == 1).sum()), "gluon": int((labels == 0).sum())}
    else:
        need = {kinds[0]: n}
    pool = MinBiasPool(pseeds[2], PU_POOL) if task.get("pileup", 0) > 0 else None
    images = np.zeros((n, 3, 125, 125), dtype=np.float32)
    out: dict[str, list] = {}
    events = 0
    done = 0
    for kind in ("top", "quark", "gluon"):
        if need.get(kind, 0) == 0:
            continue
        gen = JetGenerator(
            kind, pseeds[1 if kind == "gluon" else 0], task["R"], task["pt_min"], task["pt_max"], task["eta_max"]
        )
        got: list = []
        while len(got) < need[kind]:
            particles, jets = gen.next_event()
            if pool is not None:
                particles = pool.overlay(particles, task["pileup"], rng)
            dep = simulate(particles, cfg, rng)
            for jet in jets[: need[kind] - len(got)]:
                img = render(dep, seed_tower(dep, jet.eta, jet.phi, cfg), cfg, rng)
                got.append((img, jet))
                done += 1
                if progress is not None:
                    progress(1)
        events += gen.n_events
        out[kind] = got
    if len(kinds) == 2:
        order = {"quark": iter(out["quark"]), "gluon": iter(out["gluon"])}
        rows = [next(order["quark" if lab == 1 else "gluon"]) for lab in labels]
    else:
        rows = out[kinds[0]]
    for i, (img, _) in enumerate(rows):
        images[i] = img
    jets = [j for _, j in rows]
    return {
        "images": images,
        "pt": np.array([j.pt for j in jets], dtype=np.float64),
        "m0": np.array([j.m for j in jets], dtype=np.float64),
        "eta": np.array([j.eta for j in jets], dtype=np.float64),
        "y": np.array([j.y for j in jets], dtype=np.float32),
        "events": events,
        "cpu_s": time.process_time() - t0,
    }


def _check_out(out, format: str | None) -> list[tuple[Path, str]]:
    paths = [out] if isinstance(out, (str, os.PathLike)) else list(out)
    if not paths:
        raise E2EInputError("no output file given", key="out")
    result = []
    for p in paths:
        p = Path(p)
        fmt = format if (format and len(paths) == 1) else _SUFFIXES.get(p.suffix.lower())
        if fmt not in ("parquet", "hdf5"):
            raise E2EInputError(
                f"cannot tell the output format from suffix {p.suffix!r} (use .parquet or .h5, or --format)",
                path=p,
                key="out",
            )
        result.append((p, fmt))
    return result


def _check_options(process, n, pt_min, pt_max, workers, unit_size, pileup, eta_max) -> tuple[dict, float, float]:
    """Validate make-data's options before any work: (process spec, pt_min, pt_max) in GeV."""
    if process not in PROCESSES:
        raise E2EInputError(f"unknown process {process!r} (one of {', '.join(PROCESSES)})", key="process")
    spec = PROCESSES[process]
    pt_min = float(spec["pt_min"] if pt_min is None else pt_min)
    pt_max = float(spec["pt_max"] if pt_max is None else pt_max)
    if not (0 < pt_min < pt_max):
        raise E2EInputError(f"pT window [{pt_min}, {pt_max}) GeV is empty or negative", key="pt_min/pt_max")
    if int(n) < 1:
        raise E2EInputError(f"number of jets must be >= 1, got {n}", key="n")
    if int(workers) < 1 or int(unit_size) < 1:
        raise E2EInputError(f"workers and unit_size must be >= 1, got {workers}, {unit_size}", key="workers")
    if pileup < 0:
        raise E2EInputError(f"pileup must be >= 0, got {pileup}", key="pileup")
    if not (0 < eta_max <= 2.0):
        raise E2EInputError(f"eta_max must be in (0, 2], got {eta_max}", key="eta_max")
    return spec, pt_min, pt_max


def _run_units(tasks: list[dict], writers: list, workers: int, bar) -> tuple[int, float]:
    """Generate the work units in order (in ``workers`` spawned processes if > 1) and write each to every
    writer as it arrives; returns (Pythia events, CPU seconds)."""
    events, cpu_s = 0, 0.0

    def consume(res):
        nonlocal events, cpu_s
        for w in writers:
            w.write(res["images"], res["pt"], res["m0"], res["y"])
        events += res["events"]
        cpu_s += res["cpu_s"]

    if workers == 1 or len(tasks) == 1:
        for task in tasks:
            consume(generate_unit(task, progress=bar.update))
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(tasks))) as pool:
            for task, res in zip(tasks, pool.imap(generate_unit, tasks)):
                consume(res)
                bar.update(task["n"])
    return events, cpu_s


def _unit_tasks(config: dict, detector: DetectorConfig) -> list[dict]:
    """One task per work unit of ``config["unit_size"]`` jets (the last one may be shorter)."""
    n, unit_size = config["n"], config["unit_size"]
    keys = ("process", "unit_size", "seed", "R", "pt_min", "pt_max", "eta_max")
    base = {k: config[k] for k in keys} | {"detector": detector.to_dict(), "pileup": float(config["pileup"])}
    return [base | {"unit": k, "n": min(unit_size, n - k * unit_size)} for k in range(math.ceil(n / unit_size))]


def make_data(
    process: str,
    n: int,
    seed: int,
    out: str | os.PathLike | Sequence[str | os.PathLike],
    pt_min: float | None = None,
    pt_max: float | None = None,
    workers: int = 1,
    format: str | None = None,
    *,
    eta_max: float = ETA_MAX,
    pileup: float = 0.0,
    unit_size: int = UNIT_SIZE,
    detector: DetectorConfig | dict | None = None,
    progress: bool | None = True,
) -> dict:
    """Generate ``n`` jets of ``process`` (top | qg | quark | gluon) and write them to ``out``.

    ``out`` is one path or several (e.g. ``["top.parquet", "top.h5"]``: the same jets in both E2E
    formats); the format follows the suffix unless ``format`` is given for a single output.
    pt_min/pt_max (GeV) default to the process window; ``pileup`` = mean number of overlaid
    minimum-bias events (Poisson). ``workers`` > 1 runs work units in parallel processes; the
    result is identical for any number of workers. Returns a summary dict (counts, timing, paths).
    """
    from e2econd.data.e2e_io import E2EWriter

    spec, pt_min, pt_max = _check_options(process, n, pt_min, pt_max, workers, unit_size, pileup, eta_max)
    if isinstance(detector, dict):
        detector = DetectorConfig.from_dict(detector)
    detector = detector or DetectorConfig()
    outputs = _check_out(out, format)
    n, seed, unit_size = int(n), int(seed), int(unit_size)
    try:
        import pythia8mc

        pythia_version = getattr(pythia8mc, "__version__", None)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise E2EInputError(f"make-data needs the 'gen' extras (pythia8mc, fastjet): {exc}") from exc
    config = {
        "generator": "e2econd.generate",
        "process": process,
        "n": n,
        "seed": seed,
        "R": spec["R"],
        "pt_min": pt_min,
        "pt_max": pt_max,
        "eta_max": eta_max,
        "pileup": pileup,
        "unit_size": unit_size,
        "sqrt_s_GeV": 13000.0,
        "pythia8mc": pythia_version,
        "detector": detector.to_dict(),
        "label": "top: y=1" if process == "top" else "quark y=1, gluon y=0",
    }
    tasks = _unit_tasks(config, detector)
    from tqdm.auto import tqdm

    bar = tqdm(total=n, unit="jet", desc=f"make-data {process}", disable=bar_disabled(progress), leave=False)
    t0 = time.perf_counter()
    import contextlib

    with contextlib.ExitStack() as stack:
        # deterministic: no creation time in the metadata, so the same command writes the same bytes
        # (`preprocess` keys its split on the jets themselves, so it would split them the same way anyway)
        writers = [stack.enter_context(E2EWriter(p, format=f, config=config, deterministic=True)) for p, f in outputs]
        events, cpu_s = _run_units(tasks, writers, int(workers), bar)
    bar.close()
    wall = time.perf_counter() - t0
    summary = dict(n=n, events=events, wall_s=wall, cpu_s=cpu_s, wall_ms_per_jet=1e3 * wall / n)
    summary.update(cpu_ms_per_jet=1e3 * cpu_s / n, outputs=[str(p) for p, _ in outputs], config=config)
    return summary
