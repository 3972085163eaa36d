"""Training of the conditional diffusion model (single process, or DDP under ``torchrun``).

``train(data_dir, out_dir, config)`` fits the family's stage 1 (multiplicity or summary model), then
trains its denoiser with the run's objective (``config.objective``: vpred, the default, is v-prediction
on the cosine schedule with continuous t ~ U(0, 1), stratified per batch; edm and flow map the same
stratified uniforms through their noise-level densities, :mod:`e2econd.objective`):

* hits are dequantised each step *before* the feature transform (:mod:`e2econd.batching`), so the
  model sees a continuous density;
* loss = sum over valid hits h and features f of (F − F*)² / (F · number of hits in the global
  batch), F* the objective's target (vpred: v): every hit weighs the same (jets with more hits weigh
  more) unless the family or ``objective.balance = "channel"`` weighs them, no auxiliary x0 term;
* classifier-free guidance: all conditions of a jet (pt, m0, y) are replaced by their null tokens
  together with probability ``cond_drop``;
* every random draw of a step comes from generators seeded by (seed, step): exact ``--resume``;
* AdamW, linear warm-up + cosine learning rate, gradient clipping, EMA weights (used for
  sampling), bf16 autocast on CUDA, batches bucketed by multiplicity, validation loss of the EMA
  model on a fixed subset of the val split with fixed noise, JSONL log, atomic checkpoints.

DDP (``torchrun --nproc_per_node K -m e2econd train ...``): every rank builds the same global
batch list and takes a contiguous block of jets of each global batch; the per-rank loss is
normalised by the *global* hit count times the world size, so DDP's gradient averaging yields
exactly the single-process gradient of the global batch. Only rank 0 writes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2econd._version import __version__
from e2econd.batching import BucketBatcher, draw, make_batch, non_finite_jets, shard, step_generator  # noqa: F401
from e2econd.config import Config, from_dict, validate
from e2econd.diffusion.formulations import from_config
from e2econd.diffusion.schedule import CosineSchedule
from e2econd.errors import E2EInputError, NonFiniteError
from e2econd.families import get_family
from e2econd.objective import ema_update, loss_sum, lr_factor  # noqa: F401 - re-exported
from e2econd.objective import validation_loss as _validation_loss
from e2econd.rundir import (
    CHECKPOINT_FORMAT,
    config_path,
    dist_env,
    last_checkpoint,
    load_checkpoint,
    log_path,
    resolve_device,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_checkpoint,
)
from e2econd.utils import atomic_path, bar_disabled, provenance, write_json_atomic


class _PackedForward(torch.nn.Module):
    """Routes ``forward`` to the network's ``forward_packed`` so DDP sees (and syncs) the training call."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model.forward_packed(*args, **kwargs)


