"""Contract checks and dtype-aware dispatch of the ops (issue 19, item 1), on CPU.

Packed attention: bad ``cu_seqlens`` / ``max_seqlen`` raise a one-line ValueError in eager mode, in
the Python wrapper (all paths) and in the C++ op itself; the checks stay out of traced code. The
dispatch sends dtypes a kernel does not take to the reference instead of raising. The varlen
(tensor-core) wiring is checked with a stand-in for ``varlen_attn`` (the real one needs a GPU).
"""

from __future__ import annotations

import math

import pytest
import torch

from e2econd.ops import attention as A
from e2econd.ops import has_kernel, reference_mode
from e2econd.ops.attention import packed_attention, packed_attention_reference, select_impl
from e2econd.ops.diffusion_step import diffusion_step, diffusion_step_, diffusion_step_reference
from e2econd.ops.philox import philox_normal

kernel = pytest.mark.skipif(not has_kernel("packed_attention_fwd", "cpu"), reason="attention CPU kernel not built")


def _qkv(total, H=2, D=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(total, H, D, generator=g).to(dtype) for _ in range(3)]


BAD = [  # (cu_seqlens, total, max_seqlen, message fragment)
    ([0, 5, 12], 12, 6, "max_seqlen = 6 is below the longest jet (jet 1: 7 hits)"),
    ([0, 5, 14], 12, 9, "cu_seqlens[-1] = 14 but q has 12 tokens"),
    ([0, 5, 10], 12, 9, "cu_seqlens[-1] = 10 but q has 12 tokens"),
    ([0, 8, 5, 12], 12, 9, "non-decreasing (jet 1: 8 -> 5)"),
    ([2, 5, 12], 12, 9, "must start at 0"),
]


@pytest.mark.parametrize("path", ["kernel", "reference"])
@pytest.mark.parametrize("cu,total,mx,msg", BAD)
def test_packed_contract_violations_raise_one_line(path, cu, total, mx, msg):
    q, k, v = _qkv(total)
    cu = torch.tensor(cu, dtype=torch.int32)
    with pytest.raises(ValueError) as err:
        packed_attention(q, k, v, cu, mx, impl=path)
    assert msg in str(err.value) and "\n" not in str(err.value)


@kernel
@pytest.mark.parametrize(
    "cu,mx,msg",
    [
        ([0, 5, 12], 6, "max_seqlen = 6 is below the longest jet (7 hits)"),
        ([0, 5, 14], 9, "end at <= total (12)"),
        ([0, 8, 5, 12], 9, "non-decreasing (jet 1: 8 -> 5)"),
    ],
)
def test_cpp_op_checks_the_same_contract(cu, mx, msg):
    q, k, v = _qkv(12)
    cu = torch.tensor(cu, dtype=torch.int32)
    with pytest.raises(ValueError, match="packed_attention_fwd") as err:
        torch.ops.e2econd.packed_attention_fwd(q, k, v, cu, mx, 0.25)
    assert msg in str(err.value)
    good = torch.tensor([0, 5, 12], dtype=torch.int32)
    out, lse = torch.ops.e2econd.packed_attention_fwd(q, k, v, good, 7, 0.25)
    with pytest.raises(ValueError, match="packed_attention_bwd") as err:
        torch.ops.e2econd.packed_attention_bwd(out, q, k, v, out, lse, cu, mx, 0.25)
    assert msg in str(err.value)
    with pytest.raises(ValueError, match=r"lse must be \(H, total\)"):
        torch.ops.e2econd.packed_attention_bwd(out, q, k, v, out, lse[:, :5], good, 7, 0.25)


def test_checks_can_be_skipped_and_stay_out_of_tracing():
    q, k, v = _qkv(12)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    want = packed_attention_reference(q, k, v, cu, 7)
    assert torch.equal(packed_attention(q, k, v, cu, 7, impl="reference", check=False), want)
    f = torch.compile(
        lambda q, k, v: packed_attention(q, k, v, cu, 7, impl="reference"), fullgraph=True, backend="eager"
    )
    assert torch.allclose(f(q, k, v), want)


