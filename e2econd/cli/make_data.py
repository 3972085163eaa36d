"""``e2econd make-data``: generate E2E jets with Pythia 8 + anti-kt + a CMS-like detector."""

from __future__ import annotations

import json
from pathlib import Path

import click

from e2econd.cli._options import progress_option


@click.command(name="make-data")
@click.option(
    "--process",
    type=click.Choice(["top", "qg", "quark", "gluon"]),
    default="top",
    show_default=True,
    help="top: boosted hadronic tops (R=0.8); qg: half quark / half gluon jets (R=0.4).",
)
@click.option("--n", "n", type=int, required=True, help="Number of jets to write.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (output is a function of it).")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    required=True,
    multiple=True,
    help="Output file; .parquet or .h5 (repeat to write several formats of the same jets).",
)
@click.option("--also-h5", is_flag=True, help="Also write the same jets to OUT with suffix .h5.")
@click.option(
    "--format",
    "format",
    type=click.Choice(["parquet", "hdf5"]),
    default=None,
    help="Force the format of a single --out instead of using its suffix.",
)
@click.option("--pt-min", type=float, default=None, help="Jet pT lower edge [GeV] (top: 400, qg: 70).")
@click.option("--pt-max", type=float, default=None, help="Jet pT upper edge [GeV] (top: 1000, qg: 200).")
@click.option("--eta-max", type=float, default=1.5, show_default=True, help="Jet |eta| upper edge.")
@click.option(
    "--workers",
    "-j",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes (the output does not depend on it).",
)
@click.option(
    "--pileup",
    type=float,
    default=0.0,
    show_default=True,
    help="Mean number of overlaid minimum-bias events (Poisson).",
)
@click.option(
    "--unit-size",
    type=int,
    default=100,
    show_default=True,
    help="Jets per work unit (each unit has its own derived seed; part of the output's identity).",
)
@click.option(
    "--detector",
    "detector_json",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON file overriding DetectorConfig parameters.",
)
@click.option("--quiet", is_flag=True, help="No progress bar (same as --no-progress).")
@progress_option
def make_data(
    process,
    n,
    seed,
    out,
    also_h5,
    format,
    pt_min,
    pt_max,
    eta_max,
    workers,
    pileup,
    unit_size,
    detector_json,
    quiet,
    progress,
):
    """Generate E2E jets: Pythia 8 (13 TeV) + anti-kt (fastjet) + parameterised CMS-like detector.

    Example: e2econd make-data --process top --n 5000 --seed 1 --out top.parquet --also-h5
    """
    from e2econd.errors import E2EInputError
    from e2econd.generate.detector import DetectorConfig
    from e2econd.generate.make_data import make_data as _make_data

    outs = list(out)
    if also_h5:
        outs.append(str(Path(outs[0]).with_suffix(".h5")))
    if len(set(outs)) != len(outs):
        raise E2EInputError(f"the same output file is given twice: {outs}", key="out")
    detector = None
    if detector_json:
        try:
            params = json.loads(Path(detector_json).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise E2EInputError(f"not a JSON object of detector parameters: {exc}", path=detector_json) from None
        detector = DetectorConfig.from_dict(params, source=detector_json)
    summary = _make_data(
        process,
        n,
        seed,
        outs if len(outs) > 1 else outs[0],
        pt_min=pt_min,
        pt_max=pt_max,
        workers=workers,
        format=format,
        eta_max=eta_max,
        pileup=pileup,
        unit_size=unit_size,
        detector=detector,
        progress=False if quiet else progress,
    )
    click.echo(
        f"wrote {summary['n']} {process} jets ({summary['events']} events, "
        f"{summary['cpu_ms_per_jet']:.1f} ms CPU/jet, {summary['wall_s']:.1f} s wall) to "
        + ", ".join(summary["outputs"]),
        err=True,
    )
