"""`e2econd demo` checks its options before any stage runs (no 8 minutes of training for a typo)."""

from __future__ import annotations

from click.testing import CliRunner

from e2econd.cli import main


def test_bad_sampler_fails_before_any_work(tmp_path):
    work = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--workdir", str(work), "--sampler", "rk4"])
    assert r.exit_code == 2
    assert "key 'sampler': unknown sampler 'rk4'" in r.output and len(r.output.strip().splitlines()) == 1
    assert not work.exists()


def test_a_sampler_of_another_objective_fails_before_any_work(tmp_path):
    work = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--workdir", str(work), "--sampler", "consistency"])
    assert r.exit_code == 2 and "objective 'vpred' has no sampler 'consistency'" in r.output
    assert not work.exists()
