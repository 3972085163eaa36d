"""Tests that fail when the model learns nothing: the toy set distribution of tests/conftest.py
(``toy_images``), trained once per session through ``e2econd.train.train`` and sampled through
``e2econd.sample.Generator`` (multiplicity model, DPM-Solver++, transforms, snapping to crystals).

Oracles: a fresh draw of the toy itself (the target) and scipy's 1-D Wasserstein distance; an
untrained denoiser (fresh initialisation, same multiplicity model) is the baseline the trained one
must beat by far. EMA: the checkpointed EMA against the average of parameter snapshots computed
by hand from the per-step checkpoints.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from e2econd.data.hits import images_to_hits
from e2econd.model import SetTransformer
from e2econd.rundir import load_checkpoint, load_run, save_checkpoint, step_checkpoint
from e2econd.sample import Generator, SampleOptions
from e2econd.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

N = 200  # generated jets per condition


def _features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-jet ECAL total energy (GeV) and hit count; per-hit log energy and Δη."""
    h = images_to_hits(images).channels[1]
    return {"total": h.sums(), "n": h.counts.astype(float), "loge": np.log(np.abs(h.e) + 1e-6), "deta": h.deta}


def _generate(run, pt: float, y: int, seed: int = 1) -> dict[str, np.ndarray]:
    gen = Generator(run, SampleOptions(steps=16, device="cpu", seed=seed))
    images = gen.generate(np.full(N, pt), np.full(N, 15.0), np.full(N, y), chunk_index=0)
    return _features(images)


@pytest.fixture(scope="module")
def loaded(toy_run):
    run = load_run(toy_run[0], "cpu")
    torch.manual_seed(0)
    untrained = dataclasses.replace(run, model=SetTransformer(run.config.model).eval().requires_grad_(False))
    return run, untrained


@pytest.mark.parametrize("y", [0, 1])
def test_trained_samples_are_far_closer_to_the_toy_than_untrained(toy_run, loaded, toy_images, y):
    run, untrained = loaded
    target = _features(toy_images(np.full(N, 150.0), np.full(N, y), seed=100 + y))
    trained, fresh = _generate(run, 150.0, y), _generate(untrained, 150.0, y)
    # measured (tools/report_learning_toy.py, docs/BENCHMARKS.md): trained / untrained = 0.04-0.22 for the
    # jet energy, 0.08-0.10 per-hit log E, 0.03-0.08 per-hit Δη; a model that learns nothing gives 1
    for key, bound in (("total", 0.4), ("loge", 0.25), ("deta", 0.25)):
        w_trained = wasserstein_distance(target[key], trained[key])
        w_fresh = wasserstein_distance(target[key], fresh[key])
        assert w_trained < bound * w_fresh, (key, w_trained, w_fresh)
    # the learned multiplicity model: mean hit count within 10 % of the toy's
    assert abs(trained["n"].mean() / target["n"].mean() - 1) < 0.1


def test_samples_respond_to_the_condition(loaded):
    run, _ = loaded
    small, big = _generate(run, 150.0, 0), _generate(run, 150.0, 1)
    # y = 1: about 3x the hits (30 vs 10), 4x the energy per hit, blob at negative Δη
    assert big["n"].mean() > 2.0 * small["n"].mean()
    assert big["total"].mean() > 6.0 * small["total"].mean()
    assert np.median(small["deta"]) > 0.06 and np.median(big["deta"]) < -0.06
    # energy scales with pt / 150 GeV: 190 vs 110 GeV gives 1.73x
    lo, hi = _generate(run, 110.0, 1, seed=2), _generate(run, 190.0, 1, seed=2)
    assert 1.4 < hi["total"].mean() / lo["total"].mean() < 2.1


def _set_train(ck: dict, **kw) -> None:
    ck["config"]["train"].update(kw)


def test_ema_is_the_hand_computed_average_of_snapshots(toy_run, tmp_path):
    """Resume the trained toy run for 6 steps with a checkpoint per step; the EMA it writes equals
    the recursion ema_k = d_k ema_(k-1) + (1 - d_k) theta_k over the raw-weight snapshots."""
    run = tmp_path / "run"
    shutil.copytree(toy_run[0], run)
    last = run / "checkpoints" / "last.pt"
    ck = load_checkpoint(last)
    start, extra, decay = int(ck["step"]), 6, 0.9
    _set_train(ck, max_steps=start + extra, ckpt_every=1, keep_step_ckpts=True, ema_decay=decay)
    save_checkpoint(last, ck)
    train(toy_run[1], run, resume=True, device="cpu", progress=False)
    ema = {k: v.double() for k, v in ck["ema"].items()}
    for s in range(start, start + extra):
        d = min(decay, (1 + s) / (10 + s))  # ema_warmup is on
        theta = load_checkpoint(step_checkpoint(run, s + 1))["model"]
        ema = {k: d * ema[k] + (1 - d) * theta[k].double() for k in ema}
    final = load_checkpoint(last)
    assert final["step"] == start + extra
    moved = 0.0
    for k, v in final["ema"].items():
        torch.testing.assert_close(v.double(), ema[k], rtol=1e-5, atol=1e-6, msg=k)
        moved = max(moved, float((v.double() - ck["ema"][k].double()).abs().max()))
        if k.endswith("weight"):
            assert not torch.equal(v, final["model"][k]), k  # EMA is not the raw weights
    assert moved > 1e-4, "the EMA did not move: the test would not see a wrong average"
