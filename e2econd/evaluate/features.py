"""Per-jet high-level features computed directly from E2E images, vectorised over many jets.

All features come from the image ``X[c, ieta, iphi]`` (channels Tracks, ECAL, HCAL; GeV), so
that real and generated jets (files or hit directories rebuilt into images) go through one
code path. Conventions (the same for real and generated jets):

- Pixel centre offsets from the jet axis: Δη = (ieta − 62)·0.0174, Δφ = (iphi − 62)·0.0174,
  R = sqrt(Δη² + Δφ²).
- Total energy ``E_c`` = sum of all pixels of channel c, negative (noise) pixels included.
  ``E_calo`` = E_ecal + E_hcal; ``E_all`` = sum of the three channels (the whole image; tracks
  double count the calorimeter, so physics responses use ``E_calo``).
- Multiplicity ``N_c``: Tracks and ECAL count non-zero pixels; HCAL counts non-zero towers
  (5×5 blocks, the hit-set representation: one tower = one hit). ``N_all`` = their sum.
- Per-hit energy: the non-zero pixel values (Tracks, ECAL) and non-zero tower sums (HCAL).
- Radial width ``width_c`` = Σ E⁺·R / Σ E⁺ over positive pixels (0 for an empty channel).
- Image mass ``mass_calo``: ECAL + HCAL positive pixels as massless deposits with energy E_i at
  (η_i, φ_i) = (Δη_i, Δφ_i), i.e. the jet placed at η ≈ 0 (approximation: the jet's true η
  is not stored in the image; if pixel values are transverse energies this is exact by
  longitudinal-boost invariance). p_T,i = E_i / cosh η_i, p = p_T (cos φ, sin φ, sinh η);
  m² = (ΣE)² − |Σp|², m = sqrt(max(m², 0)). Tracks are left out (they would double count).
- Energy fractions: ``frac_ecal_calo`` = E_ecal / E_calo and ``ratio_tracks_calo`` =
  E_tracks / E_calo (0 where E_calo ≤ 0).
Negative pixels enter totals, multiplicities and per-hit energies but not width, mass or EMD.
"""

from __future__ import annotations

import numpy as np

from e2econd.data.geometry import CENTRE, CHANNELS, IMAGE_SIZE, N_TOWERS, PIXEL, TOWER

#: per-jet scalar features returned by :func:`image_features`
FEATURE_NAMES = (
    "E_tracks",
    "E_ecal",
    "E_hcal",
    "E_calo",
    "E_all",
    "N_tracks",
    "N_ecal",
    "N_hcal",
    "N_all",
    "width_tracks",
    "width_ecal",
    "width_hcal",
    "width_all",
    "mass_calo",
    "frac_ecal_calo",
    "ratio_tracks_calo",
)
#: the high-level vector used by the Fréchet/kernel distances and the classifier test
HL_FEATURES = (
    "E_tracks",
    "E_ecal",
    "E_hcal",
    "N_tracks",
    "N_ecal",
    "N_hcal",
    "width_tracks",
    "width_ecal",
    "width_hcal",
    "mass_calo",
)

