"""E2E files -> hit-set directory (``e2econd preprocess``): streaming, parallel, atomic.

Each input (Parquet or HDF5, detected by content) is cut into tasks of about ``chunk_size`` jets
(aligned to Parquet row groups / HDF5 chunks). A task reads its jets, turns every image into
per-channel hit sets (:func:`e2econd.data.hits.images_to_hits`: no truncation unless
``max_hits``), assigns each jet to train/val/test and returns compact Arrow tables; the main
process appends them to ``{train,val,test}.parquet`` in input order. Memory stays bounded
(a few chunks in flight), whatever the input size, and the output is identical for any
``workers``.

Split: :mod:`e2econd.data.split` (keyed on the jets' kinematics, the row and ``--seed``).

Transforms (:mod:`e2econd.data.transforms`) are fitted on the train split's real hits: pass 1
while writing, pass 2 (asinh-energy moments) re-reads the train file's energy columns.

Everything is written into a temporary sibling directory and renamed into place on success;
on any error (bad input: one-line :class:`E2EInputError`) nothing is left behind.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2econd._version import __version__
from e2econd.data.e2e_read import open_e2e
from e2econd.data.geometry import CHANNELS
from e2econd.data.hits import NEGATIVES, images_to_hits
from e2econd.data.hitstore import SPLITS, hit_schema, hits_to_table
from e2econd.data.split import assign_split, jets_key, parse_split
from e2econd.data.transforms import TransformFitter
from e2econd.errors import E2EInputError
from e2econd.utils import atomic_dir, bar_disabled, provenance, provenance_json, write_json_atomic

DEFAULT_SPLIT = (0.8, 0.1, 0.1)
FORMAT = "e2econd-hits"
FORMAT_VERSION = 1
ROW_GROUP = 2048  # jets per row group of the split files
READ_BATCH = 64  # jets decoded at once inside a task: Arrow needs ~1-2 MB per jet while decoding


# --------------------------------------------------------------------------------------------
# inputs and tasks


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class InputInfo:
    path: Path
    format: str
    size: int
    sha256: str  # of the file's bytes (provenance)
    split_key: str  # jets_key of its kinematics (the split's key)
    n_jets: int
    boundaries: np.ndarray  # row indices where tasks may start (row groups / HDF5 chunks), ends with n

    def record(self) -> dict:
        return {
            "path": str(self.path),
            "name": self.path.name,
            "format": self.format,
            "size": self.size,
            "sha256": self.sha256,
            "split_key": self.split_key,
            "n_jets": self.n_jets,
        }


def inspect_input(path: str | os.PathLike) -> InputInfo:
    """Validate an input (format, columns, image shape) and describe it; hashes its bytes and its jets."""
    path = Path(path).resolve()
    reader = open_e2e(path)
    try:
        n = int(reader.n)
        key = jets_key(**reader.scalars()) if n else ""
        if reader.format == "parquet":
            bounds = np.asarray(reader.group_start, np.int64)
        else:
            step = reader.step
            bounds = np.append(np.arange(0, n, step, dtype=np.int64), n)
    finally:
        reader.close()
    if n == 0:
        raise E2EInputError("empty file: contains no jets", path=path)
    return InputInfo(path, reader.format, path.stat().st_size, sha256_file(path), key, n, bounds)


def plan_tasks(info: InputInfo, chunk_size: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of about ``chunk_size`` jets, cut at allowed boundaries."""
    tasks = []
    start = 0
    for b in info.boundaries[1:]:
        b = int(b)
        if b - start >= chunk_size or b == info.n_jets:
            if b > start:
                tasks.append((start, b))
            start = b
    return tasks


# --------------------------------------------------------------------------------------------
# worker

_READERS: dict[str, object] = {}


def _worker_init() -> None:
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


def _reader(path: str):
    r = _READERS.get(path)
    if r is None:
        if len(_READERS) > 4:
            for old in _READERS.values():
                old.close()
            _READERS.clear()
        r = _READERS[path] = open_e2e(path)
    return r


def _close_readers() -> None:
    for r in _READERS.values():
        r.close()
    _READERS.clear()


def _new_stats() -> dict:
    return {
        "n_jets": 0,
        "splits": {s: 0 for s in SPLITS},
        "channels": {c: {"hits": 0, "energy": 0.0, "dropped_energy": 0.0, "jets_truncated": 0} for c in CHANNELS},
        "hcal_towers": 0,
        "hcal_nonuniform_blocks": 0,
        "hcal_jets_with_nonuniform_blocks": 0,
    }


def _merge_stats(a: dict, b: dict) -> None:
    a["n_jets"] += b["n_jets"]
    for s in SPLITS:
        a["splits"][s] += b["splits"][s]
    for c in CHANNELS:
        for k in a["channels"][c]:
            a["channels"][c][k] += b["channels"][c][k]
    for k in ("hcal_towers", "hcal_nonuniform_blocks", "hcal_jets_with_nonuniform_blocks"):
        a[k] += b[k]


