"""Read and write CMS End-to-End (E2E) jet files, Parquet or HDF5, with bounded memory.

Parquet: column ``X_jets`` nested lists ``[3][125][125]`` (channel-first, float or double; the
modern ``element`` and the legacy ``list.item`` nesting names both work), scalar columns ``pt``,
``m0`` (GeV) and ``y`` (label). HDF5: dataset ``X_jets`` ``(N,125,125,3)`` channel-last with ``pt``,
``m0``, ``y``. The format is detected from the file's magic bytes, never from its name.

Every reader yields :class:`E2EChunk` objects with channel-first float32 images. Any problem
(truncated or corrupt file, missing column, wrong image shape, NaN/inf or null values) raises
:class:`~e2econd.errors.E2EInputError` with a one-line message naming the file, the row or key,
and what is wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2econd.data.geometry import IMAGE_SIZE, PIXELS_PER_IMAGE
from e2econd.errors import E2EInputError
from e2econd.utils import provenance_json

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
                    raise E2EInputError(
                        "truncated Parquet file (no footer magic 'PAR1' at the end)", path=path
                    )
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


# --------------------------------------------------------------------------------------------
# readers


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
        raise E2EInputError(
            f"non-finite pixel value in channel {ch}", path=path, key=IMAGE_KEY, row=start + r
        )


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
            raise E2EInputError(
                "missing image (null list)", path=path, key=IMAGE_KEY, row=start + bad // per_row
            )
        lengths = np.asarray(pc.list_value_length(level))
        wrong = np.flatnonzero(lengths != expect)
        if wrong.size:
            i = int(wrong[0])
            raise E2EInputError(
                f"wrong image shape: length {int(lengths[i])} at nesting depth {depth}, "
                "expected [3][125][125]",
                path=path,
                key=IMAGE_KEY,
                row=start + i // per_row,
            )
        level = level.flatten()
        per_row *= expect
    if not (pa.types.is_floating(level.type) or pa.types.is_integer(level.type)):
        raise E2EInputError(
            f"pixel type {level.type}, expected float or double", path=path, key=IMAGE_KEY, row=start
        )
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
                f"wrong image type {schema.field(IMAGE_KEY).type}, "
                "expected list<list<list<float>>> [3][125][125]",
                path=path,
                key=IMAGE_KEY,
            )
        self.n = self.file.metadata.num_rows
        md = self.file.metadata
        self.group_rows = np.array(
            [md.row_group(i).num_rows for i in range(md.num_row_groups)], dtype=np.int64
        )
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
                raise E2EInputError(
                    f"shape {tuple(ds.shape)} does not match {self.n} images", path=path, key=key
                )
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

    def _scalar(self, key: str, s: int, e: int) -> np.ndarray:
        ds = self.file[key]
        if ds.ndim == 1 or ds.shape[0] == self.n:  # (N,) or (N,1)
            return np.asarray(ds[s:e]).reshape(-1)
        return np.asarray(ds[()]).reshape(-1)[s:e]  # (1,N)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else text or type(exc).__name__


def open_e2e(path: str | os.PathLike):
    """Open and validate an E2E file (format, columns, image type/shape); returns a reader with
    ``.n`` (number of jets), ``.iter(chunk_size, start, stop)`` and ``.close()``."""
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


# --------------------------------------------------------------------------------------------
# writer


def _format_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    raise E2EInputError(
        "cannot tell the output format from the suffix (use .parquet/.pq or .h5/.hdf5)", path=path
    )


class E2EWriter:
    """Write E2E jets to Parquet or HDF5, streaming, atomically (``path.tmp-<pid>`` renamed on close).

    ``format`` None -> from the suffix (.parquet/.pq, .h5/.hdf5). Parquet: ``X_jets``
    list<list<list<float>>> [3][125][125], ``pt``/``m0`` float64, ``y`` float32, one row group per
    ``write`` call (split into groups of at most ``row_group_size`` jets). HDF5: ``X_jets``
    (N,125,125,3) float32, chunked and resizable. Both carry ``e2econd.utils.provenance(config)``
    (Parquet key-value metadata ``e2econd``, HDF5 attribute ``e2econd``). If the ``with`` block
    raises, the temporary file is deleted and nothing appears at ``path``.

    ``compression``: Parquet codec (default ``"zstd"``) or HDF5 filter (default ``"gzip"`` level 1
    with shuffle; ``None`` in ``hdf5_options`` for none).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        format: str | None = None,
        config: dict | None = None,
        *,
        compression: str | None = "default",
        row_group_size: int = 256,
        deterministic: bool = False,
    ):
        self.path = Path(path)
        self.deterministic = deterministic  # no creation time in the metadata: same input -> same bytes
        self.format = format or _format_from_suffix(self.path)
        if self.format not in FORMATS:
            raise E2EInputError(f"unknown format {self.format!r} (parquet or hdf5)", path=self.path)
        self.config = config
        self.compression = compression
        self.row_group_size = max(1, int(row_group_size))
        self.tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self.n_written = 0
        self._writer = None
        self._h5 = None
        self._open = False

    # -- context manager
    def __enter__(self) -> E2EWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._meta = provenance_json(self.config, timestamp=not self.deterministic)
        if self.format == "hdf5":
            self._open_hdf5()
        self._open = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._close_handles(ok=exc_type is None)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            raise
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()

    # -- parquet
    def _parquet_schema(self):
        import pyarrow as pa

        img = pa.list_(pa.list_(pa.list_(pa.float32())))
        return pa.schema(
            [("X_jets", img), ("pt", pa.float64()), ("m0", pa.float64()), ("y", pa.float32())],
            metadata={b"e2econd": self._meta.encode()},
        )

    def _open_parquet(self):
        import pyarrow.parquet as pq

        comp = "zstd" if self.compression == "default" else (self.compression or "none")
        self._writer = pq.ParquetWriter(
            str(self.tmp),
            self._parquet_schema(),
            compression=comp,
            use_dictionary=False,
            write_statistics=["pt", "m0", "y"],
        )

    def _write_parquet(self, images, pt, m0, y):
        import pyarrow as pa

        if self._writer is None:
            self._open_parquet()
        n = images.shape[0]
        values = pa.array(images.reshape(-1), type=pa.float32())
        l3 = pa.ListArray.from_arrays(
            pa.array(np.arange(n * 3 * IMAGE_SIZE + 1, dtype=np.int32) * IMAGE_SIZE), values
        )
        l2 = pa.ListArray.from_arrays(pa.array(np.arange(n * 3 + 1, dtype=np.int32) * IMAGE_SIZE), l3)
        l1 = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * 3), l2)
        table = pa.Table.from_arrays(
            [l1, pa.array(pt, pa.float64()), pa.array(m0, pa.float64()), pa.array(y, pa.float32())],
            schema=self._parquet_schema(),
        )
        self._writer.write_table(table, row_group_size=n)

    # -- hdf5
    def _open_hdf5(self):
        import h5py

        self._h5 = h5py.File(str(self.tmp), "w")
        comp = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        if self.compression is None:
            comp = {}
        elif self.compression != "default":
            comp = {"compression": self.compression}
        s = IMAGE_SIZE
        self._h5.create_dataset(
            "X_jets", shape=(0, s, s, 3), maxshape=(None, s, s, 3), dtype="f4", chunks=(8, s, s, 3), **comp
        )
        for key, dt in (("pt", "f8"), ("m0", "f8"), ("y", "f4")):
            self._h5.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,))
        self._h5.attrs["e2econd"] = self._meta
        self._h5.attrs["channels"] = "Tracks,ECAL,HCAL"

    def _write_hdf5(self, images, pt, m0, y):
        n0, n = self.n_written, images.shape[0]
        x = self._h5["X_jets"]
        x.resize(n0 + n, axis=0)
        x[n0 : n0 + n] = images.transpose(0, 2, 3, 1)
        for key, v in (("pt", pt), ("m0", m0), ("y", y)):
            ds = self._h5[key]
            ds.resize(n0 + n, axis=0)
            ds[n0 : n0 + n] = v

    def write(self, images, pt, m0, y) -> None:
        """Append jets: images (n,3,125,125) channel-first (GeV), pt/m0 (n,) GeV, y (n,) label."""
        if not self._open:
            raise RuntimeError("E2EWriter.write outside its 'with' block")
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != _SHAPE:
            raise ValueError(f"images must be (n,3,125,125), got {images.shape}")
        n = images.shape[0]
        pt = np.asarray(pt, dtype=np.float64).reshape(-1)
        m0 = np.asarray(m0, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        if not (len(pt) == len(m0) == len(y) == n):
            raise ValueError(f"images ({n}), pt ({len(pt)}), m0 ({len(m0)}), y ({len(y)}) lengths differ")
        if n == 0:
            return
        for lo in range(0, n, self.row_group_size):
            hi = min(n, lo + self.row_group_size)
            args = (np.ascontiguousarray(images[lo:hi]), pt[lo:hi], m0[lo:hi], y[lo:hi])
            if self.format == "parquet":
                self._write_parquet(*args)
            else:
                self._write_hdf5(*args)
            self.n_written += hi - lo

    def _close_handles(self, ok: bool) -> None:
        if self.format == "parquet":
            if self._writer is None and ok:
                self._open_parquet()  # valid file with zero jets
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        elif self._h5 is not None:
            self._h5.close()
            self._h5 = None
        self._open = False


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


def expand_generated_inputs(paths) -> list[Path]:
    """Sample manifests (``OUT.manifest.json`` of a torchrun ``sample``) -> their shards; see
    :func:`e2econd.data.shards.expand_generated_inputs`."""
    from e2econd.data.shards import expand_generated_inputs as expand

    return expand(paths)
