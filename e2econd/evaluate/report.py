"""``evaluate(real, generated, out_dir)``: every metric with its real-vs-real floor, plots, report.

Sampling scheme (so that value and floor are comparable; the ratio is ≈ 1 for a perfect
generator): with N_real real and N_gen generated jets, n = min(N_real // 2, N_gen). Two
disjoint random halves A and B of n real jets each and a random subset G of n generated jets
are drawn. Every metric is computed as value = metric(G, B) and floor = metric(A, B), i.e.
on the same sample sizes against the same reference B. Bootstrap errors resample jets.
Generated jets beyond n enter the plots and the conditional/response curves, not the metrics.

Inputs are E2E files (Parquet/HDF5, via ``e2econd.data.e2e_io``) or hit directories (the
documented ``{split}.parquet`` hit table, rebuilt into images); several of each may be given
and are concatenated. They are streamed in chunks; only per-jet features, a running mean
image, per-hit energy histograms and a sparse copy of a random subset of jets (for EMD,
per-hit W1 and the jet grid) are kept.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from e2econd.errors import E2EInputError
from e2econd.evaluate import features as F
from e2econd.evaluate import metrics as M
from e2econd.utils import atomic_dir, bar_disabled, provenance

#: per-jet features compared with W1: all of them (see features.py for definitions)
W1_FEATURES = F.FEATURE_NAMES
#: log-spaced per-hit energy bins (GeV) for the histograms of all jets
HIT_EDGES = np.geomspace(1e-3, 1e4, 71)
#: hits per channel (most energetic first) fed to the hit-level classifier
HIT_CLASSIFIER_K = 64


# ----------------------------------------------------------------------------- reading
def _hit_table_path(path: Path, split: str) -> Path:
    p = path / f"{split}.parquet"
    if not p.is_file():
        raise E2EInputError(f"hit directory has no split '{split}' ({p.name} missing)", path=path)
    return p


def _count(path: Path, split: str) -> int:
    if path.is_dir():
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(_hit_table_path(path, split)).metadata.num_rows)
    if not path.exists():
        raise E2EInputError("no such file or directory", path=path)
    from e2econd.data.e2e_io import count_jets

    return int(count_jets(path))


_HIT_CHANNELS = ("tracks", "ecal", "hcal")


def _hit_batch_to_images(batch, path: Path, start: int) -> np.ndarray:
    """One Arrow record batch of the hit table -> images (n, 3, 125, 125) float32 (towers re-expanded)."""
    import pyarrow.compute as pc

    n = batch.num_rows
    npix = F.IMAGE_SIZE * F.IMAGE_SIZE
    img = np.zeros((n, 3, npix), dtype=np.float32)
    names = batch.schema.names
    for c, ch in enumerate(_HIT_CHANNELS):
        cols = {}
        for k in ("ieta", "iphi", "size", "e"):
            key = f"{ch}_{k}"
            if key not in names:
                raise E2EInputError("missing column", path=path, key=key)
            arr = batch.column(names.index(key))
            cols[k] = np.asarray(arr.flatten().to_numpy(zero_copy_only=False))
            if k == "e":
                lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False))
        jet = np.repeat(np.arange(n), lengths)
        ieta, iphi = cols["ieta"].astype(np.int64), cols["iphi"].astype(np.int64)
        size, e = cols["size"].astype(np.int64), cols["e"].astype(np.float64)
        bad = (
            ~np.isfinite(e)
            | (ieta < 0)
            | (iphi < 0)
            | (ieta + size > F.IMAGE_SIZE)
            | (iphi + size > F.IMAGE_SIZE)
            | ((size != 1) & (size != F.TOWER))
        )
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise E2EInputError(
                f"invalid hit (ieta={ieta[i]}, iphi={iphi[i]}, size={size[i]}, e={e[i]})",
                path=path,
                key=f"{ch}_e",
                row=start + int(jet[i]),
            )
        one = size == 1
        flat = [jet[one] * npix + ieta[one] * F.IMAGE_SIZE + iphi[one]]
        wts = [e[one]]
        if (~one).any():
            d = np.arange(F.TOWER)
            de, dp = np.meshgrid(d, d, indexing="ij")
            j5, i5, p5 = jet[~one], ieta[~one], iphi[~one]
            cells = (i5[:, None] + de.ravel()) * F.IMAGE_SIZE + (p5[:, None] + dp.ravel())
            flat.append((j5[:, None] * npix + cells).ravel())
            wts.append(np.repeat(e[~one] / (F.TOWER * F.TOWER), F.TOWER * F.TOWER))
        img[:, c] = np.bincount(np.concatenate(flat), weights=np.concatenate(wts), minlength=n * npix).reshape(n, npix)
    return img.reshape(n, 3, F.IMAGE_SIZE, F.IMAGE_SIZE)


def _iter_source(path: Path, split: str, chunk_size: int, stop: int):
    """Yield (images (n,3,125,125) float32, pt, m0, y) for the first ``stop`` jets of one input."""
    if path.is_dir():
        import pyarrow.parquet as pq

        tp = _hit_table_path(path, split)
        pf = pq.ParquetFile(tp)
        need = ["pt", "m0", "y"] + [f"{c}_{k}" for c in _HIT_CHANNELS for k in ("ieta", "iphi", "size", "e")]
        missing = [k for k in need if k not in pf.schema_arrow.names]
        if missing:
            raise E2EInputError("missing column", path=tp, key=missing[0])
        start = 0
        for batch in pf.iter_batches(batch_size=chunk_size, columns=need):
            if start >= stop:
                break
            if start + batch.num_rows > stop:
                batch = batch.slice(0, stop - start)
            imgs = _hit_batch_to_images(batch, tp, start)
            cols = [
                np.asarray(batch.column(k).to_numpy(zero_copy_only=False), dtype=np.float64) for k in ("pt", "m0", "y")
            ]
            yield imgs, cols[0], cols[1], cols[2]
            start += batch.num_rows
    else:
        from e2econd.data.e2e_io import iter_e2e

        for ch in iter_e2e(path, chunk_size, stop=stop):
            yield (
                ch.images,
                np.asarray(ch.pt, np.float64),
                np.asarray(ch.m0, np.float64),
                np.asarray(ch.y, np.float64),
            )


@dataclass
class Sample:
    """What is kept of one input sample after streaming it."""

    paths: list[str]
    n: int
    feats: dict[str, np.ndarray] = field(default_factory=dict)
    pt: np.ndarray | None = None
    m0: np.ndarray | None = None
    y: np.ndarray | None = None
    image_sum: np.ndarray = field(default_factory=lambda: np.zeros((3, F.IMAGE_SIZE, F.IMAGE_SIZE)))
    hit_hist: np.ndarray = field(default_factory=lambda: np.zeros((3, len(HIT_EDGES) - 1)))
    hit_neg: np.ndarray = field(default_factory=lambda: np.zeros(3))
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # index -> sparse image

    @property
    def mean_image(self) -> np.ndarray:
        return self.image_sum / max(self.n, 1)

    def image(self, i: int) -> np.ndarray:
        """Dense image (3, 125, 125) of a kept jet."""
        idx, val = self.kept[int(i)]
        out = np.zeros(3 * F.IMAGE_SIZE * F.IMAGE_SIZE, dtype=np.float32)
        out[idx] = val
        return out.reshape(3, F.IMAGE_SIZE, F.IMAGE_SIZE)


def scan(paths: list[Path], counts: list[int], split: str, chunk_size: int, keep: np.ndarray, bar=None) -> Sample:
    """Stream the inputs once: features of every jet, running sums, sparse copies of ``keep`` jets."""
    n_total = int(sum(counts))
    s = Sample(paths=[str(p) for p in paths], n=n_total)
    keep_mask = np.zeros(n_total, dtype=bool)
    keep_mask[keep] = True
    parts: dict[str, list[np.ndarray]] = {k: [] for k in F.FEATURE_NAMES}
    cols: dict[str, list[np.ndarray]] = {"pt": [], "m0": [], "y": []}
    offset = 0
    for path, cnt in zip(paths, counts):
        got = 0
        for imgs, pt, m0, y in _iter_source(path, split, chunk_size, cnt):
            n = len(imgs)
            f = F.image_features(imgs)
            for k in F.FEATURE_NAMES:
                parts[k].append(f[k])
            cols["pt"].append(pt)
            cols["m0"].append(m0)
            cols["y"].append(y)
            s.image_sum += imgs.sum(axis=0, dtype=np.float64)
            for c in range(2):
                v = imgs[:, c][imgs[:, c] != 0]
                s.hit_hist[c] += np.histogram(v, HIT_EDGES)[0]
                s.hit_neg[c] += np.count_nonzero(v < 0)
            t = F.hcal_towers(imgs[:, 2])
            t = t[t != 0]
            s.hit_hist[2] += np.histogram(t, HIT_EDGES)[0]
            s.hit_neg[2] += np.count_nonzero(t < 0)
            for j in np.flatnonzero(keep_mask[offset + got : offset + got + n]):
                flat = imgs[j].ravel()
                nz = np.flatnonzero(flat).astype(np.int32)
                s.kept[offset + got + int(j)] = (nz, flat[nz].copy())
            got += n
            if bar is not None:
                bar.update(n)
        if got != cnt:
            raise E2EInputError(f"expected {cnt} jets, read {got}", path=path)
        offset += cnt
    s.feats = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    s.pt, s.m0, s.y = (np.concatenate(cols[k]) if cols[k] else np.zeros(0) for k in ("pt", "m0", "y"))
    return s


# ----------------------------------------------------------------------------- metrics
def _w1_entry(u_val, u_floor, ref, n_boot, rng, u_groups=None, f_groups=None, ref_groups=None) -> dict:
    bv = M.W1Bootstrap(u_val, ref, u_groups, ref_groups)
    bf = M.W1Bootstrap(u_floor, ref, f_groups, ref_groups)
    v, ve = bv.with_error(n_boot, rng)
    f, fe = bf.with_error(n_boot, rng)
    return M.entry(v, ve, f, fe)


def _pooled_hits(sample: Sample, idx: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    vals: dict[str, list] = {c: [] for c in F.CHANNELS}
    grp: dict[str, list] = {c: [] for c in F.CHANNELS}
    for g, i in enumerate(idx):
        h = F.hit_energies(sample.image(i))
        for c in F.CHANNELS:
            vals[c].append(h[c])
            grp[c].append(np.full(len(h[c]), g))
    return {c: (np.concatenate(vals[c]), np.concatenate(grp[c])) for c in F.CHANNELS}


def _emd_sets(sample: Sample, idx: np.ndarray, pool: int) -> list[dict]:
    return [F.jet_deposits(sample.image(i), pool) for i in idx]


def _conditions_ok(real: Sample, gen: Sample) -> bool:
    """True when both samples carry valid (finite, positive) pt and m0 conditions."""
    return all(np.isfinite(a).all() and (a > 0).all() and len(a) > 0 for a in (real.pt, gen.pt, real.m0, gen.m0))


def _conditional(real: Sample, gen: Sample, A, B, G, n_bins: int, n_boot: int, rng) -> dict | None:
    """Metrics in bins of requested pt and response curves (mean, std) vs pt and m0."""
    ok_g = np.isfinite(gen.pt) & (gen.pt > 0)
    ok_r = np.isfinite(real.pt) & (real.pt > 0)
    if not ok_g.all() or not ok_r.all() or n_bins < 1:
        return None
    out: dict = {"pt_bins": [], "response_vs_pt": {}, "response_vs_m0": {}}
    edges = np.unique(np.quantile(real.pt[ok_r], np.linspace(0, 1, n_bins + 1)))
    out["pt_edges"] = edges.tolist()
    bin_r = np.clip(np.digitize(real.pt, edges[1:-1]), 0, len(edges) - 2)
    bin_g = np.clip(np.digitize(gen.pt, edges[1:-1]), 0, len(edges) - 2)
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
                rec[f"w1_{name}"] = _w1_entry(
                    gen.feats[name][g_], real.feats[name][a_], real.feats[name][b_], n_boot, rng
                )
        out["pt_bins"].append(rec)

    def curves(x_r, x_g, edges, qty):
        br = np.clip(np.digitize(x_r, edges[1:-1]), 0, len(edges) - 2)
        bg = np.clip(np.digitize(x_g, edges[1:-1]), 0, len(edges) - 2)
        res = {"edges": edges.tolist()}
        for who, xs, bins, s in (("real", x_r, br, real), ("generated", x_g, bg, gen)):
            cur = {}
            for name, (num, den) in qty.items():
                v = s.feats[num] / (getattr(s, den) if den else 1.0)
                mean, std, xc, cnt = [], [], [], []
                for b in range(len(edges) - 1):
                    sel = bins == b
                    cnt.append(int(sel.sum()))
                    mean.append(float(v[sel].mean()) if sel.any() else None)
                    std.append(float(v[sel].std()) if sel.any() else None)
                    xc.append(float(xs[sel].mean()) if sel.any() else None)
                cur[name] = {"mean": mean, "std": std}
            cur["x"], cur["n"] = xc, cnt
            res[who] = cur
        return res

    qty_pt = {"E_calo/pt": ("E_calo", "pt"), "E_all/pt": ("E_all", "pt"), "mass_calo": ("mass_calo", None)}
    out["response_vs_pt"] = curves(real.pt, gen.pt, edges, qty_pt)
    m0_ok = all(np.isfinite(a).all() and (a > 0).all() for a in (real.m0, gen.m0))
    if m0_ok and np.ptp(real.m0) > 0:
        medges = np.unique(np.quantile(real.m0, np.linspace(0, 1, n_bins + 1)))
        if len(medges) > 2:
            out["response_vs_m0"] = curves(
                real.m0, gen.m0, medges, {"mass_calo": ("mass_calo", None), "mass_calo/m0": ("mass_calo", "m0")}
            )
    return out


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="jet" if "read" in desc else "pair", leave=False,
        disable=bar_disabled(enabled), file=None
    )


def evaluate(
    real,
    generated,
    out_dir,
    *,
    split: str = "test",
    chunk_size: int = 256,
    emd_pairs: int = 500,
    R: float = 0.8,
    emd_pool: int = F.EMD_POOL,
    hit_jets: int = 1000,
    n_boot: int = 20,
    seed: int = 0,
    n_grid: int = 4,
    pt_bins: int = 5,
    classifier_seeds: int = 3,
    max_jets: int | None = None,
    threads: int = 2,
    overwrite: bool = False,
    progress: bool | None = True,
    plots: bool = True,
) -> dict:
    """Compare generated with real jets; write plots, ``report.md`` and ``metrics.json`` to ``out_dir``.

    ``real``/``generated``: a path or list of paths (E2E files or hit directories; hit
    directories are read at ``split``). ``emd_pairs``: random generated-real and real-real jet
    pairs for the EMD; ``emd_pool``: Tracks/ECAL pixels pooled per side for the EMD; ``hit_jets``:
    jets per sample whose hits enter the per-hit energy W1 and the hit-level classifier; ``n_boot``:
    bootstrap replicas; ``max_jets``: read at most this many jets per sample. Returns the
    metrics dictionary (also written to metrics.json).
    """
    t0 = time.perf_counter()
    real_paths = [Path(p) for p in ([real] if isinstance(real, (str, os.PathLike)) else real)]
    gen_paths = [Path(p) for p in ([generated] if isinstance(generated, (str, os.PathLike)) else generated)]
    if not real_paths or not gen_paths:
        raise E2EInputError("need at least one real and one generated input")
    config = {
        "real": [str(p) for p in real_paths],
        "generated": [str(p) for p in gen_paths],
        "split": split,
        "chunk_size": chunk_size,
        "emd_pairs": emd_pairs,
        "R": R,
        "emd_pool": emd_pool,
        "hit_jets": hit_jets,
        "n_boot": n_boot,
        "seed": seed,
        "n_grid": n_grid,
        "pt_bins": pt_bins,
        "classifier_seeds": classifier_seeds,
        "max_jets": max_jets,
    }
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise E2EInputError("output directory exists (use --overwrite)", path=out_dir)

    def counts_of(paths):
        cs, left = [], max_jets if max_jets is not None else math.inf
        for p in paths:
            c = int(min(_count(p, split), left))
            cs.append(c)
            left -= c
        return cs

    cnt_r, cnt_g = counts_of(real_paths), counts_of(gen_paths)
    N_r, N_g = sum(cnt_r), sum(cnt_g)
    n = min(N_r // 2, N_g)
    if n < 10:
        raise E2EInputError(
            f"too few jets to compare: {N_r} real (need >= 20), {N_g} generated (need >= 10)",
            path=real_paths[0] if N_r < 20 else gen_paths[0],
        )
    rng = np.random.default_rng(seed)
    perm_r = rng.permutation(N_r)
    A, B = np.sort(perm_r[:n]), np.sort(perm_r[n : 2 * n])
    G = np.sort(rng.permutation(N_g)[:n])
    # random (not sorted) order for the kept subsets
    Ar, Br, Gr = rng.permutation(A), rng.permutation(B), rng.permutation(G)
    n_pairs, n_hit = min(emd_pairs, n), min(hit_jets, n)
    K = max(n_pairs, n_hit, n_grid)
    keep_r = np.concatenate([Ar[:K], Br[:K]])
    keep_g = Gr[:K]

    timing = {}
    bar = _progress(N_r + N_g, "reading jets", progress)
    real_s = scan(real_paths, cnt_r, split, chunk_size, keep_r, bar)
    gen_s = scan(gen_paths, cnt_g, split, chunk_size, keep_g, bar)
    bar.close()
    timing["read_and_features"] = time.perf_counter() - t0

    t = time.perf_counter()
    metrics: dict[str, dict] = {}
    for name in W1_FEATURES:
        fr, fg = real_s.feats[name], gen_s.feats[name]
        metrics[f"w1_{name}"] = _w1_entry(fg[G], fr[A], fr[B], n_boot, rng)
    hits_a, hits_b, hits_g = (
        _pooled_hits(real_s, Ar[:n_hit]),
        _pooled_hits(real_s, Br[:n_hit]),
        _pooled_hits(gen_s, Gr[:n_hit]),
    )
    for c in F.CHANNELS:
        metrics[f"w1_hit_energy_{c}"] = _w1_entry(
            hits_g[c][0], hits_a[c][0], hits_b[c][0], n_boot, rng, hits_g[c][1], hits_a[c][1], hits_b[c][1]
        )
    timing["w1"] = time.perf_counter() - t

    t = time.perf_counter()
    hl_r, hl_g = F.hl_matrix(real_s.feats), F.hl_matrix(gen_s.feats)
    hl_r, hl_g = M.normalise_by(hl_r, hl_g)
    v, ve = M.fd_bootstrap(hl_g[G], hl_r[B], n_boot, rng)
    f, fe = M.fd_bootstrap(hl_r[A], hl_r[B], n_boot, rng)
    metrics["fd_hl"] = M.entry(v, ve, f, fe)
    v, ve = M.fpd(hl_g[G], hl_r[B], seed=seed)
    f, fe = M.fpd(hl_r[A], hl_r[B], seed=seed + 1)
    metrics["fpd_hl"] = M.entry(v, ve, f, fe)
    bs = min(n, 2000)
    v, ve = M.kpd(hl_g[G], hl_r[B], batch_size=bs, seed=seed)
    f, fe = M.kpd(hl_r[A], hl_r[B], batch_size=bs, seed=seed + 1)
    metrics["kpd_hl"] = M.entry(v, ve, f, fe)
    timing["fd_kpd"] = time.perf_counter() - t

    t = time.perf_counter()
    from e2econd.evaluate.classifier import classifier_auc

    seeds = tuple(range(seed, seed + max(classifier_seeds, 1)))
    # CaloChallenge style: the conditions (real: the jet's own pt, m0; generated: the requested ones) are
    # classifier inputs too, so that a wrong response p(x | pt) is detected, not only wrong marginals
    conditioned = _conditions_ok(real_s, gen_s)
    X_r, X_g = hl_r, hl_g
    cond_names: list[str] = []
    if conditioned:

        def with_conditions(s: Sample, hl: np.ndarray) -> np.ndarray:
            resp = [np.log1p(np.clip(s.feats[f"E_{c}"], 0.0, None)) - np.log1p(s.pt) for c in F.CHANNELS]
            return np.column_stack(
                [hl, np.log(s.pt), np.log(s.m0), *resp, np.log1p(s.feats["mass_calo"]) - np.log1p(s.m0)]
            )

        X_r, X_g = with_conditions(real_s, hl_r), with_conditions(gen_s, hl_g)
        cond_names = ["log pt", "log m0"] + [f"log E_{c}/pt" for c in F.CHANNELS] + ["log mass_calo/m0"]
    auc_v = classifier_auc(X_r[B], X_g[G], seeds=seeds)
    auc_f = classifier_auc(X_r[B], X_r[A], seeds=seeds)
    metrics["classifier_auc_hl"] = M.entry(auc_v["value"], auc_v["std"], auc_f["value"], auc_f["std"])
    classifier = {
        "value": auc_v["value"],
        "std": auc_v["std"],
        "values": auc_v["values"],
        "floor": auc_f["value"],
        "floor_std": auc_f["std"],
        "floor_values": auc_f["values"],
        "ratio": metrics["classifier_auc_hl"]["ratio"],
        "features": list(F.HL_FEATURES) + cond_names,
        "note": "held-out AUC of an MLP on high-level features, mean/std over seeds; 0.5 is perfect",
    }
    # hit level: a Deep Sets network on the (top-64 per channel) hits of the kept jets
    from e2econd.evaluate.classifier import hit_classifier_auc, hit_set_arrays

    def hit_sets(sample: Sample, idx: np.ndarray):
        return hit_set_arrays([F.jet_deposits(sample.image(i), pool=1) for i in idx], k=HIT_CLASSIFIER_K)

    def conds(sample: Sample, idx: np.ndarray):
        return np.column_stack([np.log(sample.pt[idx]), np.log(sample.m0[idx])]) if conditioned else None

    ia, ib, ig = Ar[:n_hit], Br[:n_hit], Gr[:n_hit]
    sets_a, sets_b, sets_g = hit_sets(real_s, ia), hit_sets(real_s, ib), hit_sets(gen_s, ig)
    hit_v = hit_classifier_auc(sets_b, sets_g, conds(real_s, ib), conds(gen_s, ig), seeds=seeds)
    hit_f = hit_classifier_auc(sets_b, sets_a, conds(real_s, ib), conds(real_s, ia), seeds=seeds)
    metrics["classifier_auc_hits"] = M.entry(hit_v["value"], hit_v["std"], hit_f["value"], hit_f["std"])
    classifier["hits"] = {
        "value": hit_v["value"], "std": hit_v["std"], "values": hit_v["values"],
        "floor": hit_f["value"], "floor_std": hit_f["std"], "floor_values": hit_f["values"],
        "jets_per_sample": int(len(ig)), "hits_per_channel": HIT_CLASSIFIER_K,
        "note": "Deep Sets on the jets' hits (Δη, Δφ, ΔR, log E, channel; the most energetic "
        f"{HIT_CLASSIFIER_K} per channel) + hit counts and energy sums per channel"
        + (" + log pt, log m0" if conditioned else ""),
    }
    timing["classifier"] = time.perf_counter() - t

    t = time.perf_counter()
    dep_a, dep_b, dep_g = (
        _emd_sets(real_s, Ar[:n_pairs], emd_pool),
        _emd_sets(real_s, Br[:n_pairs], emd_pool),
        _emd_sets(gen_s, Gr[:n_pairs], emd_pool),
    )
    from e2econd.evaluate.emd import emd_pairs as _emd_pairs

    emd_vals: dict[str, dict[str, np.ndarray]] = {}
    ebar = _progress(2 * n_pairs * len(F.EMD_CHANNELS), "EMD pairs", progress)
    for c in F.EMD_CHANNELS:
        gv = _emd_pairs([d[c] for d in dep_g], [d[c] for d in dep_b], R, threads, ebar.update)
        fv = _emd_pairs([d[c] for d in dep_a], [d[c] for d in dep_b], R, threads, ebar.update)
        emd_vals[c] = {"gen_real": gv, "real_real": fv}
        sq = math.sqrt(n_pairs)
        e = M.entry(
            gv.mean(),
            gv.std(ddof=1) / sq if n_pairs > 1 else float("nan"),
            fv.mean(),
            fv.std(ddof=1) / sq if n_pairs > 1 else float("nan"),
        )
        e["spread"], e["floor_spread"] = float(gv.std()), float(fv.std())
        metrics[f"emd_{c}"] = e
    ebar.close()
    timing["emd"] = time.perf_counter() - t

    t = time.perf_counter()
    cond = _conditional(real_s, gen_s, A, B, G, pt_bins, n_boot, rng)
    timing["conditional"] = time.perf_counter() - t

    result = {
        "metrics": metrics,
        "classifier_auc": classifier,
        "conditional": cond,
        "samples": {
            "real": {"paths": real_s.paths, "n_jets": N_r},
            "generated": {"paths": gen_s.paths, "n_jets": N_g},
            "n_compare": n,
            "emd_pairs": n_pairs,
            "emd_pool": emd_pool,
            "hit_jets": n_hit,
            "scheme": "value = metric(G, B), floor = metric(A, B); A, B disjoint random halves of real, "
            "G random generated subset; |A| = |B| = |G| = n_compare",
        },
        "units": {
            "E": "GeV",
            "mass": "GeV",
            "width": "Delta-eta/phi units",
            "emd": "GeV",
            "N": "hits (pixels; HCAL towers)",
        },
    }
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        if plots:
            t = time.perf_counter()
            from e2econd.evaluate import plots as P

            result["plots"] = P.make_all(
                tmp,
                real_s,
                gen_s,
                emd_vals,
                cond,
                n_grid=n_grid,
                grid_real=Br[:n_grid],
                grid_gen=Gr[:n_grid],
                hit_edges=HIT_EDGES,
            )
            timing["plots"] = time.perf_counter() - t
        timing["total"] = time.perf_counter() - t0
        result["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
        result["provenance"] = provenance(config)
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=False, default=str) + "\n")
        (tmp / "report.md").write_text(render_markdown(result))
    return result


# ----------------------------------------------------------------------------- report
def _fmt(x, err=None) -> str:
    if x is None:
        return "n/a"
    s = f"{x:.4g}"
    if err is not None:
        s += f" ± {err:.2g}"
    return s


_DESCR = {
    "E": "total energy",
    "N": "multiplicity",
    "width": "radial width",
    "mass": "image mass",
    "frac": "ECAL / calorimeter energy",
    "ratio": "tracks / calorimeter energy",
    "hit": "per-hit energy",
}


def render_markdown(result: dict) -> str:
    """The Markdown report: summary, metric table (value, floor, ratio), conditional tables, plots."""
    s = result["samples"]
    lines = [
        "# e2econd evaluation report",
        "",
        f"- real: {', '.join(s['real']['paths'])} ({s['real']['n_jets']} jets)",
        f"- generated: {', '.join(s['generated']['paths'])} ({s['generated']['n_jets']} jets)",
        f"- compared: n = {s['n_compare']} jets per sample; {s['scheme']}.",
        f"- EMD on {s['emd_pairs']} random pairs per channel (Tracks/ECAL in {s['emd_pool']}×{s['emd_pool']} "
        "pixel blocks, HCAL and calo in towers); per-hit energy W1 on the hits of "
        f"{s['hit_jets']} jets per sample; errors: bootstrap std (EMD: std of the mean over pairs).",
        "- ratio = value / max(floor, floor_err): ≈ 1 means indistinguishable from real-vs-real; "
        "pull = (value − floor) / sqrt(value_err² + floor_err²): ≲ 2 means consistent with the floor.",
        "",
    ]
    c = result["classifier_auc"]
    lines += [
        f"**Classifier AUC** (high-level features, held-out, {len(c['values'])} seeds): "
        f"{c['value']:.4f} ± {c['std']:.4f} (floor real-vs-real {c['floor']:.4f} ± {c['floor_std']:.4f}); "
        "0.5 is perfect.",
    ]
    if "hits" in c:
        h = c["hits"]
        lines += [
            "",
            f"**Classifier AUC on hits** (Deep Sets on the {h['hits_per_channel']} most energetic hits per channel "
            f"of {h['jets_per_sample']} jets per sample, held-out, {len(h['values'])} seeds): "
            f"{h['value']:.4f} ± {h['std']:.4f} (floor {h['floor']:.4f} ± {h['floor_std']:.4f}). It sees where "
            "each hit is, so it also catches spatial structure (e.g. the jet core) that summary features average away.",
        ]
    lines += [
        "",
        "| metric | value | floor | ratio | pull |",
        "|---|---|---|---|---|",
    ]
    for name, e in result["metrics"].items():
        lines.append(
            f"| {name} | {_fmt(e['value'], e['value_err'])} | {_fmt(e['floor'], e['floor_err'])} | {_fmt(e['ratio'])} "
            f"| {_fmt(e.get('pull'))} |"
        )
    cond = result.get("conditional")
    if cond:
        lines += [
            "",
            "## Conditional fidelity (bins of requested pt)",
            "",
            "| pt bin (GeV) | n gen | W1 E_calo value | floor | ratio | W1 mass value | floor | ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for b in cond["pt_bins"]:
            row = f"| {b['pt_lo']:.0f}–{b['pt_hi']:.0f} | {b['n_gen']} |"
            for k in ("w1_E_calo", "w1_mass_calo"):
                e = b.get(k)
                row += (
                    (f" {_fmt(e['value'], e['value_err'])} | {_fmt(e['floor'], e['floor_err'])} | {_fmt(e['ratio'])} |")
                    if e
                    else " n/a | n/a | n/a |"
                )
            lines.append(row)
        rp = cond["response_vs_pt"]
        lines += [
            "",
            "Response vs pt (mean ± std per bin; real | generated):",
            "",
            "| pt (GeV) | E_calo/pt real | E_calo/pt gen | mass real (GeV) | mass gen (GeV) |",
            "|---|---|---|---|---|",
        ]
        for i in range(len(rp["edges"]) - 1):
            r, g = rp["real"], rp["generated"]
            lines.append(
                f"| {_fmt(r['x'][i])} | {_fmt(r['E_calo/pt']['mean'][i], r['E_calo/pt']['std'][i])} | "
                f"{_fmt(g['E_calo/pt']['mean'][i], g['E_calo/pt']['std'][i])} | "
                f"{_fmt(r['mass_calo']['mean'][i], r['mass_calo']['std'][i])} | "
                f"{_fmt(g['mass_calo']['mean'][i], g['mass_calo']['std'][i])} |"
            )
    else:
        lines += ["", "Conditional fidelity: not computed (generated jets carry no valid pt conditions)."]
    if result.get("plots"):
        lines += ["", "## Plots", ""]
        for title, fname in result["plots"].items():
            lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    lines += [
        "",
        "## Definitions",
        "",
        "Features are computed from the images (see `e2econd/evaluate/features.py`): totals include negative "
        "pixels; width, mass and EMD use positive pixels; HCAL multiplicity counts towers; image mass treats "
        "ECAL+HCAL pixels as massless deposits at (Δη, Δφ) with the jet at η ≈ 0. EMD: energy flow with "
        "ground distance R_pq/R plus |ΔE| (Komiske–Metodiev), solved exactly with POT; `calo` = ECAL+HCAL at "
        "HCAL-tower granularity. FD/FPD/KPD on log-scaled high-level features normalised by the real maximum "
        "(JetNet).",
        "",
        f"Timing (s): {json.dumps(result.get('timing_s', {}))}",
        "",
        f"Provenance: `{json.dumps(result.get('provenance', {}), default=str)}`",
        "",
    ]
    return "\n".join(lines)