def run_task(task: dict) -> dict:
    """Process jets ``[start, stop)`` of one input: hits, split, per-split tables, fit pass 1, counts."""
    import pyarrow as pa

    opts = task["options"]
    path = task["path"]
    reader = _reader(path)
    tables: dict[str, list] = {s: [] for s in SPLITS}
    fitter = TransformFitter()
    stats = _new_stats()
    schema = hit_schema()
    for chunk in reader.iter(min(opts["chunk_size"], READ_BATCH), task["start"], task["stop"]):
        n = len(chunk)
        rows = chunk.start + np.arange(n, dtype=np.int64)
        bad = np.flatnonzero(chunk.pt <= 0)
        if bad.size:
            raise E2EInputError(f"non-positive jet pt {chunk.pt[bad[0]]}", path=path, key="pt", row=int(rows[bad[0]]))
        bad = np.flatnonzero(chunk.m0 < 0)
        if bad.size:
            raise E2EInputError(f"negative jet mass {chunk.m0[bad[0]]}", path=path, key="m0", row=int(rows[bad[0]]))
        batch = images_to_hits(chunk.images, opts["threshold"], opts["negatives"], opts["max_hits"])
        jets = {
            "jet_id": task["jet_id_base"] + rows,
            "source": np.full(n, task["source"], np.int32),
            "row": rows,
            "pt": chunk.pt,
            "m0": chunk.m0,
            "y": chunk.y,
        }
        table = hits_to_table(jets, batch, schema)
        split = assign_split(task["split_key"], rows, opts["seed"], opts["split"])
        for s, name in enumerate(SPLITS):
            sel = np.flatnonzero(split == s)
            stats["splits"][name] += int(sel.size)
            if sel.size:
                tables[name].append(table if sel.size == n else table.take(pa.array(sel)))
        train = split == 0
        fitter.update_conditions(chunk.pt[train], chunk.m0[train])
        stats["n_jets"] += n
        for c, fh in enumerate(batch.channels):
            in_train = train[fh.jet]
            fitter.update(c, fh.deta[in_train], fh.dphi[in_train], fh.e[in_train])
            st = stats["channels"][CHANNELS[c]]
            st["hits"] += int(fh.e.size)
            st["energy"] += float(fh.e.astype(np.float64).sum())
            st["dropped_energy"] += float(fh.dropped.sum())
            st["jets_truncated"] += int((fh.dropped != 0).sum())
        stats["hcal_towers"] += int((batch.channels[2].size == 5).sum())
        stats["hcal_nonuniform_blocks"] += int(batch.nonuniform_blocks.sum())
        stats["hcal_jets_with_nonuniform_blocks"] += int((batch.nonuniform_blocks > 0).sum())
    out = {name: pa.concat_tables(t) if len(t) > 1 else t[0] for name, t in tables.items() if t}
    return {"tables": out, "fitter": fitter, "stats": stats, "n": task["stop"] - task["start"]}


# --------------------------------------------------------------------------------------------
# driver


