"""The network evaluation inside the sampler loop: v(x, t) of a packed batch, with guidance.

``guided_network`` returns ``net(x, t) -> v`` for one batch of jets (fixed hits, channels,
``cu_seqlens`` and conditions): classifier-free guidance ``v = v_u + w (v_c - v_u)`` as one call on
the stacked [cond; null] batch, bf16 autocast on CUDA when the run trained with it, and static
shapes with no host reads (``max_seqlen`` given, ``check=False``: the caller validates
``cu_seqlens`` once per batch), so ``net`` can be captured as a CUDA graph
(``e2econd.diffusion.graphs``). ``t`` is a float (eager) or a 0-d tensor (graph input).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

__all__ = ["autocast_for", "guided_network"]


def autocast_for(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when ``bf16`` (as in training); a no-op context on the CPU."""
    if torch.device(device).type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)  # no cache: graph-safe
    return contextlib.nullcontext()


def guided_network(
    model,
    channel: torch.Tensor,
    cu: torch.Tensor,
    max_len: int,
    cond: dict,
    n_jets: int,
    guidance: float = 1.0,
    bf16: bool = False,
) -> Callable:
    """``net(x (total, 3), t) -> v (total, 3)`` for one packed batch of ``n_jets`` jets (module doc)."""
    dev, w = channel.device, float(guidance)
    n_eval = n_jets if w == 1.0 else 2 * n_jets
    if w != 1.0:  # classifier-free guidance: one call on [cond; null] stacked along the jets
        cu2 = torch.cat([cu, cu[1:] + cu[-1]])
        ch2 = torch.cat([channel, channel])
        cond2 = {k: torch.cat([v, v]) for k, v in cond.items()}
        drop = torch.zeros(2 * n_jets, dtype=torch.bool, device=dev)
        drop[n_jets:] = True

    def net(x, t):
        tt = t.expand(n_eval) if isinstance(t, torch.Tensor) else torch.full((n_eval,), t, device=dev)
        with autocast_for(dev, bf16):
            if w == 1.0:
                return model.forward_packed(x, channel, cu, tt, cond, None, max_seqlen=max_len, check=False)
            vv = model.forward_packed(torch.cat([x, x]), ch2, cu2, tt, cond2, drop, max_seqlen=max_len, check=False)
        vc, vu = vv[: x.shape[0]], vv[x.shape[0] :]
        return vu + w * (vc - vu)

    return net
