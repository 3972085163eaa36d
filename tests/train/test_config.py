"""Config: presets validate, JSON round trip, bad values -> one-line E2EInputError naming the key."""

from __future__ import annotations

import json

import pytest

from e2econd import config as C
from e2econd.errors import E2EInputError


def test_presets_valid_and_round_trip(tmp_path):
    for name in ("cpu", "gpu"):
        cfg = C.validate(C.preset(name))
        p = tmp_path / f"{name}.json"
        C.save(cfg, p)
        assert C.load(p).to_dict() == cfg.to_dict()
    assert C.preset("gpu").model.width > C.preset("cpu").model.width


def test_partial_file_on_preset(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"preset": "cpu", "train": {"lr": 0.01}, "data": {"channels": "ecal,hcal"}}))
    cfg = C.load(p)
    assert cfg.train.lr == 0.01 and cfg.model.blocks == C.preset("cpu").model.blocks
    assert cfg.data.channels == ["ecal", "hcal"] and cfg.channel_ids == [1, 2]


@pytest.mark.parametrize(
    "spec,expect",
    [
        ("all", ["tracks", "ecal", "hcal"]),
        ("hcal,ecal", ["ecal", "hcal"]),
        ("Tracks", ["tracks"]),
        (["ecal"], ["ecal"]),
    ],
)
def test_parse_channels(spec, expect):
    assert C.parse_channels(spec) == expect


@pytest.mark.parametrize(
    "patch,key",
    [
        ({"train": {"lr": -1e-3}}, "train.lr"),
        ({"data": {"channels": ["ecal", "muons"]}}, "channels"),
        ({"model": {"width": 30, "heads": 4}}, "model.width"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"ema_decay": 1.5}}, "train.ema_decay"),
        ({"train": {"cond_drop": 1.0}}, "train.cond_drop"),
        ({"train": {"max_steps": "many"}}, "train.max_steps"),
        ({"train": {"learning_rate": 1}}, "train.learning_rate"),
        ({"optimiser": {}}, "optimiser"),
    ],
)
def test_bad_values(tmp_path, patch, key):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(patch))
    with pytest.raises(E2EInputError) as ei:
        C.load(p)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg and key in msg


def test_bad_json_and_missing(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(E2EInputError, match="not valid JSON"):
        C.load(p)
    with pytest.raises(E2EInputError, match="not found"):
        C.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "device,cuda,expected",
    [
        (None, True, "gpu"),
        (None, False, "cpu"),
        ("auto", True, "gpu"),
        ("cuda", False, "gpu"),
        ("cuda:1", True, "gpu"),
        ("cpu", True, "cpu"),
    ],
)
def test_default_preset_gpu_when_cuda(device, cuda, expected):
    assert C.default_preset(device, cuda_available=cuda) == expected


def test_resolve_config_is_preset_then_file_then_options(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"train": {"lr": 0.01, "batch_size": 7}, "data": {"channels": "hcal"}}))
    got = C.resolve_config(
        None, p, {"train.batch_size": 5, "train.seed": None}, channels="ecal,tracks", cuda_available=True
    )
    # oracle: the steps by hand
    want = C.load(p, base=C.preset("gpu"))
    want.train.batch_size = 5
    want.data.channels = ["tracks", "ecal"]
    assert got.to_dict() == want.to_dict()
    assert got.train.lr == 0.01 and got.train.seed == C.preset("gpu").train.seed
    assert C.resolve_config("auto", cuda_available=False).to_dict() == C.preset("cpu").to_dict()
    # a file naming its own preset wins over the default
    p.write_text(json.dumps({"preset": "cpu"}))
    assert C.resolve_config(None, p, cuda_available=True).to_dict() == C.preset("cpu").to_dict()


def test_resolve_config_rejects_bad_options():
    with pytest.raises(E2EInputError, match="train.warp"):
        C.resolve_config("cpu", overrides={"train.warp": 1})
    with pytest.raises(E2EInputError, match="batch_size"):
        C.resolve_config("cpu", overrides={"train.batch_size": 0})
    with pytest.raises(E2EInputError, match="unknown preset"):
        C.resolve_config("tpu")


@pytest.mark.parametrize(
    "change,key",
    [
        ({"n": -1}, "n"),
        ({"guidance": float("nan")}, "guidance"),
        ({"collisions": "merge"}, "collisions"),
        ({"batch_size": 0}, "batch_size"),
        ({"chunk_size": 0}, "batch_size"),
        ({"sampler": "rk4"}, "sampler"),
        ({"steps": 0}, "steps"),
        ({"conditions_from": "data", "pt": 400.0}, "conditions"),
    ],
)
def test_sample_options_validated_in_one_place(change, key):
    assert C.SampleOptions().validate() == C.SampleOptions()
    with pytest.raises(E2EInputError) as ei:
        C.SampleOptions(**change).validate()
    assert ei.value.key == key and "\n" not in str(ei.value)


def test_click_defaults_are_the_dataclass_defaults():
    import dataclasses

    from e2econd.cli.demo import demo
    from e2econd.cli.sample import sample
    from e2econd.demo import DemoOptions

    for command, options, skip in (
        (demo, DemoOptions(), {"progress"}),
        (sample, C.SampleOptions(), {"progress", "out", "as_json", "run_dir"}),
    ):
        fields = {f.name for f in dataclasses.fields(options)}
        for p in command.params:
            if p.name in skip or p.name not in fields:
                continue
            assert p.default == getattr(options, p.name), (command.name, p.name)
