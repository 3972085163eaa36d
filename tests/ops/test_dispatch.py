"""The one kernel-selection / registration pattern of the op modules (e2econd.ops._dispatch)."""

from __future__ import annotations

import torch

from e2econd.ops import LOADED, has_kernel, reference_mode
from e2econd.ops import _dispatch as D


def test_kernel_ok_follows_dtype_table_registration_and_reference_mode():
    x = torch.zeros(2, 3)
    table = {"cpu": (torch.float32,)}
    expected = has_kernel("diffusion_step", "cpu")  # the dispatcher's own answer (False without _C)
    assert D.kernel_ok("diffusion_step", x, table) is expected
    assert D.kernel_ok("diffusion_step", x.double(), table) is False  # dtype not in the table
    assert D.kernel_ok("diffusion_step", x, {"cuda": (torch.float32,)}) is False  # no entry for cpu
    assert D.kernel_ok("no_such_op", x, table) is False
    with reference_mode():
        assert D.forced_reference() is True
        assert D.kernel_ok("diffusion_step", x, table) is False
    assert D.forced_reference() is False


def test_registration_is_a_no_op_for_unregistered_ops():
    def fake(x):
        return x

    assert D.registered("no_such_op") is False
    assert D.register_fake("no_such_op")(fake) is fake
    D.register_autograd("no_such_op", fake, fake)  # nothing to register: no error
    assert D.registered("diffusion_step") is LOADED  # every loaded extension defines both ops
