"""Shared timing helpers of the kernel benchmarks (tools/bench_kernels.py, tools/bench_attention.py).

Timing discipline: warm-up calls first (JIT, caches, allocator), then ``repeats`` timed samples;
we report the median and the 10th/90th percentiles in milliseconds per call.

CUDA: events recorded on an idle GPU would let the host's launch overhead into the window (a 27 us
kernel read as ~45 % of copy bandwidth). So each sample first enqueues a ~0.2 ms spin kernel
(``torch.cuda._sleep``) that keeps the GPU busy while the host records the start event and
enqueues ``inner`` back-to-back calls; the end event follows them and the sample is
(end - start) / inner. ``inner`` is chosen so that a sample spans >= ~1 ms of GPU time.
CPU: ``perf_counter`` around each call.

Bandwidth limits: ``copy_bandwidth`` (a copy of the same byte count; on CUDA the device-to-device
ceiling) and, for the CPU, ``stream_bandwidth``: STREAM-style copy (a = b) and triad (a = b + s*c)
over arrays >= 4x the last-level cache with the benchmark's thread count, bytes counted as STREAM
does (read + write of each array once; write-allocate traffic not counted).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _is_cuda(device) -> bool:
    return str(device).startswith("cuda")


_SPIN_CYCLES = 400_000  # ~0.2 ms at ~2 GHz: longer than the host needs to enqueue start + calls


def _cuda_window(fn: Callable[[], object], inner: int) -> float:
    """GPU time of ``inner`` back-to-back calls in ms, measured behind a spin kernel (queue warm)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(_SPIN_CYCLES)
    start.record()
    for _ in range(inner):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def cuda_inner(fn: Callable[[], object], target_ms: float = 1.0, max_inner: int = 1000) -> int:
    """Calls per CUDA timing sample so that one sample spans about ``target_ms`` of GPU time."""
    one = _cuda_window(fn, 1)
    return int(min(max(math.ceil(target_ms / max(one, 1e-3)), 1), max_inner))


def time_fn(fn: Callable[[], object], warmup: int, repeats: int, device, inner: int | None = None) -> dict:
    """Median / p10 / p90 time of one ``fn()`` in ms over ``repeats`` samples after ``warmup`` calls.

    CUDA: each sample is ``inner`` calls (auto: >= ~1 ms) between two events behind a spin kernel.
    """
    for _ in range(max(warmup, 0)):
        fn()
    ts: list[float] = []
    if _is_cuda(device):
        torch.cuda.synchronize()
        inner = inner or cuda_inner(fn)
        for _ in range(repeats):
            ts.append(_cuda_window(fn, inner) / inner)
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    q = statistics.quantiles(ts, n=10, method="inclusive") if len(ts) > 1 else [ts[0]] * 9
    out = {"median_ms": statistics.median(ts), "p10_ms": q[0], "p90_ms": q[-1], "repeats": len(ts)}
    if _is_cuda(device):
        out["inner"] = inner
    return out


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


def stream_bandwidth(array_bytes: int, device="cpu", repeats: int = 5, kinds=("copy", "triad")) -> dict:
    """STREAM-style bandwidth in GB/s with arrays of ``array_bytes`` each (float32).

    copy: a = b (2 arrays moved: 8 bytes/element); triad: a = b + s*c (3 arrays: 12 bytes/element).
    Median of ``repeats`` timed passes after one warm-up pass, at torch's current thread count.
    """
    n = max(int(array_bytes) // 4, 1)
    a = torch.empty(n, device=device)
    b = torch.rand(n, device=device)
    c = torch.rand(n, device=device)
    ops = {"copy": (lambda: a.copy_(b), 8), "triad": (lambda: torch.add(b, c, alpha=1.5, out=a), 12)}
    res = {"array_bytes": 4 * n, "threads": torch.get_num_threads()}
    for kind in kinds:
        fn, per = ops[kind]
        stats = time_fn(fn, 1, repeats, device)
        res[f"{kind}_gbps"] = per * n / (stats["median_ms"] * 1e-3) / 1e9
        res[f"{kind}_ms"] = stats["median_ms"]
    return res


def dram_array_bytes(factor: int = 4, floor: int = 1 << 30) -> int:
    """Array size for a DRAM-bound STREAM run: ``factor`` x the last-level cache (at least ``floor``)."""
    llc = last_level_cache_bytes() or 0
    return max(factor * llc, floor)
