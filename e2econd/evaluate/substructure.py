"""Jet substructure and core observables from the image deposits, vectorised over many jets.

- Core energy ``core<RRR>_<c>``: energy (GeV) of channel c within R < r of the jet axis, for
  r in :data:`CORE_RADII` (0.05, 0.1, 0.2; RRR = 100·r). The axis is the image centre (E2E centres
  the image on the jet). Pixel centres decide membership; HCAL pixels hold tower energy / 25, so a
  tower counts with the part of its 5×5 block inside the disc. Negative pixels are included (as in
  the channel totals).
- N-subjettiness τ1, τ2, τ3 (β = 1, R0 = :data:`R0` = 0.8) of the calorimeter deposits: ECAL
  crystals and HCAL towers (tower centre), positive energies, the :data:`TAU_DEPOSITS` most
  energetic per jet (like JetNet's 30 particles, but more since a calorimeter jet has ~700):
  τN = Σ_i E_i min_k ΔR_ik / (R0 Σ_i E_i). τ21 = τ2/τ1, τ32 = τ3/τ2 (0 where the denominator is 0).

  Axes: instead of exclusive-kT + one-pass minimisation (fastjet's default) we minimise τN
  directly, batched in numpy: seeds = the hottest deposit, then repeatedly the deposit with the
  largest E_i · min_k ΔR_ik (its contribution to the current τ); then :data:`TAU_ITERS` Lloyd
  iterations (assign each deposit to its nearest axis, move each axis by a Weiszfeld step towards
  its cluster's energy-weighted geometric median, the β = 1 optimum). Every step does not increase
  τN, and the value is an objective value at real axes, i.e. an upper bound on the exact minimum;
  tests compare it with a brute-force minimum over all partitions of tiny jets.
"""

from __future__ import annotations

import numpy as np

from e2econd.data.geometry import CENTRE, CHANNELS, PIXEL, TOWER

#: radii (Δη/Δφ units) of the core energies
CORE_RADII = (0.05, 0.1, 0.2)
#: jet radius used to normalise τN
R0 = 0.8
#: calorimeter deposits per jet that enter τN (most energetic first)
TAU_DEPOSITS = 128
#: Lloyd/Weiszfeld iterations of the axis minimisation
TAU_ITERS = 12
#: feature names added by :func:`substructure_features`
TAU_NAMES = ("tau1", "tau2", "tau3", "tau21", "tau32")


def core_name(r: float, channel: str) -> str:
    return f"core{round(100 * r):03d}_{channel}"


CORE_NAMES = tuple(core_name(r, c) for r in CORE_RADII for c in CHANNELS)

_idx = (np.arange(125) - CENTRE) * PIXEL
_R = np.sqrt(_idx[:, None] ** 2 + _idx[None, :] ** 2)
#: (125·125, len(CORE_RADII)) float32 disc masks for one matmul
_DISCS = np.stack([(_R < r).ravel() for r in CORE_RADII], axis=1).astype(np.float32)


def core_energies(images: np.ndarray) -> dict[str, np.ndarray]:
    """Energy within R < r of the image centre per channel: images (n, 3, 125, 125) -> {name: (n,) GeV}."""
    n = len(images)
    flat = np.asarray(images, np.float32).reshape(n, 3, -1)
    sums = (flat @ _DISCS).astype(np.float64)  # (n, 3, n_radii)
    return {core_name(r, c): sums[:, i, j] for j, r in enumerate(CORE_RADII) for i, c in enumerate(CHANNELS)}


