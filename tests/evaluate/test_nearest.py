"""Coverage / MMD against a brute-force double loop over POT's ot.emd2, and the pairwise EMD matrix."""

from __future__ import annotations

import numpy as np
import ot
from scipy.spatial.distance import cdist

from e2econd.evaluate import nearest as NN
from e2econd.evaluate.emd import emd_matrix


def _pot_emd(p, ep, q, eq, R=0.8):
    """Independent EMD: POT's ot.emd2 with the EnergyFlow dummy-at-cost-1 formulation (+0 extra)."""
    p, ep, q, eq = p[ep > 0], ep[ep > 0], q[eq > 0], eq[eq > 0]
    M = cdist(p, q) / R
    d = ep.sum() - eq.sum()
    if d > 0:
        eq, M = np.append(eq, d), np.hstack([M, np.ones((len(ep), 1))])
    elif d < 0:
        ep, M = np.append(ep, -d), np.vstack([M, np.ones((1, M.shape[1]))])
    return float(ot.emd2(ep, eq * ep.sum() / eq.sum(), M))


def _jets(rng, n, k=8, scale=1.0):
    pts = rng.normal(0, 0.2, (n, k, 2))
    e = rng.exponential(10.0, (n, k)) * scale
    e[:, k - 2 :] *= rng.random((n, 2)) < 0.5  # some padding
    return pts, e


def test_emd_matrix_matches_pot():
    rng = np.random.default_rng(0)
    (p, ep), (q, eq) = _jets(rng, 5), _jets(rng, 7, scale=1.3)
    eq[3] = 0.0  # an empty jet: EMD = |ΔE|
    D = emd_matrix(p, ep, q, eq, R=0.8, threads=2)
    for i in range(5):
        for j in range(7):
            want = ep[i].sum() if j == 3 else _pot_emd(p[i], ep[i], q[j], eq[j])
            np.testing.assert_allclose(D[i, j], want, rtol=1e-9, atol=1e-9)


def test_cov_mmd_from_matrix_brute_force():
    rng = np.random.default_rng(1)
    D = rng.random((30, 20))  # generated x real
    cov, mmd = NN.cov_mmd_from_matrix(D)
    nearest_real = set()
    for g in range(30):
        nearest_real.add(min(range(20), key=lambda r: D[g, r]))
    assert cov == len(nearest_real) / 20
    assert mmd == np.mean([min(D[g, r] for g in range(30)) for r in range(20)])


def test_cov_mmd_batches_reproduce_a_double_loop():
    rng = np.random.default_rng(2)
    real, gen = _jets(rng, 40), _jets(rng, 35)
    res = NN.cov_mmd(real, gen, n_eval=12, n_batches=3, rng=np.random.default_rng(7), threads=1)
    draw = np.random.default_rng(7)
    covs, mmds = [], []
    for _ in range(3):
        ir, ig = draw.integers(0, 40, 12), draw.integers(0, 35, 12)
        D = np.array([[_pot_emd(gen[0][g], gen[1][g], real[0][r], real[1][r]) for r in ir] for g in ig])
        covs.append(len({int(np.argmin(D[g])) for g in range(12)}) / 12)
        mmds.append(D.min(axis=0).mean())
    np.testing.assert_allclose(res["cov"], np.mean(covs))
    np.testing.assert_allclose(res["mmd"], np.mean(mmds), rtol=1e-9)
    np.testing.assert_allclose(res["mmd_err"], np.std(mmds, ddof=1) / np.sqrt(3), rtol=1e-9)


def test_collapse_lowers_coverage():
    rng = np.random.default_rng(3)
    real = _jets(rng, 200)
    same = NN.cov_mmd(real, _jets(rng, 200), n_eval=50, n_batches=4, rng=np.random.default_rng(0), threads=1)
    idx = rng.integers(0, 3, 200)  # every generated jet a copy of one of 3 real jets
    collapsed = (real[0][idx], real[1][idx])
    col = NN.cov_mmd(real, collapsed, n_eval=50, n_batches=4, rng=np.random.default_rng(0), threads=1)
    assert col["cov"] <= 3 / 50 and same["cov"] > 0.3
