"""Philox4x32-10 counter-based RNG and Box-Muller normals in pure PyTorch.

Bit-compatible with ``csrc/philox.h`` (used by the CPU and CUDA kernels of ``diffusion_step``),
so in-kernel noise is identical on CPU, CUDA and in the reference up to the float rounding of
log/sin/cos. Integers are held in int64 tensors and masked to 32 bits (torch has no full set of
uint32 ops).

Noise layout (the contract of ``diffusion_step``): element ``i`` (flat index into the contiguous
tensor) takes lane ``i % 4`` of the Philox block with

    counter = (g mod 2^32, g >> 32, offset mod 2^32, (offset >> 32) mod 2^32),  g = i // 4
    key     = (seed mod 2^32, (seed >> 32) mod 2^32)

so a step with another ``offset`` (e.g. the step index) gets an independent stream whatever the
tensor size. Each block's 4 words ``r0..r3`` give 4 normals by Box-Muller:

    u(r)  = ((r >> 9) + 0.5) * 2^-23            in (0, 1), exact in fp32
    rad   = sqrt(-2 * log(u(r0)))               (rad2 likewise from r2)
    th    = 2*pi * (u(r1) - 0.5)                in (-pi, pi) (th2 from r3)
    z     = (rad*cos(th), rad*sin(th), rad2*cos(th2), rad2*sin(th2))

all in fp32. |z| <= sqrt(2*24*log 2) ~ 5.77.

The CUDA kernels evaluate log(u) as ``log1p(u - 1)`` (exact near u -> 1, where ``--use_fast_math``'s
``__logf`` is not); ``log1p=True`` reproduces that formula, the default ``log`` the CPU kernel's
bit for bit. Both are the same function up to float rounding (the ``u - 1`` is exact in fp32).
"""

from __future__ import annotations

import torch

M0 = 0xD2511F53
M1 = 0xCD9E8D57
W0 = 0x9E3779B9
W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF
TWO_PI = 6.2831855  # float32(2*pi), the constant the C++ side uses


def _mulhilo(m: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of the 64-bit product m*c, with m a 32-bit constant and c < 2^32.

    The product can exceed int64, so c is split into 16-bit halves: m*c = m*ch*2^16 + m*cl.
    """
    a = m * (c & 0xFFFF)  # < 2^48
    b = m * (c >> 16)  # < 2^48
    mid = a + ((b & 0xFFFF) << 16)  # < 2^49
    lo = mid & MASK32
    hi = (b >> 16) + (mid >> 32)
    return hi & MASK32, lo


def _philox_words(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 rounds on separate (broadcastable) int64 word tensors; returns 4 words."""
    for r in range(10):
        if r:
            k0 = (k0 + W0) & MASK32
            k1 = (k1 + W1) & MASK32
        hi0, lo0 = _mulhilo(M0, c0)
        hi1, lo1 = _mulhilo(M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def philox4x32_10(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 of int64 tensors ``counter`` (..., 4) and ``key`` (..., 2) holding 32-bit words.

    Returns (..., 4) int64 words in [0, 2^32). Matches the Random123 known-answer tests.
    """
    c = [counter[..., j].to(torch.int64).contiguous() & MASK32 for j in range(4)]
    k0 = key[..., 0].to(torch.int64) & MASK32
    k1 = key[..., 1].to(torch.int64) & MASK32
    return torch.stack(_philox_words(*c, k0, k1), dim=-1)


def _uniform(r: torch.Tensor) -> torch.Tensor:
    """32-bit word -> fp32 uniform in (0, 1) with 23 random bits: ((r >> 9) + 0.5) * 2^-23 (exact)."""
    return ((r >> 9).to(torch.float32) + 0.5) * (2.0**-23)


def box_muller(words: torch.Tensor, log1p: bool = False) -> torch.Tensor:
    """(..., 4) Philox words -> (..., 4) fp32 standard normals (see module docstring)."""
    return torch.stack(_box_muller(*(words[..., j] for j in range(4)), log1p=log1p), dim=-1)


def _log(u: torch.Tensor, log1p: bool) -> torch.Tensor:
    return torch.log1p(u - 1.0) if log1p else torch.log(u)


def _box_muller(w0, w1, w2, w3, log1p: bool = False):
    u0, u1, u2, u3 = _uniform(w0), _uniform(w1), _uniform(w2), _uniform(w3)
    rad_a = torch.sqrt(-2.0 * _log(u0, log1p))
    rad_b = torch.sqrt(-2.0 * _log(u2, log1p))
    th_a = TWO_PI * (u1 - 0.5)
    th_b = TWO_PI * (u3 - 0.5)
    return rad_a * torch.cos(th_a), rad_a * torch.sin(th_a), rad_b * torch.cos(th_b), rad_b * torch.sin(th_b)


def philox_normal(
    numel: int, seed: int, offset: int = 0, device: torch.device | str = "cpu", log1p: bool = False
) -> torch.Tensor:
    """``numel`` fp32 standard normals, element i from Philox block i // 4 lane i % 4 keyed by (seed, offset).

    Exactly the noise ``diffusion_step`` generates in-kernel for a tensor of ``numel`` elements
    (``log1p=True``: the CUDA kernel's log formula; the default: the CPU kernel's).
    """
    if seed < 0:
        raise ValueError(f"philox_normal: seed must be >= 0, got {seed}")
    if offset < 0:
        raise ValueError(f"philox_normal: offset must be >= 0, got {offset}")
    g = torch.arange((numel + 3) // 4, dtype=torch.int64, device=device)
    scalar = lambda val: torch.tensor(val & MASK32, dtype=torch.int64, device=device)  # noqa: E731
    words = _philox_words(g & MASK32, g >> 32, scalar(offset), scalar(offset >> 32), scalar(seed), scalar(seed >> 32))
    return torch.stack(_box_muller(*words, log1p=log1p), dim=-1).reshape(-1)[:numel]
