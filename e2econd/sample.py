"""Conditional generation of E2E jets from a trained run: ``e2econd sample``.

Pipeline per chunk of jets: resolve the conditions (pt, m0, y) -> standardise them -> draw the
hit count of every channel from the learned multiplicity model -> sort jets by multiplicity and
cut them into batches (packed layout: no compute on padding) -> integrate the reverse diffusion
with the chosen sampler (fused update op + masked attention op) -> undo the feature transforms
-> snap hits to the crystal / tower grid (hits on one cell summed) -> images -> E2E file.

Snapping: in the data every hit of a jet is its own crystal (tower), so by default a generated
hit that lands on a cell already taken by a more energetic hit of the same jet moves to the
nearest free cell (``collisions="move"``); the generated multiplicity then equals the sampled
one. ``collisions="sum"`` adds such hits up instead.

Conditions that are not given are not invented: with ``--pt`` but no ``--mass`` (or no
``--label``) the missing values are drawn, jet by jet, from the *training* jets closest to the
given ones (k nearest neighbours in standardised log pt / log m0 within the given label), i.e.
from the training distribution conditional on what was requested. The values used are written
into the output's ``pt``, ``m0`` and ``y`` columns.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from e2econd.config import SampleOptions
from e2econd.data.geometry import CHANNELS
from e2econd.diffusion.denoiser import guided_network
from e2econd.diffusion.graphs import GraphDenoiser, graphs_enabled
from e2econd.diffusion.samplers import run_plan
from e2econd.errors import E2EInputError, NonFiniteError
from e2econd.families import get_family
from e2econd.families.hits import MAX_HITS_PER_JET  # noqa: F401 - re-exported
from e2econd.ops.attention import check_packed_values
from e2econd.rundir import checkpoint_path, dist_env, last_checkpoint, load_run, resolve_device
from e2econd.utils import bar_disabled


@dataclass
class Timing:
    """Wall time split: network evaluations, fused updates, everything else (conditions, snapping, I/O)."""

    network_s: float = 0.0
    update_s: float = 0.0
    total_s: float = 0.0
    jets: int = 0
    hits: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["other_s"] = max(self.total_s - self.network_s - self.update_s, 0.0)
        d["jets_per_s"] = self.jets / self.total_s if self.total_s > 0 else float("nan")
        return d


# ------------------------------------------------------------------------------------ conditions
def _seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (seed, rank, chunk, batch) — reproducible and independent."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def check_conditions(cond_table: dict, pt: float | None, mass: float | None, label: int | None) -> None:
    """Refuse conditions the model never saw (one-line E2EInputError) before any work starts."""
    pts, m0s = np.asarray(cond_table["pt"], float), np.asarray(cond_table["m0"], float)
    labels = sorted({int(v) for v in np.unique(cond_table["y"])})
    if pt is not None:
        lo, hi = float(pts.min()), float(pts.max())
        if not math.isfinite(pt) or pt <= 0:
            raise E2EInputError(f"--pt {pt:g}: jet pt must be a positive number of GeV", key="pt")
        if pt < 0.8 * lo or pt > 1.25 * hi:
            raise E2EInputError(
                f"--pt {pt:g} GeV is outside the training range [{lo:.0f}, {hi:.0f}] GeV (+-20% allowed)", key="pt"
            )
    if mass is not None:
        lo, hi = float(m0s.min()), float(m0s.max())
        if not math.isfinite(mass) or mass < 0:
            raise E2EInputError(f"--mass {mass:g}: jet mass must be >= 0 GeV", key="mass")
        if mass < 0.8 * lo - 1.0 or mass > 1.25 * hi:
            raise E2EInputError(
                f"--mass {mass:g} GeV is outside the training range [{lo:.0f}, {hi:.0f}] GeV", key="mass"
            )
    if label is not None and int(label) not in labels:
        raise E2EInputError(f"--label {label}: the model was trained on labels {labels} only", key="label")


def draw_conditions(
    cond_table: dict, n: int, pt: float | None, mass: float | None, label: int | None, seed: int, knn: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pt, m0, y) for n jets: given values are used as they are; missing ones are drawn from the
    training jets nearest to the given ones (k-NN in standardised log pt, log(m0 + 1))."""
    rng = np.random.default_rng(seed)
    tp = np.asarray(cond_table["pt"], np.float64)
    tm = np.asarray(cond_table["m0"], np.float64)
    ty = np.asarray(cond_table["y"]).astype(np.int64)
    rows = np.arange(tp.size)
    if label is not None:
        rows = rows[ty == int(label)]
    if pt is None and mass is None:
        pick = rng.choice(rows, size=n, replace=True)
    else:
        u = np.stack([np.log(tp[rows]), np.log(tm[rows] + 1.0)], 1)
        mu, sd = u.mean(0), u.std(0) + 1e-12
        d = np.zeros(rows.size)
        if pt is not None:
            d += ((np.log(pt) - mu[0]) / sd[0] - (u[:, 0] - mu[0]) / sd[0]) ** 2
        if mass is not None:
            d += ((np.log(mass + 1.0) - mu[1]) / sd[1] - (u[:, 1] - mu[1]) / sd[1]) ** 2
        k = int(min(max(knn, 1), rows.size))
        nearest = rows[np.argpartition(d, k - 1)[:k]]
        pick = rng.choice(nearest, size=n, replace=True)
    out_pt = np.full(n, pt, np.float64) if pt is not None else tp[pick]
    out_m0 = np.full(n, mass, np.float64) if mass is not None else tm[pick]
    out_y = np.full(n, int(label), np.int64) if label is not None else ty[pick]
    return out_pt, out_m0, out_y


