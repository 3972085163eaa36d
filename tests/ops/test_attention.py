"""CPU tests of masked / packed attention (Kernel 2) against the pure-PyTorch reference.

Tolerances (relative Frobenius error ‖x − ref‖/‖ref‖ of outputs and of each gradient):
float32 ≤ 1e-5, float64 ≤ 1e-12. The reference itself is checked against a per-jet float64
softmax loop written independently here.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from e2econd.ops import LOADED, has_kernel, reference_mode
from e2econd.ops.attention import (
    masked_attention,
    masked_attention_reference,
    packed_attention,
    packed_attention_reference,
)

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
LENGTH_SETS = [
    [0, 1, 17, 63],
    [65, 127, 0, 300, 1],
    [300, 300],
    [0, 0, 0],
]

_REQUIRE = os.environ.get("E2ECOND_REQUIRE_EXT", "") in ("1", "true", "yes")


def _kernels_present() -> bool:
    ok = all(
        has_kernel(op, "cpu")
        for op in ("masked_attention_fwd", "masked_attention_bwd", "packed_attention_fwd", "packed_attention_bwd")
    )
    if _REQUIRE and not ok:
        pytest.fail(f"E2ECOND_REQUIRE_EXT=1 but the attention CPU kernels are missing (LOADED={LOADED})")
    return ok


needs_kernel = pytest.mark.skipif(
    not _REQUIRE and not all(has_kernel(op, "cpu") for op in ("masked_attention_fwd", "packed_attention_fwd")),
    reason="e2econd._C with attention CPU kernels not built",
)


@pytest.fixture(autouse=True)
def _require_ext():
    _kernels_present()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = b.double().norm().item()
    num = (a.double() - b.double()).norm().item()
    return num / den if den > 0 else num


def naive_padded(q, k, v, lengths, scale):
    """Independent oracle: one float64 softmax per (jet, head) over the jet's first L hits."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    for b, L in enumerate(lengths):
        if L == 0:
            continue
        qb, kb, vb = (x[b, :, :L].double() for x in (q, k, v))
        p = torch.softmax(qb @ kb.transpose(-1, -2) * scale, dim=-1)
        out[b, :, :L] = p @ vb
    return out


def make_padded(lengths, H, D, dtype, seed, N=None, poison=False):
    g = torch.Generator().manual_seed(seed)
    N = N if N is not None else max(max(lengths), 1)
    q, k, v = (torch.randn(len(lengths), H, N, D, generator=g, dtype=dtype) for _ in range(3))
    if poison:  # garbage beyond each jet's length must never leak
        valid = torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]
        for x in (q, k, v):
            x.masked_fill_(~valid[:, None, :, None], float("nan"))
    return q, k, v, torch.tensor(lengths, dtype=torch.int64)


def to_packed(x, lengths):
    """(B, H, N, D) → (total, H, D) keeping each jet's first L rows."""
    return torch.cat([x[b, :, :L].transpose(0, 1) for b, L in enumerate(lengths)], dim=0)


def cu_of(lengths):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return cu


def grads(fn, inputs, g):
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs[:3]]
    out = fn(*leaves, *inputs[3:])
    dq, dk, dv = torch.autograd.grad(out, leaves, g)
    return out.detach(), dq, dk, dv


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lengths", LENGTH_SETS)
def test_reference_matches_naive(lengths):
    q, k, v, L = make_padded(lengths, 2, 16, torch.float64, seed=1)
    scale = 0.3
    out = masked_attention_reference(q, k, v, L, scale)
    assert rel(out, naive_padded(q, k, v, lengths, scale)) < 1e-12
    qp, kp, vp = (to_packed(x, lengths) for x in (q, k, v))
    outp = packed_attention_reference(qp, kp, vp, cu_of(lengths), max(max(lengths), 1), scale)
    assert rel(outp, to_packed(naive_padded(q, k, v, lengths, scale), lengths)) < 1e-12 or sum(lengths) == 0


def test_reference_empty_jet_zero_and_finite_grad():
    q, k, v, L = make_padded([0, 5], 2, 8, torch.float64, seed=2, N=7, poison=True)
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    out = masked_attention_reference(*leaves, L)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    out.sum().backward()
    for x in leaves:
        assert torch.isfinite(x.grad).all()
        assert torch.equal(x.grad[0], torch.zeros_like(x.grad[0]))


def test_reference_mode_forces_reference():
    q, k, v, L = make_padded([3, 9], 2, 16, torch.float32, seed=3)
    with reference_mode():
        a = masked_attention(q, k, v, L)
    assert torch.equal(a, masked_attention_reference(q, k, v, L))


