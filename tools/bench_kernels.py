"""Time every op of the e2econd extension against its baselines; print a table, write JSON.

    python tools/bench_kernels.py --device cpu|cuda [--quick] [--json FILE]

diffusion_step rows: the eager pure-PyTorch reference, the ``torch.compile``d reference and the
extension kernel (out of place and in place), per sampler case; achieved GB/s counts the bytes the
op must read + write once (x, v, [x0_prev], [noise], mask, out, [x0]) and is compared with a
measured copy (memcpy / device-to-device) of the same number of bytes. On the CPU the physical
limit is the STREAM triad (a = b + s*c, 12 bytes per element) on arrays >= 4x the last-level cache
at the same thread count (``stream`` rows; ``pct_triad`` of every step row is against it): a copy
of a cache-resident buffer is no limit (the in-place step once read 180 % of it). The step is also
run at that DRAM size (``dram`` rows, the kernel only). Bytes counted per case: x, v, out
(in place: out = x, still one read and one write), + x0_prev, noise, x0 when used, + the bool mask.
Attention rows come from ``tools/bench_attention.py`` (``attention_rows(device, quick)``).
``--quick`` finishes within about a minute on a 2-core CPU (smaller sizes, fewer repeats,
torch.compile only for one case on the CPU and for none on CUDA, where device time is scarce).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `e2econd` and `tools.*` importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from e2econd.diffusion.coefficients import ddim_coefficients, ddpm_coefficients, dpmpp2m_coefficients  # noqa: E402
from e2econd.ops import backend, use_extension  # noqa: E402
from e2econd.ops.diffusion_step import diffusion_step, diffusion_step_, diffusion_step_reference  # noqa: E402
from tools.benchutil import (  # noqa: E402
    copy_bandwidth,
    dram_array_bytes,
    last_level_cache_bytes,
    stream_bandwidth,
    time_fn,
)

# sampler case -> (uses x0_prev, noise source, returns x0)
CASES = {
    "ddim": (False, None, False),  # DDIM η=0: no noise
    "ddpm_philox": (False, "philox", False),  # ancestral, in-kernel Philox noise
    "ddpm_noise": (False, "tensor", False),  # ancestral, noise tensor
    "dpmpp2m": (True, None, True),  # DPM-Solver++(2M): reads x0_prev, writes x̂0
}


def _inputs(B: int, N: int, F: int, dtype, device, case: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, F, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(B, N, F, generator=g).to(device=device, dtype=dtype)
    lengths = torch.randint(N // 2, N + 1, (B,), generator=g)
    mask = (torch.arange(N)[None, :] < lengths[:, None]).to(device)
    t = torch.rand(B, generator=g) * 0.8 + 0.1
    at, st = torch.cos(math.pi / 2 * t), torch.sin(math.pi / 2 * t)
    as_, ss = torch.cos(math.pi / 2 * (t - 0.05)), torch.sin(math.pi / 2 * (t - 0.05))
    prev, noise, _ = CASES[case]
    if case == "ddim":
        coef = ddim_coefficients(at, st, as_, ss, 0.0)
    elif case == "dpmpp2m":
        coef = dpmpp2m_coefficients(at, st, as_, ss, h_prev=torch.full((B,), 0.05))
    else:
        coef = ddpm_coefficients(at, st, as_, ss)
    kw = {"mask": mask}
    if prev:
        kw["x0_prev"] = torch.randn(B, N, F, generator=g).to(device=device, dtype=dtype)
    if noise == "philox":
        kw.update(seed=1234, offset=7)
    elif noise == "tensor":
        kw["noise"] = torch.randn(B, N, F, generator=g).to(device=device, dtype=dtype)
    if CASES[case][2]:
        kw["return_x0"] = True
    return x, v, coef.to(device), kw


def _bytes(x: torch.Tensor, case: str) -> int:
    prev, noise, ret_x0 = CASES[case]
    n_tensors = 3 + prev + (noise == "tensor") + ret_x0  # x, v, out (+ x0_prev, noise, x0)
    return n_tensors * x.numel() * x.element_size() + x.numel() // x.size(-1)  # + bool mask


def diffusion_step_rows(device: str, quick: bool, stream_mib: int | None = None, compile_ok: bool = True) -> list[dict]:
    """Rows of the fused reverse-diffusion step on ``device``."""
    cuda = device.startswith("cuda")
    F = 3
    if cuda:
        sizes = [(4096, 700)] if quick else [(4096, 700), (16384, 700)]  # 8.6M, 34M elements
        dtypes = [torch.float32, torch.bfloat16]
        warmup, repeats = (3, 10) if quick else (10, 50)
        cases, compile_cases = list(CASES), (set() if quick else set(CASES))
    else:
        # x alone is 32 MiB at 2.8M points; every case moves >= 3x that (> a 32 MiB LLC)
        sizes = [(2000, 700)] if quick else [(4000, 700)]  # 4.2M / 8.4M elements
        dtypes = [torch.float32]
        warmup, repeats = (1, 5) if quick else (2, 15)
        cases = ["ddim", "ddpm_philox"] if quick else list(CASES)
        compile_cases = {"ddim"} if quick else set(CASES)
    if not compile_ok:
        compile_cases = set()
    llc = last_level_cache_bytes() if not cuda else None
    rows, triad = [], None
    if not cuda:
        rows.append(_stream_row(device, stream_mib, 3 if quick else 5))
        triad = rows[-1]["triad_gbps"]
        print(_fmt(rows[-1]), file=sys.stderr, flush=True)
    for B, N in sizes:
        for dtype in dtypes:
            for case in cases:
                x, v, coef, kw = _inputs(B, N, F, dtype, device, case)
                nbytes = _bytes(x, case)
                copy = copy_bandwidth(nbytes, device, warmup, repeats)
                base = {
                    "kernel": "diffusion_step",
                    "case": case,
                    "device": device,
                    "dtype": str(dtype).replace("torch.", ""),
                    "B": B,
                    "N": N,
                    "F": F,
                    "numel": x.numel(),
                    "bytes": nbytes,
                    "copy_gbps": copy["gbps"],
                    "llc_bytes": llc,
                }
                impls = {"eager_ref": lambda x=x, v=v, coef=coef, kw=kw: diffusion_step_reference(x, v, coef, **kw)}
                if case in compile_cases:
                    compiled = torch.compile(diffusion_step_reference, fullgraph=True, dynamic=False)
                    impls["compiled_ref"] = lambda x=x, v=v, coef=coef, kw=kw, f=compiled: f(x, v, coef, **kw)
                if use_extension("diffusion_step", x.device):
                    impls["ours"] = lambda x=x, v=v, coef=coef, kw=kw: diffusion_step(x, v, coef, **kw)
                    kwi = {k: val for k, val in kw.items() if k != "return_x0"}
                    xi = x.clone()
                    # in place on a scratch copy: every call does the same work on fresh-looking data
                    impls["ours_inplace"] = lambda xi=xi, v=v, coef=coef, kw=kwi: diffusion_step_(xi, v, coef, **kw)
                results = {}
                for name, fn in impls.items():
                    row = {**base, "impl": name}
                    if name == "eager_ref" and case == "ddpm_philox" and not cuda:
                        # the int64 Philox reference is ~100x slower: few repeats suffice
                        w, r = 0, (2 if quick else 3)
                    else:
                        w, r = warmup, repeats
                    if name == "compiled_ref":
                        w = max(w, 1)  # first call compiles; never timed
                    try:
                        stats = time_fn(fn, w, r, device)
                    except Exception as exc:  # noqa: BLE001 - report, do not abort the table
                        msg = str(exc).splitlines()[0][:160] if str(exc) else ""
                        rows.append({**row, "status": f"unavailable: {type(exc).__name__}: {msg}"})
                        print(_fmt(rows[-1]), file=sys.stderr, flush=True)
                        continue
                    gbps = nbytes / (stats["median_ms"] * 1e-3) / 1e9
                    results[name] = stats["median_ms"]
                    pct = 100 * gbps / copy["gbps"]
                    rows.append({**row, "status": "ok", **stats, "gbps": gbps, "pct_copy": pct})
                    if triad:
                        rows[-1]["pct_triad"] = 100 * gbps / triad
                    print(_fmt(rows[-1]), file=sys.stderr, flush=True)
                for r in rows[-len(impls) :]:
                    if r.get("status") != "ok" or not r["impl"].startswith("ours"):
                        continue
                    for ref in ("eager", "compiled"):
                        if f"{ref}_ref" in results:
                            r[f"speedup_vs_{ref}"] = results[f"{ref}_ref"] / r["median_ms"]
                del x, v, kw
    if not cuda:
        rows += _dram_step_rows(device, F, rows[0], 2 if quick else 5)
    return rows


def _stream_row(device: str, stream_mib: int | None, repeats: int) -> dict:
    """STREAM copy / triad at >= 4x LLC (or ``stream_mib`` MiB per array), the CPU's DRAM limit."""
    nbytes = (stream_mib << 20) if stream_mib else dram_array_bytes()
    r = stream_bandwidth(nbytes, device, repeats=repeats)
    return {
        "kernel": "stream",
        "case": f"{r['array_bytes'] >> 20}MiB",
        "impl": "triad",
        "dtype": "float32",
        "device": device,
        "status": "ok",
        "median_ms": r["triad_ms"],
        "gbps": r["triad_gbps"],
        "copy_gbps": r["copy_gbps"],
        "pct_copy": 100 * r["triad_gbps"] / r["copy_gbps"],
        **r,
    }


