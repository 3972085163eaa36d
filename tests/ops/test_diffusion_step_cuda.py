"""CUDA kernel of diffusion_step against the reference (fp32 and bf16), run on a GPU machine.

Tolerances ‖out − ref‖/‖ref‖: fp32 ≤ 1e-6 without Philox noise (no FMA-sensitive terms beyond
rounding), ≤ 2e-6 with in-kernel Philox (fast-math log/sincos); bf16 storage ≤ 8e-3 (one bf16
rounding of the output, ref computed in fp32 from the same bf16 inputs and rounded once).
"""

from __future__ import annotations

import pytest
import torch

from e2econd.ops import has_kernel
from e2econd.ops.diffusion_step import diffusion_step, diffusion_step_, diffusion_step_reference
from e2econd.ops.philox import philox_normal

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not (torch.cuda.is_available() and has_kernel("diffusion_step", "cuda")),
        reason="needs a CUDA GPU and the CUDA kernels of e2econd",
    ),
]

TOL = {torch.float32: 1e-6, torch.bfloat16: 8e-3}
SHAPES = [(0, 4, 3), (1, 1, 1), (2, 5, 3), (3, 257, 3), (5, 1001, 7), (2, 3, 1025), (7, 3), (4099, 5), (64, 700, 3)]


def rel_err(a, b):
    a, b = a.double(), b.double()
    den = b.norm().item()
    return (a - b).norm().item() / (den if den > 0 else 1.0)


def _inputs(shape, seed, per_sample, dtype):
    g = torch.Generator().manual_seed(seed)
    r = lambda: torch.randn(shape, generator=g).to("cuda", dtype)  # noqa: E731
    coef = torch.randn((shape[0], 6) if per_sample else (6,), generator=g).cuda()
    mask = (torch.rand(shape[:-1], generator=g) > 0.3).cuda()
    return r(), r(), coef, mask, r(), r()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("variant", ["plain", "mask_prev_noise", "philox_clip_x0"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cuda_matches_reference(shape, variant, per_sample, dtype):
    if per_sample and len(shape) < 2:
        pytest.skip("per-sample coef needs x.dim() >= 2")
    x, v, coef, mask, xp, noise = _inputs(shape, hash((shape, variant)) % 2**31, per_sample, dtype)
    kw = {
        "plain": {},
        "mask_prev_noise": dict(mask=mask, x0_prev=xp, noise=noise, return_x0=True),
        "philox_clip_x0": dict(mask=mask, seed=77, offset=2**33 + 3, clip=0.9, return_x0=True),
    }[variant]
    ref, ref_x0 = diffusion_step_reference(x, v, coef, **kw)
    torch.use_deterministic_algorithms(True)  # NaN-fill fresh outputs: unwritten elements show
    try:
        out, x0 = diffusion_step(x, v, coef, **kw)
    finally:
        torch.use_deterministic_algorithms(False)
    tol = TOL[dtype] * (2 if "seed" in kw and dtype == torch.float32 else 1)
    assert out.dtype == dtype and out.shape == x.shape
    assert not torch.isnan(out).any()
    assert rel_err(out, ref) <= tol
    assert rel_err(x0, ref_x0) <= tol
    if "mask" in kw:
        keep = mask.unsqueeze(-1).expand_as(x)
        assert torch.equal(
            out[~keep].view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
            x[~keep].view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
        )
        assert (x0[~keep] == 0).all()
    xi = x.clone()
    kw.pop("return_x0", None)
    diffusion_step_(xi, v, coef, **kw)
    assert torch.equal(xi, out)


def test_cuda_noise_equals_cpu_and_reference():
    n = 4 * 100_000 + 1
    coef = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    z_cuda = (
        diffusion_step(
            torch.zeros(n, 1, device="cuda"), torch.zeros(n, 1, device="cuda"), coef.cuda(), seed=5, offset=9
        )[0]
        .cpu()
        .reshape(-1)
    )
    z_ref = philox_normal(n, 5, 9)
    assert rel_err(z_cuda, z_ref) <= 2e-6
    assert (z_cuda - z_ref).abs().max().item() < 1e-4
    if has_kernel("diffusion_step", "cpu"):
        z_cpu = diffusion_step(torch.zeros(n, 1), torch.zeros(n, 1), coef, seed=5, offset=9)[0].reshape(-1)
        assert (z_cuda - z_cpu).abs().max().item() < 1e-4


def test_cuda_noise_exact_near_u_one():
    """log1pf(u - 1) in the kernel: no fast-math __logf error where u -> 1 (small radii).

    Over 4M normals some u lie within 2^-20 of 1; there __logf's absolute error (~2^-21.4) moves the
    radius by ~1e-4, while log1pf stays at float rounding (reference: philox.py's log1p formula).
    """
    n = 1 << 22
    coef = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0], device="cuda")
    x = torch.randn(n, 1, device="cuda")
    z_cuda = diffusion_step(x, torch.randn_like(x), coef, seed=123, offset=4)[0].cpu().reshape(-1)
    z_ref = philox_normal(n, 123, 4, log1p=True)
    # fast-math sincos contributes <= ~2^-21.4 * |z| (< 3e-6); a __logf radius error would be ~1e-4
    assert (z_cuda - z_ref).abs().max().item() < 1e-5


def test_cuda_unaligned_views():
    """Inputs at an odd storage offset take the scalar (non-128-bit) path."""
    base = torch.randn(3 * 1000 * 3 + 1, device="cuda")
    x = base[1:].view(3, 1000, 3)
    v = torch.randn(3, 1000, 3, device="cuda")
    coef = torch.randn(3, 6, device="cuda")
    ref = diffusion_step_reference(x, v, coef, seed=1)[0]
    out = torch.ops.e2econd.diffusion_step(x, v, coef, None, None, None, 0.0, 1, 0, False)[0]
    assert rel_err(out, ref) <= 2e-6


def test_cuda_opcheck_and_compile():
    x, v, coef, mask, xp, noise = _inputs((3, 37, 3), 1, True, torch.float32)
    ops = torch.ops.e2econd
    torch.library.opcheck(ops.diffusion_step.default, (x, v, coef, mask, xp, None, 0.5, 3, 1, True))
    torch.library.opcheck(ops.diffusion_step_.default, (x.clone(), v, coef, mask, xp, noise, 0.0, -1, 0))
    f = torch.compile(lambda x, v, c, m: diffusion_step(x, v, c, mask=m, seed=2)[0] + 1, fullgraph=True)
    assert torch.equal(f(x, v, coef, mask), diffusion_step(x, v, coef, mask=mask, seed=2)[0] + 1)