_idx = np.arange(IMAGE_SIZE, dtype=np.float64)
#: Δη (axis 0) and Δφ (axis 1) of every pixel centre, shape (125, 125)
DETA, DPHI = np.meshgrid((_idx - CENTRE) * PIXEL, (_idx - CENTRE) * PIXEL, indexing="ij")
R_PIX = np.sqrt(DETA**2 + DPHI**2)
_tidx = np.arange(N_TOWERS) * TOWER + (TOWER - 1) / 2.0
#: Δη, Δφ of the HCAL tower centres, shape (25, 25)
TDETA, TDPHI = np.meshgrid((_tidx - CENTRE) * PIXEL, (_tidx - CENTRE) * PIXEL, indexing="ij")
# per-pixel weights for one float32 matmul over positive pixels: [1, R, 1 - cos φ / cosh η, sin φ / cosh η,
# tanh η]. With the jet axis along x, E - p_x = Σ E (1 - cos φ / cosh η) is accumulated directly (no
# cancellation), so m² = D (2E - D) - p_y² - p_z² is accurate in float32 (D = E - p_x).
_W = (
    np.stack(
        [np.ones_like(DETA), R_PIX, 1.0 - np.cos(DPHI) / np.cosh(DETA), np.sin(DPHI) / np.cosh(DETA), np.tanh(DETA)],
        axis=-1,
    )
    .reshape(-1, 5)
    .astype(np.float32)
)
# block-summing matrix: towers = P @ hcal @ P.T
_P = np.zeros((N_TOWERS, IMAGE_SIZE), dtype=np.float32)
_P[np.arange(IMAGE_SIZE) // TOWER, np.arange(IMAGE_SIZE)] = 1.0


def hcal_towers(hcal: np.ndarray) -> np.ndarray:
    """HCAL pixel images (n, 125, 125) -> tower energies (n, 25, 25) in GeV (sum of each 5×5 block)."""
    return np.matmul(np.matmul(_P, hcal.astype(np.float32, copy=False)), _P.T)


def _mass_from_moments(m: np.ndarray) -> np.ndarray:
    """Mass from summed weights [E, ·, D = E - p_x, p_y, p_z] (float64, (..., 5))."""
    e, d, py, pz = m[..., 0], m[..., 2], m[..., 3], m[..., 4]
    return np.sqrt(np.clip(d * (2.0 * e - d) - py**2 - pz**2, 0.0, None))


def image_mass(calo: np.ndarray) -> np.ndarray:
    """Invariant mass (GeV) of calorimeter images (n, 125, 125) as massless deposits at (Δη, Δφ).

    Negative pixels are dropped. See the module docstring for the η ≈ 0 approximation.
    """
    flat = np.clip(np.asarray(calo, np.float32).reshape(len(calo), -1), 0.0, None)
    return _mass_from_moments((flat @ _W).astype(np.float64))


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(a, b).shape, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-jet features (see module docstring) of images (n, 3, 125, 125) -> {name: float64 (n,)}."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must have shape (n, 3, 125, 125), got {x.shape}")
    n = len(x)
    flat = x.reshape(n, 3, -1)
    sums = flat.sum(axis=2, dtype=np.float64)  # (n, 3), negatives included
    mom = (np.maximum(flat, 0.0) @ _W).astype(np.float64)  # (n, 3, 5) over positive pixels
    pos_sum, rsum = mom[..., 0], mom[..., 1]
    counts = np.count_nonzero(flat[:, :2], axis=2).astype(np.float64)
    towers = hcal_towers(x[:, 2])
    n_hcal = np.count_nonzero(towers.reshape(n, -1), axis=1).astype(np.float64)
    f: dict[str, np.ndarray] = {}
    for i, c in enumerate(CHANNELS):
        f[f"E_{c}"] = sums[:, i]
        f[f"width_{c}"] = _safe_div(rsum[:, i], pos_sum[:, i])
    f["E_calo"] = sums[:, 1] + sums[:, 2]
    f["E_all"] = sums.sum(axis=1)
    f["N_tracks"], f["N_ecal"], f["N_hcal"] = counts[:, 0], counts[:, 1], n_hcal
    f["N_all"] = counts.sum(axis=1) + n_hcal
    f["width_all"] = _safe_div(rsum.sum(axis=1), pos_sum.sum(axis=1))
    f["mass_calo"] = _mass_from_moments(mom[:, 1] + mom[:, 2])
    f["frac_ecal_calo"] = _safe_div(sums[:, 1], f["E_calo"])
    f["ratio_tracks_calo"] = _safe_div(sums[:, 0], f["E_calo"])
    return {k: f[k] for k in FEATURE_NAMES}


def hl_matrix(feats: dict[str, np.ndarray], index: np.ndarray | None = None) -> np.ndarray:
    """High-level feature matrix (n, 10): log1p of energies and multiplicities, widths, log1p(mass).

    The logs tame the long tails so that the Fréchet/kernel distances and the classifier are not
    dominated by a few very energetic jets. Energies are clipped at 0 before the log.
    """
    cols = []
    for name in HL_FEATURES:
        v = np.asarray(feats[name], dtype=np.float64)
        if index is not None:
            v = v[index]
        if name.startswith(("E_", "N_", "mass")):
            v = np.log1p(np.clip(v, 0.0, None))
        cols.append(v)
    return np.stack(cols, axis=1)


