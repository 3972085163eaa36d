"""Fixtures shared by tests in several subdirectories (none autouse: each module opts in).

Real-format E2E files: the committed slices in ``tests/fixtures/`` (16 jets of each file of an
independent generator, see tests/fixtures/README.md). Nothing here reads outside the checkout; the
full files are used only by optional slow tests, through ``$E2ECOND_SHARED_DATA``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
QG_STEM = "E2Esim_QG_IMGjet_R0.4_pu0_n300_seed101"
TOP_STEM = "E2Esim_TOP_IMGjet_R0.8_pu0_n200_seed102"


def fixture_files() -> list[Path]:
    """The four committed real-format fixture files (Parquet first, then HDF5, each sorted)."""
    files = sorted(FIXTURES.glob("*.parquet")) + sorted(FIXTURES.glob("*.h5"))
    assert len(files) == 4, f"tests/fixtures is incomplete: {files}"
    return files


@pytest.fixture(scope="session")
def e2e_fixtures() -> Path:
    """Directory of the committed real-format E2E slices (always present in a checkout)."""
    fixture_files()
    return FIXTURES


@pytest.fixture(scope="session")
def shared_data():
    """Callable returning the fixture directory (the name older tests use for the real-format files)."""
    return lambda: FIXTURES


@pytest.fixture(scope="session")
def full_shared_data() -> Path:
    """The full files of the independent generator, for optional slow tests only: ``$E2ECOND_SHARED_DATA``
    must point at them, otherwise the test is skipped with the reason."""
    d = os.environ.get("E2ECOND_SHARED_DATA")
    if not d or not (Path(d) / f"{QG_STEM}.h5").is_file():
        pytest.skip(
            "optional: set E2ECOND_SHARED_DATA to the folder of the full independent-generator files "
            "(the default suite uses tests/fixtures)"
        )
    return Path(d)


@pytest.fixture
def one_thread():
    """Tiny models: one thread is fastest and avoids oversubscribing the shared CPU.

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch  # lazy: sessions that never use this fixture need not import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------ toy set
# A toy set distribution whose answer is known, for tests that must fail when learning fails:
# ECAL-only jets made of one Gaussian blob of hits. The label y decides the hit count
# (2 + Poisson(8) vs 2 + Poisson(28)), the blob (centre Δη +0.12, σ 0.05 vs centre −0.12, σ 0.09)
# and the hit energy scale (1 vs 4 GeV); energies also scale with pt / 150 GeV; log-normal spread 0.35.
TOY_PITCH = 0.0174


def make_toy_images(pt, y, seed: int):
    """Toy jet images (n, 3, 125, 125) float32 for conditions pt (GeV) and y; hits on one crystal add up."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.zeros((len(pt), 3, 125, 125), np.float32)
    for i in range(len(pt)):
        big = int(y[i]) == 1
        k = 2 + int(rng.poisson(28 if big else 8))
        d = rng.normal(0.0, 0.09 if big else 0.05, (k, 2))
        d[:, 0] += -0.12 if big else 0.12
        ij = np.clip(np.rint(62 + d / TOY_PITCH), 0, 124).astype(int)
        e = (pt[i] / 150.0) * (4.0 if big else 1.0) * rng.lognormal(0.0, 0.35, k)
        np.add.at(x[i, 1], (ij[:, 0], ij[:, 1]), e.astype(np.float32))
    return x


@pytest.fixture(scope="session")
def toy_images():
    """The toy's image generator, ``toy_images(pt, y, seed)`` (a fresh draw is the target of W1 tests)."""
    return make_toy_images


def toy_config(max_steps: int = 1200):
    """Tiny denoiser (width 32, 2 blocks) and training settings for the toy (about 12 s on 1 thread)."""
    from e2econd import config as C

    cfg = C.Config(
        model=C.ModelConfig(width=32, blocks=2, heads=2, cond_width=32, fourier_features=8),
        multiplicity=C.MultiplicityConfig(components=2, hidden=16, steps=300),
    )
    cfg.data.channels = ["ecal"]
    for k, v in dict(
        max_steps=max_steps,
        batch_size=32,
        lr=3e-3,
        warmup_steps=20,
        ema_decay=0.99,
        val_every=10**6,
        ckpt_every=10**6,
        keep_step_ckpts=False,
        log_every=100,
        seed=0,
        bucket_pool=4,
    ).items():
        setattr(cfg.train, k, v)
    return C.validate(cfg)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """Hit directory of 600 toy jets (pt ~ U[100, 200] GeV, y alternating), made by the real pipeline:
    images -> E2E Parquet (E2EWriter) -> ``preprocess``."""
    import numpy as np

    from e2econd.data.e2e_io import E2EWriter
    from e2econd.data.preprocess import preprocess

    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(1)
    pt, m0, y = rng.uniform(100, 200, 600), rng.uniform(5, 30, 600), (np.arange(600) % 2).astype(np.float32)
    with E2EWriter(root / "toy.parquet") as w:
        w.write(make_toy_images(pt, y, seed=2), pt, m0, y)
    preprocess([root / "toy.parquet"], root / "hits", progress=False)
    return root / "hits"


@pytest.fixture(scope="session")
def toy_run(toy_data, tmp_path_factory):
    """The toy model trained once per session with ``e2econd.train.train`` on CPU, 1 thread.

    Returns (run_dir, data_dir, train_seconds)."""
    import time

    import torch

    from e2econd.train import train

    run = tmp_path_factory.mktemp("toyrun") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        train(toy_data, run, toy_config(), device="cpu", progress=False)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(n)
    return run, toy_data, seconds


@pytest.fixture(scope="session")
def real_hitdir(e2e_fixtures, tmp_path_factory):
    """Hit directory of the 32 jets of the two Parquet fixtures (independent generator, three channels)."""
    from e2econd.data.preprocess import preprocess

    d = tmp_path_factory.mktemp("realhits")
    inputs = sorted(e2e_fixtures.glob("*.parquet"))
    preprocess(inputs, d / "hits", chunk_size=8, split="0.6,0.2,0.2", progress=False)
    return d / "hits"


@pytest.fixture(scope="session")
def tower_config():
    """``tower_config(max_steps=6, channels=..., **train)``: see :func:`make_tower_config`."""
    return make_tower_config


def make_tower_config(max_steps: int = 6, channels=("tracks", "ecal", "hcal"), **train_kw):
    """Tiny tower-family model (width 16, 1 block) for plumbing tests (seconds on 1 thread)."""
    from e2econd import config as C

    cfg = C.preset("cpu", "towers")
    cfg.model = C.ModelConfig(family="towers", width=16, blocks=1, heads=2, cond_width=16, fourier_features=4)
    cfg.multiplicity = C.MultiplicityConfig(components=2, hidden=8, steps=30)
    cfg.data.channels = list(channels)
    kw = dict(max_steps=max_steps, batch_size=4, warmup_steps=2, log_every=2, val_every=3, ckpt_every=3)
    kw.update(val_jets=4, bucket_pool=2, seed=7, threads=0, time_limit_min=0.0)
    kw.update(train_kw)
    for k, v in kw.items():
        setattr(cfg.train, k, v)
    return C.validate(cfg)
