"""Masked multi-head attention over variable-size hit sets (Kernel 2).

``softmax(Q Kᵀ · scale) V`` restricted to each jet's own hits, in two layouts:

* padded ``(B, H, N, D)`` with per-jet ``lengths`` (B,): keys and queries at positions
  ``>= lengths[b]`` are ignored and their outputs (and gradients) are exactly zero;
* packed ``(total, H, D)`` with ``cu_seqlens`` int32 (B+1,): jet ``b`` owns tokens
  ``cu_seqlens[b]:cu_seqlens[b+1]``; ``max_seqlen`` must be >= the longest jet.

An empty jet (length 0) gives zeros, never NaN. ``scale`` defaults to ``1/sqrt(D)``.
Lengths above ``N`` are clamped to ``N`` and negative lengths count as 0.

Dispatch (``packed_attention``, first that applies):

* ``varlen``: on CUDA with bfloat16 / float16 and a head dim that is a multiple of 8 (<= 256),
  torch's FlashAttention ``torch.nn.attention.varlen.varlen_attn`` (tensor cores) when the
  installed torch has it;
* ``kernel``: the compiled ``torch.ops.e2econd.*_attention_fwd/bwd`` kernels (CPU: float32 and
  float64; CUDA: float32, bfloat16, float16 with D <= 64, fp32 FMA: the GPU reference for fp32)
  when the extension provides them for the input's device and dtype;
* ``reference``: the pure-PyTorch references below, also the test oracle.

The choice is ``impl=`` of ``packed_attention`` or ``$E2ECOND_ATTENTION`` (``auto`` default,
``varlen``, ``kernel``, ``reference``): a requested path that cannot run the input falls back
along the list above (``varlen`` -> ``kernel`` -> ``reference``), so both GPU paths can be timed
against each other on the same model. ``masked_attention`` (padded) has no ``varlen`` path.

Contract checks: shapes, dtypes and devices always; the *values* of ``cu_seqlens`` (starts at
0, non-decreasing, ends at ``total``) and ``max_seqlen >= `` the longest jet in eager mode only
(``check=True``), never under ``torch.compile`` tracing or CUDA-graph capture (they read the
tensor on the host). A violation raises a one-line ``ValueError``.
The kernel path is differentiable through ``torch.library.register_autograd`` (the backward
recomputes the attention matrix from the saved per-query log-sum-exp) and traceable by
``torch.compile(fullgraph=True)`` through the fake kernels registered here.
"""

from __future__ import annotations

import inspect
import math
import os

import torch

from e2econd.ops._dispatch import forced_reference, kernel_ok, register_autograd, register_fake

__all__ = [
    "IMPLS",
    "check_packed_values",
    "masked_attention",
    "masked_attention_reference",
    "packed_attention",
    "packed_attention_reference",
    "select_impl",
    "varlen_available",
]

# Budget for the reference's (chunk, H, N, N) score tensor, in elements (float32: 4 bytes each).
_REF_SCORE_BUDGET = 1 << 26

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_CUDA_MAX_D = 64
_VARLEN_DTYPES = (torch.bfloat16, torch.float16)
_VARLEN_MAX_D = 256
IMPLS = ("auto", "varlen", "kernel", "reference")

try:  # torch >= 2.9: FlashAttention over packed variable-length sequences
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn

    _VARLEN_HAS_SCALE = "scale" in inspect.signature(_varlen_attn).parameters
except ImportError:  # older torch: the tensor-core path is simply absent
    _varlen_attn = None
    _VARLEN_HAS_SCALE = False


