"""``compare(real, [gen_a, gen_b, ...], labels, out_dir)``: several generated samples against the SAME
real halves A and B (read once, floors computed once and shared), one side-by-side table
(``compare.md``, ``compare.json``) and overlaid plots (one PNG per key distribution, every sample
over real). The model studies choose between models with it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from e2econd.errors import E2EInputError
from e2econd.evaluate import pipeline as P
from e2econd.evaluate import scheme
from e2econd.evaluate.render import render_compare
from e2econd.evaluate.report import options, result_for
from e2econd.utils import atomic_dir, provenance

#: per-jet features drawn in the overlaid plots (file name = compare_<feature>.png)
OVERLAY_FEATURES = (
    "E_tracks",
    "E_ecal",
    "E_hcal",
    "mass_calo",
    "tau21",
    "tau32",
    "core005_tracks",
    "core005_ecal",
    "core005_hcal",
    "N_ecal",
    "width_ecal",
    "hcal_central",
)


def overlay_plots(out: Path, run: P.Run, labels: list[str]) -> dict[str, str]:
    """One PNG per feature: real (B) in black, each generated sample (its G) in its own colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    h = run.halves
    for name in OVERLAY_FEATURES:
        r = run.real.feats[name][h.B]
        gs = [g.feats[name][G] for g, G in zip(run.gens, h.G)]
        both = np.concatenate([r, *gs])
        lo, hi = np.quantile(both, [0.001, 0.999]) if len(both) else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.hist(r, bins, histtype="stepfilled", color="0.8", edgecolor="black", density=True, label="real")
        for lab, g in zip(labels, gs):
            ax.hist(g, bins, histtype="step", lw=1.3, density=True, label=lab)
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        fname = f"compare_{name}.png"
        fig.savefig(out / fname, dpi=90, bbox_inches="tight")
        plt.close(fig)
        plots[name] = fname
    return plots


def _labels(labels, n: int) -> list[str]:
    if labels is None:
        return [f"gen{i}" for i in range(n)]
    labels = [str(x).strip() for x in (labels.split(",") if isinstance(labels, str) else labels)]
    if len(labels) != n or len(set(labels)) != n or not all(labels):
        raise E2EInputError(f"--labels: need {n} distinct non-empty labels, got {','.join(labels)!r}")
    return labels


def compare(
    real,
    generated: list,
    out_dir,
    *,
    labels=None,
    overwrite: bool = False,
    progress: bool | None = True,
    plots: bool = True,
    **kwargs,
) -> dict:
    """Evaluate every generated sample (a path or list of paths each) against the same real halves.

    Writes ``compare.md``, ``compare.json`` (per label: ``headline`` and ``metrics``; shared floors)
    and the overlaid plots into ``out_dir``. Options as for :func:`e2econd.evaluate.report.evaluate`.
    """
    opts = options(**kwargs)
    labels = _labels(labels, len(generated))
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise E2EInputError("output directory exists (use --overwrite)", path=out_dir)
    t0 = time.perf_counter()
    run = P.run(real, list(generated), opts, progress)
    per = [result_for(run, k, opts) for k in range(len(labels))]
    res = {
        "labels": labels,
        "real": {"paths": run.real.paths, "n_jets": run.real.n},
        "samples": [{"paths": g.paths, "n_jets": g.n} for g in run.gens],
        "n_compare": run.halves.n,
        "headline_names": list(scheme.HEADLINE),
        "metric_names": list(run.metrics[0]),
        "headline": {lab: r["headline"] for lab, r in zip(labels, per)},
        "metrics": {lab: r["metrics"] for lab, r in zip(labels, per)},
        "classifier_auc": {lab: r["classifier_auc"] for lab, r in zip(labels, per)},
        "memorisation": {lab: r["memorisation"] for lab, r in zip(labels, per)},
    }
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        if plots:
            res["plots"] = overlay_plots(tmp, run, labels)
        res["timing_s"] = {k: round(v, 3) for k, v in {**run.timing, "total": time.perf_counter() - t0}.items()}
        res["provenance"] = provenance(
            {
                "real": [str(p) for p in P.as_paths(real)],
                "labels": labels,
                "generated": [[str(p) for p in P.as_paths(g)] for g in generated],
                **P.options_record(opts),
            }
        )
        (tmp / "compare.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        (tmp / "compare.md").write_text(render_compare(res))
    return res
