"""Conditioning embeddings: Fourier features of the diffusion time and of the jet kinematics.

The denoiser is conditioned on t in [0, 1], the jet's transformed (log-standardised) pt and m0
and its label y. Each kinematic condition has a learned *null token* that replaces its
embedding when the condition is dropped (classifier-free guidance): pt, m0 and y are dropped
jointly per jet (``drop`` is one bool per jet), so the unconditional model is
``model(..., drop_cond=True)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FourierFeatures(nn.Module):
    """x (B,) -> [sin(2π f_k x), cos(2π f_k x)] (B, 2K) with fixed log-spaced frequencies f_k.

    ``max_freq`` sets the finest scale: frequencies run from 1/``period`` to ``max_freq``.
    """

    def __init__(self, n: int, max_freq: float = 64.0, period: float = 2.0):
        super().__init__()
        freqs = torch.exp(torch.linspace(math.log(1.0 / period), math.log(max_freq), n))
        self.register_buffer("freqs", freqs, persistent=False)

    @property
    def dim(self) -> int:
        return 2 * self.freqs.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arg = 2 * math.pi * x.float()[:, None] * self.freqs[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """Diffusion time t in [0, 1] -> (B, dim) via Fourier features and a 2-layer MLP."""

    def __init__(self, dim: int, n_freq: int = 16):
        super().__init__()
        self.fourier = FourierFeatures(n_freq, max_freq=256.0, period=2.0)
        self.mlp = nn.Sequential(nn.Linear(self.fourier.dim + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        return self.mlp(torch.cat([self.fourier(t), t[:, None]], dim=-1))


class ConditionEmbedding(nn.Module):
    """Transformed (pt, m0) and label y -> (B, dim), with a null token per condition.

    pt and m0 arrive log-standardised (roughly unit scale), so the Fourier features use low
    frequencies (period 16 ... 1/4 in standardised units). ``drop`` (B,) bool swaps all three
    condition embeddings of a jet for their null tokens.
    """

    def __init__(self, dim: int, n_classes: int = 2, n_freq: int = 8):
        super().__init__()
        self.n_classes = n_classes
        self.fourier = FourierFeatures(n_freq, max_freq=4.0, period=16.0)
        fd = self.fourier.dim + 1
        self.pt = nn.Sequential(nn.Linear(fd, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.m0 = nn.Sequential(nn.Linear(fd, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.y = nn.Embedding(n_classes + 1, dim)  # index n_classes is the null label
        self.null_pt = nn.Parameter(torch.zeros(dim))
        self.null_m0 = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.null_pt, std=0.02)
        nn.init.normal_(self.null_m0, std=0.02)

    def _scalar(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return net(torch.cat([self.fourier(x), x[:, None]], dim=-1))

    def forward(
        self, pt: torch.Tensor, m0: torch.Tensor, y: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        y = y.long()
        if drop is None:
            drop = torch.zeros_like(y, dtype=torch.bool)
        drop = drop.to(torch.bool)
        e_pt = torch.where(drop[:, None], self.null_pt[None], self._scalar(self.pt, pt))
        e_m0 = torch.where(drop[:, None], self.null_m0[None], self._scalar(self.m0, m0))
        y_idx = torch.where(drop, torch.full_like(y, self.n_classes), y.clamp(0, self.n_classes - 1))
        return e_pt + e_m0 + self.y(y_idx)
