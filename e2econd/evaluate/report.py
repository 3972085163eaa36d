"""``evaluate(real, generated, out_dir)``: every metric with its real-vs-real floor, plots, report.

The work is done by :func:`e2econd.evaluate.pipeline.run` (inputs → per-jet features and sparse
hits → halves A, B, G → floors A vs B and values G vs B, family by family); this module assembles
``metrics.json`` (keys ``headline``, ``metrics``, ``classifier_auc``, ``conditional``, ``samples``,
``memorisation``, ``timing_s``, ``provenance``), renders ``report.md`` (:mod:`.render`) and the
plots (:mod:`.plots`), all written atomically into ``out_dir``.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

from e2econd.errors import E2EInputError
from e2econd.evaluate import pipeline as P
from e2econd.evaluate import scheme
from e2econd.evaluate.nearest import NN_DEPOSITS
from e2econd.evaluate.render import render_markdown
from e2econd.evaluate.store import HIT_EDGES
from e2econd.utils import atomic_dir, provenance

UNITS = {
    "E": "GeV",
    "mass": "GeV",
    "core": "GeV",
    "width": "Delta-eta/phi units",
    "emd": "GeV",
    "mmd": "GeV",
    "tau": "dimensionless (R0 = 0.8)",
    "N": "hits (pixels; HCAL towers)",
}


def options(**kwargs) -> P.Options:
    """:class:`pipeline.Options` from keyword arguments; unknown names are a one-line error."""
    names = {f.name for f in fields(P.Options)}
    bad = sorted(set(kwargs) - names)
    if bad:
        raise TypeError(f"unknown evaluate option(s): {', '.join(bad)}")
    return P.Options(**kwargs)


def samples_record(run: P.Run, k: int, opts: P.Options) -> dict:
    h = run.halves
    return {
        "real": {"paths": run.real.paths, "n_jets": run.real.n},
        "generated": {"paths": run.gens[k].paths, "n_jets": run.gens[k].n},
        "n_compare": h.n,
        "emd_pairs": min(opts.emd_pairs, h.n),
        "emd_pool": opts.emd_pool,
        "hit_jets": min(opts.hit_jets, h.n),
        "image_jets": min(opts.image_jets, h.n),
        "nn_eval": opts.nn_eval,
        "nn_batches": opts.nn_batches,
        "nn_deposits": NN_DEPOSITS,
        "max_jets": opts.max_jets,
        "scheme": "value = metric(G, B), floor = metric(A, B); A, B disjoint random halves of real, "
        "G random generated subset; |A| = |B| = |G| = n_compare",
    }


def result_for(run: P.Run, k: int, opts: P.Options) -> dict:
    """The metrics.json object of generated sample ``k`` of a run (without plots, timing, provenance)."""
    metrics = run.metrics[k]
    return {
        "headline": scheme.headline(metrics),
        "metrics": metrics,
        "classifier_auc": P.classifier_record(run.values[k], run.floors, metrics, run.conditioned),
        "conditional": run.conditional[k],
        "memorisation": run.memorisation[k],
        "samples": samples_record(run, k, opts),
        "units": UNITS,
    }


def _plots(tmp: Path, run: P.Run, result: dict, opts: P.Options) -> dict:
    from e2econd.evaluate import plots as PL

    h = run.halves
    return PL.make_all(
        tmp,
        run.real,
        run.gens[0],
        P.emd_values(run.values[0], run.floors),
        result["conditional"],
        n_grid=opts.n_grid,
        grid_real=h.B[: opts.n_grid],
        grid_gen=h.G[0][: opts.n_grid],
        hit_edges=HIT_EDGES,
    )


def evaluate(
    real, generated, out_dir, *, overwrite: bool = False, progress: bool | None = True, plots: bool = True, **kwargs
) -> dict:
    """Compare generated with real jets; write plots, ``report.md`` and ``metrics.json`` to ``out_dir``.

    ``real``/``generated``: a path or list of paths (E2E files, hit directories read at ``split``, or a
    sample manifest). Options (``kwargs``): the fields of :class:`e2econd.evaluate.pipeline.Options`
    (``max_jets`` jets read per sample, default 20,000; ``hit_jets``/``image_jets`` jets per sample for
    the hit and image classifiers; ``nn_eval``/``nn_batches`` the coverage/MMD batches; ``emd_pairs``
    thesis EMD pairs; ``classifiers`` subset of ("hl", "hits", "image"); ``train`` a training hit
    directory for the memorisation test; ...). Returns the metrics dictionary (also in metrics.json).
    """
    opts = options(**kwargs)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise E2EInputError("output directory exists (use --overwrite)", path=out_dir)
    run = P.run(real, [generated], opts, progress)
    result = result_for(run, 0, opts)
    timing = dict(run.timing)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        if plots:
            t = time.perf_counter()
            result["plots"] = _plots(tmp, run, result, opts)
            timing["plots"] = time.perf_counter() - t
        timing["total"] = time.perf_counter() - t0
        result["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
        result["provenance"] = provenance(
            {
                "real": [str(p) for p in P.as_paths(real)],
                "generated": [str(p) for p in P.as_paths(generated)],
                **P.options_record(opts),
            }
        )
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (tmp / "report.md").write_text(render_markdown(result))
    return result


__all__ = ["evaluate", "render_markdown"]
