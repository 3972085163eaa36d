"""CUDA tests of masked / packed attention (Kernel 2); skipped without a GPU.

Each CUDA result is compared with the float64 pure-PyTorch reference evaluated on the same
(rounded) inputs. Tolerances on ‖x − ref‖/‖ref‖ of the output and of each gradient:
float32 ≤ 2e-5 (fast-math exp2), float16 ≤ 5e-3, bfloat16 ≤ 3e-2 (output and gradients rounded
to the storage dtype, fp32 accumulation inside). bf16/fp16 run both packed paths: ``auto`` (the
tensor-core ``varlen_attn`` path, what the model uses) and ``kernel`` (e2econd's fp32-FMA kernel).
"""

from __future__ import annotations

import pytest
import torch

from e2econd.ops import has_kernel, reference_mode
from e2econd.ops.attention import masked_attention, packed_attention, select_impl, varlen_available

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (dtype, impl): fp32 has one path; half precision both (auto = varlen on tensor cores)
PATHS = [
    (torch.float32, "auto"),
    (torch.float16, "auto"),
    (torch.float16, "kernel"),
    (torch.bfloat16, "auto"),
    (torch.bfloat16, "kernel"),
]


@pytest.fixture(autouse=True)
def _need_kernel():
    if not has_kernel("packed_attention_fwd", "cuda"):
        pytest.fail("CUDA available but e2econd._C has no attention CUDA kernels (build with E2ECOND_CUDA=1)")


def rel(a, b):
    den = b.double().norm().item()
    return (a.double() - b.double()).norm().item() / den if den > 0 else (a.double() - b.double()).norm().item()


def packed_inputs(lengths, H, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    xs = [torch.randn(total, H, D, generator=g).to("cuda", dtype) for _ in range(3)]
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return xs, cu.cuda()


def to_padded(x, lengths):
    B, N = len(lengths), max(max(lengths), 1)
    out = x.new_zeros(B, N, *x.shape[1:])
    s = 0
    for b, n in enumerate(lengths):
        out[b, :n] = x[s : s + n]
        s += n
    return out.transpose(1, 2).contiguous()


def run(fn, xs, g):
    leaves = [x.detach().clone().requires_grad_(True) for x in xs]
    out = fn(*leaves)
    return (out.detach(), *torch.autograd.grad(out, leaves, g))


def test_half_precision_takes_the_tensor_core_path():
    q = torch.zeros(5, 2, 32, device="cuda", dtype=torch.bfloat16)
    assert varlen_available(), "torch.nn.attention.varlen.varlen_attn missing in this torch"
    assert select_impl(q) == "varlen" and select_impl(q, "kernel") == "kernel"
    assert select_impl(q.float()) == "kernel" and select_impl(q.double()) == "reference"
    assert select_impl(torch.zeros(5, 2, 20, device="cuda", dtype=torch.bfloat16)) == "kernel"  # D % 8 != 0


@pytest.mark.parametrize("dtype,impl", PATHS)
@pytest.mark.parametrize("D", [16, 32, 64, 24])
@pytest.mark.parametrize("lengths", [[0, 1, 17, 63, 65, 127, 300], [2000, 30, 700, 0]])
def test_packed_and_padded_vs_reference(dtype, impl, D, lengths):
    H = 4
    xs, cu = packed_inputs(lengths, H, D, dtype, seed=D)
    mx = max(max(lengths), 1)
    g = torch.randn(xs[0].shape, device="cuda").to(dtype)
    got = run(lambda q, k, v: packed_attention(q, k, v, cu, mx, impl=impl), xs, g)
    with reference_mode():
        ref = run(lambda q, k, v: packed_attention(q, k, v, cu, mx), [x.double() for x in xs], g.double())
    for a, b in zip(got, ref):
        assert a.dtype == dtype and torch.isfinite(a).all()
        assert rel(a, b) <= TOL[dtype]
    # padded layout on the same data, NaN-poisoned beyond each length
    lens = torch.tensor(lengths, device="cuda")
    pads = [to_padded(x, lengths) for x in xs]
    valid = (torch.arange(mx, device="cuda")[None] < lens[:, None])[:, None, :, None]
    pads = [p.masked_fill(~valid, float("nan")) for p in pads]
    gp = to_padded(g, lengths).masked_fill(~valid, float("nan"))
    res = run(lambda q, k, v: masked_attention(q, k, v, lens), pads, gp)
    for a, b in zip(res, got):
        assert torch.isfinite(a).all()
        assert torch.equal(a.masked_select(~valid.expand_as(a)).float().abs().sum().cpu(), torch.tensor(0.0))
        assert rel(a.transpose(1, 2)[valid[:, 0, :, 0]], b) <= TOL[dtype]


@pytest.mark.parametrize("dtype,impl", PATHS)
def test_jets_independent_cuda(dtype, impl):
    lengths = [300, 65, 129]
    xs, cu = packed_inputs(lengths, 2, 32, dtype, seed=3)
    ys = [x.clone() for x in xs]
    for y in ys:
        y[365:] = torch.randn_like(y[365:])
    g = torch.randn(xs[0].shape, device="cuda").to(dtype)
    a = run(lambda q, k, v: packed_attention(q, k, v, cu, 300, impl=impl), xs, g)
    b = run(lambda q, k, v: packed_attention(q, k, v, cu, 300, impl=impl), ys, g)
    for x, y in zip(a, b):
        assert torch.equal(x[:365], y[:365])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_varlen_and_kernel_paths_agree(dtype):
    lengths = [700, 1, 0, 250, 1999]
    xs, cu = packed_inputs(lengths, 6, 32, dtype, seed=8)  # the gpu preset's heads and head dim
    g = torch.randn(xs[0].shape, device="cuda").to(dtype)
    a = run(lambda q, k, v: packed_attention(q, k, v, cu, 1999, impl="varlen"), xs, g)
    b = run(lambda q, k, v: packed_attention(q, k, v, cu, 1999, impl="kernel"), xs, g)
    for x, y in zip(a, b):
        assert rel(x, y) <= 2 * TOL[dtype]


def test_strided_qkv_views_need_no_copy():
    """q, k, v as the model makes them: views of one (total, 3, H, D) projection."""
    lengths = [40, 129, 7]
    qkv = torch.randn(sum(lengths), 3, 2, 32, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0, 40, 169, 176], dtype=torch.int32, device="cuda")
    for impl in ("auto", "kernel"):
        a = packed_attention(*qkv.unbind(1), cu, 129, impl=impl)
        b = packed_attention(*(t.contiguous() for t in qkv.unbind(1)), cu, 129, impl=impl)
        assert torch.equal(a, b)


def test_contract_checked_on_cuda_in_eager_mode():
    xs, cu = packed_inputs([5, 7], 2, 16, torch.bfloat16, seed=1)
    with pytest.raises(ValueError, match="max_seqlen = 6 is below the longest jet"):
        packed_attention(*xs, cu, 6)
    with pytest.raises(ValueError, match=r"cu_seqlens\[-1\] = 14"):
        packed_attention(*xs, torch.tensor([0, 5, 14], dtype=torch.int32, device="cuda"), 9)


@pytest.mark.parametrize("impl", ["auto", "kernel"])
def test_compile_cuda(impl):
    lengths = [0, 40, 129]
    xs, cu = packed_inputs(lengths, 2, 16, torch.bfloat16, seed=4)
    f = torch.compile(lambda q, k, v: packed_attention(q, k, v, cu, 129, impl=impl), fullgraph=True)
    assert torch.equal(f(*xs), packed_attention(*xs, cu, 129, impl=impl))
