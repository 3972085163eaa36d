"""``e2econd train DATA_DIR --channels ecal --out RUN_DIR``: train the conditional diffusion model.

Hyperparameters come from a preset (``--preset cpu|gpu``), then ``--config FILE`` (JSON, any subset
of keys; may name its own preset), then the explicit options below. The resolved config is
validated before any work starts and written to RUN_DIR/config.json. Multi-GPU / multi-node:
``torchrun --nproc_per_node K -m e2econd train ...`` (DDP; only rank 0 writes).
"""

from __future__ import annotations

import json

import click

from e2econd.cli._options import progress_option


@click.command()
@click.argument("data_dir", required=False, type=click.Path(file_okay=False))
@click.option(
    "--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Run directory (default: runs/<channels>)."
)
@click.option("--channels", default=None, help="ecal | tracks | hcal | all | comma list (default: config's, ecal).")
@click.option(
    "--preset",
    type=click.Choice(["cpu", "gpu"]),
    default=None,
    help="Starting hyperparameters (default: gpu if CUDA is available, else cpu).",
)
@click.option(
    "--model",
    "family",
    type=click.Choice(["hits", "towers"]),
    default=None,
    help="Model family: hits (a token per hit) or towers (a token per occupied 5x5 tower; presets use all "
    "channels). Default: the config's (hits).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON file with any subset of {model, multiplicity, train, data, objective} options.",
)
@click.option(
    "--objective",
    type=click.Choice(["vpred", "edm", "flow"]),
    default=None,
    help="Diffusion formulation: vpred (cosine VP, v-prediction), edm (Karras et al. 2022) or flow (rectified "
    "flow). Recorded in the run; `sample` offers its samplers. Default: the config's (vpred).",
)
@click.option(
    "--loss-balance",
    "balance",
    type=click.Choice(["none", "channel"]),
    default=None,
    help="none: the family's own weights; channel: each channel of a jet carries an equal share of its loss. "
    "Default: the preset's (hits: none; towers: channel).",
)
@click.option(
    "--noise-density",
    "density",
    type=click.Choice(["uniform_t", "lognormal_sigma", "logit_normal_t"]),
    default=None,
    help="Per-jet noise-level density (default: the objective's: vpred uniform_t, edm lognormal_sigma, "
    "flow logit_normal_t).",
)
@click.option("--max-steps", type=int, default=None, help="Training steps (on --resume: extend the run).")
@click.option("--batch-size", type=int, default=None, help="Global batch size in jets.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (AdamW).")
@click.option(
    "--time-limit",
    "time_limit",
    type=float,
    default=None,
    help="Minutes of training after which the run ends, its cosine planned to end then (cpu preset: 9; 0 = none).",
)
@click.option("--seed", type=int, default=None, help="Seed of every random draw (data order, noise, init).")
@click.option("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available).")
@click.option("--resume", is_flag=True, help="Continue RUN_DIR/checkpoints/last.pt exactly.")
@progress_option
def train(
    data_dir,
    out_dir,
    channels,
    preset,
    family,
    config_file,
    objective,
    balance,
    density,
    max_steps,
    batch_size,
    lr,
    time_limit,
    seed,
    device,
    resume,
    progress,
):
    """Train on a hit directory (from `e2econd preprocess`) into RUN_DIR.

    DATA_DIR defaults to demo/data (the hit directory `e2econd demo` makes), so that after
    `make demo` a plain `e2econd train --channels ecal` trains an ECAL model into runs/ecal.
    """
    from e2econd import config as C
    from e2econd.errors import E2EInputError
    from e2econd.train import train as run

    data_dir = data_dir or "demo/data"
    if out_dir is None:
        if resume:
            raise E2EInputError("--resume needs --out RUN_DIR (the run to continue)", key="out")
        default_channels = "all" if family == "towers" else "ecal"
        names = C.parse_channels(channels or default_channels, source="--channels")
        out_dir = "runs/" + ("towers-" if family == "towers" else "") + "-".join(names)
    if resume:
        given = (channels, preset, family, config_file, objective, balance, density, batch_size, lr, seed, time_limit)
        if any(v is not None for v in given):
            raise E2EInputError(
                "--resume continues with the run's own config; only --max-steps and --device may be given",
                key="resume",
            )
        summary = run(
            data_dir,
            out_dir,
            None,
            resume=True,
            device=device,
            progress=progress,
            max_steps=max_steps,
        )
    else:
        cfg = C.resolve_config(
            preset,
            config_file,
            {
                "train.max_steps": max_steps,
                "train.batch_size": batch_size,
                "train.lr": lr,
                "train.time_limit_min": time_limit,
                "train.seed": seed,
                "objective.name": objective,
                "objective.balance": balance,
                "objective.density": density,
            },
            channels=channels,
            device=device,
            family=family,
        )
        summary = run(data_dir, out_dir, cfg, resume=False, device=device, progress=progress)
    if summary.get("rank", 0) == 0:
        click.echo(json.dumps(summary, indent=2, default=str))
