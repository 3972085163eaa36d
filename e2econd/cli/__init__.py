"""The ``e2econd`` command line: a thin click group.

Each command lives in its own module under ``e2econd.cli`` and only parses options before
calling library functions (usable from Python too). Commands are imported lazily so that
``e2econd info`` stays fast and works without optional dependencies.
"""

from __future__ import annotations

import importlib
import sys

import click

from e2econd._version import __version__
from e2econd.errors import E2EInputError

# command name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": ("e2econd.cli.info", "info", "Versions, kernels built and loaded, devices seen."),
    "make-data": ("e2econd.cli.make_data", "make_data", "Generate E2E jets: Pythia 8 + anti-kt + CMS-like detector."),
    "preprocess": (
        "e2econd.cli.preprocess",
        "preprocess",
        "E2E files (Parquet/HDF5) -> hit-set directory with splits and transforms.",
    ),
    "export": ("e2econd.cli.preprocess", "export", "Hit-set directory -> E2E images (Parquet or HDF5)."),
    "train": ("e2econd.cli.train", "train", "Train the conditional diffusion model (CPU, GPU, or torchrun DDP)."),
    "distill": (
        "e2econd.cli.distill",
        "distill",
        "Distill a trained run into a few-step student (consistency distillation).",
    ),
    "sample": ("e2econd.cli.sample", "sample", "Generate jets for requested conditions and write E2E files."),
    "evaluate": (
        "e2econd.cli.evaluate",
        "evaluate",
        "Compare generated with real jets: metrics with floors, plots, report.",
    ),
    "compare": (
        "e2econd.cli.compare",
        "compare",
        "Several generated samples against the same real halves: side-by-side table and plots.",
    ),
    "demo": ("e2econd.cli.demo", "demo", "The whole pipeline on the embedded top-jet data, in one command."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, short = COMMANDS[name]
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except ImportError as exc:  # a command whose optional dependency is missing
            reason = f"'{name}' is unavailable: {exc}"

            @click.command(name=name, help=short, short_help=short)
            def cmd():
                raise click.ClickException(reason)

        cmd.short_help = short
        return cmd

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except E2EInputError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        finally:
            _close_process_group()


def _close_process_group() -> None:
    """Destroy the torch.distributed process group a command started (torchrun + DDP training), so
    the process exits cleanly: left to interpreter shutdown, gloo's threads abort a rank with
    "terminate called without an active exception" (exit -6) and torchrun reports the run failed."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="e2econd")
def main():
    """e2econd: conditional diffusion for CMS End-to-End jet images (Tracks, ECAL, HCAL)."""


if __name__ == "__main__":
    main()
