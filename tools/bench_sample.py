"""End-to-end sampling speed: jets/s (model + sampler + snapping + writing) per sampler and step count.

    python tools/bench_sample.py RUN_DIR [--pt 400] [--n 64] [--device cpu] [--json FILE]
        [--config ddpm:512 --config dpmpp2m:16 ...]

Each configuration generates the same jets (same conditions and seed) into a temporary E2E
file and reports jets/s and the split of wall time between the network, the fused update op
and everything else (conditions, multiplicities, snapping to the grid, writing). The ratio to
the first configuration (by default the thesis's 512-step ancestral sampler) is the speed-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--pt", type=float, default=400.0)
    ap.add_argument("--n", type=int, default=64, help="jets per configuration")
    ap.add_argument("--n-ddpm", type=int, default=None, help="jets for ddpm (default: --n)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--config",
        action="append",
        default=None,
        help="sampler:steps (repeatable); default ddpm:512 dpmpp2m:32 dpmpp2m:16 dpmpp2m:8 ddim:32 "
        "(a distilled student: consistency:K)",
    )
    ap.add_argument("--format", default="parquet", choices=["parquet", "h5"])
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-cuda-graphs", action="store_true", help="CUDA: evaluate the network eagerly")
    args = ap.parse_args(argv)
    graphs = False if args.no_cuda_graphs else None

    from e2econd.sample import SampleOptions, sample_to_file

    configs = args.config or ["ddpm:512", "dpmpp2m:32", "dpmpp2m:16", "dpmpp2m:8", "ddim:32"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (loads the run, first-call overheads) with the run's default sampler and steps, which
        # every run accepts (a distilled student samples only with its own K)
        sample_to_file(
            args.run_dir,
            Path(tmp) / f"warm.{args.format}",
            SampleOptions(n=4, pt=args.pt, device=args.device),
            progress=False,
        )
        for cfg in configs:
            name, steps = cfg.split(":")
            n = args.n_ddpm if (name == "ddpm" and args.n_ddpm) else args.n
            opts = SampleOptions(
                n=n,
                pt=args.pt,
                sampler=name,
                steps=int(steps),
                device=args.device,
                batch_size=args.batch_size,
                seed=0,
                cuda_graphs=graphs,
            )
            s = sample_to_file(args.run_dir, Path(tmp) / f"gen.{args.format}", opts, progress=False)
            t = s["timing"]
            rows.append(
                {
                    "sampler": name,
                    "steps": int(steps),
                    "jets": n,
                    "jets_per_s": t["jets_per_s"],
                    "total_s": t["total_s"],
                    "network_s": t["network_s"],
                    "update_s": t["update_s"],
                    "other_s": t["other_s"],
                    "hits_per_jet": t["hits"] / max(t["jets"], 1),
                }
            )
            print(
                f"{name:8s} {steps:>4s} steps: {t['jets_per_s']:9.2f} jets/s  (network {t['network_s']:.1f} s, "
                f"update {t['update_s']:.2f} s, other {t['other_s']:.1f} s)",
                flush=True,
            )
    base = rows[0]["jets_per_s"]
    print(f"\n{'sampler':8s} {'steps':>5s} {'jets/s':>9s} {'speed-up':>9s} {'net %':>6s} {'upd %':>6s} {'other %':>7s}")
    for r in rows:
        r["speedup_vs_first"] = r["jets_per_s"] / base
        tot = r["total_s"]
        print(
            f"{r['sampler']:8s} {r['steps']:5d} {r['jets_per_s']:9.2f} {r['speedup_vs_first']:9.1f} "
            f"{100 * r['network_s'] / tot:6.1f} {100 * r['update_s'] / tot:6.1f} {100 * r['other_s'] / tot:7.1f}"
        )
    if args.json:
        meta = {
            "date": date.today().isoformat(),
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "device": args.device,
            "cuda_graphs": graphs,
            "threads": torch.get_num_threads(),
            "run_dir": args.run_dir,
            "pt": args.pt,
            "argv": sys.argv,
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
