"""Snapping continuous hits (model output) to the crystal / tower grid: against a per-hit reference,
the identity on grid hits, batch = per jet, and collisions moved to free cells or summed."""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.data.geometry import CENTRE, PIXEL
from e2econd.data.hits import FlatHits, hits_to_image, image_to_hits
from e2econd.data.snap import snap, snap_batch


def as_dict(hs) -> dict:
    return {(int(a), int(b), int(s)): float(e) for a, b, s, e in zip(hs.ieta, hs.iphi, hs.size, hs.e)}


def _snap_reference(channel, deta, dphi, e):
    d = {}
    for a, b, v in zip(deta, dphi, e):
        x, y = a / PIXEL + CENTRE, b / PIXEL + CENTRE
        if channel == 2:
            ke, kp = int(np.floor((x + 0.5) / 5)), int(np.floor((y + 0.5) / 5))
            if 0 <= ke < 25 and 0 <= kp < 25:
                d[(5 * ke, 5 * kp, 5)] = d.get((5 * ke, 5 * kp, 5), 0.0) + float(v)
        else:
            ie, ip = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
            if 0 <= ie < 125 and 0 <= ip < 125:
                d[(ie, ip, 1)] = d.get((ie, ip, 1), 0.0) + float(v)
    return d


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_snap_against_reference(channel):
    rng = np.random.default_rng(channel)
    n = 400
    deta = rng.normal(0, 0.4, n)
    dphi = rng.normal(0, 0.4, n)
    deta[:50] = np.round(deta[:50] / PIXEL) * PIXEL  # exactly on cell centres
    deta[50:60] = deta[40:50]  # duplicates: summed
    dphi[50:60] = dphi[40:50]
    e = rng.lognormal(0, 1, n)
    hs = snap(channel, deta, dphi, e)
    assert as_dict(hs) == pytest.approx(_snap_reference(channel, deta, dphi, e), rel=1e-6)
    # out-of-image energy is what is missing
    assert float(hs.e.astype(np.float64).sum()) <= e.sum()
    # snapping hits that are already on the grid is the identity
    img = hits_to_image([hs if c == channel else snap(c, [], [], []) for c in range(3)])
    again = image_to_hits(img)[channel]
    if channel == 2:  # tower centres snap back to themselves
        assert as_dict(snap(2, again.deta, again.dphi, again.e)) == pytest.approx(as_dict(again), rel=1e-6)
    else:
        assert as_dict(snap(channel, again.deta, again.dphi, again.e)) == as_dict(again)


def test_snap_batch_matches_per_jet():
    rng = np.random.default_rng(5)
    counts = np.array([5, 0, 30, 1])
    off = np.concatenate([[0], np.cumsum(counts)])
    deta, dphi, e = rng.normal(0, 1.0, off[-1]), rng.normal(0, 1.0, off[-1]), rng.random(off[-1])
    for c in range(3):
        fh = snap_batch(c, deta, dphi, e, off)
        assert isinstance(fh, FlatHits) and fh.n_jets == 4
        for i in range(4):
            a, b = off[i], off[i + 1]
            assert as_dict(fh.hitset(i)) == as_dict(snap(c, deta[a:b], dphi[a:b], e[a:b]))
            outside = e[a:b].sum() - float(fh.hitset(i).e.astype(np.float64).sum())
            assert fh.dropped[i] == pytest.approx(outside, abs=1e-5)


def test_snap_move_gives_every_hit_its_own_cell():
    from e2econd.data.geometry import PIXEL

    # jet 0: two hits on crystal (62, 62); the weaker one sits slightly towards +phi -> moves to (62, 63)
    deta = np.array([0.0, 0.0, 0.3 * PIXEL])
    dphi = np.array([0.0, 0.3 * PIXEL, 0.0])
    e = np.array([5.0, 1.0, 2.0])
    offsets = np.array([0, 2, 3])
    summed = snap_batch(1, deta, dphi, e, offsets, collisions="sum")
    moved = snap_batch(1, deta, dphi, e, offsets, collisions="move")
    assert summed.counts.tolist() == [1, 1] and moved.counts.tolist() == [2, 1]
    h0 = moved.hitset(0)
    cells = sorted(zip(h0.ieta.tolist(), h0.iphi.tolist(), h0.e.tolist()))
    assert cells == [(62, 62, 5.0), (62, 63, 1.0)]
    # jet 1 has its own grid: (62, 62) is free there although jet 0 uses it
    h1 = moved.hitset(1)
    assert (h1.ieta[0], h1.iphi[0], h1.e[0]) == (62, 62, 2.0)


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_snap_move_preserves_hits_and_energy(channel):
    from e2econd.data.geometry import PIXEL

    rng = np.random.default_rng(channel)
    n_jets, per_jet = 5, 300
    width = 6 if channel != 2 else 25  # pixels: dense cores force many collisions
    deta = rng.normal(0, width * PIXEL, n_jets * per_jet)
    dphi = rng.normal(0, width * PIXEL, n_jets * per_jet)
    e = rng.exponential(1.0, n_jets * per_jet)
    offsets = np.arange(n_jets + 1) * per_jet
    moved = snap_batch(channel, deta, dphi, e, offsets, collisions="move")
    summed = snap_batch(channel, deta, dphi, e, offsets, collisions="sum")
    assert summed.counts.sum() < moved.counts.sum()  # there were collisions to resolve
    for j in range(n_jets):
        h = moved.hitset(j)
        cells = set(zip(h.ieta.tolist(), h.iphi.tolist()))
        assert len(cells) == len(h)  # distinct cells
        np.testing.assert_allclose(h.e.astype(np.float64).sum(), summed.hitset(j).e.astype(np.float64).sum(), rtol=1e-5)
    if channel != 2:  # crystals: room for every hit within reach
        assert moved.counts.tolist() == [
            per_jet - int((~np.isfinite(e[offsets[j] : offsets[j + 1]])).sum()) for j in range(n_jets)
        ]
