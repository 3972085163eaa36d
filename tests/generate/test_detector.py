"""Detector unit tests against closed forms and independent numerical oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from e2econd.generate.detector import (
    CRYSTAL_ETA,
    CRYSTAL_PHI,
    DetectorConfig,
    Particles,
    curvature_dphi,
    propagate,
    resolution,
    simulate,
)
from e2econd.generate.imaging import render, seed_tower


def _one(pid, pt, eta, phi, charge, mass=0.0):
    px, py, pz = pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)
    e = math.sqrt(px * px + py * py + pz * pz + mass * mass)
    return Particles(
        np.array([px]), np.array([py]), np.array([pz]), np.array([e]), np.array([pid]), np.array([float(charge)])
    )


def _lorentz_oracle(pt, phi0, q, r_target, B, step=2e-4):
    """Integrate the transverse motion under F = q v × B (B along +z) until radius r_target.

    Midpoint steps of du/ds = (0.3 q / pT) u × B, dx/ds = u with the cross product written out
    (u × (0,0,B) = (u_y B, −u_x B, 0)). Returns the azimuth of the crossing point, or None if the
    trajectory does not reach r_target within two full turns.
    """
    k = 0.3 * q / pt

    def rot(ux, uy):  # du/ds
        return k * uy * B, -k * ux * B

    x = y = 0.0
    ux, uy = math.cos(phi0), math.sin(phi0)
    radius = pt / (0.3 * B)
    for _ in range(int(min(4 * math.pi * radius, 4 * r_target) / step) + 1):
        dx, dy = rot(ux, uy)
        mx, my = ux + 0.5 * step * dx, uy + 0.5 * step * dy
        nm = math.hypot(mx, my)
        mx, my = mx / nm, my / nm
        nx, ny = x + step * mx, y + step * my
        dx, dy = rot(mx, my)
        ux, uy = ux + step * dx, uy + step * dy
        nu = math.hypot(ux, uy)
        ux, uy = ux / nu, uy / nu
        r0, r1 = math.hypot(x, y), math.hypot(nx, ny)
        if r1 >= r_target:
            f = (r_target - r0) / (r1 - r0)
            return math.atan2(y + f * (ny - y), x + f * (nx - x))
        x, y = nx, ny
    return None


@pytest.mark.parametrize("pt", [0.8, 2.0, 10.0, 100.0])
@pytest.mark.parametrize("q", [1, -1])
def test_track_curvature_matches_lorentz_force(pt, q):
    cfg = DetectorConfig()
    phi0 = 0.4
    expected = _lorentz_oracle(pt, phi0, q, cfg.r_ecal, cfg.B)
    closed = phi0 - q * math.asin(0.3 * cfg.B * cfg.r_ecal / (2 * pt))
    assert expected == pytest.approx(closed, abs=2e-4)
    eta_hit, phi_hit, ok = propagate(
        np.array([pt]), np.array([0.0]), np.array([phi0]), np.array([q]), cfg.r_ecal, cfg.z_ecal, cfg.B
    )
    assert ok[0]
    assert phi_hit[0] == pytest.approx(expected, abs=2e-4)
    assert curvature_dphi(pt, q, cfg.r_ecal, cfg.B) == pytest.approx(closed - phi0, abs=1e-12)
    # positive charges bend to smaller phi in a field along +z
    assert (phi_hit[0] - phi0) * q < 0


def test_loopers_neutrals_and_endcap():
    cfg = DetectorConfig()
    pt_curl = 0.3 * cfg.B * cfg.r_ecal / 2  # 0.735 GeV
    assert _lorentz_oracle(0.95 * pt_curl, 0.0, 1, cfg.r_ecal, cfg.B) is None
    _, _, ok = propagate(
        np.array([0.95 * pt_curl]), np.array([0.0]), np.array([0.0]), np.array([1.0]), cfg.r_ecal, cfg.z_ecal, cfg.B
    )
    assert not ok[0]
    # a neutral particle goes straight: impact (eta, phi) = direction
    e, p, ok = propagate(
        np.array([3.0, 3.0]),
        np.array([0.7, 2.8]),
        np.array([1.0, -2.0]),
        np.array([0.0, 0.0]),
        cfg.r_ecal,
        cfg.z_ecal,
        cfg.B,
    )
    assert ok.all() and np.allclose(e, [0.7, 2.8]) and np.allclose(p, [1.0, -2.0])
    # a charged particle hitting the endcap face: position from the helix at z = z_ecal
    pt, eta, q = 5.0, 2.5, 1.0
    e, p, ok = propagate(np.array([pt]), np.array([eta]), np.array([0.0]), np.array([q]), cfg.r_ecal, cfg.z_ecal, cfg.B)
    R = pt / (0.3 * cfg.B)
    s = cfg.z_ecal / math.sinh(eta)  # transverse path length
    x, y = R * math.sin(s / R), -R * (1 - math.cos(s / R))  # circle, bending clockwise
    assert p[0] == pytest.approx(math.atan2(y, x), abs=1e-9)
    assert e[0] == pytest.approx(math.asinh(cfg.z_ecal / math.hypot(x, y)), abs=1e-9)


@pytest.mark.parametrize("energy", [4.0, 40.0])
def test_ecal_resolution_matches_formula(energy):
    """Single photons, shower kept in one crystal: σ/E of the crystal = a/√E ⊕ c ⊕ noise/E."""
    cfg = DetectorConfig(em_core=1e-3, em_halo_frac=0.0, ecal_zs=0.0, ecal_sr_et=math.inf)
    rng = np.random.default_rng(5)
    eta, phi = 10.5 * CRYSTAL_ETA, 20.5 * CRYSTAL_PHI  # crystal centre
    photon = _one(22, energy / math.cosh(eta), eta, phi, 0)
    vals = []
    for _ in range(1500):
        dep = simulate(photon, cfg, rng)
        img = render(dep, seed_tower(dep, eta, phi, cfg), cfg, rng)
        i, j = np.unravel_index(np.argmax(img[1]), img[1].shape)
        vals.append(img[1, i, j])
    vals = np.array(vals, dtype=np.float64)
    expected = float(resolution(energy, cfg.ecal_a, cfg.ecal_c, cfg.ecal_noise))
    assert vals.mean() == pytest.approx(energy, rel=4 * expected / math.sqrt(len(vals)))
    assert vals.std() / energy == pytest.approx(expected, rel=0.07)


def test_hcal_resolution_and_response():
    """Neutral hadrons not showering in the ECAL: HCAL energy ~ N(had_resp·E, σ) with σ/E' = a/√E' ⊕ c."""
    cfg = DetectorConfig(had_pint_ecal=0.0)
    rng = np.random.default_rng(7)
    energy = 100.0
    n = 4000
    p = Particles(
        np.full(n, energy), np.zeros(n), np.zeros(n), np.full(n, energy), np.full(n, 130), np.zeros(n)
    )  # K0L along +x at eta = 0
    dep = simulate(p, cfg, rng)
    assert len(dep.hcal_e) == n and len(dep.ecal_e) == 0
    ev = cfg.had_resp * energy
    expected = float(resolution(ev, cfg.hcal_a, cfg.hcal_c))
    assert dep.hcal_e.mean() == pytest.approx(ev, rel=4 * expected / math.sqrt(n))
    assert dep.hcal_e.std() / ev == pytest.approx(expected, rel=0.06)


def test_track_efficiency_and_smearing():
    cfg = DetectorConfig()
    rng = np.random.default_rng(3)
    n = 20000
    pt = 50.0
    p = Particles(np.full(n, pt), np.zeros(n), np.zeros(n), np.full(n, pt), np.full(n, 211), np.ones(n))
    dep = simulate(p, cfg, rng)
    eff = len(dep.trk_pt) / n
    assert eff == pytest.approx(cfg.trk_eff, abs=4 * math.sqrt(cfg.trk_eff * (1 - cfg.trk_eff) / n))
    rel = math.hypot(cfg.trk_res, cfg.trk_res_pt * pt)
    assert dep.trk_pt.std() / pt == pytest.approx(rel, rel=0.05)
    # below threshold or outside the tracker: no tracks
    p2 = Particles(
        np.array([0.4, 10 * math.cos(0.1)]),
        np.array([0.0, 10 * math.sin(0.1)]),
        np.array([0.0, 10 * math.sinh(2.7)]),
        np.array([0.4, 10 * math.cosh(2.7)]),
        np.array([211, 211]),
        np.array([1.0, 1.0]),
    )
    assert len(simulate(p2, cfg, rng).trk_pt) == 0


def test_muon_mip_deposits():
    cfg = DetectorConfig()
    dep = simulate(_one(13, 30.0, 0.2, 1.0, -1, 0.1057), cfg, np.random.default_rng(1))
    assert np.allclose(dep.ecal_e, [cfg.mip_ecal]) and np.allclose(dep.hcal_e, [cfg.mip_hcal])
    # invisible neutrinos never reach this module; no deposit for an empty event
    empty = Particles(*(np.zeros(0) for _ in range(4)), np.zeros(0, dtype=np.int64), np.zeros(0))
    d = simulate(empty, cfg, np.random.default_rng(1))
    assert len(d.trk_pt) == len(d.ecal_e) == len(d.hcal_e) == 0
