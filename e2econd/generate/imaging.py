"""Jet images: render detector deposits into 125×125 crystals × (Tracks, ECAL, HCAL), centred like E2E.

Centring (as the E2E producer): the image is centred on the most energetic HCAL tower among the
3×3 towers around the tower containing the jet axis ("seed"). The window is 25×25 HCAL towers
(125×125 crystals) on the global tower grid, so HCAL towers are 5×5 pixel blocks aligned to
multiples of 5 and the image centre pixel 62 is the centre crystal of the seed tower.
Rows are η (ieta increasing with η), columns are φ (iphi increasing with φ).

Channels (GeV): Tracks = summed track pT per crystal at the ECAL face; ECAL = crystal energy after
lateral shower spread, Gaussian noise and zero suppression / selective readout; HCAL = tower energy
(lateral spread, noise, threshold) / 25 on each of the tower's 25 pixels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

from e2econd.generate.detector import (
    CRYSTAL_ETA,
    CRYSTAL_PHI,
    EM_SHOWER,
    HAD_SHOWER,
    MIP,
    TOWER_ETA,
    TOWER_PHI,
    Deposits,
    DetectorConfig,
    wrap_phi,
)

IMAGE = 125
N_TOWERS = 25
HALF_TOWERS = 12  # seed tower is tower 12 of the window
SEARCH_TOWERS = 1  # seed search: towers within ±1 of the jet-axis tower


def spread_add(shape: tuple[int, int], u, v, e, sigma: float, k: int, out: np.ndarray | None = None) -> np.ndarray:
    """Add energies ``e`` at continuous cell coordinates (u, v) to a 2-D grid with a Gaussian spread.

    Cell (i, j) covers [i, i+1) × [j, j+1). Each deposit is shared over the (2k+1)² cells around
    its own cell with weights = integral of a 2-D Gaussian of width ``sigma`` (cells) over each cell,
    renormalised to 1 so that energy is conserved; k = 0 puts everything in one cell. Energy
    falling outside the grid is dropped.
    """
    out = np.zeros(shape, dtype=np.float64) if out is None else out
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    if e.size == 0:
        return out
    iu = np.floor(u).astype(np.int64)
    iv = np.floor(v).astype(np.int64)
    if k == 0:
        ok = (iu >= 0) & (iu < shape[0]) & (iv >= 0) & (iv < shape[1])
        out += np.bincount(iu[ok] * shape[1] + iv[ok], weights=e[ok], minlength=out.size).reshape(shape)
        return out
    offs = np.arange(-k, k + 1)
    cu = iu[:, None] + offs[None, :]  # (n, 2k+1)
    cv = iv[:, None] + offs[None, :]
    wu = ndtr((cu + 1 - u[:, None]) / sigma) - ndtr((cu - u[:, None]) / sigma)
    wv = ndtr((cv + 1 - v[:, None]) / sigma) - ndtr((cv - v[:, None]) / sigma)
    wu /= wu.sum(1, keepdims=True)
    wv /= wv.sum(1, keepdims=True)
    w = e[:, None, None] * wu[:, :, None] * wv[:, None, :]
    ci = np.broadcast_to(cu[:, :, None], w.shape)
    cj = np.broadcast_to(cv[:, None, :], w.shape)
    ok = (ci >= 0) & (ci < shape[0]) & (cj >= 0) & (cj < shape[1])
    out += np.bincount(ci[ok] * shape[1] + cj[ok], weights=w[ok], minlength=out.size).reshape(shape)
    return out


def _tower_uv(eta, phi, t_eta0: int, t_phi0: int, n: int):
    """Continuous tower coordinates in a window of n×n towers whose first tower is (t_eta0, t_phi0)."""
    phi_c = (t_phi0 + n / 2.0) * TOWER_PHI
    return np.asarray(eta) / TOWER_ETA - t_eta0, wrap_phi(np.asarray(phi) - phi_c) / TOWER_PHI + n / 2.0


def _crystal_uv(eta, phi, c_eta0: int, c_phi0: int, n: int):
    """Continuous crystal coordinates in a window of n×n crystals whose first crystal is (c_eta0, c_phi0)."""
    phi_c = (c_phi0 + n / 2.0) * CRYSTAL_PHI
    return np.asarray(eta) / CRYSTAL_ETA - c_eta0, wrap_phi(np.asarray(phi) - phi_c) / CRYSTAL_PHI + n / 2.0


def seed_tower(dep: Deposits, jet_eta: float, jet_phi: float, cfg: DetectorConfig) -> tuple[int, int]:
    """Global (η, φ) index of the hottest noiseless HCAL tower within ±1 tower of the jet-axis tower.

    Falls back to the jet-axis tower when those towers are empty.
    """
    jt_eta = math.floor(jet_eta / TOWER_ETA)
    jt_phi = math.floor(wrap_phi(jet_phi) / TOWER_PHI)
    n = 2 * SEARCH_TOWERS + 1
    u, v = _tower_uv(dep.hcal_eta, dep.hcal_phi, jt_eta - SEARCH_TOWERS, jt_phi - SEARCH_TOWERS, n)
    grid = spread_add((n, n), u, v, dep.hcal_e, cfg.hcal_sigma, 1)
    if grid.max() <= 0:
        return jt_eta, jt_phi
    i, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return jt_eta - SEARCH_TOWERS + int(i), jt_phi - SEARCH_TOWERS + int(j)


def render(dep: Deposits, seed: tuple[int, int], cfg: DetectorConfig, rng: np.random.Generator) -> np.ndarray:
    """(3,125,125) float32 image (GeV) of the 25×25-tower window whose central tower is ``seed``."""
    t_eta0, t_phi0 = seed[0] - HALF_TOWERS, seed[1] - HALF_TOWERS
    c_eta0, c_phi0 = 5 * t_eta0, 5 * t_phi0
    img = np.zeros((3, IMAGE, IMAGE), dtype=np.float64)
    shape = (IMAGE, IMAGE)
    # Tracks
    u, v = _crystal_uv(dep.trk_eta, dep.trk_phi, c_eta0, c_phi0, IMAGE)
    spread_add(shape, u, v, dep.trk_pt, 1.0, 0, out=img[0])
    # ECAL: EM core + halo, hadron showers, MIPs
    u, v = _crystal_uv(dep.ecal_eta, dep.ecal_phi, c_eta0, c_phi0, IMAGE)
    near = (u > -4) & (u < IMAGE + 4) & (v > -4) & (v < IMAGE + 4)
    kind, e = dep.ecal_kind, dep.ecal_e
    m = near & (kind == EM_SHOWER)
    spread_add(shape, u[m], v[m], (1.0 - cfg.em_halo_frac) * e[m], cfg.em_core, 1, out=img[1])
    spread_add(shape, u[m], v[m], cfg.em_halo_frac * e[m], cfg.em_halo, 3, out=img[1])
    m = near & (kind == HAD_SHOWER)
    spread_add(shape, u[m], v[m], e[m], cfg.had_ecal_sigma, 3, out=img[1])
    m = near & (kind == MIP)
    spread_add(shape, u[m], v[m], e[m], 1.0, 0, out=img[1])
    ecal = img[1] + cfg.ecal_noise * rng.standard_normal(shape)
    # selective readout: trigger towers (5×5 crystals) with E_T > ecal_sr_et keep all crystals;
    # elsewhere zero suppression |E| < ecal_zs -> 0
    tt = ecal.reshape(N_TOWERS, 5, N_TOWERS, 5).sum(axis=(1, 3))
    eta_tt = (t_eta0 + np.arange(N_TOWERS) + 0.5) * TOWER_ETA
    et_tt = tt / np.cosh(eta_tt)[:, None]
    full = np.repeat(np.repeat(et_tt > cfg.ecal_sr_et, 5, 0), 5, 1)
    ecal[(np.abs(ecal) < cfg.ecal_zs) & ~full] = 0.0
    img[1] = ecal
    # HCAL towers
    u, v = _tower_uv(dep.hcal_eta, dep.hcal_phi, t_eta0, t_phi0, N_TOWERS)
    towers = spread_add((N_TOWERS, N_TOWERS), u, v, dep.hcal_e, cfg.hcal_sigma, 1)
    towers += cfg.hcal_noise * rng.standard_normal(towers.shape)
    towers[towers < cfg.hcal_thr] = 0.0
    img[2] = np.repeat(np.repeat(towers / 25.0, 5, 0), 5, 1)
    return img.astype(np.float32)


def image_observables(images: np.ndarray, R: float) -> dict[str, np.ndarray]:
    """Per-jet physics observables of E2E images (n,3,125,125), used by the sanity checks.

    occupancy_c (fraction of non-zero pixels), nonzero_c, sum_c (GeV) for c in tracks/ecal/hcal;
    calo_cone (ECAL+HCAL energy within ΔR < R of the image centre, GeV); girth (calorimeter
    energy-weighted mean ΔR within the cone); n_track_pix (non-zero Tracks pixels in the cone, a proxy
    for the charged multiplicity). ΔR uses the 0.0174 pixel pitch.
    """
    images = np.asarray(images)
    idx = (np.arange(IMAGE) - 62) * 0.0174
    dr = np.hypot(idx[:, None], idx[None, :])
    cone = dr < R
    out: dict[str, np.ndarray] = {}
    for c, name in enumerate(("tracks", "ecal", "hcal")):
        nz = (images[:, c] != 0).sum(axis=(1, 2))
        out[f"nonzero_{name}"] = nz
        out[f"occupancy_{name}"] = nz / float(IMAGE * IMAGE)
        out[f"sum_{name}"] = images[:, c].sum(axis=(1, 2), dtype=np.float64)
    calo = images[:, 1].astype(np.float64) + images[:, 2]
    calo_in = np.where(cone, calo, 0.0)
    out["calo_cone"] = calo_in.sum(axis=(1, 2))
    out["girth"] = (calo_in * dr).sum(axis=(1, 2)) / np.maximum(out["calo_cone"], 1e-9)
    out["n_track_pix"] = ((images[:, 0] > 0) & cone).sum(axis=(1, 2))
    return out