def conditions_from(source: str | os.PathLike, n: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pt, m0, y) jet by jet from a hit directory (its test split) or an E2E file; the first n
    (cycled if n exceeds the source)."""
    src = Path(source)
    if src.is_dir():
        import pyarrow.parquet as pq

        split = src / "test.parquet"
        if not split.exists():
            raise E2EInputError("not a hit directory with a test split (test.parquet missing)", path=src)
        try:
            names = pq.read_schema(split).names
        except Exception as exc:  # noqa: BLE001 - any Arrow failure means an unreadable file
            raise E2EInputError(f"unreadable Parquet file ({type(exc).__name__}: {exc})", path=split) from None
        missing = [c for c in ("pt", "m0", "y") if c not in names]
        if missing:
            raise E2EInputError(
                f"lacks the condition column(s) {missing} (has {names[:8]})", path=split, key=missing[0]
            )
        t = pq.read_table(split, columns=["pt", "m0", "y"])
        pt, m0, y = (t.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in ("pt", "m0", "y"))
    elif src.is_file():
        from e2econd.data.e2e_read import iter_e2e

        cols = [(c.pt, c.m0, c.y) for c in iter_e2e(src, 512)]
        pt, m0, y = (np.concatenate(v) if v else np.zeros(0) for v in zip(*cols)) if cols else (np.zeros(0),) * 3
    else:
        raise E2EInputError("no such file or directory", path=src)
    if pt.size == 0:
        raise E2EInputError("holds no jets to take conditions from", path=src)
    for key, vals, ok in (("pt", pt, pt > 0), ("m0", m0, m0 >= 0), ("y", y, np.isfinite(y))):
        bad = np.flatnonzero(~(np.isfinite(vals) & ok))
        if bad.size:
            raise E2EInputError(
                f"{bad.size} jet(s) with an invalid condition ({key} = {vals[bad[0]]}; pt must be "
                "> 0 GeV, m0 >= 0 GeV, all finite)",
                path=src,
                key=key,
                row=int(bad[0]),
            )
    if n is not None:
        idx = np.arange(n) % pt.size
        pt, m0, y = pt[idx], m0[idx], y[idx]
    return pt, m0, np.asarray(y).astype(np.int64)


# ------------------------------------------------------------------------------------ generation
class Generator:
    """A loaded run plus sampling options: turns condition arrays into images, chunk by chunk."""

    def __init__(self, run, opts: SampleOptions, rank: int = 0):
        self.run, self.opts, self.rank = run, opts, rank
        self.family = get_family(run.config.model.family)
        self.device = next(run.model.parameters()).device
        self.form = run.formulation  # the run's objective decides the samplers it offers
        opts.sampler = self.form.check_sampler(opts.sampler or self.form.default_sampler)
        try:
            extra = {"eta": opts.eta} if opts.sampler == "ddim" else {}  # DDIM's stochasticity (vpred only)
            self.plan = self.form.plan(opts.sampler, opts.steps, **extra)
        except ValueError as exc:
            raise E2EInputError(str(exc), key="steps") from None
        self.steps = self.form.default_steps[opts.sampler] if opts.steps is None else int(opts.steps)
        self.nfe = self.plan.steps  # network evaluations (Heun / midpoint: two per step)
        model_channels = [CHANNELS.index(c) for c in run.channels]
        wanted = opts.channels or list(run.channels)
        missing = [c for c in wanted if c not in run.channels]
        if missing:
            raise E2EInputError(
                f"--channels {','.join(wanted)}: the model was trained on {','.join(run.channels)} "
                f"only (cannot generate {','.join(missing)})",
                key="channels",
            )
        self.model_channels = model_channels
        self.out_channels = [CHANNELS.index(c) for c in wanted]
        self.timing = Timing()
        self._pool = None  # CUDA-graph memory pool shared by the batches' graphs
        self.run_dir = None  # named in errors when set

    def _network(self, channel, cu, max_len, cond, n_jets) -> Callable:
        """``net(x, t) -> v`` of one batch: static shapes, no host reads (``guided_network``)."""
        return guided_network(
            self.run.model,
            channel,
            cu,
            max_len,
            cond,
            n_jets,
            self.opts.guidance,
            bf16=bool(self.run.config.train.bf16),
        )

    def _denoiser(self, net: Callable, x: torch.Tensor) -> Callable:
        """The per-step callable ``(x, c_noise) -> F`` of the loop: a CUDA-graph replay of ``net`` (CUDA), else ``net``
        itself, timed per call on CPU (on CUDA the loop is timed as a whole: no per-step sync)."""
        if graphs_enabled(self.device, self.opts.cuda_graphs):
            try:
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                g = GraphDenoiser(net, x, warmup=1, pool=self._pool)
                self.timing.extra["graphs_captured"] = self.timing.extra.get("graphs_captured", 0) + 1
                return g
            except Exception as exc:  # capture unsupported here: eager fallback, said once
                warnings.warn(
                    f"CUDA graph capture failed ({type(exc).__name__}: {str(exc)[:120]}); sampling eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.opts.cuda_graphs = False
        if self.device.type == "cuda":
            return net

        def denoise(x, t):
            t0 = time.perf_counter()
            v = net(x, t)
            self.timing.network_s += time.perf_counter() - t0
            return v

        return denoise

    @torch.no_grad()
    def generate(
        self,
        pt: np.ndarray,
        m0: np.ndarray,
        y: np.ndarray,
        chunk_index: int,
        on_batch: Callable[[int], None] | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Images float32 (n, 3, 125, 125) for the conditions of one chunk (jets in the given order);
        ``on_batch(n_jets)`` is called after every model batch (progress). ``out``: a float32 buffer of at
        least n images to fill and return (its first n rows), so a caller writing chunk after chunk maps
        fresh memory once (default: a new array)."""
        opts, run = self.opts, self.run
        n = pt.size
        if out is None or out.shape[0] < n or out.shape[1:] != (3, 125, 125) or out.dtype != np.float32:
            out = np.empty((n, 3, 125, 125), np.float32)
        images = out[:n]
        # zeroed by a sequential pass: the decoders' first writes into fresh pages are scattered (jets in
        # size order), which costs ~50x a sequential first touch on this box (1.6 s against 0.03 s per 512 jets)
        images.fill(0.0)
        if n == 0:
            return images
        gen = torch.Generator(device="cpu").manual_seed(_seed(opts.seed, self.rank, chunk_index, 0))
        ct = run.transforms.condition.forward(pt.astype(np.float64), m0.astype(np.float64)).astype(np.float32)
        ct = torch.from_numpy(ct)
        yt = torch.from_numpy(np.asarray(y, np.int64))
        sizes, state = self.family.draw_stage1(run, ct, yt, gen)  # tokens per jet, the family's stage-1 draw
        order = np.argsort(sizes, kind="stable")  # batches of similar size
        bs = max(int(opts.batch_size), 1)
        for b, start in enumerate(range(0, n, bs)):
            idx = order[start : start + bs]
            self.family.generate_batch(self, idx, state, ct, yt, images, chunk_index, b)
            if on_batch is not None:
                on_batch(idx.size)
        keep = np.zeros(3, bool)
        keep[self.out_channels] = True
        images[:, ~keep] = 0.0
        bad = np.flatnonzero(~np.isfinite(images.sum(axis=(1, 2, 3), dtype=np.float64)))  # NaN/inf propagate
        if bad.size:  # the decoders clip energies, so this is a defect: never write it
            raise NonFiniteError(
                f"{bad.size} of {n} decoded jets of chunk {chunk_index} hold NaN/inf pixels (first: jet {bad[0]})",
                path=self.run_dir,
            )
        self.timing.jets += n
        return images

    def integrate(self, channel, cu, ct, yt, cond_extra, n_feat, chunk_index, b) -> torch.Tensor:
        """Reverse diffusion of one packed batch (shared by the families): noise (total, n_feat) ->
        sampler plan through the fused op -> clean tokens on the device; NaN/inf -> NonFiniteError."""
        opts, dev = self.opts, self.device
        B = cu.numel() - 1
        lengths = cu[1:] - cu[:-1]
        tot = int(cu[-1])
        self.timing.hits += tot
        seed = _seed(opts.seed, self.rank, chunk_index, b + 1)
        gen = torch.Generator(device=dev).manual_seed(seed)
        x = torch.randn(tot, n_feat, generator=gen, device=dev)
        if self.plan.init_std != 1.0:  # edm starts from N(0, σ_max²)
            x = x * self.plan.init_std
        cond = {"pt": ct[:, 0].to(dev), "m0": ct[:, 1].to(dev), "y": yt.to(dev)}
        cond.update({k: v.to(dev) for k, v in (cond_extra or {}).items()})
        max_len = int(lengths.max()) if B else 0
        check_packed_values(cu, tot, max_len)  # host copy: validated once, the loop reads nothing back
        denoise = self._denoiser(self._network(channel.to(dev), cu.to(dev), max_len, cond, B), x)
        t0 = time.perf_counter()
        net0 = self.timing.network_s
        x = run_plan(denoise, x, self.plan, mask=None, seed=seed & 0x7FFFFFFF, clip=opts.clip)
        n_bad = int((~torch.isfinite(x)).any(1).sum())  # the batch's one host read of the loop's result
        if dev.type == "cuda":  # network and updates overlap: the loop is one number
            self.timing.network_s += time.perf_counter() - t0
        else:
            self.timing.update_s += (time.perf_counter() - t0) - (self.timing.network_s - net0)
        if n_bad:
            raise NonFiniteError(
                f"the network returned non-finite values: {n_bad} of {tot} tokens of batch {b} "
                f"(chunk {chunk_index}) are NaN/inf after sampling (diverged checkpoint?)",
                path=self.run_dir,
            )
        return x


