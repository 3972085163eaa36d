"""Streaming, atomic E2E writer (Parquet or HDF5) with provenance metadata: ``E2EWriter``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from e2econd.data.e2e_format import _SHAPE, FORMATS
from e2econd.data.geometry import IMAGE_SIZE
from e2econd.errors import E2EInputError
from e2econd.utils import provenance_json


def _format_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    raise E2EInputError("cannot tell the output format from the suffix (use .parquet/.pq or .h5/.hdf5)", path=path)


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
        l3 = pa.ListArray.from_arrays(pa.array(np.arange(n * 3 * IMAGE_SIZE + 1, dtype=np.int32) * IMAGE_SIZE), values)
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
