"""E2E readers and writer: both formats of the real-format fixtures agree, Parquet layout variants (legacy ``item`` /
modern ``element`` nesting, float/double, one or many rows per row group), chunked ranges,
atomic streaming writer with provenance, detection by content."""

from __future__ import annotations

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e2econd.data.e2e_io import E2EWriter, count_jets, detect_format, iter_e2e, read_e2e, read_provenance
from e2econd.errors import E2EInputError


def jets(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, 125, 125), np.float32)
    idx = rng.integers(0, 125, (n, 3, 2, 40))
    for i in range(n):
        for c in range(3):
            x[i, c, idx[i, c, 0], idx[i, c, 1]] = rng.normal(1, 2, 40).astype(np.float32)
    return x, rng.uniform(50, 500, n), rng.uniform(1, 200, n), rng.integers(0, 2, n).astype(np.float32)


def write_parquet_variant(path, x, pt, m0, y, *, leaf, compliant, rows_per_group):
    leaf_type = pa.float64() if leaf == "double" else pa.float32()
    vals = pa.array(x.reshape(-1).astype(np.float64 if leaf == "double" else np.float32), leaf_type)
    n = len(x)
    l3 = pa.ListArray.from_arrays(pa.array(np.arange(n * 375 + 1, dtype=np.int32) * 125), vals)
    l2 = pa.ListArray.from_arrays(pa.array(np.arange(n * 3 + 1, dtype=np.int32) * 125), l3)
    l1 = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * 3), l2)
    t = pa.table({"X_jets": l1, "pt": pt, "m0": m0, "y": y.astype(np.float64)})
    pq.write_table(t, path, row_group_size=rows_per_group, use_compliant_nested_type=compliant)


def test_fixture_parquet_and_hdf5_hold_the_same_jets(e2e_fixtures):
    d = e2e_fixtures
    for stem in ("E2Esim_QG_IMGjet_R0.4_pu0_n300_seed101", "E2Esim_TOP_IMGjet_R0.8_pu0_n200_seed102"):
        p, h = d / f"{stem}.test.snappy.parquet", d / f"{stem}.h5"
        assert detect_format(p) == "parquet" and detect_format(h) == "hdf5"
        # the Parquet files are the legacy layout: one row group per jet, 'list.item' nesting, doubles
        md = pq.ParquetFile(p).metadata
        assert md.num_row_groups == md.num_rows
        assert "list.item" in md.row_group(0).column(0).path_in_schema
        a, b = read_e2e(p), read_e2e(h)
        assert a.images.dtype == np.float32 and a.images.shape == (count_jets(p), 3, 125, 125)
        assert count_jets(p) == count_jets(h)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_allclose(a.pt, b.pt, rtol=1e-7)
        np.testing.assert_allclose(a.m0, b.m0, rtol=1e-7)
        np.testing.assert_array_equal(a.y, b.y)
        # HDF5 channel-last on disk, channel-first in memory
        with h5py.File(h, "r") as f:
            np.testing.assert_array_equal(f["X_jets"][3], b.images[3].transpose(1, 2, 0))


@pytest.mark.parametrize("leaf", ["double", "float"])
@pytest.mark.parametrize("compliant", [False, True])
@pytest.mark.parametrize("rows_per_group", [1, 7, 1000])
def test_parquet_layout_variants(tmp_path, leaf, compliant, rows_per_group):
    x, pt, m0, y = jets(23, seed=3)
    path = tmp_path / "jets.data"  # no suffix: detection is by content
    write_parquet_variant(path, x, pt, m0, y, leaf=leaf, compliant=compliant, rows_per_group=rows_per_group)
    path_names = pq.ParquetFile(path).metadata.row_group(0).column(0).path_in_schema
    assert ("element" in path_names) == compliant
    assert detect_format(path) == "parquet"
    got = read_e2e(path)
    np.testing.assert_array_equal(got.images, x)
    np.testing.assert_array_equal(got.pt, pt)
    np.testing.assert_array_equal(got.y, y)
    # chunked reads with arbitrary ranges give the same rows
    for chunk_size, start, stop in ((5, 0, None), (4, 3, 17), (100, 22, 23), (1, 9, 12)):
        parts = list(iter_e2e(path, chunk_size, start=start, stop=stop))
        stop_ = 23 if stop is None else stop
        assert all(len(c) <= chunk_size for c in parts)
        assert [c.start for c in parts] == list(np.cumsum([start] + [len(c) for c in parts[:-1]]))
        np.testing.assert_array_equal(np.concatenate([c.images for c in parts]), x[start:stop_])
        np.testing.assert_array_equal(np.concatenate([c.m0 for c in parts]), m0[start:stop_])


