"""The one kernel-selection and registration pattern of the op modules (attention, diffusion_step).

Each op module declares, per device type, the storage dtypes its compiled kernels take and asks
:func:`kernel_ok` whether a call goes to the kernel; everything else runs the op's pure-PyTorch
reference. Fake kernels (``torch.compile`` tracing) and autograd formulas are registered through
:func:`register_fake` / :func:`register_autograd`, which do nothing when the extension did not
register the op (reference-only installs).

Under ``torch.compile`` the dispatcher query cannot be traced: :func:`kernel_ok`'s device part is
evaluated eagerly at trace time (``assume_constant_result``), so the compiled graph calls the same
path an eager call would take at that moment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from e2econd.ops import _extension
from e2econd.ops._extension import LOADED, use_extension


def registered(op: str) -> bool:
    """Whether the loaded extension defines ``torch.ops.e2econd.<op>``."""
    return LOADED and hasattr(torch.ops.e2econd, op)


@torch.compiler.assume_constant_result
def forced_reference() -> bool:
    """Inside ``e2econd.ops.reference_mode()``: every op (and path) is the reference."""
    return bool(_extension._forced_reference())


@torch.compiler.assume_constant_result
def _device_has(op: str, device_type: str) -> bool:
    # constant for a given op and device type (outside reference_mode blocks)
    return use_extension(op, torch.device(device_type))


def kernel_ok(op: str, x: torch.Tensor, dtypes: Mapping[str, tuple[torch.dtype, ...]]) -> bool:
    """Whether ``op`` on ``x`` goes to the compiled kernel: x's dtype is one the kernel of x's device
    type takes (``dtypes[device_type]``), the extension registered it for that device type, and no
    ``reference_mode()`` block is active."""
    if x.dtype not in dtypes.get(x.device.type, ()):
        return False
    return _device_has(op, x.device.type)


def register_fake(op: str) -> Callable[[Callable], Callable]:
    """Decorator: ``torch.library.register_fake("e2econd::<op>")`` when the op is registered, else a no-op."""
    if registered(op):
        return torch.library.register_fake(f"e2econd::{op}")
    return lambda fn: fn


def register_autograd(op: str, backward: Callable, setup_context: Callable) -> None:
    """``torch.library.register_autograd("e2econd::<op>", ...)`` when the op is registered."""
    if registered(op):
        torch.library.register_autograd(f"e2econd::{op}", backward, setup_context=setup_context)
