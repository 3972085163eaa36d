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

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, e2e_fixtures):
    """A three-channel run trained for a few steps on the real-format fixtures (shapes, not quality;
    quality, guidance and the extension/reference comparison use the trained toy model)."""
    from e2econd.config import parse_channels, preset
    from e2econd.data.preprocess import preprocess
    from e2econd.train import train

    root = tmp_path_factory.mktemp("run")
    data = root / "fixtures"
    preprocess(sorted(e2e_fixtures.glob("*.h5")), data, progress=False)
    cfg = preset("cpu")
    cfg.data.channels = parse_channels("all")
    cfg.model.width, cfg.model.blocks, cfg.model.heads, cfg.model.cond_width = 16, 1, 2, 32
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.val_every, cfg.train.ckpt_every = 3, 4, 100, 100
    cfg.multiplicity.steps = 60
    train(data, root / "run", cfg, device="cpu", progress=False)
    return root / "run", data


def _cli(*args):
    """``e2econd ARGS --device cpu`` (pinned, so the tests mean the same on a GPU machine)."""
    return CliRunner().invoke(main, [str(a) for a in args] + ["--device", "cpu"], catch_exceptions=False)


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

    table = {
        "pt": np.array([100.0, 101, 102, 500, 501]),
        "m0": np.array([10.0, 11, 12, 50, 51]),
        "y": np.array([0, 1, 0, 1, 1]),
    }
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


def _toy_batch(run, n_per_jet=(5, 40, 17), y=(0, 1, 1)):
    """A packed ECAL batch for the toy model: channel ids, cu_seqlens, standardised conditions at 150 GeV."""
    from e2econd.data.geometry import CHANNELS

    lengths = torch.tensor(n_per_jet)
    cu = torch.zeros(len(n_per_jet) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    channel = torch.full((int(lengths.sum()),), CHANNELS.index("ecal"))
    c = run.transforms.condition.forward(np.full(len(y), 150.0), np.full(len(y), 15.0))
    cond = {
        "pt": torch.tensor(c[:, 0], dtype=torch.float32),
        "m0": torch.tensor(c[:, 1], dtype=torch.float32),
        "y": torch.tensor(y),
    }
    return channel, cu, cond, int(lengths.max())


def test_extension_and_reference_paths_agree(toy_run):
    """The same plan through the compiled ops and through the pure-PyTorch references, on the trained
    toy model (its output is far from zero, so a wrong op would show)."""
    from e2econd.diffusion.samplers import make_plan, run_plan
    from e2econd.ops import reference_mode
    from e2econd.rundir import load_run

    loaded = load_run(toy_run[0], "cpu")
    channel, cu, cond, max_len = _toy_batch(loaded)

    def denoise(x, t):
        return loaded.model.forward_packed(x, channel, cu, torch.full((3,), t), cond, max_seqlen=max_len)

    x0 = torch.randn(channel.numel(), 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = denoise(x0, 0.5)
        assert v.abs().mean() > 0.3, "the toy model's output should be far from zero"
    for name in ("ddpm", "dpmpp2m"):
        plan = make_plan(name, 6)
        with torch.no_grad():
            a = run_plan(denoise, x0.clone(), plan, seed=11)
            with reference_mode():
                b = run_plan(denoise, x0.clone(), plan, seed=11)
            zero = run_plan(lambda x, t: torch.zeros_like(x), x0.clone(), plan, seed=11)
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)
        assert (a - zero).abs().mean() > 0.1, "the model must change the result for the comparison to mean much"


def test_guidance_is_v_uncond_plus_w_times_difference(toy_run):
    """The sampler's guided denoiser equals v_u + w (v_c - v_u) computed from two network calls."""
    from e2econd.rundir import load_run
    from e2econd.sample import Generator, SampleOptions

    loaded = load_run(toy_run[0], "cpu")
    channel, cu, cond, max_len = _toy_batch(loaded)
    x = torch.randn(channel.numel(), 3, generator=torch.Generator().manual_seed(3))
    model = loaded.model
    with torch.no_grad():
        for t in (0.2, 0.7):
            tt = torch.full((3,), t)
            v_c = model.forward_packed(x, channel, cu, tt, cond, None, max_seqlen=max_len)
            v_u = model.forward_packed(x, channel, cu, tt, cond, torch.ones(3, dtype=torch.bool), max_seqlen=max_len)
            assert (v_c - v_u).abs().mean() > 0.05 * v_c.abs().mean(), "conditioning must matter on the toy"
            for w in (0.0, 1.0, 2.5):
                gen = Generator(loaded, SampleOptions(guidance=w, device="cpu"))
                got = gen._network(channel, cu, max_len, cond, 3)(x, t)
                torch.testing.assert_close(got, v_u + w * (v_c - v_u), atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--pt", "-5"], "--pt -5"),
        (["--pt", "100000"], "outside the training range"),
        (["--pt", "100", "--label", "7"], "--label 7"),
        (["--pt", "100", "--steps", "0"], "steps"),
        (["--pt", "100", "--guidance", "-1"], "--guidance"),
    ],
)
def test_bad_conditions_fail_before_work(tiny_run, tmp_path, args, needle):
    run, _ = tiny_run
    out = tmp_path / "gen.parquet"
    res = CliRunner().invoke(main, ["sample", str(run), *args, "--n", "2", "--out", str(out), "--device", "cpu"])
    assert res.exit_code != 0
    assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_run_without_checkpoint_is_refused(tmp_path):
    res = CliRunner().invoke(
        main, ["sample", str(tmp_path), "--pt", "100", "--out", str(tmp_path / "g.h5"), "--device", "cpu"]
    )
    assert res.exit_code != 0 and "no checkpoint" in res.output


