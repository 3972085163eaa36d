"""Jet-image rendering: energy bookkeeping, HCAL tower blocks, E2E centring and orientation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from e2econd.generate.detector import (
    CRYSTAL_ETA,
    CRYSTAL_PHI,
    EM_SHOWER,
    MIP,
    TOWER_ETA,
    TOWER_PHI,
    Deposits,
    DetectorConfig,
)
from e2econd.generate.imaging import render, seed_tower, spread_add

QUIET = DetectorConfig(ecal_noise=0.0, ecal_zs=0.0, hcal_noise=0.0, hcal_thr=0.0)


def _deps(trk=(), ecal=(), hcal=()):
    """Deposits from lists of (eta, phi, e[, kind])."""
    t = np.array(trk, dtype=np.float64).reshape(-1, 3)
    e = np.array(ecal, dtype=np.float64).reshape(-1, 4)
    h = np.array(hcal, dtype=np.float64).reshape(-1, 3)
    return Deposits(
        t[:, 0], t[:, 1], t[:, 2], e[:, 0], e[:, 1], e[:, 2], e[:, 3].astype(np.int8), h[:, 0], h[:, 1], h[:, 2]
    )


def test_spread_add_point_matches_histogram_and_conserves_energy():
    rng = np.random.default_rng(0)
    u, v, e = rng.uniform(-2, 22, 300), rng.uniform(-2, 22, 300), rng.uniform(0, 5, 300)
    grid = spread_add((20, 20), u, v, e, 1.0, 0)
    ref, _, _ = np.histogram2d(u, v, bins=[np.arange(21), np.arange(21)], weights=e)
    np.testing.assert_allclose(grid, ref, rtol=1e-12, atol=1e-12)
    inner = (u > 5) & (u < 15) & (v > 5) & (v < 15)
    g2 = spread_add((20, 20), u[inner], v[inner], e[inner], 0.8, 3)
    assert g2.sum() == pytest.approx(e[inner].sum(), rel=1e-12)
    # a deposit at a cell centre with σ = 1: centre-cell weight = (2Φ(0.5) − 1)² renormalised over ±3
    from scipy.special import ndtr

    g3 = spread_add((9, 9), [4.5], [4.5], [1.0], 1.0, 3)
    w = ndtr(np.arange(-3, 4) + 0.5) - ndtr(np.arange(-3, 4) - 0.5)
    w /= w.sum()
    np.testing.assert_allclose(g3[1:8, 1:8], np.outer(w, w), rtol=1e-12)


def test_hcal_blocks_centring_and_orientation():
    # hottest tower: tower (3, 5); a smaller one next to it; the jet axis is in the neighbour tower
    t_eta, t_phi = 3, 5
    ce, cp = (t_eta + 0.5) * TOWER_ETA, (t_phi + 0.5) * TOWER_PHI
    dep = _deps(
        trk=[(ce + 10.2 * CRYSTAL_ETA, cp - 7.4 * CRYSTAL_PHI, 12.0)],
        ecal=[(ce + 0.3 * CRYSTAL_ETA, cp + 20.6 * CRYSTAL_PHI, 5.0, MIP)],
        hcal=[(ce, cp, 50.0), (ce + TOWER_ETA, cp, 20.0), (ce - 4 * TOWER_ETA, cp + 3 * TOWER_PHI, 7.0)],
    )
    seed = seed_tower(dep, ce + 0.9 * TOWER_ETA, cp + 0.2 * TOWER_PHI, QUIET)
    assert seed == (t_eta, t_phi)
    img = render(dep, seed, QUIET, np.random.default_rng(0))
    assert img.shape == (3, 125, 125) and img.dtype == np.float32
    h = img[2].reshape(25, 5, 25, 5)
    assert np.all(h == h[:, :1, :, :1])  # uniform 5x5 blocks aligned to multiples of 5
    towers = h[:, 0, :, 0] * 25
    i, j = np.unravel_index(np.argmax(towers), towers.shape)
    assert (i, j) == (12, 12)  # pixels 60..64 hold the seed tower
    assert towers.sum() == pytest.approx(77.0, rel=1e-5)
    assert towers[13, 12] > towers[11, 12]  # the second tower is at larger eta (row)
    # centre pixel 62 is the centre crystal of the seed tower: offsets in crystals map to pixels
    assert img[0, 62 + 10, 62 - 7] == pytest.approx(12.0)  # centre 62.5 + (10.2, −7.4) crystals
    assert img[1, 62, 62 + 21] == pytest.approx(5.0)  # centre 62.5 + (0.3, 20.6) crystals
    assert img[0].sum() == pytest.approx(12.0) and img[1].sum() == pytest.approx(5.0)


def test_phi_wraps_across_pi():
    phi_a, phi_b = math.pi - 0.5 * CRYSTAL_PHI, -math.pi + 0.5 * CRYSTAL_PHI
    dep = _deps(trk=[(0.01, phi_a, 3.0), (0.01, phi_b, 4.0)], hcal=[(0.01, phi_a, 30.0)])
    seed = seed_tower(dep, 0.01, phi_a, QUIET)
    img = render(dep, seed, QUIET, np.random.default_rng(0))
    rows, cols = np.nonzero(img[0])
    assert img[0].sum() == pytest.approx(7.0)
    assert len(set(rows)) == 1 and abs(int(cols[0]) - int(cols[1])) == 1
    assert img[0, rows[0], cols.max()] == pytest.approx(4.0)  # -π + ε is just above +π − ε in φ


def test_ecal_noise_zero_suppression_and_selective_readout():
    cfg = DetectorConfig(ecal_sr_et=math.inf)
    dep = _deps(ecal=[(0.0, 0.0, 30.0, EM_SHOWER)])
    img = render(dep, seed_tower(dep, 0.0, 0.0, cfg), cfg, np.random.default_rng(2))
    ecal = img[1]
    nz = ecal[ecal != 0]
    assert np.all(np.abs(nz) >= cfg.ecal_zs)  # documented ZS: |E| < ecal_zs -> 0
    assert (nz < 0).any()  # noise leaves some negative crystals beyond the threshold
    # pure-noise occupancy ≈ 2Φ(−zs/σ) of the crystals
    frac = (np.abs(ecal) > 0).mean()
    expect = math.erfc(cfg.ecal_zs / cfg.ecal_noise / math.sqrt(2))
    assert frac == pytest.approx(expect, abs=0.004)
    # selective readout: the trigger tower of a 30 GeV shower is read out in full (no ZS)
    cfg2 = DetectorConfig()
    img2 = render(dep, seed_tower(dep, 0.0, 0.0, cfg2), cfg2, np.random.default_rng(2))
    tower = img2[1].reshape(25, 5, 25, 5)[:, :, :, :].transpose(0, 2, 1, 3)
    e_tt = tower.sum(axis=(2, 3))
    hot = np.argwhere(e_tt > cfg2.ecal_sr_et)
    assert len(hot) >= 1
    for a, b in hot:
        assert np.count_nonzero(tower[a, b]) == 25
    # HCAL threshold: no tower between 0 and hcal_thr
    t = img2[2].reshape(25, 5, 25, 5)[:, 0, :, 0] * 25
    assert not np.any((t > 0) & (t < cfg2.hcal_thr))
