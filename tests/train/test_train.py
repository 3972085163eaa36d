"""Training: batching, dequantisation, loss, checkpoints, exact resume, DDP gradients, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from e2econd import config as C
from e2econd.batching import BucketBatcher, dequantize, draw, make_batch, shard, step_generator
from e2econd.data.geometry import CENTRE, CHANNELS, PIXEL
from e2econd.data.hitstore import HitStore, hit_schema
from e2econd.data.transforms import fit_transforms
from e2econd.diffusion.formulations import VPred
from e2econd.diffusion.schedule import CosineSchedule
from e2econd.errors import E2EInputError
from e2econd.model import SetTransformer
from e2econd.objective import loss_sum
from e2econd.rundir import load_run
from e2econd.train import _PackedForward, train

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: torch uses one thread


def _jet_hits(rng, c):
    n = int(rng.integers(2, 9))
    if CHANNELS[c] == "hcal":
        ieta = (rng.integers(8, 17, n) * 5).astype(np.int16)
        iphi = (rng.integers(8, 17, n) * 5).astype(np.int16)
        size, off = np.full(n, 5, np.int8), 2
    else:
        ieta = rng.integers(40, 85, n).astype(np.int16)
        iphi = rng.integers(40, 85, n).astype(np.int16)
        size, off = np.ones(n, np.int8), 0
    deta = ((ieta + off - CENTRE) * PIXEL).astype(np.float32)
    dphi = ((iphi + off - CENTRE) * PIXEL).astype(np.float32)
    e = rng.exponential(2.0, n)
    return dict(ieta=ieta, iphi=iphi, size=size, deta=deta, dphi=dphi, e=e)


def make_data_dir(path: Path, n_train=16, n_val=4, seed=0) -> Path:
    """A tiny hit directory in the DESIGN.md format (Parquet per split, manifest, fitted transforms)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    schema = hit_schema()
    for split, n in (("train", n_train), ("val", n_val), ("test", 2)):
        cols = {k: [] for k in schema.names}
        for j in range(n):
            pt = float(rng.uniform(400, 800))
            cols["jet_id"].append(j)
            cols["source"].append(0)
            cols["row"].append(j)
            cols["pt"].append(pt)
            cols["m0"].append(float(rng.uniform(50, 200)))
            cols["y"].append(float(j % 2))
            for c, name in enumerate(CHANNELS):
                h = _jet_hits(rng, c)
                cols[f"n_{name}"].append(len(h["e"]))
                cols[f"sum_{name}"].append(float(h["e"].sum()))
                cols[f"dropped_{name}"].append(0.0)
                for f, v in h.items():
                    cols[f"{name}_{f}"].append(v.tolist())
        table = pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()}, schema=schema)
        pq.write_table(table, path / f"{split}.parquet")
    (path / "manifest.json").write_text(json.dumps({"inputs": [], "synthetic": True}))
    fit_transforms(HitStore(path, "train")).save(path / "transforms.json")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("hits") / "d")


def tiny_config(**train_kw) -> C.Config:
    cfg = C.Config(
        model=C.ModelConfig(width=16, blocks=1, heads=2, cond_width=16, fourier_features=4),
        multiplicity=C.MultiplicityConfig(components=2, hidden=8, steps=30),
    )
    cfg.data.channels = ["ecal", "hcal"]
    kw = dict(
        max_steps=6,
        batch_size=4,
        warmup_steps=2,
        log_every=2,
        val_every=3,
        ckpt_every=3,
        val_jets=4,
        bucket_pool=2,
        seed=7,
    )
    kw.update(train_kw)
    for k, v in kw.items():
        setattr(cfg.train, k, v)
    return C.validate(cfg)


# ------------------------------------------------------------------------------ pieces
def test_batcher_buckets_and_is_deterministic():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 1000, 500)
    b1 = BucketBatcher(n, 16, pool=8, seed=3)
    b2 = BucketBatcher(n, 16, pool=8, seed=3)
    per_epoch = len(b1.epoch(0))
    seen = np.concatenate([b1.batch(s) for s in range(per_epoch)])
    assert np.array_equal(np.sort(seen), np.arange(500))  # an epoch covers every jet once
    assert all(np.array_equal(b1.batch(s), b2.batch(s)) for s in (0, 5, per_epoch + 3))  # (seed, step) only
    assert not np.array_equal(b1.batch(0), b1.batch(per_epoch))  # epochs reshuffle

    def padding(batches):
        return sum(len(b) * n[b].max() - n[b].sum() for b in batches)

    rand = np.array_split(np.random.default_rng(1).permutation(500), per_epoch)
    assert padding(b1.epoch(0)) < 0.25 * padding(rand)
    capped = BucketBatcher(n, 16, pool=8, seed=3, max_tokens=4000)
    assert all(n[b].sum() <= 4000 or len(b) == 1 for b in capped.epoch(0))


