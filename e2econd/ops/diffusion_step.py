"""Fused reverse-diffusion step: one sampler update of padded or packed hit sets from a v-prediction.

The op is a generic fused linear update. With ``coef = [α_t, σ_t, c_x, c_0, c_p, c_n]`` (fp32, shape
``(6,)`` for all samples or ``(B, 6)`` per sample, ``B = x.size(0)``)::

    x̂0  = α_t·x − σ_t·v                    (clamped to [−clip, clip] when clip > 0)
    out = c_x·x + c_0·x̂0 + c_p·x0_prev + c_n·z

evaluated in fp32 in exactly this order (left to right) whatever the storage dtype. Terms:

- ``c_p·x0_prev`` only when ``x0_prev`` is given (else omitted, c_p ignored).
- ``z = noise`` when ``noise`` is given; else, when ``seed >= 0``, standard normals generated
  in-kernel by Philox4x32-10 keyed by ``(seed, offset)`` and the element's flat index (layout in
  :mod:`e2econd.ops.philox`; identical on CPU, CUDA and here up to float rounding of log/sin/cos);
  else (``noise is None and seed < 0``) the noise term is omitted and c_n is ignored. Use a
  different ``offset`` per step (e.g. the step index): streams of distinct offsets are independent.
- ``mask`` (bool, shape ``x.shape[:-1]`` or broadcastable to it: one flag per point): where False
  the point is padding, ``out`` there is a bitwise copy of ``x`` and ``x̂0`` there is 0.

Layouts: padded ``x (B, N, F)`` with ``mask (B, N)`` and scalar or per-sample coef; packed
``x (total, F)`` with ``mask=None`` and scalar coef. Storage: fp32 (CPU and CUDA) or bf16 (CUDA,
fp32 arithmetic); ``v``, ``x0_prev`` and ``noise`` have x's shape and dtype.

Returns ``(out, x̂0)``; ``x̂0`` is an empty tensor unless ``return_x0=True`` (DPM-Solver++(2M)
feeds it back as the next step's ``x0_prev``). ``diffusion_step_`` writes ``out`` into ``x``.

Coefficients of the samplers (variance-preserving, ``x_t = α_t x0 + σ_t ε``, ``v = α_t ε − σ_t x0``,
step from time t to s < t; helpers below build them, per sample when given (B,) tensors):

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

import math

import torch

from e2econd.ops._extension import LOADED, has_kernel, use_extension
from e2econd.ops.philox import philox_normal

__all__ = [
    "diffusion_step",
    "diffusion_step_",
    "diffusion_step_reference",
    "ddpm_coefficients",
    "ddim_coefficients",
    "dpmpp2m_coefficients",
]


# ----------------------------------------------------------------------------------------- checks
def _check(x, v, coef, mask, x0_prev, noise, clip, seed, offset) -> torch.Tensor | None:
    """Validate arguments (one-line ValueError); return mask expanded to x.shape[:-1] (or None)."""
    if not x.is_floating_point():
        raise ValueError(f"diffusion_step: x must be floating point, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("diffusion_step: x must have at least 1 dimension (features last)")
    for name, t in (("v", v), ("x0_prev", x0_prev), ("noise", noise)):
        if t is None:
            continue
        if t.shape != x.shape:
            raise ValueError(f"diffusion_step: {name} has shape {tuple(t.shape)}, x has {tuple(x.shape)}")
        if t.dtype != x.dtype:
            raise ValueError(f"diffusion_step: {name} has dtype {t.dtype}, x has {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"diffusion_step: {name} is on {t.device}, x is on {x.device}")
    batch = x.size(0) if x.dim() >= 1 else 1
    if not (coef.shape == (6,) or coef.shape == (batch, 6)):
        raise ValueError(
            f"diffusion_step: coef must have shape (6,) or ({batch}, 6), got {tuple(coef.shape)}"
        )
    if coef.device != x.device:
        raise ValueError(f"diffusion_step: coef is on {coef.device}, x is on {x.device}")
    if clip < 0 or not math.isfinite(clip):
        raise ValueError(f"diffusion_step: clip must be finite and >= 0 (0 = no clamp), got {clip}")
    if offset < 0:
        raise ValueError(f"diffusion_step: offset must be >= 0, got {offset}")
    if mask is None:
        return None
    if mask.device != x.device:
        raise ValueError(f"diffusion_step: mask is on {mask.device}, x is on {x.device}")
    try:
        mask = mask.to(torch.bool).expand(x.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"diffusion_step: mask of shape {tuple(mask.shape)} does not broadcast to the points "
            f"{tuple(x.shape[:-1])}"
        ) from None
    return mask


# -------------------------------------------------------------------------------------- reference
def diffusion_step_reference(
    x: torch.Tensor,
    v: torch.Tensor,
    coef: torch.Tensor,
    mask: torch.Tensor | None = None,
    x0_prev: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    clip: float = 0.0,
    seed: int = -1,
    offset: int = 0,
    return_x0: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch ``diffusion_step`` (fp32 arithmetic): the fallback and the test oracle."""
    mask = _check(x, v, coef, mask, x0_prev, noise, clip, seed, offset)
    c = coef.to(torch.float32)
    if c.dim() == 2:  # per sample: (B, 1, ..., 1) columns
        c = c.reshape(c.shape[0], *([1] * (x.dim() - 1)), 6)
    a, s, cx, c0, cp, cn = c.unbind(-1)
    xf = x.to(torch.float32)
    x0 = a * xf - s * v.to(torch.float32)
    if clip > 0:
        x0 = x0.clamp(-clip, clip)
    out = cx * xf + c0 * x0
    if x0_prev is not None:
        out = out + cp * x0_prev.to(torch.float32)
    if noise is not None:
        out = out + cn * noise.to(torch.float32)
    elif seed >= 0:
        z = philox_normal(x.numel(), seed, offset, device=x.device).reshape(x.shape)
        out = out + cn * z
    out = out.to(x.dtype)
    if mask is not None:
        m = mask.unsqueeze(-1)
        out = torch.where(m, out, x)
        x0 = torch.where(m, x0, torch.zeros((), dtype=x0.dtype, device=x0.device))
    x0 = x0.to(x.dtype) if return_x0 else x.new_empty(0)
    return out, x0


