"""Self-test of the toy-jet helper: E2E format, realistic statistics, and that each distortion does what it says."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def jets(toyjets):
    return toyjets.toy_jets(300, seed=5)


def _core_sum_bruteforce(img: np.ndarray, r: float) -> float:
    """Energy of one channel image within R < r of the centre, pixel by pixel (independent of the helper)."""
    tot = 0.0
    for i in range(125):
        for j in range(125):
            if np.hypot((i - 62) * 0.0174, (j - 62) * 0.0174) < r:
                tot += float(img[i, j])
    return tot


def test_format_and_statistics(toyjets, jets):
    X = jets["images"]
    assert X.shape == (300, 3, 125, 125) and X.dtype == np.float32
    assert jets["pt"].dtype == np.float64 and jets["m0"].dtype == np.float64 and jets["y"].dtype == np.float32
    assert (jets["pt"] >= 400).all() and (jets["pt"] <= 1000).all()
    assert 150 < np.median(jets["m0"]) < 190
    # HCAL: uniform 5x5 blocks aligned to multiples of 5
    blocks = X[:, 2].reshape(300, 25, 5, 25, 5)
    assert (blocks == blocks[:, :, :1, :, :1]).all()
    towers = (blocks[:, :, 0, :, 0] != 0).sum((1, 2))
    assert 30 < np.median(towers) < 70
    hottest = blocks.sum((2, 4)).reshape(300, -1).argmax(1)
    assert 0.65 < np.mean(hottest == 12 * 25 + 12) < 0.95
    assert (X[:, 0] >= 0).all() and 25 < np.median((X[:, 0] != 0).sum((1, 2))) < 50
    ecal = X[:, 1]
    assert 400 < np.median((ecal != 0).sum((1, 2))) < 900
    assert (ecal < 0).any() and ecal.min() > -0.3  # small negatives after readout
    nz = ecal[ecal != 0]
    assert np.mean(np.abs(nz) < 0.2) > 0.5
    full = ((ecal.reshape(300, 25, 5, 25, 5) != 0).sum((2, 4)) == 25).sum((1, 2))
    assert 10 < np.median(full) < 40
    # energies scale with pt; a hard core within R < 0.05 in every channel
    for c in range(3):
        frac = X[:, c].sum((1, 2)) / jets["pt"]
        assert 0.3 < np.median(frac) < 0.8 and np.std(frac) / np.mean(frac) < 0.3
        core = [_core_sum_bruteforce(X[i, c], 0.05) for i in range(5)]
        assert np.median(core) > 15.0


def test_deterministic(toyjets):
    a, b = toyjets.toy_jets(20, seed=3), toyjets.toy_jets(20, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["images"], toyjets.toy_jets(20, seed=4)["images"])


def test_distortions(toyjets, jets):
    X = jets["images"][:20]
    S = toyjets.scale_channel(X, 2, 1.05)
    np.testing.assert_array_equal(S[:, 2], X[:, 2] * np.float32(1.05))
    np.testing.assert_array_equal(S[:, :2], X[:, :2])
    np.testing.assert_array_equal(toyjets.tracks_scale(X)[:, 0], X[:, 0] * np.float32(0.8))

    M = toyjets.move_core_energy(X, 0.10, channel=1)
    np.testing.assert_array_equal(M[:, [0, 2]], X[:, [0, 2]])
    assert ((M[:, 1] != 0) == (X[:, 1] != 0)).all()  # no new or lost pixels
    np.testing.assert_allclose(M[:, 1].sum((1, 2)), X[:, 1].sum((1, 2)), rtol=1e-5)  # energy conserved
    for i in range(3):
        pos_x, pos_m = np.maximum(X[i, 1], 0), np.maximum(M[i, 1], 0)
        core_x, core_m = _core_sum_bruteforce(pos_x, 0.05), _core_sum_bruteforce(pos_m, 0.05)
        assert core_m == pytest.approx(0.9 * core_x, rel=1e-5)
        out_gain = (pos_m.sum() - _core_sum_bruteforce(pos_m, 0.2)) - (pos_x.sum() - _core_sum_bruteforce(pos_x, 0.2))
        assert out_gain == pytest.approx(0.1 * core_x, rel=1e-3)

    sh = toyjets.shuffle_conditions(jets, seed=1)
    assert sh["images"] is jets["images"]
    assert sorted(sh["pt"]) == sorted(jets["pt"]) and not np.array_equal(sh["pt"], jets["pt"])
    order = np.argsort(jets["pt"])  # pt and m0 permuted jointly
    np.testing.assert_array_equal(np.sort(sh["m0"][np.argsort(sh["pt"])]), np.sort(jets["m0"][order]))
    np.testing.assert_array_equal(sh["m0"][np.argsort(sh["pt"])], jets["m0"][order])

    mc = toyjets.mode_collapse(jets, k=10, n=50, seed=2)
    assert mc["images"].shape == (50, 3, 125, 125)
    assert len(np.unique(mc["pt"])) <= 10
    for i in range(50):
        j = int(np.flatnonzero(jets["pt"] == mc["pt"][i])[0])
        np.testing.assert_array_equal(mc["images"][i], jets["images"][j])
