"""Every objective learns the toy end to end: ``train --objective edm|flow|vpred --loss-balance channel``
through ``e2econd.train.train``, sampled through ``e2econd.sample.Generator`` with the objective's own
default sampler (edm, flow: Heun through the fused op), on the toy of tests/conftest.py.

Oracles: a fresh draw of the toy (the target) and scipy's 1-D Wasserstein distance, against an
untrained denoiser of the same run (fresh initialisation, same multiplicity model), which a model
that learned nothing equals; the bound is the one the vpred learning test uses.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from e2econd.data.hits import images_to_hits
from e2econd.model import SetTransformer
from e2econd.rundir import load_run
from e2econd.sample import Generator, SampleOptions
from e2econd.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

N = 200


def _features(images):
    h = images_to_hits(images).channels[1]
    return {"total": h.sums(), "loge": np.log(np.abs(h.e) + 1e-6), "deta": h.deta}


def _generate(run, y, steps):
    gen = Generator(run, SampleOptions(steps=steps, device="cpu", seed=1))
    return _features(gen.generate(np.full(N, 150.0), np.full(N, 15.0), np.full(N, y), chunk_index=0)), gen


@pytest.mark.parametrize(
    "objective,balance,steps,sampler",
    [("edm", "none", 16, "heun"), ("flow", "none", 16, "heun"), ("vpred", "channel", 16, "dpmpp2m")],
)
def test_each_objective_learns_the_toy(toy_data, toy_images, tmp_path, objective, balance, steps, sampler):
    from tests.conftest import toy_config

    cfg = toy_config()
    cfg.objective.name, cfg.objective.balance = objective, balance
    train(toy_data, tmp_path / "run", cfg, device="cpu", progress=False)
    run = load_run(tmp_path / "run", "cpu")
    assert run.config.objective.name == objective and run.formulation.name == objective
    torch.manual_seed(0)
    untrained = dataclasses.replace(run, model=SetTransformer(run.config.model).eval().requires_grad_(False))
    for y in (0, 1):
        target = _features(toy_images(np.full(N, 150.0), np.full(N, y), seed=100 + y))
        (trained, gen), (fresh, _) = _generate(run, y, steps), _generate(untrained, y, steps)
        assert gen.opts.sampler == sampler and gen.steps == steps
        assert gen.nfe == (2 * steps - 1 if sampler == "heun" else steps)  # Heun's last step is Euler
        for key, bound in (("total", 0.4), ("loge", 0.25), ("deta", 0.25)):
            w_trained = wasserstein_distance(target[key], trained[key])
            w_fresh = wasserstein_distance(target[key], fresh[key])
            assert w_trained < bound * w_fresh, (objective, y, key, w_trained, w_fresh)
