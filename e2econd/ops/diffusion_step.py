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

Samplers build ``coef`` in :mod:`e2econd.diffusion.coefficients` (DDPM ancestral, DDIM(η),
DPM-Solver++(2M)); this module is the op only: kernel dispatch, reference, fakes.
"""

from __future__ import annotations

import math

import torch

from e2econd.ops._dispatch import kernel_ok, register_fake
from e2econd.ops.philox import philox_normal

__all__ = [
    "diffusion_step",
    "diffusion_step_",
    "diffusion_step_reference",
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
        raise ValueError(f"diffusion_step: coef must have shape (6,) or ({batch}, 6), got {tuple(coef.shape)}")
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
            f"diffusion_step: mask of shape {tuple(mask.shape)} does not broadcast to the points {tuple(x.shape[:-1])}"
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
#: storage dtypes the compiled kernels take per device type; others run the reference
_KERNEL_DTYPES = {"cpu": (torch.float32,), "cuda": (torch.float32, torch.bfloat16)}


def _ext(op: str, x: torch.Tensor) -> bool:
    """Whether ``op`` on x goes to the compiled kernel (device *and* dtype supported)."""
    return kernel_ok(op, x, _KERNEL_DTYPES)


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
@register_fake("diffusion_step")
def _diffusion_step_fake(x, v, coef, mask, x0_prev, noise, clip, seed, offset, return_x0):
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    x0 = torch.empty(x.shape if return_x0 else (0,), dtype=x.dtype, device=x.device)
    return out, x0


@register_fake("diffusion_step_")
def _diffusion_step_inplace_fake(x, v, coef, mask, x0_prev, noise, clip, seed, offset):
    return None
