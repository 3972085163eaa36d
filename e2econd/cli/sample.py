"""``e2econd sample``: generate jets for requested conditions and write them as an E2E file."""

from __future__ import annotations

import click

from e2econd.cli._options import progress_option
from e2econd.config import SampleOptions
from e2econd.diffusion.samplers import DEFAULT_STEPS
from e2econd.sample_options import ALL_SAMPLERS

_S = SampleOptions()  # the click defaults are the dataclass's


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=True, dir_okay=True))
@click.option("--pt", type=float, default=None, help="Jet pt in GeV for every generated jet.")
@click.option(
    "--mass",
    type=float,
    default=None,
    help="Jet mass m0 in GeV. Left out: drawn from the training jets nearest to the given pt/label.",
)
@click.option(
    "--label",
    type=int,
    default=None,
    help="Jet label y (e.g. 1 = quark / top). Left out: drawn from the training jets like --mass.",
)
@click.option(
    "--conditions-from",
    "conditions_from",
    type=click.Path(exists=False),
    default=None,
    help="Take (pt, m0, y) jet by jet from a hit directory (its test split) or an E2E file.",
)
@click.option(
    "--num-jets",
    "--n",
    "n",
    type=int,
    default=None,
    help="Number of jets (default 10000, or all jets of --conditions-from). --n is a single-process alias: "
    "under torchrun use --num-jets (torchrun reads --n as an abbreviation of its own options).",
)
@click.option(
    "--channels",
    default=None,
    help="Channels to write (subset of the model's, e.g. 'ecal' or 'tracks,ecal'); others are left empty.",
)
@click.option(
    "--sampler",
    type=click.Choice(ALL_SAMPLERS),
    default=None,
    help="Default: the run objective's (vpred: dpmpp2m; edm, flow: heun). vpred: ddpm (512-step ancestral, "
    "thesis), ddim (DDIM(eta)), dpmpp2m (DPM-Solver++(2M)); every objective: euler, heun, midpoint "
    "(probability-flow ODE; edm/vpred on the rho-schedule, flow on t).",
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help=f"Solver steps; heun and midpoint evaluate the network twice a step (defaults: "
    f"{', '.join(f'{k} {v}' for k, v in DEFAULT_STEPS.items())}; euler 64, heun 18 (flow 16), midpoint 18).",
)
@click.option("--eta", type=float, default=_S.eta, show_default=True, help="DDIM stochasticity (0 deterministic).")
@click.option(
    "--guidance",
    type=float,
    default=_S.guidance,
    show_default=True,
    help="Classifier-free guidance w: v = v_uncond + w (v_cond - v_uncond); 1 = plain conditional.",
)
@click.option(
    "--collisions",
    type=click.Choice(["move", "sum"]),
    default=_S.collisions,
    show_default=True,
    help="Two generated hits of a jet on one crystal/tower: move the weaker to the nearest free cell "
    "(every hit of a real jet is its own cell), or sum them.",
)
@click.option("--seed", type=int, default=_S.seed, show_default=True)
@click.option("--batch-size", type=int, default=_S.batch_size, show_default=True, help="Jets per model call.")
@click.option("--chunk-size", type=int, default=_S.chunk_size, show_default=True, help="Jets per written chunk.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option(
    "--out",
    default="generated.parquet",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Output E2E file: .parquet (X_jets [3][125][125]) or .h5 (X_jets (N,125,125,3)).",
)
@click.option(
    "--rescale/--no-rescale",
    default=_S.rescale,
    show_default=True,
    help="Tower models: scale each channel of a jet to the energy sum drawn by the summary model.",
)
@click.option(
    "--presence",
    type=click.Choice(["count", "sign"]),
    default=_S.presence,
    show_default=True,
    help="Tower models: per jet and channel keep the summary's number of cells with the highest presence "
    "scores (count), or every cell with a positive presence bit (sign).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary (with timing split) as JSON.")
@progress_option
def sample(
    run_dir,
    pt,
    mass,
    label,
    conditions_from,
    n,
    channels,
    sampler,
    steps,
    eta,
    guidance,
    collisions,
    seed,
    batch_size,
    chunk_size,
    device,
    out,
    rescale,
    presence,
    as_json,
    progress,
):
    """Generate jets with the trained run in RUN_DIR and write them as an E2E file.

    RUN_DIR defaults to $E2ECOND_RUN, else the newest run of `e2econd demo` (demo/run_*).

    \b
    Examples:
      e2econd sample runs/top --pt 400 --num-jets 10000 --out gen.parquet
      e2econd sample runs/top --conditions-from data/top --sampler ddpm --out gen_ddpm.h5
    Multi-GPU: torchrun --nproc_per_node K -m e2econd sample ... --num-jets N (one shard per rank + manifest;
    `e2econd evaluate --generated OUT.manifest.json` reads them all).
    """
    from e2econd.config import parse_channels
    from e2econd.sample import default_run_dir, sample_to_file, summary_line, to_json

    run_dir = run_dir or default_run_dir()
    opts = SampleOptions(
        n=n,
        pt=pt,
        mass=mass,
        label=label,
        conditions_from=conditions_from,
        channels=parse_channels(channels, source="--channels") if channels else None,
        sampler=sampler,
        steps=steps,
        eta=eta,
        guidance=guidance,
        seed=seed,
        collisions=collisions,
        rescale=rescale,
        presence=presence,
        batch_size=batch_size,
        chunk_size=chunk_size,
        device=device,
    )
    summary = sample_to_file(run_dir, out, opts, progress=progress)
    click.echo(to_json(summary) if as_json else summary_line(summary))
