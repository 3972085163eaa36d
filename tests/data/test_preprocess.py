"""``e2econd preprocess`` / ``export``: lossless round trip on the real-format fixture files,
determinism across --workers, split rule, options, and one-line errors for bad input with no
partial output left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from e2econd.cli import main
from e2econd.data.e2e_io import E2EWriter, read_e2e
from e2econd.data.hitstore import HitStore
from e2econd.data.preprocess import preprocess
from e2econd.data.split import assign_split, jets_key
from e2econd.errors import E2EInputError


def fixture_inputs(fixtures_dir: Path) -> list[Path]:
    """The four real-format fixture files (tests/fixtures), Parquet first."""
    files = sorted(fixtures_dir.glob("*.parquet")) + sorted(fixtures_dir.glob("*.h5"))
    assert len(files) == 4, files
    return files


def jets(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, 125, 125), np.float32)
    for i in range(n):
        for c in range(2):
            x[i, c, rng.integers(0, 125, 30), rng.integers(0, 125, 30)] = rng.lognormal(0, 1, 30)
        x[i, 1, rng.integers(0, 125, 5), rng.integers(0, 125, 5)] = -0.02
        t = rng.lognormal(0, 1, (25, 25)).astype(np.float32) * (rng.random((25, 25)) < 0.05)
        x[i, 2] = np.kron(t / np.float32(25), np.ones((5, 5), np.float32))
    return x, rng.uniform(50, 500, n), rng.uniform(1, 200, n), rng.integers(0, 2, n).astype(np.float32)


def write_jets(path: Path, n: int = 20, seed: int = 0, **kw) -> Path:
    with E2EWriter(path, **kw) as w:
        w.write(*jets(n, seed))
    return path


@pytest.fixture(scope="module")
def fixture_hits(tmp_path_factory, e2e_fixtures) -> Path:
    out = tmp_path_factory.mktemp("pp") / "hits"
    preprocess(fixture_inputs(e2e_fixtures), out, progress=False)
    return out


# --------------------------------------------------------------------------------------------
# round trip on the real-format fixtures


def test_manifest_and_layout(fixture_hits, e2e_fixtures):
    files = fixture_inputs(e2e_fixtures)
    man = json.loads((fixture_hits / "manifest.json").read_text())
    assert sorted(p.name for p in fixture_hits.iterdir()) == [
        "manifest.json",
        "test.parquet",
        "train.parquet",
        "transforms.json",
        "val.parquet",
    ]
    n_total = sum(len(read_e2e(f).pt) for f in files)
    assert man["counts"]["n_jets"] == n_total == sum(man["counts"]["splits"].values())
    assert [i["name"] for i in man["inputs"]] == [f.name for f in files]
    assert all(i["size"] == f.stat().st_size and len(i["sha256"]) == 64 for i, f in zip(man["inputs"], files))
    assert man["options"]["threshold"] == 0.0 and man["options"]["negatives"] == "keep"
    assert man["counts"]["hcal_nonuniform_blocks"] == 0 and man["e2econd"]
    # plain pyarrow can read it; list columns and per-channel jet columns as documented
    t = pq.read_table(fixture_hits / "train.parquet")
    assert t.schema.field("ecal_e").type == pa.list_(pa.float32())
    assert t.schema.field("hcal_size").type == pa.list_(pa.int8())
    assert t.num_rows == man["counts"]["splits"]["train"]
    n_ecal = t.column("n_ecal").to_numpy()
    assert np.array_equal(n_ecal, pc_lengths(t.column("ecal_e")))
    np.testing.assert_allclose(
        t.column("sum_ecal").to_numpy(),
        [float(np.sum(np.asarray(v, np.float64))) for v in t.column("ecal_e").to_pylist()],
    )
    # split fractions as asked (0.8/0.1/0.1) within 3 binomial standard deviations of the 64 jets
    assert abs(man["counts"]["splits"]["train"] - 0.8 * n_total) <= 3 * (n_total * 0.8 * 0.2) ** 0.5
    tr = json.loads((fixture_hits / "transforms.json").read_text())
    assert tr["fit"]["split"] == "train" and tr["fit"]["n_jets"] == man["counts"]["splits"]["train"]


def pc_lengths(col):
    import pyarrow.compute as pc

    return pc.list_value_length(col).to_numpy()


@pytest.mark.parametrize("suffix", [".parquet", ".h5"])
def test_export_reproduces_inputs_exactly(fixture_hits, tmp_path, suffix, e2e_fixtures):
    files = fixture_inputs(e2e_fixtures)
    originals = [read_e2e(f) for f in files]
    out = tmp_path / f"back{suffix}"
    r = CliRunner().invoke(main, ["export", str(fixture_hits), "--out", str(out)])
    assert r.exit_code == 0, r.output
    back = read_e2e(out)
    store = HitStore(fixture_hits, None)  # all splits, same train/val/test order as export
    src, row = store.jets["source"], store.jets["row"]
    assert len(back.pt) == len(store) == sum(len(o.pt) for o in originals)
    for k, o in enumerate(originals):
        sel = np.flatnonzero(src == k)
        assert sorted(row[sel].tolist()) == list(range(len(o.pt)))
        np.testing.assert_array_equal(back.images[sel], o.images[row[sel]])
        np.testing.assert_array_equal(back.pt[sel], o.pt[row[sel]])
        np.testing.assert_array_equal(back.m0[sel], o.m0[row[sel]])
        np.testing.assert_array_equal(back.y[sel], o.y[row[sel]])


def test_export_single_split(fixture_hits, tmp_path):
    out = tmp_path / "test.h5"
    r = CliRunner().invoke(main, ["export", str(fixture_hits), "--out", str(out), "--split", "test"])
    assert r.exit_code == 0, r.output
    store = HitStore(fixture_hits, "test")
    back = read_e2e(out)
    assert len(back.pt) == len(store)
    np.testing.assert_array_equal(back.pt, store.jets["pt"])


# --------------------------------------------------------------------------------------------
# determinism, split, options


def test_workers_do_not_change_output(tmp_path):
    files = [write_jets(tmp_path / "a.parquet", 70, 1, row_group_size=1), write_jets(tmp_path / "b.h5", 45, 2)]
    preprocess(files, tmp_path / "w1", workers=1, chunk_size=16, progress=False)
    preprocess(files, tmp_path / "w2", workers=2, chunk_size=16, progress=False)
    preprocess(files, tmp_path / "big", workers=1, chunk_size=1000, progress=False)
    for s in ("train", "val", "test"):
        a = pq.read_table(tmp_path / "w1" / f"{s}.parquet")
        assert a.equals(pq.read_table(tmp_path / "w2" / f"{s}.parquet"))
        assert a.equals(pq.read_table(tmp_path / "big" / f"{s}.parquet"))
    t1 = json.loads((tmp_path / "w1" / "transforms.json").read_text())
    t2 = json.loads((tmp_path / "w2" / "transforms.json").read_text())
    assert t1["features"] == t2["features"] and t1["condition"] == t2["condition"]


def test_split_rule_is_stable_and_seeded():
    rows = np.arange(20000)
    a = assign_split("ab" * 32, rows, 0, (0.8, 0.1, 0.1))
    assert np.array_equal(a[5000:6000], assign_split("ab" * 32, rows[5000:6000], 0, (0.8, 0.1, 0.1)))
    np.testing.assert_allclose(np.bincount(a) / rows.size, [0.8, 0.1, 0.1], atol=0.01)
    assert not np.array_equal(a, assign_split("ab" * 32, rows, 1, (0.8, 0.1, 0.1)))
    assert not np.array_equal(a, assign_split("cd" * 32, rows, 0, (0.8, 0.1, 0.1)))
    assert set(assign_split("ab" * 32, rows, 0, (1.0, 0.0, 0.0)).tolist()) == {0}


def _row_splits(out: Path) -> dict[int, str]:
    return {int(r): s for s in ("train", "val", "test") for r in pq.read_table(out / f"{s}.parquet")["row"].to_pylist()}


def test_split_follows_the_jets_not_the_file_bytes(tmp_path):
    """The same jets written under another name, format, row grouping, compression and provenance (and by
    plain h5py with (N, 1) scalar columns) split the same way: the key is the jets' kinematics, and each
    row's split is the documented rule's. One changed pt changes the key and the split."""
    x, pt, m0, y = jets(200, 5)
    writers = {
        "a.parquet": dict(config={"argv": ["make-data", "--out", "a.parquet"]}, row_group_size=64),
        "b.h5": dict(config={"argv": ["somewhere/else", "b.h5"], "note": "other version"}),
        "c.parquet": dict(config=None, compression=None),
    }
    for name, kw in writers.items():
        with E2EWriter(tmp_path / name, **kw) as w:
            w.write(x, pt, m0, y)
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["X_jets"] = x.transpose(0, 2, 3, 1)
        for k, v in (("pt", pt), ("m0", m0), ("y", y)):
            f[k] = np.asarray(v, np.float32).reshape(-1, 1)
    pt2 = pt.copy()
    pt2[17] += 1.0
    with E2EWriter(tmp_path / "d.parquet") as w:
        w.write(x, pt2, m0, y)
    same = [*writers, "e.h5"]
    got, keys = {}, {}
    for name in [*same, "d.parquet"]:
        out = tmp_path / f"hits_{name}"
        preprocess([tmp_path / name], out, split=(0.5, 0.25, 0.25), seed=3, progress=False)
        got[name] = _row_splits(out)
        keys[name] = json.loads((out / "manifest.json").read_text())["inputs"][0]["split_key"]
    assert len({(tmp_path / n).read_bytes() for n in same}) == len(same)  # the bytes differ ...
    assert all(got[n] == got["a.parquet"] for n in same)  # ... the split does not
    # closed form of the documented key: sha256(tag, int64 n, float32 LE pt, m0, y), and the rule per row
    import hashlib

    ref = hashlib.sha256(b"e2econd-split-key-v2" + np.int64(200).tobytes())
    for col in (pt, m0, y):
        ref.update(col.astype("<f4").tobytes())
    assert all(keys[n] == ref.hexdigest() for n in same) and jets_key(pt, m0, y) == ref.hexdigest()
    rule = assign_split(ref.hexdigest(), np.arange(200), 3, (0.5, 0.25, 0.25))
    assert got["a.parquet"] == {r: ("train", "val", "test")[s] for r, s in enumerate(rule)}
    assert keys["d.parquet"] != keys["a.parquet"] and got["d.parquet"] != got["a.parquet"]


def test_cli_options_threshold_negatives_max_hits(tmp_path):
    f = write_jets(tmp_path / "in.parquet", 30, 3)
    x = read_e2e(f).images
    out = tmp_path / "hits"
    r = CliRunner().invoke(
        main,
        [
            "preprocess",
            str(f),
            "--out",
            str(out),
            "--threshold",
            "0.5",
            "--negatives",
            "drop",
            "--max-hits",
            "12",
            "--split",
            "0.5,0.25,0.25",
            "--seed",
            "7",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["options"] == {
        "threshold": 0.5,
        "negatives": "drop",
        "max_hits": 12,
        "split": [0.5, 0.25, 0.25],
        "seed": 7,
        "chunk_size": 256,
    }
    store = HitStore(out, ["train", "val", "test"])
    for i in range(len(store)):
        img = x[store.jets["row"][i]]
        for c, hs in enumerate(store.hits(i)):
            assert len(hs) <= 12 and np.all(hs.e > 0)
            kept = img[c][img[c] > 0.5].astype(np.float64)
            if c == 2:
                kept = kept[::25] * 25 if kept.size else kept  # towers
            # kept + dropped energy = all energy above the threshold
            total = float(np.sum(hs.e, dtype=np.float64)) + store.jets[f"dropped_{('tracks', 'ecal', 'hcal')[c]}"][i]
            assert total == pytest.approx(kept.sum(), rel=1e-6)
    # existing output: refused without --overwrite, replaced with it
    r = CliRunner().invoke(main, ["preprocess", str(f), "--out", str(out), "-q"])
    assert r.exit_code != 0 and "exists" in r.output
    r = CliRunner().invoke(main, ["preprocess", str(f), "--out", str(out), "-q", "--overwrite"])
    assert r.exit_code == 0 and json.loads((out / "manifest.json").read_text())["options"]["threshold"] == 0.0


def test_help_documents_negatives_default():
    r = CliRunner().invoke(main, ["preprocess", "--help"])
    assert r.exit_code == 0
    for opt in ("--out", "--threshold", "--max-hits", "--split", "--workers", "--negatives", "--overwrite"):
        assert opt in r.output
    assert "default: keep" in r.output


# --------------------------------------------------------------------------------------------
# bad input


def _parquet_table(x, pt, m0, y, shape=(3, 125, 125)):
    n = len(x)
    vals = pa.array(x.reshape(-1).astype(np.float64))
    a, b, c = shape
    l3 = pa.ListArray.from_arrays(pa.array(np.arange(n * a * b + 1, dtype=np.int32) * c), vals)
    l2 = pa.ListArray.from_arrays(pa.array(np.arange(n * a + 1, dtype=np.int32) * b), l3)
    l1 = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * a), l2)
    return {"X_jets": l1, "pt": pa.array(pt), "m0": pa.array(m0), "y": pa.array(y)}


def bad_truncated_parquet(p):
    write_jets(p, 6)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def bad_corrupt_parquet(p):
    write_jets(p, 6, row_group_size=2)
    md = pq.ParquetFile(p).metadata
    off = md.row_group(1).column(0).data_page_offset
    data = bytearray(p.read_bytes())
    data[off : off + 64] = b"\xff" * 64
    p.write_bytes(bytes(data))


def bad_missing_column(p):
    x, pt, m0, y = jets(4)
    cols = _parquet_table(x, pt, m0, y)
    del cols["pt"]
    pq.write_table(pa.table(cols), p)


def bad_wrong_shape_parquet(p):
    x, pt, m0, y = jets(4)
    pq.write_table(pa.table(_parquet_table(x[..., :124], pt, m0, y, shape=(3, 125, 124))), p)


def bad_nan_pixel_parquet(p):
    x, pt, m0, y = jets(5)
    x[3, 1, 10, 10] = np.nan
    pq.write_table(pa.table(_parquet_table(x, pt, m0, y)), p, row_group_size=1)


def bad_null_pt_parquet(p):
    x, pt, m0, y = jets(4)
    cols = _parquet_table(x, pt, m0, y)
    cols["pt"] = pa.array([1.0, 2.0, None, 4.0])
    pq.write_table(pa.table(cols), p)


def bad_empty_file(p):
    p.write_bytes(b"")


def bad_zero_rows(p):
    with E2EWriter(p):
        pass


def bad_not_e2e(p):
    p.write_text("x,y\n1,2\n")


def bad_truncated_h5(p):
    write_jets(p, 16)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.6)])


def bad_missing_label_h5(p):
    x, pt, m0, _ = jets(3)
    with h5py.File(p, "w") as f:
        f["X_jets"], f["pt"], f["m0"] = x.transpose(0, 2, 3, 1), pt, m0


def bad_wrong_shape_h5(p):
    x, pt, m0, y = jets(3)
    with h5py.File(p, "w") as f:
        f["X_jets"], f["pt"], f["m0"], f["y"] = x, pt, m0, y  # channel-first: wrong for HDF5


def bad_inf_pixel_h5(p):
    x, pt, m0, y = jets(12)
    x[9, 2, 0, 0] = np.inf
    with h5py.File(p, "w") as f:
        f.create_dataset("X_jets", data=x.transpose(0, 2, 3, 1), chunks=(4, 125, 125, 3))
        f["pt"], f["m0"], f["y"] = pt, m0, y


def bad_nan_mass_h5(p):
    x, pt, m0, y = jets(3)
    m0[1] = np.nan
    with h5py.File(p, "w") as f:
        f["X_jets"], f["pt"], f["m0"], f["y"] = x.transpose(0, 2, 3, 1), pt, m0, y


def bad_length_mismatch_h5(p):
    x, pt, m0, y = jets(3)
    with h5py.File(p, "w") as f:
        f["X_jets"], f["pt"], f["m0"], f["y"] = x.transpose(0, 2, 3, 1), pt[:2], m0, y


def bad_negative_pt(p):
    x, pt, m0, y = jets(3)
    pt[2] = -5.0
    with E2EWriter(p, format="parquet") as w:
        w.write(x, pt, m0, y)


BAD = {
    "truncated_parquet": (bad_truncated_parquet, ".parquet", "truncated"),
    "corrupt_parquet": (bad_corrupt_parquet, ".parquet", "corrupt"),
    "missing_column": (bad_missing_column, ".parquet", "key 'pt': missing column"),
    "wrong_shape_parquet": (bad_wrong_shape_parquet, ".parquet", "row 0: wrong image shape"),
    "nan_pixel_parquet": (bad_nan_pixel_parquet, ".parquet", "row 3: non-finite pixel"),
    "null_pt_parquet": (bad_null_pt_parquet, ".parquet", "key 'pt', row 2: missing value"),
    "empty_file": (bad_empty_file, ".parquet", "empty file"),
    "zero_rows": (bad_zero_rows, ".parquet", "contains no jets"),
    "not_e2e": (bad_not_e2e, ".csv", "not an E2E file"),
    "truncated_h5": (bad_truncated_h5, ".h5", "HDF5"),
    "missing_label_h5": (bad_missing_label_h5, ".h5", "key 'y': missing dataset"),
    "wrong_shape_h5": (bad_wrong_shape_h5, ".h5", "wrong image shape"),
    "inf_pixel_h5": (bad_inf_pixel_h5, ".h5", "row 9: non-finite pixel"),
    "nan_mass_h5": (bad_nan_mass_h5, ".h5", "key 'm0', row 1: non-finite"),
    "length_mismatch_h5": (bad_length_mismatch_h5, ".h5", "key 'pt'"),
    "negative_pt": (bad_negative_pt, ".bin", "key 'pt', row 2: non-positive"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_error_no_output(tmp_path, case):
    make, suffix, expect = BAD[case]
    bad = tmp_path / f"bad_{case}{suffix}"
    make(bad)
    good = write_jets(tmp_path / "good.parquet", 8, row_group_size=2)
    out = tmp_path / "out"
    # the good file first, so that processing has started when the bad one is hit
    r = CliRunner().invoke(main, ["preprocess", str(good), str(bad), "--out", str(out), "--chunk-size", "2"])
    assert r.exit_code != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and bad.name in lines[0] and expect in lines[0], lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([bad.name, "good.parquet"])  # no temp dir left


def test_bad_input_with_workers_leaves_nothing(tmp_path):
    good = write_jets(tmp_path / "good.parquet", 40, row_group_size=4)
    bad = tmp_path / "bad.h5"
    bad_inf_pixel_h5(bad)
    r = CliRunner().invoke(
        main, ["preprocess", str(good), str(bad), "--out", str(tmp_path / "o"), "-j", "2", "--chunk-size", "4"]
    )
    assert r.exit_code != 0 and "bad.h5" in r.stderr and "row 9" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5", "good.parquet"]


def test_bad_options_and_export_errors(tmp_path):
    good = write_jets(tmp_path / "good.parquet", 4)
    for args, expect in (
        (["--split", "0.5,0.5"], "--split"),
        (["--threshold", "-1"], "--threshold"),
        (["--max-hits", "0"], "--max-hits"),
    ):
        r = CliRunner().invoke(main, ["preprocess", str(good), "--out", str(tmp_path / "o"), *args])
        assert r.exit_code != 0 and expect in r.stderr and not (tmp_path / "o").exists()
    r = CliRunner().invoke(main, ["export", str(tmp_path), "--out", str(tmp_path / "x.parquet")])
    assert r.exit_code != 0 and "manifest.json" in r.stderr
    assert not (tmp_path / "x.parquet").exists()
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def test_tiny_input_with_empty_splits(tmp_path):
    """Two jets split 0.5/0.25/0.25: some splits (or chunks of the train split) are empty."""
    f = write_jets(tmp_path / "two.parquet", 2, 5)
    outcomes = set()
    for seed in range(8):
        out = tmp_path / f"hits{seed}"
        try:
            preprocess(
                [f],
                out,
                split=(0.5, 0.25, 0.25),
                seed=seed,
                threshold=0.5,
                negatives="drop",
                max_hits=12,
                progress=False,
            )
        except E2EInputError as exc:  # both jets landed outside train: nothing to fit on
            assert "train split is empty" in str(exc) and not out.exists()
            outcomes.add("empty train")
            continue
        store = HitStore(out, ["train", "val", "test"])
        assert len(store) == 2 and len(HitStore(out, "train")) >= 1
        outcomes.add("ok")
    assert "ok" in outcomes


def test_progress_switches(fixture_hits, tmp_path):
    """--progress draws the bar on stderr, --no-progress and the default (stderr not a terminal) do not."""
    for flag, expect_bar in (("--progress", True), ("--no-progress", False), (None, False)):
        out = tmp_path / f"p{flag}.h5"
        r = CliRunner().invoke(
            main, ["export", str(fixture_hits), "--out", str(out), "--split", "test"] + ([flag] if flag else [])
        )
        assert r.exit_code == 0, r.output
        assert ("export:" in r.stderr and "jet" in r.stderr) == expect_bar, (flag, r.stderr)
