"""What ``evaluate`` keeps of a sample after streaming it once: per-jet features and sparse hits.

:func:`scan` reads the inputs chunk by chunk (:mod:`.inputs`) and keeps, for every jet, the
scalar features (:mod:`.features`, :mod:`.substructure`, :mod:`.fingerprints`), the conditions,
and its non-zero hits in a sparse form (Tracks/ECAL crystals, HCAL towers: ~6 kB per jet instead
of 188 kB dense), plus running sums for the plots (mean image, per-hit energy histograms). Every
later metric (nearest-neighbour EMD, per-hit distributions, the classifiers, memorisation) is
computed from these, so memory stays bounded by the number of jets, never by dense images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from e2econd.data.geometry import CENTRE, CHANNELS, IMAGE_SIZE, PIXEL, TOWER
from e2econd.errors import E2EInputError
from e2econd.evaluate import features as F
from e2econd.evaluate import fingerprints as FP
from e2econd.evaluate import substructure as S
from e2econd.evaluate.inputs import iter_images

#: log-spaced per-hit energy bins (GeV) of the per-hit energy plot
HIT_EDGES = np.geomspace(1e-3, 1e4, 71)
#: every per-jet scalar feature kept by :func:`scan`
ALL_FEATURES = (*F.FEATURE_NAMES, *S.CORE_NAMES, *S.TAU_NAMES, *FP.FINGERPRINT_NAMES)


@dataclass
class SparseHits:
    """Non-zero hits of one channel for many jets, CSR by jet. HCAL: towers (ieta, iphi = first pixel)."""

    offsets: np.ndarray  # int64 (n+1,)
    ieta: np.ndarray  # int16
    iphi: np.ndarray  # int16
    e: np.ndarray  # float32 GeV

    @staticmethod
    def concat(parts: list[SparseHits]) -> SparseHits:
        offs, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            offs.append(p.offsets[1:] + base)
            base += int(p.offsets[-1])
        cat = [np.concatenate([getattr(p, k) for p in parts]) if parts else np.zeros(0) for k in ("ieta", "iphi", "e")]
        return SparseHits(np.concatenate(offs), cat[0].astype(np.int16), cat[1].astype(np.int16), cat[2])

    def gather(self, idx) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Hits of jets ``idx`` as flat arrays (local jet index 0..len(idx)-1, ieta, iphi, e)."""
        idx = np.asarray(idx, np.int64)
        lo, hi = self.offsets[idx], self.offsets[idx + 1]
        n = hi - lo
        jet = np.repeat(np.arange(len(idx)), n)
        pos = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(int(n.sum()))
        return jet, self.ieta[pos].astype(np.int64), self.iphi[pos].astype(np.int64), self.e[pos]


def _sparse(x: np.ndarray) -> SparseHits:
    """(n, H, W) -> SparseHits of its non-zero cells (row-major per jet)."""
    j, i, k = np.nonzero(x)
    offs = np.zeros(len(x) + 1, np.int64)
    np.cumsum(np.bincount(j, minlength=len(x)), out=offs[1:])
    return SparseHits(offs, i.astype(np.int16), k.astype(np.int16), x[j, i, k].astype(np.float32))


