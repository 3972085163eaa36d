"""``e2econd distill``: multistep consistency distillation (e2econd/distill.py and
e2econd/diffusion/formulations/consistency.py).

Oracles: a 1-D Gaussian toy whose exact denoiser and exact probability-flow map are closed forms (the
distilled one-step map must match the exact map, far better than the teacher's own one-step jump);
Heun's order 2 on that flow; the sampler plan against the jump formula written out in float64; an
uninterrupted distillation for the bitwise resume; the CLI round trip distill -> sample.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from e2econd.cli import main
from e2econd.diffusion.formulations import ConsistencyStudent, VPred, make_formulation
from e2econd.diffusion.samplers import run_plan
from e2econd.distill import DistillOptions, consistency_pair, distill, teacher_step
from e2econd.rundir import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

MU, S = 0.7, 0.4  # the toy data: x0 ~ N(MU, S²)


def formulation(name):
    return VPred() if name == "vpred" else make_formulation(name)


def exact_d(form, x, lv):
    """E[x0 | x] at level ℓ for the Gaussian toy (float64)."""
    a, b = form.scales(torch.as_tensor(lv, dtype=torch.float64))
    return MU + a * S**2 * (x.double() - a * MU) / (a**2 * S**2 + b**2)


def exact_map(form, x, lv):
    """The probability-flow map from level ℓ to the data: x0 = MU + S·(x − a·MU)/sqrt(a²S² + b²)."""
    a, b = form.scales(torch.as_tensor(lv, dtype=torch.float64))
    return MU + S * (x.double() - a * MU) / torch.sqrt(a**2 * S**2 + b**2)


def column(v):
    return v[:, None]


def exact_teacher(form):
    """The exact denoiser as ``teacher_step`` calls it: D(x, per-jet levels)."""
    return lambda x, lv: exact_d(form, x, lv[:, None])


def test_heun_teacher_step_is_second_order_and_euler_first():
    errs = {"euler": [], "heun": []}
    for n in (18, 36, 72):
        form = ConsistencyStudent(make_formulation("edm"), n, 1)
        x = 80 * torch.linspace(-2, 2, 21, dtype=torch.float64)[:, None]
        for solver in errs:
            xs = x.clone()
            for k in range(n):
                lv_n, lv_m = form.grid[k].expand(21), form.grid[k + 1].expand(21)
                xs = teacher_step(form, exact_teacher(form), xs, lv_n, lv_m, column, solver)
            errs[solver].append((xs - exact_map(form, x, form.grid[0])).abs().max().item())
    for solver, (lo, hi) in (("euler", (1.7, 2.3)), ("heun", (3.5, 4.6))):  # error ratio per doubling: 2^order
        ratios = [a / b for a, b in zip(errs[solver][:-1], errs[solver][1:])]
        assert all(lo < r < hi for r in ratios), (solver, errs[solver])


def test_segments_and_plan_rows_are_the_jumps():
    form = ConsistencyStudent(VPred(), 10, 3)
    assert form.boundaries() == [0, 3, 7, 10]
    n = torch.arange(10)
    assert form.segment_end(n).tolist() == [3, 3, 3, 7, 7, 7, 7, 10, 10, 10]
    plan = form.plan()
    assert plan.nfe == 3 and plan.name == "vpred-consistency" and not plan.stochastic
    # run_plan feeds the raw network (c_in·x, c_noise); an exact raw network makes x̂0 the exact D
    x = plan.init_std * torch.linspace(-2, 2, 24, dtype=torch.float64).reshape(2, 4, 3)

    def raw(x_in, c_noise):  # vpred: c_in = 1, c_noise = t; F with c_skip·x + c_out·F = D
        lv = torch.tensor(float(c_noise), dtype=torch.float64)
        p = form.precondition(lv)
        return ((exact_d(form, x_in, lv) - p.c_skip * x_in.double()) / p.c_out).float()

    got = run_plan(raw, x.float(), plan, seed=-1).double()
    want = x.clone()
    for i, j in zip(form.boundaries()[:-1], form.boundaries()[1:]):
        want = form.jump(want, exact_d(form, want, form.grid[i]), form.grid[i], form.grid[j])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="distilled for 3 evaluations"):
        form.plan(steps=4)


def distil_toy(form, fourier: bool, iters: int = 3000):
    """A small MLP student distilled from the exact Gaussian teacher with the library's consistency loss
    (Heun teacher); ``fourier``: the noise input also through Fourier features, as the real network's
    time embedding does (segments of a K-step student change the target sharply at their ends)."""
    from e2econd.model.embeddings import FourierFeatures

    torch.manual_seed(0)
    ff = FourierFeatures(16, max_freq=256.0, period=2.0)
    width_in = 2 + (ff.dim if fourier else 0)
    net = torch.nn.Sequential(
        torch.nn.Linear(width_in, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1)
    )

    def student(x, lv):
        p = form.precondition(lv.double()[:, None])
        c = p.c_noise.float().expand_as(x)
        f = net(torch.cat([x * p.c_in.float(), c] + ([ff(c[:, 0])] if fourier else []), 1))
        return p.c_skip.float() * x + p.c_out.float() * f

    def teacher(x, lv):
        return exact_d(form, x, lv.double()[:, None]).float()

    opt = torch.optim.Adam(net.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    gen = torch.Generator().manual_seed(1)
    for _ in range(iters):
        x0, eps = MU + S * torch.randn(512, 1, generator=gen), torch.randn(512, 1, generator=gen)
        n = torch.randint(0, form.levels, (512,), generator=gen)
        pred, target = consistency_pair(form, x0, eps, n, column, teacher, student)
        loss = ((pred - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return student


def sample_rms(form, denoiser):
    """rms distance (float64) of K jumps with ``denoiser`` from noise at ℓ_0 to the exact flow map's image."""
    lv0 = form.grid[0]
    a0, b0 = (float(v) for v in form.scales(lv0))
    x = a0 * MU + math.sqrt(a0**2 * S**2 + b0**2) * torch.randn(4000, 1, generator=torch.Generator().manual_seed(9))
    want, bnd = exact_map(form, x, lv0), form.boundaries()
    with torch.no_grad():
        for i, j in zip(bnd[:-1], bnd[1:]):
            x = form.jump(x, denoiser(x.float(), form.grid[i].expand(len(x)).float()), form.grid[i], form.grid[j])
    return ((x - want) ** 2).mean().sqrt().item()


