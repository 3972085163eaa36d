"""``vpred``: today's objective (cosine VP schedule, v-prediction) in the formulation interface.

x = α(t)·x0 + σ(t)·ε, target v = α·ε − σ·x0 (``e2econd.objective.loss_sum``), unit weight. In the
preconditioning form D = c_skip·x + c_out·F: c_skip = α, c_out = −σ, c_in = 1, c_noise = t, so the op
row's (α, σ) are the schedule's own and its samplers are those of ``e2econd.diffusion.samplers``
(DDPM ancestral, DDIM(η), DPM-Solver++(2M)), unchanged, plus EDM's ``euler``/``heun``/``midpoint`` on
the ρ-schedule: in y = x/α and λ = σ/α the VP probability-flow ODE is dy/dλ = (y − D)/λ (Karras et al.
eq. 4 with s = α), so a row (c_x, c_0, c_p) of :mod:`~e2econd.diffusion.formulations.ode` taking y at λ_in
to λ_out becomes, on the op's state x = α·y, (α_out/α_in·c_x, α_out·c_0, α_out·c_p); the start is
x ~ N(0, σ(t_0)²) at λ_0 = σ_max (DDIM(η=0) is this Euler on another grid). The noise-to-signal
ratio is σ̃ = σ/α; its inverse on the cosine schedule (for the ``lognormal_sigma`` density) is closed form:
ᾱ = 1/(1 + σ̃²), cos θ = cos θ_0 / sqrt(1 + σ̃²), t = (1 + s)·θ·2/π − s, θ_0 = s/(1 + s)·π/2.
"""

from __future__ import annotations

import math

import torch

from e2econd.diffusion.formulations.base import Formulation, FormulationPlan, NoiseLevelDensity, Precond
from e2econd.diffusion.formulations.ode import SOLVERS, ode_rows, rho_schedule
from e2econd.diffusion.samplers import DEFAULT_STEPS, SAMPLERS, make_plan
from e2econd.diffusion.schedule import CosineSchedule

__all__ = ["VPred", "cosine_t_from_nsr"]


def cosine_t_from_nsr(nsr: torch.Tensor, schedule: CosineSchedule) -> torch.Tensor:
    """The cosine-schedule time t ∈ [0, 1] at which σ/α = ``nsr`` (inverse of sqrt(1/ᾱ − 1))."""
    s = schedule.s
    cos0 = math.cos(s / (1 + s) * math.pi / 2)
    nsr = torch.as_tensor(nsr, dtype=torch.float64)
    theta = torch.arccos((cos0 / torch.sqrt(1 + nsr**2)).clamp(-1.0, 1.0))
    return ((1 + s) * theta * (2 / math.pi) - s).clamp(0.0, 1.0)


class VPred(Formulation):
    """Cosine VP schedule with v-prediction (the thesis's objective)."""

    name = "vpred"
    samplers = SAMPLERS + SOLVERS
    default_sampler = "dpmpp2m"
    default_steps = {**DEFAULT_STEPS, "euler": 64, "heun": 18, "midpoint": 18}
    default_density = "uniform_t"

    def __init__(
        self,
        density: NoiseLevelDensity | None = None,
        schedule: CosineSchedule | None = None,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
    ):
        super().__init__(density)
        self.schedule = schedule or CosineSchedule()
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho

    def level_from_t(self, t):
        return torch.as_tensor(t)

    def level_from_nsr(self, nsr):
        return cosine_t_from_nsr(nsr, self.schedule)

    def scales(self, level):
        return self.schedule.alpha_sigma(torch.as_tensor(level))

    def precondition(self, level) -> Precond:
        t = torch.as_tensor(level)
        a, s = self.schedule.alpha_sigma(t)
        return Precond(c_skip=a, c_out=-s, c_in=torch.ones_like(a), c_noise=t)

    def target(self, x0, eps, level):
        a, s = self.scales(level)
        return a * eps - s * x0

    def plan(self, sampler: str | None = None, steps: int | None = None, eta: float = 0.0) -> FormulationPlan:
        """The ``e2econd.diffusion.samplers`` plan of ``sampler`` as a FormulationPlan (c_in = 1, c_noise = t)."""
        sampler = self.check_sampler(sampler or self.default_sampler)
        if sampler in SOLVERS:
            return self._ode_plan(sampler, self.default_steps[sampler] if steps is None else int(steps))
        base = make_plan(sampler, steps, eta=eta, schedule=self.schedule)
        return FormulationPlan(
            base.name,
            base.times,
            base.coefs,
            objective=self.name,
            init_std=1.0,
            c_in=tuple(1.0 for _ in base.times),
            c_noise=tuple(base.times),
        )

    def _ode_plan(self, sampler: str, steps: int) -> FormulationPlan:
        """``sampler`` of dy/dλ = (y − D)/λ on the ρ-schedule in λ = σ/α, mapped onto x = α·y (module doc)."""
        grid = rho_schedule(steps, self.sigma_min, self.sigma_max, self.rho)
        lam, rows = ode_rows(sampler, grid)
        t_in = cosine_t_from_nsr(torch.tensor(lam, dtype=torch.float64), self.schedule)
        t_out = cosine_t_from_nsr(torch.tensor(lam[1:] + [grid[-1]], dtype=torch.float64), self.schedule)
        a_in, a_out = self.schedule.alpha_sigma(t_in)[0].tolist(), self.schedule.alpha_sigma(t_out)[0].tolist()
        scaled = [(ao / ai * cx, ao * c0, ao * cp) for ai, ao, (cx, c0, cp) in zip(a_in, a_out, rows)]
        init_std = float(self.schedule.alpha_sigma(t_in[0])[1])
        return self._finish(f"vpred-{sampler}", t_in.tolist(), scaled, init_std=init_std)
