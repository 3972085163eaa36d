"""Few-step students: ``e2econd distill RUN_DIR --steps K --out STUDENT_DIR`` (consistency distillation).

A student starts from the teacher's EMA weights and learns, on the teacher's own training jets, to map
a noisy state straight to the end of the teacher's probability-flow trajectory (Song et al. 2023, as in
CaloClouds II and PC-Droid): for a jet at grid interval n (stratified over the batch), with
x_n = a_n·x0 + b_n·ε at level ℓ_n and one deterministic teacher step (DDIM / Euler of the PF ODE)

    D_T = D_teacher(x_n, ℓ_n),   x_{n+1} = a_{n+1}·D_T + (b_{n+1}/b_n)·(x_n − a_n·D_T)   (Euler),

(Heun by default, Euler with ``teacher_solver = "euler"``), the loss is
Σ w·(f_θ(x_n, ℓ_n) − sg[f_θ(x_{n+1}, ℓ_{n+1})])², f the teacher formulation's preconditioned
denoiser (boundary f(x, ℓ→0) = x by construction), sg a stop-gradient (the target network is the current
student, as in improved consistency training), w the family's loss weights. The grid and the student's
sampler are in :mod:`e2econd.diffusion.formulations.consistency`.

The student is an ordinary run directory: the teacher's config with ``objective.student = "consistency"``
and ``student_steps = K`` (so ``e2econd sample STUDENT_DIR`` samples with K evaluations, no option
needed), the teacher's stage 1, transforms and extras, and — for exact ``--resume`` — the teacher's
weights in every checkpoint. Training is :class:`e2econd.train._Trainer`'s: DDP under torchrun, exact
resume, atomic checkpoints, EMA, progress bar and JSONL log.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from e2econd.config import Config, from_dict, validate
from e2econd.diffusion.formulations import STUDENT_METHODS, ConsistencyStudent, Formulation, per_hit
from e2econd.errors import E2EInputError
from e2econd.rundir import checkpoint_path, last_checkpoint, load_checkpoint
from e2econd.train import _Trainer, run_trainer

__all__ = ["DistillOptions", "consistency_pair", "distill", "student_config"]


@dataclass
class DistillOptions:
    """What ``e2econd distill`` trains (None: from the teacher's config)."""

    steps: int = 4  # K: the student's default number of network evaluations
    method: str = "consistency"
    levels: int = 40  # N: intervals of the consistency grid (K ≤ N)
    max_steps: int | None = None  # student training steps (None: 2000; on resume: the run's own)
    time_limit_min: float = 0.0
    lr: float | None = None  # default: the teacher's peak lr / 5 (the student starts from the teacher)
    batch_size: int | None = None
    seed: int | None = None
    threads: int | None = None  # CPU torch threads (default: the teacher's train.threads)

    def validate(self) -> DistillOptions:
        if self.method not in STUDENT_METHODS:
            choices = ", ".join(STUDENT_METHODS)
            raise E2EInputError(f"unknown distillation method '{self.method}' (choose from {choices})", key="method")
        if self.threads is not None and self.threads < 1:
            raise E2EInputError(f"--threads {self.threads}: must be >= 1", key="threads")
        if not 1 <= self.steps <= self.levels:
            raise E2EInputError(f"--steps {self.steps}: need 1 <= steps <= --levels ({self.levels})", key="steps")
        if self.max_steps is not None and self.max_steps < 1:
            raise E2EInputError(f"--max-steps {self.max_steps}: must be >= 1", key="max_steps")
        return self


def student_config(teacher: Config, opts: DistillOptions) -> Config:
    """The student's config: the teacher's model and data, ``objective.student`` set, distillation training."""
    cfg = copy.deepcopy(teacher)
    ob, tr = cfg.objective, cfg.train
    ob.student, ob.student_steps, ob.student_levels = opts.method, int(opts.steps), int(opts.levels)
    tr.max_steps, tr.time_limit_min = int(opts.max_steps or 2000), float(opts.time_limit_min)
    tr.lr = float(opts.lr) if opts.lr is not None else teacher.train.lr / 5
    tr.warmup_steps = min(tr.warmup_steps, 50)
    tr.cond_drop = teacher.train.cond_drop
    if opts.batch_size is not None:
        tr.batch_size = int(opts.batch_size)
    if opts.seed is not None:
        tr.seed = int(opts.seed)
    if opts.threads is not None:
        tr.threads = int(opts.threads)
    return validate(cfg)


# ---------------------------------------------------------------------------------------- loss
def teacher_step(form, teacher, x_n, lv_n, lv_m, per_token, solver: str = "heun") -> torch.Tensor:
    """One step of the teacher's probability-flow ODE from per-jet levels ℓ_n to ℓ_m < ℓ_n (float64), in
    y = x/a and λ = b/a, where it reads dy/dλ = (y − D)/λ (Karras et al. 2022, eq. 4): Euler, or Heun
    (2 teacher evaluations; Karras Alg. 1). ``teacher(x, ℓ)`` is the teacher's denoiser D."""
    a_n, b_n = (per_token(v) for v in form.scales(lv_n))
    a_m, b_m = (per_token(v) for v in form.scales(lv_m))
    lam_n, lam_m = b_n / a_n, b_m / a_m
    y_n = x_n.double() / a_n
    d_1 = (y_n - teacher(x_n.float(), lv_n.float()).double()) / lam_n
    y_e = y_n + (lam_m - lam_n) * d_1
    if solver == "euler":
        return a_m * y_e
    d_2 = (y_e - teacher((a_m * y_e).float(), lv_m.float()).double()) / lam_m
    return a_m * (y_n + (lam_m - lam_n) * 0.5 * (d_1 + d_2))


def consistency_pair(form, x0, eps, n, per_token, teacher, student, student_target=None, solver: str = "heun"):
    """(D_θ(x_n, ℓ_n), its target) for clean tokens x0 (T, F), noise ε and grid intervals n (per jet) of
    the ``ConsistencyStudent`` ``form``. With x_{n+1} one ``solver`` step of the teacher from
    x_n = a_n·x0 + b_n·ε and e the end of n's segment, the target is the D whose jump from x_n to ℓ_e
    equals the jump of sg D_θ(x_{n+1}, ℓ_{n+1}) (or x_{n+1} itself when n + 1 = e): the jump is affine in
    D, so the loss ‖D_θ − target‖² is the consistency loss in the scale of x0. ``per_token`` repeats
    per-jet values onto the tokens; ``teacher``, ``student`` are denoisers D(x, ℓ) at per-jet levels ℓ;
    ``student_target`` (default ``student``) evaluates the target, under no_grad."""
    e = form.segment_end(n)
    lv_n, lv_m, lv_e = form.grid[n], form.grid[n + 1], form.grid[e]
    a_n, b_n = (per_token(v) for v in form.scales(lv_n))
    x_n = (a_n * x0.double() + b_n * eps.double()).float()
    with torch.no_grad():
        x_m = teacher_step(form, teacher, x_n, lv_n, lv_m, per_token, solver)
        d_m = (student_target or student)(x_m.float(), lv_m.float()).double()
        x_e = torch.where(per_token((e == n + 1).double()) > 0.5, x_m, form.jump(x_m, d_m, lv_m, lv_e, per_token))
        a_e, b_e = (per_token(v) for v in form.scales(lv_e))
        r = b_e / b_n
        target = (x_e - r * x_n.double()) / (a_e - a_n * r)  # the D of x_n's jump onto x_e
    return student(x_n, lv_n.float()).float(), target.float()


def _denoiser(forward: Callable, form: Formulation, b, drop, autocast_dtype) -> Callable:
    """D(x, ℓ) = c_skip·x + c_out·F(c_in·x, c_noise) of the packed network ``forward`` on batch ``b``."""
    dev, cu = b.x0.device, b.cu_seqlens

    def d(x, level):
        x_in, c_noise = form.network_input(x, level, cu)
        with torch.autocast(dev.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            f = forward(x_in, b.channel, cu, c_noise.to(dev, torch.float32), b.cond, drop)
        p = form.precondition(per_hit(level.double(), cu, b.n_hits))
        return (p.c_skip.to(dev) * x + p.c_out.to(dev) * f.float()).float()

    return d


def _raw_forward(model) -> Callable:
    """The packed forward of a network, a ``_PackedForward`` or a DDP of one, bypassing DDP (no-grad use)."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    inner = getattr(inner, "model", inner)
    return inner.forward_packed


def consistency_loss_sum(model, teacher, b, u, drop, eps, form: ConsistencyStudent, autocast_dtype=None):
    """Σ w·(f_θ(x_n) − sg f_θ(x_{n+1}))² over the batch's tokens and features; n = ⌊u·N⌋ per jet (u the
    draw's stratified uniforms, so the intervals are stratified over the batch too)."""
    dev = b.x0.device
    drop = drop.to(dev) if drop is not None else None
    n = (u.double() * form.levels).floor().long().clamp(0, form.levels - 1).to(dev)
    fwd = model.forward_packed if hasattr(model, "forward_packed") else model
    grad_d = _denoiser(fwd, form, b, drop, autocast_dtype)
    stop_d = _denoiser(_raw_forward(model), form, b, drop, autocast_dtype)
    teach = _denoiser(teacher.forward_packed, form, b, drop, autocast_dtype)
    per_token = lambda v: per_hit(v.to(dev), b.cu_seqlens, b.n_hits)  # noqa: E731
    pred, target = consistency_pair(form, b.x0, eps.to(dev), n, per_token, teach, grad_d, stop_d)
    err = (pred - target) ** 2
    return (err * b.weight).sum() if b.weight is not None else err.sum()


# ----------------------------------------------------------------------------------- the trainer
class Distiller(_Trainer):
    """``_Trainer`` with the teacher's data, weights and stage 1, and the consistency loss."""

    def __init__(self, data_dir, out_dir, cfg, ck, device, stop_at, teacher: dict, options: dict):
        self.teacher_state, self.options = teacher, options
        super().__init__(data_dir, out_dir, cfg, ck, device, stop_at)
        self.teacher = self.family.build_network(from_dict(teacher["config"]), self.data).to(self.dev)
        self.teacher.load_state_dict(teacher["weights"])
        self.teacher.eval().requires_grad_(False)

    def _check_data(self, ck) -> None:
        t = self.teacher_state
        if self.data.store.transforms.to_dict() != t["transforms"]:
            raise E2EInputError(
                "is not the teacher's hit directory (its feature transforms differ from the teacher's)",
                path=self.data_dir,
            )
        self.data.extra.update(self.family.load_extras(t))  # the teacher's own token transform and norms

    def _init_weights(self) -> None:
        self.model.load_state_dict(self.teacher_state["weights"])

    def _fresh_stage1(self):
        return self.family.stage1_from_dict(self.teacher_state["multiplicity"])

    def _extra_checkpoint(self) -> dict:
        return {"teacher": self.teacher_state, "distill": self.options}

    def model_loss(self, model, b, t, drop, eps):
        return consistency_loss_sum(model, self.teacher, b, t, drop, eps, self.form, self.autocast_dtype)


# ------------------------------------------------------------------------------------- command
def teacher_state(run_dir: Path) -> dict:
    """What a student keeps of its teacher: run dir, step, config, EMA weights, stage 1, transforms, extras."""
    from e2econd.families import get_family

    path = checkpoint_path(run_dir)
    if not path.exists():
        raise E2EInputError("no checkpoint found (expected checkpoints/last.pt; train the teacher first)", path=run_dir)
    ck = load_checkpoint(path)
    cfg = from_dict(ck["config"], source=path)
    if cfg.objective.student:
        raise E2EInputError("is itself a distilled student; distill from its teacher", path=run_dir)
    keep = ("step", "config", "multiplicity", "transforms", "data_dir") + get_family(cfg.model.family).extra_keys
    state = {k: ck[k] for k in keep if k in ck}
    state.update(run_dir=str(Path(run_dir).resolve()), weights=ck["ema"])
    return state


def distill(
    run_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    opts: DistillOptions | None = None,
    data_dir: str | os.PathLike | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool | None = None,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Distill the run in ``run_dir`` into a student run directory ``out_dir``; returns a summary dict.

    ``data_dir``: the teacher's hit directory (default: the one its checkpoint records). ``resume``
    continues ``out_dir`` exactly with its own config, teacher and data (``opts.max_steps`` may extend it).
    """
    out_dir = Path(out_dir)
    opts = (opts or DistillOptions()).validate()
    last = last_checkpoint(out_dir)
    if resume:
        if not last.exists():
            raise E2EInputError("no checkpoint to resume (checkpoints/last.pt missing)", path=out_dir)
        ck = load_checkpoint(last)
        cfg = from_dict(ck["config"], source=last)
        if opts.max_steps is not None:
            cfg.train.max_steps = int(opts.max_steps)
        teacher = ck["teacher"]
        record = {**ck["distill"], "max_steps": cfg.train.max_steps}  # the run's own options, not the defaults
    else:
        if last.exists():
            raise E2EInputError("already holds a checkpoint; use --resume or another --out", path=out_dir)
        ck, teacher = None, teacher_state(Path(run_dir))
        cfg = student_config(from_dict(teacher["config"], source=run_dir), opts)
        record = {**asdict(opts), "max_steps": cfg.train.max_steps}
    data_dir = data_dir or (ck or {}).get("data_dir") or teacher.get("data_dir")
    if not data_dir:
        raise E2EInputError("the teacher's checkpoint does not record its hit directory: give --data", key="data")
    trainer = Distiller(Path(data_dir), out_dir, validate(cfg), ck, device, stop_at, teacher, record)
    summary = run_trainer(trainer, progress, desc=f"distill[{opts.method} K={cfg.objective.student_steps}]")
    summary.update(teacher=teacher["run_dir"], student_steps=cfg.objective.student_steps)
    return summary
