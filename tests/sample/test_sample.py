"""``e2econd sample``: valid E2E output, conditions, reproducibility, reference path, errors, sharding."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from e2econd.cli import main
from e2econd.data.e2e_io import read_e2e

QG_H5 = "E2Esim_QG_IMGjet_R0.4_pu0_n300_seed101.h5"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    """A three-channel run trained for a few steps on the shared quark/gluon file (shapes, not quality)."""
    from e2econd.config import parse_channels, preset
    from e2econd.data.preprocess import preprocess
    from e2econd.train import train

    qg_h5 = shared_data() / QG_H5
    assert qg_h5.exists(), f"shared test data missing: {qg_h5}"
    root = tmp_path_factory.mktemp("run")
    data = root / "qg"
    preprocess([qg_h5], data, progress=False)
    cfg = preset("cpu")
    cfg.data.channels = parse_channels("all")
    cfg.model.width, cfg.model.blocks, cfg.model.heads, cfg.model.cond_width = 16, 1, 2, 32
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.val_every, cfg.train.ckpt_every = 3, 4, 100, 100
    cfg.multiplicity.steps = 60
    train(data, root / "run", cfg, progress=False)
    return root / "run", data


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_sample_writes_valid_e2e_with_requested_conditions(tiny_run, tmp_path):
    run, _ = tiny_run
    out = tmp_path / "gen.parquet"
    res = _cli("sample", run, "--pt", 100, "--n", 6, "--steps", 3, "--out", out)
    assert res.exit_code == 0, res.output
    jets = read_e2e(out)
    assert jets.images.shape == (6, 3, 125, 125)
    np.testing.assert_array_equal(jets.pt, 100.0)
    assert set(np.unique(jets.y)) <= {0.0, 1.0}
    assert np.all(jets.m0 > 0) and np.all(np.isfinite(jets.images))
    assert (jets.images != 0).any(axis=(2, 3)).all(), "every channel of every jet should have hits"
    # HCAL is written as towers: every 5x5 block is uniform
    hcal = jets.images[:, 2].reshape(6, 25, 5, 25, 5)
    assert np.all(hcal == hcal[:, :, :1, :, :1])
    # tracks and HCAL never negative
    assert jets.images[:, 0].min() >= 0 and jets.images[:, 2].min() >= 0


def test_missing_conditions_drawn_from_training_neighbours(tiny_run, tmp_path):
    from e2econd.sample import draw_conditions

    table = {"pt": np.array([100.0, 101, 102, 500, 501]), "m0": np.array([10.0, 11, 12, 50, 51]),
             "y": np.array([0, 1, 0, 1, 1])}
    pt, m0, y = draw_conditions(table, 200, pt=100.5, mass=None, label=None, seed=1, knn=3)
    assert np.all(pt == 100.5) and set(m0) <= {10.0, 11.0, 12.0} and set(y) <= {0, 1}
    pt, m0, y = draw_conditions(table, 50, pt=None, mass=None, label=1, seed=1)
    assert set(y) == {1} and set(pt) <= {101.0, 500.0, 501.0}


def test_same_seed_same_bytes_other_seed_differs(tiny_run, tmp_path):
    run, _ = tiny_run
    outs = []
    for d, seed in (("a", 3), ("b", 3), ("c", 4)):
        (tmp_path / d).mkdir()
        out = tmp_path / d / "gen.h5"
        cwd = os.getcwd()
        os.chdir(tmp_path / d)
        try:
            res = _cli("sample", run, "--pt", 120, "--n", 4, "--steps", 2, "--seed", seed, "--out", "gen.h5")
        finally:
            os.chdir(cwd)
        assert res.exit_code == 0, res.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert read_e2e(tmp_path / "a" / "gen.h5").images.tobytes() != read_e2e(tmp_path / "c" / "gen.h5").images.tobytes()


def test_extension_and_reference_paths_agree(tiny_run):
    """The same plan through the compiled ops and through the pure-PyTorch references."""
    from e2econd.diffusion.samplers import make_plan, run_plan
    from e2econd.ops import reference_mode
    from e2econd.train import load_run

    loaded = load_run(tiny_run[0], "cpu")
    lengths = torch.tensor([5, 40, 17])
    cu = torch.zeros(4, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    channel = torch.randint(0, 3, (int(lengths.sum()),))
    cond = {"pt": torch.zeros(3), "m0": torch.zeros(3), "y": torch.tensor([0, 1, 1])}

    def denoise(x, t):
        return loaded.model.forward_packed(x, channel, cu, torch.full((3,), t), cond, max_seqlen=40)

    x0 = torch.randn(int(lengths.sum()), 3, generator=torch.Generator().manual_seed(0))
    for name in ("ddpm", "dpmpp2m"):
        plan = make_plan(name, 6)
        with torch.no_grad():
            a = run_plan(denoise, x0.clone(), plan, seed=11)
            with reference_mode():
                b = run_plan(denoise, x0.clone(), plan, seed=11)
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


def test_conditions_from_hit_directory_and_preprocess_reads_output(tiny_run, tmp_path):
    import pyarrow.parquet as pq

    from e2econd.data.preprocess import preprocess

    run, data = tiny_run
    out = tmp_path / "gen.parquet"
    res = _cli("sample", run, "--conditions-from", data, "--steps", 2, "--out", out)
    assert res.exit_code == 0, res.output
    ref = pq.read_table(data / "test.parquet", columns=["pt", "m0", "y"]).to_pydict()
    jets = read_e2e(out)
    np.testing.assert_allclose(jets.pt, ref["pt"])
    np.testing.assert_allclose(jets.m0, ref["m0"])
    np.testing.assert_allclose(jets.y, ref["y"])
    # generated files are first-class E2E files
    preprocess([out], tmp_path / "regen", progress=False)
    manifest = json.loads((tmp_path / "regen" / "manifest.json").read_text())
    assert manifest["counts"]["n_jets"] == len(ref["pt"])


def test_guidance_and_channel_subset(tiny_run, tmp_path):
    run, _ = tiny_run
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert _cli("sample", run, "--pt", 100, "--n", 3, "--steps", 2, "--out", a).exit_code == 0
    res = _cli("sample", run, "--pt", 100, "--n", 3, "--steps", 2, "--guidance", 2.0, "--channels", "ecal", "--out", b)
    assert res.exit_code == 0, res.output
    ia, ib = read_e2e(a).images, read_e2e(b).images
    assert not np.any(ib[:, 0]) and not np.any(ib[:, 2]) and np.any(ib[:, 1])
    assert not np.array_equal(ia[:, 1], ib[:, 1])


@pytest.mark.parametrize("args,needle", [
    (["--pt", "-5"], "--pt -5"),
    (["--pt", "100000"], "outside the training range"),
    (["--pt", "100", "--label", "7"], "--label 7"),
    (["--pt", "100", "--steps", "0"], "steps"),
    (["--pt", "100", "--guidance", "-1"], "--guidance"),
])
def test_bad_conditions_fail_before_work(tiny_run, tmp_path, args, needle):
    run, _ = tiny_run
    out = tmp_path / "gen.parquet"
    res = CliRunner().invoke(main, ["sample", str(run), *args, "--n", "2", "--out", str(out)])
    assert res.exit_code != 0
    assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_run_without_checkpoint_is_refused(tmp_path):
    res = CliRunner().invoke(main, ["sample", str(tmp_path), "--pt", "100", "--out", str(tmp_path / "g.h5")])
    assert res.exit_code != 0 and "no checkpoint" in res.output


def test_ranks_write_shards_and_manifest(tiny_run, tmp_path, monkeypatch):
    from e2econd.sample import SampleOptions, sample_to_file

    run, _ = tiny_run
    out = tmp_path / "gen.parquet"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        sample_to_file(run, out, SampleOptions(n=5, pt=110.0, steps=2, seed=9), progress=False)
    shards = [tmp_path / "gen.rank000-of-002.parquet", tmp_path / "gen.rank001-of-002.parquet"]
    assert [len(read_e2e(s).pt) for s in shards] == [2, 3]
    manifest = json.loads((tmp_path / "gen.parquet.manifest.json").read_text())
    assert manifest["shards"] == [s.name for s in shards] and manifest["jets"] == 5
    # different ranks use different noise streams
    assert read_e2e(shards[0]).images[0].tobytes() != read_e2e(shards[1]).images[0].tobytes()
