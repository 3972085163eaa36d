"""Multiplicity model: reproduces marginals and their pt dependence, zeros for channels not modelled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2econd.model import MultiplicityModel

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: torch uses one thread


def _data(n=3000, seed=0):
    """log n_ecal ~ N(5 + 0.5 pt, 0.2); n_hcal correlated with n_ecal; y shifts ECAL by +0.3."""
    rng = np.random.default_rng(seed)
    pt = rng.normal(size=n)
    m0 = rng.normal(size=n)
    y = rng.integers(0, 2, n)
    z = rng.normal(size=n)
    le = 5.0 + 0.5 * pt + 0.3 * y + 0.2 * z
    lh = 3.0 + 0.3 * pt + 0.15 * z + 0.05 * rng.normal(size=n)
    counts = np.zeros((n, 3), np.int64)
    counts[:, 1] = np.floor(np.exp(le))
    counts[:, 2] = np.floor(np.exp(lh))
    return counts, pt, m0, y


def test_dequantisation_round_trip():
    """floor(expm1(log1p(n + u))) = n (float64; u kept off the pixel edges where rounding decides)."""
    n = torch.arange(0, 5000, dtype=torch.float64)
    u = 0.01 + 0.98 * torch.rand(n.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = torch.log1p(n + u)
    assert torch.equal(torch.floor(torch.expm1(z)), n)


def test_fit_reproduces_marginals_and_pt_dependence():
    counts, pt, m0, y = _data()
    torch.manual_seed(0)
    m = MultiplicityModel([1, 2], n_classes=2, components=4, hidden=32)
    hist = m.fit(counts, pt, m0, y, steps=400, lr=5e-3, seed=0)
    assert hist[-1] < hist[0]
    # sample at the training conditions: marginals of log n match
    s = m.sample(torch.tensor(pt), torch.tensor(m0), torch.tensor(y), generator=torch.Generator().manual_seed(1))
    assert s.shape == (len(pt), 3) and s.dtype == torch.int64
    assert torch.all(s[:, 0] == 0)  # tracks not modelled
    s = s.numpy()
    for c in (1, 2):
        real, gen = np.log1p(counts[:, c]), np.log1p(s[:, c])
        assert abs(real.mean() - gen.mean()) < 0.05, c
        assert abs(real.std() - gen.std()) < 0.08 * real.std(), c
    # pt dependence: slope of log n_ecal on pt
    slope_real = np.polyfit(pt, np.log1p(counts[:, 1]), 1)[0]
    slope_gen = np.polyfit(pt, np.log1p(s[:, 1]), 1)[0]
    assert abs(slope_gen - slope_real) < 0.06, (slope_real, slope_gen)
    # label dependence and channel correlation
    d_real = np.log1p(counts[y == 1, 1]).mean() - np.log1p(counts[y == 0, 1]).mean()
    d_gen = np.log1p(s[y == 1, 1]).mean() - np.log1p(s[y == 0, 1]).mean()
    assert abs(d_gen - d_real) < 0.08
    r_real = np.corrcoef(np.log1p(counts[:, 1]), np.log1p(counts[:, 2]))[0, 1]
    r_gen = np.corrcoef(np.log1p(s[:, 1]), np.log1p(s[:, 2]))[0, 1]
    assert abs(r_gen - r_real) < 0.1, (r_real, r_gen)


def test_serialisation_round_trip_and_seeded_sampling():
    counts, pt, m0, y = _data(500)
    m = MultiplicityModel([1], components=2, hidden=16)
    m.fit(counts, pt, m0, y, steps=20)
    m2 = MultiplicityModel.from_dict(m.to_dict())
    args = (torch.tensor(pt[:50]), torch.tensor(m0[:50]), torch.tensor(y[:50]))
    a = m.sample(*args, generator=torch.Generator().manual_seed(3))
    b = m2.sample(*args, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.all(a[:, [0, 2]] == 0) and torch.all(a[:, 1] >= 0)
