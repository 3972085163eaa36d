"""Classifier two-sample test: AUC against a brute-force pair count; 0.5 for equal samples."""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.evaluate.classifier import auc_score, classifier_auc


def test_auc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding creates ties
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert auc_score(y, s) == pytest.approx(brute, rel=1e-12)
    assert auc_score(y, y) == 1.0 and auc_score(y, -y) == 0.0


def test_classifier_auc_null_and_shift():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(2000, 6)), rng.normal(size=(2000, 6))
    null = classifier_auc(A, B, seeds=(0, 1))
    assert abs(null["value"] - 0.5) < 0.05
    C = B.copy()
    C[:, 0] *= 2.0  # wider in one feature: a non-linear boundary is needed
    alt = classifier_auc(A, C, seeds=(0, 1))
    assert alt["value"] > 0.6 and alt["value"] > null["value"] + 0.05
    assert len(alt["values"]) == 2 and alt["std"] >= 0
