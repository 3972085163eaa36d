"""Image classifier: sparse storage round trip, per-jet inputs against brute force, AUC ~0.5 on equal
samples, clear detection of a gross distortion; slow: the issue's sensitivity at 2,000 jets per side."""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.evaluate.image_classifier import (
    RING_EDGES,
    SPECTRUM_EDGES,
    SparseImages,
    condition_features,
    image_classifier_auc,
    jet_inputs,
    log_scale,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small(toyjets):
    return toyjets.toy_jets(40, seed=31)


def test_log_scale_closed_form():
    e = np.array([-0.1, 0.0, 0.05, 1.0, 60.0], np.float32)
    want = 0.25 * np.sign(e) * np.log1p(np.abs(e.astype(np.float64)) / 0.05)
    np.testing.assert_allclose(log_scale(e), want, rtol=1e-6)
    assert log_scale(e)[1] == 0.0


def test_sparse_round_trip_and_streaming(small):
    X = small["images"]
    S = SparseImages.from_images(X)
    assert len(S) == 40 and S.nbytes < 0.1 * X.nbytes
    idx = np.array([7, 0, 39, 7])
    d = S.dense(idx)
    assert tuple(d.shape) == (4, 3, 125, 125) and d.is_contiguous(memory_format=__import__("torch").channels_last)
    want = log_scale(X[idx]).astype(np.float16).astype(np.float32)  # values are stored as float16
    np.testing.assert_array_equal(d.numpy(), want)
    # streamed from chunks, with .images attributes, and capped
    chunks = [type("Chunk", (), {"images": X[s : s + 13]})() for s in range(0, 40, 13)]
    S2 = SparseImages.from_images(iter(chunks), max_jets=30)
    assert len(S2) == 30
    np.testing.assert_array_equal(S2.dense(np.arange(30)).numpy(), S.dense(np.arange(30)).numpy())
    # take / concat keep jets and their summaries
    T = SparseImages.concat([S.take([3, 5]), S.take([1])])
    np.testing.assert_array_equal(T.dense([0, 1, 2]).numpy(), S.dense([3, 5, 1]).numpy())
    np.testing.assert_array_equal(T.summary, S.summary[[3, 5, 1]])
    with pytest.raises(ValueError, match="125"):
        SparseImages.from_images(np.zeros((2, 3, 10, 10), np.float32))


def test_jet_inputs_bruteforce(small):
    X = small["images"][:3]
    S = SparseImages.from_images(X)
    cond = {"pt": small["pt"][:3], "m0": small["m0"][:3], "y": small["y"][:3]}
    J = jet_inputs(S, cond, 3)
    nr, nb = len(RING_EDGES) + 1, len(SPECTRUM_EDGES) + 1
    assert J.shape == (3, 3 + 3 + 3 * nr + 3 * nb)
    np.testing.assert_allclose(J[:, 0], np.log(small["pt"][:3]))
    np.testing.assert_allclose(J[:, 1], np.log(small["m0"][:3] + 1.0))
    np.testing.assert_array_equal(J[:, 2], small["y"][:3])
    edges = (0.0, *RING_EDGES, np.inf)
    sedges = (-np.inf, *SPECTRUM_EDGES, np.inf)
    for j in range(3):
        for c in range(3):
            tot = float(X[j, c].astype(np.float64).sum())
            assert J[j, 3 + c] == pytest.approx(np.sign(tot) * np.log1p(abs(tot)), rel=1e-6)
            rings = np.zeros(nr)
            spec = np.zeros(nb)
            for ie in range(125):
                for ip in range(125):
                    v = float(X[j, c, ie, ip])
                    r = np.hypot((ie - 62) * 0.0174, (ip - 62) * 0.0174)
                    rings[[k for k in range(nr) if edges[k] <= r < edges[k + 1]][0]] += v
                    if v != 0:
                        spec[[k for k in range(nb) if sedges[k] <= v < sedges[k + 1]][0]] += 1
            got = J[j, 6 + c * nr : 6 + (c + 1) * nr]
            np.testing.assert_allclose(got, np.sign(rings) * np.log1p(np.abs(rings)), rtol=1e-6, atol=1e-7)
            got = J[j, 6 + 3 * nr + c * nb : 6 + 3 * nr + (c + 1) * nb]
            np.testing.assert_allclose(got, np.log1p(spec), rtol=1e-6)


def test_condition_errors():
    with pytest.raises(ValueError, match="pt > 0"):
        condition_features({"pt": np.array([-1.0]), "m0": np.array([1.0]), "y": np.array([0.0])}, 1)
    with pytest.raises(ValueError, match="condition rows"):
        condition_features(np.ones((3, 3)), 2)
    with pytest.raises(ValueError, match="both samples"):
        image_classifier_auc(np.zeros((4, 3, 125, 125), np.float32), None, np.zeros((4, 3, 125, 125)), np.ones((4, 3)))


def test_null_and_gross_distortion(toyjets):
    A, B = toyjets.toy_jets(300, seed=32), toyjets.toy_jets(300, seed=33)
    ca, cb = ({k: J[k] for k in ("pt", "m0", "y")} for J in (A, B))
    sb = SparseImages.from_images(B["images"])
    null = image_classifier_auc(A["images"], None, sb, None, seeds=(0, 1), threads=1, progress=False)
    assert abs(null["auc"] - 0.5) < 0.1, null
    assert len(null["per_seed"]) == 2 and len(null["epochs"]) == 2 and null["auc_err"] >= 0
    assert null["n_train"] == 300 and null["n_test"] == 180 and null["value"] == null["auc"]
    # a readout fingerprint: ECAL zero-suppressed at 0.2 GeV (the fully read towers' small values gone);
    # energies and conditions nearly unchanged
    zs = A["images"].copy()
    zs[:, 1][np.abs(zs[:, 1]) < 0.2] = 0.0
    alt = image_classifier_auc(zs, ca, sb, cb, seeds=(0,), threads=1, progress=False)
    assert alt["auc"] > 0.9, alt


# ----------------------------------------------------------------------------- sensitivity (issue 13)
N_SENS = 2000  # jets per side


@pytest.fixture(scope="module")
def sens(toyjets):
    """Real halves A, B (2,000 toy jets each; B encoded once) and a runner: AUC of a sample against B."""
    A, B = toyjets.toy_jets(N_SENS, seed=51), toyjets.toy_jets(N_SENS, seed=52)
    sb = SparseImages.from_images(B["images"])

    def auc(jets, images=None, **kw):
        cond = {k: jets[k] for k in ("pt", "m0", "y")}
        img = jets["images"] if images is None else images
        return image_classifier_auc(sb, {k: B[k] for k in cond}, img, cond, threads=2, progress=False, **kw)

    return {"A": A, "auc": auc, "floor": auc(A)}


def _detects(value: dict, floor: dict) -> bool:
    """value − floor > 3 standard errors (the seeds' standard deviations of value and floor)."""
    return value["auc"] - floor["auc"] > 3.0 * np.hypot(value["auc_err"], floor["auc_err"])


@pytest.mark.slow
def test_sensitivity_floor(sens):
    f = sens["floor"]
    assert abs(f["auc"] - 0.5) < 0.04 and len(f["per_seed"]) == 3, f


@pytest.mark.slow
def test_sensitivity_ecal_scale(sens, toyjets):
    v = sens["auc"](sens["A"], toyjets.scale_channel(sens["A"]["images"], 1, 1.05))
    assert _detects(v, sens["floor"]), (v, sens["floor"])


@pytest.mark.slow
def test_sensitivity_core_move(sens, toyjets):
    v = sens["auc"](sens["A"], toyjets.move_core_energy(sens["A"]["images"], 0.10, channel=1))
    assert _detects(v, sens["floor"]), (v, sens["floor"])


@pytest.mark.slow
def test_sensitivity_conditions_and_collapse(sens, toyjets):
    # strong effects: 1,000 training jets per seed are enough (validation and test parts stay full size)
    shuffled = sens["auc"](toyjets.shuffle_conditions(sens["A"], seed=1), max_train=1000)
    assert _detects(shuffled, sens["floor"]) and shuffled["n_train"] == 1000, (shuffled, sens["floor"])
    collapsed = sens["auc"](toyjets.mode_collapse(sens["A"], k=10, seed=2), max_train=1000)
    assert _detects(collapsed, sens["floor"]), (collapsed, sens["floor"])
