"""tools/benchutil.py and the byte counts of tools/bench_kernels.py (CPU; the CUDA timing path is
exercised by tools/gpu_check.sh on a GPU machine)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tools import bench_kernels  # noqa: E402
from tools.benchutil import stream_bandwidth, time_fn  # noqa: E402


def test_time_fn_measures_a_known_duration():
    stats = time_fn(lambda: time.sleep(0.004), warmup=1, repeats=5, device="cpu")
    assert 4.0 <= stats["median_ms"] < 40.0 and stats["repeats"] == 5
    assert stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]


@pytest.mark.parametrize("case,tensors", [("ddim", 3), ("ddpm_philox", 3), ("ddpm_noise", 4), ("dpmpp2m", 5)])
def test_bytes_each_case_must_move(case, tensors):
    """x, v, out (+ noise; + x0_prev and x0 for DPM-Solver++), 4 bytes each, + 1 byte of mask per point."""
    x = torch.zeros(2, 5, 3)
    assert bench_kernels._bytes(x, case) == tensors * 30 * 4 + 10


def test_stream_counts_stream_bytes():
    r = stream_bandwidth(1 << 20, repeats=2)
    assert r["array_bytes"] == 1 << 20
    for kind, per in (("copy", 8), ("triad", 12)):
        assert r[f"{kind}_gbps"] == pytest.approx(per * (1 << 18) / (r[f"{kind}_ms"] * 1e-3) / 1e9)
