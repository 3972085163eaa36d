"""Time the image classifier as ``evaluate`` runs it: value (G vs B) and floor (A vs B), 3 seeds each.

A, B and G are N toy top jets each (``tests/evaluate/toyjets.py``, independent seeds; G with its ECAL
scaled by --ecal-scale), streamed chunk by chunk into ``SparseImages`` (never all dense in memory).

    .venv/bin/python tools/bench_image_classifier.py --n 10000 [--threads 2] [--max-train 6000] [--out x.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def toyjets():
    spec = importlib.util.spec_from_file_location("toyjets", REPO / "tests" / "evaluate" / "toyjets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sample(n: int, seed: int, ecal_scale: float = 1.0):
    """SparseImages and conditions of n toy jets, generated and encoded 1,000 at a time."""
    import numpy as np

    from e2econd.evaluate.image_classifier import SparseImages

    T = toyjets()
    parts, cond = [], {"pt": [], "m0": [], "y": []}
    for s in range(0, n, 1000):
        j = T.toy_jets(min(1000, n - s), seed=seed * 100_003 + s)
        imgs = T.scale_channel(j["images"], 1, ecal_scale) if ecal_scale != 1.0 else j["images"]
        parts.append(SparseImages.from_images(imgs))
        for k in cond:
            cond[k].append(j[k])
    return SparseImages.concat(parts), {k: np.concatenate(v) for k, v in cond.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=None, help="default: the library's MAX_TRAIN")
    ap.add_argument("--ecal-scale", type=float, default=1.05)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from e2econd.evaluate.image_classifier import MAX_TRAIN, image_classifier_auc
    from e2econd.utils import provenance

    t0 = time.perf_counter()
    (sa, ca), (sb, cb), (sg, cg) = sample(a.n, 1), sample(a.n, 2), sample(a.n, 3, a.ecal_scale)
    t_enc = time.perf_counter() - t0
    opts = {
        "seeds": tuple(range(a.seeds)),
        "threads": a.threads,
        "max_train": MAX_TRAIN if a.max_train is None else a.max_train,
        "progress": False,
    }
    value = image_classifier_auc(sb, cb, sg, cg, **opts)
    floor = image_classifier_auc(sb, cb, sa, ca, **opts)
    res = {
        "n_per_sample": a.n,
        "ecal_scale": a.ecal_scale,
        "encode_s": t_enc,
        "sparse_mb_per_sample": sb.nbytes / 2**20,
        "value": value,
        "floor": floor,
        "classifier_s": value["time_s"] + floor["time_s"],
        "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "provenance": provenance({k: v for k, v in vars(a).items()}),
    }
    print(json.dumps({k: v for k, v in res.items() if k != "provenance"}, indent=1, default=str))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
