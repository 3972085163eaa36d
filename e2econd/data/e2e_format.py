"""E2E file formats: names, the chunk type, magic-byte detection and value checks shared by the
readers (:mod:`e2econd.data.e2e_read`) and the writer (:mod:`e2econd.data.e2e_write`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2econd.data.geometry import IMAGE_SIZE
from e2econd.errors import E2EInputError

FORMATS = ("parquet", "hdf5")
IMAGE_KEY = "X_jets"
SCALAR_KEYS = ("pt", "m0", "y")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PARQUET_MAGIC = b"PAR1"
_SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)


@dataclass
class E2EChunk:
    """Consecutive jets of one file: images float32 (n,3,125,125) channel-first, pt/m0 float64 GeV,
    label y float32, and ``start`` = index in the file of the first jet."""

    images: np.ndarray
    pt: np.ndarray
    m0: np.ndarray
    y: np.ndarray
    start: int

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------------------------
# format detection


def detect_format(path: str | os.PathLike) -> str:
    """``"parquet"`` or ``"hdf5"`` from the file's magic bytes (not its name)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise E2EInputError("is a directory, expected an E2E Parquet or HDF5 file", path=path)
        with open(path, "rb") as fh:
            head = fh.read(8)
            if size == 0:
                raise E2EInputError("empty file (0 bytes)", path=path)
            if head[:4] == _PARQUET_MAGIC:
                fh.seek(max(size - 4, 0))
                if size < 12 or fh.read(4) != _PARQUET_MAGIC:
                    raise E2EInputError("truncated Parquet file (no footer magic 'PAR1' at the end)", path=path)
                return "parquet"
            for off in (0, 512, 1024, 2048, 4096):  # HDF5 superblock may follow a user block
                if off:
                    fh.seek(off)
                    head = fh.read(8)
                if head == _HDF5_MAGIC:
                    return "hdf5"
    except FileNotFoundError:
        raise E2EInputError("no such file", path=path) from None
    except PermissionError:
        raise E2EInputError("permission denied", path=path) from None
    raise E2EInputError("not an E2E file: neither Parquet (PAR1) nor HDF5 magic bytes", path=path)


def _scalar_numpy(values, path, key: str, start: int) -> np.ndarray:
    """Arrow/numpy 1-D column -> float64 numpy; nulls and non-finite values are errors."""
    if hasattr(values, "null_count"):
        if values.null_count:
            import pyarrow.compute as pc

            bad = int(np.flatnonzero(np.asarray(pc.is_null(values)))[0])
            raise E2EInputError("missing value (null)", path=path, key=key, row=start + bad)
        values = values.to_numpy(zero_copy_only=False)
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number):
        arr = arr.astype(np.float64, copy=False)
    else:
        raise E2EInputError(f"expected numbers, found {arr.dtype}", path=path, key=key, row=start)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise E2EInputError(f"non-finite value {arr[bad[0]]}", path=path, key=key, row=start + int(bad[0]))
    return arr


def _check_images(images: np.ndarray, path, start: int) -> None:
    """NaN/inf pixels are errors (named by row and channel)."""
    finite = np.isfinite(images.reshape(images.shape[0], -1)).all(axis=1)
    if not finite.all():
        r = int(np.flatnonzero(~finite)[0])
        ch = int(np.flatnonzero(~np.isfinite(images[r]).reshape(3, -1).all(axis=1))[0])
        raise E2EInputError(f"non-finite pixel value in channel {ch}", path=path, key=IMAGE_KEY, row=start + r)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else text or type(exc).__name__
