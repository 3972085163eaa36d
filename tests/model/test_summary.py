"""Jet-summary model: joint toy distribution reproduced, types, seeding, serialisation, likelihood."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from e2econd.errors import E2EInputError
from e2econd.model.summary import SummaryModel, name_gates

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: torch uses one thread

KINDS = ["count", "energy", "flag"]
A, SIGMA, LAM0 = 2.0, 3.0, 8.0
P_FLAG = (0.2, 0.7)


def _toy(n, seed):
    """n ~ Poisson(8 exp(0.4 y + 0.3 pt)); e = 2 n + N(0, 3^2) GeV; flag ~ Bernoulli(0.2 | 0.7 by y)."""
    rng = np.random.default_rng(seed)
    pt, m0, y = rng.normal(size=n), rng.normal(size=n), rng.integers(0, 2, n)
    cnt = rng.poisson(LAM0 * np.exp(0.4 * y + 0.3 * pt)).astype(np.float64)
    e = A * cnt + SIGMA * rng.normal(size=n)
    flag = (rng.random(n) < np.asarray(P_FLAG)[y]).astype(np.float64)
    return np.stack([cnt, e, flag], axis=1), pt, m0, y


@pytest.fixture(scope="module")
def fitted():
    v, pt, m0, y = _toy(3000, 0)
    m = SummaryModel(KINDS, n_classes=2, components=4, hidden=32).fit(v, pt, m0, y, steps=500, lr=5e-3, seed=0)
    return m, (v, pt, m0, y)


def test_joint_toy_reproduced(fitted):
    m, _ = fitted
    _, pt, m0, y = _toy(20000, 1)  # fresh conditions from the true distribution
    s = m.sample(pt, m0, y, generator=torch.Generator().manual_seed(0)).numpy()
    assert s.shape == (20000, 3) and s.dtype == np.float64
    for lab in (0, 1):
        sel = y == lab
        mean_n = LAM0 * np.exp(0.4 * lab + 0.3**2 / 2)  # closed form: E[exp(0.3 pt)] = exp(0.045)
        assert abs(s[sel, 0].mean() / mean_n - 1) < 0.05, (lab, s[sel, 0].mean(), mean_n)
        assert abs(s[sel, 1].mean() / (A * mean_n) - 1) < 0.05, (lab, s[sel, 1].mean(), A * mean_n)
        assert abs(s[sel, 2].mean() - P_FLAG[lab]) < 0.04, (lab, s[sel, 2].mean())
    # pt dependence: mean count at pt > 0 over pt < 0 (Monte Carlo oracle from the true generator)
    truth, pt_t, _, _ = _toy(200000, 2)
    r_true = truth[pt_t > 0, 0].mean() / truth[pt_t < 0, 0].mean()
    r_gen = s[pt > 0, 0].mean() / s[pt < 0, 0].mean()
    assert abs(r_gen / r_true - 1) < 0.05, (r_true, r_gen)
    # the joint structure: count-energy correlation (~0.95); with the autoregressive inputs masked off
    # (independent columns given pt, y) the same fit gives 0.56, so this fails for a per-column model
    c_true = np.corrcoef(truth[:, 0], truth[:, 1])[0, 1]
    c_gen = np.corrcoef(s[:, 0], s[:, 1])[0, 1]
    assert c_true > 0.85 and abs(c_gen - c_true) < 0.1, (c_true, c_gen)
    # conditional residual width: e - 2 n should have std ~ 3 GeV (independent columns: 9.7 GeV)
    assert abs((s[:, 1] - A * s[:, 0]).std() / SIGMA - 1) < 0.25


def test_sample_types_and_clamp(fitted):
    m, (v, pt, m0, y) = fitted
    s = m.sample(pt[:500], m0[:500], y[:500], generator=torch.Generator().manual_seed(1))
    assert s.dtype == torch.float64 and s.shape == (500, 3)
    cnt, flag = s[:, 0], s[:, 2]
    assert torch.all(cnt >= 0) and torch.equal(cnt, torch.floor(cnt))
    assert torch.all(cnt <= np.floor(1.5 * v[:, 0].max()))
    assert set(flag.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(torch.isfinite(s[:, 1]))


def test_serialisation_round_trip_and_seeded_fit():
    v, pt, m0, y = _toy(400, 3)
    m1 = SummaryModel(KINDS, components=2, hidden=16).fit(v, pt, m0, y, steps=30, seed=7)
    m2 = SummaryModel(KINDS, components=2, hidden=16).fit(v, pt, m0, y, steps=30, seed=7)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert m1.train_nll == m2.train_nll
    m3 = SummaryModel.from_dict(json.loads(json.dumps(m1.to_dict())))
    a = m1.sample(pt[:64], m0[:64], y[:64], generator=torch.Generator().manual_seed(5))
    b = m3.sample(pt[:64], m0[:64], y[:64], generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(m1.log_prob(v, pt, m0, y), m3.log_prob(v, pt, m0, y))
    m4 = SummaryModel(KINDS, components=2, hidden=16).fit(v, pt, m0, y, steps=30, seed=8)
    assert not torch.equal(m1.w1, m4.w1)


def test_heldout_nll_below_unfitted(fitted):
    m, (v, pt, m0, y) = fitted
    base = SummaryModel(KINDS, n_classes=2, components=4, hidden=32).fit(v, pt, m0, y, steps=0)  # transforms only
    hv, hpt, hm0, hy = _toy(2000, 4)
    nll_fit = -m.log_prob(hv, hpt, hm0, hy).mean().item()
    nll_base = -base.log_prob(hv, hpt, hm0, hy).mean().item()
    assert nll_fit < nll_base - 1.0, (nll_fit, nll_base)
    # also in original units (with the Jacobian), where the two models' transforms need not match
    nll_units = -m.log_prob(hv, hpt, hm0, hy, units=True).mean().item()
    assert np.isfinite(nll_units) and nll_units < -base.log_prob(hv, hpt, hm0, hy, units=True).mean().item() - 1.0


def test_units_density_normalised():
    """exp(log_prob(units=True)) integrates to 1 over GeV (energy) and sums to ~1 over n (count)."""
    rng = np.random.default_rng(5)
    n = 1500
    pt, m0, y = rng.normal(size=n), rng.normal(size=n), rng.integers(0, 2, n)
    e = 20.0 + 5.0 * pt + rng.normal(size=n) * 4.0
    m = SummaryModel(["energy"], components=3, hidden=16).fit(e[:, None], pt, m0, y, steps=150, lr=1e-2)
    grid = np.linspace(-200.0, 300.0, 200001)
    c = np.zeros_like(grid)
    dens = m.log_prob(grid[:, None], c + 0.3, c, c.astype(int) + 1, units=True).exp().numpy()
    assert abs(np.trapezoid(dens, grid) - 1) < 2e-3
    cnt = rng.poisson(6.0, n).astype(np.float64)
    mc = SummaryModel(["count"], components=3, hidden=16).fit(cnt[:, None], pt, m0, y, steps=150, lr=1e-2)
    ks = np.arange(0, 200, dtype=np.float64)
    z = np.zeros_like(ks)
    pmf = mc.log_prob(ks[:, None], z, z, z.astype(int), units=True).exp().numpy()
    assert abs(pmf.sum() - 1) < 0.05, pmf.sum()


def test_gated_energy_is_exactly_zero_with_its_count():
    rng = np.random.default_rng(6)
    n = 2000
    pt, m0, y = rng.normal(size=n), rng.normal(size=n), rng.integers(0, 2, n)
    cnt = rng.poisson(1.0, n).astype(np.float64)
    e = np.where(cnt > 0, 3.0 * cnt + rng.normal(size=n), 0.0)
    v = np.stack([e, cnt], axis=1)  # energy listed first: the order must still put its gate before it
    m = SummaryModel(["energy", "count"], components=3, hidden=16, gates={0: 1})
    m.fit(v, pt, m0, y, steps=300, lr=1e-2)
    assert np.isfinite(m.train_nll)
    s = m.sample(pt, m0, y, generator=torch.Generator().manual_seed(2)).numpy()
    assert np.array_equal(s[:, 0] == 0, s[:, 1] == 0)
    assert abs((s[:, 1] == 0).mean() - np.exp(-1.0)) < 0.04


def test_bad_input_names_the_column():
    m = SummaryModel(KINDS)
    v, pt, m0, y = _toy(10, 7)
    bad = v.copy()
    bad[3, 0] = -1
    with pytest.raises(E2EInputError, match="column 0"):
        m.fit(bad, pt, m0, y, steps=1)
    bad = v.copy()
    bad[2, 2] = 2
    with pytest.raises(E2EInputError, match="column 2"):
        m.log_prob(bad, pt, m0, y)
    with pytest.raises(E2EInputError, match="labels y"):
        m.fit(v, pt, m0, y + 5, steps=1)
    with pytest.raises(E2EInputError, match="kinds"):
        SummaryModel(["count", "pixels"])
    with pytest.raises(E2EInputError, match="gate"):
        SummaryModel(KINDS, gates={0: 1})
    gated = SummaryModel(["count", "energy"], gates={1: 0})
    with pytest.raises(E2EInputError, match="column 1.*row 1"):
        gated.fit(np.array([[2.0, 5.0], [0.0, 1.5], [0.0, 0.0]]), pt[:3], m0[:3], y[:3], steps=1)


def test_name_gates_pairs_energy_with_its_count():
    names = ["n_towers", "n_tracks", "e_tracks", "n_ecal", "e_ecal", "n_hcal", "e_hcal", "hcal_central"]
    assert name_gates(names) == {2: 1, 4: 3, 6: 5}
    kinds = ["count", "count", "energy", "count", "energy", "count", "energy", "flag"]
    m = SummaryModel(kinds, gates=name_gates(names))
    assert [kinds[d] for d in m.order] == ["flag"] + ["count"] * 4 + ["energy"] * 3
