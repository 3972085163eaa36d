"""Metric families: each compares a sample ``x`` with the real reference ``ref`` (both :class:`Side`).

Every family is a function ``family(x, ref, ctx) -> {metric name: stat}`` with ``stat`` a dict
holding at least ``value`` and ``err`` (plus details). :mod:`.scheme` calls it twice, for the
value (x = generated G, ref = real B) and for the floor (x = real A, ref = real B), so one code
path serves both and a comparison of several generated samples shares one floor.

Families: W1 of every per-jet feature (:func:`w1_features`), per-hit energy (:func:`hit_energy`),
energy-weighted per-hit positions Δη, Δφ, ΔR (:func:`hit_positions`, the W1p analogue), Fréchet
and kernel distances on high-level features (:func:`distances`), nearest-neighbour coverage / MMD
(:func:`nearest`) and the thesis's mean-pair EMD (:func:`thesis_emd`). Classifiers live in
:mod:`.classifiers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from e2econd.data.geometry import CENTRE, CHANNELS, PIXEL
from e2econd.evaluate import features as F
from e2econd.evaluate import metrics as M
from e2econd.evaluate import nearest as NN
from e2econd.evaluate.store import ALL_FEATURES, Sample


@dataclass
class Side:
    """Jets ``idx`` (random order; the first k form a random subset) of one sample."""

    sample: Sample
    idx: np.ndarray
    label: str = ""


@dataclass
class Context:
    """Options and shared state of one evaluation."""

    rng: np.random.Generator
    n_boot: int = 20
    seeds: tuple = (0, 1, 2)
    R: float = 0.8
    threads: int = 2
    hit_jets: int = 2000
    image_jets: int = 4000
    emd_pairs: int = 500
    emd_pool: int = F.EMD_POOL
    nn_eval: int = 100
    nn_batches: int = 10
    conditioned: bool = True
    hl_scale: np.ndarray | None = None
    progress: object = None  # callable(n) advancing the EMD progress bar, or None
    bar_enabled: bool | None = False  # progress bars of the classifiers
    cache: dict = field(default_factory=dict)


def stat(value, err, **extra) -> dict:
    return {"value": float(value), "err": float(err), **extra}


def w1_features(x: Side, ref: Side, ctx: Context) -> dict:
    """W1 (bootstrap error) of every per-jet feature: ``w1_<feature>``."""
    out = {}
    for name in ALL_FEATURES:
        bs = M.W1Bootstrap(x.sample.feats[name][x.idx], ref.sample.feats[name][ref.idx])
        out[f"w1_{name}"] = stat(*bs.with_error(ctx.n_boot, ctx.rng))
    return out


def hit_energy(x: Side, ref: Side, ctx: Context) -> dict:
    """W1 of the per-hit energies (all non-zero hits; HCAL towers) of ``hit_jets`` jets, bootstrap over jets."""
    k = min(ctx.hit_jets, len(x.idx), len(ref.idx))
    out = {}
    for c, name in enumerate(CHANNELS):
        ju, *_, eu = x.sample.hits[c].gather(x.idx[:k])
        jv, *_, ev = ref.sample.hits[c].gather(ref.idx[:k])
        out[f"w1_hit_energy_{name}"] = stat(*M.W1Bootstrap(eu, ev, ju, jv).with_error(ctx.n_boot, ctx.rng))
    return out


#: supports of the lattice position distributions: Δη/Δφ index 0..124, ΔR² in pixel units 0..2·62²
_ETA_SUPPORT = (np.arange(125) - CENTRE) * PIXEL
_R_SUPPORT = np.sqrt(np.arange(2 * CENTRE**2 + 1)) * PIXEL


def _position_bins(side: Side, channel: str):
    j, de, dp, e = side.sample.flat_deposits(side.idx, channel)
    tot = np.bincount(j, weights=e, minlength=len(side.idx))
    w = e / tot[j]  # each jet's channel weighs 1: shapes, not energy scales
    ie, ip = np.rint(de / PIXEL).astype(np.int64), np.rint(dp / PIXEL).astype(np.int64)
    return j, w, {"deta": ie + CENTRE, "dphi": ip + CENTRE, "dR": ie**2 + ip**2}


def hit_positions(x: Side, ref: Side, ctx: Context) -> dict:
    """W1 of the energy-weighted per-hit Δη, Δφ, ΔR distributions per channel (each jet normalised to 1).

    Positive deposits (crystals; HCAL towers at their centre), all jets; exact on the pixel lattice.
    ``w1_hit_dR_<c>`` compares the normalised radial energy profiles.
    """
    out = {}
    for c in CHANNELS:
        ju, wu, bu = _position_bins(x, c)
        jv, wv, bv = _position_bins(ref, c)
        for q, support in (("deta", _ETA_SUPPORT), ("dphi", _ETA_SUPPORT), ("dR", _R_SUPPORT)):
            lw = M.LatticeW1(support, bu[q], wu, ju, len(x.idx), bv[q], wv, jv, len(ref.idx))
            out[f"w1_hit_{q}_{c}"] = stat(*lw.with_error(ctx.n_boot, ctx.rng))
    return out


def _hl(side: Side, ctx: Context) -> np.ndarray:
    return F.hl_matrix(side.sample.feats, side.idx) / ctx.hl_scale


def distances(x: Side, ref: Side, ctx: Context) -> dict:
    """Fréchet (extrapolated to N → ∞, JetNet's batch/fit procedure) and kernel (median MMD², poly-4)
    distances on the 10 log-scaled high-level features, normalised by the real maximum."""
    a, b = _hl(x, ctx), _hl(ref, ctx)
    seed = int(ctx.rng.integers(1 << 31))
    fd, fde = M.fpd(a, b, seed=seed)
    kd, kde = M.kpd(a, b, batch_size=min(len(a), len(b), 2000), seed=seed + 1)
    return {"fd_highlevel": stat(fd, fde), "kd_highlevel": stat(kd, kde)}


def _nn_deposits(side: Side, channel: str, ctx: Context):
    key = (id(side.sample), len(side.idx), int(side.idx[0]) if len(side.idx) else -1, channel)
    if key not in ctx.cache:
        ctx.cache[key] = side.sample.top_deposits(side.idx, channel, NN.NN_DEPOSITS)
    return ctx.cache[key]


def nearest(x: Side, ref: Side, ctx: Context) -> dict:
    """JetNet coverage (``cov_<c>``) and MMD (``mmd_<c>``, GeV) on the EMD of the hottest deposits."""
    out = {}
    for c in NN.NN_CHANNELS:
        r = NN.cov_mmd(
            _nn_deposits(ref, c, ctx),
            _nn_deposits(x, c, ctx),
            n_eval=ctx.nn_eval,
            n_batches=ctx.nn_batches,
            R=ctx.R,
            rng=ctx.rng,
            threads=ctx.threads,
            progress=ctx.progress,
        )
        out[f"cov_{c}"] = stat(r["cov"], r["cov_err"], batches=r["cov_batches"])
        out[f"mmd_{c}"] = stat(r["mmd"], r["mmd_err"], batches=r["mmd_batches"])
    return out


def _pooled_deposits(side: Side, k: int, pool: int) -> list[dict]:
    out = []
    for s in range(0, k, 256):
        imgs = side.sample.images(side.idx[s : min(k, s + 256)])
        out.extend(F.jet_deposits(img, pool) for img in imgs)
    return out


def thesis_emd(x: Side, ref: Side, ctx: Context) -> dict:
    """Thesis comparison: mean EMD over random (x, ref) jet pairs (``emd_<c>``, GeV; all deposits,
    Tracks/ECAL in ``emd_pool``² blocks). Not a two-sample distance: a generator that always emits a
    typical jet minimises it, so it rewards mode collapse; kept only to compare with the thesis."""
    from e2econd.evaluate.emd import emd_pairs

    k = min(ctx.emd_pairs, len(x.idx), len(ref.idx))
    dx, dr = _pooled_deposits(x, k, ctx.emd_pool), _pooled_deposits(ref, k, ctx.emd_pool)
    out = {}
    for c in F.EMD_CHANNELS:
        v = emd_pairs([d[c] for d in dx], [d[c] for d in dr], ctx.R, ctx.threads, ctx.progress)
        err = v.std(ddof=1) / math.sqrt(k) if k > 1 else float("nan")
        out[f"emd_{c}"] = stat(v.mean(), err, spread=float(v.std()), values=v)
    return out


FAMILIES = {
    "w1": w1_features,
    "hit_energy": hit_energy,
    "hit_positions": hit_positions,
    "distances": distances,
    "nearest": nearest,
    "thesis_emd": thesis_emd,
}
