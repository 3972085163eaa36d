"""Memorisation check: brute-force nearest neighbours, copies flagged, a fresh sample not flagged."""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.evaluate.memorisation import embed, memorisation, nearest_distances


@pytest.fixture(scope="module")
def samples(toyjets):
    return {
        "train": toyjets.toy_jets(600, seed=21)["images"],
        "real": toyjets.toy_jets(300, seed=22)["images"],
        "fresh": toyjets.toy_jets(300, seed=23)["images"],
    }


def test_embed_is_log_tower_energy():
    rng = np.random.default_rng(0)
    img = np.zeros((2, 3, 125, 125), np.float32)
    img[0, 1, 60:65, 60:65] = 0.1  # one ECAL tower: 2.5 GeV
    img[1, 2, :5, :5] = rng.uniform(0, 1, (5, 5)).astype(np.float32)
    img[1, 0, 3, 7] = -1.0  # negative energy is clipped at 0
    e = embed(img)
    assert e.shape == (2, 1875) and e.dtype == np.float32
    want = np.zeros((2, 3, 25, 25))
    want[0, 1, 12, 12] = np.log1p(2.5)
    want[1, 2, 0, 0] = np.log1p(img[1, 2, :5, :5].astype(np.float64).sum())
    np.testing.assert_allclose(e.reshape(2, 3, 25, 25), want, rtol=1e-6, atol=1e-7)
    # streaming input (an iterable of chunks) gives the same embedding
    np.testing.assert_array_equal(embed(iter([img[:1], img[1:]])), e)


def test_nearest_distances_bruteforce():
    rng = np.random.default_rng(1)
    q, r = rng.normal(size=(37, 20)), rng.normal(size=(53, 20))
    r[5] = q[3]  # an exact copy: distance exactly 0
    d, i = nearest_distances(q, r, chunk=8)
    full = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    np.testing.assert_array_equal(i, full.argmin(1))
    np.testing.assert_allclose(d, full.min(1), rtol=1e-12)
    assert d[3] == 0.0 and i[3] == 5


def test_fresh_sample_not_flagged(samples):
    res = memorisation(samples["fresh"], samples["train"], samples["real"])
    assert 0.9 < res["ratio"] < 1.1, res
    assert res["copy_fraction"] < 0.04 and not res["flag"], res
    assert (res["n_gen"], res["n_real"], res["n_train"]) == (300, 300, 600)


def test_copies_flagged(samples):
    gen = samples["fresh"].copy()
    rng = np.random.default_rng(2)
    idx = rng.choice(600, 60, replace=False)
    gen[:60] = samples["train"][idx]  # 20 % exact copies
    gen[60:90] = samples["train"][idx[:30]] * np.float32(1.01)  # 10 % near copies (1 % energy scale)
    res = memorisation(gen, samples["train"], samples["real"])
    assert res["flag"] and res["n_copies"] >= 90 and res["copy_fraction"] >= 0.3, res
    # a fully copied sample: every distance 0
    allc = memorisation(samples["train"][:200], samples["train"], samples["real"])
    assert allc["median_gen"] == 0.0 and allc["ratio"] == 0.0 and allc["n_copies"] == 200 and allc["flag"]


def test_bad_input():
    with pytest.raises(ValueError, match="quantile"):
        memorisation(np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((2, 5)), quantile=1.5)
    with pytest.raises(ValueError, match=r"\(n, 3, 125, 125\)"):
        embed(np.zeros((2, 3, 10, 10)))
