"""tools/gpu_check.sh: its dry run on the CPU runs every CPU-side stage and leaves the planned files.

The device machine returns at most 8 files, no more than 2 folders deep, so OUTDIR must hold exactly
the documented files and nothing else; every stage must succeed in the dry run; the table comes last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.sh"
FILES = {
    "gpu_check.log",
    "probe.json",
    "sanitizer.txt",
    "pytest_cuda.txt",
    "bench_kernels.json",
    "train_sample.json",
    "results.json",
    "table.md",
}
DRY_STAGES = ["probe", "build", "ops", "pytest_cuda", "bench", "train_sample", "sanitizer_syntax"]


def _run(out: Path, work: Path, budget: int | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WORK": str(work)}
    if budget is not None:
        env["GPU_CHECK_BUDGET_S"] = str(budget)
    return subprocess.run(
        ["bash", str(SCRIPT), str(out), "--dry-run"], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


@pytest.mark.slow
def test_dry_run_runs_every_cpu_stage(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    res = _run(out, work)
    assert res.returncode == 0, res.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == FILES and all(p.is_file() for p in out.iterdir())
    results = json.loads((out / "results.json").read_text())
    stages = {s["stage"]: s for s in results["stages"]}
    assert list(stages) == DRY_STAGES
    failed = {k: s["rc"] for k, s in stages.items() if s["rc"] != 0}
    assert not failed, (failed, (out / "gpu_check.log").read_text()[-3000:])
    assert results["ops"]["ok"] and results["ops"]["checks"]
    train = json.loads((out / "train_sample.json").read_text())
    assert train["train"][0]["jets_per_s"] > 0 and train["sample"][0]["jets"] == 4
    bench = json.loads((out / "bench_kernels.json").read_text())
    kinds = {(r["kernel"], r.get("case")) for r in bench["rows"]}
    assert ("stream", "16MiB") in kinds and ("attention", "gpu_preset") in kinds
    table = (out / "table.md").read_text()
    assert res.stdout.rstrip().endswith(table.rstrip())  # the table is printed last
    assert "| pytest_cuda | 0 |" in table


def test_budget_skips_stages_but_still_reports(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    res = _run(out, work, budget=1, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert [s["rc"] for s in results["stages"]] == ["skipped"] * len(DRY_STAGES)
    assert (out / "table.md").exists() and "| probe | skipped |" in res.stdout
    assert {p.name for p in out.iterdir()} <= FILES


def test_usage_error_without_outdir():
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "usage: tools/gpu_check.sh OUTDIR [--dry-run]" in res.stderr
