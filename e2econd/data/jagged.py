"""Jagged per-jet rows: the flat layout shared by hits (:class:`~e2econd.data.hits.FlatHits`) and tower
tokens (:class:`~e2econd.data.towers.TowerTokens`) — jet i owns rows ``offsets[i]:offsets[i+1]``."""

from __future__ import annotations

import numpy as np

__all__ = ["Jagged", "offsets_from_counts", "segment_gather"]


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    """Row counts per jet (n,) -> offsets (n+1,) int64, starting at 0."""
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def segment_gather(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Indices ``concat(arange(s, s+c) for s, c)`` without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    out_start = np.cumsum(counts) - counts
    return np.repeat(np.asarray(starts, np.int64) - out_start, counts) + np.arange(total, dtype=np.int64)


class Jagged:
    """Per-jet views of a class with an ``offsets`` (n+1,) int64 attribute."""

    offsets: np.ndarray

    @property
    def n_jets(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        """Rows per jet (n,)."""
        return np.diff(self.offsets)

    @property
    def jet(self) -> np.ndarray:
        """Jet index of every row."""
        return np.repeat(np.arange(self.n_jets), self.counts)

    def _jet_rows(self, jets) -> tuple[np.ndarray, np.ndarray]:
        """(rows to gather, new offsets) for the sub-batch ``jets`` (in the given order)."""
        jets = np.asarray(jets, dtype=np.int64)
        counts = self.counts[jets]
        return segment_gather(self.offsets[jets], counts), offsets_from_counts(counts)