# ----------------------------------------------------------------------------------------- run
class _Trainer:
    """One training run: models, optimiser, run-directory writes and the step loop (see :func:`train`)."""

    def __init__(self, data_dir: Path, out_dir: Path, cfg: Config, ck: dict | None, device, stop_at):
        self.out_dir, self.cfg, self.tr, self.stop_at = out_dir, cfg, cfg.train, stop_at
        self.data_dir = Path(data_dir)
        self.rank, self.world, local_rank = dist_env()
        self.dev = resolve_device(device, local_rank)
        if cfg.train.threads and self.dev.type == "cpu":
            torch.set_num_threads(cfg.train.threads)
        self.ddp = self.world > 1
        if self.ddp:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.dev.type == "cuda" else "gloo")
            if self.dev.type == "cuda":
                torch.cuda.set_device(self.dev)
        self.is_main = self.rank == 0
        self.family = get_family(cfg.model.family)
        self.data = self.family.load_data(data_dir, cfg, self.world)
        self._check_data(ck)
        self.n_feat = self.family.n_features(self.data)
        self.transforms = self.data.store.transforms
        self.cfg_dict = cfg.to_dict()
        self.last = last_checkpoint(out_dir)
        self.last_good: int | None = int(ck["step"]) if ck is not None else None
        self._build(ck)
        self.schedule = CosineSchedule(cfg.train.schedule_s)
        self.form = from_config(cfg.objective, self.schedule)  # vpred | edm | flow (e2econd.diffusion.formulations)
        self.autocast_dtype = torch.bfloat16 if (cfg.train.bf16 and self.dev.type == "cuda") else None
        tr = self.tr
        self.batcher = BucketBatcher(
            self.data.n_sel[self.data.usable],
            tr.batch_size,
            tr.bucket_pool,
            tr.seed,
            tr.max_tokens,
            min_jets=self.world,
        )
        self.end = self.end_steps = tr.max_steps if stop_at is None else min(tr.max_steps, stop_at)
        self.logf = None

    def _check_data(self, ck: dict | None) -> None:
        """Hook: a subclass checks the loaded data against a source run (the distiller: its teacher's)."""

    def _init_weights(self) -> None:
        """Hook: the weights a fresh run starts from (the seed's initialisation; the distiller: its teacher's)."""

    def _fresh_stage1(self):
        """Stage 1 of a fresh run: fitted on the train split (hit multiplicities / jet summary)."""
        return self.family.fit_stage1(self.cfg, self.data)

    def _build(self, ck: dict | None) -> None:
        cfg, tr, dev = self.cfg, self.tr, self.dev
        torch.manual_seed(tr.seed)
        self.model = self.family.build_network(cfg, self.data).to(dev)
        if ck is None:
            self._init_weights()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=tr.lr, betas=tuple(tr.betas), weight_decay=tr.weight_decay
        )
        # The cosine decays to its floor at horizon["steps"]; under a time limit the horizon is pulled in
        # to the steps that fit the remaining time, so a time-limited run still ends with a small lr.
        self.horizon = {"steps": tr.max_steps}
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, tr.warmup_steps, self.horizon["steps"], tr.min_lr_ratio)
        )
        self.start, self.mult_s = 0, None
        if ck is not None:
            self.model.load_state_dict(ck["model"])
            self.ema.load_state_dict(ck["ema"])
            self.opt.load_state_dict(ck["optimizer"])
            self.sched.load_state_dict(ck["scheduler"])
            mult = self.family.stage1_from_dict(ck["multiplicity"])
            set_rng_state(ck["rng"])
            self.start = int(ck["step"])
        else:
            t0 = time.time()
            mult = self._fresh_stage1()
            self.mult_s = time.time() - t0
        self.mult = mult.to(dev)
        self.net = _PackedForward(self.model)
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.net, device_ids=[dev.index] if dev.type == "cuda" else None)

    # ---------------------------------------------------------------------------- run directory
    def open_run_dir(self) -> None:
        """config.json; on resume drop log rows written after the checkpoint; open log.jsonl (rank 0)."""
        if not self.is_main:
            return
        self.last.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config_path(self.out_dir), {**self.cfg_dict, "provenance": provenance(self.cfg_dict)})
        lp = log_path(self.out_dir)
        if self.start and lp.exists():
            rows = [ln for ln in lp.read_text().splitlines() if ln.strip()]
            keep = [ln for ln in rows if json.loads(ln).get("step", 0) <= self.start]
            with atomic_path(lp) as tmp:
                tmp.write_text("".join(r + "\n" for r in keep))
        self.logf = open(lp, "a")
        if self.mult_s is not None:
            self.log(
                {
                    "event": "start",
                    "step": 0,
                    "n_train": int(len(self.data.usable)),
                    "world_size": self.world,
                    "device": str(self.dev),
                    "multiplicity_fit_s": round(self.mult_s, 2),
                    "provenance": provenance(self.cfg_dict),
                }
            )

    def log(self, row: dict) -> None:
        if self.logf is not None:
            self.logf.write(json.dumps(row) + "\n")
            self.logf.flush()

    def close(self) -> None:
        if self.logf is not None:
            self.logf.close()
            self.logf = None

    def checkpoint(self, step: int) -> None:
        if not self.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "step": step,
            "planned_end": self.end,  # < max_steps when a time limit ended the run early
            "finished": step >= self.end and self.stop_at is None,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": rng_state(),
            "config": self.cfg_dict,
            "transforms": self.transforms.to_dict(),
            "multiplicity": self.mult.to_dict(),
            "channels": list(self.cfg.data.channels),
            "cond_table": self.data.cond_table,
            "family": self.family.name,
            "data_dir": str(self.data_dir.resolve()),
            **self.family.extra_state(self.data),
            **self._extra_checkpoint(),
            "provenance": provenance(self.cfg_dict),
        }
        if self.tr.keep_step_ckpts and step % self.tr.ckpt_every == 0:
            save_checkpoint(step_checkpoint(self.out_dir, step), state)
        save_checkpoint(self.last, state)
        self.last_good = step

    def _extra_checkpoint(self) -> dict:
        """Hook: more state for the checkpoint (the distiller: its teacher and method)."""
        return {}

    # -------------------------------------------------------------------------------------- steps
    def model_loss(self, model, b, t, drop, eps) -> torch.Tensor:
        """Sum over ``b``'s tokens and features of ``model``'s loss (the objective's; the distiller's own)."""
        return loss_sum(model, b, t, drop, eps, self.form, self.autocast_dtype)

    def step(self, step: int) -> tuple[float, float, int, int]:
        """One optimiser step on the global batch of ``step``: (loss, grad norm, jets, hits).

        Raises :class:`NonFiniteError` before updating the weights when the loss or the gradient
        norm is NaN/inf; the last checkpoint on disk stays the last good one.
        """
        tr, d, world = self.tr, self.data, self.world
        gidx = d.usable[self.batcher.batch(step)]
        n_g = d.n_sel[gidx]
        dr = draw(step_generator(tr.seed, step), len(gidx), int(n_g.sum()), tr.cond_drop, n_feat=self.n_feat)
        js = shard(len(gidx), self.rank, world)
        off = np.concatenate([[0], np.cumsum(n_g)])
        hs = slice(int(off[js.start]), int(off[js.stop]))
        dq = dr.dq[hs] if self.cfg.data.dequantize else None
        b = self.family.make_batch(d, d.store, gidx[js], dq, self.dev, self.cfg)
        if b.n_hits != hs.stop - hs.start:
            raise RuntimeError("the store's batch holds a token count different from its per-jet counts")
        s = self.model_loss(self.net, b, dr.t[js], dr.drop[js], dr.eps[hs])
        n_global = int(n_g.sum())
        nf = float(self.n_feat)
        loss = s * (world / (nf * n_global))  # DDP averages over ranks -> global per-feature mean
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tr.grad_clip if tr.grad_clip > 0 else float("inf"))
        )
        loss_v = float(loss.detach()) / world
        if self.ddp:
            lt = torch.tensor([float(s.detach())], dtype=torch.float64, device=self.dev)
            torch.distributed.all_reduce(lt)
            loss_v = float(lt) / (nf * n_global)
        if not (math.isfinite(loss_v) and math.isfinite(gnorm)):
            self._non_finite(step + 1, loss_v, gnorm, b, gidx[js])
        self.opt.step()
        self.sched.step()
        decay = min(tr.ema_decay, (1 + step) / (10 + step)) if tr.ema_warmup else tr.ema_decay
        ema_update(self.ema, self.model, decay)
        return loss_v, gnorm, len(gidx), n_global

    def _non_finite(self, done: int, loss_v: float, gnorm: float, batch, jets: np.ndarray) -> None:
        """Log, close and raise, naming the jets of this rank's batch that hold NaN/inf (if any)."""
        bad = non_finite_jets(batch)
        jet_ids = [int(v) for v in np.asarray(self.data.store.jets["jet_id"])[jets[bad]][:5]]
        self.log(
            {
                "event": "non_finite",
                "step": done,
                "loss": loss_v,
                "grad_norm": gnorm,
                "bad_jet_ids": jet_ids,
                "time": time.time(),
            }
        )
        self.close()
        kept = (
            f"{self.last} (step {self.last_good}) is kept"
            if self.last_good is not None
            else "no checkpoint had been written yet"
        )
        cause = (
            f"the train split's jets with jet_id {jet_ids} hold NaN/inf values"
            if jet_ids
            else "this batch's data are finite: the run diverged, lower --lr"
        )
        raise NonFiniteError(
            f"step {done}: training loss {loss_v} / gradient norm {gnorm} is not finite; "
            f"stopped before updating the weights, {kept}. Cause: {cause}",
            path=self.out_dir,
        )

    def replan(self, done: int, t_start: float) -> None:
        """Time limit: how many more steps fit at the rate measured so far (may move both ways)."""
        elapsed = time.time() - t_start
        fit = done + int((60 * self.tr.time_limit_min - elapsed) / (elapsed / (done - self.start)))
        if self.ddp:  # all ranks must agree on the same end step
            ft = torch.tensor([float(fit)], device=self.dev)
            torch.distributed.all_reduce(ft, op=torch.distributed.ReduceOp.MIN)
            fit = int(ft.item())
        new_end = max(min(fit, self.end_steps), done)
        if new_end != self.end:
            self.end = new_end
            self.horizon["steps"] = max(self.end, self.tr.warmup_steps + 1)
            self.log({"event": "time_limit", "step": done, "planned_end": self.end, "minutes": self.tr.time_limit_min})

    def validate_ema(self, done: int) -> float:
        d = self.data

        def batch(idx, dq):
            return self.family.make_batch(d, d.val_store, idx, dq, self.dev, self.cfg)

        v = _validation_loss(self.ema, self.val_sizes, batch, self.n_feat, self.cfg, self.model_loss)
        self.log({"step": done, "val_loss": v, "time": time.time()})
        return v

    def loop(self, pbar) -> float | None:
        """Steps from the start (or the resumed step) to the planned end; returns the last val loss."""
        tr, last_val = self.tr, None
        has_val = self.is_main and self.data.val_store is not None and len(self.data.val_store)
        if has_val:
            self.val_sizes = self.family.val_sizes(self.data, self.cfg)
        t_log, acc = time.time(), np.zeros(4)  # jets, hits, loss sum, steps since the last log row
        self.model.train()
        t_start = time.time()
        for step in range(self.start, self.end):
            loss_v, gnorm, n_jets, n_hits = self.step(step)
            done = step + 1
            acc += (n_jets, n_hits, loss_v, 1)
            if pbar is not None:
                pbar.update(1)
            if tr.time_limit_min > 0 and (done - self.start) % 10 == 0 and done < self.end:
                self.replan(done, t_start)
            if done % tr.log_every == 0 or done == self.end:
                dt = max(time.time() - t_log, 1e-9)
                row = {
                    "step": done,
                    "loss": acc[2] / acc[3],
                    "lr": self.opt.param_groups[0]["lr"],
                    "grad_norm": gnorm,
                    "jets_per_s": acc[0] / dt,
                    "hits_per_s": acc[1] / dt,
                    "time": time.time(),
                }
                self.log(row)
                if pbar is not None:
                    pbar.set_postfix(loss=f"{row['loss']:.4f}", jets_s=f"{row['jets_per_s']:.1f}")
                t_log, acc = time.time(), np.zeros(4)
            if has_val and (done % tr.val_every == 0 or done == self.end):
                last_val = self.validate_ema(done)
                t_log = time.time()
            if done % tr.ckpt_every == 0 or done == self.end:
                self.checkpoint(done)
            if done >= self.end:
                break
        if self.start >= self.end:
            self.checkpoint(self.start)
        return last_val


