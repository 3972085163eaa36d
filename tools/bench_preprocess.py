#!/usr/bin/env python
"""Benchmark ``e2econd preprocess``: throughput (jets/s) and peak RSS for --workers 1 and 2.

Builds a Parquet file in the layout of the public E2E files (one row group per jet, doubles,
legacy ``list.item`` nesting, snappy) by replicating the rows of the independent generator's
Parquet files ($E2ECOND_SHARED_DATA/*.parquet if set, else the slices in tests/fixtures), then
runs the preprocess in a fresh subprocess per setting and reports wall time, jets/s and peak
resident memory (main process, largest worker, and the sampled peak of their concurrent total), plus
CPU time per jet (``getrusage``) which, unlike wall time, does not depend on other load on the box.

    PYTHONPATH=. python tools/bench_preprocess.py [--jets 4000] [--workers 1 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_parquets() -> list[Path]:
    d = Path(os.environ.get("E2ECOND_SHARED_DATA") or REPO / "tests" / "fixtures")
    files = sorted(d.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no real-format Parquet files in {d}")
    return files


def build_input(path: Path, n_jets: int, fmt: str) -> None:
    """Replicate the shared rows to ``n_jets`` jets, public-dataset layout."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from e2econd.data.e2e_io import E2EWriter, read_e2e

    chunks = [read_e2e(f) for f in shared_parquets()]
    x = np.concatenate([c.images for c in chunks])
    pt = np.concatenate([c.pt for c in chunks])
    m0 = np.concatenate([c.m0 for c in chunks])
    y = np.concatenate([c.y for c in chunks])
    idx = np.arange(n_jets) % len(x)
    if fmt == "hdf5":
        with E2EWriter(path, format="hdf5") as w:
            for a in range(0, n_jets, 500):
                sl = idx[a : a + 500]
                w.write(x[sl], pt[sl], m0[sl], y[sl])
        return
    writer = None
    try:
        for a in range(0, n_jets, 500):
            sl = idx[a : a + 500]
            n = len(sl)
            vals = pa.array(x[sl].reshape(-1).astype(np.float64))
            l3 = pa.ListArray.from_arrays(pa.array(np.arange(n * 375 + 1, dtype=np.int32) * 125), vals)
            l2 = pa.ListArray.from_arrays(pa.array(np.arange(n * 3 + 1, dtype=np.int32) * 125), l3)
            l1 = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * 3), l2)
            t = pa.table({"X_jets": l1, "pt": pt[sl], "m0": m0[sl], "y": y[sl].astype(np.float64)})
            if writer is None:
                writer = pq.ParquetWriter(str(path), t.schema, compression="snappy", use_compliant_nested_type=False)
            writer.write_table(t, row_group_size=1)
    finally:
        if writer is not None:
            writer.close()


def _status_kb(pid, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    """Child processes that have exec'd (a child caught between fork and exec still shows the
    parent's memory and would be counted twice)."""
    out = []
    try:
        mine = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return out
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            try:
                if Path(f"/proc/{k}/cmdline").read_bytes() != mine:
                    out.append(k)
            except OSError:
                pass
    return out


class RssSampler(threading.Thread):
    """Samples VmRSS of this process + its children every 20 ms: peak of the concurrent total,
    and each worker's own high-water mark (VmHWM, reset at exec, unlike getrusage's ru_maxrss,
    which a spawned worker inherits from its parent)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_total_kb = 0
        self.worker_hwm_kb: dict[int, int] = {}

    def run(self):
        me = os.getpid()
        while not self.stop.is_set():
            kids = _children(me)
            total = _status_kb(me, "VmRSS") + sum(_status_kb(k, "VmRSS") for k in kids)
            self.peak_total_kb = max(self.peak_total_kb, total)
            for k in kids:
                self.worker_hwm_kb[k] = max(self.worker_hwm_kb.get(k, 0), _status_kb(k, "VmHWM"))
            time.sleep(0.02)


def child(args) -> None:
    """Run one preprocess in this (fresh) process and print a JSON record."""
    from e2econd.data.preprocess import preprocess
    from e2econd.utils import provenance

    provenance()  # fixed start-up cost (imports torch for the provenance record), not per jet
    rss_startup = _status_kb("self", "VmRSS")
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = ru0.ru_utime + ru0.ru_stime
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    man = preprocess([args.input], args.out, workers=args.workers, chunk_size=args.chunk_size, progress=False)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    ru_self = resource.getrusage(resource.RUSAGE_SELF)
    ru_child = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = man["counts"]["n_jets"]
    main_hwm = _status_kb("self", "VmHWM")
    cpu = ru_self.ru_utime + ru_self.ru_stime + ru_child.ru_utime + ru_child.ru_stime - cpu0  # excl. start-up
    record = {
        "workers": args.workers,
        "jets": n,
        "wall_s": round(wall, 3),
        "jets_per_s": round(n / wall, 1),
        "cpu_ms_per_jet": round(1e3 * cpu / n, 3),
        "rss_main_startup_mb": round(rss_startup / 1024, 1),
        "peak_rss_main_mb": round(main_hwm / 1024, 1),
        "peak_rss_worker_mb": round(max(sampler.worker_hwm_kb.values(), default=0) / 1024, 1),
        "peak_rss_total_mb": round(max(sampler.peak_total_kb, main_hwm) / 1024, 1),
        "hits_per_jet": {c: round(v["hits"] / n, 1) for c, v in man["counts"]["channels"].items()},
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(record))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jets", type=int, default=4000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--format", choices=["parquet", "hdf5"], default="parquet")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        args.workers = args.workers[0]
        return child(args)

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory(prefix="bench_pp_") as tmp:
        inp = Path(tmp) / ("jets.parquet" if args.format == "parquet" else "jets.h5")
        t0 = time.perf_counter()
        build_input(inp, args.jets, args.format)
        print(
            f"input: {args.jets} jets, {inp.stat().st_size / 1e6:.1f} MB {args.format} "
            f"(built in {time.perf_counter() - t0:.1f} s)",
            file=sys.stderr,
        )
        rows = []
        for w in args.workers:
            out = Path(tmp) / f"out_w{w}"
            cmd = [
                sys.executable,
                __file__,
                "--_child",
                "--input",
                str(inp),
                "--out",
                str(out),
                "--workers",
                str(w),
                "--chunk-size",
                str(args.chunk_size),
            ]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise SystemExit(f"preprocess failed (workers={w}):\n{res.stderr}")
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            rec["format"] = args.format
            rows.append(rec)
    head = ("workers", "jets", "wall_s", "jets/s", "CPU_ms/jet", "RSS_main_MB", "RSS_worker_MB", "RSS_total_MB")
    print(" ".join(f"{h:>13}" for h in head) + "  load")
    for r in rows:
        vals = (
            r["workers"],
            r["jets"],
            r["wall_s"],
            r["jets_per_s"],
            r["cpu_ms_per_jet"],
            r["peak_rss_main_mb"],
            r["peak_rss_worker_mb"],
            r["peak_rss_total_mb"],
        )
        print(" ".join(f"{v:>13}" for v in vals) + f"  {r['load_avg_1min']}")
    if args.json:
        args.json.write_text(json.dumps({"input_format": args.format, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
