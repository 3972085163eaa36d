"""The run directory's layout and the distributed environment, one owner (e2econd.rundir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2econd.rundir import checkpoint_path, config_path, dist_env, last_checkpoint, log_path, step_checkpoint


def test_layout(tmp_path):
    run = tmp_path / "run"
    assert config_path(run) == run / "config.json" and log_path(run) == run / "log.jsonl"
    assert last_checkpoint(run) == run / "checkpoints" / "last.pt"
    assert step_checkpoint(run, 42) == run / "checkpoints" / "step_000042.pt"
    assert checkpoint_path(run) == last_checkpoint(run)
    assert checkpoint_path(run / "x.pt") == run / "x.pt"  # a checkpoint file names itself
    assert isinstance(checkpoint_path(str(run)), Path)


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, (0, 1, 0)),
        ({"RANK": "3", "WORLD_SIZE": "4"}, (3, 4, 3)),
        ({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, (5, 8, 1)),
    ],
)
def test_dist_env(monkeypatch, env, expected):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert dist_env() == expected
