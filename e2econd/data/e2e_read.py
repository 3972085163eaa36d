"""Validated, streaming E2E readers (Parquet, HDF5): ``open_e2e``, ``iter_e2e``, ``read_e2e``,
``count_jets``, ``read_provenance``. Every problem is a one-line ``E2EInputError`` naming file and row/key."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from e2econd.data.e2e_format import (
    _SHAPE,
    IMAGE_KEY,
    SCALAR_KEYS,
    E2EChunk,
    _check_images,
    _scalar_numpy,
    _short,
    detect_format,
)
from e2econd.data.geometry import IMAGE_SIZE, PIXELS_PER_IMAGE
from e2econd.errors import E2EInputError


def _nested_to_images(arr, path, start: int) -> np.ndarray:
    """Arrow ``list<list<list<float|double>>>`` [3][125][125] -> float32 numpy (n,3,125,125).

    Name-agnostic (``element`` or legacy ``item``), works for list, large_list and fixed-size
    lists; checks every level's lengths so a wrong shape names its first bad row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(arr)
    level = arr
    per_row = 1
    for depth, expect in enumerate(_SHAPE):
        t = level.type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
            raise E2EInputError(
                f"wrong image shape: nesting depth {depth}, expected [3][125][125] lists",
                path=path,
                key=IMAGE_KEY,
                row=start,
            )
        if level.null_count:
            bad = int(np.flatnonzero(np.asarray(pc.is_null(level)))[0])
            raise E2EInputError("missing image (null list)", path=path, key=IMAGE_KEY, row=start + bad // per_row)
        lengths = np.asarray(pc.list_value_length(level))
        wrong = np.flatnonzero(lengths != expect)
        if wrong.size:
            i = int(wrong[0])
            raise E2EInputError(
                f"wrong image shape: length {int(lengths[i])} at nesting depth {depth}, expected [3][125][125]",
                path=path,
                key=IMAGE_KEY,
                row=start + i // per_row,
            )
        level = level.flatten()
        per_row *= expect
    if not (pa.types.is_floating(level.type) or pa.types.is_integer(level.type)):
        raise E2EInputError(f"pixel type {level.type}, expected float or double", path=path, key=IMAGE_KEY, row=start)
    if level.null_count:
        bad = int(np.flatnonzero(np.asarray(pc.is_null(level)))[0])
        raise E2EInputError("null pixel value", path=path, key=IMAGE_KEY, row=start + bad // PIXELS_PER_IMAGE)
    values = level.to_numpy(zero_copy_only=False)
    return values.reshape(n, *_SHAPE).astype(np.float32, copy=False)


class _ParquetReader:
    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        try:
            self.file = pq.ParquetFile(str(path))
            schema = self.file.schema_arrow
        except (pa.ArrowException, OSError) as exc:
            raise E2EInputError(f"corrupt or truncated Parquet file ({_short(exc)})", path=path) from None
        names = set(schema.names)
        for key in (IMAGE_KEY, *SCALAR_KEYS):
            if key not in names:
                raise E2EInputError(f"missing column (have: {', '.join(schema.names)})", path=path, key=key)
        t = schema.field(IMAGE_KEY).type
        depth = 0
        while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            t, depth = t.value_type, depth + 1
        if depth != 3 or not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            raise E2EInputError(
                f"wrong image type {schema.field(IMAGE_KEY).type}, expected list<list<list<float>>> [3][125][125]",
                path=path,
                key=IMAGE_KEY,
            )
        self.n = self.file.metadata.num_rows
        md = self.file.metadata
        self.group_rows = np.array([md.row_group(i).num_rows for i in range(md.num_row_groups)], dtype=np.int64)
        self.group_start = np.concatenate([[0], np.cumsum(self.group_rows)])

    def iter(self, chunk_size: int, start: int, stop: int) -> Iterator[E2EChunk]:
        import pyarrow as pa

        if stop <= start:
            return
        g0 = int(np.searchsorted(self.group_start, start, side="right") - 1)
        g1 = int(np.searchsorted(self.group_start, stop, side="left"))
        groups = list(range(g0, g1))
        row = int(self.group_start[g0])
        try:
            batches = self.file.iter_batches(
                batch_size=chunk_size, row_groups=groups, columns=[IMAGE_KEY, *SCALAR_KEYS], use_threads=False
            )
            for batch in batches:
                b0, b1 = row, row + batch.num_rows
                row = b1
                lo, hi = max(b0, start), min(b1, stop)
                if hi <= lo:
                    continue
                if (lo, hi) != (b0, b1):
                    batch = batch.slice(lo - b0, hi - lo)
                yield self._convert(batch, lo)
        except E2EInputError:
            raise
        except (pa.ArrowException, OSError) as exc:
            raise E2EInputError(f"corrupt Parquet data ({_short(exc)})", path=self.path, row=row) from None

    def _convert(self, batch, start: int) -> E2EChunk:
        images = _nested_to_images(batch.column(IMAGE_KEY), self.path, start)
        _check_images(images, self.path, start)
        pt = _scalar_numpy(batch.column("pt"), self.path, "pt", start)
        m0 = _scalar_numpy(batch.column("m0"), self.path, "m0", start)
        y = _scalar_numpy(batch.column("y"), self.path, "y", start).astype(np.float32)
        return E2EChunk(images, pt, m0, y, start)

    def scalars(self) -> dict[str, np.ndarray]:
        """The whole file's ``pt``, ``m0``, ``y`` columns (float64), validated; the images are not read."""
        import pyarrow as pa

        try:
            table = self.file.read(columns=list(SCALAR_KEYS), use_threads=False)
        except (pa.ArrowException, OSError) as exc:
            raise E2EInputError(f"corrupt Parquet data ({_short(exc)})", path=self.path) from None
        return {k: _scalar_numpy(table.column(k).combine_chunks(), self.path, k, 0) for k in SCALAR_KEYS}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()


class _HDF5Reader:
    def __init__(self, path: Path):
        import h5py

        self.path = path
        try:
            self.file = h5py.File(str(path), "r")
        except OSError as exc:
            raise E2EInputError(f"corrupt or truncated HDF5 file ({_short(exc)})", path=path) from None
        try:
            self._validate()
        except E2EInputError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            self.close()
            raise E2EInputError(f"corrupt HDF5 file ({_short(exc)})", path=path) from None

    def _validate(self) -> None:
        f, path = self.file, self.path
        keys = list(f.keys())
        for key in (IMAGE_KEY, *SCALAR_KEYS):
            if key not in keys:
                raise E2EInputError(f"missing dataset (have: {', '.join(keys)})", path=path, key=key)
        x = f[IMAGE_KEY]
        if x.ndim != 4 or tuple(x.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise E2EInputError(
                f"wrong image shape {tuple(x.shape)}, expected (N,125,125,3) channel-last",
                path=path,
                key=IMAGE_KEY,
            )
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise E2EInputError(f"pixel type {x.dtype}, expected float", path=path, key=IMAGE_KEY)
        self.n = int(x.shape[0])
        for key in SCALAR_KEYS:
            ds = f[key]
            if ds.size != self.n or (ds.ndim > 1 and max(ds.shape) != ds.size):
                raise E2EInputError(f"shape {tuple(ds.shape)} does not match {self.n} images", path=path, key=key)
        self.images = x
        self.step = int(x.chunks[0]) if x.chunks else 1

    def iter(self, chunk_size: int, start: int, stop: int) -> Iterator[E2EChunk]:
        # read blocks aligned to the dataset's chunking so each HDF5 chunk is decompressed once
        size = max(self.step, (chunk_size // self.step) * self.step)
        s = start
        while s < stop:
            e = min(stop, (s // size + 1) * size)
            try:
                raw = self.images[s:e]
                scal = {k: self._scalar(k, s, e) for k in SCALAR_KEYS}
            except (OSError, KeyError, ValueError, RuntimeError) as exc:
                raise E2EInputError(
                    f"corrupt HDF5 data ({_short(exc)})", path=self.path, key=IMAGE_KEY, row=s
                ) from None
            images = np.ascontiguousarray(raw.transpose(0, 3, 1, 2), dtype=np.float32)
            _check_images(images, self.path, s)
            pt = _scalar_numpy(scal["pt"], self.path, "pt", s)
            m0 = _scalar_numpy(scal["m0"], self.path, "m0", s)
            y = _scalar_numpy(scal["y"], self.path, "y", s).astype(np.float32)
            yield E2EChunk(images, pt, m0, y, s)
            s = e

    def scalars(self) -> dict[str, np.ndarray]:
        """The whole file's ``pt``, ``m0``, ``y`` datasets (float64), validated; the images are not read."""
        out = {}
        for k in SCALAR_KEYS:
            try:
                raw = self._scalar(k, 0, self.n)
            except (OSError, KeyError, ValueError, RuntimeError, IndexError) as exc:
                raise E2EInputError(f"corrupt HDF5 data ({_short(exc)})", path=self.path, key=k) from None
            out[k] = _scalar_numpy(raw, self.path, k, 0)
        return out

    def _scalar(self, key: str, s: int, e: int) -> np.ndarray:
        ds = self.file[key]
        if ds.ndim == 1 or ds.shape[0] == self.n:  # (N,) or (N,1)
            return np.asarray(ds[s:e]).reshape(-1)
        return np.asarray(ds[()]).reshape(-1)[s:e]  # (1,N)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()


def open_e2e(path: str | os.PathLike):
    """Open and validate an E2E file (format, columns, image type/shape); returns a reader with
    ``.n`` (number of jets), ``.iter(chunk_size, start, stop)``, ``.scalars()`` and ``.close()``."""
    path = Path(path)
    fmt = detect_format(path)
    reader = _ParquetReader(path) if fmt == "parquet" else _HDF5Reader(path)
    reader.format = fmt
    return reader


def count_jets(path: str | os.PathLike) -> int:
    """Number of jets in an E2E file (reads only metadata)."""
    reader = open_e2e(path)
    try:
        return int(reader.n)
    finally:
        reader.close()


def iter_e2e(
    path: str | os.PathLike, chunk_size: int = 256, *, start: int = 0, stop: int | None = None
) -> Iterator[E2EChunk]:
    """Stream jets ``[start, stop)`` of an E2E file in chunks of at most ``chunk_size`` jets.

    Memory is bounded by one chunk (plus one Parquet row group's compressed bytes).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    reader = open_e2e(path)
    try:
        stop = reader.n if stop is None else min(int(stop), reader.n)
        yield from reader.iter(int(chunk_size), int(start), stop)
    finally:
        reader.close()


def read_e2e(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> E2EChunk:
    """Whole file (or rows ``[start, stop)``) in memory: for small files and tests."""
    chunks = list(iter_e2e(path, 1024, start=start, stop=stop))
    if not chunks:
        empty = np.zeros((0, *_SHAPE), np.float32)
        return E2EChunk(empty, np.zeros(0), np.zeros(0), np.zeros(0, np.float32), start)
    return E2EChunk(
        np.concatenate([c.images for c in chunks]),
        np.concatenate([c.pt for c in chunks]),
        np.concatenate([c.m0 for c in chunks]),
        np.concatenate([c.y for c in chunks]),
        chunks[0].start,
    )


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The ``e2econd`` provenance record stored in an E2E file, or None."""
    fmt = detect_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(str(path)).schema_arrow.metadata or {}
        raw = meta.get(b"e2econd")
    else:
        import h5py

        with h5py.File(str(path), "r") as f:
            raw = f.attrs.get("e2econd")
    if raw is None:
        return None
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
