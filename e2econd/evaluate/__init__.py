"""Evaluation of generated jets against real ones: metrics with real-vs-real floors, plots, report.

Data flow: :mod:`.inputs` (E2E files, hit directories, sample manifests) → :mod:`.store` (one
streaming pass: per-jet features from :mod:`.features`, :mod:`.substructure`, :mod:`.fingerprints`,
and sparse hits) → :mod:`.scheme` (halves A, B of real, subset G of generated; value = f(G, B),
floor = f(A, B)) → metric families (:mod:`.families`: W1s, per-hit distributions, FD/KD, coverage /
MMD of :mod:`.nearest`, the thesis EMD; :mod:`.twosample`: the classifiers of :mod:`.classifier` and
:mod:`.image_classifier`; :mod:`.memorisation`; :mod:`.conditional`) → :mod:`.pipeline` (one run,
several generated samples) → :mod:`.report` (``evaluate``), :mod:`.compare` (``compare``),
:mod:`.render` (Markdown) and :mod:`.plots` (PNG).
"""

from __future__ import annotations


def evaluate(*args, **kwargs):
    """See :func:`e2econd.evaluate.report.evaluate`."""
    from e2econd.evaluate.report import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def compare(*args, **kwargs):
    """See :func:`e2econd.evaluate.compare.compare`."""
    from e2econd.evaluate.compare import compare as _compare

    return _compare(*args, **kwargs)


__all__ = ["evaluate", "compare"]
