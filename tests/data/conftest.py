"""Helpers shared by the data tests (test modules cannot import each other under --import-mode=importlib)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_shared_data() -> Path:
    """The shared small real-format data directory (repo/shared/data or ../shared/data); fail if missing."""
    for cand in (REPO / "shared" / "data", REPO.parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    raise AssertionError(f"shared data directory missing (looked in {REPO}/shared/data and ../shared/data)")


@pytest.fixture(scope="session")
def shared_data():
    """Returns :func:`find_shared_data`; call it in the test so a missing directory fails the test itself."""
    return find_shared_data