def test_shard_covers_batch():
    for B in (1, 5, 8):
        for world in (1, 2, 3):
            if B < world:
                continue
            parts = [np.arange(B)[shard(B, r, world)] for r in range(world)]
            assert np.array_equal(np.concatenate(parts), np.arange(B)) and all(len(p) for p in parts)


def test_dequantize_stays_inside_pixel_and_tower():
    feats = torch.tensor([[0.0, 0.0, 1.0], [0.1, -0.2, 2.0]]).repeat(500, 1)
    size = torch.tensor([1, 5], dtype=torch.int8).repeat(500)
    d = draw(step_generator(0, 0), 1, feats.shape[0], 0.0)
    out = dequantize(feats, size, d.dq)
    off = (out[:, :2] - feats[:, :2]) / PIXEL
    assert torch.all(off[size == 1].abs() <= 0.5) and torch.all(off[size == 5].abs() <= 2.5)
    assert off[size == 5].abs().max() > 2.0 and off[size == 1].abs().max() > 0.4  # fills the cell
    assert torch.equal(out[:, 2], feats[:, 2])  # energy untouched


def test_stratified_t():
    d = draw(step_generator(1, 2), 64, 10, 0.25)
    t = torch.sort(d.t).values
    assert torch.all((t >= 0) & (t < 1))
    assert torch.all((t * 64).floor() == torch.arange(64))  # one t per stratum


def test_loss_is_per_hit_mse(data_dir):
    store = HitStore(data_dir, "train")
    packed = store.batch([0, 3, 5], ["ecal", "hcal"])
    b = make_batch(packed, store.transforms, torch.device("cpu"), None)
    torch.manual_seed(0)
    m = SetTransformer(tiny_config().model)
    d = draw(step_generator(0, 0), 3, b.n_hits, 0.0)
    s = loss_sum(m, b, d.t, None, d.eps, VPred())
    # the fresh model predicts v = 0, so the loss is sum of v² with v = a eps - s x0 (closed form)
    lengths = torch.diff(b.cu_seqlens.long())
    a, sg = CosineSchedule().alpha_sigma(d.t)
    v = torch.repeat_interleave(a, lengths)[:, None] * d.eps - torch.repeat_interleave(sg, lengths)[:, None] * b.x0
    torch.testing.assert_close(s, (v**2).sum())
    # transformed features: raw features through the saved transform
    raw = torch.as_tensor(packed.feats)
    torch.testing.assert_close(b.x0, store.transforms.features.forward(raw, torch.as_tensor(packed.channel)))


# ------------------------------------------------------------------------ train runs
def _weights(path):
    ck = torch.load(path, weights_only=False)
    return ck["model"], ck["ema"], ck


def test_train_checkpoint_and_load_run(data_dir, tmp_path):
    run = tmp_path / "run"
    summary = train(data_dir, run, tiny_config(), device="cpu", progress=False)
    assert summary["steps"] == 6
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    for key in (
        "model",
        "ema",
        "optimizer",
        "scheduler",
        "rng",
        "step",
        "config",
        "transforms",
        "multiplicity",
        "channels",
        "version",
        "cond_table",
        "provenance",
    ):
        assert key in ck, key
    assert ck["step"] == 6 and ck["channels"] == ["ecal", "hcal"]
    assert (run / "checkpoints" / "step_000003.pt").exists()
    train_jets = HitStore(data_dir, "train").jets
    np.testing.assert_array_equal(ck["cond_table"]["pt"], train_jets["pt"])
    cfg_json = json.loads((run / "config.json").read_text())
    assert "provenance" in cfg_json and C.from_dict(cfg_json).to_dict() == tiny_config().to_dict()
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6]
    assert all(np.isfinite(r["loss"]) and r["jets_per_s"] > 0 for r in rows if "loss" in r)
    lr = load_run(run, "cpu")
    assert not lr.model.training and lr.step == 6 and lr.channels == ["ecal", "hcal"]
    for k, v in lr.model.state_dict().items():
        assert torch.equal(v, ck["ema"][k])
    counts = lr.multiplicity.sample(torch.zeros(5), torch.zeros(5), torch.ones(5, dtype=torch.long))
    assert counts.shape == (5, 3) and torch.all(counts[:, 0] == 0)
    # a second fresh run into the same directory is refused
    with pytest.raises(E2EInputError, match="--resume"):
        train(data_dir, run, tiny_config(), device="cpu", progress=False)


