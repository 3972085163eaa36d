"""``e2econd evaluate``: compare generated with real jets (metrics with floors, plots, report)."""

from __future__ import annotations

import json
import sys

import click

from e2econd.cli._options import progress_option

_OPTIONS = [
    click.option("--split", default="test", show_default=True, help="Split read from hit directories."),
    click.option(
        "--max-jets",
        default=20_000,
        show_default=True,
        type=click.IntRange(1),
        help="Read at most this many jets per sample (every jet up to it enters the metrics).",
    ),
    click.option(
        "--emd-pairs",
        default=500,
        show_default=True,
        type=click.IntRange(1),
        help="Random jet pairs of the thesis-comparison mean-pair EMD.",
    ),
    click.option(
        "--R",
        "R",
        default=0.8,
        show_default=True,
        type=click.FloatRange(min=0, min_open=True),
        help="Jet radius R in the EMD ground distance R_pq / R.",
    ),
    click.option(
        "--emd-pool",
        default=2,
        show_default=True,
        type=click.IntRange(1, 25),
        help="Tracks/ECAL pixels pooled per side for the thesis EMD (1 = single crystals; slower).",
    ),
    click.option(
        "--nn-eval",
        default=100,
        show_default=True,
        type=click.IntRange(2),
        help="Real and generated jets per coverage/MMD batch (JetNet: 100).",
    ),
    click.option(
        "--nn-batches", default=10, show_default=True, type=click.IntRange(2), help="Coverage/MMD batches (JetNet: 10)."
    ),
    click.option(
        "--hit-jets",
        default=2000,
        show_default=True,
        type=click.IntRange(1),
        help="Jets per sample for the per-hit energy W1 and the hit-level classifier.",
    ),
    click.option(
        "--image-jets",
        default=4000,
        show_default=True,
        type=click.IntRange(1),
        help="Jets per sample for the image classifier.",
    ),
    click.option(
        "--classifiers",
        default="hl,hits,image",
        show_default=True,
        help="Classifier tests to run: comma list of hl, hits, image ('' for none).",
    ),
    click.option(
        "--train",
        "train",
        default=None,
        type=click.Path(exists=True),
        help="Training hit directory (or E2E file): nearest-training-jet memorisation test.",
    ),
    click.option(
        "--bootstrap",
        "n_boot",
        default=20,
        show_default=True,
        type=click.IntRange(2),
        help="Bootstrap replicas for the error bars.",
    ),
    click.option(
        "--pt-bins",
        default=5,
        show_default=True,
        type=click.IntRange(0),
        help="Quantile bins of real pt for the conditional metrics (0: off).",
    ),
    click.option(
        "--classifier-seeds",
        default=3,
        show_default=True,
        type=click.IntRange(1),
        help="Classifier trainings with different data splits (AUC mean and std over them).",
    ),
    click.option(
        "--grid",
        "n_grid",
        default=4,
        show_default=True,
        type=click.IntRange(0),
        help="Random jets per sample in the jet grid plot.",
    ),
    click.option("--chunk-size", default=256, show_default=True, type=click.IntRange(1), help="Jets per read chunk."),
    click.option(
        "--threads",
        default=2,
        show_default=True,
        type=click.IntRange(1),
        help="Threads for the EMD and the image classifier.",
    ),
    click.option("--seed", default=0, show_default=True, type=int, help="Random seed (halves, batches, bootstrap)."),
    click.option("--overwrite", is_flag=True, help="Replace an existing output directory."),
    click.option("--no-plots", is_flag=True, help="Skip the plots."),
    click.option("--json", "as_json", is_flag=True, help="Also print all numbers as one JSON object on stdout."),
    progress_option,
]


def evaluation_options(fn):
    """The options shared by ``evaluate`` and ``compare``."""
    for opt in reversed(_OPTIONS):
        fn = opt(fn)
    return fn


def parse_classifiers(spec: str) -> tuple:
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    bad = [s for s in names if s not in ("hl", "hits", "image")]
    if bad:
        raise click.BadParameter(
            f"unknown classifier {bad[0]!r}; choose from hl, hits, image", param_hint="--classifiers"
        )
    return names


def library_kwargs(kw: dict) -> dict:
    """Click values -> keyword arguments of ``evaluate``/``compare`` (pops the CLI-only ones)."""
    kw["classifiers"] = parse_classifiers(kw["classifiers"])
    kw["progress"] = sys.stderr.isatty() if kw["progress"] is None else kw["progress"]
    kw["plots"] = not kw.pop("no_plots")
    return kw


def print_headline(head: dict) -> None:
    def f(x):
        return "n/a" if x is None else f"{x:.4g}"

    click.echo(f"{'headline metric':<24} {'value':>12} {'floor':>12} {'ratio':>8}")
    for name, e in head.items():
        click.echo(f"{name:<24} {f(e['value']):>12} {f(e['floor']):>12} {f(e['ratio']):>8}")


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
    help="Generated jets: E2E file, hit directory or sample manifest; repeat for several.",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(), help="Report directory (plots, report.md, metrics.json)."
)
@evaluation_options
def evaluate(real, generated, out_dir, as_json, **kw):
    """Compare generated with real jets: every metric with its real-vs-real floor and ratio.

    REAL and GENERATED are E2E files or preprocessed hit directories (any mix). Writes plots,
    report.md and metrics.json (with its "headline" object) into --out; with --json also prints
    the numbers on stdout.
    """
    from e2econd.evaluate.report import evaluate as run

    res = run(list(real), list(generated), out_dir, **library_kwargs(kw))
    if as_json:
        click.echo(json.dumps(res, default=str))
        return
    print_headline(res["headline"])
    mem = res.get("memorisation")
    if mem:
        click.echo(
            f"memorisation: median distance ratio gen/real {mem['ratio']:.3f}, {mem['n_copies']} of {mem['n_gen']} "
            f"generated jets closer to a training jet than 1 % of real jets{' — FLAGGED' if mem['flag'] else ''}"
        )
    click.echo(f"report: {out_dir}/report.md")
