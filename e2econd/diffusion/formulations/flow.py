"""``flow``: flow matching / rectified flow with straight paths x = (1 − t)·x0 + t·ε, velocity target.

The network F predicts u = ε − x0 (unit weight); D = x − t·u, i.e. c_skip = 1, c_out = −t, c_in = 1,
c_noise = t. Since u = E[ε − x0 | x] = (x − D)/t, the ODE dx/dt = u is dx/dt = (x − D)/t: the same
Euler / Heun / midpoint rows as EDM with ℓ = t (:mod:`e2econd.diffusion.formulations.ode`); the op row
(α, σ) = (1, t) gives x̂0 = x − t·F = D. Sampling starts from x ~ N(0, 1) at t = 1 on the grid
t_i = 1 − i/N (``uniform``) or (1 − i/N)² (``quadratic``). The noise-to-signal ratio is σ̃ = t/(1 − t),
so t = σ̃/(1 + σ̃), and ``logit_normal_t`` (SD3) is ``lognormal_sigma`` with (m, s) = (P_mean, P_std).
"""

from __future__ import annotations

import torch

from e2econd.diffusion.formulations.base import Formulation, FormulationPlan, NoiseLevelDensity, Precond
from e2econd.diffusion.formulations.ode import SOLVERS, ode_rows
from e2econd.diffusion.samplers import _grid

__all__ = ["Flow", "flow_grid"]


def flow_grid(steps: int, spacing: str = "uniform") -> list[float]:
    """Times 1 = t_0 > … > t_N = 0: ``uniform`` 1 − i/N or ``quadratic`` (1 − i/N)² (the samplers' grid)."""
    return _grid(steps, spacing)


class Flow(Formulation):
    """Rectified flow (module doc)."""

    name = "flow"
    samplers = SOLVERS
    default_sampler = "heun"
    default_steps = {"euler": 64, "heun": 16, "midpoint": 16}
    default_density = "logit_normal_t"

    def __init__(self, density: NoiseLevelDensity | None = None, spacing: str = "uniform"):
        super().__init__(density)
        flow_grid(1, spacing)  # validates
        self.spacing = spacing

    def level_from_t(self, t):
        return torch.as_tensor(t)

    def level_from_nsr(self, nsr):
        nsr = torch.as_tensor(nsr)
        return nsr / (1 + nsr)

    def scales(self, level):
        t = torch.as_tensor(level)
        return 1 - t, t

    def precondition(self, level) -> Precond:
        t = torch.as_tensor(level)
        return Precond(c_skip=torch.ones_like(t), c_out=-t, c_in=torch.ones_like(t), c_noise=t)

    def target(self, x0, eps, level):
        return eps - x0

    def plan(self, sampler: str | None = None, steps: int | None = None) -> FormulationPlan:
        """Euler / Heun (last step Euler) / midpoint from t = 1 to 0; start x ~ N(0, 1)."""
        sampler = self.check_sampler(sampler or self.default_sampler)
        steps = self.default_steps[sampler] if steps is None else int(steps)
        levels, rows = ode_rows(sampler, flow_grid(steps, self.spacing))
        return self._finish(f"flow-{sampler}", levels, rows, init_std=1.0)
