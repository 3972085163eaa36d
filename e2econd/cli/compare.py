"""``e2econd compare``: several generated samples against the same real halves, side by side."""

from __future__ import annotations

import json

import click

from e2econd.cli.evaluate import evaluation_options, library_kwargs


@click.command("compare")
@click.option(
    "--real",
    "real",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="Real jets: E2E file or hit directory; repeat for several.",
)
@click.argument("generated", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--labels", default=None, help="Comma-separated names of the generated samples (default gen0,gen1,...).")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(), help="Output directory (compare.md, compare.json, PNGs)."
)
@evaluation_options
def compare(real, generated, labels, out_dir, as_json, **kw):
    """Evaluate each GENERATED sample (E2E file, hit directory or sample manifest) against the same
    real halves A/B: floors computed once, one side-by-side table (compare.md, compare.json) and
    overlaid plots."""
    from e2econd.evaluate.compare import compare as run

    res = run(list(real), [[g] for g in generated], out_dir, labels=labels, **library_kwargs(kw))
    if as_json:
        click.echo(json.dumps(res, default=str))
        return
    click.echo(f"{'headline metric':<24} " + " ".join(f"{lab:>16}" for lab in res["labels"]))
    for name in res["headline_names"]:
        cells = []
        for lab in res["labels"]:
            h = res["headline"][lab].get(name)
            cells.append("n/a" if not h or h["ratio"] is None else f"{h['value']:.4g} ({h['ratio']:.3g})")
        click.echo(f"{name:<24} " + " ".join(f"{c:>16}" for c in cells))
    click.echo(f"table: {out_dir}/compare.md")
