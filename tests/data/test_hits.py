"""Image <-> hit sets: lossless round trip (real-format fixtures and synthetic edge cases),
HCAL towers, zero suppression, --max-hits energy accounting (snapping: test_snap.py)."""

from __future__ import annotations

import numpy as np
import pytest

from e2econd.data.e2e_io import read_e2e
from e2econd.data.geometry import CENTRE, PIXEL
from e2econd.data.hits import (
    batch_hits_to_images,
    hits_to_image,
    image_to_hits,
    images_to_hits,
)


def synthetic_images(n: int, seed: int = 0) -> np.ndarray:
    """Sparse jets: positive tracks, ECAL with small negative noise, HCAL as uniform 5x5 towers."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, 125, 125), np.float32)
    for i in range(n):
        for c, k in ((0, 15), (1, 200)):
            ie, ip = rng.integers(0, 125, k), rng.integers(0, 125, k)
            x[i, c, ie, ip] = rng.lognormal(0, 1.5, k).astype(np.float32)
        ie, ip = rng.integers(0, 125, 30), rng.integers(0, 125, 30)
        x[i, 1, ie, ip] = -rng.uniform(0.001, 0.1, 30).astype(np.float32)
        towers = rng.lognormal(0, 1.5, (25, 25)).astype(np.float32) * (rng.random((25, 25)) < 0.08)
        x[i, 2] = np.kron(towers / np.float32(25), np.ones((5, 5), np.float32))
    return x


def reference_hits(img: np.ndarray, threshold: float, negatives: str) -> list[dict]:
    """Slow per-pixel/per-block oracle: {(ieta, iphi, size): e} per channel."""
    out = []
    for c in range(2):
        d = {}
        for ie in range(125):
            for ip in range(125):
                v = img[c, ie, ip]
                if (v > threshold) if negatives == "drop" else (abs(v) > threshold):
                    d[(ie, ip, 1)] = float(v)
        out.append(d)
    d = {}
    for be in range(0, 125, 5):
        for bp in range(0, 125, 5):
            block = img[2, be : be + 5, bp : bp + 5]
            if np.all(block == block[0, 0]):
                v = block[0, 0]
                if (v > threshold) if negatives == "drop" else (abs(v) > threshold):
                    d[(be, bp, 5)] = float(np.float64(v) * 25)
            else:
                for ie in range(be, be + 5):
                    for ip in range(bp, bp + 5):
                        v = img[2, ie, ip]
                        if (v > threshold) if negatives == "drop" else (abs(v) > threshold):
                            d[(ie, ip, 1)] = float(v)
    out.append(d)
    return out


def as_dict(hs) -> dict:
    return {(int(a), int(b), int(s)): float(e) for a, b, s, e in zip(hs.ieta, hs.iphi, hs.size, hs.e)}


FIXTURE_NAMES = [
    "E2Esim_QG_IMGjet_R0.4_pu0_n300_seed101.h5",
    "E2Esim_TOP_IMGjet_R0.8_pu0_n200_seed102.test.snappy.parquet",
]


def check_round_trip_exact(path, min_jets: int) -> None:
    """image -> hits -> image reproduces every pixel of a real-format file bit-for-bit."""
    chunk = read_e2e(path)
    assert len(chunk) >= min_jets
    batch = images_to_hits(chunk.images)
    back = batch_hits_to_images(batch)
    assert np.array_equal(back, chunk.images)
    # HCAL of this producer is made of uniform towers: one hit per tower, none kept as pixels
    hc = batch.channels[2]
    assert np.all(hc.size == 5) and batch.nonuniform_blocks.sum() == 0
    n_nonzero_pixels = (chunk.images[:, 2] != 0).reshape(len(chunk), -1).sum(1)
    assert np.array_equal(hc.counts * 25, n_nonzero_pixels)
    # tower energy = sum of its 25 pixels (exact in float64) and channel sums agree
    assert np.array_equal(hc.sums(), chunk.images[:, 2].reshape(len(chunk), -1).astype(np.float64).sum(1))
    # ECAL has small negative values and they are kept by default
    assert (batch.channels[1].e < 0).any()
    # per-jet API agrees with the batch API
    for i in (0, 7, len(chunk) - 1):
        hs = image_to_hits(chunk.images[i])
        assert np.array_equal(hits_to_image(hs), chunk.images[i])
        for c in range(3):
            assert as_dict(hs[c]) == as_dict(batch.channels[c].hitset(i))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_round_trip_exact(name, e2e_fixtures):
    """On the committed 16-jet slices of the independent generator's files (tests/fixtures)."""
    check_round_trip_exact(e2e_fixtures / name, min_jets=16)