def test_ranks_write_shards_and_manifest(tiny_run, tmp_path, monkeypatch):
    from e2econd.sample import SampleOptions, sample_to_file

    run, _ = tiny_run
    out = tmp_path / "gen.parquet"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        sample_to_file(run, out, SampleOptions(n=5, pt=110.0, steps=2, seed=9, device="cpu"), progress=False)
    shards = [tmp_path / "gen.rank000-of-002.parquet", tmp_path / "gen.rank001-of-002.parquet"]
    assert [len(read_e2e(s).pt) for s in shards] == [2, 3]
    manifest = json.loads((tmp_path / "gen.parquet.manifest.json").read_text())
    assert manifest["shards"] == [s.name for s in shards] and manifest["jets"] == 5
    # different ranks use different noise streams
    assert read_e2e(shards[0]).images[0].tobytes() != read_e2e(shards[1]).images[0].tobytes()


@pytest.mark.parametrize("suffix", [".parquet", ".h5"])
def test_chunks_written_from_one_buffer_equal_chunks_generated_alone(tiny_run, tmp_path, suffix):
    """``sample_to_file`` reuses one image buffer for every chunk: the file must hold exactly what each
    chunk generated into its own fresh array gives (the writer may keep nothing of a chunk's buffer)."""
    from e2econd.rundir import load_run
    from e2econd.sample import Generator, SampleOptions, sample_to_file

    run_dir, _ = tiny_run
    opts = SampleOptions(n=7, pt=110.0, steps=2, seed=5, chunk_size=3, device="cpu")
    out = tmp_path / f"gen{suffix}"
    sample_to_file(run_dir, out, opts, progress=False)
    got = read_e2e(out)
    run = load_run(run_dir, torch.device("cpu"))
    gen = Generator(run, opts)
    want = [
        gen.generate(got.pt[s : s + 3], got.m0[s : s + 3], got.y[s : s + 3].astype(np.int64), chunk_index=c)
        for c, s in enumerate(range(0, 7, 3))
    ]
    assert [w.shape[0] for w in want] == [3, 3, 1]
    np.testing.assert_array_equal(got.images, np.concatenate(want))
    assert (got.images[:3] != got.images[3:6]).any()  # chunks differ, so a stale buffer would show


def test_non_finite_decoded_jets_are_refused_and_nothing_is_written(tiny_run, tmp_path, monkeypatch):
    """A decoder defect that leaves NaN in an image must stop the run with NonFiniteError naming the chunk;
    the output file must not appear (the writer's temporary file is removed)."""
    from e2econd.errors import NonFiniteError
    from e2econd.families.hits import HitFamily
    from e2econd.sample import SampleOptions, sample_to_file

    real = HitFamily.generate_batch

    def broken(self, g, idx, *args):
        real(self, g, idx, *args)
        images = args[3]
        images[idx[0], 1, 62, 62] = np.nan

    monkeypatch.setattr(HitFamily, "generate_batch", broken)
    out = tmp_path / "gen.parquet"
    with pytest.raises(NonFiniteError, match=r"1 of 5 decoded jets of chunk 0 hold NaN/inf"):
        sample_to_file(tiny_run[0], out, SampleOptions(n=5, pt=120.0, steps=2, device="cpu"), progress=False)
    assert not out.exists() and not list(tmp_path.iterdir())
