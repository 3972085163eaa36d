"""``e2econd demo``: the whole pipeline on the embedded top-jet data, in one command."""

from __future__ import annotations

import click

from e2econd.cli._options import progress_option
from e2econd.demo import DemoOptions

_D = DemoOptions()  # the click defaults are the dataclass's


@click.command()
@click.option(
    "--workdir",
    default=_D.workdir,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where every stage writes; a second run reuses finished stages.",
)
@click.option("--jets", default=_D.jets, show_default=True, help="Top jets to generate with Pythia 8.")
@click.option(
    "--preset",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default=_D.preset,
    show_default=True,
    help="Training preset (auto: gpu when CUDA is available).",
)
@click.option(
    "--channels", default=_D.channels, show_default=True, help="Channels to model (all, ecal, tracks,ecal...)."
)
@click.option(
    "--model",
    type=click.Choice(["hits", "towers"]),
    default=_D.model,
    show_default=True,
    help="Model family (towers: one token per occupied 5x5 tower).",
)
@click.option("--device", default=_D.device, help="cpu, cuda or cuda:N.")
@click.option("--seed", default=_D.seed, show_default=True)
@click.option("--workers", default=_D.workers, show_default=True, help="Processes for make-data and preprocess.")
@click.option("--sampler", default=_D.sampler, show_default=True)
@click.option("--steps", type=int, default=_D.steps, help="Sampler steps (default per sampler).")
@click.option("--max-steps", type=int, default=_D.max_steps, help="Override the preset's training steps.")
@click.option("--sample-n", default=_D.sample_n, show_default=True, help="Jets generated at --pt 400.")
@progress_option
def demo(workdir, jets, preset, channels, model, device, seed, workers, sampler, steps, max_steps, sample_n, progress):
    """make-data -> preprocess -> train -> sample --pt 400 / --conditions-from test -> evaluate."""
    from e2econd.demo import ratio_table, run_demo

    summary = run_demo(
        DemoOptions(
            workdir=workdir,
            jets=jets,
            preset=preset,
            channels=channels,
            model=model,
            device=device,
            seed=seed,
            workers=workers,
            sampler=sampler,
            steps=steps,
            max_steps=max_steps,
            sample_n=sample_n,
            progress=progress,
        )
    )
    click.echo(f"\nreport: {summary['report']}")
    click.echo(f"{'metric':44s} {'value':>12s} {'floor':>12s} {'ratio':>8s}")

    def fmt(v, spec="12.4g"):
        return format(v, spec) if isinstance(v, (int, float)) else f"{'-':>12s}"

    for name, value, floor, ratio in ratio_table(summary["metrics"]):
        click.echo(f"{name:44s} {fmt(value)} {fmt(floor)} {fmt(ratio, '8.2f')}")
    for key, val in summary["metrics"].items():
        if "auc" in key and isinstance(val, dict):
            click.echo(f"{key:44s} {val.get('value', float('nan')):12.3f} {val.get('floor', float('nan')):12.3f}")
