#!/usr/bin/env python
"""Benchmark ``e2econd preprocess``: throughput (jets/s) and peak RSS for --workers 1 and 2.

Builds a Parquet file in the layout of the public E2E files (one row group per jet, doubles,
legacy ``list.item`` nesting, snappy) by replicating the rows of ../shared/data/*.parquet, then
runs the preprocess in a fresh subprocess per setting and reports wall time, jets/s and peak
resident memory (``getrusage``: the main process and, separately, the largest worker).

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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_parquets() -> list[Path]:
    for d in (REPO / "shared" / "data", REPO.parent / "shared" / "data"):
        files = sorted(d.glob("*.parquet"))
        if files:
            return files
    raise SystemExit("no shared data (../shared/data/*.parquet)")


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
                sl = idx[a:a + 500]
                w.write(x[sl], pt[sl], m0[sl], y[sl])
        return
    writer = None
    try:
        for a in range(0, n_jets, 500):
            sl = idx[a:a + 500]
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


def child(args) -> None:
    """Run one preprocess in this (fresh) process and print a JSON record."""
    from e2econd.data.preprocess import preprocess
    from e2econd.utils import provenance

    provenance()  # fixed start-up cost (imports torch for the provenance record), not per jet
    t0 = time.perf_counter()
    man = preprocess([args.input], args.out, workers=args.workers, chunk_size=args.chunk_size, progress=False)
    wall = time.perf_counter() - t0
    ru_self = resource.getrusage(resource.RUSAGE_SELF)
    ru_child = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = man["counts"]["n_jets"]
    print(json.dumps({
        "workers": args.workers,
        "jets": n,
        "wall_s": round(wall, 3),
        "jets_per_s": round(n / wall, 1),
        "peak_rss_main_mb": round(ru_self.ru_maxrss / 1024, 1),
        "peak_rss_worker_mb": round(ru_child.ru_maxrss / 1024, 1) if args.workers > 1 else 0.0,
        "peak_rss_total_mb": round((ru_self.ru_maxrss + (ru_child.ru_maxrss * args.workers if args.workers > 1
                                                         else 0)) / 1024, 1),
        "cpu_s": round(ru_self.ru_utime + ru_self.ru_stime + ru_child.ru_utime + ru_child.ru_stime, 2),
        "hits_per_jet": {c: round(v["hits"] / n, 1) for c, v in man["counts"]["channels"].items()},
    }))


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
        print(f"input: {args.jets} jets, {inp.stat().st_size / 1e6:.1f} MB {args.format} "
              f"(built in {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        rows = []
        for w in args.workers:
            out = Path(tmp) / f"out_w{w}"
            cmd = [sys.executable, __file__, "--_child", "--input", str(inp), "--out", str(out),
                   "--workers", str(w), "--chunk-size", str(args.chunk_size)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise SystemExit(f"preprocess failed (workers={w}):\n{res.stderr}")
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            rec["format"] = args.format
            rows.append(rec)
    print(f"{'workers':>7} {'jets':>6} {'wall s':>7} {'jets/s':>8} {'RSS main MB':>12} {'RSS worker MB':>14} "
          f"{'RSS total MB':>13}")
    for r in rows:
        print(f"{r['workers']:>7} {r['jets']:>6} {r['wall_s']:>7.2f} {r['jets_per_s']:>8.1f} "
              f"{r['peak_rss_main_mb']:>12.1f} {r['peak_rss_worker_mb']:>14.1f} {r['peak_rss_total_mb']:>13.1f}")
    if args.json:
        args.json.write_text(json.dumps({"input_format": args.format, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