def test_bad_shapes_raise():
    q = torch.randn(2, 3, 4, 8)
    with pytest.raises(ValueError, match="masked_attention"):
        masked_attention(q, q, q[:, :, :3], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="lengths"):
        masked_attention(q, q, q, torch.tensor([1, 2, 3]))
    qp = torch.randn(5, 2, 8)
    with pytest.raises(ValueError, match="cu_seqlens"):
        packed_attention(qp, qp, qp, torch.tensor([0.0, 5.0]), 5)


# ---------------------------------------------------------------------------------------------
# Kernel vs reference
# ---------------------------------------------------------------------------------------------
@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("D", [16, 32, 64, 20])
@pytest.mark.parametrize("lengths", LENGTH_SETS[:2])
def test_padded_kernel_matches_reference(dtype, D, lengths):
    q, k, v, L = make_padded(lengths, 3, D, dtype, seed=D + len(lengths), poison=True)
    g = torch.randn(q.shape, dtype=dtype, generator=torch.Generator().manual_seed(7))
    valid = (torch.arange(q.shape[2])[None, :] < L[:, None])[:, None, :, None]
    g = g.masked_fill(~valid, float("nan"))  # upstream grads of padded outputs must be ignored
    out, dq, dk, dv = grads(masked_attention, (q, k, v, L), g)
    with reference_mode():
        rout, rdq, rdk, rdv = grads(masked_attention, (q, k, v, L), g)
    for a, b in ((out, rout), (dq, rdq), (dk, rdk), (dv, rdv)):
        assert torch.isfinite(a).all()
        assert rel(a, b) <= TOL[dtype]
        assert torch.equal(a.masked_select(~valid.expand_as(a)), torch.zeros_like(a.masked_select(~valid.expand_as(a))))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_sizes(dtype):
    """Fresh random problems: random B, H, D, lengths (incl. 0 and non-tile multiples), scale."""
    gen = torch.Generator().manual_seed(11)
    for trial in range(6):
        B = int(torch.randint(1, 5, (1,), generator=gen))
        H = int(torch.randint(1, 4, (1,), generator=gen))
        D = [16, 24, 32, 48, 64, 8][trial]
        lengths = torch.randint(0, 260, (B,), generator=gen).tolist()
        lengths[0] = [0, 1, 63, 65, 129, 200][trial]
        scale = float(torch.rand((), generator=gen)) + 0.05
        q, k, v, L = make_padded(lengths, H, D, dtype, seed=100 + trial)
        g = torch.randn(q.shape, dtype=dtype, generator=gen)
        res = grads(lambda a, b, c, lens, s=scale: masked_attention(a, b, c, lens, s), (q, k, v, L), g)
        with reference_mode():
            ref = grads(lambda a, b, c, lens, s=scale: masked_attention(a, b, c, lens, s), (q, k, v, L), g)
        for a, b in zip(res, ref):
            assert rel(a, b) <= TOL[dtype], (trial, lengths)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths", LENGTH_SETS)
def test_packed_kernel_matches_reference_and_padded(dtype, lengths):
    H, D = 2, 16
    q, k, v, L = make_padded(lengths, H, D, dtype, seed=5)
    qp, kp, vp = (to_packed(x, lengths) for x in (q, k, v))
    cu, mx = cu_of(lengths), max(max(lengths), 1)
    g = torch.randn(qp.shape, dtype=dtype, generator=torch.Generator().manual_seed(8))
    res = grads(lambda a, b, c: packed_attention(a, b, c, cu, mx), (qp, kp, vp), g)
    with reference_mode():
        ref = grads(lambda a, b, c: packed_attention(a, b, c, cu, mx), (qp, kp, vp), g)
    for a, b in zip(res, ref):
        assert torch.isfinite(a).all()
        assert rel(a, b) <= TOL[dtype]
    # padded layout on the same data: identical per-jet math
    gpad = torch.zeros(q.shape, dtype=dtype)
    for b, n in enumerate(lengths):
        gpad[b, :, :n] = g[cu[b] : cu[b + 1]].transpose(0, 1)
    pad = grads(masked_attention, (q, k, v, L), gpad)
    for a, b in zip(res, pad):
        assert rel(a, to_packed(b, lengths)) <= TOL[dtype]