@pytest.mark.parametrize("name", ["vpred", "edm", "flow"])
def test_distilled_one_step_map_matches_the_exact_flow_map(name):
    """K = 1, N = 18: the student maps noise to data in one evaluation with rms error ≤ 0.15·S (measured
    0.03–0.07), against ~1·S for the teacher's own one-step jump (E[x0 | x_T] is nearly the mean)."""
    form = ConsistencyStudent(formulation(name), 18, 1)
    student = distil_toy(form, fourier=False)
    rms, rms_teacher = sample_rms(form, student), sample_rms(form, exact_teacher(form))
    assert rms < 0.15 * S and rms < 0.2 * rms_teacher, (rms / S, rms_teacher / S)


def test_four_step_student_matches_the_exact_flow_map():
    """K = 4, N = 36 with a Fourier noise input: rms ≤ 0.1·S (measured 0.034), well below the teacher's
    own four DDIM jumps at the same levels (measured 0.50·S)."""
    form = ConsistencyStudent(VPred(), 36, 4)
    student = distil_toy(form, fourier=True)
    rms, rms_teacher = sample_rms(form, student), sample_rms(form, exact_teacher(form))
    assert rms < 0.1 * S and rms < 0.3 * rms_teacher, (rms / S, rms_teacher / S)


# --------------------------------------------------------------------------------------- the command
def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_distill_then_sample_through_the_cli(toy_run, tmp_path):
    """``distill RUN --steps 2 --out STUDENT`` writes an ordinary run; ``sample STUDENT`` needs no option."""
    student = tmp_path / "student"
    res = _cli(
        "distill", toy_run[0], "--steps", 2, "--levels", 8, "--max-steps", 6, "--out", student, "--device", "cpu",
        "--threads", 1,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = json.loads((student / "config.json").read_text())
    assert cfg["objective"]["student"] == "consistency" and cfg["objective"]["student_steps"] == 2
    teacher_threads = json.loads((toy_run[0] / "config.json").read_text())["train"]["threads"]
    assert cfg["train"]["threads"] == 1 != teacher_threads  # --threads overrides the teacher's
    ck = load_checkpoint(student / "checkpoints" / "last.pt")
    assert ck["teacher"]["run_dir"] == str(toy_run[0].resolve()) and ck["distill"]["method"] == "consistency"
    out = tmp_path / "gen.parquet"
    res = _cli("sample", student, "--pt", 150, "--n", 5, "--out", out, "--json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{") :])
    assert (summary["sampler"], summary["steps"], summary["nfe"]) == ("consistency", 2, 2)
    res = CliRunner().invoke(main, ["sample", str(student), "--steps", "3", "--out", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "distilled for 2 evaluations" in res.output
    assert not (tmp_path / "x.parquet").exists()
    res = CliRunner().invoke(main, ["distill", str(student), "--out", str(tmp_path / "s2")])
    assert res.exit_code == 2 and "is itself a distilled student" in res.output
    res = CliRunner().invoke(main, ["distill", str(toy_run[0]), "--threads", "0", "--out", str(tmp_path / "s3")])
    assert res.exit_code == 2 and "--threads 0: must be >= 1" in res.output
    assert not (tmp_path / "s3").exists()


def test_distill_resume_is_bitwise_exact(toy_run, tmp_path):
    opts = DistillOptions(steps=2, levels=8, max_steps=6)
    distill(toy_run[0], tmp_path / "full", opts, device="cpu", progress=False)
    distill(toy_run[0], tmp_path / "cut", opts, device="cpu", progress=False, stop_at=3)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["step"] == 3
    distill(None, tmp_path / "cut", DistillOptions(), resume=True, device="cpu", progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    # the student starts from the teacher: after 6 small steps its weights are still close to it
    t = load_checkpoint(toy_run[0] / "checkpoints" / "last.pt")["ema"]
    dev = max(float((a["model"][k] - t[k]).abs().max()) for k in t)
    assert 0 < dev < 0.05
    assert np.isfinite(json.loads((tmp_path / "cut" / "log.jsonl").read_text().splitlines()[-1])["val_loss"])
