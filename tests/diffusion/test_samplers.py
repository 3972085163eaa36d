"""Samplers against closed forms: exact Gaussian denoiser, DDPM in beta form, DDIM formula."""

from __future__ import annotations

import math

import pytest
import torch

from e2econd.diffusion.samplers import (
    SAMPLERS,
    check_sampler,
    ddim_plan,
    ddpm_plan,
    dpmpp2m_plan,
    make_plan,
    run_plan,
)
from e2econd.diffusion.schedule import CosineSchedule
from e2econd.errors import E2EInputError

SCHED = CosineSchedule()
pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: 2 threads only add contention on a shared box


def gaussian_v(mu: float, s: float):
    """Exact v-prediction for data x0 ~ N(mu, s^2): E[x0 | x_t] in closed form, v = (a x - x0) / sigma."""

    def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
        a, sig = SCHED.alpha_sigma(t)
        x0 = mu + a * s**2 / (a**2 * s**2 + sig**2) * (x - a * mu)
        return (a * x - x0) / sig

    return denoise


@pytest.mark.parametrize("name,steps", [("ddpm", 512), ("ddim", 64), ("dpmpp2m", 16), ("dpmpp2m", 8)])
def test_sampler_recovers_gaussian_data(name, steps):
    mu, s = 0.7, 0.3
    torch.manual_seed(0)
    x = torch.randn(4096, 8, 3)
    plan = make_plan(name, steps)
    out = run_plan(gaussian_v(mu, s), x, plan, seed=123)
    assert abs(out.mean().item() - mu) < 0.01
    assert abs(out.std().item() - s) < (0.02 if steps == 8 else 0.01)


def test_ddpm_matches_thesis_beta_form():
    """One DDPM step equals Algorithm 2 of Ho et al. written with beta_t = 1 - abar_t / abar_{t-1}."""
    T = 512
    plan = ddpm_plan(SCHED, T)
    for i in (1, 5, 300, 510):  # i = 0 (t = 1, beta = 1) is singular in the beta form
        t, s = 1 - i / T, 1 - (i + 1) / T
        ab_t, ab_s = SCHED.alpha_bar(t), SCHED.alpha_bar(s)
        beta = 1 - ab_t / ab_s
        a_t, sig_t, c_x, c_0, c_p, c_n = plan.coefs[i]
        x, v = 0.37, -1.2
        eps = sig_t * x + a_t * v
        mean_thesis = (x - beta / math.sqrt(1 - ab_t) * eps) / math.sqrt(1 - beta)
        x0 = a_t * x - sig_t * v
        assert c_x * x + c_0 * x0 == pytest.approx(mean_thesis, rel=1e-6, abs=1e-7)  # fp32 coefficients
        assert c_n == pytest.approx(math.sqrt((1 - ab_s) / (1 - ab_t) * beta), rel=1e-6)
        assert c_p == 0.0


def test_ddim_eta0_matches_formula():
    plan = ddim_plan(SCHED, 10, eta=0.0, spacing="uniform")
    for i, t in enumerate(plan.times[1:-1], start=1):
        s = plan.times[i + 1]
        a_t, sig_t = SCHED.alpha_sigma(t)
        a_s, sig_s = SCHED.alpha_sigma(s)
        x, v = 0.5, 0.25
        x0 = a_t * x - sig_t * v
        eps = (x - a_t * x0) / sig_t
        _, _, c_x, c_0, _, c_n = plan.coefs[i]
        assert c_x * x + c_0 * x0 == pytest.approx(a_s * x0 + sig_s * eps, rel=1e-6)
        assert c_n == 0.0


def test_ddim_eta1_noise_is_ddpm_posterior_std():
    ddim, ddpm = ddim_plan(SCHED, 512, eta=1.0, spacing="uniform"), ddpm_plan(SCHED, 512)
    for i in (3, 100, 400):
        assert ddim.coefs[i][5] == pytest.approx(ddpm.coefs[i][5], rel=1e-6)


def test_dpmpp2m_is_exact_for_constant_x0():
    """With a denoiser that always returns the same x0, every solver lands exactly on it."""
    target = torch.tensor([0.3, -1.0, 2.0])

    def denoise(x, t):
        a, sig = SCHED.alpha_sigma(t)
        return (a * x - target) / sig

    for steps in (2, 5, 16):
        out = run_plan(denoise, torch.randn(7, 4, 3), dpmpp2m_plan(SCHED, steps))
        torch.testing.assert_close(out, target.expand_as(out), atol=1e-5, rtol=0)


def test_plan_validation():
    with pytest.raises(ValueError, match="unknown sampler"):
        make_plan("euler")
    with pytest.raises(ValueError, match="steps"):
        make_plan("ddim", 0)
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpmpp2m"}


def test_one_sampler_validator():
    """make_plan, `e2econd sample` and the demo all go through check_sampler: one message, key 'sampler'."""
    for name in SAMPLERS:
        assert check_sampler(name) == name
    with pytest.raises(E2EInputError) as ei:
        check_sampler("euler")
    assert ei.value.key == "sampler" and "choose from ddpm, ddim, dpmpp2m" in str(ei.value)
    with pytest.raises(E2EInputError) as ep:
        make_plan("euler")
    assert str(ep.value) == str(ei.value)
