"""Bad input beyond ``preprocess``, through the CLI: each case exits with status 2 and a one-line
``error: ...`` naming the file or key, and leaves nothing behind (no output file or directory, a
run directory unchanged). Training that meets a NaN/inf loss stops with a clear error and keeps
its last good checkpoint. Uses the session's toy hit directory and trained toy run (tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from e2econd.cli import main
from e2econd.rundir import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def fails(args, *needles) -> str:
    """Run ``e2econd ARGS``; assert exit status 2 and one ``error:`` line holding every needle."""
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def snapshot(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def hits(toy_data, tmp_path) -> Path:
    """A private copy of the toy hit directory, to damage."""
    return Path(shutil.copytree(toy_data, tmp_path / "hits"))


@pytest.fixture
def run(toy_run, tmp_path) -> Path:
    """A private copy of the trained toy run, to damage."""
    return Path(shutil.copytree(toy_run[0], tmp_path / "run"))


@pytest.fixture
def tiny_cfg(tmp_path) -> Path:
    from e2econd.config import Config, ModelConfig, MultiplicityConfig, save

    cfg = Config(
        model=ModelConfig(width=16, blocks=1, heads=2, cond_width=16, fourier_features=4),
        multiplicity=MultiplicityConfig(components=2, hidden=8, steps=20),
    )
    cfg.data.channels = ["ecal"]
    for k, v in dict(
        max_steps=20, batch_size=32, warmup_steps=2, val_every=10**6, ckpt_every=1, log_every=1, bucket_pool=2
    ).items():
        setattr(cfg.train, k, v)
    path = tmp_path / "tiny.json"
    save(cfg, path)
    return path


def train_args(hits, out, cfg, *extra):
    return ["train", hits, "--out", out, "--config", cfg, "--device", "cpu", "--no-progress", *extra]


# ------------------------------------------------------------------------------------------- train
@pytest.mark.parametrize("name", ["train.parquet", "transforms.json"])
def test_train_missing_split_or_transforms(hits, tiny_cfg, tmp_path, name):
    (hits / name).unlink()
    out = tmp_path / "out"
    fails(train_args(hits, out, tiny_cfg), name)
    assert not out.exists()


def test_train_resume_from_truncated_checkpoint(hits, run):
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    before = snapshot(run)
    fails(
        ["train", hits, "--out", run, "--resume", "--max-steps", "5000", "--device", "cpu", "--no-progress"],
        "last.pt",
        "truncated",
    )
    assert snapshot(run) == before


def test_train_resume_from_checkpoint_without_optimizer(hits, run):
    last = run / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=False)
    del ck["optimizer"]
    torch.save(ck, last)
    fails(["train", hits, "--out", run, "--resume", "--device", "cpu", "--no-progress"], "last.pt", "'optimizer'")


def test_train_stops_on_non_finite_loss_and_keeps_last_good_checkpoint(hits, tiny_cfg, tmp_path, monkeypatch):
    """The loss turns NaN at step 3: the run stops before updating the weights, last.pt stays step 2."""
    import e2econd.train as T

    real, calls = T.loss_sum, {"n": 0}

    def nan_at_third(*a, **kw):
        calls["n"] += 1
        s = real(*a, **kw)
        return s * float("nan") if calls["n"] == 3 else s

    monkeypatch.setattr(T, "loss_sum", nan_at_third)
    out = tmp_path / "out"
    line = fails(
        train_args(hits, out, tiny_cfg),
        str(out),
        "step 3",
        "not finite",
        "last.pt (step 2) is kept",
        "the run diverged",
    )
    assert "nan" in line
    ck = load_checkpoint(out / "checkpoints" / "last.pt")  # validated: finite weights
    assert ck["step"] == 2
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["event"] == "non_finite" and rows[-1]["step"] == 3
    assert not list(out.rglob("*.tmp"))


def test_train_stops_on_nan_in_the_data(hits, tiny_cfg, tmp_path):
    """A NaN hit energy in one training jet: a clear error, and every checkpoint written is finite."""
    t = pq.read_table(hits / "train.parquet")
    e = t.column("ecal_e").to_pylist()
    e[5][0] = float("nan")
    t = t.set_column(t.schema.get_field_index("ecal_e"), "ecal_e", pa.array(e, t.schema.field("ecal_e").type))
    pq.write_table(t, hits / "train.parquet")
    out = tmp_path / "out"
    jet_id = t.column("jet_id")[5].as_py()
    fails(train_args(hits, out, tiny_cfg), str(out), "not finite", f"jet_id [{jet_id}] hold NaN/inf")
    last = out / "checkpoints" / "last.pt"
    if last.exists():
        assert np.isfinite(load_checkpoint(last)["step"])


# ------------------------------------------------------------------------------------------ sample
def sample_args(run, out, *extra):
    return ["sample", run, "--n", 4, "--steps", 2, "--out", out, "--device", "cpu", "--no-progress", *extra]


def test_sample_missing_checkpoint(run, tmp_path):
    (run / "checkpoints" / "last.pt").unlink()
    out = tmp_path / "gen.h5"
    fails(sample_args(run, out, "--pt", 150), "no checkpoint", str(run))
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_torch"])
def test_sample_unreadable_checkpoint(run, tmp_path, damage):
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"truncated": data[: len(data) // 3], "empty": b"", "not_torch": b"hello\n" * 50}[damage])
    out = tmp_path / "gen.parquet"
    fails(sample_args(run, out, "--pt", 150), "last.pt", "cannot read checkpoint")
    assert not out.exists() and not list(tmp_path.glob("*gen*"))


def test_sample_checkpoint_with_nan_weights(run, tmp_path):
    last = run / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=False)
    name = next(k for k, v in ck["ema"].items() if v.is_floating_point())
    ck["ema"][name][...] = float("nan")
    torch.save(ck, last)
    out = tmp_path / "gen.parquet"
    fails(sample_args(run, out, "--pt", 150), "last.pt", "non-finite weights", name)
    assert not out.exists()


def test_sample_checkpoint_whose_weights_do_not_match_its_config(run, tmp_path):
    last = run / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=False)
    ck["config"]["model"]["width"] = 64  # the stored weights are width 32
    torch.save(ck, last)
    out = tmp_path / "gen.parquet"
    fails(sample_args(run, out, "--pt", 150), "last.pt", "key 'ema'", "does not match its config")
    assert not out.exists()


def _rewrite_test_split(hits: Path, fn) -> None:
    t = pq.read_table(hits / "test.parquet")
    pq.write_table(fn(t), hits / "test.parquet")


def _set(t: pa.Table, key: str, row: int, value: float) -> pa.Table:
    vals = t.column(key).to_numpy().copy()
    vals[row] = value
    return t.set_column(t.schema.get_field_index(key), key, pa.array(vals, t.schema.field(key).type))


@pytest.mark.parametrize(
    "case,needles",
    [
        ("missing_file", ["no_such.parquet", "no such file"]),
        ("missing_dir_split", ["test.parquet missing"]),
        ("no_m0_column", ["test.parquet", "key 'm0'", "lacks the condition column"]),
        ("nan_pt", ["hits", "key 'pt'", "row 1", "nan"]),
        ("negative_m0", ["key 'm0'", "row 0"]),
        ("e2e_file_without_m0", ["noconds.parquet", "key 'm0'", "missing column"]),
        ("e2e_file_with_nan_pt", ["nanpt.parquet", "key 'pt'", "row 2", "non-finite"]),
    ],
)
def test_sample_bad_conditions_from(run, hits, tmp_path, case, needles):
    from e2econd.data.e2e_io import E2EWriter

    src: Path = hits
    if case == "missing_file":
        src = tmp_path / "no_such.parquet"
    elif case == "missing_dir_split":
        (hits / "test.parquet").unlink()
    elif case == "no_m0_column":
        _rewrite_test_split(hits, lambda t: t.drop_columns(["m0"]))
    elif case == "nan_pt":
        _rewrite_test_split(hits, lambda t: _set(t, "pt", 1, float("nan")))
    elif case == "negative_m0":
        _rewrite_test_split(hits, lambda t: _set(t, "m0", 0, -3.0))
    else:
        x = np.zeros((3, 3, 125, 125), np.float32)
        x[:, 1, 62, 62] = 5.0
        pt = np.array([150.0, 160.0, np.nan if case == "e2e_file_with_nan_pt" else 170.0])
        src = tmp_path / ("nanpt.parquet" if case == "e2e_file_with_nan_pt" else "noconds.parquet")
        if case == "e2e_file_with_nan_pt":
            t = pa.table({"X_jets": pa.array([img.tolist() for img in x]), "pt": pt, "m0": [10.0] * 3, "y": [1.0] * 3})
        else:
            with E2EWriter(tmp_path / "full.parquet") as w:
                w.write(x, pt, np.full(3, 10.0), np.ones(3, np.float32))
            t = pq.read_table(tmp_path / "full.parquet").drop_columns(["m0"])
        pq.write_table(t, src)
    out = tmp_path / "gen.parquet"
    fails(sample_args(run, out, "--conditions-from", src), *needles)
    assert not out.exists()


# --------------------------------------------------------------------------------------- make-data
@pytest.mark.parametrize(
    "params,needles",
    [
        ({"ecal_noise_typo": 0.1}, ["key 'detector'", "unknown detector parameter", "ecal_noise_typo"]),
        ({"ecal_a": "big"}, ["key 'ecal_a'", "expected a number"]),
        ({"trk_eff": 1.5}, ["key 'trk_eff'", "[0, 1]"]),
        ({"hcal_noise": -0.2}, ["key 'hcal_noise'", ">= 0"]),
        ({"r_ecal": 0}, ["key 'r_ecal'", "> 0"]),
        ({"had_beta": [1.5]}, ["key 'had_beta'", "two numbers"]),
        ({"ecal_c": float("nan")}, ["key 'ecal_c'", "finite"]),
        ([0.1, 0.2], ["key 'detector'", "JSON object"]),
    ],
)
def test_make_data_bad_detector_option(tmp_path, params, needles):
    det = tmp_path / "det.json"
    det.write_text(json.dumps(params))
    out = tmp_path / "jets.parquet"
    fails(["make-data", "--n", 2, "--out", out, "--detector", det, "--no-progress"], str(det), *needles)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["det.json"]


def test_make_data_detector_file_not_json(tmp_path):
    det = tmp_path / "det.json"
    det.write_text("{ecal_a: 0.1")
    out = tmp_path / "jets.parquet"
    fails(["make-data", "--n", 2, "--out", out, "--detector", det], str(det), "not a JSON object")
    assert not out.exists()
