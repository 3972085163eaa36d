"""The sampling scheme that makes value and floor comparable, and the headline record.

With N_real real and N_gen generated jets (each at most ``max_jets``), n = min(N_real // 2, N_gen)
(for several generated samples: the smallest N_gen). Two disjoint random halves A and B of n real
jets and, per generated sample, a random subset G of n jets are drawn. Every metric is computed as
value = metric(G, B) and floor = metric(A, B): the same code, sample sizes and reference B, so the
floor is what a perfect generator would score at this statistics and ratio ≈ 1 (coverage: ≈ 1
too, lower is worse) means indistinguishable. Subsets (hit and image classifiers, EMD pairs) are
the first k jets of A, B, G, which are in random order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e2econd.errors import E2EInputError
from e2econd.evaluate import metrics as M


@dataclass
class Halves:
    n: int
    A: np.ndarray
    B: np.ndarray
    G: list[np.ndarray]


def draw(n_real: int, n_gens: list[int], seed: int, *, where=None) -> Halves:
    """A, B (disjoint real halves) and one G per generated sample, each of n jets, random order."""
    n = min([n_real // 2, *n_gens])
    if n < 10:
        raise E2EInputError(
            f"too few jets to compare: {n_real} real (need >= 20), {min(n_gens)} generated (need >= 10)", path=where
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_real)
    return Halves(n, perm[:n], perm[n : 2 * n], [rng.permutation(g)[:n] for g in n_gens])


def run(families: dict, x, ref, ctx, timing: dict | None = None, tag: str = "") -> dict:
    """Run every family on (x, ref): {metric name: stat}; per-family seconds into ``timing``."""
    import time

    out = {}
    for fam, fn in families.items():
        t = time.perf_counter()
        out.update(fn(x, ref, ctx))
        if timing is not None:
            timing[f"{fam}{tag}"] = timing.get(f"{fam}{tag}", 0.0) + time.perf_counter() - t
    return out


def entries(values: dict, floors: dict) -> dict:
    """Metric records (value, value_err, floor, floor_err, ratio, pull) for every metric in both."""
    out = {}
    for name, v in values.items():
        f = floors[name]
        e = M.entry(v["value"], v["err"], f["value"], f["err"])
        if "spread" in v:
            e["spread"], e["floor_spread"] = v["spread"], f["spread"]
        out[name] = e
    return out


#: headline name -> metric name (``<c>`` in tracks, ecal, hcal). Scripts rely on these names.
HEADLINE = {
    "auc_image": "classifier_auc_image",
    "auc_highlevel": "classifier_auc_hl",
    "auc_hits": "classifier_auc_hits",
    "cov_calo": "cov_calo",
    "mmd_calo": "mmd_calo",
    "w1_tau21": "w1_tau21",
    "w1_tau32": "w1_tau32",
    **{f"w1_core_energy_{c}": f"w1_core005_{c}" for c in ("tracks", "ecal", "hcal")},
    **{f"w1_energy_{c}": f"w1_E_{c}" for c in ("tracks", "ecal", "hcal")},
    "w1_mass": "w1_mass_calo",
    "w1_hcal_central": "w1_hcal_central",
    "fd_highlevel": "fd_highlevel",
    "kd_highlevel": "kd_highlevel",
}


def headline(metrics: dict) -> dict:
    """{headline name: {value, error, floor, floor_error, ratio}} of the metrics present."""
    out = {}
    for name, src in HEADLINE.items():
        e = metrics.get(src)
        if e is None:
            continue
        out[name] = {
            "value": e["value"],
            "error": e["value_err"],
            "floor": e["floor"],
            "floor_error": e["floor_err"],
            "ratio": e["ratio"],
        }
    return out
