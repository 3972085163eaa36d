"""Static-shape sampling helpers: CUDA-graph capture of the denoiser, and a no-host-sync guard.

The sampler loop (``e2econd.diffusion.samplers.run_plan``) is free of host work when the denoiser
is: fixed shapes within a batch, no ``.item()`` / ``nonzero`` / data-dependent Python. Then one
network evaluation can be captured once per batch shape as a CUDA graph and replayed for every
step (``GraphDenoiser``): the ~10^2 kernel launches of a forward pass become one graph launch,
and the loop never waits for the GPU. The fused update op runs between replays (its Philox seed
and step offset are op scalars, so it stays an ordinary launch).

``NoHostSync`` is the CPU-testable form of that property: a dispatch mode that raises on every
operator that needs a tensor's *value* on the host (which on CUDA is a device synchronisation).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["GraphDenoiser", "HostSyncError", "NoHostSync", "graphs_enabled"]

#: aten ops that read tensor values on the host (a device sync on CUDA) or have data-dependent shapes
_SYNC_OPS = {
    "aten::_local_scalar_dense",  # .item(), int(t), float(t), bool(t)
    "aten::item",
    "aten::is_nonzero",
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::unique",
    "aten::_unique2",
    "aten::equal",
    "aten::allclose",
    "aten::tolist",
}


class HostSyncError(RuntimeError):
    """An operator inside a ``NoHostSync`` block needed a tensor value on the host."""


class NoHostSync(TorchDispatchMode):
    """Raise ``HostSyncError`` on any op that reads tensor values on the host (see ``_SYNC_OPS``),
    and on ``repeat_interleave`` without ``output_size`` (its output shape depends on values)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in _SYNC_OPS:
            raise HostSyncError(f"host sync inside the sampler loop: {name}")
        if name == "aten::repeat_interleave" and kwargs.get("output_size") is None:
            raise HostSyncError("host sync inside the sampler loop: repeat_interleave without output_size")
        return func(*args, **kwargs)


def graphs_enabled(device: torch.device, requested: bool | None = None) -> bool:
    """CUDA graphs for sampling: on CUDA unless ``requested`` is False or ``$E2ECOND_CUDA_GRAPHS=0``."""
    if torch.device(device).type != "cuda":
        return False
    if requested is not None:
        return bool(requested)
    return os.environ.get("E2ECOND_CUDA_GRAPHS", "1").lower() not in ("0", "false", "no")


class GraphDenoiser:
    """``fn(x, t_tensor) -> v`` captured once for x's shape; ``self(x, t)`` replays it.

    ``x`` is copied into a static input buffer, ``t`` (float) written into a static 0-d tensor,
    the graph replayed, and the static output returned (valid until the next call). Warm-up runs
    on a side stream (``warmup`` evaluations) so lazy initialisation stays out of the capture.
    ``pool`` shares one memory pool between the graphs of successive batches.
    """

    def __init__(
        self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, warmup: int = 2, pool=None
    ):
        self.x = x.detach().clone()
        self.t = torch.zeros((), dtype=torch.float32, device=x.device)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(max(int(warmup), 1)):
                fn(self.x, self.t)
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.out = fn(self.x, self.t)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.x.copy_(x)
        self.t.fill_(float(t))
        self.graph.replay()
        return self.out
