"""e2econd: a fast, conditional, multi-channel diffusion generator for CMS End-to-End jet images.

Data flow: ``e2econd.data`` (E2E files <-> hit sets, transforms) -> ``e2econd.model`` ->
``e2econd.diffusion`` (schedule, samplers) -> ``e2econd.train`` / ``e2econd.sample`` ->
``e2econd.evaluate``. Hot paths run in ``e2econd.ops`` (C++/CUDA extension with a
pure-PyTorch fallback).
"""

from e2econd._version import __version__

__all__ = ["__version__"]
