"""E2E images <-> variable-size hit sets, lossless.

A hit is one non-zero cell of a channel: pixel indices ``ieta, iphi``, ``size`` (1 = one crystal,
5 = one HCAL tower of 5x5 crystals), offsets from the jet axis ``deta, dphi`` (0.0174 per pixel;
tower hits sit at the tower centre) and energy ``e`` in GeV.

HCAL: each 5x5 block (aligned to multiples of 5) whose 25 pixels are all equal becomes one tower
hit carrying the tower energy, the sum of its 25 float32 pixels. That sum (25 x pixel) is exact in
float64 but not always in float32, so HCAL energies are float64: ``e / 25`` gives back the pixel
value bit-for-bit and ``hits_to_image`` reproduces every kept pixel exactly (Tracks and ECAL
energies are the float32 pixel values themselves). Blocks that are not uniform (other producers,
detector edges) keep their pixels as size-1 hits and are counted.

Zero suppression: a pixel is kept when ``|E| > threshold`` (default 0.0: every non-zero pixel,
so the round trip is lossless); ``negatives="drop"`` also drops ``E < 0``. ``max_hits`` keeps the
N most energetic hits per jet and channel and records the energy removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from e2econd.data.geometry import CENTRE, HCAL, IMAGE_SIZE, N_TOWERS, PIXEL, TOWER
from e2econd.data.jagged import Jagged, offsets_from_counts

_NPIX = IMAGE_SIZE * IMAGE_SIZE
#: Δ (η or φ) of pixel index i, float32, and of a tower whose first pixel is i (centre i+2)
DELTA_PIXEL = ((np.arange(IMAGE_SIZE, dtype=np.float64) - CENTRE) * PIXEL).astype(np.float32)
DELTA_TOWER = ((np.arange(IMAGE_SIZE, dtype=np.float64) + TOWER // 2 - CENTRE) * PIXEL).astype(np.float32)
_F25 = np.float32(TOWER * TOWER)
NEGATIVES = ("keep", "drop")


@dataclass
class HitSet:
    """Hits of one channel of one jet (all arrays the same length)."""

    ieta: np.ndarray  # int16, pixel index (towers: first pixel of the block)
    iphi: np.ndarray  # int16
    size: np.ndarray  # int8, 1 or 5
    deta: np.ndarray  # float32, Δη from the jet axis
    dphi: np.ndarray  # float32, Δφ
    e: np.ndarray  # GeV; float32 (tracks, ecal) or float64 (hcal tower sums, exact)

    def __len__(self) -> int:
        return int(self.e.shape[0])

    @classmethod
    def empty(cls) -> HitSet:
        z = np.zeros(0, np.int16)
        f = np.zeros(0, np.float32)
        return cls(z, z.copy(), np.zeros(0, np.int8), f, f.copy(), f.copy())


@dataclass
class FlatHits(Jagged):
    """Hits of one channel for many jets: flat arrays, jet ``i`` owns ``[offsets[i], offsets[i+1])``.
    Field dtypes as in :class:`HitSet`.

    ``dropped`` (float64, GeV per jet) is the energy removed by ``max_hits``.
    """

    ieta: np.ndarray
    iphi: np.ndarray
    size: np.ndarray
    deta: np.ndarray
    dphi: np.ndarray
    e: np.ndarray
    offsets: np.ndarray  # int64 (n+1,)
    dropped: np.ndarray = field(default=None)  # float64 (n,)

    def __post_init__(self):
        if self.dropped is None:
            self.dropped = np.zeros(len(self.offsets) - 1, np.float64)

    def sums(self) -> np.ndarray:
        """Energy sum per jet (float64, GeV)."""
        return np.bincount(self.jet, weights=self.e.astype(np.float64), minlength=self.n_jets)

    def hitset(self, i: int) -> HitSet:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return HitSet(self.ieta[a:b], self.iphi[a:b], self.size[a:b], self.deta[a:b], self.dphi[a:b], self.e[a:b])

    def select(self, mask: np.ndarray) -> FlatHits:
        """Keep hits where ``mask`` is True (jets unchanged)."""
        counts = np.bincount(self.jet[mask], minlength=self.n_jets)
        return FlatHits(
            self.ieta[mask],
            self.iphi[mask],
            self.size[mask],
            self.deta[mask],
            self.dphi[mask],
            self.e[mask],
            offsets_from_counts(counts),
            self.dropped,
        )

    def take_jets(self, jets: np.ndarray) -> FlatHits:
        """Sub-batch of jets (in the given order)."""
        gather, offsets = self._jet_rows(jets)
        return FlatHits(
            self.ieta[gather],
            self.iphi[gather],
            self.size[gather],
            self.deta[gather],
            self.dphi[gather],
            self.e[gather],
            offsets,
            self.dropped[np.asarray(jets, dtype=np.int64)],
        )

    @classmethod
    def from_hitsets(cls, hitsets: list[HitSet]) -> FlatHits:
        counts = np.array([len(h) for h in hitsets], dtype=np.int64)

        def cat(name, dt):
            parts = [np.asarray(getattr(h, name), dt) for h in hitsets]
            return np.concatenate(parts) if parts else np.zeros(0, dt)

        return cls(
            cat("ieta", np.int16),
            cat("iphi", np.int16),
            cat("size", np.int8),
            cat("deta", np.float32),
            cat("dphi", np.float32),
            np.concatenate([h.e for h in hitsets]) if hitsets else np.zeros(0, np.float32),
            offsets_from_counts(counts),
        )


@dataclass
class BatchHits:
    """Hit sets of many jets: one :class:`FlatHits` per channel (tracks, ecal, hcal).

    ``nonuniform_blocks`` (int64 per jet): HCAL 5x5 blocks kept as pixels because their pixels
    differ.
    """

    channels: list[FlatHits]
    nonuniform_blocks: np.ndarray

    @property
    def n_jets(self) -> int:
        return self.channels[0].n_jets

    def hitsets(self, i: int) -> list[HitSet]:
        return [ch.hitset(i) for ch in self.channels]


def _keep_mask(x: np.ndarray, threshold: float, negatives: str) -> np.ndarray:
    if negatives == "drop":
        return x > threshold
    if threshold == 0.0:
        return x != 0
    return np.abs(x) > threshold


def tower_energy(pixel: np.ndarray) -> np.ndarray:
    """Tower energy (float64 GeV) of a uniform block: 25 x its float32 pixel value, exact in
    float64, so ``float32(E / 25)`` is the pixel bit-for-bit."""
    return np.asarray(pixel, dtype=np.float32).astype(np.float64) * float(TOWER * TOWER)


def _truncate(fh: FlatHits, max_hits: int) -> FlatHits:
    """Keep the ``max_hits`` highest-energy hits of each jet (ties: earlier hit), record the rest."""
    counts = fh.counts
    if not (counts > max_hits).any():
        return fh
    jet = fh.jet
    order = np.lexsort((-fh.e.astype(np.float64), jet))  # by jet, then energy descending (stable)
    rank = np.arange(order.size) - fh.offsets[jet[order]]
    keep = np.zeros(order.size, bool)
    keep[order[rank < max_hits]] = True
    dropped = fh.dropped + np.bincount(jet[~keep], weights=fh.e[~keep].astype(np.float64), minlength=fh.n_jets)
    out = fh.select(keep)
    out.dropped = dropped
    return out


def images_to_hits(
    images: np.ndarray, threshold: float = 0.0, negatives: str = "keep", max_hits: int | None = None
) -> BatchHits:
    """Vectorised image -> hit sets for a batch: images float32 (n,3,125,125) GeV.

    Hits of each jet come in row-major (ieta, iphi) order of their first pixel.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    if not (threshold >= 0.0 and np.isfinite(threshold)):
        raise ValueError(f"threshold must be a finite number >= 0 GeV, got {threshold}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must be (n,3,125,125), got {images.shape}")
    n = images.shape[0]
    channels = []
    nonuniform = np.zeros(n, np.int64)
    for c in range(3):
        x = images[:, c]
        if c != HCAL:
            flat = np.flatnonzero(_keep_mask(x, threshold, negatives))
            jet, pix = np.divmod(flat, _NPIX)
            ie, ip = np.divmod(pix, IMAGE_SIZE)
            e = x.reshape(-1)[flat]
            size = np.ones(flat.size, np.int8)
            deta, dphi = DELTA_PIXEL[ie], DELTA_PIXEL[ip]
        else:
            blocks = x.reshape(n, N_TOWERS, TOWER, N_TOWERS, TOWER)
            first = blocks[:, :, 0, :, 0]  # (n,25,25)
            uniform = (blocks == first[:, :, None, :, None]).all(axis=(2, 4))
            tower_sel = uniform & _keep_mask(first, threshold, negatives)
            nonuni = ~uniform
            nonuniform += nonuni.sum(axis=(1, 2))
            marker = _keep_mask(blocks, threshold, negatives) & nonuni[:, :, None, :, None]
            marker = marker.reshape(n, IMAGE_SIZE, IMAGE_SIZE)
            marker[:, ::TOWER, ::TOWER] |= tower_sel
            flat = np.flatnonzero(marker)
            jet, pix = np.divmod(flat, _NPIX)
            ie, ip = np.divmod(pix, IMAGE_SIZE)
            tower_flat = (jet * N_TOWERS + ie // TOWER) * N_TOWERS + ip // TOWER
            is_tower = tower_sel.reshape(-1)[tower_flat] & (ie % TOWER == 0) & (ip % TOWER == 0)
            e = x.reshape(-1)[flat].astype(np.float64)
            e[is_tower] = tower_energy(first.reshape(-1)[tower_flat[is_tower]])
            size = np.where(is_tower, np.int8(TOWER), np.int8(1)).astype(np.int8)
            deta = np.where(is_tower, DELTA_TOWER[ie], DELTA_PIXEL[ie])
            dphi = np.where(is_tower, DELTA_TOWER[ip], DELTA_PIXEL[ip])
        counts = np.bincount(jet, minlength=n)
        fh = FlatHits(
            ie.astype(np.int16),
            ip.astype(np.int16),
            size,
            deta.astype(np.float32),
            dphi.astype(np.float32),
            e,
            offsets_from_counts(counts),
        )
        if max_hits is not None:
            fh = _truncate(fh, int(max_hits))
        channels.append(fh)
    return BatchHits(channels, nonuniform)


def image_to_hits(img: np.ndarray, threshold: float = 0.0, negatives: str = "keep") -> list[HitSet]:
    """One image (3,125,125) GeV -> a list of 3 :class:`HitSet` (tracks, ecal, hcal)."""
    img = np.asarray(img, dtype=np.float32)
    if img.shape != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"image must be (3,125,125), got {img.shape}")
    return images_to_hits(img[None], threshold, negatives).hitsets(0)


