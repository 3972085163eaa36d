"""Sampler update coefficients (e2econd.diffusion.coefficients) against independent closed forms,
applied with the fused op's pure-PyTorch reference: DDIM(η=0), DDPM in the β form of the thesis's
Algorithm 2, DPM-Solver++(2M) as written in Lu et al. (2022) and its order on an exact Gaussian flow."""

from __future__ import annotations

import math

import pytest
import torch

from e2econd.diffusion.coefficients import ddim_coefficients, ddpm_coefficients, dpmpp2m_coefficients
from e2econd.ops.diffusion_step import diffusion_step_reference


def assert_close(out, ref, rtol):
    assert out.shape == ref.shape
    a, b = out.double(), ref.double()
    assert (a - b).norm().item() <= rtol * max(b.norm().item(), 1e-30)
    assert ((a - b).abs() <= 1e-5 * (1 + b.abs())).all()


def cosine(t):
    return math.cos(math.pi / 2 * t), math.sin(math.pi / 2 * t)


def test_ddim_eta0_matches_closed_form():
    torch.manual_seed(0)
    x = torch.randn(3, 17, 3)
    v = torch.randn(3, 17, 3)
    at, st = cosine(0.7)
    as_, ss = cosine(0.55)
    out, x0 = diffusion_step_reference(x, v, ddim_coefficients(at, st, as_, ss, 0.0), return_x0=True)
    xd, vd = x.double(), v.double()
    x0_cf = at * xd - st * vd
    eps = (xd - at * x0_cf) / st
    assert_close(out.double(), as_ * x0_cf + ss * eps, 1e-6)
    assert_close(x0.double(), x0_cf, 1e-6)


def test_ddpm_matches_thesis_algorithm2_and_ddim_eta1():
    """Posterior mean/std in the discrete β form of Algorithm 2; DDIM(η=1) is the same update."""
    abar_t, abar_s = 0.31, 0.45
    at, st, as_, ss = math.sqrt(abar_t), math.sqrt(1 - abar_t), math.sqrt(abar_s), math.sqrt(1 - abar_s)
    alpha = abar_t / abar_s
    beta = 1 - alpha
    c = ddpm_coefficients(at, st, as_, ss).double()
    assert c[2].item() == pytest.approx(math.sqrt(alpha) * (1 - abar_s) / (1 - abar_t), rel=1e-6)
    assert c[3].item() == pytest.approx(math.sqrt(abar_s) * beta / (1 - abar_t), rel=1e-6)
    assert c[5].item() == pytest.approx(math.sqrt(beta * (1 - abar_s) / (1 - abar_t)), rel=1e-6)
    assert torch.allclose(ddim_coefficients(at, st, as_, ss, 1.0).double(), c, rtol=1e-6, atol=1e-7)
    # last step (s = 0): the mean is x̂0 and no noise
    c_end = ddpm_coefficients(at, st, 1.0, 0.0)
    assert torch.allclose(c_end[2:], torch.tensor([0.0, 1.0, 0.0, 0.0]), atol=1e-7)


def _gaussian_denoiser_v(x, alpha, sigma, mu, s):
    """v-prediction of the exact denoiser for data N(mu, s²): x̂0 = mu + α s²/(α²s²+σ²)(x − α mu)."""
    x0 = mu + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (x - alpha * mu)
    return (alpha * x - x0) / sigma


def _lambda_grid(steps):
    """Times uniform in λ = log(α/σ) from t = 0.95 to 0.05 (cosine schedule)."""
    l0, l1 = (math.log(1 / math.tan(math.pi / 2 * t)) for t in (0.95, 0.05))
    return [2 / math.pi * math.atan(math.exp(-(l0 + (l1 - l0) * i / steps))) for i in range(steps + 1)]


MU, S = 0.7, 0.4


def _ode_solve(steps, coef_fn, second_order, step_fn=diffusion_step_reference):
    """Integrate the probability-flow ODE with the op; return (x_final, exact solution) in float64."""
    ts = _lambda_grid(steps)
    x = torch.linspace(-2.5, 2.5, 64, dtype=torch.float32).reshape(1, 64, 1)
    a0, s0 = cosine(ts[0])
    xi = (x.double() - a0 * MU) / math.sqrt(a0**2 * S**2 + s0**2)  # constant along the exact flow
    x0_prev, h_prev = None, None
    for t, tn in zip(ts[:-1], ts[1:]):
        at, st = cosine(t)
        an, sn = cosine(tn)
        v = _gaussian_denoiser_v(x.double(), at, st, MU, S).float()
        h = math.log(an / sn) - math.log(at / st)
        coef = coef_fn(at, st, an, sn, h_prev if second_order else None)
        x, x0 = step_fn(x, v, coef, x0_prev=x0_prev, return_x0=True)
        x0_prev, h_prev = x0, h
    an, sn = cosine(ts[-1])
    return x.double(), an * MU + math.sqrt(an**2 * S**2 + sn**2) * xi


def _dpmpp2m_scalar(x, steps):
    """DPM-Solver++(2M) written out from Lu et al. (2022), Algorithm 2, in float64 scalars."""
    ts = _lambda_grid(steps)
    x0_prev = h_prev = None
    for t, tn in zip(ts[:-1], ts[1:]):
        at, st = cosine(t)
        an, sn = cosine(tn)
        x0 = MU + at * S**2 / (at**2 * S**2 + st**2) * (x - at * MU)
        h = math.log(an / sn) - math.log(at / st)
        d = x0 if h_prev is None else (1 + h / (2 * h_prev)) * x0 - h / (2 * h_prev) * x0_prev
        x = sn / st * x - an * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def test_dpmpp2m_matches_paper_and_is_second_order():
    """Against Algorithm 2 of the paper and the exact flow of Gaussian data (closed form)."""
    x, _ = _ode_solve(10, dpmpp2m_coefficients, True)
    start = torch.linspace(-2.5, 2.5, 64, dtype=torch.float32).double().tolist()
    paper = torch.tensor([_dpmpp2m_scalar(x0, 10) for x0 in start], dtype=torch.float64)
    assert (x.reshape(-1) - paper).abs().max().item() < 1e-5
    err = {}
    for n in (20, 40):
        for order in (1, 2):
            got, exact = _ode_solve(n, dpmpp2m_coefficients, order == 2)
            err[n, order] = (got - exact).abs().max().item()
    assert err[20, 1] / err[40, 1] == pytest.approx(2.0, rel=0.2)  # first order: halving h halves it
    assert err[20, 2] / err[40, 2] > 3.0  # second order: ~4x
    assert err[40, 2] < err[40, 1] / 10
    # DPM-Solver++ first order is DDIM(η=0)
    ddim, _ = _ode_solve(20, lambda at, st, an, sn, hp: ddim_coefficients(at, st, an, sn, 0.0), False)
    first, _ = _ode_solve(20, dpmpp2m_coefficients, False)
    assert (ddim - first).abs().max().item() < 1e-5
