"""The streamed sample: sparse hits rebuild the images exactly; deposits match the dense definitions;
a hit directory and the E2E file it came from give the same features."""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.evaluate import features as F
from e2econd.evaluate.store import ALL_FEATURES, sample_from_arrays, scan


@pytest.fixture(scope="module")
def toy(toyjets):
    return toyjets.toy_jets(40, seed=5)


def test_sparse_hits_rebuild_images(toy):
    s = sample_from_arrays(toy["images"], toy["pt"], toy["m0"], toy["y"], chunk_size=16)
    idx = np.array([39, 0, 17])
    got = s.images(idx)
    np.testing.assert_array_equal(got[:, :2], toy["images"][idx, :2])  # crystals: exact
    np.testing.assert_allclose(got[:, 2], toy["images"][idx, 2], rtol=1e-6, atol=0)  # towers: float32 sum / 25
    np.testing.assert_allclose(s.mean_image, toy["images"].mean(0), rtol=1e-5, atol=1e-6)
    assert s.n == 40 and set(s.feats) == set(ALL_FEATURES)


def test_deposits_match_dense_definitions(toy):
    s = sample_from_arrays(toy["images"], toy["pt"], toy["m0"], toy["y"])
    dicts = s.deposit_dicts(np.array([3, 11]))
    for k, i in enumerate((3, 11)):
        dense = F.jet_deposits(toy["images"][i], pool=1)
        for c in ("tracks", "ecal", "hcal", "calo"):
            j, de, dp, e = s.flat_deposits(np.array([i]), c)
            if c == "calo":  # the same tower energies; positions here are tower centres, there centroids
                np.testing.assert_allclose(np.sort(e), np.sort(dense[c][1]), rtol=1e-5)
            else:
                order_a = np.lexsort((de.round(6), dp.round(6)))
                order_b = np.lexsort(dense[c][0].round(6).T)
                np.testing.assert_allclose(np.column_stack([de, dp])[order_a], dense[c][0][order_b], atol=1e-6)
                np.testing.assert_allclose(e[order_a], dense[c][1][order_b], rtol=1e-5)
                np.testing.assert_allclose(np.sort(dicts[k][c][1]), np.sort(dense[c][1]), rtol=1e-5)
    pts, e = s.top_deposits(np.array([3]), "calo", 5)
    np.testing.assert_allclose(e[0], np.sort(F.jet_deposits(toy["images"][3], 1)["calo"][1])[::-1][:5], rtol=1e-5)


def test_hit_directory_reads_like_the_file(toy, tmp_path, h5writer, hitdir_writer):
    h5writer(tmp_path / "x.h5", toy["images"], toy["pt"], toy["m0"], toy["y"])
    hitdir_writer(tmp_path / "hits", toy["images"], toy["pt"], toy["m0"], toy["y"])
    a = scan([tmp_path / "x.h5"], [40], "test", 16)
    b = scan([tmp_path / "hits"], [40], "test", 16)
    for k in a.feats:
        np.testing.assert_allclose(b.feats[k], a.feats[k], rtol=2e-4, atol=2e-4, err_msg=k)
    np.testing.assert_allclose(b.pt, a.pt)
    np.testing.assert_allclose(b.images([7]), a.images([7]), rtol=1e-5, atol=1e-6)
