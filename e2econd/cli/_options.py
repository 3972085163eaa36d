"""Click options shared by several commands."""

from __future__ import annotations

import click


def progress_option(f):
    """``--progress/--no-progress``: a progress bar on stderr. Default (None): only when stderr is a
    terminal, so batch-job logs stay free of bar redraws."""
    return click.option(
        "--progress/--no-progress",
        "progress",
        default=None,
        help="Show a progress bar on stderr (default: only when stderr is a terminal).",
    )(f)
