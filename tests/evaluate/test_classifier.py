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


def _toy_deposits(rng, n_jets, core: bool):
    """Toy jets: 20-40 hits per channel, Gaussian in (Δη, Δφ) (σ 0.3), exponential energies. With
    ``core`` the most energetic hit of every channel sits at the jet axis (0, 0); otherwise it sits
    where it was drawn. Energies, multiplicities (every summary statistic) are identically distributed."""
    out = []
    for _ in range(n_jets):
        dep = {}
        for name in ("tracks", "ecal", "hcal", "calo"):
            m = int(rng.integers(20, 41))
            pts = rng.normal(0.0, 0.3, size=(m, 2))
            e = rng.exponential(2.0, size=m)
            if core:
                pts[np.argmax(e)] = 0.0
            dep[name] = (pts, e)
        out.append(dep)
    return out


def test_hit_set_arrays_top_k_per_channel():
    from e2econd.evaluate.classifier import hit_set_arrays

    rng = np.random.default_rng(2)
    deps = _toy_deposits(rng, 3, core=False)
    deps[1]["hcal"] = (np.array([[0.1, -0.2], [0.3, 0.0]]), np.array([-1.0, 5.0]))  # negative deposit dropped
    hits, mask, jet = hit_set_arrays(deps, k=8)
    assert hits.shape == (3, 24, 7) and mask.shape == (3, 24) and jet.shape == (3, 6)
    for j, dep in enumerate(deps):
        for c, name in enumerate(("tracks", "ecal", "hcal")):
            pts, e = dep[name]
            want = sorted(((float(ei), tuple(p)) for p, ei in zip(pts, e) if ei > 0), reverse=True)[:8]
            block, m = hits[j, c * 8 : (c + 1) * 8], mask[j, c * 8 : (c + 1) * 8]
            assert m.sum() == len(want) and m[: len(want)].all()
            np.testing.assert_allclose(np.exp(block[: len(want), 3]), [w[0] for w in want], rtol=1e-5)
            np.testing.assert_allclose(block[: len(want), :2], [w[1] for w in want], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(block[: len(want), 2], [np.hypot(*w[1]) for w in want], rtol=1e-6, atol=1e-7)
            assert (block[: len(want), 4 + c] == 1).all() and (block[: len(want), 4:].sum(1) == 1).all()
            assert not block[len(want) :].any()
            positive = e[e > 0]
            assert jet[j, c] == pytest.approx(np.log1p(len(positive)))
            assert jet[j, 3 + c] == pytest.approx(np.log1p(positive.sum()))


def test_hit_classifier_null_and_missing_core():
    """Same hit distribution -> AUC ~ 0.5; a core at the jet axis that summary features cannot see
    -> the hit-level classifier separates the samples."""
    from e2econd.evaluate.classifier import hit_classifier_auc, hit_set_arrays

    rng = np.random.default_rng(3)
    A = hit_set_arrays(_toy_deposits(rng, 500, core=True), k=16)
    B = hit_set_arrays(_toy_deposits(rng, 500, core=True), k=16)
    C = hit_set_arrays(_toy_deposits(rng, 500, core=False), k=16)
    null = hit_classifier_auc(A, B, seeds=(0, 1))
    assert abs(null["value"] - 0.5) < 0.08, null
    alt = hit_classifier_auc(A, C, seeds=(0, 1))
    assert alt["value"] > 0.8, alt
    # conditions as extra per-jet inputs: a condition that differs between the samples is detected
    cr, cg = rng.normal(size=(500, 1)), rng.normal(size=(500, 1)) + 2.0
    assert hit_classifier_auc(A, B, cr, cg, seeds=(0,))["value"] > 0.8


def test_split_is_stratified_and_seed_dependent():
    from e2econd.evaluate.training import SPLIT, split_indices

    y = np.r_[np.zeros(100), np.ones(60)]
    tr, va, te = split_indices(y, 0)
    assert sorted(np.concatenate([tr, va, te])) == list(range(160))  # a partition
    for part, f in zip((tr, va), SPLIT):
        assert (y[part] == 0).sum() == int(f * 100) and (y[part] == 1).sum() == int(f * 60)
    assert not np.array_equal(split_indices(y, 1)[2], te)  # another seed, another split
    tr_cap = split_indices(y, 0, max_train=20)[0]
    assert len(tr_cap) == 20 and (y[tr_cap] == 0).sum() == 10


# ----------------------------------------------------------------------------- sensitivity (issue 13)
N_SENS = 2000  # jets per side


def _detects(value: dict, floor: dict) -> bool:
    """value − floor > 3 standard errors (the seeds' standard deviations of value and floor)."""
    return value["value"] - floor["value"] > 3.0 * np.hypot(value["std"], floor["std"])


@pytest.fixture(scope="module")
def sens_jets(toyjets):
    """Real halves A, B (2,000 toy jets each), conditions shuffled within A, and a collapsed copy of A."""
    A, B = toyjets.toy_jets(N_SENS, seed=41), toyjets.toy_jets(N_SENS, seed=42)
    return {
        "A": A,
        "B": B,
        "shuffled": toyjets.shuffle_conditions(A, seed=1),
        "collapsed": toyjets.mode_collapse(A, k=10, seed=2),
    }


def _hl_inputs(jets: dict) -> np.ndarray:
    """High-level features + conditions and responses, as ``evaluate`` feeds the classifier."""
    from e2econd.evaluate import features as F

    feats = F.image_features(jets["images"])
    pt, m0 = jets["pt"], jets["m0"]
    resp = [np.log1p(np.clip(feats[f"E_{c}"], 0, None)) - np.log1p(pt) for c in F.CHANNELS]
    mass = np.log1p(feats["mass_calo"]) - np.log1p(m0)
    return np.column_stack([F.hl_matrix(feats), np.log(pt), np.log(m0), *resp, mass])


@pytest.mark.slow
def test_highlevel_sensitivity(sens_jets):
    X = {k: _hl_inputs(v) for k, v in sens_jets.items()}
    floor = classifier_auc(X["B"], X["A"])
    assert abs(floor["value"] - 0.5) < 0.05, floor
    for case in ("shuffled", "collapsed"):
        value = classifier_auc(X["B"], X[case])
        assert _detects(value, floor), (case, value, floor)


@pytest.mark.slow
def test_hits_sensitivity(sens_jets):
    from e2econd.evaluate import features as F
    from e2econd.evaluate.classifier import hit_classifier_auc, hit_set_arrays

    def sets(images):
        return hit_set_arrays([F.jet_deposits(img, pool=1) for img in images], k=64)

    def cond(j):
        return np.column_stack([np.log(j["pt"]), np.log(j["m0"])])

    J = sens_jets
    sa, sb = sets(J["A"]["images"]), sets(J["B"]["images"])
    floor = hit_classifier_auc(sb, sa, cond(J["B"]), cond(J["A"]))
    assert abs(floor["value"] - 0.5) < 0.05, floor
    shuffled = hit_classifier_auc(sb, sa, cond(J["B"]), cond(J["shuffled"]))  # same hits, shuffled conditions
    assert _detects(shuffled, floor), (shuffled, floor)
    # the collapsed sample has only 10 distinct jets: build their sets once
    _, first, inv = np.unique(J["collapsed"]["pt"], return_index=True, return_inverse=True)
    sc = sets(J["collapsed"]["images"][first])
    collapsed = hit_classifier_auc(sb, tuple(a[inv] for a in sc), cond(J["B"]), cond(J["collapsed"]))
    assert _detects(collapsed, floor), (collapsed, floor)
