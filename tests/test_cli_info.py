"""`e2econd --help` / `e2econd info`, and the package working with no extension loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from e2econd.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command_once():
    out = CliRunner().invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert sum(line.split()[0] == name for line in out.splitlines() if line.startswith("  ")) == 1, name


def test_info_reports_the_loaded_kernels():
    res = CliRunner().invoke(main, ["info", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    b = info["backend"]
    if os.environ.get("E2ECOND_REQUIRE_EXT") == "1":
        assert b["extension_loaded"] and b["build"].startswith("cpu")
    if b["extension_loaded"]:
        assert {"diffusion_step", "packed_attention_fwd", "packed_attention_bwd"} <= set(b["cpu_kernels"])
        assert b["source"] == "prebuilt at install" or b["source"].startswith("JIT-compiled ("), b
    else:
        assert b["source"].startswith("reference (") and b["load_error"], b
    assert info["torch"] and "cpu" in info["devices"][0]


def test_without_the_extension_everything_falls_back_to_the_references():
    env = dict(os.environ, E2ECOND_DISABLE_EXT="1", PYTHONPATH=str(ROOT))
    info = subprocess.run(
        [sys.executable, "-m", "e2econd", "info"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "extension: NOT loaded" in info and "active backend:   reference" in info
    assert "kernels from:     reference (disabled by E2ECOND_DISABLE_EXT=1)" in info
    code = """
import torch
from e2econd.ops import backend
from e2econd.ops.attention import packed_attention
assert not backend()["extension_loaded"]
torch.manual_seed(0)
q, k, v = (torch.randn(7, 2, 16) for _ in range(3))
cu = torch.tensor([0, 3, 3, 7], dtype=torch.int32)
out = packed_attention(q, k, v, cu, 4)
for a, b in ((0, 3), (3, 7)):  # naive per-jet softmax attention as the oracle
    s = torch.einsum("ihd,jhd->hij", q[a:b], k[a:b]) / 4.0
    ref = torch.einsum("hij,jhd->ihd", s.softmax(-1), v[a:b])
    torch.testing.assert_close(out[a:b], ref, atol=1e-5, rtol=1e-5)
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_every_long_command_has_progress_switches():
    for name in ("make-data", "preprocess", "export", "train", "sample", "evaluate", "demo"):
        out = CliRunner().invoke(main, [name, "--help"], terminal_width=200).output
        assert "--progress / --no-progress" in out, name
