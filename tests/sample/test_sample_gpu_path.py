"""The static-shape / CUDA-graph sampling path (issue 19) and the non-finite check (issue 15).

CPU: the generated images are bit-identical to the pre-graph sampler (its loop is kept here as the
oracle, written out independently of e2econd.sample), the sampler loop reads no tensor value on the
host (``NoHostSync``), a network returning NaN is refused with a one-line error and no output file.
CUDA (marked ``cuda``): graph replay == eager on the GPU, and no device sync inside the loop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2econd.diffusion.graphs import HostSyncError, NoHostSync
from e2econd.diffusion.samplers import make_plan, run_plan

pytestmark = pytest.mark.usefixtures("one_thread")

QG_H5 = "E2Esim_QG_IMGjet_R0.4_pu0_n300_seed101.h5"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, e2e_fixtures):
    """A three-channel run trained for a few steps on the committed quark/gluon slice."""
    from e2econd.config import parse_channels, preset
    from e2econd.data.preprocess import preprocess
    from e2econd.train import train

    root = tmp_path_factory.mktemp("gpu_path")
    preprocess([e2e_fixtures / QG_H5], root / "qg", progress=False)
    cfg = preset("cpu")
    cfg.data.channels = parse_channels("all")
    cfg.model.width, cfg.model.blocks, cfg.model.heads, cfg.model.cond_width = 16, 2, 2, 32
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.val_every, cfg.train.ckpt_every = 3, 4, 100, 100
    cfg.multiplicity.steps = 40
    train(root / "qg", root / "run", cfg, progress=False)
    return root / "run"


def _pre_graph_generate(run, opts, pt, m0, y, chunk_index):
    """The sampler as it was before the graph path (oracle): per-call torch.full times, eager loop."""
    from e2econd.data.hits import batch_hits_to_images
    from e2econd.data.snap import snap_batch
    from e2econd.diffusion.samplers import make_plan as plan_of
    from e2econd.ops.diffusion_step import diffusion_step
    from e2econd.sample import MAX_HITS_PER_JET, _seed

    plan = plan_of(opts.sampler, opts.steps, eta=opts.eta, schedule=run.schedule)
    n = pt.size
    images = np.zeros((n, 3, 125, 125), np.float32)
    gen = torch.Generator().manual_seed(_seed(opts.seed, 0, chunk_index, 0))
    ct = torch.from_numpy(run.transforms.condition.forward(pt, m0).astype(np.float32))
    yt = torch.from_numpy(np.asarray(y, np.int64))
    counts = run.multiplicity.sample(ct[:, 0], ct[:, 1], yt, generator=gen).cpu().clamp_max(MAX_HITS_PER_JET)
    order = torch.argsort(counts.sum(1), stable=True).numpy()
    for b, start in enumerate(range(0, n, opts.batch_size)):
        idx = order[start : start + opts.batch_size]
        B, cnt = idx.size, counts[idx]
        lengths = cnt.sum(1)
        cu = torch.zeros(B + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(lengths, 0)
        channel = torch.repeat_interleave(torch.arange(3).repeat(B), cnt.reshape(-1))
        seed = _seed(opts.seed, 0, chunk_index, b + 1)
        x = torch.randn(int(lengths.sum()), 3, generator=torch.Generator().manual_seed(seed))
        cond = {"pt": ct[idx, 0], "m0": ct[idx, 1], "y": yt[idx]}
        w, mx = opts.guidance, int(lengths.max())
        coefs, x0_prev = plan.coef_tensor(), None
        for i, t in enumerate(plan.times):
            if w == 1.0:
                v = run.model.forward_packed(x, channel, cu, torch.full((B,), t), cond, None, max_seqlen=mx)
            else:
                drop = torch.zeros(2 * B, dtype=torch.bool)
                drop[B:] = True
                vv = run.model.forward_packed(
                    torch.cat([x, x]),
                    torch.cat([channel, channel]),
                    torch.cat([cu, cu[1:] + cu[-1]]),
                    torch.full((2 * B,), t),
                    {k: torch.cat([c, c]) for k, c in cond.items()},
                    drop,
                    max_seqlen=mx,
                )
                vc, vu = vv[: x.shape[0]], vv[x.shape[0] :]
                v = vu + w * (vc - vu)
            x, x0 = diffusion_step(
                x,
                v,
                coefs[i],
                x0_prev=x0_prev,
                clip=opts.clip,
                seed=seed & 0x7FFFFFFF,
                offset=i,
                return_x0=plan.uses_x0_prev,
            )
            x0_prev = x0 if plan.uses_x0_prev else None
        feats = run.transforms.inverse(x.float(), channel).numpy().astype(np.float64)
        hits = []
        for c in range(3):
            sel = channel.numpy() == c
            offsets = np.zeros(B + 1, np.int64)
            offsets[1:] = np.cumsum(cnt[:, c].numpy())
            f = feats[sel]
            e = f[:, 2] if c == 1 else np.where(f[:, 2] > 0, f[:, 2], np.nan)
            hits.append(snap_batch(c, f[:, 0], f[:, 1], e, offsets, collisions=opts.collisions))
        images[idx] = batch_hits_to_images(hits)
    return images


@pytest.mark.parametrize("sampler,steps,guidance", [("dpmpp2m", 3, 1.0), ("ddpm", 4, 1.0), ("ddim", 3, 1.5)])
def test_cpu_images_bit_identical_to_pre_graph_sampler(tiny_run, sampler, steps, guidance):
    from e2econd.rundir import load_run
    from e2econd.sample import Generator, SampleOptions

    run = load_run(tiny_run, "cpu")
    opts = SampleOptions(sampler=sampler, steps=steps, guidance=guidance, eta=0.5, seed=7, batch_size=5)
    pt, m0 = np.linspace(60.0, 140.0, 12), np.linspace(5.0, 30.0, 12)
    y = np.arange(12) % 2
    got = Generator(run, opts).generate(pt, m0, y, chunk_index=2)
    with torch.no_grad():
        want = _pre_graph_generate(run, opts, pt, m0, y, chunk_index=2)
    assert got.any()
    assert got.tobytes() == want.tobytes()


def test_sampler_loop_reads_nothing_on_the_host(tiny_run):
    """Network + fused step, as the graph path runs them, under a mode that refuses host reads."""
    from e2econd.rundir import load_run
    from e2econd.sample import Generator, SampleOptions

    run = load_run(tiny_run, "cpu")
    gen = Generator(run, SampleOptions(guidance=2.0))
    lengths = torch.tensor([7, 30, 12])
    cu = torch.zeros(4, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    channel = torch.randint(0, 3, (49,), generator=torch.Generator().manual_seed(0))
    cond = {"pt": torch.zeros(3), "m0": torch.zeros(3), "y": torch.tensor([0, 1, 1])}
    net = gen._network(channel, cu, 30, cond, 3)
    x = torch.randn(49, 3, generator=torch.Generator().manual_seed(1))
    t = torch.zeros(())
    plan, plan2 = make_plan("dpmpp2m", 4), make_plan("ddim", 2)  # plans are host work done before the loop
    with torch.no_grad():
        eager = run_plan(net, x.clone(), plan, seed=3)
        with NoHostSync():
            guarded = run_plan(lambda z, s: net(z, t.fill_(s)), x.clone(), plan, seed=3)
            with pytest.raises(HostSyncError, match="_local_scalar_dense"):
                run_plan(lambda z, s: net(z, t.fill_(s)) * float(z.abs().max()), x.clone(), plan2)
            with pytest.raises(HostSyncError, match="repeat_interleave"):  # the value-shaped op it avoids
                torch.repeat_interleave(torch.arange(3), lengths)
    assert torch.equal(eager, guarded)


def test_non_finite_network_output_is_an_error(tiny_run, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from e2econd.cli import main
    from e2econd.model.set_transformer import SetTransformer

    real = SetTransformer.forward_packed

    def poisoned(self, x, *args, **kwargs):
        v = real(self, x, *args, **kwargs)
        return v.index_fill(0, torch.tensor([v.shape[0] // 2]), float("nan"))

    monkeypatch.setattr(SetTransformer, "forward_packed", poisoned)
    out = tmp_path / "gen.parquet"
    res = CliRunner().invoke(
        main, ["sample", str(tiny_run), "--pt", "100", "--n", "3", "--steps", "2", "--out", str(out)]
    )
    assert res.exit_code != 0
    assert "non-finite" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert str(tiny_run) in res.output
    assert not out.exists() and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ CUDA
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_cuda_graph_replay_equals_eager_and_never_syncs(tiny_run, guidance):
    from e2econd.diffusion.graphs import GraphDenoiser
    from e2econd.rundir import load_run
    from e2econd.sample import Generator, SampleOptions

    run = load_run(tiny_run, "cuda")
    gen = Generator(run, SampleOptions(guidance=guidance))
    lengths = torch.tensor([70, 300, 5, 129])
    cu = torch.zeros(5, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    tot = int(lengths.sum())
    channel = torch.randint(0, 3, (tot,), generator=torch.Generator().manual_seed(0)).cuda()
    cond = {"pt": torch.randn(4).cuda(), "m0": torch.randn(4).cuda(), "y": torch.tensor([0, 1, 1, 0]).cuda()}
    net = gen._network(channel, cu.cuda(), 300, cond, 4)
    x = torch.randn(tot, 3, device="cuda")
    plan = make_plan("dpmpp2m", 6)
    with torch.no_grad():
        eager = run_plan(net, x.clone(), plan, seed=5)
        g = GraphDenoiser(net, x, warmup=1)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            replay = run_plan(g, x.clone(), plan, seed=5)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(replay).all()
    torch.testing.assert_close(replay, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@cuda
def test_cuda_sample_file_with_and_without_graphs(tiny_run, tmp_path):
    from e2econd.data.e2e_io import read_e2e
    from e2econd.sample import SampleOptions, sample_to_file

    outs = {}
    for graphs in (True, False):
        out = tmp_path / f"g{int(graphs)}.h5"
        s = sample_to_file(
            tiny_run,
            out,
            SampleOptions(n=20, pt=100.0, steps=4, seed=1, device="cuda", cuda_graphs=graphs),
            progress=False,
        )
        assert s["timing"]["extra"].get("graphs_captured", 0) == (1 if graphs else 0)  # 20 jets, batch 256: one batch
        outs[graphs] = read_e2e(out).images
    assert np.isfinite(outs[True]).all() and outs[True].any()
    # same noise, same network: hit energies agree to bf16/fp32 rounding; compare image sums per jet
    np.testing.assert_allclose(outs[True].sum((1, 2, 3)), outs[False].sum((1, 2, 3)), rtol=2e-2)