def _default_scale(d: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(d) if scale is None else float(scale)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_padded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"masked_attention: q, k, v must all be (B, H, N, D); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if lengths.dim() != 1 or lengths.shape[0] != q.shape[0]:
        raise ValueError(f"masked_attention: lengths must be (B,) = ({q.shape[0]},); got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"masked_attention: lengths must be an integer tensor; got {lengths.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"masked_attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")


def _check_packed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    if q.dim() != 3 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"packed_attention: q, k, v must all be (total, H, D); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 1:
        raise ValueError(f"packed_attention: cu_seqlens must be (B+1,); got {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype == torch.bool:
        raise ValueError(f"packed_attention: cu_seqlens must be an integer tensor; got {cu_seqlens.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"packed_attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")


def _tracing(*tensors: torch.Tensor) -> bool:
    """True under torch.compile / fake tensors / CUDA-graph capture: tensor values are unreadable."""
    if torch.compiler.is_compiling():
        return True
    if any(isinstance(t, torch._subclasses.FakeTensor) or t.device.type == "meta" for t in tensors):
        return True
    return any(t.is_cuda for t in tensors) and torch.cuda.is_current_stream_capturing()


def check_packed_values(cu_seqlens: torch.Tensor, total: int, max_seqlen: int) -> None:
    """Eager contract check of packed attention (reads ``cu_seqlens`` on the host: one sync on CUDA).

    ``cu_seqlens`` must start at 0, be non-decreasing and end at ``total``; ``max_seqlen`` must be
    >= the longest jet. Raises a one-line ``ValueError`` naming the offending jet.
    """
    cu = cu_seqlens.detach().to("cpu", torch.int64)
    if cu.numel() == 0:
        return
    if int(cu[0]) != 0:
        raise ValueError(f"packed_attention: cu_seqlens must start at 0, got {int(cu[0])}")
    lengths = cu[1:] - cu[:-1]
    if lengths.numel() and int(lengths.min()) < 0:
        b = int(torch.nonzero(lengths < 0)[0, 0])
        raise ValueError(
            f"packed_attention: cu_seqlens must be non-decreasing (jet {b}: {int(cu[b])} -> {int(cu[b + 1])})"
        )
    if int(cu[-1]) != int(total):
        raise ValueError(f"packed_attention: cu_seqlens[-1] = {int(cu[-1])} but q has {int(total)} tokens")
    longest = int(lengths.max()) if lengths.numel() else 0
    if int(max_seqlen) < longest:
        b = int(torch.argmax(lengths))
        raise ValueError(
            f"packed_attention: max_seqlen = {int(max_seqlen)} is below the longest jet (jet {b}: {longest} hits)"
        )


# --------------------------------------------------------------------------------------------
# Pure-PyTorch references (fallback and test oracle)
# --------------------------------------------------------------------------------------------
def masked_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Padded attention by explicit masked matmul-softmax, accumulated in float32 (float64 for float64).

    Inputs beyond each jet's length are zeroed first (so garbage or NaN padding cannot leak in),
    masked keys get -inf scores, rows of empty jets are set to a constant (their values are zero,
    so the output is 0 and every gradient finite), and outputs beyond the length are zeroed.
    Processed in batch chunks so the (chunk, H, N, N) score tensor stays within ~256 MB.
    """
    _check_padded(q, k, v, lengths)
    B, H, N, D = q.shape
    scale = _default_scale(D, scale)
    acc = _acc_dtype(q.dtype)
    lengths = lengths.to(device=q.device, dtype=torch.long).clamp(0, N)
    valid = torch.arange(N, device=q.device)[None, :] < lengths[:, None]  # (B, N)
    chunk = max(1, _REF_SCORE_BUDGET // max(1, H * N * N))
    outs = []
    for b0 in range(0, B, chunk):
        sl = slice(b0, b0 + chunk)
        tok = valid[sl][:, None, :, None]  # (b, 1, N, 1) query / value rows
        key = valid[sl][:, None, None, :]  # (b, 1, 1, N) key columns
        empty = (lengths[sl] == 0)[:, None, None, None]
        qf = torch.where(tok, q[sl].to(acc), 0.0)
        kf = torch.where(tok, k[sl].to(acc), 0.0)
        vf = torch.where(tok, v[sl].to(acc), 0.0)
        s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
        s = s.masked_fill(~key, float("-inf")).masked_fill(empty, 0.0)
        p = torch.softmax(s, dim=-1)
        o = torch.where(tok, torch.matmul(p, vf), 0.0)
        outs.append(o.to(q.dtype))
    if not outs:  # B == 0: nothing to attend to (kept differentiable)
        return torch.where(torch.zeros((), dtype=torch.bool, device=q.device), q + k + v, 0.0)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


def _packed_index(cu_seqlens: torch.Tensor, total: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(jet index, position in jet) of every packed token, without a host sync."""
    cu = cu_seqlens.to(device=device, dtype=torch.long)
    tok = torch.arange(total, device=device)
    jet = torch.searchsorted(cu[1:], tok, right=True).clamp_max(max(cu.shape[0] - 2, 0))
    return jet, tok - cu[jet]


def packed_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Packed attention by scattering to (B, H, max_seqlen, D), the padded reference, and gathering back."""
    _check_packed(q, k, v, cu_seqlens)
    total, H, D = q.shape
    B = cu_seqlens.shape[0] - 1
    scale = _default_scale(D, scale)
    if total == 0 or B == 0:  # no hits or no jets: zeros, kept differentiable
        return torch.where(torch.zeros((), dtype=torch.bool, device=q.device), q + k + v, 0.0)
    max_seqlen = int(max_seqlen)
    jet, pos = _packed_index(cu_seqlens, total, q.device)
    cu = cu_seqlens.to(device=q.device, dtype=torch.long)
    lengths = cu[1:] - cu[:-1]

    def pad(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((B, max_seqlen, H, D))
        out = out.index_put((jet, pos), x)
        return out.transpose(1, 2)

    out = masked_attention_reference(pad(q), pad(k), pad(v), lengths, scale)  # (B, H, max, D)
    return out.transpose(1, 2)[jet, pos]


# --------------------------------------------------------------------------------------------
# Compiled kernels: fake kernels and autograd (registered only when the extension is loaded)
# --------------------------------------------------------------------------------------------
@register_fake("masked_attention_fwd")
def _masked_fwd_fake(q, k, v, lengths, scale):
    B, H, N, D = q.shape
    return q.new_empty((B, H, N, D)), q.new_empty((B, H, N), dtype=_acc_dtype(q.dtype))


@register_fake("masked_attention_bwd")
def _masked_bwd_fake(grad_out, q, k, v, out, lse, lengths, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


@register_fake("packed_attention_fwd")
def _packed_fwd_fake(q, k, v, cu_seqlens, max_seqlen, scale):
    total, H, D = q.shape
    return q.new_empty((total, H, D)), q.new_empty((H, total), dtype=_acc_dtype(q.dtype))


@register_fake("packed_attention_bwd")
def _packed_bwd_fake(grad_out, q, k, v, out, lse, cu_seqlens, max_seqlen, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _masked_setup(ctx, inputs, output):
    q, k, v, lengths, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, lengths)
    ctx.scale = scale


def _masked_backward(ctx, grad_out, grad_lse):
    # grad_lse is ignored: lse is an auxiliary output kept for the backward pass only.
    q, k, v, out, lse, lengths = ctx.saved_tensors
    dq, dk, dv = torch.ops.e2econd.masked_attention_bwd(grad_out, q, k, v, out, lse, lengths, ctx.scale)
    return dq, dk, dv, None, None


def _packed_setup(ctx, inputs, output):
    q, k, v, cu_seqlens, max_seqlen, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
    ctx.max_seqlen = max_seqlen
    ctx.scale = scale


def _packed_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = torch.ops.e2econd.packed_attention_bwd(
        grad_out, q, k, v, out, lse, cu_seqlens, ctx.max_seqlen, ctx.scale
    )
    return dq, dk, dv, None, None, None


register_autograd("masked_attention_fwd", _masked_backward, _masked_setup)
register_autograd("packed_attention_fwd", _packed_backward, _packed_setup)


#: storage dtypes the compiled kernels take per device type (CUDA also needs D <= _CUDA_MAX_D)
_KERNEL_DTYPES = {"cpu": _CPU_DTYPES, "cuda": _CUDA_DTYPES}


def _kernel_ok(op: str, q: torch.Tensor) -> bool:
    if q.device.type == "cuda" and int(q.shape[-1]) > _CUDA_MAX_D:
        return False
    return kernel_ok(op, q, _KERNEL_DTYPES)


def varlen_available() -> bool:
    """Whether the installed torch has ``torch.nn.attention.varlen.varlen_attn``."""
    return _varlen_attn is not None


def _varlen_ok(q: torch.Tensor) -> bool:
    d = int(q.shape[-1])
    return (
        _varlen_attn is not None
        and q.device.type == "cuda"
        and q.dtype in _VARLEN_DTYPES
        and d % 8 == 0
        and d <= _VARLEN_MAX_D
    )


@torch.compiler.assume_constant_result
def _impl_from_env() -> str:
    return os.environ.get("E2ECOND_ATTENTION", "auto").strip().lower() or "auto"


def select_impl(q: torch.Tensor, impl: str | None = None) -> str:
    """The path ``packed_attention`` takes for q: 'varlen', 'kernel' or 'reference' (see module doc)."""
    want = impl if impl is not None else _impl_from_env()
    if want not in IMPLS:
        raise ValueError(
            f"packed_attention: unknown impl {want!r} (E2ECOND_ATTENTION or impl=; choose from {', '.join(IMPLS)})"
        )
    if forced_reference():
        return "reference"
    if want in ("auto", "varlen") and _varlen_ok(q):
        return "varlen"
    if want != "reference" and _kernel_ok("packed_attention_fwd", q):
        return "kernel"
    return "reference"


def _packed_varlen(q, k, v, cu_seqlens, max_seqlen, scale):
    """FlashAttention varlen path (bf16/fp16, CUDA); ``scale`` folded into q if torch lacks ``scale=``."""
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    m = max(int(max_seqlen), 1)
    if _VARLEN_HAS_SCALE:
        return _varlen_attn(q, k, v, cu, cu, m, m, scale=scale)
    return _varlen_attn(q * (scale * math.sqrt(q.shape[-1])), k, v, cu, cu, m, m)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Attention of padded (B, H, N, D) q, k, v within each jet's first ``lengths[b]`` hits.

    Returns (B, H, N, D) in q's dtype; rows at positions >= lengths[b] are exactly zero.
    Differentiable w.r.t. q, k, v (gradients at padded positions are exactly zero).
    """
    _check_padded(q, k, v, lengths)
    scale = _default_scale(q.shape[-1], scale)
    if _kernel_ok("masked_attention_fwd", q):
        lengths = lengths.to(device=q.device, dtype=torch.int32)
        out, _ = torch.ops.e2econd.masked_attention_fwd(q, k, v, lengths, scale)
        return out
    return masked_attention_reference(q, k, v, lengths, scale)


def packed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: float | None = None,
    *,
    impl: str | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Attention of packed (total, H, D) q, k, v within each jet ``cu_seqlens[b]:cu_seqlens[b+1]``.

    ``cu_seqlens`` int32 (B+1,) starts at 0 and ends at ``total``; ``max_seqlen`` (int) must be at
    least the longest jet. Returns (total, H, D) in q's dtype; differentiable w.r.t. q, k, v.
    q, k, v may be strided views (unit stride along D), e.g. slices of one fused qkv projection.
    ``impl`` picks the path (module doc); ``check=False`` skips the eager value checks (the caller
    has validated ``cu_seqlens`` already, e.g. in the first of several layers).
    """
    _check_packed(q, k, v, cu_seqlens)
    scale = _default_scale(q.shape[-1], scale)
    if check and not _tracing(q, cu_seqlens):
        check_packed_values(cu_seqlens, q.shape[0], max_seqlen)
    path = select_impl(q, impl)
    if path == "varlen" and q.shape[0] > 0:  # (no hits at all: the reference's zeros)
        return _packed_varlen(q, k, v, cu_seqlens, max_seqlen, scale)
    if path == "kernel":
        cu_seqlens = cu_seqlens.to(device=q.device, dtype=torch.int32)
        out, _ = torch.ops.e2econd.packed_attention_fwd(q, k, v, cu_seqlens, int(max_seqlen), scale)
        return out
    return packed_attention_reference(q, k, v, cu_seqlens, max_seqlen, scale)
