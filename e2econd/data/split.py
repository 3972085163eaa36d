"""Deterministic train/val/test split of ``e2econd preprocess``.

``u = splitmix64(seed, key[:16], row) / 2**64``; train if ``u < f_train``, val if ``u < f_train + f_val``,
else test, where ``key`` (:func:`jets_key`) is the sha256 of the file's jet kinematics (``pt``, ``m0``,
``y`` as float32). It depends only on the jets, the row and the seed: not on the file's name, format,
compression or metadata (the same jets written as Parquet or HDF5, by another version or under another
name, split the same way), nor on chunking or ``--workers``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from e2econd.errors import E2EInputError


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def split_uniform(key_hex: str, rows: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0,1) number per jet from (file key, row, seed): stable whatever the chunking."""
    key = np.uint64(int(key_hex[:16], 16))
    s = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
    h = _splitmix64(np.array([key ^ s], np.uint64))[0]
    with np.errstate(over="ignore"):
        u = _splitmix64(np.asarray(rows, np.uint64) + h)
    return (u >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def assign_split(key_hex: str, rows: np.ndarray, seed: int, fractions: Sequence[float]) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) per row; ``key_hex`` from :func:`jets_key`."""
    u = split_uniform(key_hex, rows, seed)
    f0, f1 = float(fractions[0]), float(fractions[0]) + float(fractions[1])
    return np.where(u < f0, 0, np.where(u < f1, 1, 2)).astype(np.int8)


def parse_split(text: str | Sequence[float]) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); three non-negative fractions summing to 1."""
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise E2EInputError(f"--split {text!r}: expected three numbers like 0.8,0.1,0.1") from None
    if len(vals) != 3 or any(not np.isfinite(v) or v < 0 for v in vals) or abs(sum(vals) - 1.0) > 1e-6:
        raise E2EInputError(f"--split {text!r}: need three fractions >= 0 for train,val,test summing to 1")
    return tuple(vals)


def jets_key(pt: np.ndarray, m0: np.ndarray, y: np.ndarray) -> str:
    """sha256 (hex) of a file's jets as the split sees them: their number and ``pt`` (GeV), ``m0`` (GeV)
    and ``y`` rounded to float32 (the precision of either format's columns), little-endian."""
    h = hashlib.sha256(b"e2econd-split-key-v2")
    h.update(np.int64(len(pt)).tobytes())
    for col in (pt, m0, y):
        h.update(np.ascontiguousarray(col, dtype="<f4").tobytes())
    return h.hexdigest()