@pytest.mark.parametrize("suffix", [".parquet", ".h5"])
def test_writer_round_trip_streaming_and_provenance(tmp_path, suffix):
    x, pt, m0, y = jets(30, seed=4)
    path = tmp_path / f"out{suffix}"
    with E2EWriter(path, config={"who": "test"}, row_group_size=8) as w:
        w.write(x[:3], pt[:3], m0[:3], y[:3])
        w.write(x[3:], pt[3:], m0[3:], y[3:])
        assert not path.exists()  # only the temporary file exists while writing
        assert w.n_written == 30
    assert path.exists() and not list(tmp_path.glob("*.tmp-*"))
    assert detect_format(path) == ("parquet" if suffix == ".parquet" else "hdf5")
    got = read_e2e(path)
    np.testing.assert_array_equal(got.images, x)
    np.testing.assert_array_equal(got.pt, pt)
    np.testing.assert_array_equal(got.m0, m0)
    np.testing.assert_array_equal(got.y, y)
    prov = read_provenance(path)
    assert prov["config"] == {"who": "test"} and "e2econd" in prov
    for chunk in iter_e2e(path, 7):  # chunked reads across writer row groups / HDF5 chunks
        np.testing.assert_array_equal(chunk.images, x[chunk.start : chunk.start + len(chunk)])
    if suffix == ".parquet":
        md = pq.ParquetFile(path).metadata
        assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [3, 8, 8, 8, 3]
        assert pq.ParquetFile(path).schema_arrow.field("X_jets").type.value_type.value_type.value_type == pa.float32()
    else:
        with h5py.File(path, "r") as f:
            assert f["X_jets"].shape == (30, 125, 125, 3) and f["pt"].dtype == np.float64


@pytest.mark.parametrize("suffix", [".parquet", ".hdf5"])
def test_writer_is_atomic_on_error(tmp_path, suffix):
    x, pt, m0, y = jets(2)
    path = tmp_path / f"out{suffix}"
    with pytest.raises(RuntimeError), E2EWriter(path) as w:
        w.write(x, pt, m0, y)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError), E2EWriter(path) as w:
        w.write(x[:, :2], pt, m0, y)  # wrong shape
    assert list(tmp_path.iterdir()) == []


def test_writer_empty_and_format_from_suffix(tmp_path):
    with E2EWriter(tmp_path / "e.pq"):
        pass
    assert count_jets(tmp_path / "e.pq") == 0
    with pytest.raises(E2EInputError, match="suffix"):
        E2EWriter(tmp_path / "e.txt")
    with E2EWriter(tmp_path / "forced.bin", format="hdf5") as w:
        w.write(*jets(1))
    assert detect_format(tmp_path / "forced.bin") == "hdf5"


def test_detect_format_errors(tmp_path):
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "text.h5").write_text("hello world, not hdf5")
    with pytest.raises(E2EInputError, match=r"empty\.parquet: empty file"):
        detect_format(tmp_path / "empty.parquet")
    with pytest.raises(E2EInputError, match=r"text\.h5: not an E2E file"):
        detect_format(tmp_path / "text.h5")
    with pytest.raises(E2EInputError, match="no such file"):
        detect_format(tmp_path / "missing.parquet")