@dataclass
class Sample:
    """One streamed sample: features and conditions of every jet, sparse hits, running sums."""

    paths: list[str]
    n: int
    feats: dict[str, np.ndarray] = field(default_factory=dict)
    pt: np.ndarray | None = None
    m0: np.ndarray | None = None
    y: np.ndarray | None = None
    hits: list[SparseHits] = field(default_factory=list)  # tracks, ecal (crystals), hcal (towers)
    image_sum: np.ndarray = field(default_factory=lambda: np.zeros((3, IMAGE_SIZE, IMAGE_SIZE)))
    hit_hist: np.ndarray = field(default_factory=lambda: np.zeros((3, len(HIT_EDGES) - 1)))
    hit_neg: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def mean_image(self) -> np.ndarray:
        return self.image_sum / max(self.n, 1)

    def images(self, idx) -> np.ndarray:
        """Dense images (len(idx), 3, 125, 125) float32 of jets ``idx`` (HCAL towers as 5×5 blocks of E/25)."""
        idx = np.asarray(idx, np.int64)
        out = np.zeros((len(idx), 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        for c in range(2):
            j, ie, ip, e = self.hits[c].gather(idx)
            out[j, c, ie, ip] = e
        j, ie, ip, e = self.hits[2].gather(idx)
        d = np.arange(TOWER)
        for a in d:
            for b in d:
                out[j, 2, ie + a, ip + b] = e / np.float32(TOWER * TOWER)
        return out

    def image(self, i: int) -> np.ndarray:
        return self.images([int(i)])[0]

    def flat_deposits(self, idx, channel: str):
        """(jet, Δη, Δφ, E) of the positive deposits of ``channel`` (tracks, ecal, hcal, calo) of jets ``idx``.

        Tracks/ECAL: crystals; HCAL: towers at their centre; calo: ECAL + HCAL summed per HCAL tower.
        """
        half = (TOWER - 1) / 2.0
        if channel in ("tracks", "ecal"):
            j, ie, ip, e = self.hits[CHANNELS.index(channel)].gather(idx)
            ce, cp = ie.astype(np.float64), ip.astype(np.float64)
        elif channel == "hcal":
            j, ie, ip, e = self.hits[2].gather(idx)
            ce, cp = ie + half, ip + half
        elif channel == "calo":
            je, ie, ip, ee = self.hits[1].gather(idx)
            jh, he, hp, eh = self.hits[2].gather(idx)
            nt = IMAGE_SIZE // TOWER
            key = np.concatenate(
                [je * nt * nt + (ie // TOWER) * nt + ip // TOWER, jh * nt * nt + (he // TOWER) * nt + hp // TOWER]
            )
            en = np.concatenate([np.maximum(ee, 0.0), np.maximum(eh, 0.0)]).astype(np.float64)
            uk, inv = np.unique(key, return_inverse=True)
            e = np.bincount(inv, weights=en)
            j, t = uk // (nt * nt), uk % (nt * nt)
            ce, cp = (t // nt) * TOWER + half, (t % nt) * TOWER + half
        else:
            raise ValueError(f"unknown deposit channel {channel!r}")
        e = np.asarray(e, np.float64)
        pos = e > 0
        return j[pos], ((ce - CENTRE) * PIXEL)[pos], ((cp - CENTRE) * PIXEL)[pos], e[pos]

    def top_deposits(self, idx, channel: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most energetic positive deposits per jet, padded: (len(idx), k, 2), (len(idx), k)."""
        return S.top_k(*self.flat_deposits(idx, channel), len(idx), k)

    def deposit_dicts(self, idx) -> list[dict]:
        """Per jet {tracks, ecal, hcal: (points (m, 2), energies (m,))} of all positive deposits (hit classifier)."""
        per = {}
        for c in CHANNELS:
            j, de, dp, e = self.flat_deposits(idx, c)
            bounds = np.searchsorted(j, np.arange(len(idx) + 1))
            pts = np.stack([de, dp], axis=1)
            per[c] = (pts, e, bounds)
        return [
            {
                c: (per[c][0][per[c][2][i] : per[c][2][i + 1]], per[c][1][per[c][2][i] : per[c][2][i + 1]])
                for c in CHANNELS
            }
            for i in range(len(idx))
        ]


def chunk_features(imgs: np.ndarray) -> tuple[dict[str, np.ndarray], list[SparseHits], np.ndarray]:
    """Every per-jet feature of an image chunk, its sparse hits and its HCAL towers."""
    f = F.image_features(imgs)
    towers = F.hcal_towers(imgs[:, 2])
    f.update(S.core_energies(imgs))
    f.update(FP.fingerprint_features(imgs, towers))
    hits = [_sparse(imgs[:, 0]), _sparse(imgs[:, 1]), _sparse(towers)]
    n = len(imgs)

    def flat(h: SparseHits, tower: bool):
        j = np.repeat(np.arange(n), np.diff(h.offsets))
        return (
            j,
            h.ieta.astype(np.int64) * (TOWER if tower else 1),
            h.iphi.astype(np.int64) * (TOWER if tower else 1),
            h.e,
        )

    pts, e = S.calo_deposits(flat(hits[1], False), flat(hits[2], True), n)
    f.update(S.substructure_features(pts, e))
    for h in hits[2:]:  # store tower ieta/iphi as the first pixel (hit-table convention)
        h.ieta, h.iphi = (h.ieta * TOWER).astype(np.int16), (h.iphi * TOWER).astype(np.int16)
    return f, hits, towers


class _Accumulator:
    """Collects chunk after chunk into a :class:`Sample`."""

    def __init__(self, paths: list[str], n: int):
        self.s = Sample(paths=paths, n=n)
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in (*ALL_FEATURES, "pt", "m0", "y")}
        self.hit_parts: list[list[SparseHits]] = [[], [], []]

    def add(self, imgs, pt, m0, y) -> None:
        f, hits, _ = chunk_features(imgs)
        f.update(pt=np.asarray(pt, np.float64), m0=np.asarray(m0, np.float64), y=np.asarray(y, np.float64))
        for k, v in self.parts.items():
            v.append(f[k])
        s = self.s
        s.image_sum += imgs.sum(axis=0, dtype=np.float64)
        for c, h in enumerate(hits):
            self.hit_parts[c].append(h)
            s.hit_hist[c] += np.histogram(h.e, HIT_EDGES)[0]
            s.hit_neg[c] += np.count_nonzero(h.e < 0)

    def finish(self) -> Sample:
        s = self.s
        cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.parts.items()}
        s.pt, s.m0, s.y = cat.pop("pt"), cat.pop("m0"), cat.pop("y")
        s.feats = cat
        s.hits = [SparseHits.concat(p) for p in self.hit_parts]
        return s


def scan(paths: list[Path], counts: list[int], split: str, chunk_size: int, bar=None) -> Sample:
    """Stream the inputs once: features of every jet, sparse hits, running sums."""
    acc = _Accumulator([str(p) for p in paths], int(sum(counts)))
    for path, cnt in zip(paths, counts):
        got = 0
        for imgs, pt, m0, y in iter_images(path, split, chunk_size, cnt):
            acc.add(imgs, pt, m0, y)
            got += len(imgs)
            if bar is not None:
                bar.update(len(imgs))
        if got != cnt:
            raise E2EInputError(f"expected {cnt} jets, read {got}", path=path)
    return acc.finish()


def sample_from_arrays(images: np.ndarray, pt, m0, y, chunk_size: int = 256, name: str = "<arrays>") -> Sample:
    """A :class:`Sample` from in-memory images (n, 3, 125, 125) and conditions (tests, notebooks)."""
    acc = _Accumulator([name], len(images))
    for s in range(0, len(images), chunk_size):
        sl = slice(s, s + chunk_size)
        acc.add(np.asarray(images[sl], np.float32), np.asarray(pt)[sl], np.asarray(m0)[sl], np.asarray(y)[sl])
    return acc.finish()
