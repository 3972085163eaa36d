#!/usr/bin/env python
"""Physics report of the embedded generator (``e2econd make-data``): numbers, JSON and markdown.

Generates top and quark/gluon jets with the same work units as ``make_data`` and checks:
per-channel occupancy (< 10 % non-zero pixels), calorimeter energy in the jet cone vs the jet energy
pT·cosh(η), the top-mass peak (median m0 in 150–200 GeV), gluon jets wider (energy-weighted ΔR) and
with more tracks than quark jets; compares occupancies and energy sums with the statistics of an
independent generator (``*.stats.json`` of its full files, committed in tests/fixtures; ``--ref-dir``)
and records CPU ms per jet.

Usage: PYTHONPATH=. python tools/report_make_data.py --n-top 1000 --n-qg 1000 --workers 2 \
           --out-dir reports/make_data
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from e2econd.generate.detector import DetectorConfig
from e2econd.generate.imaging import image_observables
from e2econd.generate.make_data import ETA_MAX, PROCESSES, UNIT_SIZE, generate_unit
from e2econd.utils import provenance, write_json_atomic

REF = {
    "top": "E2Esim_TOP_IMGjet_R0.8_pu0_n200_seed102.stats.json",
    "qg": "E2Esim_QG_IMGjet_R0.4_pu0_n300_seed101.stats.json",
}


def run(process: str, n: int, seed: int, workers: int) -> dict:
    spec = PROCESSES[process]
    tasks = [
        {
            "process": process,
            "unit": k,
            "unit_size": UNIT_SIZE,
            "n": min(UNIT_SIZE, n - k * UNIT_SIZE),
            "seed": seed,
            "R": spec["R"],
            "pt_min": spec["pt_min"],
            "pt_max": spec["pt_max"],
            "eta_max": ETA_MAX,
            "detector": DetectorConfig().to_dict(),
            "pileup": 0.0,
        }
        for k in range(math.ceil(n / UNIT_SIZE))
    ]
    t0 = time.perf_counter()
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            res = list(pool.imap(generate_unit, tasks))
    else:
        res = [generate_unit(t) for t in tasks]
    wall = time.perf_counter() - t0
    keys = ("images", "pt", "m0", "eta", "y")
    out = {k: np.concatenate([r[k] for r in res]) for k in keys}
    out["cpu_ms_per_jet"] = 1e3 * sum(r["cpu_s"] for r in res) / n
    out["wall_s"] = wall
    out["events"] = int(sum(r["events"] for r in res))
    return out


def _q(a, qs=(16, 50, 84)):
    return [round(float(x), 4) for x in np.percentile(a, qs)]


def summarize(process: str, d: dict, ref: dict | None) -> dict:
    R = PROCESSES[process]["R"]
    o = image_observables(d["images"], R)
    s: dict = {
        "n": int(len(d["pt"])),
        "events": d["events"],
        "cpu_ms_per_jet": round(d["cpu_ms_per_jet"], 2),
        "wall_s": round(d["wall_s"], 1),
        "pt_mean": round(float(d["pt"].mean()), 2),
        "pt_min": round(float(d["pt"].min()), 2),
        "pt_max": round(float(d["pt"].max()), 2),
        "m0_p16_p50_p84": _q(d["m0"]),
        "y_mean": round(float(d["y"].mean()), 4),
    }
    for c, ref_name in (("tracks", "Tracks"), ("ecal", "ECAL"), ("hcal", "HCAL")):
        s[c] = {
            "occupancy_mean": round(float(o[f"occupancy_{c}"].mean()), 5),
            "occupancy_max": round(float(o[f"occupancy_{c}"].max()), 5),
            "nonzero_mean": round(float(o[f"nonzero_{c}"].mean()), 1),
            "sum_mean": round(float(o[f"sum_{c}"].mean()), 2),
            "min_pixel": round(float(d["images"][:, ["tracks", "ecal", "hcal"].index(c)].min()), 4),
        }
        if ref is not None:
            s[c]["reference_nonzero_mean"] = round(ref[ref_name]["nonzero_mean"], 1)
            s[c]["reference_sum_mean"] = round(ref[ref_name]["sum_mean"], 2)
    e_jet = d["pt"] * np.cosh(d["eta"])
    s["calo_cone_over_jet_energy_p16_p50_p84"] = _q(o["calo_cone"] / e_jet)
    s["image_calo_sum_over_pt_mean"] = round(float(((o["sum_ecal"] + o["sum_hcal"]) / d["pt"]).mean()), 4)
    s["tracks_sum_over_pt_median"] = round(float(np.median(o["sum_tracks"] / d["pt"])), 4)
    if ref is not None:
        s["reference_image_calo_sum_over_pt_mean"] = round(
            (ref["ECAL"]["sum_mean"] + ref["HCAL"]["sum_mean"]) / ref["jets"]["pt_mean"], 4
        )
        s["reference_m0_p16_p50_p84"] = [round(x, 2) for x in ref["jets"]["m0_p16_p50_p84"]]
    checks = {f"occupancy_{c}_lt_10pct": bool(o[f"occupancy_{c}"].mean() < 0.10) for c in ("tracks", "ecal", "hcal")}
    if process == "top":
        checks["top_mass_median_150_200"] = bool(150 < np.median(d["m0"]) < 200)
    else:
        q, g = d["y"] == 1, d["y"] == 0
        s["quark"] = {
            "n": int(q.sum()),
            "girth_mean": round(float(o["girth"][q].mean()), 4),
            "track_pixels_mean": round(float(o["n_track_pix"][q].mean()), 2),
            "m0_median": round(float(np.median(d["m0"][q])), 2),
        }
        s["gluon"] = {
            "n": int(g.sum()),
            "girth_mean": round(float(o["girth"][g].mean()), 4),
            "track_pixels_mean": round(float(o["n_track_pix"][g].mean()), 2),
            "m0_median": round(float(np.median(d["m0"][g])), 2),
        }
        checks["gluon_wider_than_quark"] = s["gluon"]["girth_mean"] > s["quark"]["girth_mean"]
        checks["gluon_more_tracks_than_quark"] = s["gluon"]["track_pixels_mean"] > s["quark"]["track_pixels_mean"]
    checks["calo_cone_response_0.75_1.05"] = bool(0.75 < s["calo_cone_over_jet_energy_p16_p50_p84"][1] < 1.05)
    s["checks"] = checks
    return s


def markdown(report: dict) -> str:
    lines = ["# make-data physics report", "", f"command: `{report['command']}`", ""]
    for proc in ("top", "qg"):
        if proc not in report:
            continue
        s = report[proc]
        lines += [
            f"## {proc}: {s['n']} jets ({s['events']} events), {s['cpu_ms_per_jet']} ms CPU/jet",
            "",
            "| channel | occupancy mean | non-zero px (ref) | sum GeV (ref) | min pixel |",
            "|---|---|---|---|---|",
        ]
        for c in ("tracks", "ecal", "hcal"):
            x = s[c]
            lines.append(
                f"| {c} | {x['occupancy_mean']:.4f} | {x['nonzero_mean']} "
                f"({x.get('reference_nonzero_mean')}) | {x['sum_mean']} "
                f"({x.get('reference_sum_mean')}) "
                f"| {x['min_pixel']} |"
            )
        lines += [
            "",
            f"- jet pT mean {s['pt_mean']} GeV (range {s['pt_min']}–{s['pt_max']}); "
            f"m0 p16/p50/p84 {s['m0_p16_p50_p84']} (ref {s.get('reference_m0_p16_p50_p84')})",
            f"- calorimeter energy in the cone / jet energy pT·cosh η, p16/p50/p84: "
            f"{s['calo_cone_over_jet_energy_p16_p50_p84']}",
            f"- whole-image (ECAL+HCAL) sum / pT mean {s['image_calo_sum_over_pt_mean']} "
            f"(ref {s.get('reference_image_calo_sum_over_pt_mean')}); Tracks sum / pT median "
            f"{s['tracks_sum_over_pt_median']}",
        ]
        if proc == "qg":
            q, g = s["quark"], s["gluon"]
            lines.append(
                f"- quark: girth {q['girth_mean']}, track pixels {q['track_pixels_mean']}, "
                f"m0 median {q['m0_median']}; gluon: girth {g['girth_mean']}, "
                f"track pixels {g['track_pixels_mean']}, m0 median {g['m0_median']}"
            )
        verdicts = (f"{k}={'PASS' if v else 'FAIL'}" for k, v in s["checks"].items())
        lines.append("- checks: " + ", ".join(verdicts))
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-top", type=int, default=1000)
    ap.add_argument("--n-qg", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out-dir", default="reports/make_data")
    ap.add_argument("--ref-dir", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
    args = ap.parse_args(argv)
    import sys

    report: dict = {"command": "PYTHONPATH=. python " + " ".join(sys.argv), "provenance": provenance(vars(args))}
    for proc, n in (("top", args.n_top), ("qg", args.n_qg)):
        if n <= 0:
            continue
        ref_path = Path(args.ref_dir) / REF[proc]
        ref = json.loads(ref_path.read_text()) if ref_path.exists() else None
        report[proc] = summarize(proc, run(proc, n, args.seed, args.workers), ref)
        print(json.dumps(report[proc], indent=1))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))
    ok = all(v for p in ("top", "qg") if p in report for v in report[p]["checks"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