def test_resume_is_exact(data_dir, tmp_path):
    cfg = tiny_config(cond_drop=0.3)
    full = tmp_path / "full"
    train(data_dir, full, cfg, device="cpu", progress=False)
    part = tmp_path / "part"
    train(data_dir, part, cfg, device="cpu", progress=False, stop_at=3)  # "interrupted" after step 3
    assert torch.load(part / "checkpoints" / "last.pt", weights_only=False)["step"] == 3
    train(data_dir, part, None, resume=True, device="cpu", progress=False)
    m1, e1, c1 = _weights(full / "checkpoints" / "last.pt")
    m2, e2, c2 = _weights(part / "checkpoints" / "last.pt")
    assert c2["step"] == 6
    for k in m1:
        assert torch.equal(m1[k], m2[k]), k
        assert torch.equal(e1[k], e2[k]), k
    assert not torch.equal(m1["out.weight"], torch.zeros_like(m1["out.weight"]))  # it did train


def test_time_limit_plans_the_cosine_to_end_in_time(data_dir, tmp_path):
    """A time-limited run stops near its limit with the learning rate decayed, and says it is finished."""
    import time

    limit_min = 0.05  # 3 s
    cfg = tiny_config(
        max_steps=100000,
        time_limit_min=limit_min,
        val_every=100000,
        ckpt_every=100000,
        warmup_steps=2,
        min_lr_ratio=0.05,
        lr=1e-3,
    )
    t0 = time.time()
    train(data_dir, tmp_path / "run", cfg, device="cpu", progress=False)
    wall = time.time() - t0
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert ck["finished"] and 10 <= ck["step"] == ck["planned_end"] < 100000
    assert wall < 60 * limit_min + 20  # set-up (multiplicity fit, data) comes on top of the limit
    lr_end = ck["optimizer"]["param_groups"][0]["lr"]
    assert lr_end < 0.2 * 1e-3, "the cosine should have decayed by the planned end"


def test_load_run_rejects_incompatible_checkpoint(data_dir, tmp_path):
    run = tmp_path / "r"
    train(data_dir, run, tiny_config(max_steps=1), device="cpu", progress=False)
    p = run / "checkpoints" / "last.pt"
    ck = torch.load(p, weights_only=False)
    ck["version"] = "99.0.0"
    torch.save(ck, p)
    with pytest.raises(E2EInputError, match="incompatible"):
        load_run(run, "cpu")
    ck["format"] = 42
    torch.save(ck, p)
    with pytest.raises(E2EInputError, match="format"):
        load_run(run, "cpu")


# ---------------------------------------------------------------------------------- DDP
_WORKER = textwrap.dedent("""
    import os, sys
    import numpy as np, torch, torch.distributed as dist
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_train import tiny_config
    from e2econd.data.hitstore import HitStore
    from e2econd.diffusion.formulations import VPred
    from e2econd.model import SetTransformer
    from e2econd.train import _PackedForward, draw, loss_sum, make_batch, shard, step_generator, train
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="file://" + {init!r}, rank=rank, world_size=world)
    cfg = tiny_config()
    store = HitStore({data!r}, "train")
    gidx = np.arange(7)
    n_g = store.batch(gidx, cfg.data.channels).counts.sum(1)
    d = draw(step_generator(5, 0), len(gidx), int(n_g.sum()), 0.5)
    js = shard(len(gidx), rank, world)
    off = np.concatenate([[0], np.cumsum(n_g)])
    hs = slice(int(off[js.start]), int(off[js.stop]))
    torch.manual_seed(0)
    model = SetTransformer(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    net = DDP(_PackedForward(model))
    b = make_batch(store.batch(gidx[js], cfg.data.channels), store.transforms, torch.device("cpu"), d.dq[hs])
    s = loss_sum(net, b, d.t[js], d.drop[js], d.eps[hs], VPred())
    (s * world / (3.0 * n_g.sum())).backward()
    if rank == 0:
        torch.save({{k: p.grad for k, p in model.named_parameters()}}, {grads!r})
    train({data!r}, {run!r}, cfg, device="cpu", progress=False)
    dist.destroy_process_group()
""")


