"""Load the compiled extension ``e2econd._C`` and say which backend each op uses.

The package works without the extension: every op has a pure-PyTorch reference that is both
the fallback and the test oracle. ``E2ECOND_DISABLE_EXT=1`` skips loading the extension;
``reference_mode()`` forces the reference path inside a block (for A/B comparisons).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

OPS = (
    "diffusion_step",
    "diffusion_step_",
    "masked_attention_fwd",
    "masked_attention_bwd",
    "packed_attention_fwd",
    "packed_attention_bwd",
)

LOAD_ERROR: str | None = None
try:
    if os.environ.get("E2ECOND_DISABLE_EXT", "").lower() in ("1", "true", "yes"):
        raise ImportError("disabled by E2ECOND_DISABLE_EXT=1")
    from e2econd import _C  # noqa: F401  (import runs the TORCH_LIBRARY registrations)

    LOADED = True
except ImportError as exc:  # no extension built: pure-PyTorch fallback
    LOADED = False
    LOAD_ERROR = str(exc)

_state = threading.local()


def _forced_reference() -> bool:
    return getattr(_state, "reference", False)


@contextlib.contextmanager
def reference_mode(enabled: bool = True) -> Iterator[None]:
    """Run every e2econd op through its pure-PyTorch reference inside this block."""
    old = _forced_reference()
    _state.reference = enabled
    try:
        yield
    finally:
        _state.reference = old


_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def has_kernel(op: str, device_type: str) -> bool:
    """True when the extension registered a kernel of ``e2econd::op`` for this device type."""
    if not LOADED or device_type not in _KEYS:
        return False
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"e2econd::{op}", _KEYS[device_type]))
    except RuntimeError:
        return False


def use_extension(op: str, device: torch.device) -> bool:
    """Whether a call of ``op`` on ``device`` should go to the compiled kernel."""
    return not _forced_reference() and has_kernel(op, torch.device(device).type)


def backend() -> dict:
    """Which kernels are compiled and loaded, and whether a GPU can run them."""
    info = {
        "extension_loaded": LOADED,
        "build": torch.ops.e2econd.build_info() if LOADED else None,
        "cpu_kernels": [op for op in OPS if has_kernel(op, "cpu")],
        "cuda_kernels": [op for op in OPS if has_kernel(op, "cuda")],
        "cuda_available": torch.cuda.is_available(),
        "active": "reference" if _forced_reference() or not LOADED else "extension",
    }
    if LOAD_ERROR:
        info["load_error"] = LOAD_ERROR
    return info
