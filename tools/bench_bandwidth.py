"""Where is the CPU's DRAM plateau? STREAM copy / triad and the fused step over a sweep of sizes.

    python tools/bench_bandwidth.py [--mib 4,16,64,256,1024,2048] [--threads 2] [--repeats 5] [--json FILE]

For each size (MiB per array): STREAM copy (a = b, 8 bytes/element) and triad (a = b + s*c, 12
bytes/element) and the fused ``diffusion_step_`` in place (DDIM: reads x, v, mask, writes x; DDPM with
in-kernel Philox noise: the same bytes) on tensors of that size, GB/s = bytes the op must move / median
time. Below the last-level cache these exceed DRAM bandwidth; the plateau at >= 4x the LLC is the limit
that ``tools/bench_kernels.py`` compares against (``pct_triad``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from e2econd.diffusion.coefficients import ddim_coefficients, ddpm_coefficients  # noqa: E402
from e2econd.ops.diffusion_step import diffusion_step_  # noqa: E402
from tools.benchutil import last_level_cache_bytes, stream_bandwidth, time_fn  # noqa: E402


def step_gbps(mib: int, case: str, repeats: int) -> float:
    """In-place fused step on x, v of ``mib`` MiB each (N = 700 hits, F = 3), GB/s of bytes moved."""
    n = (mib << 20) // 4
    B = max(n // (700 * 3), 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 700, 3, generator=g)
    v = torch.randn(B, 700, 3, generator=g)
    mask = torch.ones(B, 700, dtype=torch.bool)
    t = torch.full((B,), 0.5)
    at, st = torch.cos(math.pi / 2 * t), torch.sin(math.pi / 2 * t)
    as_, ss = torch.cos(math.pi / 2 * (t - 0.05)), torch.sin(math.pi / 2 * (t - 0.05))
    if case == "ddim":
        coef, kw = ddim_coefficients(at, st, as_, ss, 0.0), {}
    else:
        coef, kw = ddpm_coefficients(at, st, as_, ss), {"seed": 1234, "offset": 7}
    coef = coef.float()
    stats = time_fn(lambda: diffusion_step_(x, v, coef, mask=mask, **kw), 1, repeats, "cpu")
    nbytes = 3 * x.numel() * 4 + B * 700  # read x, v; write x; bool mask
    return nbytes / (stats["median_ms"] * 1e-3) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", default="4,16,64,256,1024,2048")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    llc = last_level_cache_bytes()
    print(f"# threads {args.threads}, LLC {llc and llc >> 20} MiB, load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{'MiB/array':>9s} {'copy GB/s':>10s} {'triad GB/s':>10s} {'step ddim':>10s} {'step philox':>11s}")
    rows = []
    for mib in (int(m) for m in args.mib.split(",")):
        s = stream_bandwidth(mib << 20, repeats=args.repeats)
        r = {
            "mib": mib,
            "copy_gbps": s["copy_gbps"],
            "triad_gbps": s["triad_gbps"],
            "step_ddim_gbps": step_gbps(mib, "ddim", args.repeats),
            "step_philox_gbps": step_gbps(mib, "philox", max(args.repeats // 2, 1)),
            "load": os.getloadavg()[0],
        }
        rows.append(r)
        print(
            f"{mib:9d} {r['copy_gbps']:10.2f} {r['triad_gbps']:10.2f} {r['step_ddim_gbps']:10.2f} "
            f"{r['step_philox_gbps']:11.2f}   (load {r['load']:.1f})",
            flush=True,
        )
    if args.json:
        from e2econd.utils import provenance, write_json_atomic

        write_json_atomic(args.json, {"provenance": provenance(vars(args)), "llc_bytes": llc, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
