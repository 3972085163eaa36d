"""Consistency students (issue 18): a network distilled so that K network evaluations follow the teacher's
probability-flow trajectory — multistep consistency distillation (Song et al. 2023 for K = 1, as in
CaloClouds II and PC-Droid; Heek et al. 2024 for K segments).

The student keeps the teacher's formulation — forward process x = a(ℓ)·x0 + b(ℓ)·ε and preconditioned
denoiser D(x, ℓ) = c_skip(ℓ)·x + c_out(ℓ)·F(c_in·x, c_noise). Training levels are the noise-to-signal
ratios σ̃ = b/a on the Karras ρ-schedule (``grid_nsr``: N + 1 values from σ̃_max to σ̃_min), mapped to
the formulation's level ℓ. The grid is cut into K segments at the indices s_k = round(k·N/K) (and N);
within a segment the student is consistent: the deterministic DDIM jump with its own D from any level of
the segment to the segment's end,

    x_e = a_e·D + (b_e/b)·(x − a·D),

lands on the teacher's trajectory at ℓ_e. K = 1 is a consistency model (one jump to σ̃_min ≈ 0); K = N is
the teacher's own DDIM.

Sampling with the K evaluations: x ~ N(0, b(ℓ_0)²), then at each boundary ℓ_{s_k} one fused-op row with
α = c_skip, σ = −c_out (x̂0 = D), c_x = b_e/b_k, c_0 = a_e − a_k·b_e/b_k (c_p = c_n = 0), e = s_{k+1};
the last jump lands on σ̃_min, whose state is the sample (within 0.002 of its noise-free value).
"""

from __future__ import annotations

import torch

from e2econd.diffusion.formulations.base import Formulation, FormulationPlan
from e2econd.diffusion.formulations.ode import rho_schedule

STUDENT_METHODS = ("consistency",)

__all__ = ["STUDENT_METHODS", "ConsistencyStudent", "grid_nsr"]


def grid_nsr(levels: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> list[float]:
    """The N + 1 = ``levels`` + 1 training noise-to-signal ratios σ̃_max = σ̃_0 > … > σ̃_N = σ̃_min."""
    if levels < 1:
        raise ValueError(f"the consistency grid needs >= 1 interval, got {levels}")
    return rho_schedule(levels + 1, sigma_min, sigma_max, rho)[:-1]


class ConsistencyStudent(Formulation):
    """The teacher formulation ``base`` with the student's grid and its one sampler, ``consistency``."""

    samplers = ("consistency",)
    default_sampler = "consistency"

    def __init__(self, base: Formulation, levels: int, steps: int):
        super().__init__(base.density)
        self.base, self.levels, self.name = base, int(levels), base.name
        self.default_steps = {"consistency": int(steps)}
        self.grid = base.level_from_nsr(torch.tensor(grid_nsr(self.levels), dtype=torch.float64)).to(torch.float64)

    # the teacher's process and parameterisation, unchanged
    def level_from_t(self, t):
        return self.base.level_from_t(t)

    def level_from_nsr(self, nsr):
        return self.base.level_from_nsr(nsr)

    def scales(self, level):
        return self.base.scales(level)

    def precondition(self, level):
        return self.base.precondition(level)

    def target(self, x0, eps, level):
        return self.base.target(x0, eps, level)

    def boundaries(self, steps: int | None = None) -> list[int]:
        """Grid indices s_0 = 0 < … < s_K = N of the K = ``steps`` segments (default: the distilled K)."""
        steps = self.default_steps["consistency"] if steps is None else int(steps)
        if not 1 <= steps <= self.levels:
            raise ValueError(f"consistency sampling needs 1 <= steps <= {self.levels} (the grid), got {steps}")
        return [round(k * self.levels / steps) for k in range(steps)] + [self.levels]

    def segment_end(self, n: torch.Tensor) -> torch.Tensor:
        """The end s_{k+1} of the segment that holds interval n (n → n + 1), per element of ``n``."""
        b = torch.tensor(self.boundaries()[1:], device=n.device)
        return b[torch.searchsorted(b, n, right=True)]

    def jump(self, x, d, lv, lv_e, per_token=None):
        """The DDIM jump a_e·D + (b_e/b)·(x − a·D) from level ℓ to ℓ_e with denoised D (float64)."""
        rep = per_token or (lambda v: v)
        a, b = (rep(v) for v in self.scales(lv))
        a_e, b_e = (rep(v) for v in self.scales(lv_e))
        r = b_e / b
        return r * x.double() + (a_e - a * r) * d.double()

    def plan(self, sampler: str | None = None, steps: int | None = None) -> FormulationPlan:
        """Multistep consistency sampling (module doc): the distilled K evaluations; other K are refused,
        because the segments a student is consistent on are those it was distilled for."""
        sampler = self.check_sampler(sampler or self.default_sampler)
        k_trained = self.default_steps[sampler]
        if steps is not None and int(steps) != k_trained:
            raise ValueError(
                f"this student was distilled for {k_trained} evaluations, not {steps} (distill another for {steps})"
            )
        idx = self.boundaries()
        levels = [float(self.grid[i]) for i in idx]
        coefs, c_in, c_noise = [], [], []
        for lv, lv_e in zip(levels[:-1], levels[1:]):
            alpha, sigma = self.op_alpha_sigma(lv)
            a, b = (float(v) for v in self.scales(torch.tensor(lv, dtype=torch.float64)))
            a_e, b_e = (float(v) for v in self.scales(torch.tensor(lv_e, dtype=torch.float64)))
            coefs.append((alpha, sigma, b_e / b, a_e - a * b_e / b, 0.0, 0.0))
            p = self.precondition(torch.tensor(lv, dtype=torch.float64))
            c_in.append(float(p.c_in))
            c_noise.append(float(p.c_noise))
        init_std = float(self.scales(torch.tensor(levels[0], dtype=torch.float64))[1])
        return FormulationPlan(
            f"{self.name}-consistency",
            tuple(levels[:-1]),
            tuple(coefs),
            objective=self.name,
            init_std=init_std,
            c_in=tuple(c_in),
            c_noise=tuple(c_noise),
        )
