"""Fixtures shared by tests in several subdirectories (none autouse: each module opts in)."""

from __future__ import annotations

import pytest


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
