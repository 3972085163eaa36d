"""`e2econd demo` checks its options before any stage runs (no 8 minutes of training for a typo)."""

from __future__ import annotations

from click.testing import CliRunner

from e2econd.cli import main


def test_bad_sampler_fails_before_any_work(tmp_path):
    work = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--workdir", str(work), "--sampler", "euler"])
    assert r.exit_code == 2
    assert "key 'sampler': unknown sampler 'euler'" in r.output and len(r.output.strip().splitlines()) == 1
    assert not work.exists()
