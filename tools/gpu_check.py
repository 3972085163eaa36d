"""Stages of tools/gpu_check.sh that need Python (one file, one subcommand per stage).

    python tools/gpu_check.py probe  OUT.json
    python tools/gpu_check.py ops    --device cuda|cpu OUT.json      # tiny fwd+bwd of every op (sanitizer driver)
    python tools/gpu_check.py train  --device cuda|cpu WORK OUT.json # toy data, gpu-preset training, sampling
    python tools/gpu_check.py report OUTDIR                          # merge results, print the table

``train``: toy E2E data made from the committed fixture jets (tests/fixtures/*.h5: flips in eta /
phi and an energy scale per copy, so HCAL towers stay on the 5x5 grid), preprocessed, then the
``gpu`` preset (``--tiny``: a small model, for the CPU dry run) trained for ``--steps`` steps with
each attention path (``E2ECOND_ATTENTION=auto``, i.e. varlen for bf16, and ``kernel``), jets/s =
median over the log rows after the first; then sampling with the default sampler and steps, with
and without CUDA graphs: jets/s of the generation loop (network + updates + snapping) and end to
end (including writing the file).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _write(path: str | os.PathLike, obj: dict) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=str))
    print(json.dumps(obj, default=str)[:2000], flush=True)


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"


# ------------------------------------------------------------------------------------------ probe
def probe(out: str) -> int:
    from e2econd.ops import backend
    from e2econd.ops.attention import varlen_available

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "varlen_attn": varlen_available(),
        "nvcc": _sh(["nvcc", "--version"]).splitlines()[-1:] or None,
        "nvidia_smi": _sh(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem", "--format=csv,noheader"]
        ),
        "compute_sanitizer": _sh(["compute-sanitizer", "--version"]).splitlines()[-1:] or None,
        "cpu_threads": torch.get_num_threads(),
        "backend": backend(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        cap = torch.cuda.get_device_capability(0)
        info.update(
            gpu=p.name,
            capability=f"{cap[0]}.{cap[1]}",
            sms=p.multi_processor_count,
            memory_gib=round(p.total_memory / 2**30, 1),
            l2_mib=getattr(p, "L2_cache_size", 0) / 2**20,
            arch_list=f"{cap[0]}.{cap[1]}",
        )
    _write(out, info)
    return 0


# -------------------------------------------------------------------------------------------- ops
def ops(device: str, out_json: str, small: bool = False) -> int:
    """Tiny forward + backward of each op and path, checked against the reference (sanitizer driver;
    ``small``: fp32 + bf16, e2econd's kernels only, D = 16 and 64, for the slow sanitizer runs)."""
    from e2econd.ops import reference_mode
    from e2econd.ops.attention import masked_attention, packed_attention, select_impl
    from e2econd.ops.diffusion_step import diffusion_step, diffusion_step_

    g = torch.Generator().manual_seed(0)
    lengths = [0, 3, 17, 70, 129]
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    cu = cu.to(device)
    total, mx = sum(lengths), max(lengths)
    res = {"device": device, "checks": []}
    dtypes = [torch.float32] + ([torch.bfloat16, torch.float16] if device == "cuda" else [torch.float64])
    impls = ["kernel", "varlen"] if device == "cuda" else ["kernel"]
    dims = (16, 32, 64)
    if small:
        dtypes, impls, dims = dtypes[:2], ["kernel"], (16, 64)
    for dtype in dtypes:
        for impl in impls:
            for D in dims:
                xs = [torch.randn(total, 2, D, generator=g).to(device, dtype).requires_grad_(True) for _ in range(3)]
                gout = torch.randn(total, 2, D, generator=g).to(device, dtype)
                path = select_impl(xs[0], impl)
                out = packed_attention(*xs, cu, mx, impl=impl)
                grads = torch.autograd.grad(out, xs, gout)
                refs = [x.detach().double().requires_grad_(True) for x in xs]
                with reference_mode():
                    rout = packed_attention(*refs, cu, mx)
                rgrads = torch.autograd.grad(rout, refs, gout.double())
                errs = [_rel(a, b) for a, b in zip((out, *grads), (rout, *rgrads))]
                res["checks"].append(
                    {
                        "op": "packed_attention",
                        "dtype": str(dtype)[6:],
                        "impl": impl,
                        "path": path,
                        "D": D,
                        "max_rel_err": max(errs),
                    }
                )
        B, N = 3, 64
        lens = torch.tensor([0, 20, 64], device=device)
        xs = [torch.randn(B, 2, N, 16, generator=g).to(device, dtype).requires_grad_(True) for _ in range(3)]
        out = masked_attention(*xs, lens)
        torch.autograd.grad(out.float().square().sum(), xs)
        res["checks"].append({"op": "masked_attention", "dtype": str(dtype)[6:], "finite": bool(out.isfinite().all())})
        if dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(B, N, 3, generator=g).to(device, dtype)
            v = torch.randn(B, N, 3, generator=g).to(device, dtype)
            coef = torch.rand(B, 6, generator=g).to(device)
            mask = torch.rand(B, N, generator=g).to(device) > 0.3
            o, x0 = diffusion_step(x, v, coef, mask=mask, x0_prev=x.clone(), seed=3, offset=1, clip=2.0, return_x0=True)
            with reference_mode():
                ro, _ = diffusion_step(x, v, coef, mask=mask, x0_prev=x.clone(), seed=3, offset=1, clip=2.0)
            xi = x.clone()
            diffusion_step_(xi, v, coef, mask=mask, seed=3, offset=1)
            res["checks"].append({"op": "diffusion_step", "dtype": str(dtype)[6:], "max_rel_err": _rel(o, ro)})
    if device == "cuda":
        torch.cuda.synchronize()
    bad = [c for c in res["checks"] if c.get("max_rel_err", 0) > 3e-2 or c.get("finite") is False]
    res["ok"] = not bad
    _write(out_json, res)
    return 0 if not bad else 1


def _rel(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    den = b.norm().item()
    return float((a - b).norm().item() / den) if den > 0 else float((a - b).norm().item())


# ------------------------------------------------------------------------------------------ train
def toy_data(path: Path, n: int, seed: int = 0) -> Path:
    """n jets from the fixture jets: random eta / phi flips and an energy scale in [0.9, 1.1]."""
    from e2econd.data.e2e_io import E2EWriter, read_e2e

    src = [read_e2e(p) for p in sorted((ROOT / "tests" / "fixtures").glob("*.h5"))]
    images = np.concatenate([s.images for s in src])
    pt, m0, y = (np.concatenate([getattr(s, k) for s in src]) for k in ("pt", "m0", "y"))
    rng = np.random.default_rng(seed)
    with E2EWriter(path, compression=None) as w:
        for start in range(0, n, 256):
            k = min(256, n - start)
            j = rng.integers(0, images.shape[0], k)
            img = images[j].copy()
            fe, fp = rng.random(k) < 0.5, rng.random(k) < 0.5
            img[fe] = img[fe][:, :, ::-1, :]
            img[fp] = img[fp][:, :, :, ::-1]
            s = rng.uniform(0.9, 1.1, k)
            w.write((img * s[:, None, None, None]).astype(np.float32), pt[j] * s, m0[j] * s, y[j])
    return path


def _train_once(data: Path, run: Path, device: str, steps: int, tiny: bool, impl: str) -> dict:
    from e2econd.config import parse_channels, preset
    from e2econd.train import train

    cfg = preset("gpu")
    cfg.data.channels = parse_channels("all")
    if tiny:
        cfg.model.width, cfg.model.blocks, cfg.model.heads, cfg.model.cond_width = 32, 2, 2, 32
        cfg.train.batch_size, cfg.train.max_tokens = 8, 0
        cfg.multiplicity.steps = 30
    cfg.train.max_steps, cfg.train.warmup_steps, cfg.train.log_every = steps, min(10, steps), max(steps // 6, 1)
    cfg.train.val_every = cfg.train.ckpt_every = 10**6
    os.environ["E2ECOND_ATTENTION"] = impl
    t0 = time.perf_counter()
    train(data, run, cfg, device=device, progress=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["jets_per_s"] for r in rows if "jets_per_s" in r][1:] or [float("nan")]
    return {
        "attention": impl,
        "steps": steps,
        "batch_size": cfg.train.batch_size,
        "wall_s": wall,
        "jets_per_s": statistics.median(rates),
        "log_rows": len(rates),
        "hits_per_s": statistics.median([r["hits_per_s"] for r in rows if "hits_per_s" in r][1:] or [0.0]),
    }


def train_sample(device: str, work: str, out: str, steps: int, n_jets: int, n_sample: int, tiny: bool) -> int:
    from e2econd.data.preprocess import preprocess
    from e2econd.sample import SampleOptions, sample_to_file

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    res = {"device": device, "tiny": tiny, "train": [], "sample": []}
    t0 = time.perf_counter()
    raw = toy_data(work / "toy.h5", n_jets)
    preprocess([raw], work / "data", workers=min(8, os.cpu_count() or 1), progress=False, overwrite=True)
    res["data_s"] = time.perf_counter() - t0
    impls = ["auto", "kernel"] if device == "cuda" else ["auto"]
    for impl in impls:
        try:
            res["train"].append(_train_once(work / "data", work / f"run_{impl}", device, steps, tiny, impl))
        except Exception as exc:  # noqa: BLE001 - report and go on to the next path
            res["train"].append({"attention": impl, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        _write(out, res)
    os.environ["E2ECOND_ATTENTION"] = "auto"
    run = work / "run_auto"
    for graphs in [True, False] if device == "cuda" else [None]:
        try:
            opts = SampleOptions(n=n_sample, pt=None, seed=1, device=device, cuda_graphs=graphs)
            sample_to_file(
                run, work / "warm.h5", SampleOptions(n=8, steps=2, device=device, cuda_graphs=graphs), progress=False
            )
            s = sample_to_file(run, work / "gen.h5", opts, progress=False)
            t = s["timing"]
            loop = t["total_s"] - t["other_s"]
            res["sample"].append(
                {
                    "sampler": s["sampler"],
                    "steps": s["steps"],
                    "jets": s["jets"],
                    "cuda_graphs": graphs,
                    "jets_per_s_end_to_end": t["jets_per_s"],
                    "loop_s": loop,
                    "jets_per_s_loop": s["jets"] / loop if loop > 0 else float("nan"),
                    "hits_per_jet": t["hits"] / max(t["jets"], 1),
                    "timing": t,
                }
            )
        except Exception as exc:  # noqa: BLE001
            res["sample"].append({"cuda_graphs": graphs, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        _write(out, res)
    ok = all("error" not in r for r in res["train"] + res["sample"])
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------- report
def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stages(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            name, rc, secs, limit = (line.split("\t") + ["", "", "", ""])[:4]
            rows.append(
                {
                    "stage": name,
                    "rc": int(rc) if rc.lstrip("-").isdigit() else rc,
                    "seconds": float(secs or 0),
                    "timeout_s": limit,
                }
            )
    return rows


def _bench_summary(bench) -> list[str]:
    if not bench:
        return ["bench: no results"]
    out = []
    for r in bench.get("rows", []):
        if r.get("status") != "ok":
            continue
        if r.get("kernel") == "diffusion_step" and r.get("impl") in ("ours", "ours_inplace"):
            out.append(
                f"step {r['case']} {r['dtype']} {r['impl']}: {r['median_ms']:.3f} ms, {r['gbps']:.0f} GB/s = "
                f"{r['pct_copy']:.0f}% copy"
                + (f", x{r['speedup_vs_compiled']:.2f} compiled" if r.get("speedup_vs_compiled") else "")
            )
        if r.get("kernel") == "stream":
            out.append(f"stream {r['case']}: triad {r['triad_gbps']:.1f} GB/s, copy {r['copy_gbps']:.1f} GB/s")
        if r.get("kernel") == "attention" and r.get("case") == "gpu_preset":
            out.append(f"attn gpu_preset {r['dtype']} {r['pass']} {r['impl']}: {r['median_ms']:.2f} ms")
    return out


def report(outdir: str, work: str | None) -> int:
    od = Path(outdir)
    wd = Path(work) if work else od
    res = {
        "stages": _stages(wd / "stages.tsv"),
        "probe": _load(od / "probe.json"),
        "ops": _load(wd / "ops.json"),
        "bench": _load(od / "bench_kernels.json"),
        "train_sample": _load(od / "train_sample.json"),
    }
    san = (od / "sanitizer.txt").read_text() if (od / "sanitizer.txt").exists() else ""
    res["sanitizer_summary"] = [ln.strip() for ln in san.splitlines() if "SUMMARY" in ln]
    pyt = (od / "pytest_cuda.txt").read_text().strip().splitlines() if (od / "pytest_cuda.txt").exists() else []
    res["pytest_summary"] = pyt[-1] if pyt else None
    lines = ["| stage | rc | s | result |", "| --- | --- | --- | --- |"]
    p = res["probe"] or {}
    notes = {
        "probe": f"{p.get('gpu', 'no GPU')} cc {p.get('capability', '-')}, torch {p.get('torch')}, "
        f"varlen_attn {p.get('varlen_attn')}",
        "ops": f"ok={res['ops'].get('ok')} max rel err "
        f"{max((c.get('max_rel_err', 0) for c in res['ops']['checks']), default=0):.2e}"
        if res["ops"]
        else "",
        "memcheck": "; ".join(s for s in res["sanitizer_summary"] if "ERROR" in s)[:100],
        "racecheck": "; ".join(s for s in res["sanitizer_summary"] if "RACECHECK" in s)[:100],
        "pytest_cuda": (res["pytest_summary"] or "")[:100],
    }
    ts = res["train_sample"] or {}
    notes["train_sample"] = "; ".join(
        [
            f"train[{r['attention']}] {r['jets_per_s']:.0f} jets/s"
            if "jets_per_s" in r
            else f"train[{r.get('attention')}] {r.get('error', '')[:60]}"
            for r in ts.get("train", [])
        ]
        + [
            f"sample[graphs={r['cuda_graphs']}] {r['jets_per_s_loop']:.0f} jets/s loop, "
            f"{r['jets_per_s_end_to_end']:.0f} e2e"
            if "jets_per_s_loop" in r
            else f"sample {r.get('error', '')[:60]}"
            for r in ts.get("sample", [])
        ]
    )
    for s in res["stages"]:
        lines.append(f"| {s['stage']} | {s['rc']} | {s['seconds']:.0f} | {notes.get(s['stage'], '')} |")
    lines += ["", *[f"- {b}" for b in _bench_summary(res["bench"])]]
    table = "\n".join(lines)
    (od / "table.md").write_text(table + "\n")
    (od / "results.json").write_text(json.dumps(res, indent=2, default=str))
    print(table, flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe").add_argument("out")
    o = sub.add_parser("ops")
    o.add_argument("--device", default="cuda")
    o.add_argument("--small", action="store_true", help="fewer cases (for compute-sanitizer)")
    o.add_argument("out")
    t = sub.add_parser("train")
    t.add_argument("--device", default="cuda")
    t.add_argument("--steps", type=int, default=60)
    t.add_argument("--jets", type=int, default=2048, help="toy jets to train on")
    t.add_argument("--sample", type=int, default=2048, help="jets to sample")
    t.add_argument("--tiny", action="store_true", help="small model and batch (CPU dry run)")
    t.add_argument("work")
    t.add_argument("out")
    r = sub.add_parser("report")
    r.add_argument("outdir")
    r.add_argument("--work", default=None)
    a = ap.parse_args(argv)
    if a.cmd == "probe":
        return probe(a.out)
    if a.cmd == "ops":
        return ops(a.device, a.out, a.small)
    if a.cmd == "train":
        return train_sample(a.device, a.work, a.out, a.steps, a.jets, a.sample, a.tiny)
    return report(a.outdir, a.work)


if __name__ == "__main__":
    raise SystemExit(main())
