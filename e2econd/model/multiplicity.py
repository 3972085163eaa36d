"""Conditional multiplicity model: number of hits per channel given (pt, m0, y).

Sampled before the diffusion so every generated jet gets its own hit counts (tens to thousands).
An MLP of the transformed (log-standardised) pt and m0 and the label y outputs a K-component
Gaussian mixture with diagonal covariance over z = log(1 + n + u) per modelled channel, where u ~
U[0, 1) dequantises the integer count (so floor(exp(z) - 1) recovers n exactly). Correlations
between channels (ECAL and HCAL counts of one jet) are carried by the mixture components. Trained
full-batch with Adam on the train split in seconds; ``sample`` returns (B, 3) int64 counts with
zeros for channels not modelled.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

N_CHANNELS = 3


class MultiplicityModel(nn.Module):
    """p(log(1 + n + u) | pt, m0, y) as a Gaussian mixture; ``channel_ids`` are the modelled channels."""

    def __init__(self, channel_ids: list[int], n_classes: int = 2, components: int = 8, hidden: int = 64):
        super().__init__()
        self.channel_ids = [int(c) for c in channel_ids]
        self.n_classes, self.components, self.hidden = int(n_classes), int(components), int(hidden)
        C, K = len(self.channel_ids), self.components
        self.y_emb = nn.Embedding(self.n_classes, 8)
        self.net = nn.Sequential(
            nn.Linear(2 + 8, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, K * (1 + 2 * C)),
        )
        self.register_buffer("z_mean", torch.zeros(C))
        self.register_buffer("z_std", torch.ones(C))
        self.register_buffer("n_max", torch.full((C,), 10**6, dtype=torch.long))

    def _params(self, pt, m0, y):
        B, C, K = pt.shape[0], len(self.channel_ids), self.components
        dev = self.z_mean.device
        y = y.to(dev).long().clamp(0, self.n_classes - 1)
        h = torch.cat([pt.to(dev).float()[:, None], m0.to(dev).float()[:, None], self.y_emb(y)], dim=-1)
        out = self.net(h)
        logits = out[:, :K].log_softmax(-1)
        mu = out[:, K : K + K * C].view(B, K, C)
        log_sd = out[:, K + K * C :].view(B, K, C).clamp(-7.0, 3.0)
        return logits, mu, log_sd

    def log_prob_z(self, z, pt, m0, y):
        """Log density of the standardised dequantised log-counts z (B, C)."""
        logits, mu, log_sd = self._params(pt, m0, y)
        zz = (z[:, None, :] - mu) / log_sd.exp()
        comp = (-0.5 * zz**2 - log_sd - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(logits + comp, dim=-1)

    def _z(self, counts, u):
        sel = counts[:, self.channel_ids].float()
        return (torch.log1p(sel + u) - self.z_mean) / self.z_std

    def nll(self, counts, pt, m0, y, generator=None):
        """Mean negative log-likelihood (nats per jet) of integer counts (B, 3) with fresh dequantisation."""
        C = len(self.channel_ids)
        u = torch.rand(counts.shape[0], C, generator=generator, device=self.z_mean.device)
        return -self.log_prob_z(self._z(counts.to(self.z_mean.device), u), pt, m0, y).mean()

    def fit(self, counts, pt, m0, y, steps: int = 1500, lr: float = 3e-3, seed: int = 0, progress=None) -> list[float]:
        """Full-batch Adam on the train split; returns the loss history (seconds on CPU for ~10^4 jets)."""
        dev = self.z_mean.device
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.long, device=dev)
        pt = torch.as_tensor(np.asarray(pt), dtype=torch.float32, device=dev)
        m0 = torch.as_tensor(np.asarray(m0), dtype=torch.float32, device=dev)
        y = torch.as_tensor(np.asarray(y), device=dev).long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ValueError(f"labels y must be in [0, {self.n_classes - 1}], got {int(y.min())}..{int(y.max())}")
        with torch.no_grad():
            z = torch.log1p(counts[:, self.channel_ids].float() + 0.5)
            self.z_mean.copy_(z.mean(0))
            self.z_std.copy_(z.std(0).clamp_min(0.05) if z.shape[0] > 1 else torch.ones_like(self.z_mean))
            self.n_max.copy_(counts[:, self.channel_ids].max(0).values * 2 + 10)
        gen = torch.Generator(device=dev).manual_seed(int(seed))
        threads = torch.get_num_threads()
        if dev.type == "cpu":
            torch.set_num_threads(1)  # tiny matmuls: extra threads only add synchronisation (30x on a busy box)
        try:
            return self._fit_loop(counts, pt, m0, y, steps, lr, gen, progress)
        finally:
            torch.set_num_threads(threads)

    def _fit_loop(self, counts, pt, m0, y, steps, lr, gen, progress) -> list[float]:
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr * 0.05)
        hist = []
        self.train()
        for _ in range(steps):
            loss = self.nll(counts, pt, m0, y, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            hist.append(float(loss.detach()))
            if progress is not None:
                progress()
        self.eval()
        return hist

    @torch.no_grad()
    def sample(self, pt, m0, y, generator: torch.Generator | None = None) -> torch.Tensor:
        """Hit counts (B, 3) int64 for transformed pt, m0 (B,) and labels y (B,); zeros for channels not modelled."""
        pt = torch.as_tensor(pt, dtype=torch.float32)
        m0 = torch.as_tensor(m0, dtype=torch.float32)
        y = torch.as_tensor(y)
        B, C = pt.shape[0], len(self.channel_ids)
        dev = self.z_mean.device
        logits, mu, log_sd = self._params(pt, m0, y)
        gdev = generator.device if generator is not None else dev
        k = torch.multinomial(logits.exp().to(gdev), 1, generator=generator).to(dev)[:, 0]
        eps = torch.randn(B, C, generator=generator, device=gdev).to(dev)
        ar = torch.arange(B, device=dev)
        z = mu[ar, k] + log_sd[ar, k].exp() * eps
        n = torch.floor(torch.expm1(z * self.z_std + self.z_mean)).clamp_min(0)
        n = torch.minimum(n, self.n_max.float()).long()
        out = torch.zeros(B, N_CHANNELS, dtype=torch.long, device=dev)
        out[:, self.channel_ids] = n
        return out

    def to_dict(self) -> dict:
        return {
            "channel_ids": self.channel_ids,
            "n_classes": self.n_classes,
            "components": self.components,
            "hidden": self.hidden,
            "state": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> MultiplicityModel:
        m = cls(d["channel_ids"], d["n_classes"], d["components"], d["hidden"])
        m.load_state_dict(d["state"])
        return m.eval()
