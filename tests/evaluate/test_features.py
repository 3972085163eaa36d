"""Image features against hand computations and naive per-pixel loops; hit-table reading round trip."""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.evaluate import features as F

P = 0.0174


def test_two_deposit_mass_by_hand():
    img = np.zeros((1, 125, 125), np.float32)
    img[0, 62, 62] = 100.0  # (η, φ) = (0, 0)
    img[0, 62, 72] = 50.0  # (0, 10 pixels)
    dphi = 10 * P
    assert F.image_mass(img)[0] == pytest.approx(np.sqrt(2 * 100 * 50 * (1 - np.cos(dphi))), rel=1e-5)
    # general directions: m² = 2 E1 E2 (1 − cos θ12) with unit vectors (cos φ, sin φ, sinh η) / cosh η
    img[:] = 0
    img[0, 40, 80] = 30.0
    img[0, 90, 50] = 70.0

    def unit(ie, ip):
        eta, phi = (ie - 62) * P, (ip - 62) * P
        return np.array([np.cos(phi), np.sin(phi), np.sinh(eta)]) / np.cosh(eta)

    cos12 = unit(40, 80) @ unit(90, 50)
    assert F.image_mass(img)[0] == pytest.approx(np.sqrt(2 * 30 * 70 * (1 - cos12)), rel=1e-5)
    # a single deposit is massless; negative pixels are dropped
    img[0, 90, 50] = -5.0
    assert F.image_mass(img)[0] == pytest.approx(0.0, abs=1e-2)  # float32 weights: ~1e-3 GeV rounding


def naive_features(img):
    """Per-pixel loops (independent of the vectorised code)."""
    out = {}
    tot = [0.0, 0.0, 0.0]
    wsum, psum = [0.0] * 3, [0.0] * 3
    n = [0, 0, 0]
    for c in range(3):
        for i in range(125):
            for j in range(125):
                e = float(img[c, i, j])
                tot[c] += e
                if c < 2 and e != 0:
                    n[c] += 1
                if e > 0:
                    r = np.hypot((i - 62) * P, (j - 62) * P)
                    wsum[c] += e * r
                    psum[c] += e
    for ti in range(25):
        for tj in range(25):
            if img[2, 5 * ti : 5 * ti + 5, 5 * tj : 5 * tj + 5].sum(dtype=np.float64) != 0:
                n[2] += 1
    for c, name in enumerate(F.CHANNELS):
        out[f"E_{name}"] = tot[c]
        out[f"N_{name}"] = n[c]
        out[f"width_{name}"] = wsum[c] / psum[c] if psum[c] > 0 else 0.0
    out["E_calo"] = tot[1] + tot[2]
    out["E_all"] = sum(tot)
    out["N_all"] = sum(n)
    out["width_all"] = sum(wsum) / sum(psum)
    out["frac_ecal_calo"] = tot[1] / out["E_calo"]
    out["ratio_tracks_calo"] = tot[0] / out["E_calo"]
    return out


def test_image_features_match_naive_loops(synth):
    imgs, _ = synth(3, seed=5)
    imgs[1, 0] = 0.0  # an empty tracks channel
    f = F.image_features(imgs)
    assert set(f) == set(F.FEATURE_NAMES)
    for k in range(3):
        ref = naive_features(imgs[k])
        for name, v in ref.items():
            assert f[name][k] == pytest.approx(v, rel=1e-4, abs=1e-5), name
        calo = imgs[k : k + 1, 1].clip(0) + imgs[k : k + 1, 2].clip(0)
        np.testing.assert_allclose(f["mass_calo"][k], F.image_mass(calo)[0], rtol=1e-4)
    assert f["width_tracks"][1] == 0.0 and f["N_tracks"][1] == 0
    H = F.hl_matrix(f)
    assert H.shape == (3, len(F.HL_FEATURES)) and np.isfinite(H).all()


def test_hcal_towers_and_deposits(synth):
    imgs, _ = synth(2, seed=6)
    t = F.hcal_towers(imgs[:, 2])
    np.testing.assert_allclose(t, imgs[:, 2].reshape(2, 25, 5, 25, 5).sum(axis=(2, 4)), rtol=1e-5, atol=1e-5)
    dep = F.jet_deposits(imgs[0])
    pos = imgs[0].clip(0)
    for c, name in enumerate(("tracks", "ecal", "hcal")):
        assert dep[name][1].sum() == pytest.approx(pos[c].sum(dtype=np.float64), rel=1e-5)
        assert (dep[name][1] > 0).all()
    assert dep["calo"][1].sum() == pytest.approx(pos[1:].sum(dtype=np.float64), rel=1e-5)
    # pooled blocks keep the energy-weighted centroid (first moment) of the channel
    for name, c in (("tracks", 0), ("ecal", 1)):
        pts, e = dep[name]
        ref = np.array([(pos[c] * F.DETA).sum(), (pos[c] * F.DPHI).sum()]) / pos[c].sum()
        np.testing.assert_allclose(pts.T @ e / e.sum(), ref, atol=1e-6)
    single = F.jet_deposits(imgs[0], pool=1)["ecal"]
    assert len(single[1]) == np.count_nonzero(pos[1]) > len(dep["ecal"][1])
    # HCAL towers of uniform blocks sit at the tower centres
    hp = dep["hcal"][0]
    tower_index = (hp / P + 60.0) / 5.0  # tower i is centred at pixel 5 i + 2 = 62 + Δ/P
    np.testing.assert_allclose(tower_index, np.round(tower_index), atol=1e-4)
    # a tower centre: block starting at pixel 60 is centred on the axis
    assert np.isclose(F.TDETA[12, 12], 0.0) and np.isclose(F.TDPHI[12, 13], 5 * P)
    h = F.hit_energies(imgs[0])
    assert len(h["hcal"]) == np.count_nonzero(t[0]) and len(h["ecal"]) == np.count_nonzero(imgs[0, 1])


def test_radial_profile_conserves_energy(synth):
    imgs, _ = synth(4, seed=7)
    mean = imgs.mean(axis=0)
    prof = F.radial_profile(mean, np.linspace(0, 2.0, 51))  # covers the whole image (max R ≈ 1.52)
    np.testing.assert_allclose(prof.sum(axis=1), mean.reshape(3, -1).sum(axis=1), rtol=1e-5)
