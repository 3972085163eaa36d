"""Thesis EMD (POT, dummy-particle balancing) against a brute-force linear program (scipy linprog)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.spatial.distance import cdist

from e2econd.evaluate.emd import emd, emd_pairs


def emd_linprog(xp, ep, xq, eq, R):
    """min Σ f_ij d_ij/R + |ΣE_p − ΣE_q| s.t. Σ_j f_ij ≤ E_i, Σ_i f_ij ≤ E_j, Σ f = min(ΣE_p, ΣE_q)."""
    n, m = len(ep), len(eq)
    c = (cdist(xp, xq) / R).ravel()
    a_ub = np.zeros((n + m, n * m))
    for i in range(n):
        a_ub[i, i * m : (i + 1) * m] = 1.0
    for j in range(m):
        a_ub[n + j, j::m] = 1.0
    res = linprog(
        c,
        A_ub=a_ub,
        b_ub=np.concatenate([ep, eq]),
        A_eq=np.ones((1, n * m)),
        b_eq=[min(ep.sum(), eq.sum())],
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0
    return res.fun + abs(ep.sum() - eq.sum())


@pytest.mark.parametrize("seed", range(6))
def test_emd_matches_linprog(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 7, 2)
    xp, xq = rng.normal(0, 0.3, (n, 2)), rng.normal(0, 0.3, (m, 2))
    ep, eq = rng.exponential(10, n), rng.exponential(10, m)
    R = [0.4, 0.8, 1.0][seed % 3]
    assert emd(xp, ep, xq, eq, R) == pytest.approx(emd_linprog(xp, ep, xq, eq, R), rel=1e-7, abs=1e-9)
    assert emd(xq, eq, xp, ep, R) == pytest.approx(emd(xp, ep, xq, eq, R), rel=1e-9)  # symmetric


def test_emd_closed_forms():
    x = np.array([[0.0, 0.0]])
    y = np.array([[0.3, 0.4]])  # distance 0.5
    # one deposit each: min(E) * d / R + |ΔE|
    assert emd(x, [10.0], y, [4.0], R=0.8) == pytest.approx(4.0 * 0.5 / 0.8 + 6.0)
    # same jet: 0; same positions, scaled energies: |ΔE| only
    pts = np.random.default_rng(0).normal(0, 0.2, (5, 2))
    e = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert emd(pts, e, pts, e) == pytest.approx(0.0, abs=1e-9)
    assert emd(pts, e, pts, 1.1 * e) == pytest.approx(0.1 * e.sum(), rel=1e-9)
    # empty jet: all energy is the difference term
    assert emd(np.zeros((0, 2)), [], pts, e) == pytest.approx(e.sum())
    with pytest.raises(ValueError):
        emd(pts, -e, pts, e)


def test_emd_pairs_threads_match_serial():
    rng = np.random.default_rng(7)
    jets = [(rng.normal(0, 0.3, (k, 2)), rng.exponential(1, k)) for k in rng.integers(1, 30, 20)]
    a = emd_pairs(jets[:10], jets[10:], R=0.8, threads=1)
    b = emd_pairs(jets[:10], jets[10:], R=0.8, threads=2)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert a[3] == pytest.approx(emd(*jets[3], *jets[13]))