# ------------------------------------------------------------------------------------- command
def default_run_dir() -> str:
    """$E2ECOND_RUN, else the most recently trained run of ``e2econd demo`` (demo/run_*)."""
    env = os.environ.get("E2ECOND_RUN")
    if env:
        return env
    runs = sorted(
        (p for p in Path("demo").glob("run_*") if last_checkpoint(p).exists()),
        key=lambda p: last_checkpoint(p).stat().st_mtime,
    )
    if not runs:
        raise E2EInputError(
            "no RUN_DIR given, $E2ECOND_RUN unset and no demo/run_* found (run `e2econd demo` or `e2econd train` first)"
        )
    return str(runs[-1])


def _shard_path(out: Path, rank: int, world: int) -> Path:
    if world == 1:
        return out
    return out.with_name(f"{out.stem}.rank{rank:03d}-of-{world:03d}{out.suffix}")


def resolve_conditions(cond_table: dict, opts: SampleOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (pt GeV, m0 GeV, y) of every jet to generate: from ``--conditions-from``, or drawn given the options."""
    if opts.conditions_from is not None:
        pt, m0, y = conditions_from(opts.conditions_from, opts.n)
        labels = {int(v) for v in np.unique(cond_table["y"])}
        bad = sorted({int(v) for v in np.unique(y)} - labels)
        if bad:
            raise E2EInputError(
                f"labels {bad} were never seen in training (seen: {sorted(labels)})", path=opts.conditions_from, key="y"
            )
        return pt, m0, y
    check_conditions(cond_table, opts.pt, opts.mass, opts.label)
    n = 10000 if opts.n is None else opts.n
    return draw_conditions(cond_table, n, opts.pt, opts.mass, opts.label, seed=_seed(opts.seed, 0xC0D), knn=opts.knn)


def sample_to_file(
    run_dir: str | os.PathLike, out: str | os.PathLike, opts: SampleOptions, progress: bool | None = None
) -> dict:
    """Generate ``opts.n`` jets with the run in ``run_dir`` and write them as an E2E file.

    Under torchrun (WORLD_SIZE > 1) each rank generates its share of the jets with its own seed
    stream and writes ``OUT.rankRRR-of-WWW.ext``; rank 0 also writes ``OUT.manifest.json``.
    Returns a summary with the timing split (network, update, other).
    """
    from tqdm import tqdm

    from e2econd.data.e2e_write import E2EWriter
    from e2econd.utils import provenance, write_json_atomic

    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".pq", ".h5", ".hdf5"):
        raise E2EInputError("output must end in .parquet or .h5", path=out)
    opts.validate()
    rank, world, local_rank = dist_env()
    run_path = Path(run_dir)
    if not checkpoint_path(run_path).exists() and run_path.suffix != ".pt":
        raise E2EInputError("no checkpoint found (expected checkpoints/last.pt; train first)", path=run_path)
    device = resolve_device(opts.device, local_rank)
    run = load_run(run_path, device)
    pt, m0, y = resolve_conditions(run.cond_table, opts)
    gen = Generator(run, opts)  # validates sampler, steps and channels before any work
    gen.rank, gen.run_dir = rank, run_path
    n_all = pt.size
    lo, hi = n_all * rank // world, n_all * (rank + 1) // world
    pt, m0, y = pt[lo:hi], m0[lo:hi], y[lo:hi]
    config = dict(run_dir=str(run_path.resolve()), run_step=run.step, channels_model=run.channels)
    config.update(family=run.config.model.family)
    config.update(objective=run.config.objective.name)
    config.update(options=asdict(opts), steps=gen.steps, nfe=gen.nfe, rank=rank, world_size=world, device=str(device))
    config.update(jets=int(pt.size), jet_range=[lo, hi])
    shard = _shard_path(out, rank, world)
    t_start = time.perf_counter()
    with (
        E2EWriter(shard, config=config, deterministic=True) as writer,
        tqdm(
            total=pt.size,
            unit="jet",
            desc=f"sample[{opts.sampler}x{gen.steps}]",
            disable=rank != 0 or bar_disabled(progress),
        ) as bar,
    ):
        buffer = None  # one image buffer for every chunk: the writer has encoded a chunk when write returns
        for c, s in enumerate(range(0, pt.size, opts.chunk_size)):
            e = min(s + opts.chunk_size, pt.size)
            images = gen.generate(
                pt[s:e], m0[s:e], y[s:e], chunk_index=lo // max(opts.chunk_size, 1) + c, on_batch=bar.update, out=buffer
            )
            buffer = images if buffer is None else buffer
            writer.write(images, pt[s:e], m0[s:e], y[s:e].astype(np.float32))
    gen.timing.total_s = time.perf_counter() - t_start
    summary = dict(out=str(shard), jets=int(pt.size), family=run.config.model.family, sampler=opts.sampler)
    summary.update(objective=run.config.objective.name, steps=gen.steps, nfe=gen.nfe)
    summary.update(timing=gen.timing.as_dict(), device=str(device))
    if world > 1 and rank == 0:
        manifest = {
            "shards": [str(_shard_path(out, r, world).name) for r in range(world)],
            "jets": int(n_all),
            "provenance": provenance(config),
        }
        write_json_atomic(out.with_name(out.name + ".manifest.json"), manifest)
    return summary


def summary_line(summary: dict) -> str:
    t = summary["timing"]
    return (
        f"wrote {summary['jets']} jets to {summary['out']} in {t['total_s']:.1f} s "
        f"({t['jets_per_s']:.1f} jets/s; network {t['network_s']:.1f} s, update {t['update_s']:.2f} s, "
        f"other {t['other_s']:.1f} s)"
    )


def to_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=str)
