"""Quality against the number of network evaluations: one table and one plot from `e2econd compare` runs.

    python tools/quality_vs_steps.py CMP_DIR [CMP_DIR ...] --out PREFIX

Each CMP_DIR holds a ``compare.json`` whose samples were written by ``e2econd sample``: the sampler,
its steps, the network evaluations (NFE) and the objective are read from each file's provenance, and
jets/s from the sibling ``<stem>.json`` that ``sample --json`` printed, when it exists. Samples whose
compare label starts with ``ref`` are the reference of their objective (a dashed line in the plot).
Writes ``PREFIX.md`` (the table: value ± error and the ratio to the real-vs-real floor) and
``PREFIX.png`` (the metrics against NFE, log2 axis, one colour per objective).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = [
    ("auc_image", "image AUC"),
    ("auc_highlevel", "high-level AUC"),
    ("auc_hits", "hit AUC"),
    ("w1_energy_tracks", "W1 E tracks"),
    ("w1_energy_ecal", "W1 E ECAL"),
    ("w1_energy_hcal", "W1 E HCAL"),
    ("w1_core_energy_ecal", "W1 ECAL core"),
    ("w1_mass", "W1 mass"),
]


def rows_from(cmp_dir: Path) -> list[dict]:
    """One row per sample of ``cmp_dir/compare.json``: labels, provenance and headline records."""
    from e2econd.data.e2e_io import read_provenance

    d = json.loads((cmp_dir / "compare.json").read_text())
    out = []
    for label, sample in zip(d["labels"], d["samples"], strict=True):
        path = Path(sample["paths"][0])
        cfg = (read_provenance(path) or {}).get("config", {})
        summary = path.with_suffix(".json")
        jps = None
        if summary.exists():
            jps = json.loads(summary.read_text()).get("timing", {}).get("jets_per_s")
        out.append(
            {
                "label": label,
                "objective": cfg.get("objective", "vpred"),
                "sampler": cfg.get("options", {}).get("sampler") or cfg.get("sampler", "default"),
                "steps": cfg.get("steps"),
                "nfe": cfg.get("nfe"),
                "ref": label.startswith("ref"),
                "jets_per_s": jps,
                "n": d["n_compare"],
                "headline": d["headline"][label],
                "compare": str(cmp_dir),
            }
        )
    return out


def _cell(rec: dict | None, auc: bool) -> str:
    if rec is None or rec.get("value") is None:
        return "–"
    v, e = rec["value"], rec.get("error") or 0.0
    if auc:
        return f"{v:.3f} ± {e:.3f}"
    return f"{v:.3g} ± {e:.2g} ({rec['ratio']:.2g})"


def table(rows: list[dict]) -> str:
    head = ["sample", "objective", "sampler", "steps", "NFE", "jets/s"] + [m[1] for m in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (r["objective"], r["ref"], r["nfe"] or 0, r["sampler"])):
        jps = f"{r['jets_per_s']:.1f}" if r["jets_per_s"] else "–"
        name = f"{r['sampler']} (ref)" if r["ref"] else r["sampler"]
        cells = [_cell(r["headline"].get(k), k.startswith("auc")) for k, _ in METRICS]
        lines.append(
            f"| {r['label']} | {r['objective']} | {name} | {r['steps']} | {r['nfe']} | {jps} | "
            + " | ".join(cells)
            + " |"
        )
    floors = rows[0]["headline"] if rows else {}
    fl = [f"{title} {floors[k]['floor']:.3g} ± {floors[k]['floor_error']:.2g}" for k, title in METRICS if k in floors]
    lines.append("")
    lines.append(f"Floors (real vs real, {rows[0]['n'] if rows else 0} jets per side): " + "; ".join(fl) + ".")
    lines.append("W1 cells: value ± error in GeV, the ratio to the floor in brackets.")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(m[0] in r["headline"] for r in rows)]  # those the compares ran
    cols = (len(metrics) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(4 * cols, 7.2))
    axes = axes.reshape(-1)
    objectives = sorted({r["objective"] for r in rows})
    colours = dict(zip(objectives, ["C0", "C1", "C2", "C3", "C4"], strict=False))
    for ax in axes[len(metrics) :]:
        ax.axis("off")
    for ax, (key, title) in zip(axes, metrics, strict=False):
        auc = key.startswith("auc")
        for obj in objectives:
            pts = [r for r in rows if r["objective"] == obj and not r["ref"] and r["nfe"]]
            pts = sorted(pts, key=lambda r: r["nfe"])
            pts = [r for r in pts if key in r["headline"]]
            if pts:
                x = [r["nfe"] for r in pts]
                y = [r["headline"][key]["value" if auc else "ratio"] for r in pts]
                e = [r["headline"][key]["error"] / (1 if auc else r["headline"][key]["floor"]) for r in pts]
                ax.errorbar(x, y, yerr=e, marker="o", ms=3, color=colours[obj], label=f"{obj} {pts[0]['sampler']}")
            for r in (r for r in rows if r["objective"] == obj and r["ref"] and key in r["headline"]):
                y = r["headline"][key]["value" if auc else "ratio"]
                ax.axhline(y, ls="--", lw=1, color=colours[obj], label=f"{obj} {r['sampler']} {r['nfe']} (ref)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("network evaluations")
        ax.set_title(title if auc else f"{title} / floor")
        if auc:
            ax.axhline(0.5, color="grey", lw=0.8)
        else:
            ax.set_yscale("log")  # a diverging sampler sits orders of magnitude above the rest
            ax.axhline(1.0, color="grey", lw=0.8)
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("compare_dirs", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path, help="output prefix: PREFIX.md and PREFIX.png")
    args = ap.parse_args(argv)
    rows = [r for d in args.compare_dirs for r in rows_from(d)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md = args.out.with_suffix(".md")
    md.write_text(table(rows))
    plot(rows, args.out.with_suffix(".png"))
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
