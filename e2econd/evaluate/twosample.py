"""Classifier two-sample tests wired to the streamed samples (the networks are in :mod:`.classifier`
and :mod:`.image_classifier`): each separates the reference ``ref`` (label 0) from ``x`` (label 1).

- ``classifier_auc_hl`` (headline ``auc_highlevel``): MLP on the 10 high-level features, plus — when
  both samples carry valid conditions — log pt, log m0 and the responses log E_c/pt, log mass/m0,
  so a wrong p(x | pt) is caught, not only wrong marginals. All jets of the comparison.
- ``classifier_auc_hits`` (``auc_hits``): Deep Sets on the 64 most energetic hits per channel of
  the first ``hit_jets`` jets (+ log pt, log m0).
- ``classifier_auc_image`` (``auc_image``): CNN on the full log-scaled image with (log pt, log m0, y)
  of the first ``image_jets`` jets (CaloChallenge's low-level test).
Errors are the standard deviation over the classifier seeds (different data splits).
"""

from __future__ import annotations

import numpy as np

from e2econd.evaluate import features as F
from e2econd.evaluate.families import Context, Side, stat

HIT_CLASSIFIER_K = 64


def _hl_inputs(side: Side, ctx: Context) -> np.ndarray:
    s, i = side.sample, side.idx
    hl = F.hl_matrix(s.feats, i) / ctx.hl_scale
    if not ctx.conditioned:
        return hl
    pt, m0 = s.pt[i], s.m0[i]
    resp = [np.log1p(np.clip(s.feats[f"E_{c}"][i], 0.0, None)) - np.log1p(pt) for c in F.CHANNELS]
    return np.column_stack([hl, np.log(pt), np.log(m0), *resp, np.log1p(s.feats["mass_calo"][i]) - np.log1p(m0)])


HL_INPUTS = list(F.HL_FEATURES)
HL_COND_INPUTS = ["log pt", "log m0"] + [f"log E_{c}/pt" for c in F.CHANNELS] + ["log mass_calo/m0"]


def _clf_stat(r: dict, **extra) -> dict:
    return stat(r["value"], r["std"], values=[float(v) for v in r["values"]], **extra)


def highlevel(x: Side, ref: Side, ctx: Context) -> dict:
    from e2econd.evaluate.classifier import classifier_auc

    r = classifier_auc(_hl_inputs(ref, ctx), _hl_inputs(x, ctx), seeds=ctx.seeds)
    return {"classifier_auc_hl": _clf_stat(r)}


def _hit_inputs(side: Side, k: int, ctx: Context):
    from e2econd.evaluate.classifier import hit_set_arrays

    idx = side.idx[:k]
    key = ("hits", id(side.sample), len(side.idx), int(idx[0]) if len(idx) else -1, k)
    if key not in ctx.cache:
        sets = hit_set_arrays(side.sample.deposit_dicts(idx), k=HIT_CLASSIFIER_K)
        cond = np.column_stack([np.log(side.sample.pt[idx]), np.log(side.sample.m0[idx])]) if ctx.conditioned else None
        ctx.cache[key] = (sets, cond)
    return ctx.cache[key]


def hits(x: Side, ref: Side, ctx: Context) -> dict:
    from e2econd.evaluate.classifier import hit_classifier_auc

    k = min(ctx.hit_jets, len(x.idx), len(ref.idx))
    (sr, cr), (sx, cx) = _hit_inputs(ref, k, ctx), _hit_inputs(x, k, ctx)
    r = hit_classifier_auc(sr, sx, cr, cx, seeds=ctx.seeds)
    return {"classifier_auc_hits": _clf_stat(r, jets_per_sample=int(k), hits_per_channel=HIT_CLASSIFIER_K)}


def _image_inputs(side: Side, k: int, ctx: Context):
    from e2econd.evaluate.image_classifier import SparseImages

    idx = side.idx[:k]
    key = ("image", id(side.sample), len(side.idx), int(idx[0]) if len(idx) else -1, k)
    if key not in ctx.cache:
        chunks = (side.sample.images(idx[s : s + 256]) for s in range(0, k, 256))
        cond = (
            {"pt": side.sample.pt[idx], "m0": side.sample.m0[idx], "y": side.sample.y[idx]} if ctx.conditioned else None
        )
        ctx.cache[key] = (SparseImages.from_images(chunks), cond)
    return ctx.cache[key]


def image(x: Side, ref: Side, ctx: Context) -> dict:
    from e2econd.evaluate.image_classifier import image_classifier_auc

    k = min(ctx.image_jets, len(x.idx), len(ref.idx))
    (ir, cr), (ix, cx) = _image_inputs(ref, k, ctx), _image_inputs(x, k, ctx)
    r = image_classifier_auc(ir, cr, ix, cx, seeds=ctx.seeds, threads=ctx.threads, progress=ctx.bar_enabled)
    return {
        "classifier_auc_image": _clf_stat(
            r, jets_per_sample=int(k), epochs=r.get("epochs"), n_train=r.get("n_train"), n_test=r.get("n_test")
        )
    }


CLASSIFIERS = {"classifier_hl": highlevel, "classifier_hits": hits, "classifier_image": image}
