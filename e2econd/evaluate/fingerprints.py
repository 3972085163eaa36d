"""Fingerprints of the producer and the readout, per jet, vectorised over images (n, 3, 125, 125).

- ``hcal_central``: 1 if the most energetic HCAL tower is the central one (the 5×5 block that
  contains pixel (62, 62), i.e. tower (12, 12) of the 25×25 grid aligned to multiples of 5), else 0
  (E2E crops the image around the jet, so real jets peak there; jets without HCAL energy: 0).
- ``n_ecal_towers``: ECAL trigger towers (5×5 crystal blocks on the same grid) with any non-zero
  crystal.
- ``frac_full_ecal_towers``: fraction of those towers whose 25 crystals are all non-zero (a fully
  read-out tower; 0 for a jet without ECAL hits).
- ``frac_isolated_<c>``: fraction of the channel's non-zero hits (pixels; HCAL towers) with no
  non-zero hit among their 8 neighbours in the same channel (0 for an empty channel).
W1 of a 0/1 variable is the difference of the two fractions.
"""

from __future__ import annotations

import numpy as np

from e2econd.data.geometry import CHANNELS, N_TOWERS, TOWER

FINGERPRINT_NAMES = (
    "hcal_central",
    "n_ecal_towers",
    "frac_full_ecal_towers",
    *(f"frac_isolated_{c}" for c in CHANNELS),
)
_CENTRAL = (N_TOWERS // 2) * N_TOWERS + N_TOWERS // 2


def _blocks(x: np.ndarray) -> np.ndarray:
    """(n, 125, 125) -> (n, 25, 25) sums over 5×5 blocks."""
    n = len(x)
    return x.reshape(n, N_TOWERS, TOWER, N_TOWERS, TOWER).sum(axis=(2, 4))


def isolated_fraction(nonzero: np.ndarray) -> np.ndarray:
    """Fraction of True cells without a True 8-neighbour, per image of a boolean (n, H, W) array."""
    m = nonzero.astype(np.int8)
    p = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    H, W = m.shape[1:]
    neigh = sum(p[:, 1 + di : 1 + di + H, 1 + dj : 1 + dj + W] for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj)
    iso = (nonzero & (neigh == 0)).reshape(len(m), -1).sum(axis=1)
    cnt = nonzero.reshape(len(m), -1).sum(axis=1)
    return np.where(cnt > 0, iso / np.maximum(cnt, 1), 0.0)


def fingerprint_features(images: np.ndarray, hcal_towers: np.ndarray) -> dict[str, np.ndarray]:
    """Per-jet fingerprints (module docstring) of images (n, 3, 125, 125) and their HCAL towers (n, 25, 25)."""
    n = len(images)
    tflat = hcal_towers.reshape(n, -1)
    has = (tflat > 0).any(axis=1)
    central = (np.argmax(tflat, axis=1) == _CENTRAL) & has
    ecal_nz = images[:, 1] != 0
    per_tower = _blocks(ecal_nz.astype(np.int16))
    n_towers = (per_tower > 0).sum(axis=(1, 2))
    full = (per_tower == TOWER * TOWER).sum(axis=(1, 2))
    out = {
        "hcal_central": central.astype(np.float64),
        "n_ecal_towers": n_towers.astype(np.float64),
        "frac_full_ecal_towers": np.where(n_towers > 0, full / np.maximum(n_towers, 1), 0.0),
        "frac_isolated_tracks": isolated_fraction(images[:, 0] != 0),
        "frac_isolated_ecal": isolated_fraction(ecal_nz),
        "frac_isolated_hcal": isolated_fraction(hcal_towers != 0),
    }
    return {k: out[k] for k in FINGERPRINT_NAMES}
