"""The tower family end to end on real-format fixture jets: training (exact resume, logged losses),
the run directory (family recorded, extras restored), sampling (decoded images obey the detector's
tower structure and the stage-1 summary), the CLI (``--model towers``), and the decoder's pieces
against brute-force oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from e2econd.data.e2e_io import read_e2e
from e2econd.data.towers import (
    TowerLayout,
    TowerTransform,
    images_to_tokens,
    jet_summary,
    summary_names,
    top_k_presence,
)
from e2econd.families.towers import SummaryNorm, decode_tokens, feature_weights, scale_positive
from e2econd.rundir import load_checkpoint, load_run
from e2econd.sample import Generator, SampleOptions, sample_to_file
from e2econd.train import train

pytestmark = pytest.mark.usefixtures("one_thread")
ALL = TowerLayout.of(["tracks", "ecal", "hcal"])


@pytest.fixture(scope="module")
def tower_run(real_hitdir, tower_config, tmp_path_factory):
    run = tmp_path_factory.mktemp("towers") / "run"
    train(real_hitdir, run, tower_config(), device="cpu", progress=False)
    return run


def test_run_records_family_and_restores_extras(tower_run, real_hitdir):
    ck = load_checkpoint(tower_run / "checkpoints" / "last.pt")
    assert ck["family"] == "towers" and ck["config"]["model"]["family"] == "towers"
    assert json.loads((tower_run / "config.json").read_text())["model"]["family"] == "towers"
    run = load_run(tower_run)
    tf = run.extras["tower_transform"]
    assert tf.n_features == 2 + 2 * 51 + 3  # coordinates, presence + value per cell, tower sums, readout bit
    assert type(run.model).__name__ == "TowerTransformer"
    rows = [json.loads(x) for x in (tower_run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(np.isfinite(losses))
    assert any("val_loss" in r for r in rows)


def test_resume_is_exact(real_hitdir, tower_config, tmp_path):
    cfg = tower_config(cond_drop=0.3)
    train(real_hitdir, tmp_path / "full", cfg, device="cpu", progress=False)
    train(real_hitdir, tmp_path / "part", cfg, device="cpu", progress=False, stop_at=3)
    train(real_hitdir, tmp_path / "part", None, resume=True, device="cpu", progress=False)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=False)
    assert b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    for k, v in a["multiplicity"]["state"].items():  # the stage-1 model is restored, not refitted
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["multiplicity"]["state"][k])), k


@pytest.mark.parametrize("presence", ["count", "sign"])
def test_sampled_images_obey_tower_structure_and_summary(tower_run, presence):
    run = load_run(tower_run)
    gen = Generator(run, SampleOptions(steps=4, seed=3, presence=presence, batch_size=5))
    n = 12
    pt, m0, y = np.full(n, 500.0), np.full(n, 170.0), np.arange(n) % 2
    images = gen.generate(pt, m0, y, chunk_index=0)
    assert images.shape == (n, 3, 125, 125) and np.isfinite(images).all()
    assert (images[:, 0] >= 0).all() and (images[:, 2] >= 0).all()  # tracks and HCAL: no negative values
    h = images[:, 2].reshape(n, 25, 5, 25, 5)
    assert (h == h[:, :, :1, :, :1]).all()  # every HCAL 5x5 block uniform
    tok = images_to_tokens(images, ALL)
    assert (tok.counts <= 625).all() and tok.counts.sum() > 0
    again = Generator(run, SampleOptions(steps=4, seed=3, presence=presence, batch_size=5)).generate(pt, m0, y, 0)
    np.testing.assert_array_equal(images, again)  # reproducible for a seed


def test_decode_keeps_summary_counts_and_sums():
    """count presence + rescale: per jet and channel exactly the summary's cell count (when enough cells
    are positive) and its energy sum; tokens on distinct towers."""
    rng = np.random.default_rng(0)
    counts = np.array([30, 5, 60])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    T = offsets[-1]
    tf = TowerTransform(ALL, [12, 12], [5, 5], [1.0, 0.1, 2.0], [0, 0, 0], [1, 1, 1])
    coords = rng.uniform(5, 19, (T, 2))
    score = rng.normal(size=(T, 51))
    values = np.abs(rng.lognormal(0, 1, (T, 51)))
    names = summary_names(ALL)
    summ = np.zeros((3, len(names)))
    summ[:, names.index("n_towers")] = counts
    want_n = {"tracks": [7, 3, 40], "ecal": [100, 20, 300], "hcal": [10, 2, 30]}
    want_e = {"tracks": [50.0, 10.0, 400.0], "ecal": [80.0, 5.0, 250.0], "hcal": [60.0, 1.0, 90.0]}
    for c in ALL.channels:
        summ[:, names.index(f"n_{c}")] = want_n[c]
        summ[:, names.index(f"e_{c}")] = want_e[c]
    summ[:, names.index("hcal_central")] = [1, 0, 1]
    tok = decode_tokens(coords, score, values, offsets, summ, tf, rescale=True, presence="count")
    s = jet_summary(tok)
    for c in ALL.channels:
        np.testing.assert_array_equal(s[:, names.index(f"n_{c}")], want_n[c])
        np.testing.assert_allclose(s[:, names.index(f"e_{c}")], want_e[c], rtol=1e-9)
    for j in range(3):
        p = tok.pos[tok.offsets[j] : tok.offsets[j + 1]]
        assert len({(int(a), int(b)) for a, b in p}) == len(p)
    np.testing.assert_array_equal(s[:, names.index("hcal_central")], [1, s[1, names.index("hcal_central")], 1])


def test_top_k_presence_matches_brute_force():
    rng = np.random.default_rng(1)
    counts = np.array([0, 3, 7, 1])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    score = rng.integers(-3, 4, (offsets[-1], 5)).astype(float)  # many ties
    k = np.array([2, 4, 50, 0])
    got = top_k_presence(score, offsets, k)
    for j in range(4):
        rows = np.arange(offsets[j], offsets[j + 1])
        cells = [(-score[r, c], r, c) for r in rows for c in range(5)]
        chosen = {(r, c) for _, r, c in sorted(cells)[: k[j]]}
        want = np.zeros((len(rows), 5), bool)
        for r, c in chosen:
            want[r - offsets[j], c] = True
        np.testing.assert_array_equal(got[rows], want)


def test_tower_sums_round_trip_and_weights(e2e_fixtures):
    images = read_e2e(sorted(e2e_fixtures.glob("*.parquet"))[1]).images
    tok = images_to_tokens(images, ALL)
    tf = TowerTransform.fit(tok, sums=True)
    x = tf.forward(tok.pos, tok.cells)
    coords, score, values, sums, full = tf.split(x)
    np.testing.assert_array_equal(full, (tok.cells[:, ALL.slots("ecal")] != 0).all(1))
    want = np.stack([tok.cells[:, ALL.slots(c)].sum(1) for c in ("tracks", "ecal")], 1)
    np.testing.assert_allclose(sums, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(coords, tok.pos, atol=1e-5)
    assert ((score > 0) == (tok.cells != 0)).all()
    again = TowerTransform.from_dict(json.loads(json.dumps(tf.to_dict())))
    np.testing.assert_array_equal(again.forward(tok.pos, tok.cells), x)
    w = feature_weights(51, 3)
    assert w.shape == (107,) and abs(float(w.mean()) - 1) < 1e-6
    assert abs(float(w[:2].sum()) - float(w[2:53].sum())) < 1e-4  # equal shares per group
    norm = SummaryNorm.fit(jet_summary(tok), norm_kinds())
    np.testing.assert_allclose(norm(jet_summary(tok)).mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_array_equal(SummaryNorm.from_dict(norm.to_dict())(jet_summary(tok)), norm(jet_summary(tok)))


def norm_kinds():
    from e2econd.data.towers import summary_kinds

    return summary_kinds(ALL)


@pytest.mark.parametrize("extra", [[], ["--objective", "edm", "--loss-balance", "channel"]])
def test_cli_trains_and_samples_towers(real_hitdir, tower_config, tmp_path, extra):
    """Both the default objective and edm (with the channel balance of the cell groups) train and sample."""
    from click.testing import CliRunner

    from e2econd.cli import main
    from e2econd.config import save

    cfg = tmp_path / "c.json"
    save(tower_config(max_steps=2), cfg)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        ["train", str(real_hitdir), "--model", "towers", "--config", str(cfg), "--out", str(out), "--no-progress"]
        + extra,
    )
    assert r.exit_code == 0, r.output
    gen = tmp_path / "g.parquet"
    r = CliRunner().invoke(
        main, ["sample", str(out), "--pt", "500", "--num-jets", "6", "--steps", "3", "--out", str(gen), "--json"]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[r.output.index("{") :])
    assert summary["sampler"] == ("heun" if extra else "dpmpp2m") and summary["nfe"] == (5 if extra else 3)
    chunk = read_e2e(gen)
    assert chunk.images.shape == (6, 3, 125, 125) and np.all(chunk.pt == 500.0)
    assert np.isfinite(chunk.images).all()
    r = CliRunner().invoke(main, ["sample", str(out), "--presence", "sometimes", "--out", str(tmp_path / "x.parquet")])
    assert r.exit_code != 0 and "presence" in r.output
    assert not (tmp_path / "x.parquet").exists()


def test_sample_to_file_provenance_names_the_family(tower_run, tmp_path):
    from e2econd.data.e2e_io import read_provenance

    out = tmp_path / "g.h5"
    summary = sample_to_file(tower_run, out, SampleOptions(n=3, pt=450.0, steps=2), progress=False)
    assert summary["family"] == "towers"
    prov = read_provenance(out)
    assert prov["config"]["family"] == "towers"
    assert prov["config"]["options"]["presence"] == "count" and prov["config"]["options"]["rescale"] is True


def test_decode_reads_whole_ecal_towers():
    """Tokens with the full-readout bit keep all 25 ECAL crystals; the summary's ECAL count is filled up
    by the highest-scoring crystals of the other tokens, never counted twice."""
    rng = np.random.default_rng(3)
    offsets = np.array([0, 6])
    tf = TowerTransform(ALL, [12, 12], [5, 5], [1.0, 0.1, 2.0], [0, 0, 0], [1, 1, 1])
    coords = rng.uniform(8, 16, (6, 2))
    score, values = rng.normal(size=(6, 51)), np.abs(rng.lognormal(0, 1, (6, 51)))
    names = summary_names(ALL)
    summ = np.zeros((1, len(names)))
    summ[0, names.index("n_towers")] = 6
    summ[0, names.index("n_ecal")] = 60  # two whole towers (50 crystals) + 10 more
    summ[0, names.index("n_tracks")] = summ[0, names.index("n_hcal")] = 3
    full = np.array([True, False, True, False, False, False])
    tok = decode_tokens(coords, score, values, offsets, summ, tf, rescale=False, presence="count", full=full)
    ecal = tok.cells[:, ALL.slots("ecal")] != 0
    assert ecal.sum() == 60
    assert (ecal.sum(1) == 25).sum() >= 2
    # the 10 extra crystals are the highest-scoring ones outside the whole towers (values are distinct)
    sl = ALL.slots("ecal")
    rest = np.where(full[:, None], -np.inf, score[:, sl])
    top = np.argsort(-rest.ravel(), kind="stable")[:10]
    want = set(values[:, sl].ravel()[top].tolist()) | set(values[full][:, sl].ravel().tolist())
    assert set(tok.cells[:, sl][ecal].tolist()) == want


def test_decode_scales_signal_not_noise_of_a_cancelling_tower():
    """A tower is brought to its generated tower energy by scaling its positive cells only: negative ECAL
    cells are noise and keep their values, so a tower whose noise nearly cancels its signal is not blown
    up, and a tower without noise is scaled exactly."""
    offsets = np.array([0, 2])
    sums_fit = [[1.0, 0.1], [0.0, 0.0], [1.0, 1.0]]  # (e0, mu, sd) of the tracks and ECAL tower energies
    tf = TowerTransform(ALL, [12, 12], [5, 5], [1.0, 0.1, 2.0], [0, 0, 0], [1, 1, 1], sums=sums_fit)
    coords = np.array([[10.0, 10.0], [14.0, 14.0]])
    sl = ALL.slots("ecal")
    score, values = np.full((2, 51), -1.0), np.zeros((2, 51))
    two = slice(sl.start, sl.start + 2)  # the first two ECAL crystals of each tower
    score[:, two] = 1.0
    values[0, two] = [1000.0, -999.9]  # sum 0.1: a plain ratio 50 / 0.1 would make 5·10^5 GeV of it
    values[1, two] = [3.0, 1.0]  # sum 4, no negatives
    sums = np.array([[0.0, 50.0], [0.0, 8.0]])  # generated tower energies (tracks, ECAL), GeV
    names = summary_names(ALL)
    summ = np.zeros((1, len(names)))
    summ[0, names.index("n_towers")] = 2
    tok = decode_tokens(coords, score, values, offsets, summ, tf, rescale=False, presence="sign", sums=sums)
    ecal = tok.cells[:, sl]
    np.testing.assert_allclose(ecal[:, :2], [[1049.9, -999.9], [6.0, 2.0]], rtol=1e-12)
    np.testing.assert_allclose(ecal.sum(1), [50.0, 8.0], rtol=1e-12)
    assert not ecal[:, 2:].any() and not tok.cells[:, ALL.slots("tracks")].any()


def test_scale_positive_against_a_loop():
    """Rows and groups of rows reach their wanted sums through their positive cells alone."""
    rng = np.random.default_rng(5)
    v = rng.normal(1.0, 2.0, (40, 6))
    v[3] = -np.abs(v[3])  # no positive cell: left alone
    for g in (None, np.sort(rng.integers(0, 7, 40))):
        n = 40 if g is None else 7
        w = rng.uniform(1, 30, n)
        w[2] = 0.0  # nothing wanted: left alone
        got = scale_positive(v, w, g)
        ref = v.copy()
        for i in range(n):
            rows = [i] if g is None else np.flatnonzero(g == i)
            x = v[rows]
            p, n = x[x > 0].sum(), x[x < 0].sum()
            if p > 0 and w[i] > 0:
                ref[rows] = np.where(x > 0, x * (w[i] - n) / p, x)
                np.testing.assert_allclose(got[rows].sum(), w[i], rtol=1e-12)
        np.testing.assert_allclose(got, ref, rtol=1e-12)
        np.testing.assert_array_equal(got[v <= 0], v[v <= 0])


def test_decoded_ecal_noise_stays_above_the_floor_through_the_scalings():
    """With a fitted floor, no decoded ECAL crystal is below it, however hard the tower and jet energy
    scalings pull (here ×10 and more)."""
    rng = np.random.default_rng(2)
    counts = np.array([8, 12])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    T = offsets[-1]
    sums_fit = [[1.0, 0.1], [0.0, 0.0], [1.0, 1.0]]
    tf = TowerTransform(
        ALL, [12, 12], [5, 5], [1.0, 0.1, 2.0], [0, 0, 0], [1, 1, 1], sums=sums_fit, floor=[0.0, -0.25, 0.0]
    )
    coords = rng.uniform(5, 19, (T, 2))
    score = rng.normal(size=(T, 51))
    values = np.maximum(rng.normal(0.5, 1.0, (T, 51)), -0.25)  # noise down to the floor
    sums = rng.uniform(5, 50, (T, 2))
    names = summary_names(ALL)
    summ = np.zeros((2, len(names)))
    summ[:, names.index("n_towers")] = counts
    for c, e in (("tracks", 80.0), ("ecal", 3000.0), ("hcal", 40.0)):
        summ[:, names.index(f"e_{c}")] = e
    tok = decode_tokens(coords, score, values, offsets, summ, tf, rescale=True, presence="sign", sums=sums)
    ecal = tok.cells[:, ALL.slots("ecal")]
    assert (ecal < 0).any() and ecal.min() >= -0.25
    np.testing.assert_allclose(jet_summary(tok)[:, names.index("e_ecal")], 3000.0, rtol=1e-9)
