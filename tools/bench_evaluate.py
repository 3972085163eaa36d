"""Time ``e2econd evaluate`` (every metric, classifiers included) on N real vs N generated jets.

The jets are the repository's toy top jets (``tests/evaluate/toyjets.py``: 3-prong kinematics, a
hard core, ~37 track pixels, ~650 ECAL crystals with selective readout, ~50 HCAL towers per jet),
so the benchmark works from a fresh clone with no external data; "generated" is another seed,
optionally with its ECAL scaled. Files are written once with ``E2EWriter`` into --cache and reused.

    .venv/bin/python tools/bench_evaluate.py --n 10000 [--format hdf5|parquet] [--ecal-scale 1.05]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def toyjets():
    spec = importlib.util.spec_from_file_location("toyjets", REPO / "tests" / "evaluate" / "toyjets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_file(path: Path, n: int, seed: int, ecal_scale: float, fmt: str) -> None:
    from e2econd.data.e2e_io import E2EWriter

    T = toyjets()
    with E2EWriter(str(path), format=fmt) as w:
        for s in range(0, n, 1000):
            j = T.toy_jets(min(1000, n - s), seed=seed * 100_003 + s)
            imgs = T.scale_channel(j["images"], 1, ecal_scale) if ecal_scale != 1.0 else j["images"]
            w.write(imgs, j["pt"], j["m0"], j["y"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--format", default="hdf5", choices=["hdf5", "parquet"])
    ap.add_argument("--cache", default="/tmp/e2econd_bench_evaluate")
    ap.add_argument("--ecal-scale", type=float, default=1.0, help="ECAL energy scale of the 'generated' sample")
    ap.add_argument("--classifiers", default="hl,hits,image")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    ext = "h5" if args.format == "hdf5" else "parquet"
    real = cache / f"toy_real_{args.n}.{ext}"
    gen = cache / f"toy_gen_{args.n}_ecal{args.ecal_scale}.{ext}"
    for path, seed, scale in ((real, 1, 1.0), (gen, 2, args.ecal_scale)):
        if not path.exists():
            t = time.perf_counter()
            make_file(path, args.n, seed, scale, args.format)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    from e2econd.evaluate.report import evaluate

    classifiers = tuple(c for c in args.classifiers.split(",") if c)
    t = time.perf_counter()
    cpu0 = os.times()
    res = evaluate(
        real,
        gen,
        cache / "report",
        overwrite=True,
        plots=not args.no_plots,
        progress=True,
        max_jets=args.n,
        classifiers=classifiers,
    )
    wall = time.perf_counter() - t
    cpu1 = os.times()
    out = {
        "n_real": args.n,
        "n_gen": args.n,
        "n_compare": res["samples"]["n_compare"],
        "format": args.format,
        "wall_s": round(wall, 1),
        "cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1),
        "timing_s": res["timing_s"],
        "headline": {
            k: (round(v["value"], 4), round(v["floor"], 4))
            for k, v in res["headline"].items()
            if v["value"] is not None and v["floor"] is not None
        },
        "load_avg_1min": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