def test_select_impl_dispatch_respects_dtype_and_device():
    has = has_kernel("packed_attention_fwd", "cpu")
    for dtype in (torch.float32, torch.float64):
        q = torch.zeros(3, 2, 16, dtype=dtype)
        assert select_impl(q) == ("kernel" if has else "reference")
        assert select_impl(q, "varlen") == ("kernel" if has else "reference")  # varlen is CUDA-only
        assert select_impl(q, "reference") == "reference"
    for dtype in (torch.float16, torch.bfloat16):
        assert select_impl(torch.zeros(3, 2, 16, dtype=dtype)) == "reference"
    with pytest.raises(ValueError, match="unknown impl 'flash'"):
        select_impl(torch.zeros(3, 2, 16), "flash")
    with reference_mode():
        assert select_impl(torch.zeros(3, 2, 16)) == "reference"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cpu_falls_back_to_reference(dtype):
    q, k, v = _qkv(12, dtype=dtype, seed=3)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    out = packed_attention(q, k, v, cu, 7)
    assert out.dtype == dtype
    assert torch.equal(out, packed_attention_reference(q, k, v, cu, 7))


def test_env_var_selects_the_path(monkeypatch):
    q = torch.zeros(3, 2, 16)
    monkeypatch.setenv("E2ECOND_ATTENTION", "reference")
    assert select_impl(q) == "reference"
    monkeypatch.setenv("E2ECOND_ATTENTION", "bogus")
    with pytest.raises(ValueError, match="E2ECOND_ATTENTION"):
        select_impl(q)


@pytest.mark.parametrize("has_scale", [True, False])
def test_varlen_wiring_with_a_stand_in(monkeypatch, has_scale):
    """The varlen path passes int32 cu_seqlens, max lengths and the scale (or folds it into q)."""
    calls = []

    def fake_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None):
        calls.append((cu_q.dtype, cu_k is cu_q or torch.equal(cu_q, cu_k), max_q, max_k, scale))
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        return packed_attention_reference(q, k, v, cu_q, max_q, s)

    if not has_scale:

        def fake_varlen(q, k, v, cu_q, cu_k, max_q, max_k, _f=fake_varlen):  # noqa: F811 (no scale=)
            return _f(q, k, v, cu_q, cu_k, max_q, max_k)

    monkeypatch.setattr(A, "_varlen_attn", fake_varlen)
    monkeypatch.setattr(A, "_VARLEN_HAS_SCALE", has_scale)
    monkeypatch.setattr(A, "_varlen_ok", lambda q: True)
    q, k, v = _qkv(12, D=16, seed=5)
    cu = torch.tensor([0, 5, 12], dtype=torch.int64)
    out = packed_attention(q, k, v, cu, 7, scale=0.3)
    ref = packed_attention_reference(q, k, v, cu, 7, 0.3)
    assert calls and calls[0][0] == torch.int32 and calls[0][2:4] == (7, 7)
    assert calls[0][4] == (0.3 if has_scale else None)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    assert select_impl(q, "kernel") != "varlen"  # the switch forces the e2econd kernel
    with reference_mode():  # reference_mode wins over varlen as over every kernel
        assert select_impl(q) == select_impl(q, "varlen") == "reference"


# ------------------------------------------------------------------------------------ diffusion step
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_diffusion_step_unsupported_dtype_falls_back(dtype):
    g = torch.Generator().manual_seed(0)
    x, v = (torch.randn(40, 3, generator=g).to(dtype) for _ in range(2))
    coef = torch.tensor([0.9, 0.4, 0.3, 0.6, 0.0, 0.2])
    out, x0 = diffusion_step(x, v, coef, seed=4, offset=1, return_x0=True)
    ref, ref0 = diffusion_step_reference(x, v, coef, seed=4, offset=1, return_x0=True)
    assert out.dtype == dtype and torch.equal(out, ref) and torch.equal(x0, ref0)
    xi = x.clone()
    diffusion_step_(xi, v, coef, seed=4, offset=1)
    assert torch.equal(xi, ref)


def test_philox_log1p_formula_matches_float64_box_muller():
    """The CUDA formula (log1p(u - 1)) and the CPU one (log u) are the same normals up to rounding;
    near u -> 1 both stay within float rounding of the float64 value."""
    n = 1 << 18
    a, b = philox_normal(n, 11, 3), philox_normal(n, 11, 3, log1p=True)
    assert (a - b).abs().max().item() < 2e-6
    u = (torch.arange(1, 1 << 10, dtype=torch.float64) * -1 + (1 << 23) - 0.5) * 2.0**-23  # u close to 1
    u32 = u.float()
    exact = torch.sqrt(-2 * torch.log(u32.double()))
    approx = torch.sqrt(-2 * torch.log1p(u32 - 1))
    assert ((approx.double() - exact).abs() / exact).max().item() < 1e-6
