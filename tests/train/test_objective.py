"""The objective options of ``e2econd train`` (``--objective``, ``--loss-balance``, ``--noise-density``):
recorded in the run, read back by ``sample`` (its samplers and default), and the loss-balance weights.

Oracles: per-jet loops written out for the channel balance; the equal-share definition for the
towers' feature weights; the run's own config.json and the output's provenance for the wiring.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from e2econd.cli import main
from e2econd.data.e2e_read import read_provenance
from e2econd.families.towers import feature_weights
from e2econd.objective import channel_balance

pytestmark = pytest.mark.usefixtures("one_thread")


def test_channel_balance_gives_every_channel_of_a_jet_an_equal_share():
    gen = torch.Generator().manual_seed(3)
    lengths = [5, 0, 12, 1, 30]
    channel = torch.cat([torch.randint(0, 3, (n,), generator=gen) for n in lengths])
    channel[5:8] = 2  # jet 2: few HCAL hits among many
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
    w = channel_balance(channel, cu)
    assert w.shape == (channel.numel(), 1)
    for j, n in enumerate(lengths):
        if n == 0:
            continue
        wj, cj = w[cu[j] : cu[j + 1], 0].double(), channel[cu[j] : cu[j + 1]]
        present = cj.unique()
        assert wj.sum().item() == pytest.approx(n)  # the jet keeps its weight (n tokens)
        for c in present:  # each present channel carries n / C of it
            assert wj[cj == c].sum().item() == pytest.approx(n / len(present))


def test_tower_feature_weights_balance_channels_inside_the_cell_groups():
    cell_channel = np.array([0] * 25 + [1] * 25 + [2])
    plain, bal = feature_weights(51, 3), feature_weights(51, 3, cell_channel)
    for w in (plain, bal):
        assert w.mean().item() == pytest.approx(1.0)
        groups = [w[:2].sum(), w[2:53].sum(), w[53:104].sum(), w[104:].sum()]
        torch.testing.assert_close(torch.stack(groups), torch.full((4,), w.sum().item() / 4))
    for start in (2, 53):  # presence bits, then values: tracks, ECAL, HCAL equal within the group
        sums = [bal[start + a : start + b].sum().item() for a, b in ((0, 25), (25, 50), (50, 51))]
        assert sums == pytest.approx([sums[0]] * 3)
        assert plain[start + 50].item() == pytest.approx(plain[start].item())  # unbalanced: 25 : 25 : 1


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def flow_run(toy_data, tmp_path_factory):
    """The toy trained for a few steps with ``--objective flow --loss-balance channel`` through the CLI."""
    from tests.conftest import toy_config

    root = tmp_path_factory.mktemp("flowrun")
    cfg = toy_config(max_steps=4).to_dict()
    (root / "cfg.json").write_text(json.dumps(cfg))
    args = ["train", toy_data, "--out", root / "run", "--config", root / "cfg.json", "--device", "cpu"]
    res = _cli(*args, "--objective", "flow", "--loss-balance", "channel", "--noise-density", "uniform_t")
    assert res.exit_code == 0, res.output
    return root / "run"


def test_train_records_the_objective_and_sample_uses_its_samplers(flow_run, tmp_path):
    cfg = json.loads((flow_run / "config.json").read_text())
    assert cfg["objective"]["name"] == "flow"
    assert cfg["objective"]["balance"] == "channel" and cfg["objective"]["density"] == "uniform_t"
    out = tmp_path / "gen.parquet"
    res = _cli("sample", flow_run, "--n", 4, "--pt", 150, "--steps", 3, "--out", out, "--json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{") :])
    assert (summary["objective"], summary["sampler"], summary["steps"], summary["nfe"]) == ("flow", "heun", 3, 5)
    prov = read_provenance(out)["config"]
    assert prov["objective"] == "flow" and prov["options"]["sampler"] == "heun" and prov["nfe"] == 5


def test_a_sampler_the_objective_lacks_is_one_clear_error(flow_run, tmp_path):
    out = tmp_path / "gen.parquet"
    res = CliRunner().invoke(main, ["sample", str(flow_run), "--n", "2", "--sampler", "dpmpp2m", "--out", str(out)])
    assert res.exit_code == 2
    assert "objective 'flow' has no sampler 'dpmpp2m'" in res.output and "heun" in res.output
    assert not out.exists()


def test_bad_objective_values_in_a_config_file_name_the_key(tmp_path, toy_data):
    bad = tmp_path / "cfg.json"
    bad.write_text(json.dumps({"objective": {"balance": "hits"}}))
    res = CliRunner().invoke(main, ["train", str(toy_data), "--out", str(tmp_path / "r"), "--config", str(bad)])
    assert res.exit_code == 2 and "objective.balance" in res.output and "channel" in res.output
    assert not (tmp_path / "r").exists()


def test_the_sampler_names_are_those_of_the_formulations():
    from e2econd.diffusion.formulations import FORMULATIONS, ConsistencyStudent
    from e2econd.sample_options import ALL_SAMPLERS

    names = {s for f in FORMULATIONS.values() for s in f.samplers} | set(ConsistencyStudent.samplers)
    assert set(ALL_SAMPLERS) == names and len(ALL_SAMPLERS) == len(names)


def test_tower_presets_default_to_the_channel_balance_and_options_override_it():
    """The formulation study's decision (docs/STUDY.md): tower runs balance the channels by default; hit
    runs keep the unbalanced loss; ``--loss-balance`` (an override) wins over the preset."""
    from e2econd.config import resolve_config

    for name in ("cpu", "gpu"):
        assert resolve_config(name, family="towers").objective.balance == "channel"
        assert resolve_config(name, family="hits").objective.balance == "none"
    cfg = resolve_config("cpu", family="towers", overrides={"objective.balance": "none"})
    assert cfg.objective.balance == "none"
