"""Continuous-time cosine noise schedule with v-prediction (Nichol & Dhariwal 2021; Salimans & Ho 2022).

x_t = alpha(t) * x0 + sigma(t) * eps, alpha^2 + sigma^2 = 1, t in [0, 1], with
alpha_bar(t) = alpha(t)^2 = cos^2((t + s)/(1 + s) * pi/2) / cos^2(s/(1 + s) * pi/2), s = 0.008
(the thesis's schedule; its T = 512 discrete steps are t_i = i / T). The network predicts
v = alpha * eps - sigma * x0, so x0 = alpha * x_t - sigma * v and eps = sigma * x_t + alpha * v.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CosineSchedule:
    """alpha(t), sigma(t) of the cosine schedule; ``s`` is the small offset at t = 0."""

    s: float = 0.008

    def alpha_bar(self, t: torch.Tensor | float):
        """Signal fraction alpha^2 at time t (torch tensors or Python floats)."""
        s = self.s
        norm = math.cos(s / (1 + s) * math.pi / 2) ** 2
        if isinstance(t, torch.Tensor):
            ab = torch.cos((t + s) / (1 + s) * (math.pi / 2)) ** 2 / norm
            return ab.clamp(0.0, 1.0)
        return min(max(math.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / norm, 0.0), 1.0)

    def alpha_sigma(self, t):
        """(alpha, sigma) at time t; alpha(1) = 0, sigma(0) = 0."""
        ab = self.alpha_bar(t)
        if isinstance(ab, torch.Tensor):
            return ab.sqrt(), (1 - ab).clamp_min(0).sqrt()
        return math.sqrt(ab), math.sqrt(max(1.0 - ab, 0.0))

    def log_snr(self, t: float) -> float:
        """lambda(t) = log(alpha / sigma); +inf at t = 0, -inf at t = 1."""
        a, s = self.alpha_sigma(t)
        if s == 0.0:
            return math.inf
        if a == 0.0:
            return -math.inf
        return math.log(a / s)


def v_target(x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The v-prediction target v = alpha * eps - sigma * x0 (alpha, sigma broadcast over hits/features)."""
    return alpha * eps - sigma * x0


def q_sample(x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Forward process x_t = alpha * x0 + sigma * eps."""
    return alpha * x0 + sigma * eps
