"""End-to-end evaluation: self-comparison ≈ floor, energy scaling is detected, hit-dir input, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from e2econd.cli import main
from e2econd.errors import E2EInputError
from e2econd.evaluate.report import evaluate, scan

FAST = dict(emd_pairs=40, hit_jets=100, n_boot=10, classifier_seeds=2, progress=False, plots=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory, synth, h5writer):
    synth_images, write_h5 = synth, h5writer
    d = tmp_path_factory.mktemp("ev")
    real, pt_r = synth_images(500, seed=11)
    gen, pt_g = synth_images(250, seed=12)
    write_h5(d / "real.h5", real, pt_r, m0=np.random.default_rng(0).uniform(150, 190, 500))
    write_h5(d / "gen.h5", gen, pt_g, m0=np.random.default_rng(1).uniform(150, 190, 250))
    write_h5(d / "gen_x1.1.h5", gen * np.float32(1.1), pt_g, m0=np.random.default_rng(1).uniform(150, 190, 250))
    return d


def test_real_vs_itself_is_at_the_floor(files, tmp_path):
    res = evaluate(files / "real.h5", files / "real.h5", tmp_path / "out", seed=3, **FAST)
    assert res["samples"]["n_compare"] == 250
    for name, e in res["metrics"].items():
        assert e["floor"] is not None and e["ratio"] is not None, name
        if name.startswith(("w1_", "emd_")):
            assert e["floor"] > 0 and e["value"] >= 0
            # consistent with the floor within errors (ratios of small samples fluctuate)
            assert e["pull"] < 3.0, (name, e)
    auc = res["classifier_auc"]
    assert abs(auc["value"] - 0.5) < 0.08 and abs(auc["floor"] - 0.5) < 0.08
    hits = auc["hits"]  # 100 jets per sample, 30 per held-out fold and class: looser
    assert abs(hits["value"] - 0.5) < 0.15 and abs(hits["floor"] - 0.5) < 0.15, hits
    out = tmp_path / "out"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["provenance"]["config"]["emd_pairs"] == 40
    assert "classifier_auc" in (out / "report.md").read_text() or "Classifier AUC" in (out / "report.md").read_text()


def test_energy_scale_raises_energy_metrics_and_auc(files, tmp_path):
    opts = {**FAST, "hit_jets": 250}  # every jet into the hit-level classifier too
    same = evaluate(files / "real.h5", files / "gen.h5", tmp_path / "a", seed=4, **opts)
    scaled = evaluate(files / "real.h5", files / "gen_x1.1.h5", tmp_path / "b", seed=4, **opts)
    for name in (
        "w1_E_tracks",
        "w1_E_ecal",
        "w1_E_hcal",
        "w1_E_calo",
        "w1_E_all",
        "w1_mass_calo",
        "w1_hit_energy_ecal",
        "emd_calo",
    ):
        s, u = scaled["metrics"][name], same["metrics"][name]
        assert s["ratio"] > u["ratio"], name
        if name.startswith("w1_E"):  # per-hit W1 on 100 jets and EMD on 40 pairs: too noisy for 2 sigma
            assert s["value"] > s["floor"] + 2 * s["value_err"], name
    assert scaled["metrics"]["w1_E_calo"]["ratio"] > 3.0
    assert same["metrics"]["w1_E_calo"]["ratio"] < 2.5
    # shapes are unchanged by a global scale: fractions stay at the floor
    frac_s, frac_u = scaled["metrics"]["w1_frac_ecal_calo"], same["metrics"]["w1_frac_ecal_calo"]
    assert frac_s["ratio"] == pytest.approx(frac_u["ratio"], rel=1e-6)
    assert scaled["classifier_auc"]["value"] > same["classifier_auc"]["value"] + 0.08
    assert scaled["classifier_auc"]["value"] > 0.6
    # the hit-level classifier sees every hit's energy 10 % high
    h_s, h_u = scaled["classifier_auc"]["hits"], same["classifier_auc"]["hits"]
    assert h_s["value"] > h_u["value"] + 0.08 and h_s["value"] > 0.6, (h_s, h_u)
    # conditional fidelity: response E_calo/pt is ~10 % higher for the scaled sample in every pt bin
    rs = scaled["conditional"]["response_vs_pt"]
    r = np.array(rs["real"]["E_calo/pt"]["mean"])
    g = np.array(rs["generated"]["E_calo/pt"]["mean"])
    assert np.all(g / r > 1.03)
    assert len(scaled["conditional"]["pt_bins"]) == 5


def write_hit_dir(d: Path, images, pt, m0, split="test"):
    """Hit table with the documented schema (Tracks/ECAL pixels as size-1 hits, HCAL towers as size 5)."""
    d.mkdir(parents=True)
    cols = {
        "jet_id": pa.array(np.arange(len(images)), pa.int64()),
        "pt": pa.array(pt, pa.float64()),
        "m0": pa.array(m0, pa.float64()),
        "y": pa.array(np.ones(len(images)), pa.float32()),
    }
    for c, name in enumerate(("tracks", "ecal", "hcal")):
        ie, ip, sz, e = [], [], [], []
        for img in images:
            if c < 2:
                i, j = np.nonzero(img[c])
                ie.append(i), ip.append(j), sz.append(np.ones(len(i))), e.append(img[c][i, j])
            else:
                t = img[2].reshape(25, 5, 25, 5).sum(axis=(1, 3), dtype=np.float64)
                i, j = np.nonzero(t)
                ie.append(5 * i), ip.append(5 * j), sz.append(np.full(len(i), 5)), e.append(t[i, j])
        cols[f"{name}_ieta"] = pa.array([a.astype(np.int16) for a in ie], pa.list_(pa.int16()))
        cols[f"{name}_iphi"] = pa.array([a.astype(np.int16) for a in ip], pa.list_(pa.int16()))
        cols[f"{name}_size"] = pa.array([a.astype(np.int8) for a in sz], pa.list_(pa.int8()))
        cols[f"{name}_e"] = pa.array([a.astype(np.float32) for a in e], pa.list_(pa.float32()))
        cols[f"n_{name}"] = pa.array([len(a) for a in e], pa.int32())
    pq.write_table(pa.table(cols), d / f"{split}.parquet", row_group_size=64)


def test_hit_directory_reads_like_the_file(files, tmp_path, synth, h5writer):
    synth_images, write_h5 = synth, h5writer
    imgs, pt = synth_images(150, seed=11)
    m0 = np.full(150, 170.0)
    write_h5(tmp_path / "x.h5", imgs, pt, m0)
    write_hit_dir(tmp_path / "hits", imgs, pt, m0)
    keep = np.array([3, 77, 149])
    a = scan([tmp_path / "x.h5"], [150], "test", 50, keep)
    b = scan([tmp_path / "hits"], [150], "test", 50, keep)
    for k in a.feats:
        np.testing.assert_allclose(b.feats[k], a.feats[k], rtol=2e-4, atol=2e-4, err_msg=k)
    np.testing.assert_allclose(b.pt, a.pt)
    np.testing.assert_allclose(b.image(77), a.image(77), rtol=1e-5, atol=1e-6)
    # any mix of inputs works, and a missing split is a one-line input error
    res = evaluate([tmp_path / "x.h5"], [tmp_path / "hits"], tmp_path / "o", **FAST)
    assert res["metrics"]["w1_E_calo"]["value"] is not None
    with pytest.raises(E2EInputError, match="split 'val'"):
        evaluate(tmp_path / "x.h5", tmp_path / "hits", tmp_path / "o2", split="val", **FAST)


def test_cli_end_to_end(files, tmp_path):
    out = tmp_path / "report"
    args = [
        "evaluate",
        "--real",
        str(files / "real.h5"),
        "--generated",
        str(files / "gen.h5"),
        "--out",
        str(out),
        "--json",
        "--emd-pairs",
        "30",
        "--hit-jets",
        "30",
        "--bootstrap",
        "5",
        "--classifier-seeds",
        "2",
        "--grid",
        "2",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert any("auc" in k for k in res) and 0.0 <= res["classifier_auc"]["value"] <= 1.0
    for name, e in res["metrics"].items():
        assert set(e) >= {"value", "floor", "ratio"}, name
    assert {
        "w1_E_ecal",
        "w1_N_hcal",
        "w1_width_all",
        "w1_mass_calo",
        "w1_hit_energy_hcal",
        "emd_calo",
        "fd_hl",
        "kpd_hl",
        "classifier_auc_hl",
        "classifier_auc_hits",
    } <= set(res["metrics"])
    md = (out / "report.md").read_text()
    pngs = re.findall(r"\]\(([^)]+\.png)\)", md)
    assert len(pngs) >= 9 and all((out / p).stat().st_size > 1000 for p in pngs)
    assert "provenance" in json.loads((out / "metrics.json").read_text())
    # existing output directory: one-line error, exit 2; --overwrite replaces it
    r2 = CliRunner().invoke(main, args)
    assert r2.exit_code == 2 and "exists" in r2.output
    r3 = CliRunner().invoke(main, args[:-2] + ["--overwrite", "--no-plots"])
    assert r3.exit_code == 0 and not list(out.glob("*.png"))
