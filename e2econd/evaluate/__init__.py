"""Evaluation of generated jets against real ones: metrics with real-vs-real floors, plots, report.

``evaluate(real, generated, out_dir, ...)`` (in :mod:`e2econd.evaluate.report`) streams E2E files
or hit directories, computes per-jet features (:mod:`.features`), W1/FD/FPD/KPD (:mod:`.metrics`),
the EMD between jets (:mod:`.emd`) and a classifier two-sample test (:mod:`.classifier`), and
writes PNG plots (:mod:`.plots`), ``report.md`` and ``metrics.json``.
"""

from __future__ import annotations


def evaluate(*args, **kwargs):
    """See :func:`e2econd.evaluate.report.evaluate`."""
    from e2econd.evaluate.report import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["evaluate"]
