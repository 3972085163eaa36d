"""Distances against independent computations: scipy W1, Gaussian closed forms, direct O(n²) MMD."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from e2econd.evaluate import metrics as M


def test_w1_matches_scipy_unweighted_and_weighted():
    rng = np.random.default_rng(0)
    for _ in range(5):
        u, v = rng.normal(0, 1, 137), rng.exponential(1.3, 211)
        assert M.w1(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-10, abs=1e-12)
        wu, wv = rng.integers(0, 4, 137).astype(float), rng.uniform(0.1, 2, 211)
        assert M.w1(u, v, wu, wv) == pytest.approx(wasserstein_distance(u, v, wu, wv), rel=1e-10)
    # ties and integer data (multiplicities)
    u, v = rng.integers(0, 5, 300), rng.integers(1, 6, 250)
    assert M.w1(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-12)
    # closed form: a shift moves W1 by exactly the shift
    assert M.w1(u, u + 2.5) == pytest.approx(2.5)


def test_w1_bootstrap_groups_are_resampled_jets():
    rng = np.random.default_rng(1)
    u, v = rng.normal(0, 1, 500), rng.normal(0.2, 1, 400)
    gu, gv = rng.integers(0, 40, 500), rng.integers(0, 30, 400)
    b = M.W1Bootstrap(u, v, gu, gv)
    assert b.value() == pytest.approx(wasserstein_distance(u, v))
    # a replica with jet counts cu, cv equals scipy with those counts as hit weights
    cu = rng.integers(0, 3, 40).astype(float)
    cv = rng.integers(0, 3, 30).astype(float)
    assert b._value(cu, cv) == pytest.approx(wasserstein_distance(u, v, cu[gu], cv[gv]), rel=1e-10)
    val, err = b.with_error(30, rng)
    assert err > 0 and np.isfinite(err)


def test_w1_floor_shrinks_with_sample_size():
    rng = np.random.default_rng(2)

    def floor(n):
        x = rng.lognormal(0, 0.5, 2 * n)
        return M.W1Bootstrap(x[:n], x[n:]).with_error(10, rng)

    small, small_err = floor(100)
    large, large_err = floor(10_000)
    assert large < small / 3
    assert large_err < small_err


def test_frechet_closed_form_and_samples():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a, b = np.array([1.0, 2.0, 0.5]), np.array([2.0, 0.5, 0.5])
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T  # commuting: FD = |Δμ|² + Σ (√a − √b)²
    mu1, mu2 = np.array([0.0, 1.0, 0.0]), np.array([0.5, 1.0, -1.0])
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert M.frechet_gaussian(mu1, s1, mu2, s2) == pytest.approx(expect, rel=1e-9)
    # 1-d: (μ1 − μ2)² + (σ1 − σ2)²
    assert M.frechet_gaussian([1.0], [[4.0]], [0.0], [[1.0]]) == pytest.approx(1.0 + 1.0)
    # from samples
    X = rng.multivariate_normal(mu1, s1, 40_000)
    Y = rng.multivariate_normal(mu2, s2, 40_000)
    assert M.frechet_distance(X, Y) == pytest.approx(expect, rel=0.03)
    val, err = M.fd_bootstrap(X[:2000], Y[:2000], 10, rng)
    assert err > 0 and abs(val - expect) < 6 * err + 0.05 * expect
    # JetNet-style extrapolation: same distribution -> ~0, different -> the closed form
    v0, e0 = M.fpd(X[:8000], rng.multivariate_normal(mu1, s1, 8000), seed=1)
    assert v0 < 0.02
    v1, e1 = M.fpd(X[:8000], Y[:8000], seed=1)
    assert v1 == pytest.approx(expect, rel=0.1)


def _mmd2_direct(X, Y, degree=4):
    d = X.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** degree

    m, n = len(X), len(Y)
    sxx = sum(k(X[i], X[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(Y[i], Y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(X[i], Y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_mmd_poly_matches_direct_sum_and_kpd_behaviour():
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(23, 4)), rng.normal(0.3, 1.2, size=(31, 4))
    assert M.mmd2_poly(X, Y) == pytest.approx(_mmd2_direct(X, Y), rel=1e-9)
    A, B = rng.normal(size=(3000, 5)), rng.normal(size=(3000, 5))
    C = rng.normal(0.2, 1.0, size=(3000, 5))
    same, same_err = M.kpd(A, B, num_batches=10, batch_size=1000)
    diff, diff_err = M.kpd(A, C, num_batches=10, batch_size=1000)
    assert abs(same) < 4 * same_err + 1e-3
    assert diff > same + 5 * diff_err


def test_entry_ratio_definition():
    e = M.entry(2.0, 0.1, 1.0, 0.2)
    assert e["ratio"] == pytest.approx(2.0)
    assert e["pull"] == pytest.approx(1.0 / np.hypot(0.1, 0.2))
    # floor ~0 (unbiased metric): ratio measured in units of the floor's error
    e = M.entry(0.3, 0.1, -0.01, 0.1)
    assert e["ratio"] == pytest.approx(3.0)
    assert M.entry(float("nan"), 0.1, 1.0, 0.1)["value"] is None


def test_lattice_w1_matches_scipy_and_bootstraps_jets():
    from scipy.stats import wasserstein_distance

    from e2econd.evaluate.metrics import LatticeW1

    support = np.sqrt(np.arange(50.0))  # sorted, non-uniform

    def draw(rng, n_jets, lo):  # 10 hits per jet; a jet's hits share a random offset (correlated within a jet)
        jet = np.repeat(np.arange(n_jets), 10)
        bins = np.clip(rng.integers(lo, 40, n_jets)[jet] + rng.integers(0, 10, len(jet)), 0, 49)
        return bins, rng.random(len(jet)), jet

    rng = np.random.default_rng(4)
    (bu, wu, ju), (bv, wv, jv) = draw(rng, 40, 0), draw(rng, 30, 5)
    lw = LatticeW1(support, bu, wu, ju, 40, bv, wv, jv, 30)
    want = wasserstein_distance(support[bu], support[bv], wu, wv)
    assert lw.value() == pytest.approx(want, rel=1e-10)
    v, err = lw.with_error(100, np.random.default_rng(0))
    assert v == pytest.approx(want, rel=1e-10)
    # the bootstrap resamples whole jets: its error matches the spread of W1 over independent redraws
    redraws = []
    for _ in range(200):
        (a, wa, _), (b, wb, _) = draw(rng, 40, 0), draw(rng, 30, 5)
        redraws.append(wasserstein_distance(support[a], support[b], wa, wb))
    assert 0.6 < err / np.std(redraws) < 1.6, (err, np.std(redraws))