@pytest.mark.slow
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_full_shared_files_round_trip(name, full_shared_data):
    """Optional: the full 200/300-jet files, when $E2ECOND_SHARED_DATA points at them (skipped otherwise)."""
    check_round_trip_exact(full_shared_data / name, min_jets=200)


def test_deltas_geometry():
    img = np.zeros((3, 125, 125), np.float32)
    img[0, 62, 62] = 1.0
    img[0, 0, 124] = 2.0
    img[2, 60:65, 60:65] = 0.4  # tower whose centre is the image centre
    hs = image_to_hits(img)
    t = {
        (int(a), int(b)): (float(de), float(dp)) for a, b, de, dp in zip(hs[0].ieta, hs[0].iphi, hs[0].deta, hs[0].dphi)
    }
    assert t[(62, 62)] == (0.0, 0.0)
    assert t[(0, 124)] == pytest.approx(((0 - CENTRE) * PIXEL, (124 - CENTRE) * PIXEL), abs=1e-6)
    assert hs[2].size.tolist() == [5] and hs[2].ieta.tolist() == [60] and hs[2].deta.tolist() == [0.0]
    assert hs[2].e[0] == pytest.approx(10.0, rel=1e-6)


def test_synthetic_against_reference_with_threshold_and_negatives():
    imgs = synthetic_images(3, seed=1)
    imgs[0, 2, 10:15, 20:25] = np.float32(0.3)
    imgs[0, 2, 12, 22] = np.float32(0.5)  # non-uniform block
    imgs[1, 2, 120:125, 120:125] = 0.0
    imgs[1, 2, 121, 124] = np.float32(0.2)  # lone pixel at the edge: non-uniform block
    for threshold, neg in ((0.0, "keep"), (0.05, "keep"), (0.0, "drop"), (0.25, "drop")):
        batch = images_to_hits(imgs, threshold, neg)
        for i in range(len(imgs)):
            ref = reference_hits(imgs[i], threshold, neg)
            for c in range(3):
                assert as_dict(batch.channels[c].hitset(i)) == pytest.approx(ref[c])
            # every kept pixel reproduced exactly, every removed pixel is zero
            back = hits_to_image(batch.hitsets(i))
            keep = (imgs[i] > threshold) if neg == "drop" else (np.abs(imgs[i]) > threshold)
            assert np.array_equal(back[keep], imgs[i][keep])
            assert np.all(back[~keep] == 0)
        assert batch.nonuniform_blocks.tolist() == [1, 1, 0]
    # default keeps the negative ECAL values, drop removes them
    assert (images_to_hits(imgs).channels[1].e < 0).sum() > 0
    assert (images_to_hits(imgs, negatives="drop").channels[1].e < 0).sum() == 0


def test_max_hits_energy_accounting():
    imgs = synthetic_images(4, seed=2)
    full = images_to_hits(imgs)
    cut = images_to_hits(imgs, max_hits=10)
    for c in range(3):
        f, k = full.channels[c], cut.channels[c]
        assert np.all(k.counts == np.minimum(f.counts, 10))
        # kept + dropped = total energy, per jet
        np.testing.assert_allclose(k.sums() + k.dropped, f.sums(), rtol=1e-12, atol=1e-9)
        for i in range(4):
            fe = np.sort(f.hitset(i).e)[::-1]
            ke = np.sort(k.hitset(i).e)[::-1]
            assert np.array_equal(ke, fe[:10])  # the N most energetic
            assert k.dropped[i] == pytest.approx(float(fe[10:].astype(np.float64).sum()), abs=1e-9)


def test_empty_jet_and_empty_batch():
    imgs = np.zeros((2, 3, 125, 125), np.float32)
    imgs[1, 0, 5, 5] = 1.0
    b = images_to_hits(imgs)
    assert [int(x) for x in b.channels[0].counts] == [0, 1]
    assert all(len(h) == 0 for h in b.hitsets(0))
    assert np.array_equal(batch_hits_to_images(b), imgs)
    e = images_to_hits(np.zeros((0, 3, 125, 125), np.float32))
    assert e.n_jets == 0 and batch_hits_to_images(e).shape == (0, 3, 125, 125)
