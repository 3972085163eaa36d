"""``e2econd evaluate``: compare generated with real jets (metrics with floors, plots, report)."""

from __future__ import annotations

import json
import sys

import click

from e2econd.cli._options import progress_option


@click.command("evaluate")
@click.option(
    "--real",
    "real",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="Real jets: E2E file (Parquet/HDF5) or hit directory; repeat for several.",
)
@click.option(
    "--generated",
    "generated",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="Generated jets: E2E file or hit directory; repeat for several.",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(), help="Report directory (plots, report.md, metrics.json)."
)
@click.option("--json", "as_json", is_flag=True, help="Also print all numbers as one JSON object on stdout.")
@click.option("--split", default="test", show_default=True, help="Split read from hit directories.")
@click.option(
    "--emd-pairs",
    default=500,
    show_default=True,
    type=click.IntRange(1),
    help="Random generated-real and real-real jet pairs for the EMD.",
)
@click.option(
    "--R",
    "R",
    default=0.8,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Jet radius R in the EMD ground distance R_pq / R.",
)
@click.option(
    "--emd-pool",
    default=2,
    show_default=True,
    type=click.IntRange(1, 25),
    help="Tracks/ECAL pixels pooled per side for the EMD (1 = single crystals; slower).",
)
@click.option(
    "--hit-jets",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Jets per sample whose hits enter the per-hit energy W1 and the hit-level classifier.",
)
@click.option(
    "--bootstrap",
    "n_boot",
    default=20,
    show_default=True,
    type=click.IntRange(2),
    help="Bootstrap replicas for the error bars.",
)
@click.option(
    "--pt-bins",
    default=5,
    show_default=True,
    type=click.IntRange(0),
    help="Quantile bins of real pt for the conditional metrics (0: off).",
)
@click.option(
    "--classifier-seeds",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="Classifier trainings (AUC mean and std over them).",
)
@click.option("--max-jets", default=None, type=click.IntRange(1), help="Read at most this many jets per sample.")
@click.option(
    "--grid",
    "n_grid",
    default=4,
    show_default=True,
    type=click.IntRange(0),
    help="Random jets per sample in the jet grid plot.",
)
@click.option("--chunk-size", default=256, show_default=True, type=click.IntRange(1), help="Jets per read chunk.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1), help="Threads for the EMD.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (splits, pairs, bootstrap).")
@click.option("--overwrite", is_flag=True, help="Replace an existing report directory.")
@click.option("--no-plots", is_flag=True, help="Skip the plots (metrics and report only).")
@progress_option
def evaluate(
    real,
    generated,
    out_dir,
    as_json,
    split,
    emd_pairs,
    R,
    emd_pool,
    hit_jets,
    n_boot,
    pt_bins,
    classifier_seeds,
    max_jets,
    n_grid,
    chunk_size,
    threads,
    seed,
    overwrite,
    no_plots,
    progress,
):
    """Compare generated with real jets: every metric with its real-vs-real floor and ratio.

    REAL and GENERATED are E2E files or preprocessed hit directories (any mix). Writes plots,
    report.md and metrics.json into --out; with --json also prints the numbers on stdout.
    """
    from e2econd.evaluate.report import evaluate as run

    res = run(
        list(real),
        list(generated),
        out_dir,
        split=split,
        chunk_size=chunk_size,
        emd_pairs=emd_pairs,
        R=R,
        emd_pool=emd_pool,
        hit_jets=hit_jets,
        n_boot=n_boot,
        seed=seed,
        n_grid=n_grid,
        pt_bins=pt_bins,
        classifier_seeds=classifier_seeds,
        max_jets=max_jets,
        threads=threads,
        overwrite=overwrite,
        progress=sys.stderr.isatty() if progress is None else progress,
        plots=not no_plots,
    )
    if as_json:
        click.echo(json.dumps(res, default=str))
        return
    c = res["classifier_auc"]
    click.echo(f"{'metric':<26} {'value':>12} {'floor':>12} {'ratio':>8}")
    for name, e in res["metrics"].items():

        def f(x):
            return "n/a" if x is None else f"{x:.4g}"

        click.echo(f"{name:<26} {f(e['value']):>12} {f(e['floor']):>12} {f(e['ratio']):>8}")
    click.echo(f"classifier AUC {c['value']:.4f} ± {c['std']:.4f} (floor {c['floor']:.4f}); 0.5 is perfect")
    click.echo(f"report: {out_dir}/report.md")