def _dist(pts: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """(n, K, 2), (n, A, 2) -> (n, K, A) Euclidean (Δη, Δφ) distances."""
    d = pts[:, :, None, :] - axes[:, None, :, :]
    return np.sqrt((d**2).sum(-1))


def _seed_axes(pts, e, n_axes):
    n = len(pts)
    rows = np.arange(n)
    axes = [pts[rows, np.argmax(e, axis=1)]]
    for _ in range(1, n_axes):
        dmin = _dist(pts, np.stack(axes, axis=1)).min(axis=2)
        axes.append(pts[rows, np.argmax(e * dmin, axis=1)])
    return np.stack(axes, axis=1)


def _tau(pts, e, axes, norm):
    return (e * _dist(pts, axes).min(axis=2)).sum(axis=1) / norm


def _cluster_step(pts, e, axes, weiszfeld: bool):
    """Assign deposits to their nearest axis; move each axis to its cluster's weighted mean (Lloyd) or by one
    Weiszfeld step (β = 1; deposits sitting on the axis are left out of the step, the classic singularity)."""
    n_axes = axes.shape[1]
    d = _dist(pts, axes)
    member = np.argmin(d, axis=2)[:, :, None] == np.arange(n_axes)
    w = e[:, :, None] * member
    if weiszfeld:
        w = np.where(d > 1e-9, w / np.maximum(d, 1e-9), 0.0)
    wsum = w.sum(axis=1)
    new = np.einsum("nka,nkc->nac", w, pts) / np.where(wsum > 0, wsum, 1.0)[..., None]
    return np.where(wsum[..., None] > 0, new, axes)


def minimise_axes(pts: np.ndarray, e: np.ndarray, n_axes: int, iters: int = TAU_ITERS) -> np.ndarray:
    """Axes (n, n_axes, 2) that (locally) minimise Σ E_i min_k ΔR_ik; pts (n, K, 2), e (n, K) ≥ 0 (0 = padding).

    Seeds, two Lloyd steps, then ``iters`` Weiszfeld steps; the best axes seen are returned.
    """
    axes = _seed_axes(pts, e, n_axes)
    best = axes.copy()
    best_val = (e * _dist(pts, axes).min(axis=2)).sum(axis=1)
    for it in range(iters + 2):
        axes = _cluster_step(pts, e, axes, weiszfeld=it >= 2)
        val = (e * _dist(pts, axes).min(axis=2)).sum(axis=1)
        better = val < best_val
        best[better], best_val[better] = axes[better], val[better]
    return best


def calo_deposits(
    ecal: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    hcal: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n_jets: int,
    k: int = TAU_DEPOSITS,
) -> tuple[np.ndarray, np.ndarray]:
    """Padded top-k calorimeter deposits: ECAL crystals and HCAL towers (tower centre), positive only.

    ``ecal``/``hcal``: (jet, ieta, iphi, e) flat hit arrays (HCAL ieta/iphi = the tower's first pixel).
    Returns points (n_jets, k, 2) [Δη, Δφ] and energies (n_jets, k) (0 = padding).
    """
    jet = np.concatenate([ecal[0], hcal[0]])
    ie = np.concatenate([ecal[1], hcal[1] + (TOWER - 1) / 2.0])
    ip = np.concatenate([ecal[2], hcal[2] + (TOWER - 1) / 2.0])
    en = np.concatenate([ecal[3], hcal[3]]).astype(np.float64)
    return top_k(jet, (ie - CENTRE) * PIXEL, (ip - CENTRE) * PIXEL, en, n_jets, k)


def top_k(jet, deta, dphi, e, n_jets: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most energetic positive deposits per jet, padded: points (n_jets, k, 2), energies (n_jets, k)."""
    jet, e = np.asarray(jet, np.int64), np.asarray(e, np.float64)
    pos = e > 0
    jet, deta, dphi, e = jet[pos], np.asarray(deta)[pos], np.asarray(dphi)[pos], e[pos]
    order = np.lexsort((-e, jet))
    jet, deta, dphi, e = jet[order], deta[order], dphi[order], e[order]
    starts = np.searchsorted(jet, np.arange(n_jets))
    rank = np.arange(len(jet)) - starts[jet]
    keep = rank < k
    pts = np.zeros((n_jets, k, 2))
    ek = np.zeros((n_jets, k))
    pts[jet[keep], rank[keep], 0] = deta[keep]
    pts[jet[keep], rank[keep], 1] = dphi[keep]
    ek[jet[keep], rank[keep]] = e[keep]
    return pts, ek


def nsubjettiness(pts: np.ndarray, e: np.ndarray, n_max: int = 3, R0: float = R0) -> np.ndarray:
    """τ1..τ_{n_max} (β = 1) of padded deposits pts (n, K, 2), e (n, K) -> (n, n_max); 0 for empty jets."""
    norm = R0 * e.sum(axis=1)
    safe = np.where(norm > 0, norm, 1.0)
    out = np.zeros((len(e), n_max))
    for N in range(1, n_max + 1):
        if pts.shape[1] == 0:
            break
        axes = minimise_axes(pts, e, N)
        out[:, N - 1] = np.where(norm > 0, _tau(pts, e, axes, safe), 0.0)
    return out


def _ratio(a, b):
    out = np.zeros_like(a)
    np.divide(a, b, out=out, where=b > 0)
    return out


def substructure_features(pts: np.ndarray, e: np.ndarray) -> dict[str, np.ndarray]:
    """{tau1, tau2, tau3, tau21, tau32} (n,) from padded calorimeter deposits."""
    t = nsubjettiness(pts, e, 3)
    return {
        "tau1": t[:, 0],
        "tau2": t[:, 1],
        "tau3": t[:, 2],
        "tau21": _ratio(t[:, 1], t[:, 0]),
        "tau32": _ratio(t[:, 2], t[:, 1]),
    }
