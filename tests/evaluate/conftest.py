"""Synthetic E2E-like jets for the evaluate tests (no external data needed)."""

from __future__ import annotations

import numpy as np
import pytest


def synth_images(n: int, seed: int = 0, scale: float = 1.0, spread: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Random sparse jet images (n, 3, 125, 125) float32 and their pt (GeV).

    Tracks: ~25 pixels, ECAL: ~250 pixels (plus a few small negative noise pixels), HCAL: ~30
    towers stored as uniform 5x5 blocks of tower energy / 25. Energies scale with a random
    pt in [300, 600] GeV and are multiplied by ``scale``.
    """
    rng = np.random.default_rng(seed)
    imgs = np.zeros((n, 3, 125, 125), dtype=np.float32)
    pt = rng.uniform(300.0, 600.0, n)
    for i in range(n):
        for c, k in ((0, 25), (1, 250)):
            m = rng.poisson(k)
            ie = np.clip(np.round(62 + rng.normal(0, spread / 0.0174, m)), 0, 124).astype(int)
            ip = np.clip(np.round(62 + rng.normal(0, spread / 0.0174, m)), 0, 124).astype(int)
            e = rng.exponential(1.0, m)
            frac = 0.4 * rng.lognormal(0.0, 0.15)
            np.add.at(imgs[i, c], (ie, ip), (e / e.sum() * frac * pt[i]).astype(np.float32))
        neg = rng.integers(0, 125, (5, 2))
        imgs[i, 1, neg[:, 0], neg[:, 1]] = -0.02
        m = rng.poisson(30)
        te = np.clip(np.round(12 + rng.normal(0, spread / 0.087, m)), 0, 24).astype(int)
        tp = np.clip(np.round(12 + rng.normal(0, spread / 0.087, m)), 0, 24).astype(int)
        tow = np.zeros((25, 25))
        e = rng.exponential(1.0, m)
        np.add.at(tow, (te, tp), e / e.sum() * 0.5 * rng.lognormal(0.0, 0.15) * pt[i])
        imgs[i, 2] = np.kron(tow / 25.0, np.ones((5, 5))).astype(np.float32)
    imgs *= np.float32(scale)
    return imgs, pt


def write_h5(path, images, pt, m0=None, y=None) -> None:
    """Write an E2E HDF5 file (X_jets (N,125,125,3), pt, m0, y) with plain h5py."""
    import h5py

    n = len(images)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "X_jets",
            data=np.transpose(images, (0, 2, 3, 1)),
            chunks=(1, 125, 125, 3),
            compression="gzip",
            compression_opts=1,
        )
        f.create_dataset("pt", data=np.asarray(pt, np.float64))
        f.create_dataset("m0", data=np.full(n, 170.0) if m0 is None else np.asarray(m0, np.float64))
        f.create_dataset("y", data=np.ones(n, np.float32) if y is None else np.asarray(y, np.float32))


@pytest.fixture(scope="session")
def synth():
    return synth_images


@pytest.fixture(scope="session")
def h5writer():
    return write_h5


@pytest.fixture(scope="session")
def toyjets():
    """The ``tests/evaluate/toyjets.py`` module (realistic toy E2E jets and distortions)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("e2econd_tests_toyjets", Path(__file__).with_name("toyjets.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_hit_dir(d, images, pt, m0, y, split="test"):
    """A hit directory (documented schema, written with e2econd.data) holding ``images`` as split ``split``."""
    import json

    import pyarrow.parquet as pq

    from e2econd.data.hits import images_to_hits
    from e2econd.data.hitstore import hits_to_table

    d.mkdir(parents=True)
    n = len(images)
    jets = {"jet_id": np.arange(n), "source": np.zeros(n, np.int32), "row": np.arange(n), "pt": pt, "m0": m0, "y": y}
    pq.write_table(hits_to_table(jets, images_to_hits(images)), d / f"{split}.parquet", row_group_size=64)
    (d / "manifest.json").write_text(json.dumps({"format": "e2econd-hits"}))
    return d


@pytest.fixture(scope="session")
def hitdir_writer():
    return write_hit_dir
