"""The interface every diffusion formulation implements, its noise-level densities and its sampler plans.

A formulation fixes the forward process ``x = a(ℓ)·x0 + b(ℓ)·ε`` in its own noise level ℓ (vpred: cosine
time t ∈ [0, 1]; edm: σ; flow: t ∈ [0, 1]), the network's preconditioning (Karras et al. 2022, eq. 7)

    D(x, ℓ) = c_skip(ℓ)·x + c_out(ℓ)·F(c_in(ℓ)·x, c_noise(ℓ)),

the regression target of the raw network output F and its weight. Because the fused update op forms
``x̂0 = α·x − σ·v``, passing ``α = c_skip``, ``σ = −c_out`` and ``v = F`` (the *raw* network output, no
transform) makes the op's x̂0 the denoiser D of every formulation; a sampler step is then one op call
with ``out = c_x·x + c_0·x̂0 + c_p·x0_prev`` (:mod:`e2econd.diffusion.formulations.ode`).

Noise levels are drawn per jet from stratified uniforms u (``u0 + i/n mod 1``, shuffled: the draw of
``e2econd.batching.draw``) pushed through the chosen density: ``uniform_t`` (t = u in the formulation's
time), ``lognormal_sigma`` (ln σ̃ = P_mean + P_std·Φ⁻¹(u), σ̃ = b/a the noise-to-signal ratio, i.e. EDM's
σ) or ``logit_normal_t`` (logit t = m + s·Φ⁻¹(u)). Each formulation maps t or σ̃ to its level.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from e2econd.diffusion.samplers import SamplerPlan
from e2econd.errors import E2EInputError

DENSITIES = ("uniform_t", "lognormal_sigma", "logit_normal_t")

__all__ = ["DENSITIES", "Formulation", "FormulationPlan", "NoiseLevelDensity", "Precond", "per_hit"]


@dataclass(frozen=True)
class NoiseLevelDensity:
    """Per-jet noise-level density: ``name`` in DENSITIES; (p_mean, p_std) of ln σ̃; (m, s) of logit t."""

    name: str = "uniform_t"
    p_mean: float = -1.2
    p_std: float = 1.2
    m: float = 0.0
    s: float = 1.0

    def __post_init__(self):
        if self.name not in DENSITIES:
            raise E2EInputError(f"unknown noise-level density '{self.name}' (choose from {', '.join(DENSITIES)})")
        if not (self.p_std > 0 and self.s > 0):
            raise E2EInputError(f"noise-level density widths must be > 0, got p_std={self.p_std}, s={self.s}")

    def draw(self, gen: torch.Generator, n: int, stratified: bool = True) -> tuple[str, torch.Tensor]:
        """``("t", t)`` or ``("nsr", σ̃)``: n float64 values from stratified (or i.i.d.) uniforms."""
        if stratified:  # the same generator calls, in the same order, as e2econd.batching.draw
            u0 = torch.rand(1, generator=gen, dtype=torch.float64)
            u = (u0 + torch.arange(n, dtype=torch.float64) / max(n, 1)) % 1.0
            u = u[torch.randperm(n, generator=gen)]
        else:
            u = torch.rand(n, generator=gen, dtype=torch.float64)
        return self.transform(u)

    def transform(self, u: torch.Tensor) -> tuple[str, torch.Tensor]:
        """``("t", t)`` or ``("nsr", σ̃)`` of uniforms u ∈ [0, 1) (the inverse-CDF map of the density)."""
        u = torch.as_tensor(u)
        if self.name == "uniform_t":
            return "t", u
        z = torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12))
        if self.name == "lognormal_sigma":
            return "nsr", torch.exp(self.p_mean + self.p_std * z)
        return "t", torch.sigmoid(self.m + self.s * z)


@dataclass(frozen=True)
class Precond:
    """c_skip, c_out, c_in, c_noise at some noise levels (tensors shaped like the levels)."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


@dataclass(frozen=True)
class FormulationPlan(SamplerPlan):
    """A :class:`SamplerPlan` with one row per network evaluation: ``times`` are the formulation's noise
    levels ℓ (a 2nd-order step evaluates twice), ``coefs`` the fused op's ``[α, σ, c_x, c_0, c_p, c_n]``,
    ``c_in``/``c_noise`` the network's input scale and noise input per evaluation, ``init_std`` the std
    of the starting noise x ~ N(0, init_std²). ``e2econd.diffusion.samplers.run_plan`` runs it, calling
    the raw network at (c_in·x, c_noise) of every row."""

    objective: str = "vpred"
    init_std: float = 1.0
    c_in: tuple[float, ...] = ()
    c_noise: tuple[float, ...] = ()

    @property
    def nfe(self) -> int:
        """Number of network evaluations (one per row)."""
        return len(self.times)


