"""HitStore: hits of each jet equal image_to_hits of the original image, ``batch`` equals a slow
reference loop, transforms fitted on train equal a refit from the store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2econd.data.e2e_io import E2EWriter, read_e2e
from e2econd.data.geometry import CHANNELS
from e2econd.data.hits import hits_to_image, image_to_hits
from e2econd.data.hitstore import HitStore
from e2econd.data.preprocess import preprocess
from e2econd.data.transforms import fit_transforms


def jets(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, 125, 125), np.float32)
    for i in range(n):
        k = rng.integers(0, 40, 2)  # varying multiplicities, some empty channels
        for c in range(2):
            x[i, c, rng.integers(0, 125, k[c]), rng.integers(0, 125, k[c])] = rng.lognormal(0, 1, k[c])
        t = rng.lognormal(0, 1, (25, 25)).astype(np.float32) * (rng.random((25, 25)) < 0.04)
        x[i, 2] = np.kron(t / np.float32(25), np.ones((5, 5), np.float32))
    x[0] = 0.0  # an empty jet
    return x, rng.uniform(50, 500, n), rng.uniform(1, 200, n), rng.integers(0, 2, n).astype(np.float32)


@pytest.fixture(scope="module")
def hitdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hs")
    with E2EWriter(d / "in.h5") as w:
        w.write(*jets(120, 1))
    preprocess([d / "in.h5"], d / "hits", chunk_size=32, progress=False)
    return d


def test_hits_match_images(hitdir):
    orig = read_e2e(hitdir / "in.h5")
    for split in ("train", "val", "test"):
        store = HitStore(hitdir / "hits", split)
        assert len(store) > 0
        for i in range(len(store)):
            r = int(store.jets["row"][i])
            hs = store.hits(i)
            assert np.array_equal(hits_to_image(hs), orig.images[r])
            ref = image_to_hits(orig.images[r])
            for c in range(3):
                for f in ("ieta", "iphi", "size", "deta", "dphi", "e"):
                    assert np.array_equal(getattr(hs[c], f), getattr(ref[c], f))
                assert store.jets[f"n_{CHANNELS[c]}"][i] == len(ref[c])
            assert store.jets["pt"][i] == orig.pt[r] and store.jets["y"][i] == orig.y[r]


def reference_batch(store: HitStore, idx, channels):
    feats, chan, size, cu = [], [], [], [0]
    for i in idx:
        hs = store.hits(int(i))
        for name in channels:
            c = CHANNELS.index(name)
            h = hs[c]
            for k in range(len(h)):
                feats.append([h.deta[k], h.dphi[k], np.float32(h.e[k])])
                chan.append(c)
                size.append(h.size[k])
        cu.append(len(feats))
    return np.array(feats, np.float32).reshape(-1, 3), np.array(chan), np.array(size), np.array(cu)


@pytest.mark.parametrize("channels", [CHANNELS, ("hcal", "tracks"), ("ecal",)])
def test_batch_matches_reference_loop(hitdir, channels):
    store = HitStore(hitdir / "hits", "train")
    rng = np.random.default_rng(0)
    idx = np.concatenate([[0, 0], rng.integers(0, len(store), 25), [len(store) - 1]])
    b = store.batch(idx, channels)
    feats, chan, size, cu = reference_batch(store, idx, channels)
    assert b.feats.dtype == np.float32 and b.channel.dtype == np.int64 and b.cu_seqlens.dtype == np.int32
    assert b.size.dtype == np.int8
    np.testing.assert_array_equal(b.feats, feats)
    np.testing.assert_array_equal(b.channel, chan)
    np.testing.assert_array_equal(b.size, size)
    np.testing.assert_array_equal(b.cu_seqlens, cu)
    np.testing.assert_array_equal(b.pt, store.jets["pt"][idx])
    np.testing.assert_array_equal(b.counts.sum(1), np.diff(cu))
    assert b.max_seqlen == np.diff(cu).max()
    t = b.to_torch()
    assert isinstance(t.feats, torch.Tensor) and t.feats.shape == b.feats.shape


def test_all_splits_and_transforms(hitdir):
    every = HitStore(hitdir / "hits", None)
    parts = [HitStore(hitdir / "hits", s) for s in ("train", "val", "test")]
    assert len(every) == 120 == sum(len(p) for p in parts)
    assert sorted(every.jets["row"].tolist()) == list(range(120))
    train = parts[0]
    saved = train.transforms
    refit = fit_transforms(train)
    np.testing.assert_allclose(refit.features.shift, saved.features.shift, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(refit.features.scale, saved.features.scale, rtol=1e-9)
    np.testing.assert_allclose(refit.features.e0, saved.features.e0)
    np.testing.assert_allclose(refit.condition.shift, saved.condition.shift, rtol=1e-12)
    # standardised train hits: zero mean, unit variance per channel and feature (no padding counted)
    b = train.batch(np.arange(len(train)))
    z = saved.forward(b.feats.astype(np.float64), b.channel)
    for c in range(3):
        zc = z[b.channel == c]
        np.testing.assert_allclose(zc.mean(0), 0, atol=1e-6)
        np.testing.assert_allclose(zc.std(0), 1, rtol=1e-6)
    with pytest.raises(IndexError):
        train.batch([len(train)])
