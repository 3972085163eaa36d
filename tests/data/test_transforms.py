"""Transforms: exact inverses (numpy and torch, mixed channels), serialisation, and fitted
statistics against direct numpy computations on the same hits (no padding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2econd.data.transforms import (
    ConditionTransform,
    FeatureTransform,
    TransformFitter,
    Transforms,
)


def some_transform() -> FeatureTransform:
    return FeatureTransform(
        shift=[[0.01, -0.02, 1.2], [0.0, 0.003, 0.4], [-0.01, 0.0, 1.1]],
        scale=[[0.4, 0.45, 0.9], [0.35, 0.38, 1.3], [0.36, 0.41, 0.85]],
        e0=[2.6, 0.08, 2.3],
    )


def hits(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    ch = rng.integers(0, 3, n)
    e = rng.lognormal(0, 2, n) * np.where(rng.random(n) < 0.1, -0.01, 1.0)  # some small negatives
    feats = np.stack([rng.normal(0, 0.4, n), rng.normal(0, 0.4, n), e], 1).astype(np.float32)
    return feats, ch


def test_numpy_inverse_float32_precision():
    t = some_transform()
    feats, ch = hits()
    z = t.forward(feats, ch)
    assert z.dtype == np.float32 and z.shape == feats.shape
    back = t.inverse(z, ch)
    np.testing.assert_allclose(back[:, :2], feats[:, :2], rtol=0, atol=2e-7)
    # float32 z: energy error below a few ulps of z, i.e. ~1e-6 relative plus ~1e-6 * e0 absolute
    err = np.abs(back[:, 2].astype(np.float64) - feats[:, 2])
    assert np.all(err <= 2e-6 * np.abs(feats[:, 2]) + 1e-6 * t.e0[ch])
    # float64 input: inverse exact to float64 precision
    f64 = feats.astype(np.float64)
    np.testing.assert_allclose(t.inverse(t.forward(f64, ch), ch), f64, rtol=1e-12, atol=1e-15)
    # scalar channel and 3-D (padded batch) shapes broadcast
    np.testing.assert_allclose(t.forward(feats[:10], 1), t.forward(feats[:10], np.ones(10, int)))
    zb = t.forward(feats[:12].reshape(3, 4, 3), ch[:12].reshape(3, 4))
    np.testing.assert_array_equal(zb.reshape(12, 3), z[:12])


def test_forward_matches_closed_form():
    t = some_transform()
    feats, ch = hits(200)
    z = t.forward(feats.astype(np.float64), ch)
    for i in range(0, 200, 37):
        c = ch[i]
        u = [feats[i, 0], feats[i, 1], np.arcsinh(feats[i, 2] / t.e0[c])]
        np.testing.assert_allclose(z[i], (np.array(u) - t.shift[c]) / t.scale[c], rtol=1e-6, atol=1e-7)


def test_torch_matches_numpy_and_inverts():
    t = some_transform()
    feats, ch = hits()
    zt = t.forward(torch.from_numpy(feats), torch.from_numpy(ch))
    assert zt.dtype == torch.float32
    np.testing.assert_allclose(zt.numpy(), t.forward(feats, ch), rtol=1e-5, atol=2e-6)
    back = t.inverse(zt, torch.from_numpy(ch)).numpy()
    np.testing.assert_allclose(back[:, :2], feats[:, :2], atol=1e-6)
    err = np.abs(back[:, 2].astype(np.float64) - feats[:, 2])
    assert np.all(err <= 1e-5 * np.abs(feats[:, 2]) + 2e-6 * t.e0[ch])
    # differentiable (the trainer may backprop through the inverse)
    z = zt.clone().requires_grad_(True)
    t.inverse(z, torch.from_numpy(ch)).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_condition_transform_inverse():
    c = ConditionTransform([5.2, 3.6], [0.85, 1.25])
    rng = np.random.default_rng(1)
    pt, m0 = rng.uniform(50, 1000, 100), rng.uniform(0, 300, 100)
    m0[0] = 0.0
    z = c.forward(pt, m0)
    np.testing.assert_allclose(z[:, 0], (np.log(pt) - 5.2) / 0.85)
    np.testing.assert_allclose(z[:, 1], (np.log(m0 + 1.0) - 3.6) / 1.25)
    p2, m2 = c.inverse(z)
    np.testing.assert_allclose(p2, pt, rtol=1e-12)
    np.testing.assert_allclose(m2, m0, rtol=1e-12, atol=1e-12)
    zt = c.forward(torch.tensor(pt, dtype=torch.float32), torch.tensor(m0, dtype=torch.float32))
    pt_t, m0_t = c.inverse(zt)
    np.testing.assert_allclose(pt_t.numpy(), pt, rtol=2e-6)
    np.testing.assert_allclose(m0_t.numpy(), m0, rtol=2e-6, atol=2e-5)


def test_serialisation_round_trip(tmp_path):
    tr = Transforms(some_transform(), ConditionTransform([1, 2], [3, 4]), {"n_jets": 7})
    tr.save(tmp_path / "t.json", {"a": 1})
    back = Transforms.load(tmp_path / "t.json")
    feats, ch = hits(100)
    np.testing.assert_array_equal(back.forward(feats, ch), tr.forward(feats, ch))
    np.testing.assert_array_equal(back.condition.shift, [1, 2])
    assert back.fit == {"n_jets": 7}
    with pytest.raises(ValueError):
        FeatureTransform(np.zeros((3, 3)), np.zeros((3, 3)), np.ones(3))


def test_fitter_statistics_and_merge_independent_of_chunking():
    rng = np.random.default_rng(3)
    data = {
        c: (rng.normal(0.01 * c, 0.3, 3000), rng.normal(0, 0.5, 3000), rng.lognormal(c - 1, 1.5, 3000))
        for c in range(3)
    }
    data[1][2][:300] *= -0.01  # small negatives
    pt, m0 = rng.uniform(100, 900, 500), rng.uniform(5, 200, 500)

    def fit(parts: int) -> Transforms:
        total = TransformFitter()
        for k in range(parts):
            f = TransformFitter()
            sl = slice(k * 3000 // parts, (k + 1) * 3000 // parts)
            for c, (a, b, e) in data.items():
                f.update(c, a[sl], b[sl], e[sl])
            f.update_conditions(pt[k::parts], m0[k::parts])
            total.merge(f)
        for c, (_, _, e) in data.items():
            for k in range(parts):
                total.update_energy(c, e[k * 3000 // parts : (k + 1) * 3000 // parts])
        return total.result()

    one, many = fit(1), fit(7)
    np.testing.assert_allclose(many.features.shift, one.features.shift, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(many.features.scale, one.features.scale, rtol=1e-10)
    np.testing.assert_array_equal(many.features.e0, one.features.e0)
    for c, (a, b, e) in data.items():
        e0 = one.features.e0[c]
        assert e0 == pytest.approx(np.median(np.abs(e)), rel=0.005)  # histogram median, 0.23% bins
        u = np.arcsinh(e / e0)
        np.testing.assert_allclose(one.features.shift[c], [a.mean(), b.mean(), u.mean()], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(one.features.scale[c], [a.std(), b.std(), u.std()], rtol=1e-9)
        z = one.forward(np.stack([a, b, e], 1), c)
        np.testing.assert_allclose(z.mean(0), 0, atol=1e-9)
        np.testing.assert_allclose(z.std(0), 1, rtol=1e-9)
    cz = one.condition.forward(pt, m0)
    np.testing.assert_allclose(cz.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(cz.std(0), 1, rtol=1e-9)
    assert one.fit["n_jets"] == 500 and one.fit["n_hits"]["ecal"] == 3000


def test_inverse_clips_generated_energies_to_the_collision_energy():
    """A sampled state far outside the data (too few steps) must decode to |E| <= E_MAX, not inf; states
    in range decode exactly as the closed form e0 sinh(z scale + shift)."""
    from e2econd.data.geometry import E_MAX

    t = some_transform()
    ch = np.array([0, 1, 2, 1, 0, 2])
    z = np.zeros((6, 3))
    z[:, 2] = [1e4, -1e4, 500.0, 0.3, -0.7, 1.1]
    for back in (t.inverse(z, ch), t.inverse(torch.from_numpy(z), torch.from_numpy(ch)).numpy()):
        assert np.isfinite(back).all()
        np.testing.assert_allclose(back[:3, 2], [E_MAX, -E_MAX, E_MAX], rtol=1e-6)
        want = t.e0[ch[3:]] * np.sinh(z[3:, 2] * t.scale[ch[3:], 2] + t.shift[ch[3:], 2])
        np.testing.assert_allclose(back[3:, 2], want, rtol=1e-12)
    # float32 states of the sampler: the same bound, no overflow to inf
    back = t.inverse(z.astype(np.float32), ch)
    assert back.dtype == np.float32 and np.isfinite(back).all() and np.abs(back[:, 2]).max() <= E_MAX * (1 + 1e-6)
