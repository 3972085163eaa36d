"""E2E image geometry: channels, pixel pitch, centre and HCAL tower size.

Images are 125x125 crystals, ``X[c, ieta, iphi]`` channel-first; pixel pitch 0.0174 in eta and
phi; pixel 62 is the jet axis. HCAL towers are 5x5 pixel blocks aligned to multiples of 5.
"""

from __future__ import annotations

import numpy as np

CHANNELS: tuple[str, str, str] = ("tracks", "ecal", "hcal")
CHANNEL_LABELS: tuple[str, str, str] = ("Tracks", "ECAL", "HCAL")
IMAGE_SIZE: int = 125
PIXEL: float = 0.0174  # crystal pitch in eta and phi (detector units)
CENTRE: int = 62  # pixel index of the jet axis
TOWER: int = 5  # HCAL tower side in pixels
N_TOWERS: int = IMAGE_SIZE // TOWER  # 25 towers per side
HCAL: int = 2  # channel index of HCAL
PIXELS_PER_IMAGE: int = 3 * IMAGE_SIZE * IMAGE_SIZE
E_MAX: float = 13_600.0  # GeV, the LHC collision energy: decoders clip |E| of a cell or tower to it


def energy_from_asinh(u, e0) -> np.ndarray:
    """E = e0·sinh(u) (GeV) of an asinh(E/e0) feature, |E| clipped to ``E_MAX`` (u clipped to
    ±asinh(E_MAX/e0), so a state far outside the data cannot overflow)."""
    e0 = np.asarray(e0, np.float64)
    lim = np.arcsinh(E_MAX / e0)
    return np.sinh(np.clip(u, -lim, lim)) * e0


def index_to_delta(index) -> np.ndarray:
    """Pixel index (may be fractional, e.g. a tower centre) -> offset from the jet axis (Δη or Δφ)."""
    return ((np.asarray(index, dtype=np.float64) - CENTRE) * PIXEL).astype(np.float32)


def delta_to_index(delta) -> np.ndarray:
    """Δη or Δφ -> continuous pixel coordinate (pixel centres are integers)."""
    return np.asarray(delta, dtype=np.float64) / PIXEL + CENTRE