@needs_kernel
def test_packed_noncontiguous_inputs():
    """q, k, v as strided slices of one fused projection (the model's layout)."""
    lengths = [40, 0, 70]
    total, H, D = sum(lengths), 4, 16
    qkv = torch.randn(total, 3, H, D)
    q, k, v = qkv.unbind(1)
    cu = cu_of(lengths)
    out = packed_attention(q, k, v, cu, 70)
    ref = packed_attention_reference(q.contiguous(), k.contiguous(), v.contiguous(), cu, 70)
    assert rel(out, ref) <= 1e-5


@needs_kernel
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_jets_are_independent(layout):
    """Changing jet 2's hits leaves jet 1's output and gradients bitwise unchanged."""
    lengths = [70, 33, 90]
    q, k, v, L = make_padded(lengths, 2, 16, torch.float32, seed=9)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[2] = torch.randn_like(x[2])
    if layout == "padded":
        g = torch.randn(q.shape)
        a = grads(masked_attention, (q, k, v, L), g)
        b = grads(masked_attention, (q2, k2, v2, L), g)
        for x, y in zip(a, b):
            assert torch.equal(x[:2], y[:2])
            assert not torch.equal(x[2], y[2])
    else:
        cu = cu_of(lengths)
        packs = [[to_packed(x, lengths) for x in t] for t in ((q, k, v), (q2, k2, v2))]
        g = torch.randn(packs[0][0].shape)
        a = grads(lambda *t: packed_attention(*t, cu, 90), packs[0], g)
        b = grads(lambda *t: packed_attention(*t, cu, 90), packs[1], g)
        n01 = lengths[0] + lengths[1]
        for x, y in zip(a, b):
            assert torch.equal(x[:n01], y[:n01])
            assert not torch.equal(x[n01:], y[n01:])


# ---------------------------------------------------------------------------------------------
# gradcheck, opcheck, torch.compile
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["kernel", "reference"])
def test_gradcheck_float64(path):
    if path == "kernel" and not (_REQUIRE or has_kernel("masked_attention_fwd", "cpu")):
        pytest.skip("no attention CPU kernel")
    lengths = [0, 2, 5]
    q, k, v, L = make_padded(lengths, 2, 4, torch.float64, seed=12, N=5)
    leaves = tuple(x.clone().requires_grad_(True) for x in (q, k, v))
    with reference_mode(path == "reference"):
        assert torch.autograd.gradcheck(lambda a, b, c: masked_attention(a, b, c, L, 0.7), leaves, fast_mode=True)
        cu = cu_of(lengths)
        packed = tuple(to_packed(x, lengths).detach().requires_grad_(True) for x in (q, k, v))
        assert torch.autograd.gradcheck(lambda a, b, c: packed_attention(a, b, c, cu, 5, 0.7), packed, fast_mode=True)


@needs_kernel
def test_opcheck():
    lengths = [0, 5, 9]
    q, k, v, L = make_padded(lengths, 2, 16, torch.float32, seed=13)
    L32 = L.to(torch.int32)
    args = [x.clone().requires_grad_(True) for x in (q, k, v)]
    torch.library.opcheck(torch.ops.e2econd.masked_attention_fwd.default, (*args, L32, 0.25))
    out, lse = torch.ops.e2econd.masked_attention_fwd(q, k, v, L32, 0.25)
    torch.library.opcheck(
        torch.ops.e2econd.masked_attention_bwd.default, (torch.randn_like(out), q, k, v, out, lse, L32, 0.25)
    )
    qp, kp, vp = (to_packed(x, lengths) for x in (q, k, v))
    cu = cu_of(lengths)
    argsp = [x.clone().requires_grad_(True) for x in (qp, kp, vp)]
    torch.library.opcheck(torch.ops.e2econd.packed_attention_fwd.default, (*argsp, cu, 9, 0.25))
    outp, lsep = torch.ops.e2econd.packed_attention_fwd(qp, kp, vp, cu, 9, 0.25)
    torch.library.opcheck(
        torch.ops.e2econd.packed_attention_bwd.default, (torch.randn_like(outp), qp, kp, vp, outp, lsep, cu, 9, 0.25)
    )


@needs_kernel
def test_torch_compile_fullgraph():
    lengths = [0, 21, 40]
    q, k, v, L = make_padded(lengths, 2, 16, torch.float32, seed=14)
    qp, kp, vp = (to_packed(x, lengths) for x in (q, k, v))
    cu = cu_of(lengths)

    def f(q, k, v, qp, kp, vp):
        a = masked_attention(q, k, v, L)
        b = packed_attention(qp, kp, vp, cu, 40)
        return a.square().sum() + (b * 1.5).sum()

    leaves = [x.clone().requires_grad_(True) for x in (q, k, v, qp, kp, vp)]
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(*leaves)
    got = torch.autograd.grad(loss, leaves)
    ref_leaves = [x.clone().requires_grad_(True) for x in (q, k, v, qp, kp, vp)]
    ref_loss = f(*ref_leaves)
    want = torch.autograd.grad(ref_loss, ref_leaves)
    assert torch.allclose(loss, ref_loss, rtol=1e-6)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_scale_default_is_inverse_sqrt_d():
    q, k, v, L = make_padded([5, 3], 1, 16, torch.float64, seed=15)
    assert rel(masked_attention(q, k, v, L), naive_padded(q, k, v, [5, 3], 1 / math.sqrt(16))) < 1e-12


