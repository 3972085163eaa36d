"""Tests of the fused reverse-diffusion step: Philox, reference vs closed forms, CPU kernel vs reference.

Tolerance (fp32): ‖out − ref‖ / ‖ref‖ ≤ 1e-6 and elementwise |out − ref| ≤ 1e-5·(1 + |ref|); with
tensor noise and no Philox the CPU kernel is bitwise equal to the reference (same op order, no FMA).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from e2econd.diffusion.coefficients import ddpm_coefficients
from e2econd.ops import LOADED, has_kernel
from e2econd.ops.diffusion_step import diffusion_step, diffusion_step_, diffusion_step_reference
from e2econd.ops.philox import MASK32, _mulhilo, philox4x32_10, philox_normal

RTOL_FP32 = 1e-6
REQUIRE_EXT = os.environ.get("E2ECOND_REQUIRE_EXT", "") in ("1", "true", "yes")


@pytest.fixture
def ext():
    """The CPU kernel must be registered (fails, not skips, when CI requires the extension)."""
    if not has_kernel("diffusion_step", "cpu"):
        msg = f"e2econd CPU kernel of diffusion_step not available (LOADED={LOADED})"
        if REQUIRE_EXT:
            pytest.fail(msg)
        pytest.skip(msg)


def test_extension_loaded_when_required():
    if REQUIRE_EXT:
        assert LOADED and has_kernel("diffusion_step", "cpu") and has_kernel("diffusion_step_", "cpu")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    den = b.norm().item()
    return (a - b).norm().item() / den if den > 0 else (a - b).norm().item()


def assert_close(out, ref, rtol=RTOL_FP32):
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert not torch.isnan(out).any() or torch.equal(torch.isnan(out), torch.isnan(ref))
    assert rel_err(out, ref) <= rtol, rel_err(out, ref)
    assert ((out.double() - ref.double()).abs() <= 1e-5 * (1 + ref.double().abs())).all()


# ------------------------------------------------------------------------------------------ Philox
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32,) * 4, (MASK32, MASK32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    out = philox4x32_10(torch.tensor(counter, dtype=torch.int64), torch.tensor(key, dtype=torch.int64))
    assert tuple(int(w) for w in out) == expected


def test_mulhilo_matches_python_ints():
    g = torch.Generator().manual_seed(1)
    c = torch.randint(0, 2**32, (5000,), generator=g, dtype=torch.int64)
    c[:3] = torch.tensor([0, 1, MASK32])
    for m in (0xD2511F53, 0xCD9E8D57, MASK32):
        hi, lo = _mulhilo(m, c)
        for ci, h, lw in zip(c.tolist(), hi.tolist(), lo.tolist()):
            assert (h << 32) | lw == m * ci


def test_philox_normal_statistics_and_layout():
    z = philox_normal(100_003, seed=7, offset=0)
    assert z.dtype == torch.float32 and z.shape == (100_003,)
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02
    assert z.abs().max().item() < 5.8  # Box-Muller with 23-bit uniforms: |z| <= 5.77
    from scipy import stats

    assert stats.kstest(z[:50_000].numpy(), "norm").pvalue > 1e-4
    # element i depends only on (seed, offset, i): a prefix of a longer draw is the shorter draw
    assert torch.equal(philox_normal(1001, 7, 0), z[:1001])
    other = philox_normal(100_003, seed=7, offset=1)
    assert abs(torch.corrcoef(torch.stack((z, other)))[0, 1].item()) < 0.02
    assert not torch.equal(philox_normal(64, 8, 0), z[:64])


# ------------------------------------------------ kernel noise in a sampler chain (closed-form moments)
# (the coefficient formulas themselves are tested against closed forms in tests/diffusion/test_coefficients.py)
def cosine(t):
    return math.cos(math.pi / 2 * t), math.sin(math.pi / 2 * t)


def _gaussian_denoiser_v(x, alpha, sigma, mu, s):
    """v-prediction of the exact denoiser for data N(mu, s²): x̂0 = mu + α s²/(α²s²+σ²)(x − α mu)."""
    x0 = mu + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (x - alpha * mu)
    return (alpha * x - x0) / sigma


def test_ddpm_ancestral_samples_gaussian_data(ext):
    """Ancestral sampling with in-kernel Philox noise (offset = step) of Gaussian data N(mu, s²).

    With the exact (affine) denoiser each step is x_s = A x_t + b + c_n z, so the chain's mean and
    variance follow in closed form (m ← A m + b, V ← A² V + c_n²): the samples must match them.
    """
    mu, s, steps = -0.3, 0.5, 20
    ts = torch.linspace(0.999, 0.0, steps + 1).tolist()
    x = philox_normal(40_000, seed=11, offset=10_000).reshape(400, 100, 1)
    m, var = 0.0, 1.0
    for k, (t, tn) in enumerate(zip(ts[:-1], ts[1:])):
        at, st = cosine(t)
        an, sn = cosine(tn) if tn > 0 else (1.0, 0.0)
        v = _gaussian_denoiser_v(x.double(), at, st, mu, s).float()
        coef = ddpm_coefficients(at, st, an, sn)
        x = diffusion_step(x, v, coef, seed=5, offset=k)[0]
        cx, c0, cn = (coef[j].item() for j in (2, 3, 5))
        gain = at * s**2 / (at**2 * s**2 + st**2)  # x̂0 = mu + gain (x − α mu)
        m = cx * m + c0 * (mu + gain * (m - at * mu))
        var = (cx + c0 * gain) ** 2 * var + cn**2
    assert x.mean().item() == pytest.approx(m, abs=0.012)
    assert x.var().item() == pytest.approx(var, rel=0.03)
    # the coarse chain under-disperses (point-estimate x̂0) but is near the data distribution
    assert 0.6 * s**2 < var < 1.1 * s**2


# --------------------------------------------------------------------------- kernel vs reference
SHAPES = [
    (0, 4, 3),
    (2, 0, 3),
    (1, 1, 1),
    (1, 1, 3),
    (2, 5, 3),
    (3, 257, 3),
    (5, 1001, 7),
    (2, 3, 1025),
    (0, 3),
    (1, 1),
    (7, 3),
    (4099, 5),
]


def _inputs(shape, seed, per_sample):
    g = torch.Generator().manual_seed(seed)
    r = lambda: torch.randn(shape, generator=g)  # noqa: E731
    coef = torch.randn((shape[0], 6) if per_sample else (6,), generator=g)
    mask = torch.rand(shape[:-1], generator=g) > 0.3
    return r(), r(), coef, mask, r(), r()


VARIANTS = {
    "plain": dict(),
    "mask": dict(mask=True),
    "clip_x0": dict(clip=0.8, return_x0=True),
    "prev_noise": dict(x0_prev=True, noise=True, mask=True, return_x0=True),
    "philox": dict(seed=123, offset=9, mask=True, x0_prev=True),
    "philox_clip": dict(seed=2**40 + 5, offset=2**33 + 1, clip=1.5, return_x0=True),
}


def _kwargs(variant, mask, x0_prev, noise):
    kw = dict(VARIANTS[variant])
    for name, val in (("mask", mask), ("x0_prev", x0_prev), ("noise", noise)):
        if kw.pop(name, False):
            kw[name] = val
    return kw


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernel_matches_reference(ext, shape, variant, per_sample):
    if per_sample and len(shape) < 2:
        pytest.skip("per-sample coef needs x.dim() >= 2")
    x, v, coef, mask, x0_prev, noise = _inputs(shape, hash((shape, variant)) % 2**31, per_sample)
    kw = _kwargs(variant, mask, x0_prev, noise)
    ref, ref_x0 = diffusion_step_reference(x, v, coef, **kw)
    # deterministic mode fills the op's freshly allocated outputs with NaN: unwritten elements show
    torch.use_deterministic_algorithms(True)
    try:
        out, x0 = diffusion_step(x, v, coef, **kw)
    finally:
        torch.use_deterministic_algorithms(False)
    assert_close(out, ref)
    assert x0.shape == ref_x0.shape
    assert_close(x0, ref_x0)
    if "seed" not in kw:  # no libm involved: same op order, bitwise equal
        assert torch.equal(out, ref)
    # in place: x poisoned is not possible (it is the input), but every element must become ref
    xi = x.clone()
    kw.pop("return_x0", None)
    assert diffusion_step_(xi, v, coef, **kw) is xi
    assert_close(xi, ref)
    assert torch.equal(xi, out)


def test_poisoning_is_effective(ext):
    """Sanity check of the test harness: deterministic mode really NaN-fills fresh outputs."""
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.isnan(torch.empty(1000)).all()
    finally:
        torch.use_deterministic_algorithms(False)


def test_masked_points_bitwise_copied(ext):
    torch.manual_seed(4)
    x, v, coef, mask, x0_prev, noise = _inputs((4, 333, 3), 5, True)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-42, 3.0])
    bits = special.view(torch.int32).clone()
    bits[0] = 0x7FC01234  # NaN with a payload
    fill = bits.view(torch.float32).repeat((~mask).sum().item() * 3 // 6 + 1)[: (~mask).sum().item() * 3]
    x[~mask] = fill.reshape(-1, 3)
    for kw in (dict(), dict(seed=1), dict(noise=noise, x0_prev=x0_prev, clip=0.5)):
        out, x0 = diffusion_step(x, v, coef, mask=mask, return_x0=True, **kw)
        assert torch.equal(out[~mask].view(torch.int32), x[~mask].view(torch.int32))
        assert (x0[~mask] == 0).all()
        assert torch.isfinite(out[mask]).all()
        xi = x.clone()
        diffusion_step_(xi, v, coef, mask=mask, **kw)
        assert torch.equal(xi.view(torch.int32), out.view(torch.int32))


def test_mask_broadcast_and_per_sample_equals_scalar(ext):
    x, v, coef, mask, _, _ = _inputs((3, 50, 4), 6, False)
    per = coef.expand(3, 6).contiguous()
    a = diffusion_step(x, v, coef, mask=mask, seed=3)[0]
    b = diffusion_step(x, v, per, mask=mask, seed=3)[0]
    assert torch.equal(a, b)
    m1 = torch.tensor([True, False, True])[:, None]  # (B, 1) broadcast over points
    out = diffusion_step(x, v, coef, mask=m1)[0]
    assert torch.equal(out, diffusion_step_reference(x, v, coef, mask=m1)[0])
    assert torch.equal(out[1], x[1])


def test_in_kernel_noise_is_philox_and_offsets_independent(ext):
    n = 4 * 1000 + 3
    x = torch.zeros(n, 1)
    coef = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # out = z
    z = diffusion_step(x, x, coef, seed=99, offset=4)[0].reshape(-1)
    assert_close(z, philox_normal(n, 99, 4))
    assert torch.equal(z, diffusion_step(x, x, coef, seed=99, offset=4)[0].reshape(-1))  # reproducible
    # element index, not shape, keys the noise
    z2 = diffusion_step(torch.zeros(1, n, 1), torch.zeros(1, n, 1), coef, seed=99, offset=4)[0].reshape(-1)
    assert torch.equal(z, z2)
    z_next = diffusion_step(x, x, coef, seed=99, offset=5)[0].reshape(-1)
    assert abs(torch.corrcoef(torch.stack((z, z_next)))[0, 1].item()) < 0.05
    # no noise and seed < 0: the noise term is omitted whatever c_n is
    assert torch.equal(diffusion_step(x, x, coef)[0], torch.zeros_like(x))


def test_rejects_bad_arguments(ext):
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="coef"):
        diffusion_step(x, x, torch.zeros(5))
    with pytest.raises(ValueError, match="v has shape"):
        diffusion_step(x, x[:1], torch.zeros(6))
    with pytest.raises(ValueError, match="mask"):
        diffusion_step(x, x, torch.zeros(6), mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="coef"):
        torch.ops.e2econd.diffusion_step(x, x, torch.zeros(2, 7), None, None, None, 0.0, -1, 0, False)
    with pytest.raises(RuntimeError, match="float32"):
        x64 = x.double()
        torch.ops.e2econd.diffusion_step(x64, x64, torch.zeros(6), None, None, None, 0.0, -1, 0, False)


def test_non_contiguous_inputs(ext):
    x, v, coef, mask, x0_prev, _ = _inputs((4, 40, 6), 8, True)
    strided = lambda t: t.transpose(0, 1).contiguous().transpose(0, 1)  # noqa: E731
    xt, vt = strided(x), strided(v)
    assert not xt.is_contiguous()
    ref = diffusion_step_reference(x, v, coef, mask=mask, seed=2)[0]
    assert_close(diffusion_step(xt, vt, coef, mask=mask, seed=2)[0], ref)
    xi = strided(x)
    diffusion_step_(xi, vt, coef, mask=mask, seed=2)
    assert_close(xi, ref)


# ------------------------------------------------------------------------ opcheck and compile
def _opcheck_samples():
    x, v, coef, mask, x0_prev, noise = _inputs((3, 37, 3), 9, True)
    c6 = coef[0].contiguous()
    return [
        (x, v, coef, mask, x0_prev, noise, 0.0, -1, 0, True),
        (x, v, c6, None, None, None, 0.5, 17, 3, False),
        (x.reshape(-1, 3), v.reshape(-1, 3), c6, None, x0_prev.reshape(-1, 3), None, 0.0, 4, 0, True),
    ]


@pytest.mark.parametrize("i", range(3))
def test_opcheck(ext, i):
    args = _opcheck_samples()[i]
    torch.library.opcheck(torch.ops.e2econd.diffusion_step.default, args)
    torch.library.opcheck(torch.ops.e2econd.diffusion_step_.default, (args[0].clone(), *args[1:9]))


def _compile_check(backend):
    x, v, coef, mask, x0_prev, _ = _inputs((2, 64, 3), 10, True)

    def step(x, v, coef, mask, x0_prev):
        out, x0 = diffusion_step(x, v, coef, mask=mask, x0_prev=x0_prev, seed=7, offset=1, return_x0=True)
        return out * 2, x0

    compiled = torch.compile(step, fullgraph=True, backend=backend)
    got = compiled(x, v, coef, mask, x0_prev)
    want = step(x, v, coef, mask, x0_prev)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])

    def step_inplace(x, v, coef):
        diffusion_step_(x, v, coef, seed=3)
        return x + 1

    xa, xb = x.clone(), x.clone()
    compiled_inplace = torch.compile(step_inplace, fullgraph=True, backend=backend)
    assert torch.equal(compiled_inplace(xa, v, coef), step_inplace(xb, v, coef))
    assert torch.equal(xa, xb)


def test_torch_compile_fullgraph(ext):
    """Dynamo traces the wrapper and the op (fake kernels) without graph breaks."""
    _compile_check("aot_eager")
    graphs = []

    def record(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    x, v, coef, mask, _, _ = _inputs((2, 8, 3), 11, False)

    def step(x, v, c, m):
        return diffusion_step(x, v, c, mask=m, seed=1)[0]

    f = torch.compile(step, fullgraph=True, backend=record)
    assert torch.equal(f(x, v, coef, mask), diffusion_step(x, v, coef, mask=mask, seed=1)[0])
    assert any("e2econd.diffusion_step" in g for g in graphs), graphs  # the op, not the reference


@pytest.mark.slow
def test_torch_compile_fullgraph_inductor(ext):
    _compile_check("inductor")
