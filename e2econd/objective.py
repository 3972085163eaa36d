"""The training objective: the formulation's loss (vpred, edm, flow: :mod:`e2econd.diffusion.formulations`)
on packed jets, its validation loss, and the learning-rate and EMA rules of the optimiser.

This is where an objective plugs in: :class:`e2econd.train._Trainer` calls :func:`loss_sum` for the
gradient step and :func:`validation_loss` for the EMA model's fixed-noise validation loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from e2econd.batching import Batch, draw
from e2econd.config import Config
from e2econd.diffusion.formulations import Formulation, per_hit

_VAL_SEED = 0x5EED_0F_FA1


# ---------------------------------------------------------------------------------------- loss
def loss_sum(model, batch: Batch, t, drop, eps, form: Formulation, autocast_dtype=None):
    """Sum over tokens and features of w(ℓ)·(F − F*)² for one batch (the caller divides by F · global tokens).

    ``t`` are the draw's per-jet uniforms, mapped to noise levels ℓ by ``form``'s density; the raw network
    F sees c_in·x and c_noise(ℓ); its target F* and weight are the formulation's (vpred: v, unit weight).
    """
    dev = batch.x0.device
    level = form.level_from_uniform(t).to(dev)
    lv = per_hit(level, batch.cu_seqlens, batch.n_hits)
    eps = eps.to(dev)
    xt = form.corrupt(batch.x0, eps, lv)
    x_in, c_noise = form.network_input(xt, level, batch.cu_seqlens)
    target = form.target(batch.x0, eps, lv)
    fwd = model.forward_packed if hasattr(model, "forward_packed") else model  # DDP(_PackedForward)
    with torch.autocast(dev.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        f = fwd(
            x_in,
            batch.channel,
            batch.cu_seqlens,
            c_noise.to(dev, torch.float32),
            batch.cond,
            drop.to(dev) if drop is not None else None,
        )
    err = (f.float() - target) ** 2
    if form.weighted:
        err = err * form.loss_weight(lv).to(err.dtype)
    return (err * batch.weight).sum() if batch.weight is not None else err.sum()


def channel_balance(channel: torch.Tensor, cu_seqlens: torch.Tensor, n_channels: int = 3) -> torch.Tensor:
    """Per-token loss weight (total, 1) with which every channel present in a jet carries an equal share of
    the jet's loss and the jet keeps its total weight: w = n_j / (C_j · n_jc) for a token of channel c in
    jet j (n_j tokens, C_j channels present, n_jc tokens of c). ``objective.balance = "channel"``: tracks
    are ~5 % of a jet's hits and so ~5 % of its loss without it."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    jet = torch.repeat_interleave(torch.arange(lengths.numel(), device=channel.device), lengths)
    key = jet * n_channels + channel.long()
    n_jc = torch.bincount(key, minlength=lengths.numel() * n_channels).view(-1, n_channels)
    c_j = (n_jc > 0).sum(1).clamp_min(1)
    w = lengths[jet].double() / (c_j[jet] * n_jc.view(-1)[key]).double()
    return w.float()[:, None]


# ------------------------------------------------------------------------------------- helpers
def lr_factor(step: int, warmup: int, max_steps: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``max_steps``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    prog = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


# ---------------------------------------------------------------------------------- validation
def validation_loss(model, sizes, make, n_feat: int, cfg: Config, loss) -> float:
    """Per-feature loss of ``model`` on a fixed subset of the val split with fixed t, ε and dequantisation.

    ``sizes`` = tokens per val jet; ``make(idx, dq) -> Batch`` builds the family's batch of jets ``idx``;
    ``loss(model, batch, t, drop, eps)`` is the summed loss (e.g. :func:`loss_sum` of the run's objective).
    """
    n = len(sizes)
    idx = np.arange(n if not cfg.train.val_jets else min(n, cfg.train.val_jets))
    idx = idx[np.asarray(sizes)[idx] > 0]
    if len(idx) == 0:
        return float("nan")
    gen = torch.Generator().manual_seed(_VAL_SEED)
    tot, hits = 0.0, 0
    model.eval()
    with torch.no_grad():
        for a in range(0, len(idx), cfg.train.batch_size):
            sel = idx[a : a + cfg.train.batch_size]
            B, H = len(sel), int(np.asarray(sizes)[sel].sum())
            d = draw(gen, B, H, 0.0, n_feat=n_feat)
            b = make(sel, d.dq if cfg.data.dequantize else None)
            tot += float(loss(model, b, d.t, None, d.eps))
            hits += H
    return tot / (n_feat * max(hits, 1))