def _dram_step_rows(device: str, F: int, stream: dict, repeats: int) -> list[dict]:
    """The kernel (out of place and in place) on tensors as large as the STREAM arrays."""
    numel = stream["array_bytes"] // 4
    N = 700
    B = max(numel // (N * F), 1)
    if not use_extension("diffusion_step", torch.device(device)):
        return []
    rows = []
    for case in ("ddim", "ddpm_philox"):
        rows += _dram_case(device, case, B, N, F, stream, repeats)
    return rows


def _dram_case(device, case, B, N, F, stream, repeats) -> list[dict]:
    x, v, coef, kw = _inputs(B, N, F, torch.float32, device, case)
    kwi = {k: val for k, val in kw.items() if k != "return_x0"}
    nbytes = _bytes(x, case)
    rows = []
    for name, fn in (
        ("ours", lambda: diffusion_step(x, v, coef, **kw)),
        ("ours_inplace", lambda: diffusion_step_(x, v, coef, **kwi)),
    ):
        stats = time_fn(fn, 1, repeats, device)
        gbps = nbytes / (stats["median_ms"] * 1e-3) / 1e9
        rows.append(
            {
                "kernel": "diffusion_step",
                "case": f"{case}_dram",
                "impl": name,
                "device": device,
                "dtype": "float32",
                "B": B,
                "N": N,
                "F": F,
                "numel": x.numel(),
                "bytes": nbytes,
                "status": "ok",
                **stats,
                "gbps": gbps,
                "pct_copy": 100 * gbps / stream["copy_gbps"],
                "pct_triad": 100 * gbps / stream["triad_gbps"],
            }
        )
        print(_fmt(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _attention_rows(device: str, quick: bool) -> list[dict]:
    path = ROOT / "tools" / "bench_attention.py"
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location("bench_attention", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.attention_rows(device, quick)


def _fmt(r: dict) -> str:
    head = f"{r.get('kernel', ''):15s} {r.get('case', ''):12s} {r.get('pass', ''):8s} "
    head += f"{r.get('dtype', ''):9s} {r.get('impl', ''):14s}"
    if r.get("status") != "ok":
        return f"{head} {r.get('status')}"
    s = f"{head} {r['median_ms']:10.3f} ms"
    if "gbps" in r:
        s += f" {r['gbps']:8.1f} GB/s {r['pct_copy']:6.1f}% copy"
    if "pct_triad" in r:
        s += f" {r['pct_triad']:6.1f}% triad"
    if r.get("speedup_vs_eager"):
        s += f"  x{r['speedup_vs_eager']:.2f} eager"
    if r.get("speedup_vs_compiled"):
        s += f"  x{r['speedup_vs_compiled']:.2f} compiled"
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    ap.add_argument("--device", choices=["cpu", "cuda"], default=default)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (about a minute on CPU)")
    ap.add_argument("--json", default=None, help="write rows, copy bandwidth and provenance here")
    ap.add_argument("--skip-attention", action="store_true", help="only the diffusion_step rows")
    ap.add_argument(
        "--stream-mib",
        type=int,
        default=None,
        help="CPU: MiB per STREAM array (default: 4x the last-level cache, >= 1 GiB)",
    )
    ap.add_argument("--no-compile", action="store_true", help="no torch.compile'd reference rows")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA GPU is available")
    rows = diffusion_step_rows(args.device, args.quick, args.stream_mib, compile_ok=not args.no_compile)
    if not args.skip_attention:
        rows += _attention_rows(args.device, args.quick)
    print(f"# backend: {backend()}  threads: {torch.get_num_threads()}")
    for r in rows:
        print(_fmt(r))
    if args.json:
        from e2econd.utils import provenance, write_json_atomic

        write_json_atomic(
            args.json,
            {
                "provenance": provenance({"quick": args.quick, "device": args.device}),
                "backend": backend(),
                "threads": torch.get_num_threads(),
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
