"""TowerStore (issue 16) on a hit directory made by ``preprocess`` from the committed fixture files:
tokens equal ``images_to_tokens`` of the original images of the split (rows matched by source/row),
chunked building changes nothing, ``batch`` gathers the right rows, ``summary`` equals ``jet_summary``."""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.data.e2e_io import read_e2e
from e2econd.data.hitstore import HitStore
from e2econd.data.preprocess import preprocess
from e2econd.data.towers import TowerLayout, images_to_tokens, jet_summary, summary_names
from e2econd.data.towerstore import TowerStore

SPLITS = ("train", "val", "test")
LAYOUTS = [("tracks", "ecal", "hcal"), ("ecal",), ("tracks", "hcal")]


@pytest.fixture(scope="module")
def towerdir(e2e_fixtures, tmp_path_factory):
    """Hit directory of the 32 jets of the two Parquet fixtures (sources 0 and 1), and their images."""
    inputs = sorted(e2e_fixtures.glob("*.parquet"))
    assert len(inputs) == 2
    d = tmp_path_factory.mktemp("ts")
    preprocess(inputs, d / "hits", chunk_size=8, split="0.5,0.25,0.25", progress=False)
    return d / "hits", [read_e2e(f).images for f in inputs]


def original_images(store, images) -> np.ndarray:
    src, row = store.jets["source"].astype(int), store.jets["row"].astype(int)
    if len(src) == 0:
        return np.zeros((0, 3, 125, 125), np.float32)
    return np.stack([images[s][r] for s, r in zip(src, row)])


@pytest.mark.parametrize("channels", LAYOUTS, ids=["+".join(c) for c in LAYOUTS])
def test_tokens_equal_images_to_tokens(towerdir, channels):
    data, images = towerdir
    layout = TowerLayout.of(channels)
    total = 0
    for split in SPLITS:
        store = TowerStore(data, split, layout, chunk=5)  # chunks smaller than the split
        hits = HitStore(data, split)
        assert len(store) == len(hits) == store.tokens.n_jets
        total += len(store)
        for k in ("jet_id", "source", "row", "pt", "m0", "y"):
            np.testing.assert_array_equal(store.jets[k], hits.jets[k], err_msg=k)
        ref = images_to_tokens(original_images(store, images), layout)
        assert store.tokens.layout == layout
        np.testing.assert_array_equal(store.tokens.offsets, ref.offsets)
        np.testing.assert_array_equal(store.tokens.pos, ref.pos)
        np.testing.assert_array_equal(store.tokens.cells, ref.cells)
        assert store.tokens.pos.dtype == np.int16 and store.tokens.cells.dtype == np.float64
        assert store.summary_names == summary_names(layout)
        np.testing.assert_array_equal(store.summary, jet_summary(ref))
        big = TowerStore(data, split, layout)  # default chunk: one piece
        np.testing.assert_array_equal(big.tokens.cells, store.tokens.cells)
        np.testing.assert_array_equal(big.tokens.pos, store.tokens.pos)
    assert total == 32


def test_batch_gathers_rows(towerdir):
    data, _ = towerdir
    store = TowerStore(data, "train", TowerLayout.of(["tracks", "ecal", "hcal"]), chunk=7)
    assert len(store) >= 8
    rng = np.random.default_rng(0)
    idx = np.concatenate([[0, 0], rng.integers(0, len(store), 20), [len(store) - 1]])
    b = store.batch(idx)
    tok = store.tokens
    pos = [tok.pos[tok.offsets[i] : tok.offsets[i + 1]] for i in idx]
    cells = [tok.cells[tok.offsets[i] : tok.offsets[i + 1]] for i in idx]
    assert b.pos.dtype == np.int16 and b.cells.dtype == np.float64 and b.cu_seqlens.dtype == np.int32
    np.testing.assert_array_equal(b.pos, np.concatenate(pos))
    np.testing.assert_array_equal(b.cells, np.concatenate(cells))
    np.testing.assert_array_equal(b.cu_seqlens, np.concatenate([[0], np.cumsum([len(p) for p in pos])]))
    np.testing.assert_array_equal(b.pt, store.jets["pt"][idx])
    np.testing.assert_array_equal(b.m0, store.jets["m0"][idx])
    np.testing.assert_array_equal(b.y, store.jets["y"][idx].astype(np.float32))
    assert b.pt.dtype == np.float64 and b.m0.dtype == np.float64 and b.y.dtype == np.float32
    np.testing.assert_array_equal(b.summary, store.summary[idx])
    assert b.summary.shape == (len(idx), len(store.summary_names))
