"""Markdown rendering of an evaluation (``report.md``) and of a comparison (``compare.md``)."""

from __future__ import annotations

import json

#: one-line description of each headline metric (README's metrics section says the same)
HEADLINE_DOC = {
    "auc_image": "CNN on the full 3-channel image + conditions (held-out AUC; 0.5 = indistinguishable)",
    "auc_highlevel": "MLP on 10 high-level features + conditions and responses (AUC)",
    "auc_hits": "Deep Sets on the 64 hottest hits per channel + conditions (AUC)",
    "cov_calo": "JetNet coverage, calorimeter EMD: fraction of real jets that are some generated jet's nearest "
    "neighbour (higher is better; collapse -> low)",
    "mmd_calo": "JetNet MMD: mean EMD (GeV) of a real jet to its nearest generated jet (lower is better)",
    "w1_tau21": "W1 of N-subjettiness τ2/τ1 (calorimeter deposits, β = 1)",
    "w1_tau32": "W1 of τ3/τ2",
    "w1_core_energy_tracks": "W1 of the Tracks energy within R < 0.05 of the axis (GeV)",
    "w1_core_energy_ecal": "W1 of the ECAL energy within R < 0.05 (GeV)",
    "w1_core_energy_hcal": "W1 of the HCAL energy within R < 0.05 (GeV)",
    "w1_energy_tracks": "W1 of the Tracks total energy (GeV)",
    "w1_energy_ecal": "W1 of the ECAL total energy (GeV)",
    "w1_energy_hcal": "W1 of the HCAL total energy (GeV)",
    "w1_mass": "W1 of the calorimeter image mass (GeV)",
    "w1_hcal_central": "difference of the fractions of jets whose hottest HCAL tower is the central one",
    "fd_highlevel": "Fréchet distance on the high-level features, extrapolated to N → ∞",
    "kd_highlevel": "kernel distance (median MMD², polynomial kernel) on the high-level features",
}

THESIS_NOTE = (
    "Thesis comparison: mean EMD over random generated–real pairs. Not a two-sample distance — a generator "
    "that always emits a typical jet minimises it, so it rewards mode collapse; use cov/mmd instead."
)


def fmt(x, err=None) -> str:
    if x is None:
        return "n/a"
    s = f"{x:.4g}"
    if err is not None:
        s += f" ± {err:.2g}"
    return s


def headline_table(head: dict) -> list[str]:
    lines = ["| headline metric | value | floor | ratio | what it measures |", "|---|---|---|---|---|"]
    for name, h in head.items():
        lines.append(
            f"| {name} | {fmt(h['value'], h['error'])} | {fmt(h['floor'], h['floor_error'])} | {fmt(h['ratio'])} "
            f"| {HEADLINE_DOC.get(name, '')} |"
        )
    return lines


def metric_table(metrics: dict) -> list[str]:
    lines = ["| metric | value | floor | ratio | pull |", "|---|---|---|---|---|"]
    for name, e in metrics.items():
        label = f"{name} (thesis comparison)" if name.startswith("emd_") else name
        lines.append(
            f"| {label} | {fmt(e['value'], e['value_err'])} | {fmt(e['floor'], e['floor_err'])} | {fmt(e['ratio'])} "
            f"| {fmt(e.get('pull'))} |"
        )
    return lines


def _summary(result: dict) -> list[str]:
    s = result["samples"]
    return [
        "# e2econd evaluation report",
        "",
        f"- real: {', '.join(s['real']['paths'])} ({s['real']['n_jets']} jets)",
        f"- generated: {', '.join(s['generated']['paths'])} ({s['generated']['n_jets']} jets)",
        f"- compared: n = {s['n_compare']} jets per sample; {s['scheme']}.",
        f"- coverage/MMD: {s['nn_batches']} batches of {s['nn_eval']} × {s['nn_eval']} jets, exact EMD on the "
        f"{s['nn_deposits']} hottest deposits; per-hit energy W1 and the hit classifier on {s['hit_jets']} jets per "
        f"sample; image classifier on {s['image_jets']}; thesis EMD on {s['emd_pairs']} pairs.",
        "- ratio = value / max(floor, floor_err): ≈ 1 means indistinguishable from real-vs-real (coverage: "
        "< 1 is worse); pull = (value − floor) / sqrt(value_err² + floor_err²): ≲ 2 means consistent with the floor.",
        "",
    ]