def hit_energies(image: np.ndarray) -> dict[str, np.ndarray]:
    """Per-hit energies (GeV) of one image (3, 125, 125): non-zero pixels (Tracks, ECAL), non-zero towers (HCAL)."""
    out = {}
    for i, c in enumerate(CHANNELS[:2]):
        v = image[i]
        out[c] = v[v != 0].astype(np.float64)
    t = hcal_towers(image[2][None])[0]
    out["hcal"] = t[t != 0].astype(np.float64)
    return out


#: EMD channels: the three detector channels plus the calorimeter at HCAL-tower granularity
EMD_CHANNELS = ("tracks", "ecal", "hcal", "calo")
#: default pooling (pixels per side) of Tracks and ECAL for the EMD
EMD_POOL = 2


def _pooled(e: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positive image (125, 125) -> blocks of k×k pixels: (energy-weighted centroids (m, 2), energies (m,))."""
    if k == 1:
        m = e > 0
        return np.stack([DETA[m], DPHI[m]], axis=1), e[m].astype(np.float64)
    size = -(-IMAGE_SIZE // k) * k
    pad = np.zeros((size, size), dtype=np.float64)
    pad[:IMAGE_SIZE, :IMAGE_SIZE] = e
    nb = size // k
    blocks = pad.reshape(nb, k, nb, k)
    w = blocks.sum(axis=(1, 3))
    m = w > 0
    pe = np.zeros((size, size))
    pe[:IMAGE_SIZE, :IMAGE_SIZE] = DETA
    pp = np.zeros((size, size))
    pp[:IMAGE_SIZE, :IMAGE_SIZE] = DPHI
    ceta = (blocks * pe.reshape(nb, k, nb, k)).sum(axis=(1, 3))[m] / w[m]
    cphi = (blocks * pp.reshape(nb, k, nb, k)).sum(axis=(1, 3))[m] / w[m]
    return np.stack([ceta, cphi], axis=1), w[m]


def jet_deposits(image: np.ndarray, pool: int = EMD_POOL) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Positive energy deposits of one image for the EMD: {channel: (points (k, 2) [Δη, Δφ], energies (k,))}.

    Tracks and ECAL: blocks of ``pool``×``pool`` pixels (1 = single crystals); HCAL: towers;
    ``calo``: ECAL + HCAL summed into the HCAL tower grid. A block's position is the energy-weighted
    centroid of its pixels, so pooling only moves energy within a block (≤ pool·0.0174/√2 in ΔR).
    Pooling keeps the exact EMD affordable: a full-resolution ECAL jet has ~500 positive pixels
    (~0.1–0.4 s per pair), 2×2 blocks ~200 points (~10× faster, EMD within ~0.5 %). Negative
    pixels (calorimeter noise) are dropped before pooling.
    """
    pos = np.clip(np.asarray(image, dtype=np.float64), 0.0, None)
    return {
        "tracks": _pooled(pos[0], pool),
        "ecal": _pooled(pos[1], pool),
        "hcal": _pooled(pos[2], TOWER),
        "calo": _pooled(pos[1] + pos[2], TOWER),
    }


#: radial bin edges (Δη/Δφ units) used for the radial profile plot
R_EDGES = np.linspace(0.0, 1.0, 41)


def radial_profile(mean_image: np.ndarray, edges: np.ndarray = R_EDGES) -> np.ndarray:
    """Mean energy per jet (GeV) in annuli of R (per channel) from a mean image (3, 125, 125) -> (3, len(edges)-1)."""
    idx = np.digitize(R_PIX.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    prof = np.zeros((3, len(edges) - 1))
    for c in range(3):
        prof[c] = np.bincount(idx[ok], weights=mean_image[c].ravel()[ok], minlength=len(edges) - 1)
    return prof
