"""``edm``: Karras et al. (2022) preconditioning, log-normal σ, EDM loss weight, ρ-schedule Euler/Heun.

x = x0 + σ·ε (level ℓ = σ, the noise-to-signal ratio itself), with σ_data the data std (1: features
are standardised) and

    c_skip = σ_d²/(σ² + σ_d²),  c_out = σ·σ_d/sqrt(σ² + σ_d²),  c_in = 1/sqrt(σ² + σ_d²),  c_noise = ¼·ln σ.

The loss λ(σ)·‖D − x0‖² with λ = (σ² + σ_d²)/(σ·σ_d)² equals ‖F − F*‖² with F* = (x0 − c_skip·x)/c_out
= (σ·x0 − σ_d²·ε)/(σ_d·sqrt(σ² + σ_d²)) (finite at σ → 0), because λ·c_out² = 1: the F-space weight
is 1. With σ_d = 1, F* = −v of the VP process at the same σ/α, and c_in·x is the VP state; with
``noise_input="vp_time"`` c_noise is the cosine time t ∈ [0, 1] at which σ_VP/α_VP = σ (the range the
backbone's time embedding was built for) instead of Karras's ¼·ln σ ∈ [−1.55, 1.10], and an EDM network
is then a vpred network with F = −v.

Fused-op rows: α = c_skip, σ_op = −c_out, v = raw F gives x̂0 = D; the Euler/Heun/midpoint rows of
dx/dσ = (x − D)/σ are in :mod:`e2econd.diffusion.formulations.ode`. Sampling starts from
x ~ N(0, σ_max²) on σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i < N, σ_N = 0.
"""

from __future__ import annotations

import torch

from e2econd.diffusion.formulations.base import Formulation, FormulationPlan, NoiseLevelDensity, Precond
from e2econd.diffusion.formulations.ode import SOLVERS, ode_rows, rho_schedule
from e2econd.diffusion.formulations.vpred import cosine_t_from_nsr
from e2econd.diffusion.schedule import CosineSchedule

NOISE_INPUTS = ("log", "vp_time")

__all__ = ["EDM", "NOISE_INPUTS", "rho_schedule"]


class EDM(Formulation):
    """Karras et al. (2022) preconditioned denoiser (module doc)."""

    name = "edm"
    samplers = SOLVERS
    default_sampler = "heun"
    default_steps = {"euler": 64, "heun": 18, "midpoint": 18}
    default_density = "lognormal_sigma"

    def __init__(
        self,
        density: NoiseLevelDensity | None = None,
        sigma_data: float = 1.0,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        noise_input: str = "log",
    ):
        super().__init__(density)
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        if noise_input not in NOISE_INPUTS:
            raise ValueError(f"unknown EDM noise input '{noise_input}' (choose from {', '.join(NOISE_INPUTS)})")
        self.sigma_data, self.sigma_min, self.sigma_max, self.rho = sigma_data, sigma_min, sigma_max, rho
        self.noise_input = noise_input

    def level_from_t(self, t):
        """σ = σ/α of the cosine VP schedule at t (the noise levels of vpred), clipped to [σ_min, σ_max]."""
        ab = CosineSchedule().alpha_bar(torch.as_tensor(t, dtype=torch.float64))
        nsr = torch.sqrt((1 - ab) / ab.clamp_min(1e-300))
        return nsr.clamp(self.sigma_min, self.sigma_max)

    def level_from_nsr(self, nsr):
        return torch.as_tensor(nsr)

    def scales(self, level):
        sig = torch.as_tensor(level)
        return torch.ones_like(sig), sig

    def precondition(self, level) -> Precond:
        sig = torch.as_tensor(level)
        sd = self.sigma_data
        r = torch.sqrt(sig**2 + sd**2)
        return Precond(
            c_skip=sd**2 / r**2,
            c_out=sig * sd / r,
            c_in=1 / r,
            c_noise=self._c_noise(sig),
        )

    def _c_noise(self, sig: torch.Tensor) -> torch.Tensor:
        if self.noise_input == "log":
            return 0.25 * torch.log(sig.clamp_min(1e-30))
        return cosine_t_from_nsr(sig, CosineSchedule()).to(sig.dtype)

    def target(self, x0, eps, level):
        sig = torch.as_tensor(level)
        sd = self.sigma_data
        return (sig * x0 - sd**2 * eps) / (sd * torch.sqrt(sig**2 + sd**2))

    def lambda_weight(self, level) -> torch.Tensor:
        """EDM's λ(σ) = (σ² + σ_d²)/(σ·σ_d)² of the D-space loss λ·‖D − x0‖²."""
        sig = torch.as_tensor(level)
        return (sig**2 + self.sigma_data**2) / (sig * self.sigma_data) ** 2

    def plan(self, sampler: str | None = None, steps: int | None = None) -> FormulationPlan:
        """Euler / Heun (last step Euler) / midpoint on the ρ-schedule; start x ~ N(0, σ_max²)."""
        sampler = self.check_sampler(sampler or self.default_sampler)
        steps = self.default_steps[sampler] if steps is None else int(steps)
        grid = rho_schedule(steps, self.sigma_min, self.sigma_max, self.rho)
        levels, rows = ode_rows(sampler, grid)
        return self._finish(f"edm-{sampler}", levels, rows, init_std=self.sigma_max)
