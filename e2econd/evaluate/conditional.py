"""Conditional fidelity: W1 in bins of requested pt and response curves (mean, std) vs pt and m0."""

from __future__ import annotations

import numpy as np

from e2econd.evaluate import metrics as M
from e2econd.evaluate.store import Sample


def conditions_ok(*samples: Sample) -> bool:
    """True when every sample carries valid (finite, positive) pt and m0 conditions."""
    return all(len(a) > 0 and np.isfinite(a).all() and (a > 0).all() for s in samples for a in (s.pt, s.m0))


def _w1_entry(u_val, u_floor, ref, n_boot, rng) -> dict:
    v, ve = M.W1Bootstrap(u_val, ref).with_error(n_boot, rng)
    f, fe = M.W1Bootstrap(u_floor, ref).with_error(n_boot, rng)
    return M.entry(v, ve, f, fe)


def _bins(x, edges):
    return np.clip(np.digitize(x, edges[1:-1]), 0, len(edges) - 2)


def curves(real: Sample, gen: Sample, x_r, x_g, edges, qty) -> dict:
    """Mean and std per bin of ``x`` of each quantity name -> (feature, divisor attribute or None)."""
    res = {"edges": edges.tolist()}
    for who, xs, s in (("real", x_r, real), ("generated", x_g, gen)):
        bins = _bins(xs, edges)
        cur = {}
        for name, (num, den) in qty.items():
            v = s.feats[num] / (getattr(s, den) if den else 1.0)
            sel = [bins == b for b in range(len(edges) - 1)]
            cur[name] = {
                "mean": [float(v[m].mean()) if m.any() else None for m in sel],
                "std": [float(v[m].std()) if m.any() else None for m in sel],
            }
        cur["x"] = [float(xs[m].mean()) if m.any() else None for m in sel]
        cur["n"] = [int(m.sum()) for m in sel]
        res[who] = cur
    return res


def conditional(real: Sample, gen: Sample, A, B, G, n_bins: int, n_boot: int, rng) -> dict | None:
    """W1 of E_calo and mass in quantile bins of real pt (value G vs B, floor A vs B) and response curves."""
    if n_bins < 1 or not all(np.isfinite(s.pt).all() and (s.pt > 0).all() for s in (real, gen)):
        return None
    out: dict = {"pt_bins": [], "response_vs_pt": {}, "response_vs_m0": {}}
    edges = np.unique(np.quantile(real.pt, np.linspace(0, 1, n_bins + 1)))
    out["pt_edges"] = edges.tolist()
    bin_r, bin_g = _bins(real.pt, edges), _bins(gen.pt, edges)
    for b in range(len(edges) - 1):
        a_, b_, g_ = A[bin_r[A] == b], B[bin_r[B] == b], G[bin_g[G] == b]
        rec = {
            "pt_lo": float(edges[b]),
            "pt_hi": float(edges[b + 1]),
            "n_gen": int(len(g_)),
            "n_ref": int(len(b_)),
            "n_floor": int(len(a_)),
        }
        if min(len(a_), len(b_), len(g_)) >= 5:
            for name in ("E_calo", "mass_calo"):
                f_r, f_g = real.feats[name], gen.feats[name]
                rec[f"w1_{name}"] = _w1_entry(f_g[g_], f_r[a_], f_r[b_], n_boot, rng)
        out["pt_bins"].append(rec)
    qty_pt = {"E_calo/pt": ("E_calo", "pt"), "E_all/pt": ("E_all", "pt"), "mass_calo": ("mass_calo", None)}
    out["response_vs_pt"] = curves(real, gen, real.pt, gen.pt, edges, qty_pt)
    if conditions_ok(real, gen) and np.ptp(real.m0) > 0:
        medges = np.unique(np.quantile(real.m0, np.linspace(0, 1, n_bins + 1)))
        if len(medges) > 2:
            qty_m = {"mass_calo": ("mass_calo", None), "mass_calo/m0": ("mass_calo", "m0")}
            out["response_vs_m0"] = curves(real, gen, real.m0, gen.m0, medges, qty_m)
    return out