def _cell_values(fh_ieta, fh_iphi, size, e, jet) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel index within a (n,125,125) channel and float32 value of every pixel a hit covers."""
    ie = np.asarray(fh_ieta, np.int64)
    ip = np.asarray(fh_iphi, np.int64)
    e = np.asarray(e)
    if e.dtype != np.float64:
        e = e.astype(np.float32)
    size = np.asarray(size)
    single = size == 1
    base = np.asarray(jet, np.int64) * _NPIX
    idx_parts = [base[single] + ie[single] * IMAGE_SIZE + ip[single]]
    val_parts = [e[single].astype(np.float32)]
    tw = ~single
    if tw.any():
        off = (np.arange(TOWER)[:, None] * IMAGE_SIZE + np.arange(TOWER)[None, :]).reshape(-1)
        corner = base[tw] + ie[tw] * IMAGE_SIZE + ip[tw]
        idx_parts.append((corner[:, None] + off[None, :]).reshape(-1))
        # float64 tower sums: exact division; float32 energies (model output): float32 division
        per_pixel = (e[tw] / 25.0) if e.dtype == np.float64 else (e[tw] / _F25)
        val_parts.append(np.repeat(per_pixel.astype(np.float32), TOWER * TOWER))
    return np.concatenate(idx_parts), np.concatenate(val_parts)


def _scatter(out_channel: np.ndarray, idx: np.ndarray, val: np.ndarray) -> None:
    """out[idx] += val with float32 values; unique cells are written exactly, duplicates summed
    in float64 and rounded once."""
    flat = out_channel.reshape(-1)
    if idx.size == 0:
        return
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    dup = sidx[1:] == sidx[:-1]
    if not dup.any():
        flat[idx] += val
        return
    uniq, inv = np.unique(idx, return_inverse=True)
    sums = np.bincount(inv, weights=val.astype(np.float64), minlength=uniq.size)
    flat[uniq] = (flat[uniq].astype(np.float64) + sums).astype(np.float32)


def hits_to_image(hitsets: list[HitSet], out: np.ndarray | None = None) -> np.ndarray:
    """3 hit sets -> image float32 (3,125,125) GeV; HCAL towers re-expanded to 5x5 blocks of e/25,
    hits on the same cell summed."""
    if out is None:
        out = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for c, hs in enumerate(hitsets):
        idx, val = _cell_values(hs.ieta, hs.iphi, hs.size, hs.e, np.zeros(len(hs), np.int64))
        _scatter(out[c], idx, val)
    return out


def batch_hits_to_images(channels: list[FlatHits] | BatchHits, out: np.ndarray | None = None) -> np.ndarray:
    """Many jets' hits -> images float32 (n,3,125,125), vectorised (inverse of images_to_hits)."""
    if isinstance(channels, BatchHits):
        channels = channels.channels
    n = channels[0].n_jets
    if out is None:
        out = np.zeros((n, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for c, fh in enumerate(channels):
        idx, val = _cell_values(fh.ieta, fh.iphi, fh.size, fh.e, fh.jet)
        chan = np.ascontiguousarray(out[:, c])
        _scatter(chan, idx, val)
        out[:, c] = chan
    return out
