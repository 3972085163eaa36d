"""Hot-path operators: fused reverse-diffusion step and masked attention over hit sets.

Each op dispatches to the compiled C++/CUDA kernel when the extension provides one for the
input's device, and otherwise to its pure-PyTorch reference (also the test oracle).
"""

from e2econd.ops._extension import LOADED, backend, has_kernel, reference_mode, use_extension

__all__ = ["LOADED", "backend", "has_kernel", "reference_mode", "use_extension"]