# ---------------------------------------------------------------------------------------- wrappers
_OPS = ("diffusion_step", "diffusion_step_")
_HAS = {dev: {op: has_kernel(op, dev) for op in _OPS} for dev in ("cpu", "cuda")}


#: storage dtypes the compiled kernels take per device type; others run the reference
_KERNEL_DTYPES = {"cpu": (torch.float32,), "cuda": (torch.float32, torch.bfloat16)}


def _ext(op: str, x: torch.Tensor) -> bool:
    """Whether ``op`` on x goes to the compiled kernel (device *and* dtype supported)."""
    device = x.device
    if x.dtype not in _KERNEL_DTYPES.get(device.type, ()):
        return False
    if torch.compiler.is_compiling():  # traced: decide from the (static) registration table
        return _HAS.get(device.type, {}).get(op, False)
    return use_extension(op, device)


def _prep(x, v, coef, mask, x0_prev, noise):
    c = lambda t: None if t is None else t.contiguous()  # noqa: E731
    if mask is not None:
        mask = mask.contiguous()
    return c(v), coef.to(torch.float32).contiguous(), mask, c(x0_prev), c(noise)


def diffusion_step(
    x: torch.Tensor,
    v: torch.Tensor,
    coef: torch.Tensor,
    mask: torch.Tensor | None = None,
    x0_prev: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    clip: float = 0.0,
    seed: int = -1,
    offset: int = 0,
    return_x0: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused sampler update; returns ``(out, x̂0)`` (x̂0 empty unless ``return_x0``). See module doc."""
    if not _ext("diffusion_step", x):
        return diffusion_step_reference(x, v, coef, mask, x0_prev, noise, clip, seed, offset, return_x0)
    mask = _check(x, v, coef, mask, x0_prev, noise, clip, seed, offset)
    v, coef, mask, x0_prev, noise = _prep(x, v, coef, mask, x0_prev, noise)
    return torch.ops.e2econd.diffusion_step(
        x.contiguous(), v, coef, mask, x0_prev, noise, float(clip), int(seed), int(offset), bool(return_x0)
    )


def diffusion_step_(
    x: torch.Tensor,
    v: torch.Tensor,
    coef: torch.Tensor,
    mask: torch.Tensor | None = None,
    x0_prev: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    clip: float = 0.0,
    seed: int = -1,
    offset: int = 0,
) -> torch.Tensor:
    """In-place ``diffusion_step``: writes ``out`` into ``x`` and returns ``x``."""
    if not x.is_contiguous() or not _ext("diffusion_step_", x):
        out, _ = diffusion_step(x, v, coef, mask, x0_prev, noise, clip, seed, offset, False)
        return x.copy_(out)
    mask = _check(x, v, coef, mask, x0_prev, noise, clip, seed, offset)
    v, coef, mask, x0_prev, noise = _prep(x, v, coef, mask, x0_prev, noise)
    torch.ops.e2econd.diffusion_step_(x, v, coef, mask, x0_prev, noise, float(clip), int(seed), int(offset))
    return x


# ----------------------------------------------------------------------------------- fake kernels
if LOADED:

    @torch.library.register_fake("e2econd::diffusion_step")
    def _diffusion_step_fake(x, v, coef, mask, x0_prev, noise, clip, seed, offset, return_x0):
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        x0 = torch.empty(x.shape if return_x0 else (0,), dtype=x.dtype, device=x.device)
        return out, x0

    @torch.library.register_fake("e2econd::diffusion_step_")
    def _diffusion_step_inplace_fake(x, v, coef, mask, x0_prev, noise, clip, seed, offset):
        return None


# ---------------------------------------------------------------------------- sampler coefficients
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
