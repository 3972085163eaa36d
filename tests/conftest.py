"""Fixtures shared by tests in several subdirectories (none autouse: each module opts in)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: where the small real-format E2E files (made by an independent generator) are looked for, in order:
#: $E2ECOND_SHARED_DATA, <repo>/shared/data, ../shared/data beside the checkout, and the development
#: machine image's copy (/work/shared/data), so a fresh clone anywhere on that machine finds them
SHARED_DATA_CANDIDATES = [
    *([Path(os.environ["E2ECOND_SHARED_DATA"])] if os.environ.get("E2ECOND_SHARED_DATA") else []),
    REPO / "shared" / "data",
    REPO.parent / "shared" / "data",
    Path("/work/shared/data"),
]


def find_shared_data() -> Path:
    """The shared small real-format data directory; fails (never skips) when it is missing."""
    for cand in SHARED_DATA_CANDIDATES:
        if cand.is_dir() and any(cand.glob("*.h5")):
            return cand
    raise AssertionError(f"shared data directory missing (looked in {', '.join(map(str, SHARED_DATA_CANDIDATES))})")


@pytest.fixture(scope="session")
def shared_data():
    """Returns :func:`find_shared_data`; call it in the test so a missing directory fails the test itself."""
    return find_shared_data


@pytest.fixture
def one_thread():
    """Tiny models: one thread is fastest and avoids oversubscribing the shared CPU.

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch  # lazy: sessions that never use this fixture need not import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