def _single_process_grads(data_dir):
    cfg = tiny_config()
    store = HitStore(data_dir, "train")
    gidx = np.arange(7)
    n_g = store.batch(gidx, cfg.data.channels).counts.sum(1)
    d = draw(step_generator(5, 0), len(gidx), int(n_g.sum()), 0.5)
    torch.manual_seed(0)
    model = SetTransformer(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    b = make_batch(store.batch(gidx, cfg.data.channels), store.transforms, torch.device("cpu"), d.dq)
    s = loss_sum(_PackedForward(model), b, d.t, d.drop, d.eps, VPred())
    (s / (3.0 * n_g.sum())).backward()
    return {k: p.grad for k, p in model.named_parameters()}


def test_ddp_two_gloo_processes_match_single_process(data_dir, tmp_path):
    """2 gloo ranks: gradients equal the single-process gradient of the same global batch, and a
    whole DDP training run ends with the single-process weights (up to float summation order)."""
    script = tmp_path / "worker.py"
    grads_path, run = tmp_path / "grads.pt", tmp_path / "ddp_run"
    script.write_text(
        _WORKER.format(
            tests=str(Path(__file__).parent),
            init=str(tmp_path / "init"),
            data=str(data_dir),
            grads=str(grads_path),
            run=str(run),
        )
    )
    env = dict(
        os.environ,
        WORLD_SIZE="2",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    single = _single_process_grads(data_dir)
    ref_run = tmp_path / "single_run"
    train(data_dir, ref_run, tiny_config(), device="cpu", progress=False)
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outs)
    ddp = torch.load(grads_path)
    for k, g in single.items():
        torch.testing.assert_close(ddp[k], g, rtol=1e-5, atol=1e-7, msg=k)
    assert any(g.abs().sum() > 0 for g in single.values())
    m_ddp, e_ddp, _ = _weights(run / "checkpoints" / "last.pt")
    m_one, e_one, _ = _weights(ref_run / "checkpoints" / "last.pt")
    for k in m_one:
        torch.testing.assert_close(m_ddp[k], m_one[k], rtol=1e-4, atol=1e-5, msg=k)
        torch.testing.assert_close(e_ddp[k], e_one[k], rtol=1e-4, atol=1e-5, msg=k)


# ---------------------------------------------------------------------------------- CLI
def test_cli_bad_config_fails_before_any_work(data_dir, tmp_path):
    from click.testing import CliRunner

    from e2econd.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"width": 30, "heads": 4}}))
    out = tmp_path / "never"
    r = CliRunner().invoke(main, ["train", str(data_dir), "--out", str(out), "--config", str(bad)])
    assert r.exit_code == 2 and "model.width" in r.output and not out.exists()
    r = CliRunner().invoke(main, ["train", str(data_dir), "--out", str(out), "--channels", "muon"])
    assert r.exit_code == 2 and "muon" in r.output and not out.exists()
    r = CliRunner().invoke(main, ["train", str(data_dir), "--out", str(out), "--lr", "-1"])
    assert r.exit_code == 2 and "train.lr" in r.output and not out.exists()


def test_cli_trains_and_resumes(data_dir, tmp_path):
    from click.testing import CliRunner

    from e2econd.cli import main

    cfg = tmp_path / "c.json"
    C.save(tiny_config(max_steps=2), cfg)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        [
            "train",
            str(data_dir),
            "--out",
            str(out),
            "--config",
            str(cfg),
            "--channels",
            "ecal",
            "--device",
            "cpu",
            "--seed",
            "3",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"]["channels"] == ["ecal"] and saved["train"]["seed"] == 3
    r = CliRunner().invoke(
        main,
        ["train", str(data_dir), "--out", str(out), "--resume", "--max-steps", "3", "--device", "cpu", "--no-progress"],
    )
    assert r.exit_code == 0, r.output
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["step"] == 3