def _conditional(cond: dict | None) -> list[str]:
    if not cond:
        return ["", "Conditional fidelity: not computed (generated jets carry no valid pt conditions)."]
    lines = [
        "",
        "## Conditional fidelity (bins of requested pt)",
        "",
        "| pt bin (GeV) | n gen | W1 E_calo value | floor | ratio | W1 mass value | floor | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in cond["pt_bins"]:
        row = f"| {b['pt_lo']:.0f}–{b['pt_hi']:.0f} | {b['n_gen']} |"
        for k in ("w1_E_calo", "w1_mass_calo"):
            e = b.get(k)
            row += (
                f" {fmt(e['value'], e['value_err'])} | {fmt(e['floor'], e['floor_err'])} | {fmt(e['ratio'])} |"
                if e
                else " n/a | n/a | n/a |"
            )
        lines.append(row)
    rp = cond["response_vs_pt"]
    lines += [
        "",
        "Response vs pt (mean ± std per bin; real | generated):",
        "",
        "| pt (GeV) | E_calo/pt real | E_calo/pt gen | mass real (GeV) | mass gen (GeV) |",
        "|---|---|---|---|---|",
    ]
    r, g = rp["real"], rp["generated"]
    for i in range(len(rp["edges"]) - 1):
        lines.append(
            f"| {fmt(r['x'][i])} | {fmt(r['E_calo/pt']['mean'][i], r['E_calo/pt']['std'][i])} | "
            f"{fmt(g['E_calo/pt']['mean'][i], g['E_calo/pt']['std'][i])} | "
            f"{fmt(r['mass_calo']['mean'][i], r['mass_calo']['std'][i])} | "
            f"{fmt(g['mass_calo']['mean'][i], g['mass_calo']['std'][i])} |"
        )
    return lines


def _memorisation(mem: dict | None) -> list[str]:
    if not mem:
        return []
    return ["", "## Memorisation (nearest training jet)", "", "```", json.dumps(mem, indent=1, default=str), "```"]


DEFINITIONS = (
    "Features are computed from the images (`e2econd/evaluate/features.py`, `substructure.py`, `fingerprints.py`): "
    "totals include negative pixels; width, mass, τN and EMD use positive deposits; HCAL multiplicity counts towers; "
    "image mass treats ECAL+HCAL pixels as massless deposits at (Δη, Δφ) with the jet at η ≈ 0. core<RRR>_c: energy "
    "within R < RRR/100 of the image centre. w1_hit_{deta,dphi,dR}_c: energy-weighted per-hit position distributions "
    "(each jet normalised to 1; dR = the radial profile). EMD: energy flow with ground distance R_pq/R plus |ΔE| "
    "(Komiske–Metodiev), exact with POT; `calo` = ECAL+HCAL at HCAL-tower granularity. FD/KD on log-scaled "
    "high-level features normalised by the real maximum (JetNet's batch rules, not JetNet's EFP features; hence "
    "not called FPD/KPD)."
)


def render_markdown(result: dict) -> str:
    """The Markdown report: summary, headline, every metric (value, floor, ratio), conditional tables, plots."""
    lines = _summary(result)
    lines += ["## Headline", "", *headline_table(result["headline"]), ""]
    lines += ["## All metrics", "", *metric_table(result["metrics"]), "", THESIS_NOTE]
    lines += _conditional(result.get("conditional"))
    lines += _memorisation(result.get("memorisation"))
    if result.get("plots"):
        lines += ["", "## Plots", ""]
        for title, fname in result["plots"].items():
            lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    lines += [
        "",
        "## Definitions",
        "",
        DEFINITIONS,
        "",
        f"Timing (s): {json.dumps(result.get('timing_s', {}))}",
        "",
        f"Provenance: `{json.dumps(result.get('provenance', {}), default=str)}`",
        "",
    ]
    return "\n".join(lines)


def render_compare(res: dict) -> str:
    """Side-by-side table: one row per metric, value (ratio) per generated sample, and the shared floor."""
    labels = res["labels"]
    lines = [
        "# e2econd comparison",
        "",
        f"- real: {', '.join(res['real']['paths'])} ({res['real']['n_jets']} jets); "
        f"n = {res['n_compare']} jets per sample, floors (real A vs real B) shared by all samples.",
        "",
    ]
    for lab, s in zip(labels, res["samples"]):
        lines.append(f"- **{lab}**: {', '.join(s['paths'])} ({s['n_jets']} jets)")
    lines += [
        "",
        "## Headline",
        "",
        "| metric | floor | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for name in res["headline_names"]:
        hs = [res["headline"][lab].get(name) for lab in labels]
        first = next((h for h in hs if h), None)
        if first is None:
            continue
        cells = [f"{fmt(h['value'], h['error'])} ({fmt(h['ratio'])})" if h else "n/a" for h in hs]
        lines.append(f"| {name} | {fmt(first['floor'], first['floor_error'])} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cells: value ± error (ratio to the floor).",
        "",
        "## All metrics",
        "",
        "| metric | floor | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for name in res["metric_names"]:
        es = [res["metrics"][lab].get(name) for lab in labels]
        first = next((e for e in es if e), None)
        cells = [f"{fmt(e['value'], e['value_err'])} ({fmt(e['ratio'])})" if e else "n/a" for e in es]
        lines.append(f"| {name} | {fmt(first['floor'], first['floor_err'])} | " + " | ".join(cells) + " |")
    lines += ["", THESIS_NOTE]
    if res.get("plots"):
        lines += ["", "## Plots (every sample overlaid on real)", ""]
        for title, fname in res["plots"].items():
            lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    lines += ["", f"Provenance: `{json.dumps(res.get('provenance', {}), default=str)}`", ""]
    return "\n".join(lines)
