"""``e2econd distill RUN_DIR --steps K --out STUDENT_DIR``: a few-step student of a trained run."""

from __future__ import annotations

import json

import click

from e2econd.cli._options import progress_option
from e2econd.diffusion.formulations.consistency import STUDENT_METHODS


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=True, dir_okay=True))
@click.option("--steps", type=int, default=4, show_default=True, help="K: the student's network evaluations.")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Student run directory to write."
)
@click.option(
    "--method",
    type=click.Choice(list(STUDENT_METHODS)),
    default="consistency",
    show_default=True,
    help="consistency: consistency distillation (Song et al. 2023; CaloClouds II, PC-Droid).",
)
@click.option("--max-steps", type=int, default=None, help="Student training steps (default 2000; --resume: extend).")
@click.option("--time-limit", "time_limit", type=float, default=0.0, show_default=True, help="Minutes (0 = no limit).")
@click.option("--levels", type=int, default=40, show_default=True, help="N: intervals of the consistency grid.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the teacher's / 5).")
@click.option("--batch-size", type=int, default=None, help="Global batch in jets (default: the teacher's).")
@click.option("--seed", type=int, default=None, help="Seed (default: the teacher's).")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="The teacher's hit directory (default: the one its checkpoint records).",
)
@click.option("--threads", type=int, default=None, help="CPU threads (default: the teacher's train.threads).")
@click.option("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue STUDENT_DIR/checkpoints/last.pt exactly (its own options; --max-steps extends).",
)
@progress_option
def distill(
    run_dir,
    steps,
    out_dir,
    method,
    max_steps,
    time_limit,
    levels,
    lr,
    batch_size,
    seed,
    data_dir,
    threads,
    device,
    resume,
    progress,
):
    """Train a student of RUN_DIR that samples with K network evaluations; STUDENT_DIR is an ordinary run
    directory, so `e2econd sample STUDENT_DIR` uses it (K evaluations by default).

    Multi-GPU: `torchrun --nproc_per_node K -m e2econd distill ...` (DDP; only rank 0 writes).
    """
    from e2econd.distill import DistillOptions
    from e2econd.distill import distill as run
    from e2econd.errors import E2EInputError

    if not resume and run_dir is None:
        raise E2EInputError("give the teacher's RUN_DIR (or --resume --out STUDENT_DIR)", key="run_dir")
    opts = DistillOptions(steps, method, levels, max_steps, time_limit, lr, batch_size, seed, threads)
    summary = run(run_dir, out_dir, opts, data_dir=data_dir, resume=resume, device=device, progress=progress)
    if summary.get("rank", 0) == 0:
        click.echo(json.dumps(summary, indent=2, default=str))