def per_hit(level: torch.Tensor, cu_seqlens: torch.Tensor, n_hits: int | None = None) -> torch.Tensor:
    """Per-jet levels (B,) -> per-hit column (total, 1) of a packed batch with offsets ``cu_seqlens``."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(level.to(cu_seqlens.device), lengths, output_size=n_hits)[:, None]


class Formulation(ABC):
    """One diffusion formulation (module doc). Levels broadcast against x0 (use :func:`per_hit`)."""

    name: str = ""
    samplers: tuple[str, ...] = ()
    default_sampler: str = ""
    default_steps: Mapping[str, int] = MappingProxyType({})  # sampler -> default number of steps
    default_density: str = "uniform_t"  # the density used when none is given
    weighted: bool = False  # True: loss_weight(ℓ) is not 1 and the loss applies it

    def __init__(self, density: NoiseLevelDensity | None = None):
        self.density = density or NoiseLevelDensity(self.default_density)

    # ---- noise levels
    @abstractmethod
    def level_from_t(self, t: torch.Tensor) -> torch.Tensor:
        """The level ℓ of time t ∈ [0, 1] (the formulation's own t; edm: the cosine VP time)."""

    @abstractmethod
    def level_from_nsr(self, nsr: torch.Tensor) -> torch.Tensor:
        """The level ℓ whose noise-to-signal ratio b(ℓ)/a(ℓ) is ``nsr`` (EDM's σ)."""

    def sample_noise_level(self, gen: torch.Generator, n: int, stratified: bool = True) -> torch.Tensor:
        """n per-jet levels (float32) drawn from ``self.density``."""
        kind, val = self.density.draw(gen, n, stratified)
        level = self.level_from_t(val) if kind == "t" else self.level_from_nsr(val)
        return level.to(torch.float32)

    def level_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """Per-jet levels (float32) of uniforms u (the training draw's stratified ``t``) under ``self.density``.

        ``uniform_t`` of vpred returns float32 u itself (exact through float64), so today's objective sees
        exactly the draw it always did."""
        kind, val = self.density.transform(torch.as_tensor(u, dtype=torch.float64))
        level = self.level_from_t(val) if kind == "t" else self.level_from_nsr(val)
        return level.to(torch.float32)

    # ---- forward process and training target
    @abstractmethod
    def scales(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) of the forward process x = a·x0 + b·ε."""

    def corrupt(self, x0: torch.Tensor, eps: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The noisy state x = a·x0 + b·ε that the sampler integrates (network input: c_in·x)."""
        a, b = self.scales(level)
        return a * x0 + b * eps

    @abstractmethod
    def precondition(self, level: torch.Tensor) -> Precond:
        """c_skip, c_out, c_in, c_noise of D(x) = c_skip·x + c_out·F(c_in·x, c_noise)."""

    @abstractmethod
    def target(self, x0: torch.Tensor, eps: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The regression target of F: the F for which D(corrupt(x0, eps)) = x0."""

    def loss_weight(self, level: torch.Tensor) -> torch.Tensor:
        """w(ℓ) of the loss w·(F − target)² (1 for all three: EDM's λ(σ)·c_out² = 1)."""
        return torch.ones_like(torch.as_tensor(level))

    def network_input(self, x: torch.Tensor, level, cu_seqlens: torch.Tensor | None = None):
        """(c_in·x, c_noise): what the raw network F receives at state x and level ℓ.

        ``level`` is a scalar (sampler), broadcasts against x, or is per jet (B,) with the packed
        layout's ``cu_seqlens`` (c_in is then repeated per hit; c_noise stays per jet).
        """
        p = self.precondition(torch.as_tensor(level, dtype=torch.float64))
        c_in = p.c_in if cu_seqlens is None else per_hit(p.c_in, cu_seqlens, x.shape[0])
        return x * c_in.to(device=x.device, dtype=x.dtype), p.c_noise

    def denoised(self, x: torch.Tensor, f: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """D = c_skip·x + c_out·F (what the fused op computes as α·x − σ·v with α, σ = op_alpha_sigma)."""
        p = self.precondition(level)
        return p.c_skip * x + p.c_out * f

    def op_alpha_sigma(self, level) -> tuple[float, float]:
        """(α, σ) of the op row at level ℓ: (c_skip, −c_out), so that α·x − σ·F = D."""
        p = self.precondition(torch.as_tensor(level, dtype=torch.float64))
        return float(p.c_skip), float(-p.c_out)

    # ---- samplers
    def check_sampler(self, sampler: str) -> str:
        """``sampler`` if this formulation offers it, else ``E2EInputError`` (key 'sampler')."""
        if sampler not in self.samplers:
            raise E2EInputError(
                f"objective '{self.name}' has no sampler '{sampler}' (choose from {', '.join(self.samplers)})",
                key="sampler",
            )
        return sampler

    @abstractmethod
    def plan(self, sampler: str | None = None, steps: int | None = None) -> FormulationPlan:
        """The plan of ``sampler`` (default: ``default_sampler``) with ``steps`` solver steps."""

    def nfe(self, sampler: str, steps: int) -> int:
        """Network evaluations of ``steps`` steps of ``sampler``."""
        return self.plan(sampler, steps).nfe

    def steps_for_nfe(self, sampler: str, nfe: int) -> int:
        """The most steps of ``sampler`` whose evaluations do not exceed ``nfe`` (at least 1)."""
        steps = 1
        while self.nfe(sampler, steps + 1) <= nfe:
            steps += 1
        return steps

    def _finish(self, name: str, levels, rows, init_std: float) -> FormulationPlan:
        """Plan from per-evaluation levels and (c_x, c_0, c_p) rows (deterministic: c_n = 0)."""
        coefs, c_in, c_noise = [], [], []
        for lv, (cx, c0, cp) in zip(levels, rows):
            a, s = self.op_alpha_sigma(lv)
            coefs.append((a, s, float(cx), float(c0), float(cp), 0.0))
            p = self.precondition(torch.tensor(lv, dtype=torch.float64))
            c_in.append(float(p.c_in))
            c_noise.append(float(p.c_noise))
        return FormulationPlan(
            name,
            tuple(float(lv) for lv in levels),
            tuple(coefs),
            objective=self.name,
            init_std=float(init_std),
            c_in=tuple(c_in),
            c_noise=tuple(c_noise),
        )
