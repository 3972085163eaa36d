"""Load the compiled kernels and say which backend each op uses.

The package works without them: every op has a pure-PyTorch reference that is both the fallback
and the test oracle. The kernels come from one of two places, tried in order:

1. **prebuilt at install**: ``e2econd._C``, compiled by ``setup.py`` when torch was importable in
   the build environment (``pip install --no-build-isolation .``, ``make setup``);
2. **JIT-compiled**: otherwise (plain ``pip install .``, or a prebuilt ``_C`` that fails to import,
   e.g. an undefined symbol after torch was upgraded), the shipped sources (``e2econd/_csrc``, or
   the checkout's ``csrc/``) are compiled on first use with ``torch.utils.cpp_extension.load``
   against the installed torch, into ``$E2ECOND_CACHE`` (default ``~/.cache/e2econd``) under a key
   of torch version + source hash + build flags, behind a file lock so that concurrent processes
   (torchrun ranks) compile once. Later imports load the cached library in milliseconds.

``E2ECOND_DISABLE_EXT=1`` skips both; ``E2ECOND_JIT=0`` skips the JIT compile; a failed compile
falls back to the references with the error recorded (``backend()["load_error"]``, ``e2econd info``).
``reference_mode()`` forces the reference path inside a block (for A/B comparisons).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import threading
from collections.abc import Iterator

import torch

from e2econd.ops import _build, _jit

OPS = (
    "diffusion_step",
    "diffusion_step_",
    "masked_attention_fwd",
    "masked_attention_bwd",
    "packed_attention_fwd",
    "packed_attention_bwd",
)

LOAD_ERROR: str | None = None  # why the kernels are not loaded, or why the prebuilt _C was not used
SOURCE: str = "reference"  # "prebuilt at install" | "JIT-compiled (<cache path>)" | "reference (<why>)"


def _prebuilt_mismatch() -> str | None:
    """Why the prebuilt ``_C`` must not be imported: it was built against another torch (its stamp
    ``_C.torch.json`` differs from the running torch). None when it matches or carries no stamp."""
    stamp = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), _build.TORCH_STAMP)
    try:
        with open(stamp) as f:
            built = json.load(f)
    except (OSError, ValueError):
        return None
    now = _build.torch_identity(torch)
    if built == now:
        return None
    return (
        f"prebuilt e2econd._C was built against torch {built.get('torch')} (git {built.get('git')}), "
        f"this is torch {now['torch']} (git {now['git']}): not loaded"
    )


def _load() -> tuple[bool, str, str | None]:
    """(loaded, source, error) after trying the prebuilt extension, then the JIT compile."""
    if os.environ.get("E2ECOND_DISABLE_EXT", "").lower() in ("1", "true", "yes"):
        return False, "reference (disabled by E2ECOND_DISABLE_EXT=1)", "disabled by E2ECOND_DISABLE_EXT=1"
    prebuilt_error = _prebuilt_mismatch()
    if prebuilt_error is None and importlib.util.find_spec("e2econd._C") is not None:  # prebuilt, same torch
        try:
            importlib.import_module("e2econd._C")  # runs the TORCH_LIBRARY registrations
            return True, "prebuilt at install", None
        except ImportError as exc:  # e.g. undefined symbol: built against another torch
            prebuilt_error = f"prebuilt e2econd._C failed to import: {' '.join(str(exc).split())}"
    loaded, source, error = _jit.load_or_compile()
    if prebuilt_error:
        error = prebuilt_error + (f"; {error}" if error else "; used the JIT-compiled kernels instead")
    return loaded, source, error


LOADED, SOURCE, LOAD_ERROR = _load()

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
        "source": SOURCE,
    }
    if LOAD_ERROR:
        info["load_error"] = LOAD_ERROR
    return info
