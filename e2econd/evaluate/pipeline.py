"""One evaluation run, shared by ``evaluate`` (one generated sample) and ``compare`` (several):
read every input once (:mod:`.store`), draw the halves (:mod:`.scheme`), compute the floors once
(A vs B) and the values of each generated sample (G vs B), family by family."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from e2econd.errors import E2EInputError
from e2econd.evaluate import families as FAM
from e2econd.evaluate import features as F
from e2econd.evaluate import scheme, twosample
from e2econd.evaluate.conditional import conditional, conditions_ok
from e2econd.evaluate.inputs import as_paths, counts_of, expand_inputs
from e2econd.evaluate.store import Sample, scan
from e2econd.utils import bar_disabled

#: default cap on the jets read per sample
MAX_JETS = 20_000


@dataclass
class Options:
    """Every option of an evaluation (recorded in the provenance of its outputs)."""

    split: str = "test"
    chunk_size: int = 256
    emd_pairs: int = 500
    R: float = 0.8
    emd_pool: int = F.EMD_POOL
    hit_jets: int = 2000
    image_jets: int = 4000
    nn_eval: int = 100
    nn_batches: int = 10
    n_boot: int = 20
    seed: int = 0
    n_grid: int = 4
    pt_bins: int = 5
    classifier_seeds: int = 3
    max_jets: int | None = MAX_JETS
    threads: int = 2
    classifiers: tuple = ("hl", "hits", "image")
    train: str | None = None
    memorisation_jets: int = 2000


@dataclass
class Run:
    """Result of :func:`run`: the samples, the halves, floors and per-sample values and records."""

    real: Sample
    gens: list[Sample]
    halves: scheme.Halves
    floors: dict
    values: list[dict]
    metrics: list[dict]
    conditional: list
    memorisation: list
    timing: dict = field(default_factory=dict)
    conditioned: bool = True


def bar(total: int, desc: str, enabled: bool | None, unit: str = "jet"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=bar_disabled(enabled))


def read_all(real, generated: list, opts: Options, progress):
    """Real sample and the generated samples (each a path or a list of paths), streamed once."""
    real_paths = expand_inputs(as_paths(real))
    gen_paths = [expand_inputs(as_paths(g)) for g in generated]
    if not real_paths or not gen_paths or not all(gen_paths):
        raise E2EInputError("need at least one real and one generated input")
    cnt_r = counts_of(real_paths, opts.split, opts.max_jets)
    cnt_g = [counts_of(p, opts.split, opts.max_jets) for p in gen_paths]
    halves = scheme.draw(sum(cnt_r), [sum(c) for c in cnt_g], opts.seed, where=real_paths[0])
    b = bar(sum(cnt_r) + sum(map(sum, cnt_g)), "reading jets", progress)
    real_s = scan(real_paths, cnt_r, opts.split, opts.chunk_size, b)
    gens = [scan(p, c, opts.split, opts.chunk_size, b) for p, c in zip(gen_paths, cnt_g)]
    b.close()
    return real_s, gens, halves


def families(opts: Options) -> dict:
    fams = dict(FAM.FAMILIES)
    for name in opts.classifiers:
        fams[f"classifier_{name}"] = twosample.CLASSIFIERS[f"classifier_{name}"]
    return fams


def context(opts: Options, real: Sample, gens: list[Sample], A: np.ndarray, ebar, progress) -> FAM.Context:
    scale = np.max(np.abs(F.hl_matrix(real.feats, A)), axis=0)
    return FAM.Context(
        rng=np.random.default_rng(opts.seed + 1),
        n_boot=opts.n_boot,
        seeds=tuple(range(opts.seed, opts.seed + max(opts.classifier_seeds, 1))),
        R=opts.R,
        threads=opts.threads,
        hit_jets=opts.hit_jets,
        image_jets=opts.image_jets,
        emd_pairs=opts.emd_pairs,
        emd_pool=opts.emd_pool,
        nn_eval=opts.nn_eval,
        nn_batches=opts.nn_batches,
        conditioned=conditions_ok(real, *gens),
        hl_scale=np.where(scale > 0, scale, 1.0),
        progress=ebar.update,
        bar_enabled=progress,
    )


def run(real, generated: list, opts: Options, progress: bool | None = None) -> Run:
    """Read, draw, and compute every metric family: floors once, values per generated sample."""
    t0 = time.perf_counter()
    real_s, gens, h = read_all(real, generated, opts, progress)
    timing = {"read_and_features": time.perf_counter() - t0}
    pairs = len(FAM.NN.NN_CHANNELS) * opts.nn_batches * opts.nn_eval**2 + len(F.EMD_CHANNELS) * min(opts.emd_pairs, h.n)
    ebar = bar(pairs * (1 + len(gens)), "EMD pairs", progress, unit="pair")
    ctx = context(opts, real_s, gens, h.A, ebar, progress)
    fams = families(opts)
    A, B = FAM.Side(real_s, h.A, "A"), FAM.Side(real_s, h.B, "B")
    floors = scheme.run(fams, A, B, ctx, timing, "_floor")
    values, metrics, cond = [], [], []
    for g, G in zip(gens, h.G):
        v = scheme.run(fams, FAM.Side(g, G, "G"), B, ctx, timing)
        values.append(v)
        metrics.append(scheme.entries(v, floors))
        t = time.perf_counter()
        cond.append(conditional(real_s, g, h.A, h.B, G, opts.pt_bins, opts.n_boot, ctx.rng))
        timing["conditional"] = timing.get("conditional", 0.0) + time.perf_counter() - t
    ebar.close()
    mem = memorisation(opts, real_s, gens, h, progress, timing)
    return Run(real_s, gens, h, floors, values, metrics, cond, mem, timing, ctx.conditioned)


def _image_chunks(sample: Sample, idx: np.ndarray, size: int = 256):
    return (sample.images(idx[s : s + size]) for s in range(0, len(idx), size))


def memorisation(opts: Options, real: Sample, gens: list[Sample], h: scheme.Halves, progress, timing) -> list:
    """Nearest-training-jet distances of generated (G) vs real test (B) jets, only with ``opts.train``
    (:func:`e2econd.evaluate.memorisation.memorisation`; a hit directory's train split or E2E files)."""
    if not opts.train:
        return [None] * len(gens)
    from e2econd.evaluate.inputs import iter_images
    from e2econd.evaluate.memorisation import embed
    from e2econd.evaluate.memorisation import memorisation as memo

    t = time.perf_counter()
    paths = expand_inputs(as_paths(opts.train))
    cnt = counts_of(paths, "train", opts.max_jets)
    b = bar(sum(cnt), "reading training jets", progress)

    def train_chunks():
        for p, c in zip(paths, cnt):
            for imgs, *_ in iter_images(p, "train", opts.chunk_size, c):
                b.update(len(imgs))
                yield imgs

    train = embed(train_chunks())
    b.close()
    k = min(opts.memorisation_jets, h.n)
    real_emb = embed(_image_chunks(real, h.B[:k]))
    out = []
    for g, G in zip(gens, h.G):
        r = memo(embed(_image_chunks(g, G[:k])), train, real_emb, max_gen=None, max_real=None, seed=opts.seed)
        r["train"] = [str(p) for p in paths]
        out.append(r)
    timing["memorisation"] = time.perf_counter() - t
    return out


def classifier_record(values: dict, floors: dict, metrics: dict, conditioned: bool) -> dict:
    """The ``classifier_auc`` object of metrics.json (contract): high-level, plus ``hits`` and ``image``."""

    def one(name):
        v, f = values[name], floors[name]
        return {
            "value": v["value"],
            "std": v["err"],
            "values": v["values"],
            "floor": f["value"],
            "floor_std": f["err"],
            "floor_values": f["values"],
            "ratio": metrics[name]["ratio"],
        }

    out: dict = {}
    if "classifier_auc_hl" in values:
        out = one("classifier_auc_hl")
        out["features"] = twosample.HL_INPUTS + (twosample.HL_COND_INPUTS if conditioned else [])
        out["note"] = "held-out AUC of an MLP on high-level features, mean/std over seeds; 0.5 is perfect"
    if "classifier_auc_hits" in values:
        out["hits"] = one("classifier_auc_hits")
        out["hits"].update(
            jets_per_sample=values["classifier_auc_hits"]["jets_per_sample"],
            hits_per_channel=twosample.HIT_CLASSIFIER_K,
        )
    if "classifier_auc_image" in values:
        out["image"] = one("classifier_auc_image")
        out["image"]["jets_per_sample"] = values["classifier_auc_image"]["jets_per_sample"]
    return out


def options_record(opts: Options) -> dict:
    d = asdict(opts)
    d["classifiers"] = list(opts.classifiers)
    return d


def emd_values(values: dict, floors: dict) -> dict:
    """{channel: {"gen_real", "real_real"}} EMD arrays of the thesis comparison (for the plot)."""
    return {
        c: {"gen_real": np.asarray(values[f"emd_{c}"]["values"]), "real_real": np.asarray(floors[f"emd_{c}"]["values"])}
        for c in F.EMD_CHANNELS
        if f"emd_{c}" in values
    }
