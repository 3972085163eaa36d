"""Benchmark rows for Kernel 2 (masked attention over variable-size hit sets).

``attention_rows(device, quick)`` is imported by ``tools/bench_kernels.py``; run this file
directly for the attention rows alone::

    PYTHONPATH=. python tools/bench_attention.py [--device cpu|cuda] [--quick] [--json out.json]

Implementations (forward, and forward+backward with a random upstream gradient):
  reference      eager masked matmul-softmax reference (padded)
  sdpa_mask      torch scaled_dot_product_attention with a (B,1,1,N) key-padding mask (padded)
  sdpa_loop      torch SDPA called once per jet on its own hits (packed, Python loop)
  flex           FlexAttention, torch.compile'd, block mask built once per batch (padded)
  varlen         torch.nn.attention.varlen.varlen_attn (CUDA, bf16/fp16 only; packed)
  ours_padded    e2econd masked_attention (padded kernel)
  ours_packed    e2econd packed_attention, impl="kernel" (the e2econd fp32-FMA kernel)
  ours_auto      e2econd packed_attention as the model calls it (CUDA bf16/fp16: the varlen path)
Cases: ``realistic`` (32 jets, hit counts log-normal quantiles clamped to 30–2,000, median
~700, as a three-channel top jet) and ``uniform`` (32 jets of 512 hits); H = 4, D = 16; and
``gpu_preset``: the ``gpu`` training preset's attention (its batch of jets with the realistic mix,
heads and head dim from e2econd.config; packed implementations only; 4 jets on the CPU).
``--quick`` compiles nothing (flex is skipped): CUDA device time is scarce.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from e2econd.ops import backend
from e2econd.ops.attention import masked_attention, masked_attention_reference, packed_attention, varlen_available

try:  # shared timing helper (tools/benchutil.py); same contract implemented locally otherwise
    from tools.benchutil import time_fn
except ImportError:  # pragma: no cover - only when run before benchutil exists

    def time_fn(fn: Callable[[], object], warmup: int, repeats: int, device: str) -> dict:
        """Median / p10 / p90 wall time of ``fn()`` in ms (CUDA-synchronised)."""
        sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
        for _ in range(warmup):
            fn()
        sync()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append((time.perf_counter() - t0) * 1e3)
        ts.sort()
        q = statistics.quantiles(ts, n=10, method="inclusive") if len(ts) > 1 else [ts[0]] * 9
        return {"median_ms": statistics.median(ts), "p10_ms": q[0], "p90_ms": q[-1]}


def realistic_lengths(B: int, median: float = 700.0, sigma: float = 0.8, lo: int = 30, hi: int = 2000) -> list[int]:
    """Deterministic log-normal quantiles of the hit multiplicity, clamped to [lo, hi]."""
    nd = statistics.NormalDist()
    out = [math.exp(math.log(median) + sigma * nd.inv_cdf((i + 0.5) / B)) for i in range(B)]
    return [int(min(max(round(x), lo), hi)) for x in out]


def _inputs(lengths: list[int], H: int, D: int, dtype: torch.dtype, device: str, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    B, N = len(lengths), max(lengths)
    total = sum(lengths)
    packed = [torch.randn(total, H, D, generator=g).to(device=device, dtype=dtype) for _ in range(3)]
    cu = torch.zeros(B + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    padded = []
    for x in packed:
        p = torch.zeros(B, N, H, D, dtype=dtype, device=device)
        for b in range(B):
            p[b, : lengths[b]] = x[cu[b] : cu[b + 1]]
        padded.append(p.transpose(1, 2).contiguous())
    lens = torch.tensor(lengths, device=device)
    return padded, packed, lens, cu.to(device), N


def _impls(lengths, H, D, dtype, device, quick=False, packed_only=False):
    """name -> (layout, callable(q, k, v) -> out) or (layout, reason string) when unavailable."""
    if packed_only:
        return _packed_impls(lengths, H, D, dtype, device)
    padded, packed, lens, cu, N = _inputs(lengths, H, D, dtype, device)
    B = len(lengths)
    key_mask = (torch.arange(N, device=device)[None, :] < lens[:, None])[:, None, None, :]
    starts = cu.tolist()
    impls: dict[str, tuple[str, object]] = {}
    impls["reference"] = ("padded", lambda q, k, v: masked_attention_reference(q, k, v, lens))
    impls["sdpa_mask"] = ("padded", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask))

    def sdpa_loop(q, k, v):
        outs = [
            F.scaled_dot_product_attention(*(x[starts[b] : starts[b + 1]].transpose(0, 1)[None] for x in (q, k, v)))[
                0
            ].transpose(0, 1)
            for b in range(B)
        ]
        return torch.cat(outs, 0)

    impls["sdpa_loop"] = ("packed", sdpa_loop)
    try:
        if quick:
            raise RuntimeError("skipped in --quick (torch.compile)")
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def mask_mod(b, h, qi, ki):
            return (qi < lens[b]) & (ki < lens[b])

        block_mask = create_block_mask(mask_mod, B, None, N, N, device=device)  # once per batch
        flex = torch.compile(flex_attention, fullgraph=True, dynamic=False)
        probe = [x[:, :, :].clone() for x in padded]
        flex(*probe, block_mask=block_mask)  # compile now; errors -> unavailable
        impls["flex"] = ("padded", lambda q, k, v: flex(q, k, v, block_mask=block_mask))
    except Exception as exc:  # noqa: BLE001 - report why the row is missing
        impls["flex"] = ("padded", f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    if device.startswith("cuda") and dtype in (torch.bfloat16, torch.float16):
        try:
            from torch.nn.attention.varlen import varlen_attn

            mx = max(lengths)
            impls["varlen"] = ("packed", lambda q, k, v: varlen_attn(q, k, v, cu, cu, mx, mx))
        except Exception as exc:  # noqa: BLE001
            impls["varlen"] = ("packed", f"unavailable: {type(exc).__name__}: {exc}")
    elif device.startswith("cuda"):
        impls["varlen"] = ("packed", "unavailable: varlen_attn supports bf16/fp16 only")
    impls["ours_padded"] = ("padded", lambda q, k, v: masked_attention(q, k, v, lens))
    impls.update(_ours_packed(cu, max(lengths), dtype, device))
    return impls, padded, packed


def _ours_packed(cu, mx, dtype, device) -> dict:
    impls = {"ours_packed": ("packed", lambda q, k, v: packed_attention(q, k, v, cu, mx, impl="kernel"))}
    if device.startswith("cuda") and dtype in (torch.bfloat16, torch.float16):
        impls["ours_auto"] = ("packed", lambda q, k, v: packed_attention(q, k, v, cu, mx))
    return impls


def _packed_impls(lengths, H, D, dtype, device):
    """Packed implementations only (large batches: no padded (B, H, N, N) work)."""
    g = torch.Generator(device="cpu").manual_seed(1)
    total = sum(lengths)
    packed = [torch.randn(total, H, D, generator=g).to(device=device, dtype=dtype) for _ in range(3)]
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    cu, mx = cu.to(device), max(lengths)
    impls = {}
    if device.startswith("cuda") and dtype in (torch.bfloat16, torch.float16) and varlen_available():
        from torch.nn.attention.varlen import varlen_attn

        impls["varlen"] = ("packed", lambda q, k, v: varlen_attn(q, k, v, cu, cu, mx, mx))
    impls.update(_ours_packed(cu, mx, dtype, device))
    return impls, None, packed


def gpu_preset_shape(device: str, quick: bool) -> tuple[list[int], int, int]:
    """(lengths, H, D) of the gpu preset's attention: its batch (4 jets on the CPU), heads, head dim."""
    from e2econd.config import preset

    cfg = preset("gpu")
    B = cfg.train.batch_size if device.startswith("cuda") else 4
    lengths = realistic_lengths(
        B, median=700.0 if device.startswith("cuda") else 150.0, hi=2000 if device.startswith("cuda") else 300
    )
    return lengths, cfg.model.heads, cfg.model.width // cfg.model.heads


