"""Model output -> the crystal / tower grid: continuous (Δη, Δφ, E) hits snapped to cells.

``snap_batch`` (many jets, vectorised; used by ``e2econd sample``) and ``snap`` (one jet): each hit
goes to the nearest crystal (HCAL: the tower containing the point, ``size = 5``); hits outside the
image are dropped (their energy counted in ``dropped``). Two hits of a jet on one cell are summed
(``collisions="sum"``) or the weaker moves to the nearest free cell (``"move"``, as in the data, where
every hit is its own cell).
"""

from __future__ import annotations

import numpy as np

from e2econd.data.geometry import CENTRE, HCAL, IMAGE_SIZE, N_TOWERS, PIXEL, TOWER
from e2econd.data.hits import _NPIX, DELTA_PIXEL, DELTA_TOWER, FlatHits, HitSet
from e2econd.data.jagged import offsets_from_counts


def _snap_cells(channel: int, deta, dphi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Continuous Δη/Δφ -> (ieta, iphi) of the grid cell (HCAL: tower's first pixel) and validity."""
    x = np.asarray(deta, np.float64) / PIXEL + CENTRE
    y = np.asarray(dphi, np.float64) / PIXEL + CENTRE
    if channel == HCAL:
        ke = np.floor((x + 0.5) / TOWER)
        kp = np.floor((y + 0.5) / TOWER)
        valid = (ke >= 0) & (ke < N_TOWERS) & (kp >= 0) & (kp < N_TOWERS)
        return (ke * TOWER), (kp * TOWER), valid
    ie = np.floor(x + 0.5)
    ip = np.floor(y + 0.5)
    valid = (ie >= 0) & (ie < IMAGE_SIZE) & (ip >= 0) & (ip < IMAGE_SIZE)
    return ie, ip, valid


COLLISIONS = ("move", "sum")
_RING = 8  # cells searched around an occupied cell for a free one (Chebyshev radius)


def _move_collisions(jet, cell, pos, e, grid: int) -> np.ndarray:
    """Give every hit of a jet its own cell: the most energetic hit keeps a contested cell and
    the others move to the free cell nearest to their continuous position (within ``_RING``).

    ``cell`` int64 (k,) flat cell index on a grid x grid lattice, ``pos`` (k, 2) continuous
    position in cell units. Hits with no free cell in reach keep theirs (summed later).
    """
    key = jet * (grid * grid) + cell
    order = np.lexsort((-np.abs(e), key))
    first = np.ones(order.size, bool)
    first[1:] = key[order][1:] != key[order][:-1]
    losers = order[~first]
    if losers.size == 0:
        return cell
    cell = cell.copy()
    occupied = set(key[order[first]].tolist())
    r = np.arange(-_RING, _RING + 1)
    off = np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    for h in losers[np.argsort(-np.abs(e[losers]), kind="stable")]:  # energetic hits choose first
        c0 = np.divmod(cell[h], grid)
        cand = np.asarray(c0) + off
        ok = (cand >= 0).all(1) & (cand < grid).all(1)
        cand = cand[ok]
        d = ((cand + 0.0 - pos[h]) ** 2).sum(1)
        base = int(jet[h]) * grid * grid
        for j in np.argsort(d, kind="stable"):
            k = base + int(cand[j, 0]) * grid + int(cand[j, 1])
            if k not in occupied:
                occupied.add(k)
                cell[h] = k - base
                break
    return cell


def snap_batch(channel: int, deta, dphi, e, offsets, collisions: str = "sum") -> FlatHits:
    """Model output (continuous Δη, Δφ, E GeV) of many jets -> grid hits, vectorised.

    Hits land on the nearest crystal (HCAL: the tower containing them, ``size`` 5); hits outside
    the image are dropped (their energy is in ``dropped``). ``offsets`` (n+1,) delimit the jets.
    Two hits of a jet on one cell: ``collisions="sum"`` adds them up (float64, rounded once to
    float32); ``"move"`` gives the less energetic one the nearest free cell instead, since in
    the data every hit of a jet is a distinct cell — the generated multiplicity then equals the
    sampled one.
    """
    if collisions not in COLLISIONS:
        raise ValueError(f"collisions must be one of {COLLISIONS}, got {collisions!r}")
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    e = np.asarray(e, np.float64).reshape(-1)
    jet = np.repeat(np.arange(n), np.diff(offsets))
    ie, ip, valid = _snap_cells(channel, deta, dphi)
    ie, ip, valid = ie.reshape(-1), ip.reshape(-1), valid.reshape(-1)
    valid &= np.isfinite(e)
    if collisions == "move" and valid.any():
        grid, unit = (N_TOWERS, TOWER) if channel == HCAL else (IMAGE_SIZE, 1)
        pos = np.stack(
            [
                np.asarray(deta, np.float64).reshape(-1) / PIXEL + CENTRE,
                np.asarray(dphi, np.float64).reshape(-1) / PIXEL + CENTRE,
            ],
            1,
        )[valid]
        if channel == HCAL:
            pos = (pos + 0.5) / TOWER - 0.5  # tower units, tower centres at integers
        cell = (ie[valid] // unit).astype(np.int64) * grid + (ip[valid] // unit).astype(np.int64)
        cell = _move_collisions(jet[valid], cell, pos, e[valid], grid)
        ie[valid], ip[valid] = (cell // grid) * unit, (cell % grid) * unit
    dropped = np.bincount(jet[~valid], weights=np.where(np.isfinite(e[~valid]), e[~valid], 0.0), minlength=n)
    key = jet[valid] * _NPIX + ie[valid].astype(np.int64) * IMAGE_SIZE + ip[valid].astype(np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    esum = np.bincount(inv, weights=e[valid], minlength=uniq.size).astype(np.float32)
    ujet, pix = np.divmod(uniq, _NPIX)
    uie, uip = np.divmod(pix, IMAGE_SIZE)
    if channel == HCAL:
        size = np.full(uniq.size, TOWER, np.int8)
        de, dp = DELTA_TOWER[uie], DELTA_TOWER[uip]
    else:
        size = np.ones(uniq.size, np.int8)
        de, dp = DELTA_PIXEL[uie], DELTA_PIXEL[uip]
    counts = np.bincount(ujet, minlength=n)
    return FlatHits(
        uie.astype(np.int16), uip.astype(np.int16), size, de, dp, esum, offsets_from_counts(counts), dropped
    )


def snap(channel: int, deta, dphi, e) -> HitSet:
    """One jet's continuous hits of one channel -> grid :class:`HitSet` (see :func:`snap_batch`)."""
    e = np.asarray(e).reshape(-1)
    return snap_batch(channel, deta, dphi, e, np.array([0, e.size])).hitset(0)
