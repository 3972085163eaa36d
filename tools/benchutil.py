"""Shared timing helpers of the kernel benchmarks (tools/bench_kernels.py, tools/bench_attention.py).

Timing discipline: warm-up calls first (JIT, caches, allocator), then ``repeats`` timed calls;
CUDA is timed with events on the current stream, the CPU with ``perf_counter``; we report the
median and the 10th/90th percentiles in milliseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def time_fn(fn: Callable[[], object], warmup: int, repeats: int, device) -> dict:
    """Median / p10 / p90 wall time of ``fn()`` in ms over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(max(warmup, 0)):
        fn()
    ts: list[float] = []
    if _is_cuda(device):
        torch.cuda.synchronize()
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    q = statistics.quantiles(ts, n=10, method="inclusive") if len(ts) > 1 else [ts[0]] * 9
    return {"median_ms": statistics.median(ts), "p10_ms": q[0], "p90_ms": q[-1], "repeats": len(ts)}


def copy_bandwidth(nbytes: int, device, warmup: int = 3, repeats: int = 20) -> dict:
    """Measured device-to-device (CUDA) or memcpy (CPU) copy moving ``nbytes`` in total.

    Copies a buffer of ``nbytes / 2`` (read it once, write it once), so ``gbps = nbytes / time``
    is the physical limit of an op that reads + writes ``nbytes``.
    """
    n = max(int(nbytes) // 2 // 4, 1)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    stats = time_fn(lambda: dst.copy_(src), warmup, repeats, device)
    return {**stats, "bytes": 8 * n, "gbps": 8 * n / (stats["median_ms"] * 1e-3) / 1e9}


def last_level_cache_bytes() -> int | None:
    """Size of the CPU's largest cache (from sysfs), None when unknown."""
    best = None
    for p in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        txt = p.read_text().strip()
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(txt[-1], 1)
        try:
            size = int(txt.rstrip("KMG")) * mult
        except ValueError:
            continue
        best = size if best is None else max(best, size)
    return best