# ---------------------------------------------------------------------------------------------
# Tile boundaries, long jets, softmax stability, the baseline (non-AVX2) code path
# ---------------------------------------------------------------------------------------------
TILE_LENGTHS = [47, 48, 49, 127, 128, 129, 256, 257, 1000]  # around the 48-query / 128-key CPU tiles


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tile_boundaries_and_long_jets(dtype):
    H, D = 2, 16
    q, k, v, L = make_padded(TILE_LENGTHS, H, D, dtype, seed=21)
    qp, kp, vp = (to_packed(x, TILE_LENGTHS) for x in (q, k, v))
    cu = cu_of(TILE_LENGTHS)
    g = torch.randn(qp.shape, dtype=dtype, generator=torch.Generator().manual_seed(22))
    res = grads(lambda a, b, c: packed_attention(a, b, c, cu, 1000), (qp, kp, vp), g)
    with reference_mode():
        ref = grads(lambda a, b, c: packed_attention(a, b, c, cu, 1000), (qp, kp, vp), g)
    for a, b in zip(res, ref):
        assert rel(a, b) <= TOL[dtype]


@needs_kernel
def test_online_softmax_stable_when_the_max_moves_between_tiles():
    """Scores growing by ~19 per 128-key tile: every new key tile raises the running max far above
    the earlier ones (rescale factors ~2^-28), and the last scores (~90) would overflow a float32
    exp() without the max subtraction. Checked against the float64 per-jet softmax, with the float32
    reference's own error (scores of ~90 carry ~5e-6 rounding) as the yardstick."""
    n, D = 600, 16
    g = torch.Generator().manual_seed(23)
    q = torch.randn(n, 1, D, generator=g) * 0.1
    q[:, 0, 0] = 1.0
    k = torch.randn(n, 1, D, generator=g) * 0.1
    k[:, 0, 0] = torch.arange(n) * 0.15 * 4.0  # score slope 0.15/key at scale 1/4
    v = torch.randn(n, 1, D, generator=g)
    cu = cu_of([n])
    out = packed_attention(q, k, v, cu, n)
    want = naive_padded(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], [n], 0.25)
    want = want[0].transpose(0, 1)
    ref32 = packed_attention_reference(q, k, v, cu, n)
    assert torch.isfinite(out).all()
    assert rel(out, want) <= max(2 * rel(ref32, want), 1e-6), (rel(out, want), rel(ref32, want))


_GENERIC_SCRIPT = r"""
import json, torch
from e2econd.ops.attention import packed_attention
from e2econd.ops import reference_mode
lengths = [0, 1, 47, 48, 49, 128, 129, 300]
cu = torch.zeros(len(lengths) + 1, dtype=torch.int32); cu[1:] = torch.tensor(lengths).cumsum(0)
res = {"build": torch.ops.e2econd.build_info()}
for dtype in (torch.float32, torch.float64):
    g = torch.Generator().manual_seed(3)
    q, k, v, up = (torch.randn(sum(lengths), 2, 20, generator=g, dtype=dtype) for _ in range(4))
    def run():
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
        out = packed_attention(*leaves, cu, 300)
        return [out.detach(), *torch.autograd.grad(out, leaves, up)]
    got = run()
    with reference_mode():
        want = run()
    res[str(dtype)] = max(((a - b).double().norm() / b.double().norm()).item() for a, b in zip(got, want))
print(json.dumps(res))
"""


@needs_kernel
def test_generic_isa_path_matches_reference():
    """E2ECOND_CPU_ISA=generic runs the baseline x86-64 copy of the kernels (what a CPU without
    AVX2 gets); it must agree with the reference like the AVX2 copy does."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "E2ECOND_CPU_ISA": "generic", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", _GENERIC_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "cpu_isa=generic" in res["build"]
    assert res["torch.float32"] <= TOL[torch.float32]
    assert res["torch.float64"] <= TOL[torch.float64]
    assert "cpu_isa=" in torch.ops.e2econd.build_info()