def attention_rows(device: str, quick: bool) -> list[dict]:
    """Timing rows (dicts) for every implementation × pass × case × dtype on ``device``."""
    H, D = 4, 16
    B = 8 if quick else 32
    cases = {
        "realistic": realistic_lengths(B, median=200.0 if quick else 700.0, hi=500 if quick else 2000),
        "uniform": [128 if quick else 512] * B,
    }
    dtypes = [torch.float32] if not device.startswith("cuda") else [torch.float32, torch.bfloat16]
    warmup, repeats = (1, 3) if quick else (2, 7 if device.startswith("cuda") else 5)
    if device.startswith("cuda"):
        warmup, repeats = (3, 10) if quick else (10, 50)
    shapes = {case: (lengths, H, D, False) for case, lengths in cases.items()}
    gl, gh, gd = gpu_preset_shape(device, quick)
    shapes["gpu_preset"] = (gl, gh, gd, True)
    rows = []
    for case, (lengths, H, D, packed_only) in shapes.items():
        for dtype in dtypes:
            impls, padded, packed = _impls(lengths, H, D, dtype, device, quick=quick, packed_only=packed_only)
            for name, (layout, fn) in impls.items():
                for mode in ("fwd", "fwd+bwd"):
                    row = {
                        "kernel": "attention",
                        "case": case,
                        "impl": name,
                        "layout": layout,
                        "pass": mode,
                        "dtype": str(dtype).replace("torch.", ""),
                        "device": device,
                        "B": len(lengths),
                        "H": H,
                        "D": D,
                        "tokens": sum(lengths),
                        "max_len": max(lengths),
                        "median_len": int(statistics.median(lengths)),
                    }
                    if isinstance(fn, str):
                        rows.append({**row, "status": fn})
                        continue
                    base = padded if layout == "padded" else packed
                    if mode == "fwd":

                        def run(fn=fn, base=base):
                            with torch.no_grad():
                                return fn(*base)
                    else:
                        leaves = [x.detach().clone().requires_grad_(True) for x in base]
                        grad = torch.randn_like(base[0])

                        def run(fn=fn, leaves=leaves, grad=grad):
                            out = fn(*leaves)
                            torch.autograd.grad(out, leaves, grad)

                    w, n = (warmup, repeats)
                    if name == "reference" and not device.startswith("cuda") and not quick:
                        w, n = 0, 2  # ~20-60 s per call on 2 CPU cores: two timed calls
                    try:
                        stats = time_fn(run, w, n, device)
                        rows.append({**row, "status": "ok", "warmup": w, "repeats": n, **stats})
                    except Exception as exc:  # noqa: BLE001
                        msg = str(exc).splitlines()[0][:160] if str(exc) else ""
                        rows.append({**row, "status": f"unavailable: {type(exc).__name__}: {msg}"})
                    print(_fmt(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _fmt(r: dict) -> str:
    if r["status"] != "ok":
        return f"{r['case']:9s} {r['dtype']:8s} {r['pass']:7s} {r['impl']:12s} {r['status']}"
    t = f"{r['median_ms']:10.2f} ms (p10 {r['p10_ms']:.2f}, p90 {r['p90_ms']:.2f})"
    return f"{r['case']:9s} {r['dtype']:8s} {r['pass']:7s} {r['impl']:12s} {t}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None, help="write the rows (and torch/backend info) here")
    args = ap.parse_args(argv)
    rows = attention_rows(args.device, args.quick)
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
    for r in rows:
        print(_fmt(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
