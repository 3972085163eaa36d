"""Diffusion formulations (issue 17): ``vpred`` (cosine VP, v-target), ``edm`` (Karras et al. 2022) and
``flow`` (rectified flow), behind one interface (:class:`Formulation`) whose samplers are plans of the
fused update op (:class:`FormulationPlan`, run by ``e2econd.diffusion.samplers.run_plan``)."""

from __future__ import annotations

from e2econd.diffusion.formulations.base import (
    DENSITIES,
    Formulation,
    FormulationPlan,
    NoiseLevelDensity,
    Precond,
    per_hit,
)
from e2econd.diffusion.formulations.consistency import STUDENT_METHODS, ConsistencyStudent, grid_nsr
from e2econd.diffusion.formulations.edm import EDM, rho_schedule
from e2econd.diffusion.formulations.flow import Flow, flow_grid
from e2econd.diffusion.formulations.vpred import VPred, cosine_t_from_nsr
from e2econd.errors import E2EInputError

FORMULATIONS = {"vpred": VPred, "edm": EDM, "flow": Flow}

__all__ = [
    "DENSITIES",
    "STUDENT_METHODS",
    "ConsistencyStudent",
    "grid_nsr",
    "EDM",
    "FORMULATIONS",
    "Flow",
    "Formulation",
    "FormulationPlan",
    "NoiseLevelDensity",
    "Precond",
    "VPred",
    "cosine_t_from_nsr",
    "flow_grid",
    "from_config",
    "make_formulation",
    "per_hit",
    "rho_schedule",
]


def make_formulation(name: str, density: NoiseLevelDensity | None = None, **params) -> Formulation:
    """The formulation ``name`` ('vpred', 'edm', 'flow') with its own parameters (e.g. ``sigma_data``)."""
    if name not in FORMULATIONS:
        raise E2EInputError(f"unknown objective '{name}' (choose from {', '.join(FORMULATIONS)})", key="objective")
    return FORMULATIONS[name](density, **params)


def from_config(objective, schedule=None) -> Formulation:
    """The formulation of a run's ``objective`` config section (``e2econd.config.ObjectiveConfig``);
    ``schedule``: vpred's cosine schedule (the run's ``train.schedule_s``)."""
    name = objective.name
    if name not in FORMULATIONS:
        raise E2EInputError(f"unknown objective '{name}' (choose from {', '.join(FORMULATIONS)})", key="objective")
    density = NoiseLevelDensity(
        objective.density or FORMULATIONS[name].default_density,
        p_mean=objective.p_mean,
        p_std=objective.p_std,
        m=objective.logit_m,
        s=objective.logit_s,
    )
    form = VPred(density, schedule=schedule) if name == "vpred" else make_formulation(name, density)
    if getattr(objective, "student", ""):  # a distilled student: the teacher's formulation, its own sampler
        return ConsistencyStudent(form, objective.student_levels, objective.student_steps)
    return form
