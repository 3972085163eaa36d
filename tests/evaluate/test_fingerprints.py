"""Readout fingerprints against per-pixel brute-force loops."""

from __future__ import annotations

import numpy as np

from e2econd.evaluate import features as F
from e2econd.evaluate import fingerprints as FP


def _brute(img):
    ecal, hcal = img[1], img[2]
    tow = np.array([[hcal[5 * a : 5 * a + 5, 5 * b : 5 * b + 5].sum() for b in range(25)] for a in range(25)])
    central = float(tow.max() > 0 and np.unravel_index(np.argmax(tow), tow.shape) == (12, 12) and tow[12, 12] > 0)
    counts = [[np.count_nonzero(ecal[5 * a : 5 * a + 5, 5 * b : 5 * b + 5]) for b in range(25)] for a in range(25)]
    counts = np.array(counts)
    n_tow = int((counts > 0).sum())
    full = int((counts == 25).sum())

    def iso(x):
        nz = np.argwhere(x != 0)
        if len(nz) == 0:
            return 0.0
        k = 0
        for i, j in nz:
            nb = [(i + a, j + b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a or b)]
            if not any(0 <= p < x.shape[0] and 0 <= q < x.shape[1] and x[p, q] != 0 for p, q in nb):
                k += 1
        return k / len(nz)

    return {
        "hcal_central": central,
        "n_ecal_towers": n_tow,
        "frac_full_ecal_towers": full / n_tow if n_tow else 0.0,
        "frac_isolated_tracks": iso(img[0]),
        "frac_isolated_ecal": iso(ecal),
        "frac_isolated_hcal": iso(tow),
    }


def test_fingerprints_match_brute_force():
    rng = np.random.default_rng(1)
    imgs = np.zeros((6, 3, 125, 125), np.float32)
    for j in range(5):
        for c, k in ((0, 30), (1, 300)):
            ie, ip = rng.integers(40, 85, (2, k))
            imgs[j, c, ie, ip] = rng.exponential(1.0, k)
        imgs[j, 1, 60:65, 55:60] = 0.5  # a fully read ECAL tower
        tow = np.zeros((25, 25))
        t = rng.integers(8, 17, (2, 12))
        tow[t[0], t[1]] = rng.exponential(3.0, 12)
        if j % 2 == 0:
            tow[12, 12] = 100.0
        imgs[j, 2] = np.kron(tow / 25.0, np.ones((5, 5)))
    # jet 5 is empty
    got = FP.fingerprint_features(imgs, F.hcal_towers(imgs[:, 2]))
    for j in range(6):
        want = _brute(imgs[j])
        for k, v in want.items():
            np.testing.assert_allclose(got[k][j], v, err_msg=f"{k} jet {j}")
    assert got["hcal_central"][[0, 2, 4]].tolist() == [1.0, 1.0, 1.0]
