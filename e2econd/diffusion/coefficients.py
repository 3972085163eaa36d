"""Coefficients of the fused update op for each sampler step t -> s (s < t).

The op (:func:`e2econd.ops.diffusion_step.diffusion_step`) computes ``x̂0 = α_t x − σ_t v`` and
``out = c_x x + c_0 x̂0 + c_p x0_prev + c_n z``; these helpers build ``coef = [α_t, σ_t, c_x, c_0, c_p, c_n]``
(fp32, shape ``(..., 6)``; per sample when given (B,) tensors) of the variance-preserving process
``x_t = α_t x0 + σ_t ε``, ``v = α_t ε − σ_t x0``, computed in float64:

- DDPM ancestral (thesis Algorithm 2): ``α_{t|s} = α_t/α_s``, ``σ²_{t|s} = σ_t² − α_{t|s}² σ_s²``;
  ``c_x = α_{t|s} σ_s²/σ_t²``, ``c_0 = α_s σ²_{t|s}/σ_t²``, ``c_p = 0``,
  ``c_n = σ_{t|s} σ_s/σ_t`` (0 at the last step).
- DDIM(η): ``σ_η = η (σ_s/σ_t) sqrt(1 − α_t²/α_s²)``, ``d = sqrt(σ_s² − σ_η²)``;
  ``c_x = d/σ_t``, ``c_0 = α_s − d α_t/σ_t``, ``c_p = 0``, ``c_n = σ_η`` (η = 0: deterministic).
- DPM-Solver++(2M) (Lu et al. 2022, data prediction): ``λ = log(α/σ)``, ``h = λ_s − λ_t``,
  ``φ = −α_s (e^{−h} − 1)``; first step ``c_x = σ_s/σ_t``, ``c_0 = φ``, ``c_p = 0``; later steps with
  ``r = h_prev/h``: ``c_0 = φ (1 + 1/(2r))``, ``c_p = −φ/(2r)``; ``c_n = 0``.
"""

from __future__ import annotations

import torch

__all__ = ["ddim_coefficients", "ddpm_coefficients", "dpmpp2m_coefficients"]


def _t(a) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


def _stack(alpha_t, sigma_t, cx, c0, cp, cn) -> torch.Tensor:
    cols = torch.broadcast_tensors(*(_t(c) for c in (alpha_t, sigma_t, cx, c0, cp, cn)))
    return torch.stack(cols, dim=-1).to(torch.float32)


def ddpm_coefficients(alpha_t, sigma_t, alpha_s, sigma_s) -> torch.Tensor:
    """DDPM ancestral step t -> s (s < t; α_s = 1, σ_s = 0 at the end): coef (..., 6) fp32."""
    at, st, as_, ss = map(_t, (alpha_t, sigma_t, alpha_s, sigma_s))
    a_ts = at / as_
    var_ts = st**2 - a_ts**2 * ss**2
    cx = a_ts * ss**2 / st**2
    c0 = as_ * var_ts / st**2
    cn = torch.sqrt(torch.clamp(var_ts, min=0)) * ss / st
    return _stack(at, st, cx, c0, torch.zeros_like(cx), cn)


def ddim_coefficients(alpha_t, sigma_t, alpha_s, sigma_s, eta: float = 0.0) -> torch.Tensor:
    """DDIM(η) step t -> s: coef (..., 6) fp32; η = 0 deterministic, η = 1 matches DDPM's variance."""
    at, st, as_, ss = map(_t, (alpha_t, sigma_t, alpha_s, sigma_s))
    sig_eta = eta * (ss / st) * torch.sqrt(torch.clamp(1 - at**2 / as_**2, min=0))
    d = torch.sqrt(torch.clamp(ss**2 - sig_eta**2, min=0))
    return _stack(at, st, d / st, as_ - d * at / st, torch.zeros_like(d), sig_eta)


def dpmpp2m_coefficients(alpha_t, sigma_t, alpha_s, sigma_s, h_prev=None) -> torch.Tensor:
    """DPM-Solver++(2M) step t -> s (σ_s > 0); ``h_prev`` = previous step's λ increment (None: 1st order).

    Pass the previous step's x̂0 as ``x0_prev`` (c_p multiplies it).
    """
    at, st, as_, ss = map(_t, (alpha_t, sigma_t, alpha_s, sigma_s))
    h = torch.log(as_ / ss) - torch.log(at / st)
    phi = -as_ * torch.expm1(-h)
    if h_prev is None:
        c0, cp = phi, torch.zeros_like(phi)
    else:
        r = _t(h_prev) / h
        c0, cp = phi * (1 + 1 / (2 * r)), -phi / (2 * r)
    return _stack(at, st, ss / st, c0, cp, torch.zeros_like(phi))