def train(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: Config | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool | None = None,
    max_steps: int | None = None,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Train on ``data_dir`` (a hit directory) into ``out_dir``; returns a summary dict.

    ``resume=True`` continues from ``out_dir/checkpoints/last.pt`` with the checkpoint's config
    (``config`` is ignored; ``max_steps`` may extend the run, which re-times the cosine decay).
    ``stop_at`` ends the loop early at that step (checkpoint written) as if interrupted, so that a
    resumed run can be compared with an uninterrupted one. Under torchrun (WORLD_SIZE > 1) runs DDP.
    A NaN/inf loss stops the run with :class:`~e2econd.errors.NonFiniteError`, the last good
    checkpoint untouched.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    last = last_checkpoint(out_dir)
    ck = None
    if resume:
        ck = load_checkpoint(last)
        config = from_dict(ck["config"], source=last)
    elif last.exists():
        raise E2EInputError("run directory already holds a checkpoint; use --resume or another --out", path=out_dir)
    config = copy.deepcopy(config) if config is not None else Config()
    if max_steps is not None:
        config.train.max_steps = max_steps
    trainer = _Trainer(data_dir, out_dir, validate(config), ck, device, stop_at)
    return run_trainer(trainer, progress)


def run_trainer(trainer: _Trainer, progress: bool | None, desc: str = "train") -> dict[str, Any]:
    """Open the run directory, run the step loop under a progress bar (rank 0), close; the summary dict."""
    trainer.open_run_dir()
    pbar = None
    if trainer.is_main and progress is not False:
        from tqdm import tqdm

        pbar = tqdm(
            total=trainer.tr.max_steps,
            initial=trainer.start,
            desc=desc,
            unit="step",
            file=sys.stderr,
            disable=bar_disabled(progress),
            dynamic_ncols=True,
        )
    try:
        last_val = trainer.loop(pbar)
    finally:
        if pbar is not None:
            pbar.close()
        trainer.close()
    if trainer.ddp:
        torch.distributed.barrier()
    return {
        "run_dir": str(trainer.out_dir),
        "steps": max(trainer.end, trainer.start),
        "val_loss": last_val,
        "checkpoint": str(trainer.last),
        "world_size": trainer.world,
        "rank": trainer.rank,
    }
