"""Evaluation plots (matplotlib, Agg backend, PNG): real in black, generated in red.

Mean images (log colour scale) and their ratio, a grid of random jets, total-energy histograms
with a generated/real ratio panel and ±20 % band (thesis Fig. 6.6), EMD histograms (Fig. 6.7),
multiplicity, per-hit energy, radial profile, width, mass, energy fractions, N-subjettiness, core
energies, readout fingerprints, response curves.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from e2econd.evaluate import features as F  # noqa: E402

LABELS = {"tracks": "Tracks", "ecal": "ECAL", "hcal": "HCAL", "calo": "ECAL+HCAL", "all": "all channels"}
EXTENT = [-62.5 * F.PIXEL, 62.5 * F.PIXEL, -62.5 * F.PIXEL, 62.5 * F.PIXEL]  # Δφ (x), Δη (y)
REAL_KW = {"color": "black", "label": "real"}
GEN_KW = {"color": "tab:red", "label": "generated"}


def _save(fig, out: Path, name: str) -> str:
    fig.savefig(out / name, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return name


def _hist_ratio(ax, rax, r, g, bins, xlabel, logx=False, logy=False, counts=False):
    """Normalised histograms of real r and generated g (or precomputed counts) with gen/real ratio panel."""
    if counts:
        hr, hg = np.asarray(r, float), np.asarray(g, float)
    else:
        hr = np.histogram(r, bins)[0].astype(float)
        hg = np.histogram(g, bins)[0].astype(float)
    sr, sg = max(hr.sum(), 1.0), max(hg.sum(), 1.0)
    dr, dg = hr / sr, hg / sg
    ax.stairs(dr, bins, **REAL_KW)
    ax.stairs(dg, bins, **GEN_KW)
    centres = 0.5 * (bins[1:] + bins[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dr > 0, dg / dr, np.nan)
        err = np.where((hr > 0) & (hg > 0), ratio * np.sqrt(1 / np.maximum(hr, 1) + 1 / np.maximum(hg, 1)), np.nan)
    rax.axhspan(0.8, 1.2, color="0.85", label="±20%")
    rax.axhline(1.0, color="black", lw=0.8)
    rax.errorbar(centres, ratio, yerr=err, fmt="o", ms=2.5, color="tab:red", lw=0.8)
    rax.set_ylim(0.0, 2.0)
    rax.set_ylabel("gen / real")
    rax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of jets" if not counts else "fraction of hits")
    for a in (ax, rax):
        if logx:
            a.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.tick_params(labelbottom=False)


def _edges(r, g, n=40, q=(0.0, 0.999), log=False):
    both = np.concatenate([np.asarray(r, float), np.asarray(g, float)])
    both = both[np.isfinite(both)]
    if log:
        both = both[both > 0]
        if len(both) == 0:
            return np.geomspace(1e-3, 1.0, n + 1)
        lo, hi = np.quantile(both, [0.001, 0.999])
        return np.geomspace(max(lo, 1e-6), max(hi, lo * 10, 1e-5), n + 1)
    if len(both) == 0:
        return np.linspace(0, 1, n + 1)
    lo, hi = np.quantile(both, q)
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, n + 1)


def _feature_grid(out, real, gen, names, fname, xlabels, log=False, logy=False):
    fig, axes = plt.subplots(
        2,
        len(names),
        figsize=(4 * len(names), 4.5),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05},
    )
    for j, name in enumerate(names):
        r, g = real.feats[name], gen.feats[name]
        bins = _edges(r, g, log=log)
        _hist_ratio(axes[0, j], axes[1, j], r, g, bins, xlabels[j], logx=log, logy=logy)
        axes[0, j].set_title(name)
    return _save(fig, out, fname)


def mean_images(out, real, gen) -> str:
    """Per-channel mean image, real and generated (log colour), and the log2 ratio gen/real."""
    mr, mg = real.mean_image, gen.mean_image
    fig, axes = plt.subplots(3, 3, figsize=(12, 11))
    for c, ch in enumerate(F.CHANNELS):
        pos = np.concatenate([mr[c][mr[c] > 0], mg[c][mg[c] > 0]])
        vmax = pos.max() if len(pos) else 1.0
        vmin = max(np.quantile(pos, 0.01) if len(pos) else 1e-6, vmax * 1e-6)
        for row, (m, who) in enumerate(((mr, "real"), (mg, "generated"))):
            im = axes[row, c].imshow(
                np.where(m[c] > 0, m[c], np.nan),
                origin="lower",
                extent=EXTENT,
                norm=LogNorm(vmin=vmin, vmax=vmax),
                cmap="viridis",
            )
            axes[row, c].set_title(f"{LABELS[ch]} mean, {who}")
            fig.colorbar(im, ax=axes[row, c], label="GeV / pixel")
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = np.log2(np.where((mr[c] > 0) & (mg[c] > 0), mg[c] / mr[c], np.nan))
        im = axes[2, c].imshow(lr, origin="lower", extent=EXTENT, cmap="RdBu_r", vmin=-1, vmax=1)
        axes[2, c].set_title(f"{LABELS[ch]} log2(gen / real)")
        fig.colorbar(im, ax=axes[2, c])
    for a in axes.ravel():
        a.set_xlabel("Δφ")
        a.set_ylabel("Δη")
    return _save(fig, out, "mean_images.png")


def jet_grid(out, real, gen, idx_real, idx_gen) -> str:
    """Random real (top rows) and generated (bottom rows) jets, one column per channel, log colour."""
    rows = [("real", real, i) for i in idx_real] + [("generated", gen, i) for i in idx_gen]
    fig, axes = plt.subplots(max(len(rows), 1), 3, figsize=(9, 2.8 * max(len(rows), 1)), squeeze=False)
    for r, (who, s, i) in enumerate(rows):
        img = s.image(i)
        for c, ch in enumerate(F.CHANNELS):
            v = img[c]
            pos = v[v > 0]
            ax = axes[r, c]
            if len(pos):
                ax.imshow(
                    np.where(v > 0, v, np.nan),
                    origin="lower",
                    extent=EXTENT,
                    cmap="viridis",
                    norm=LogNorm(vmin=max(pos.min(), pos.max() * 1e-4), vmax=pos.max()),
                )
            ax.set_title(f"{who} #{int(i)} {LABELS[ch]}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, out, "jet_grid.png")


def emd_hist(out, emd_vals) -> str:
    """EMD distributions of generated-real and real-real pairs per channel (thesis Fig. 6.7)."""
    chans = list(emd_vals)
    fig, axes = plt.subplots(1, len(chans), figsize=(4 * len(chans), 3.5), squeeze=False)
    for j, c in enumerate(chans):
        g, r = emd_vals[c]["gen_real"], emd_vals[c]["real_real"]
        bins = _edges(r, g, n=30)
        ax = axes[0, j]
        ax.hist(r, bins, histtype="step", color="black", label=f"real-real, mean {r.mean():.3g}")
        ax.hist(g, bins, histtype="step", color="tab:red", label=f"gen-real, mean {g.mean():.3g}")
        ax.set_xlabel(f"EMD {LABELS[c]} (GeV)")
        ax.set_ylabel("pairs")
        ax.legend(fontsize=7)
    return _save(fig, out, "emd.png")


def hit_energy(out, real, gen, edges) -> str:
    """Per-hit energy distributions of all jets (positive hits, log bins)."""
    fig, axes = plt.subplots(2, 3, figsize=(12, 4.5), gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    for c, ch in enumerate(F.CHANNELS):
        _hist_ratio(
            axes[0, c],
            axes[1, c],
            real.hit_hist[c],
            gen.hit_hist[c],
            edges,
            f"{LABELS[ch]} hit E (GeV)",
            logx=True,
            logy=True,
            counts=True,
        )
        axes[0, c].set_title(
            f"{LABELS[ch]} per-hit energy (neg. hits: real {int(real.hit_neg[c])}, gen {int(gen.hit_neg[c])})",
            fontsize=8,
        )
    return _save(fig, out, "hit_energy.png")


def radial_profile(out, real, gen) -> str:
    """Mean energy per jet in annuli of R, per channel."""
    pr, pg = F.radial_profile(real.mean_image), F.radial_profile(gen.mean_image)
    e = F.R_EDGES
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for c, ch in enumerate(F.CHANNELS):
        axes[c].stairs(pr[c], e, **REAL_KW)
        axes[c].stairs(pg[c], e, **GEN_KW)
        axes[c].set_yscale("log")
        axes[c].set_xlabel("R = sqrt(Δη² + Δφ²)")
        axes[c].set_ylabel("mean E per jet in annulus (GeV)")
        axes[c].set_title(LABELS[ch])
        axes[c].legend(fontsize=8)
    return _save(fig, out, "radial_profile.png")


def response(out, cond) -> str | None:
    """Response curves: mean ± std of E_calo/pt and image mass vs requested pt (and mass vs m0)."""
    panels = [
        ("response_vs_pt", "E_calo/pt", "requested pt (GeV)"),
        ("response_vs_pt", "mass_calo", "requested pt (GeV)"),
    ]
    if cond.get("response_vs_m0"):
        panels.append(("response_vs_m0", "mass_calo", "requested m0 (GeV)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for j, (key, q, xl) in enumerate(panels):
        ax = axes[0, j]
        for who, kw in (("real", REAL_KW), ("generated", GEN_KW)):
            d = cond[key][who]
            x = np.array([np.nan if v is None else v for v in d["x"]], float)
            m = np.array([np.nan if v is None else v for v in d[q]["mean"]], float)
            s = np.array([np.nan if v is None else v for v in d[q]["std"]], float)
            ax.plot(x, m, "o-", ms=3, **kw)
            ax.fill_between(x, m - s, m + s, color=kw["color"], alpha=0.15)
        ax.set_xlabel(xl)
        ax.set_ylabel(q + (" (GeV)" if q == "mass_calo" else ""))
        ax.legend(fontsize=8)
    return _save(fig, out, "response.png")


def make_all(out, real, gen, emd_vals, cond, *, n_grid, grid_real, grid_gen, hit_edges) -> dict[str, str]:
    """Write every plot into directory ``out``; returns {title: file name}."""
    out = Path(out)
    p = {}
    p["Mean images per channel (log colour) and log2 ratio"] = mean_images(out, real, gen)
    if n_grid > 0:
        p["Random real and generated jets"] = jet_grid(out, real, gen, grid_real, grid_gen)
    p["Total energy per channel (ratio panel with ±20% band)"] = _feature_grid(
        out, real, gen, ["E_tracks", "E_ecal", "E_hcal", "E_calo", "E_all"], "energy.png", ["GeV"] * 5
    )
    p["EMD between jets"] = emd_hist(out, emd_vals)
    p["Hit multiplicity (pixels; HCAL towers)"] = _feature_grid(
        out, real, gen, ["N_tracks", "N_ecal", "N_hcal", "N_all"], "multiplicity.png", ["hits"] * 4
    )
    p["Per-hit energy"] = hit_energy(out, real, gen, hit_edges)
    p["Radial profile"] = radial_profile(out, real, gen)
    p["Energy-weighted radial width"] = _feature_grid(
        out, real, gen, ["width_tracks", "width_ecal", "width_hcal", "width_all"], "width.png", ["ΔR"] * 4
    )
    p["Image mass (ECAL+HCAL) and energy fractions"] = _feature_grid(
        out,
        real,
        gen,
        ["mass_calo", "frac_ecal_calo", "ratio_tracks_calo"],
        "mass_fractions.png",
        ["GeV", "E_ECAL / E_calo", "E_tracks / E_calo"],
    )
    p["N-subjettiness (calorimeter deposits, β = 1)"] = _feature_grid(
        out, real, gen, ["tau1", "tau2", "tau3", "tau21", "tau32"], "nsubjettiness.png", ["τ"] * 3 + ["ratio"] * 2
    )
    p["Core energy within R < 0.05 / 0.2 of the axis"] = _feature_grid(
        out, real, gen, ["core005_tracks", "core005_ecal", "core005_hcal", "core020_ecal"], "core.png", ["GeV"] * 4
    )
    p["Readout fingerprints"] = _feature_grid(
        out,
        real,
        gen,
        ["hcal_central", "n_ecal_towers", "frac_full_ecal_towers", "frac_isolated_ecal"],
        "fingerprints.png",
        ["hottest HCAL tower central", "ECAL towers", "fully read fraction", "isolated fraction"],
    )
    if cond:
        p["Response vs requested conditions (mean ± std)"] = response(out, cond)
    return p
