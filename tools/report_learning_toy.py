#!/usr/bin/env python
"""Time and margins of the learning test's toy (tests/conftest.py: ``make_toy_images``, ``toy_config``).

Builds the 600-jet toy hit directory (E2EWriter + preprocess), trains it with ``e2econd.train.train``
on 1 CPU thread, samples 200 jets per label at pt = 150 GeV with ``e2econd.sample.Generator`` from the
trained and from an untrained denoiser, and prints the W1 (scipy) of each to a fresh toy draw next to
the toy-vs-toy floor, i.e. the margins that ``tests/train/test_learning.py`` asserts.

    PYTHONPATH=. python tools/report_learning_toy.py [--steps 1200] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

REPO = Path(__file__).resolve().parents[1]


def _conftest():
    spec = importlib.util.spec_from_file_location("toy_conftest", REPO / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _features(images):
    from e2econd.data.hits import images_to_hits

    h = images_to_hits(images).channels[1]
    return {"total": h.sums(), "loge": np.log(np.abs(h.e) + 1e-6), "deta": h.deta}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    from e2econd.data.e2e_io import E2EWriter
    from e2econd.data.preprocess import preprocess
    from e2econd.model import SetTransformer
    from e2econd.rundir import load_run
    from e2econd.sample import Generator, SampleOptions
    from e2econd.train import train

    cf = _conftest()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="toy_"))
    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    pt, m0, y = rng.uniform(100, 200, 600), rng.uniform(5, 30, 600), (np.arange(600) % 2).astype(np.float32)
    with E2EWriter(root / "toy.parquet") as w:
        w.write(cf.make_toy_images(pt, y, seed=2), pt, m0, y)
    preprocess([root / "toy.parquet"], root / "hits", progress=False)
    t1 = time.perf_counter()
    train(root / "hits", root / "run", cf.toy_config(a.steps), device="cpu", progress=False)
    t2 = time.perf_counter()
    run = load_run(root / "run", "cpu")
    torch.manual_seed(0)
    fresh = dataclasses.replace(run, model=SetTransformer(run.config.model).eval().requires_grad_(False))
    out = {"steps": a.steps, "data_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1), "w1": {}}
    n = 200
    for label in (0, 1):
        c = (np.full(n, 150.0), np.full(n, 15.0), np.full(n, label))
        target = _features(cf.make_toy_images(c[0], c[2], seed=100 + label))
        floor = _features(cf.make_toy_images(c[0], c[2], seed=200 + label))
        gens = {
            name: _features(Generator(r, SampleOptions(steps=16, device="cpu", seed=1)).generate(*c, 0))
            for name, r in (("trained", run), ("untrained", fresh))
        }
        out["w1"][f"y={label}"] = {
            k: {
                "trained": wasserstein_distance(target[k], gens["trained"][k]),
                "untrained": wasserstein_distance(target[k], gens["untrained"][k]),
                "floor": wasserstein_distance(target[k], floor[k]),
            }
            for k in target
        }
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
