"""``compare``: several generated samples against the same real halves, one shared floor, side by side."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from e2econd.cli import main
from e2econd.errors import E2EInputError
from e2econd.evaluate.compare import OVERLAY_FEATURES, compare


@pytest.fixture(scope="module")
def files(tmp_path_factory, toyjets, h5writer):
    d = tmp_path_factory.mktemp("cmp")
    real, gen = toyjets.toy_jets(300, seed=21), toyjets.toy_jets(150, seed=22)
    h5writer(d / "real.h5", real["images"], real["pt"], real["m0"], real["y"])
    h5writer(d / "a.h5", gen["images"], gen["pt"], gen["m0"], gen["y"])
    h5writer(d / "b.h5", toyjets.scale_channel(gen["images"], 1, 1.2), gen["pt"], gen["m0"], gen["y"])
    return d


def test_cli_compare_side_by_side(files, tmp_path):
    out = tmp_path / "cmp"
    args = [
        "compare",
        "--real",
        str(files / "real.h5"),
        str(files / "a.h5"),
        str(files / "b.h5"),
        "--labels",
        "plain,ecal120",
        "--out",
        str(out),
        "--nn-eval",
        "20",
        "--nn-batches",
        "2",
        "--hit-jets",
        "40",
        "--emd-pairs",
        "20",
        "--bootstrap",
        "5",
        "--classifier-seeds",
        "2",
        "--classifiers",
        "hl",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "compare.json").read_text())
    assert res["labels"] == ["plain", "ecal120"] and res["n_compare"] == 150
    m = res["metrics"]
    # one shared floor: the real halves are the same for every sample
    for name in res["metric_names"]:
        assert m["plain"][name]["floor"] == m["ecal120"][name]["floor"], name
    assert m["ecal120"]["w1_E_ecal"]["ratio"] > 3 * m["plain"]["w1_E_ecal"]["ratio"]
    assert m["ecal120"]["w1_E_hcal"]["value"] == pytest.approx(m["plain"]["w1_E_hcal"]["value"])
    assert set(res["headline"]["plain"]) >= {"w1_energy_ecal", "cov_calo", "auc_highlevel"}
    md = (out / "compare.md").read_text()
    assert "| w1_energy_ecal |" in md and "plain" in md and "ecal120" in md
    for f in OVERLAY_FEATURES:
        assert (out / f"compare_{f}.png").stat().st_size > 1000
    assert "ecal120" in r.output  # the terminal table


def test_compare_labels_must_match(files, tmp_path):
    with pytest.raises(E2EInputError, match="labels"):
        compare(files / "real.h5", [files / "a.h5", files / "b.h5"], tmp_path / "o", labels="x", progress=False)
    assert not (tmp_path / "o").exists()


def test_compare_value_equals_evaluate_for_deterministic_metrics(files, tmp_path):
    """The same halves and subsets as ``evaluate``: W1 values of the first sample are identical."""
    from e2econd.evaluate.report import evaluate

    opts = dict(
        nn_eval=10,
        nn_batches=2,
        emd_pairs=10,
        hit_jets=20,
        n_boot=2,
        classifiers=(),
        plots=False,
        progress=False,
        seed=5,
    )
    one = evaluate(files / "real.h5", files / "a.h5", tmp_path / "e", **opts)
    two = compare(files / "real.h5", [files / "a.h5", files / "b.h5"], tmp_path / "c", **opts)
    for name in ("w1_E_ecal", "w1_tau21", "w1_hit_dR_ecal", "w1_hcal_central"):
        assert two["metrics"]["gen0"][name]["value"] == pytest.approx(one["metrics"][name]["value"], rel=1e-12)
        assert two["metrics"]["gen0"][name]["floor"] == pytest.approx(one["metrics"][name]["floor"], rel=1e-12)
    assert np.isfinite(two["metrics"]["gen1"]["w1_E_ecal"]["value"])
