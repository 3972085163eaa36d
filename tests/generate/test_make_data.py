"""make_data / `e2econd make-data`: determinism, worker independence, both E2E formats, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from e2econd.data.e2e_io import detect_format, read_e2e, read_provenance
from e2econd.errors import E2EInputError
from e2econd.generate import make_data


def _read(path):
    c = read_e2e(path)
    return c.images, c.pt, c.m0, c.y


def test_deterministic_both_formats_and_seed_dependence(tmp_path):
    a = [tmp_path / "a.parquet", tmp_path / "a.h5"]
    s = make_data("top", 8, 11, a, unit_size=4, progress=False)
    assert s["n"] == 8 and s["events"] >= 8
    assert detect_format(a[0]) == "parquet" and detect_format(a[1]) == "hdf5"
    ia, pa, ma, ya = _read(a[0])
    ih, ph, mh, yh = _read(a[1])
    assert ia.shape == (8, 3, 125, 125) and ia.dtype == np.float32
    np.testing.assert_array_equal(ia, ih)
    np.testing.assert_allclose(pa, ph, rtol=1e-6)
    assert np.all(ya == 1) and np.all((pa >= 400) & (pa < 1000))
    prov = read_provenance(a[0])
    assert prov["config"]["process"] == "top" and prov["config"]["detector"]["B"] == 3.8
    # same seed -> identical; workers do not matter (fixed-size work units with derived seeds)
    b = tmp_path / "b.parquet"
    make_data("top", 8, 11, b, unit_size=4, workers=2, progress=False)
    ib, pb, mb, yb = _read(b)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(ma, mb)
    # the same command again writes byte-identical files
    r = [tmp_path / "r.parquet", tmp_path / "r.h5"]
    make_data("top", 8, 11, r, unit_size=4, progress=False)
    for x, y in zip(a, r):
        assert x.read_bytes() == y.read_bytes(), x.suffix
    # different seed -> different jets
    c = tmp_path / "c.parquet"
    make_data("top", 8, 12, c, unit_size=4, progress=False)
    ic, pc, _, _ = _read(c)
    assert not np.array_equal(pa, pc) and not np.array_equal(ia, ic)


def test_qg_labels_and_window(tmp_path):
    out = tmp_path / "qg.h5"
    make_data("qg", 10, 3, out, pt_min=80, pt_max=150, unit_size=10, progress=False)
    _, pt, m0, y = _read(out)
    assert sorted(y.tolist()) == [0.0] * 5 + [1.0] * 5
    assert np.all((pt >= 80) & (pt < 150)) and np.all(m0 > 0)
    assert not np.all(y[:5] == y[0]) or not np.all(y[5:] == y[5])  # shuffled, not blocks


def test_bad_input_leaves_no_output(tmp_path):
    with pytest.raises(E2EInputError, match="suffix"):
        make_data("top", 2, 1, tmp_path / "x.txt", progress=False)
    with pytest.raises(E2EInputError, match="pT window"):
        make_data("top", 2, 1, tmp_path / "x.parquet", pt_min=500, pt_max=400, progress=False)
    with pytest.raises(E2EInputError, match="process"):
        make_data("higgs", 2, 1, tmp_path / "x.parquet", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_both_formats(tmp_path):
    from e2econd.cli import main

    out = tmp_path / "g.parquet"
    r = CliRunner().invoke(
        main, ["make-data", "--process", "gluon", "--n", "3", "--seed", "5", "--out", str(out), "--also-h5", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    imgs, pt, _, y = _read(out)
    imgs_h5, _, _, _ = _read(tmp_path / "g.h5")
    assert imgs.shape == (3, 3, 125, 125) and np.all(y == 0)
    np.testing.assert_array_equal(imgs, imgs_h5)
    r = CliRunner().invoke(main, ["make-data", "--n", "3", "--out", str(tmp_path / "bad.csv")])
    assert r.exit_code == 2 and "suffix" in r.output


def test_pileup_adds_hits_but_keeps_the_jets(tmp_path):
    a, b = tmp_path / "pu0.parquet", tmp_path / "pu20.parquet"
    make_data("top", 3, 4, a, unit_size=3, progress=False)
    make_data("top", 3, 4, b, unit_size=3, pileup=20, progress=False)
    i0, p0, m0, _ = _read(a)
    i1, p1, m1, _ = _read(b)
    np.testing.assert_array_equal(p0, p1)  # jets are clustered on the hard event
    np.testing.assert_array_equal(m0, m1)
    assert ((i1 != 0).sum(axis=(2, 3)) > (i0 != 0).sum(axis=(2, 3))).all(axis=0).all()
