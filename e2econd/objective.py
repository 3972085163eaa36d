"""The training objective: v-prediction loss on packed jets, its validation loss, and the learning-rate
and EMA rules of the optimiser.

This is where an objective plugs in: :class:`e2econd.train._Trainer` calls :func:`loss_sum` for the
gradient step and :func:`validation_loss` for the EMA model's fixed-noise validation loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from e2econd.batching import Batch, draw
from e2econd.config import Config
from e2econd.diffusion.schedule import CosineSchedule, q_sample, v_target

_VAL_SEED = 0x5EED_0F_FA1


# ---------------------------------------------------------------------------------------- loss
def loss_sum(model, batch: Batch, t, drop, eps, schedule: CosineSchedule, autocast_dtype=None):
    """Sum over tokens and features of (v̂ − v)² for one batch (the caller divides by F · global tokens)."""
    dev = batch.x0.device
    t = t.to(dev)
    lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).long()
    alpha, sigma = schedule.alpha_sigma(t)
    a_h = torch.repeat_interleave(alpha, lengths, output_size=batch.n_hits)[:, None]
    s_h = torch.repeat_interleave(sigma, lengths, output_size=batch.n_hits)[:, None]
    eps = eps.to(dev)
    xt = q_sample(batch.x0, eps, a_h, s_h)
    target = v_target(batch.x0, eps, a_h, s_h)
    fwd = model.forward_packed if hasattr(model, "forward_packed") else model  # DDP(_PackedForward)
    with torch.autocast(dev.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        v = fwd(xt, batch.channel, batch.cu_seqlens, t, batch.cond, drop.to(dev) if drop is not None else None)
    err = (v.float() - target) ** 2
    return (err * batch.weight).sum() if batch.weight is not None else err.sum()


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
def validation_loss(model, sizes, make, n_feat: int, cfg: Config, schedule, autocast_dtype) -> float:
    """Per-feature v-MSE of ``model`` on a fixed subset of the val split with fixed t, ε and dequantisation.

    ``sizes`` = tokens per val jet; ``make(idx, dq) -> Batch`` builds the family's batch of jets ``idx``.
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
            tot += float(loss_sum(model, b, d.t, None, d.eps, schedule, autocast_dtype))
            hits += H
    return tot / (n_feat * max(hits, 1))
