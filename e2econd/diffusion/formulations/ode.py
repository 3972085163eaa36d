"""Euler, Heun and midpoint steps of the probability-flow ODE dx/dℓ = (x − D(x, ℓ))/ℓ as fused-op rows.

Both EDM (x = x0 + σ·ε, ℓ = σ; Karras et al. 2022, eq. 4 with s = 1) and rectified flow
(x = (1 − t)·x0 + t·ε, ℓ = t; u = (x − D)/t = E[ε − x0 | x]) have this ODE, so one set of
coefficients serves both. The op evaluates ``x̂0 = D`` (α = c_skip, σ = −c_out, v = raw F) and
``out = c_x·x + c_0·D + c_p·x0_prev``, where ``x0_prev`` is the previous evaluation's D (as in
``run_plan``). A step ℓ_t → ℓ_s has h = ℓ_s − ℓ_t < 0 and d = (x − D)/ℓ:

- Euler (1 evaluation): x_s = x + h·d_t = (ℓ_s/ℓ_t)·x + (1 − ℓ_s/ℓ_t)·D_1.
  Row at ℓ_t: c_x = ℓ_s/ℓ_t, c_0 = 1 − ℓ_s/ℓ_t, c_p = 0 (ℓ_s = 0: x_s = D_1).
- Heun (2 evaluations; Karras Alg. 1): predictor x' = Euler row above (its D_1 is returned), then
  x_s = x + (h/2)(d_t + d'_s). Since x' − D_1 = (ℓ_s/ℓ_t)(x − D_1) = ℓ_s·d_t, d_t = (x' − D_1)/ℓ_s and
  x_s = x' − (h/2)d_t + (h/2)d'_s = x' + (h/(2ℓ_s))·(D_1 − D_2).
  Corrector row at ℓ_s on state x': c_x = 1, c_0 = −h/(2ℓ_s), c_p = +h/(2ℓ_s) (x0_prev = D_1).
  A step landing on ℓ_s = 0 is Euler (d'_s undefined).
- Midpoint (2 evaluations): ℓ_m = (ℓ_t + ℓ_s)/2, x_m = Euler row to ℓ_m, x_s = x + h·d_m. With
  d_t = (x_m − D_1)/ℓ_m and x = x_m − (h/2)d_t:
  x_s = (1 + h/(2ℓ_m))·x_m − (h/ℓ_m)·D_2 + (h/(2ℓ_m))·D_1 (row at ℓ_m; also valid for ℓ_s = 0).

Every row's coefficients sum to 1 (a constant state with D = x stays put). Euler is order 1, Heun
and midpoint order 2 (tests/diffusion/test_formulations.py measures it on an exact Gaussian flow).
"""

from __future__ import annotations

SOLVERS = ("euler", "heun", "midpoint")

__all__ = ["SOLVERS", "ode_rows", "rho_schedule"]


def rho_schedule(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> list[float]:
    """Karras et al. eq. 5: ``steps`` levels from σ_max to σ_min (ρ-warped), then 0 (steps + 1 values)."""
    if steps < 1:
        raise ValueError(f"number of sampling steps must be >= 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if steps == 1:
        return [sigma_max, 0.0]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (steps - 1) * (b - a)) ** rho for i in range(steps)] + [0.0]


def _euler(lt: float, ls: float) -> tuple[float, float, float]:
    r = ls / lt
    return r, 1.0 - r, 0.0


def ode_rows(solver: str, grid: list[float]) -> tuple[list[float], list[tuple[float, float, float]]]:
    """(levels per evaluation, (c_x, c_0, c_p) per evaluation) of ``solver`` on ``grid`` ℓ_0 > … > ℓ_N ≥ 0."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown ODE solver '{solver}' (choose from {', '.join(SOLVERS)})")
    if any(not (a > b) for a, b in zip(grid[:-1], grid[1:])) or grid[-1] < 0 or len(grid) < 2:
        raise ValueError(f"ODE grid must decrease strictly to a level >= 0, got {grid}")
    levels: list[float] = []
    rows: list[tuple[float, float, float]] = []
    for lt, ls in zip(grid[:-1], grid[1:]):
        h = ls - lt
        if solver == "euler" or (solver == "heun" and ls == 0.0):
            levels.append(lt)
            rows.append(_euler(lt, ls))
        elif solver == "heun":
            levels += [lt, ls]
            rows += [_euler(lt, ls), (1.0, -h / (2 * ls), h / (2 * ls))]
        else:
            lm = 0.5 * (lt + ls)
            levels += [lt, lm]
            rows += [_euler(lt, lm), (1.0 + h / (2 * lm), -h / lm, h / (2 * lm))]
    return levels, rows