def _results(tasks: list[dict], workers: int):
    """Task results in task order; at most ~2 per worker in flight (bounded memory)."""
    if workers <= 1:
        try:
            for t in tasks:
                yield run_task(t)
        finally:
            _close_readers()
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        pending: deque = deque()
        it = iter(tasks)
        for t in it:
            pending.append(pool.apply_async(run_task, (t,)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            res = pending.popleft().get()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.apply_async(run_task, (nxt,)))
            yield res


def _check_options(inputs, out: Path, threshold, negatives, max_hits, split, workers, chunk_size, overwrite):
    """Validate the options before any work (one-line ``E2EInputError``); returns the split fractions."""
    if not inputs:
        raise E2EInputError("no input files given")
    if not (np.isfinite(threshold) and threshold >= 0):
        raise E2EInputError(f"--threshold {threshold}: must be a finite number >= 0 GeV")
    if negatives not in NEGATIVES:
        raise E2EInputError(f"--negatives {negatives!r}: choose keep or drop")
    if max_hits is not None and int(max_hits) < 1:
        raise E2EInputError(f"--max-hits {max_hits}: must be >= 1")
    fractions = parse_split(split)
    if workers < 1 or chunk_size < 1:
        raise E2EInputError("--workers and --chunk-size must be >= 1")
    if out.exists() and not overwrite:
        raise E2EInputError("output directory exists (use --overwrite)", path=out)
    if out.exists() and not out.is_dir():
        raise E2EInputError("output path exists and is not a directory", path=out)
    return fractions


def _make_tasks(infos, options: dict, chunk_size: int) -> tuple[list[dict], int]:
    """Worker tasks (one per chunk of rows of one input, jet ids global over the inputs) and the jet total."""
    tasks = []
    base = 0
    for k, info in enumerate(infos):
        for start, stop in plan_tasks(info, chunk_size):
            tasks.append(
                {
                    "path": str(info.path),
                    "source": k,
                    "split_key": info.split_key,
                    "jet_id_base": base,
                    "start": start,
                    "stop": stop,
                    "options": options,
                }
            )
        base += info.n_jets
    return tasks, base


def _write_splits(tmp: Path, schema, tasks, workers, n_total, progress, stats, fitter) -> None:
    """Pass 1: run the tasks, write ``{train,val,test}.parquet`` under ``tmp``, merge stats and fitter."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    jet_cols = [n for n in schema.names if not n.startswith(tuple(f"{c}_" for c in CHANNELS))]
    writers = {
        s: pq.ParquetWriter(
            str(tmp / f"{s}.parquet"), schema, compression="zstd", use_dictionary=False, write_statistics=jet_cols
        )
        for s in SPLITS
    }
    buffers: dict[str, list] = {s: [] for s in SPLITS}

    def flush(name: str, at_least: int) -> None:
        # one row group per ~ROW_GROUP jets: fewer, larger groups write and load faster
        if buffers[name] and sum(t.num_rows for t in buffers[name]) >= at_least:
            table = pa.concat_tables(buffers[name]).replace_schema_metadata(schema.metadata)
            writers[name].write_table(table, row_group_size=table.num_rows)
            buffers[name] = []

    try:
        with tqdm(total=n_total, unit="jet", desc="preprocess", disable=bar_disabled(progress), smoothing=0.1) as bar:
            for res in _results(tasks, workers):
                for name, table in res["tables"].items():
                    buffers[name].append(table)
                    flush(name, ROW_GROUP)
                fitter.merge(res["fitter"])
                _merge_stats(stats, res["stats"])
                bar.update(res["n"])
        for name in SPLITS:
            flush(name, 1)
    finally:
        for w in writers.values():
            w.close()


def _fit_energy(tmp: Path, fitter) -> None:
    """Pass 2: asinh-energy moments on the train split's hits."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(tmp / "train.parquet"))
    for batch in pf.iter_batches(batch_size=4096, columns=[f"{c}_e" for c in CHANNELS]):
        for c, name in enumerate(CHANNELS):
            fitter.update_energy(c, batch.column(f"{name}_e").flatten().to_numpy())


def preprocess(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    threshold: float = 0.0,
    negatives: str = "keep",
    max_hits: int | None = None,
    split: str | Sequence[float] = DEFAULT_SPLIT,
    seed: int = 0,
    workers: int = 1,
    chunk_size: int = 256,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict:
    """E2E files -> hit-set directory ``out`` (see module docstring). Returns the manifest.

    threshold: keep pixels with |E| > threshold GeV (0 = lossless); negatives: "keep" or "drop"
    (drop E < 0); max_hits: keep the N most energetic hits per jet and channel (None = all).
    """
    out = Path(out)
    fractions = _check_options(inputs, out, threshold, negatives, max_hits, split, workers, chunk_size, overwrite)
    infos = [inspect_input(p) for p in inputs]
    options = {
        "threshold": float(threshold),
        "negatives": negatives,
        "max_hits": None if max_hits is None else int(max_hits),
        "split": list(fractions),
        "seed": int(seed),
        "chunk_size": int(chunk_size),
    }
    config = {**options, "workers": int(workers), "inputs": [str(i.path) for i in infos], "out": str(out)}
    tasks, n_total = _make_tasks(infos, options, chunk_size)
    stats = _new_stats()
    fitter = TransformFitter()
    schema = hit_schema({"e2econd": provenance_json(config)})
    with atomic_dir(out, overwrite=overwrite) as tmp:
        _write_splits(tmp, schema, tasks, workers, n_total, progress, stats, fitter)
        if stats["splits"]["train"] == 0:
            raise E2EInputError(
                f"train split is empty ({n_total} jets, --split {','.join(map(str, fractions))}): "
                "cannot fit transforms",
                path=out,
            )
        _fit_energy(tmp, fitter)
        transforms = fitter.result()
        transforms.fit.update({"split": "train", "seed": int(seed)})
        transforms.save(tmp / "transforms.json", config)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "e2econd": __version__,
            "inputs": [i.record() for i in infos],
            "options": options,
            "split_rule": "splitmix64(seed, split_key[:16], row) / 2**64 vs cumulative fractions; "
            "split_key = sha256(b'e2econd-split-key-v2', int64 n, float32 LE pt, m0, y)",
            "counts": stats,
            "files": {s: f"{s}.parquet" for s in SPLITS},
            "provenance": provenance(config),
        }
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest
