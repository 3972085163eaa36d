"""Realistic toy E2E jets and known distortions, for the evaluate tests (test helper, not package code).

``toy_jets(n, seed)`` draws boosted-top-like jets in the E2E image format in a few ms per jet, fully
vectorised (numpy, no per-jet loops over pixels), so sensitivity tests can use thousands of jets
without external data. Tests get the module through the ``toyjets`` fixture of ``conftest.py``.

Structure of a jet (units: GeV, Δη/Δφ, pixel pitch 0.0174, image centre pixel 62 = jet axis):

- pt in [400, 1000] GeV (falling spectrum ∝ pt⁻³), label ``y`` (default 1, top).
- 3 prongs (75 %) or 2 prongs, momentum fractions z (hardest prong at the centre); the prong
  separations are scaled so that the massless-prong mass ``pt·sqrt(Σ z_i z_j ΔR_ij²)`` is ~173 GeV
  (3 prongs) or ~95 GeV (2 prongs); ``m0`` is that mass (±2 % resolution): it follows the prong
  separation, which shrinks as 1/pt.
- a hard core at the image centre: per channel 20–30 GeV (∝ pt) within a pixel of the axis; with the
  hardest prong, ~40 GeV per channel within R < 0.05 at the median pt (~530 GeV). The core is one
  object seen by every channel: its jet-to-jet fluctuation (20 %) is common to the channels (5 % each).
- Tracks: ~37 pixels, track pT > 0.5 GeV, no negative values (~60 % of pt in total).
- ECAL: ~110 showers spread over 3×3 crystals, Gaussian noise σ = 0.04 GeV on every crystal and
  selective readout: a whole 5×5 trigger tower is read when its energy exceeds 0.6 GeV or it borders
  a tower above 4 GeV (many tiny values < 0.2 GeV and small negatives there); elsewhere crystals
  above 0.12 GeV (zero suppression). ~650 crystals, ~23 fully read towers per jet.
- HCAL: ~50 towers (3×3-tower shower spread, noise σ = 0.2 GeV, threshold 0.8 GeV) stored as
  uniform 5×5 blocks of tower energy / 25; the hottest tower is the central one in ~80 % of jets.
- Total energies per channel scale with pt (jet-to-jet spread ~12 %).

Distortions (each returns new arrays, never modifies its input): ``scale_channel``, ``tracks_scale``,
``move_core_energy``, ``shuffle_conditions``, ``mode_collapse``. Jets are dicts
``{"images" float32 (n,3,125,125), "pt" f64 (n,), "m0" f64 (n,), "y" f32 (n,)}``.
"""

from __future__ import annotations

import numpy as np

NPIX, CENTRE, PITCH = 125, 62, 0.0174
NTOW = 25  # 5x5-pixel trigger / HCAL towers per side
#: mean number of deposits per channel at pt = 500 GeV (tracks, ECAL showers, HCAL showers)
N_DEPOSITS = (45.0, 110.0, 45.0)
#: total energy per channel as a fraction of pt (tracks, ECAL, HCAL)
CHANNEL_FRACTION = (0.6, 0.45, 0.5)
#: lateral spread of deposits around their prong (Δη/Δφ at pt = 500 GeV; ∝ pt^-1/2)
SPREAD = (0.08, 0.08, 0.12)
#: explicit hard core per channel, fraction of pt (within a pixel of the axis)
CORE_FRACTION = (0.03, 0.035, 0.08)


def _pixel_radius() -> np.ndarray:
    """(125,125) distance ΔR of each pixel centre from the image centre."""
    d = (np.arange(NPIX) - CENTRE) * PITCH
    return np.hypot(d[:, None], d[None, :])


def _kinematics(rng, n: int, pt_range):
    """pt (falling ∝ pt⁻³), prong fractions z (n,3) sorted descending, prong positions (n,3,2), m0."""
    lo, hi = pt_range
    u = rng.random(n)
    pt = 1.0 / np.sqrt(lo**-2 - u * (lo**-2 - hi**-2))  # inverse CDF of pt^-3
    three = rng.random(n) < 0.75
    g = rng.gamma(np.array([4.0, 2.5, 1.5]), size=(n, 3))
    g[~three, 2] = 0.0
    z = -np.sort(-g / g.sum(1, keepdims=True), axis=1)
    r1, r2 = rng.uniform(0.8, 1.2, n), rng.uniform(0.6, 1.2, n)
    a1 = rng.uniform(0, 2 * np.pi, n)
    a2 = a1 + rng.choice([-1.0, 1.0], n) * rng.uniform(0.6, 2.0, n)
    pos = np.zeros((n, 3, 2))
    pos[:, 1] = np.column_stack([r1 * np.cos(a1), r1 * np.sin(a1)])
    pos[:, 2] = np.column_stack([r2 * np.cos(a2), r2 * np.sin(a2)])
    d2 = ((pos[:, :, None, :] - pos[:, None, :, :]) ** 2).sum(-1)
    m_unit = np.sqrt(0.5 * np.einsum("ni,nj,nij->n", z, z, d2))
    target = np.where(three, rng.normal(173.0, 12.0, n), np.clip(rng.normal(95.0, 20.0, n), 40.0, 170.0))
    scale = np.minimum(target / (pt * m_unit), 0.9 / np.maximum(r1, r2))  # keep the prongs in the image
    pos *= scale[:, None, None]
    m0 = pt * m_unit * scale * (1.0 + rng.normal(0.0, 0.02, n))
    return pt, z, pos, m0


def _deposits(rng, pt, z, pos, c: int, core_factor: np.ndarray):
    """Deposits of channel ``c``: (jet index, Δη, Δφ, energy GeV), prong showers plus the central core."""
    n = len(pt)
    k = rng.poisson(N_DEPOSITS[c] * (pt / 500.0) ** 0.25)
    jet = np.repeat(np.arange(n), k)
    prong = (rng.random(len(jet))[:, None] > np.cumsum(z, 1)[jet, :2]).sum(1)
    sigma = SPREAD[c] * np.sqrt(500.0 / pt[jet])
    xy = pos[jet, prong] + rng.normal(0.0, 1.0, (len(jet), 2)) * sigma[:, None]
    w = rng.exponential(1.0, len(jet)) ** 1.5
    core = core_factor * CORE_FRACTION[c] * pt * rng.lognormal(0.0, 0.05, n)  # explicit hard core, GeV
    total = CHANNEL_FRACTION[c] * pt * rng.lognormal(0.0, 0.12, n)
    wsum = np.bincount(jet, weights=w, minlength=n)
    e = w * (np.maximum(total - core, 0.0) / np.where(wsum > 0, wsum, 1.0))[jet]
    # the core: three deposits within a pixel of the axis sharing ``core``
    cj = np.repeat(np.arange(n), 3)
    cxy = rng.normal(0.0, 0.3 * PITCH, (3 * n, 2))
    ce = core[cj] * np.tile([0.6, 0.25, 0.15], n)
    jet, xy, e = np.concatenate([jet, cj]), np.concatenate([xy, cxy]), np.concatenate([e, ce])
    if c == 0:  # tracks: pT threshold 0.5 GeV
        keep = e > 0.5
        jet, xy, e = jet[keep], xy[keep], e[keep]
    return jet, xy, e


def _bin(n: int, jet, xy, e, cell: int) -> np.ndarray:
    """Sum deposits into an (n, 125/cell, 125/cell) grid (cell 1: crystals, 5: towers); outside dropped."""
    idx = np.rint(CENTRE + xy / PITCH).astype(np.int64)
    ok = ((idx >= 0) & (idx < NPIX)).all(1)
    m = NPIX // cell
    flat = jet[ok] * m * m + (idx[ok, 0] // cell) * m + idx[ok, 1] // cell
    return np.bincount(flat, weights=e[ok], minlength=n * m * m).reshape(n, m, m)


def _spread3(img: np.ndarray, a: float) -> np.ndarray:
    """Separable 3x3 lateral spread [a, 1-2a, a] ⊗ [a, 1-2a, a] (energy at the border is lost)."""
    out = img * (1 - 2 * a)
    out[:, 1:] += a * img[:, :-1]
    out[:, :-1] += a * img[:, 1:]
    res = out * (1 - 2 * a)
    res[:, :, 1:] += a * out[:, :, :-1]
    res[:, :, :-1] += a * out[:, :, 1:]
    return res


def _towers(img: np.ndarray) -> np.ndarray:
    n = len(img)
    return img.reshape(n, NTOW, 5, NTOW, 5).sum((2, 4))


def _expand(tow: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(tow, 5, axis=1), 5, axis=2)


def _ecal(rng, n, dep) -> np.ndarray:
    """ECAL crystals: 3x3 shower spread, noise, selective readout (full 5x5 towers) + zero suppression."""
    img = _spread3(_bin(n, *dep, cell=1), 0.12) + rng.normal(0.0, 0.04, (n, NPIX, NPIX))
    tow = _towers(img)
    hot = tow > 20.0
    near = hot.copy()
    near[:, 1:] |= hot[:, :-1]
    near[:, :-1] |= hot[:, 1:]
    near[:, :, 1:] |= near[:, :, :-1].copy()
    near[:, :, :-1] |= near[:, :, 1:].copy()
    full = _expand((tow > 4.0) | near)
    return np.where(full | (img > 0.12), img, 0.0)


def _hcal(rng, n, dep) -> np.ndarray:
    """HCAL towers: 3x3-tower spread, noise σ 0.2 GeV, threshold 0.8 GeV, stored as 5x5 blocks of E/25."""
    tow = _spread3(_bin(n, *dep, cell=5), 0.1) + rng.normal(0.0, 0.2, (n, NTOW, NTOW))
    tow = np.where(tow > 0.8, tow, 0.0)
    return _expand(tow.astype(np.float32) / np.float32(25.0))


def toy_jets(
    n: int, seed: int = 0, *, pt_range=(400.0, 1000.0), label: float = 1.0, core_scale: float = 1.0, chunk: int = 256
) -> dict:
    """``n`` toy top jets: {"images" float32 (n,3,125,125), "pt" f64 GeV, "m0" f64 GeV, "y" f32}.

    Deterministic in ``seed`` (and ``chunk``). ``core_scale`` multiplies the explicit core energy
    (0 = the known defect of a generator without the 20–30 GeV core). ~1.2 ms per jet on one core.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 3, NPIX, NPIX), dtype=np.float32)
    pt, m0 = np.zeros(n), np.zeros(n)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        p, z, pos, mass = _kinematics(rng, m, pt_range)
        pt[s : s + m], m0[s : s + m] = p, mass
        # the core is one physical object (the leading particles) seen by all channels: common fluctuation
        core_factor = core_scale * rng.lognormal(0.0, 0.2, m)
        deps = [_deposits(rng, p, z, pos, c, core_factor) for c in range(3)]
        images[s : s + m, 0] = _bin(m, *deps[0], cell=1)
        images[s : s + m, 1] = _ecal(rng, m, deps[1])
        images[s : s + m, 2] = _hcal(rng, m, deps[2])
    return {"images": images, "pt": pt, "m0": m0, "y": np.full(n, label, dtype=np.float32)}


# ----------------------------------------------------------------------------- distortions
def scale_channel(images: np.ndarray, c: int, f: float) -> np.ndarray:
    """Copy of ``images`` with channel ``c`` (0 Tracks, 1 ECAL, 2 HCAL) multiplied by ``f``."""
    out = np.array(images, dtype=np.float32, copy=True)
    out[:, c] *= np.float32(f)
    return out


def tracks_scale(images: np.ndarray, f: float = 0.8) -> np.ndarray:
    """Tracks energy scaled by ``f`` (default −20 %)."""
    return scale_channel(images, 0, f)


def move_core_energy(
    images: np.ndarray, frac: float = 0.10, channel: int = 1, *, of: str = "core", r_core=0.05, r_out=0.2
) -> np.ndarray:
    """Move energy of ``channel`` from the core (R < ``r_core``) to the outside (R > ``r_out``).

    Per jet the amount moved is ``frac`` × the channel's positive energy within R < r_core
    (``of="core"``) or ``frac`` × its total positive energy (``of="total"``, capped at the core energy).
    Positive core pixels lose it in proportion to their energy; positive pixels at R > r_out gain it in
    proportion to theirs (no new pixels: multiplicities are unchanged). The channel's total energy is
    conserved (jets without positive energy at R > r_out are left unchanged).
    """
    if of not in ("core", "total"):
        raise ValueError(f"of must be 'core' or 'total', got {of!r}")
    out = np.array(images, dtype=np.float32, copy=True)
    x = out[:, channel].astype(np.float64)
    pos = np.maximum(x, 0.0)
    r = _pixel_radius()
    inner, outer = r < r_core, r > r_out
    e_core, e_out = (pos * inner).sum((1, 2)), (pos * outer).sum((1, 2))
    amount = frac * (e_core if of == "core" else pos.sum((1, 2)))
    amount = np.where(e_out > 0, np.minimum(amount, e_core), 0.0)
    f_in = 1.0 - amount / np.where(e_core > 0, e_core, 1.0)
    f_out = 1.0 + amount / np.where(e_out > 0, e_out, 1.0)
    fac = np.where(inner, f_in[:, None, None], np.where(outer, f_out[:, None, None], 1.0))
    out[:, channel] = np.where(x > 0, x * fac, x).astype(np.float32)
    return out


def shuffle_conditions(jets: dict, seed: int = 0) -> dict:
    """Same images, with (pt, m0, y) permuted jointly across jets: a generator that ignores its conditions."""
    perm = np.random.default_rng(seed).permutation(len(jets["pt"]))
    return {"images": jets["images"], **{k: np.asarray(jets[k])[perm] for k in ("pt", "m0", "y")}}


def mode_collapse(jets: dict, k: int = 10, n: int | None = None, seed: int = 0) -> dict:
    """``n`` jets (default: as many as ``jets``), each a copy (image and conditions) of one of ``k`` jets."""
    n = len(jets["pt"]) if n is None else n
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(jets["pt"]), size=k, replace=False)
    idx = chosen[rng.integers(0, k, n)]
    return {key: np.asarray(jets[key])[idx] for key in ("images", "pt", "m0", "y")}


def take(jets: dict, idx) -> dict:
    """Subset of a jets dict (``idx``: slice, index array or boolean mask)."""
    return {key: np.asarray(jets[key])[idx] for key in ("images", "pt", "m0", "y")}
