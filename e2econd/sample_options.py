"""Sampling options: everything that decides the jets ``e2econd sample`` generates (re-exported by
:mod:`e2econd.config`; the click defaults of ``e2econd sample`` are these fields)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from e2econd.errors import E2EInputError

# every sampler of some objective (which ones a run offers depends on its objective: e2econd.diffusion.formulations)
ALL_SAMPLERS = ("ddpm", "ddim", "dpmpp2m", "euler", "heun", "midpoint", "consistency")


@dataclass
class SampleOptions:
    """Everything that decides the jets ``e2econd sample`` generates (written into the output's provenance;
    the click defaults of ``e2econd sample`` are these)."""

    n: int | None = None
    pt: float | None = None
    mass: float | None = None
    label: int | None = None
    conditions_from: str | None = None
    channels: list[str] | None = None  # output channels (default: all channels of the model)
    sampler: str | None = None  # None: the run objective's default (vpred: dpmpp2m; edm, flow: heun)
    steps: int | None = None  # solver steps (None: the sampler's default); Heun / midpoint evaluate twice a step
    eta: float = 0.0  # DDIM stochasticity
    guidance: float = 1.0  # classifier-free guidance: v = v_uncond + w (v_cond - v_uncond); 1 = none
    seed: int = 0
    batch_size: int = 256  # jets per model call
    chunk_size: int = 4096  # jets per written chunk (bounded memory)
    device: str | None = None
    clip: float = 0.0  # clamp |x0_hat| in standardised units (0 = off)
    collisions: str = "move"  # two hits of a jet on one cell: "move" to the nearest free cell, or "sum"
    rescale: bool = True  # towers: scale each channel of a jet to the summary's energy sum (stage 1)
    presence: str = "count"  # towers: keep the summary's number of cells per channel ("count") or presence > 0 ("sign")
    knn: int = 32  # neighbours for drawing missing conditions
    cuda_graphs: bool | None = None  # CUDA: replay one captured network graph per step (None: on, unless
    #                                  $E2ECOND_CUDA_GRAPHS=0); eager fallback if capture fails; ignored on CPU

    def validate(self) -> SampleOptions:
        """The one check of the options (before any work): one-line ``E2EInputError`` naming the option."""
        if self.n is not None and self.n < 0:
            raise E2EInputError(f"--n {self.n}: must be >= 0", key="n")
        if self.guidance < 0 or not math.isfinite(self.guidance):
            raise E2EInputError(f"--guidance {self.guidance}: must be a finite number >= 0", key="guidance")
        if self.collisions not in ("move", "sum"):
            raise E2EInputError(f"--collisions {self.collisions!r}: choose move or sum", key="collisions")
        if self.presence not in ("count", "sign"):
            raise E2EInputError(f"--presence {self.presence!r}: choose count or sign", key="presence")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise E2EInputError("--batch-size and the chunk size must be >= 1", key="batch_size")
        if self.conditions_from is not None and any(v is not None for v in (self.pt, self.mass, self.label)):
            raise E2EInputError(
                "give either --conditions-from or fixed --pt/--mass/--label, not both", key="conditions"
            )
        if self.sampler is not None and self.sampler not in ALL_SAMPLERS:
            raise E2EInputError(
                f"unknown sampler '{self.sampler}' (choose from {', '.join(ALL_SAMPLERS)})", key="sampler"
            )
        if self.steps is not None and self.steps < 1:
            raise E2EInputError(f"--steps {self.steps}: must be >= 1", key="steps")
        return self
