"""Time ``e2econd evaluate`` on N real vs N generated jets (default 20,000 vs 20,000).

The jets are resampled from the real-format top-jet file of an independent generator (the full
200-jet file in $E2ECOND_SHARED_DATA if set, else the committed 16-jet slice in tests/fixtures) with
random η/φ reflections and 5 % per-pixel energy jitter, so occupancies (≈40 track pixels, ≈650
ECAL pixels, ≈47 HCAL towers per jet) are realistic; "generated" uses another seed and may be
scaled. Files are written once with E2EWriter into --cache and reused.

    PYTHONPATH=. python tools/bench_evaluate.py --n 20000 [--format hdf5|parquet] [--emd-pairs 500]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

SRC = (Path(os.environ.get("E2ECOND_SHARED_DATA") or Path(__file__).resolve().parents[1] / "tests" / "fixtures")
       / "E2Esim_TOP_IMGjet_R0.8_pu0_n200_seed102.h5")


def make_file(path: Path, n: int, seed: int, scale: float, fmt: str) -> None:
    from e2econd.data.e2e_io import E2EWriter, read_e2e

    base = read_e2e(SRC)
    rng = np.random.default_rng(seed)
    with E2EWriter(str(path), format=fmt) as w:
        for s in range(0, n, 500):
            k = min(500, n - s)
            idx = rng.integers(0, len(base.images), k)
            imgs = base.images[idx].copy()
            flip_eta, flip_phi = rng.random(k) < 0.5, rng.random(k) < 0.5
            imgs[flip_eta] = imgs[flip_eta][:, :, ::-1, :]
            imgs[flip_phi] = imgs[flip_phi][:, :, :, ::-1]
            nz = imgs != 0
            imgs[nz] *= (scale * (1.0 + 0.05 * rng.standard_normal(int(nz.sum())))).astype(np.float32)
            w.write(imgs, base.pt[idx], base.m0[idx], base.y[idx])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--format", default="hdf5", choices=["hdf5", "parquet"])
    ap.add_argument("--cache", default="/tmp/e2econd_bench_evaluate")
    ap.add_argument("--emd-pairs", type=int, default=500)
    ap.add_argument("--scale", type=float, default=1.0, help="energy scale of the 'generated' sample")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    ext = "h5" if args.format == "hdf5" else "parquet"
    real = cache / f"real_{args.n}.{ext}"
    gen = cache / f"gen_{args.n}_x{args.scale}.{ext}"
    for path, seed, scale in ((real, 1, 1.0), (gen, 2, args.scale)):
        if not path.exists():
            t = time.perf_counter()
            make_file(path, args.n, seed, scale, args.format)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    from e2econd.evaluate.report import evaluate

    t = time.perf_counter()
    cpu0 = os.times()
    res = evaluate(
        real, gen, cache / "report", emd_pairs=args.emd_pairs, overwrite=True, plots=not args.no_plots, progress=True
    )
    wall = time.perf_counter() - t
    cpu1 = os.times()
    out = {
        "n_real": args.n,
        "n_gen": args.n,
        "format": args.format,
        "emd_pairs": args.emd_pairs,
        "wall_s": round(wall, 1),
        "cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1),
        "timing_s": res["timing_s"],
        "classifier_auc": round(res["classifier_auc"]["value"], 4),
        "classifier_auc_floor": round(res["classifier_auc"]["floor"], 4),
        "w1_E_calo_ratio": res["metrics"]["w1_E_calo"]["ratio"],
        "emd_calo_ratio": res["metrics"]["emd_calo"]["ratio"],
        "load_avg_1min": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
