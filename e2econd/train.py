"""Training of the conditional diffusion model (single process, or DDP under ``torchrun``).

``train(data_dir, out_dir, config)`` fits the multiplicity model, then trains the set-transformer
denoiser with v-prediction on the cosine schedule (continuous t ~ U(0, 1), stratified per batch):

* hits are dequantised each step (uniform within the pixel: ±0.5 pixel = ±0.0087 in Δη/Δφ; HCAL
  tower hits ±2.5 pixels around the tower centre, from the hit's ``size``) *before* the feature
  transform, so the model sees a continuous density;
* loss = sum over valid hits h and features f of (v̂ − v)² / (3 · number of hits in the global
  batch): every hit weighs the same (jets with more hits weigh more), no auxiliary x0 term;
* classifier-free guidance: all conditions of a jet (pt, m0, y) are replaced by their null tokens
  together with probability ``cond_drop``;
* every random draw of a step (batch order, dequantisation, t, ε, condition drop) comes from
  generators seeded by (seed, step), so ``--resume`` continues bit-exactly on CPU and a DDP run
  draws exactly what a single process draws for the same global batch;
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
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2econd._version import __version__
from e2econd.config import Config, from_dict, validate
from e2econd.data.geometry import CHANNELS, PIXEL
from e2econd.diffusion.schedule import CosineSchedule, q_sample, v_target
from e2econd.errors import E2EInputError
from e2econd.model.multiplicity import MultiplicityModel
from e2econd.model.set_transformer import SetTransformer
from e2econd.utils import atomic_path, bar_disabled, provenance, write_json_atomic

CHECKPOINT_FORMAT = 1
_VAL_SEED = 0x5EED_0F_FA1


# ------------------------------------------------------------------------------------------ rng
def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """CPU generator for the draws of one training step (independent of rank and of resumption)."""
    mixed = int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


# ------------------------------------------------------------------------------------- batching
class BucketBatcher:
    """Global batches of jet indices bucketed by multiplicity, a deterministic function of (seed, step).

    Each epoch: random permutation (seed, epoch), pools of ``pool * batch_size`` jets sorted by
    number of hits, chunked into batches (at most ``batch_size`` jets and, if ``max_tokens`` > 0,
    at most ``max_tokens`` hits), batch order shuffled. Batches smaller than ``min_jets`` (the
    world size) are dropped.
    """

    def __init__(
        self,
        n_hits: np.ndarray,
        batch_size: int,
        pool: int,
        seed: int,
        max_tokens: int = 0,
        min_jets: int = 1,
    ):
        self.n = np.asarray(n_hits, np.int64)
        self.bs, self.pool, self.seed = int(batch_size), int(pool), int(seed)
        self.max_tokens, self.min_jets = int(max_tokens), int(min_jets)
        self._epochs: dict[int, list[np.ndarray]] = {}
        self._starts = [0]  # first global step of each epoch

    def epoch(self, e: int) -> list[np.ndarray]:
        if e not in self._epochs:
            rng = np.random.default_rng([self.seed, e, 0xB0C])
            perm = rng.permutation(len(self.n))
            pool = self.pool * self.bs
            batches = []
            for a in range(0, len(perm), pool):
                chunk = perm[a : a + pool]
                chunk = chunk[np.argsort(self.n[chunk], kind="stable")]
                cur, tokens = [], 0
                for j in chunk:
                    nj = int(self.n[j])
                    if cur and (len(cur) >= self.bs or (self.max_tokens and tokens + nj > self.max_tokens)):
                        batches.append(np.array(cur, np.int64))
                        cur, tokens = [], 0
                    cur.append(int(j))
                    tokens += nj
                if cur:
                    batches.append(np.array(cur, np.int64))
            batches = [b for b in batches if len(b) >= self.min_jets]
            order = rng.permutation(len(batches))
            self._epochs = {k: v for k, v in self._epochs.items() if k >= e - 1}  # bounded cache
            self._epochs[e] = [batches[i] for i in order]
        return self._epochs[e]

    def batch(self, step: int) -> np.ndarray:
        """Jet indices of the global batch of ``step`` (0-based)."""
        e = 0
        while True:
            while len(self._starts) <= e + 1:
                k = len(self._starts) - 1
                nb = len(self.epoch(k))
                if nb == 0:
                    raise E2EInputError("no training batch can be formed (too few jets for the world size)")
                self._starts.append(self._starts[k] + nb)
            if step < self._starts[e + 1]:
                return self.epoch(e)[step - self._starts[e]]
            e += 1


def shard(n_jets: int, rank: int, world: int) -> slice:
    """Contiguous block of a global batch's jets owned by ``rank`` (np.array_split sizes)."""
    base, extra = divmod(n_jets, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


# ----------------------------------------------------------------------------------- the batch
@dataclass
class StepDraws:
    """Random draws of one global batch: t (B,), condition drop (B,), ε and dequantisation noise (hits)."""

    t: torch.Tensor
    drop: torch.Tensor
    eps: torch.Tensor  # (total_hits, 3)
    dq: torch.Tensor  # (total_hits, 2), U[-0.5, 0.5)


def draw(
    gen: torch.Generator, n_jets: int, n_hits: int, cond_drop: float, stratified: bool = True
) -> StepDraws:
    """t stratified over the batch (u0 + i/B mod 1, shuffled), drop ~ Bernoulli(cond_drop), ε ~ N(0, 1)."""
    if stratified:
        u0 = torch.rand(1, generator=gen, dtype=torch.float64)
        t = (u0 + torch.arange(n_jets, dtype=torch.float64) / max(n_jets, 1)) % 1.0
        t = t[torch.randperm(n_jets, generator=gen)].float()
    else:
        t = torch.rand(n_jets, generator=gen)
    drop = torch.rand(n_jets, generator=gen) < cond_drop
    eps = torch.randn(n_hits, 3, generator=gen)
    dq = torch.rand(n_hits, 2, generator=gen) - 0.5
    return StepDraws(t, drop, eps, dq)


def dequantize(feats: torch.Tensor, size: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Raw [Δη, Δφ, E] + uniform offset u ∈ [-0.5, 0.5) × size pixels in Δη, Δφ (towers: size 5)."""
    out = feats.clone()
    out[:, :2] = out[:, :2] + u * (size.to(feats.dtype)[:, None] * PIXEL)
    return out


@dataclass
class Batch:
    """One (local) batch on the device: transformed clean hits x0 (total, 3), packed layout, conditions."""

    x0: torch.Tensor
    channel: torch.Tensor
    cu_seqlens: torch.Tensor
    cond: dict[str, torch.Tensor]
    n_jets: int

    @property
    def n_hits(self) -> int:
        return int(self.x0.shape[0])


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def make_batch(packed, transforms, device, u: torch.Tensor | None) -> Batch:
    """PackedHits (raw GeV) -> device Batch with dequantised (if ``u`` given) and transformed features."""
    feats = torch.as_tensor(_np(packed.feats), dtype=torch.float32)
    channel = torch.as_tensor(_np(packed.channel), dtype=torch.long)
    if u is not None:
        feats = dequantize(feats, torch.as_tensor(_np(packed.size)), u)
    x0 = transforms.features.forward(feats, channel)
    c = transforms.condition.forward(
        np.asarray(_np(packed.pt), np.float64), np.asarray(_np(packed.m0), np.float64)
    )
    cond = {
        "pt": torch.as_tensor(c[:, 0], dtype=torch.float32),
        "m0": torch.as_tensor(c[:, 1], dtype=torch.float32),
        "y": torch.as_tensor(np.rint(_np(packed.y)).astype(np.int64)),
    }
    cu = torch.as_tensor(_np(packed.cu_seqlens), dtype=torch.int32)
    return Batch(
        x0.to(device),
        channel.to(device),
        cu.to(device),
        {k: v.to(device) for k, v in cond.items()},
        int(cu.numel() - 1),
    )


def loss_sum(model, batch: Batch, t, drop, eps, schedule: CosineSchedule, autocast_dtype=None):
    """Sum over hits and features of (v̂ − v)² for one batch (the caller divides by 3 · global hits)."""
    dev = batch.x0.device
    t = t.to(dev)
    lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).long()
    alpha, sigma = schedule.alpha_sigma(t)
    a_h = torch.repeat_interleave(alpha, lengths, output_size=batch.n_hits)[:, None]
    s_h = torch.repeat_interleave(sigma, lengths, output_size=batch.n_hits)[:, None]
    eps = eps.to(dev)
    xt = q_sample(batch.x0, eps, a_h, s_h)
    target = v_target(batch.x0, eps, a_h, s_h)
    fwd = model.forward_packed if isinstance(model, SetTransformer) else model  # DDP(_PackedForward)
    with torch.autocast(dev.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        v = fwd(
            xt, batch.channel, batch.cu_seqlens, t, batch.cond, drop.to(dev) if drop is not None else None
        )
    return ((v.float() - target) ** 2).sum()


# ------------------------------------------------------------------------------------- helpers
def lr_factor(step: int, warmup: int, max_steps: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``max_steps``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    prog = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    if device in (None, "auto"):
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise E2EInputError(f"unknown device '{device}' (cpu, cuda, cuda:N)", key="device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise E2EInputError("CUDA device requested but torch sees no GPU", key="device")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def _channel_counts(jets: dict) -> np.ndarray:
    return np.stack([np.asarray(jets[f"n_{c}"], np.int64) for c in CHANNELS], axis=1)


def _open_store(data_dir, split):
    from e2econd.data.hitstore import HitStore

    return HitStore(data_dir, split)


# ----------------------------------------------------------------------------------- checkpoint
def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])  # noqa: NPY002 (global state saved for exact resume)
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary sibling, then rename (never a partial checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path) -> dict:
    if not path.exists():
        raise E2EInputError("no checkpoint found (expected checkpoints/last.pt)", path=path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise E2EInputError(f"cannot read checkpoint ({type(exc).__name__}: {exc})", path=path) from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        fmt = ck.get("format") if isinstance(ck, dict) else None
        raise E2EInputError(
            f"checkpoint format {fmt!r} is not supported by e2econd {__version__} "
            f"(expected {CHECKPOINT_FORMAT})",
            path=path,
            key="format",
        )
    ver = str(ck.get("version", "?"))
    if ver.split(".")[:1] != __version__.split(".")[:1]:
        raise E2EInputError(
            f"checkpoint written by e2econd {ver}, incompatible with {__version__}", path=path, key="version"
        )
    return ck


# --------------------------------------------------------------------------------------- train
def _validation_loss(
    model, store, channel_ids, transforms, device, cfg: Config, schedule, autocast_dtype
) -> float:
    """Per-hit v-MSE of ``model`` on a fixed subset of the val split with fixed t, ε and dequantisation."""
    n = len(store)
    idx = np.arange(n if not cfg.train.val_jets else min(n, cfg.train.val_jets))
    counts = _channel_counts(store.jets)[idx][:, channel_ids].sum(1)
    idx = idx[counts > 0]
    if len(idx) == 0:
        return float("nan")
    gen = torch.Generator().manual_seed(_VAL_SEED)
    tot, hits = 0.0, 0
    model.eval()
    with torch.no_grad():
        for a in range(0, len(idx), cfg.train.batch_size):
            packed = store.batch(idx[a : a + cfg.train.batch_size], cfg.data.channels)
            B = len(_np(packed.cu_seqlens)) - 1
            H = int(_np(packed.cu_seqlens)[-1])
            d = draw(gen, B, H, 0.0)
            b = make_batch(packed, transforms, device, d.dq if cfg.data.dequantize else None)
            tot += float(loss_sum(model, b, d.t, None, d.eps, schedule, autocast_dtype))
            hits += H
    return tot / (3 * max(hits, 1))


class _PackedForward(torch.nn.Module):
    """Routes ``forward`` to ``SetTransformer.forward_packed`` so DDP sees (and syncs) the training call."""

    def __init__(self, model: SetTransformer):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model.forward_packed(*args, **kwargs)


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
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    ck = None
    if resume:
        ck = _load_checkpoint(last)
        config = from_dict(ck["config"], source=last)
    elif last.exists():
        raise E2EInputError(
            "run directory already holds a checkpoint; use --resume or another --out", path=out_dir
        )
    config = copy.deepcopy(config) if config is not None else Config()
    if max_steps is not None:
        config.train.max_steps = max_steps
    cfg = validate(config)
    if not data_dir.is_dir():
        raise E2EInputError("data directory not found (run `e2econd preprocess` first)", path=data_dir)
    rank, world, local_rank = _dist_info()
    dev = resolve_device(device, local_rank)
    if cfg.train.threads and dev.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    ddp = world > 1
    if ddp:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
    is_main = rank == 0

    store = _open_store(data_dir, "train")
    try:
        val_store = _open_store(data_dir, "val")
    except (E2EInputError, FileNotFoundError):
        val_store = None
    transforms = store.transforms
    channel_ids = cfg.channel_ids
    jets = store.jets
    counts = _channel_counts(jets)
    y = np.rint(np.asarray(jets["y"], np.float64)).astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= cfg.model.n_classes):
        raise E2EInputError(
            f"labels y range over {y.min()}..{y.max()}, outside 0..{cfg.model.n_classes - 1} "
            "(set model.n_classes)",
            path=data_dir / "train.parquet",
            key="y",
        )
    n_sel = counts[:, channel_ids].sum(1)
    usable = np.flatnonzero(n_sel > 0)  # jets without hits in the chosen channels carry no loss
    if len(usable) < world:
        raise E2EInputError(
            f"only {len(usable)} training jets have hits in channels {cfg.data.channels}",
            path=data_dir / "train.parquet",
        )
    ccond = transforms.condition.forward(
        np.asarray(jets["pt"], np.float64), np.asarray(jets["m0"], np.float64)
    )

    # --- models
    torch.manual_seed(cfg.train.seed)
    model = SetTransformer(cfg.model).to(dev)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    mult = MultiplicityModel(
        channel_ids, cfg.model.n_classes, cfg.multiplicity.components, cfg.multiplicity.hidden
    )
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas), weight_decay=cfg.train.weight_decay
    )
    tr = cfg.train
    # The cosine decays to its floor at horizon["steps"]; under a time limit the horizon is pulled in
    # to the steps that fit the remaining time, so a time-limited run still ends with a small lr.
    horizon = {"steps": tr.max_steps}
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, tr.warmup_steps, horizon["steps"], tr.min_lr_ratio)
    )
    start = 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        mult = MultiplicityModel.from_dict(ck["multiplicity"])
        _set_rng_state(ck["rng"])
        start = int(ck["step"])
    else:
        t0 = time.time()
        mult.fit(
            counts,
            ccond[:, 0],
            ccond[:, 1],
            y,
            steps=cfg.multiplicity.steps,
            lr=cfg.multiplicity.lr,
            seed=cfg.train.seed,
        )
        mult_s = time.time() - t0
    mult = mult.to(dev)
    net = _PackedForward(model)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)

    schedule = CosineSchedule(cfg.train.schedule_s)
    autocast_dtype = torch.bfloat16 if (cfg.train.bf16 and dev.type == "cuda") else None
    batcher = BucketBatcher(
        n_sel[usable], tr.batch_size, tr.bucket_pool, tr.seed, tr.max_tokens, min_jets=world
    )
    cfg_dict = cfg.to_dict()
    cond_table = {
        "pt": np.asarray(jets["pt"], np.float64),
        "m0": np.asarray(jets["m0"], np.float64),
        "y": np.asarray(jets["y"], np.float32),
    }

    log_path = out_dir / "log.jsonl"
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(exist_ok=True)
        write_json_atomic(out_dir / "config.json", {**cfg_dict, "provenance": provenance(cfg_dict)})
        if ck is not None and log_path.exists():  # drop log rows written after the checkpoint
            rows = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
            keep = [ln for ln in rows if json.loads(ln).get("step", 0) <= start]
            with atomic_path(log_path) as tmp:
                tmp.write_text("".join(r + "\n" for r in keep))
    logf = open(log_path, "a") if is_main else None

    def log(row: dict) -> None:
        if logf is not None:
            logf.write(json.dumps(row) + "\n")
            logf.flush()

    if is_main and ck is None:
        log(
            {
                "event": "start",
                "step": 0,
                "n_train": int(len(usable)),
                "world_size": world,
                "device": str(dev),
                "multiplicity_fit_s": round(mult_s, 2),
                "provenance": provenance(cfg_dict),
            }
        )

    def checkpoint(step: int) -> None:
        if not is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "step": step,
            "planned_end": end,  # < max_steps when a time limit ended the run early
            "finished": step >= end and stop_at is None,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": _rng_state(),
            "config": cfg_dict,
            "transforms": transforms.to_dict(),
            "multiplicity": mult.to_dict(),
            "channels": list(cfg.data.channels),
            "cond_table": cond_table,
            "provenance": provenance(cfg_dict),
        }
        if tr.keep_step_ckpts and step % tr.ckpt_every == 0:
            save_checkpoint(ckpt_dir / f"step_{step:06d}.pt", state)
        save_checkpoint(last, state)

    pbar = None
    if is_main and progress is not False:
        from tqdm import tqdm

        pbar = tqdm(
            total=tr.max_steps,
            initial=start,
            desc="train",
            unit="step",
            file=sys.stderr,
            disable=bar_disabled(progress),
            dynamic_ncols=True,
        )
    last_val = None
    t_log, jets_acc, hits_acc, loss_acc, n_acc = time.time(), 0, 0, 0.0, 0
    model.train()
    end = end_steps = tr.max_steps if stop_at is None else min(tr.max_steps, stop_at)
    t_start = time.time()
    for step in range(start, end):
        gidx = usable[batcher.batch(step)]
        n_g = n_sel[gidx]
        gen = step_generator(tr.seed, step)
        d = draw(gen, len(gidx), int(n_g.sum()), tr.cond_drop)
        js = shard(len(gidx), rank, world)
        off = np.concatenate([[0], np.cumsum(n_g)])
        hs = slice(int(off[js.start]), int(off[js.stop]))
        packed = store.batch(gidx[js], cfg.data.channels)
        if int(_np(packed.cu_seqlens)[-1]) != hs.stop - hs.start:
            raise RuntimeError("HitStore.batch returned a hit count different from the n_<channel> columns")
        b = make_batch(packed, transforms, dev, d.dq[hs] if cfg.data.dequantize else None)
        s = loss_sum(net, b, d.t[js], d.drop[js], d.eps[hs], schedule, autocast_dtype)
        n_global = int(n_g.sum())
        loss = s * (world / (3.0 * n_global))  # DDP averages over ranks -> global per-hit mean
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), tr.grad_clip if tr.grad_clip > 0 else float("inf")
        )
        opt.step()
        sched.step()
        decay = min(tr.ema_decay, (1 + step) / (10 + step)) if tr.ema_warmup else tr.ema_decay
        ema_update(ema, model, decay)
        done = step + 1
        loss_v = float(loss.detach()) / world
        if ddp:
            lt = torch.tensor([float(s.detach())], dtype=torch.float64, device=dev)
            torch.distributed.all_reduce(lt)
            loss_v = float(lt) / (3.0 * n_global)
        jets_acc += len(gidx)
        hits_acc += n_global
        loss_acc += loss_v
        n_acc += 1
        if pbar is not None:
            pbar.update(1)
        if tr.time_limit_min > 0 and (done - start) % 10 == 0 and done < end:
            # re-plan: how many more steps fit the time limit at the rate measured so far
            elapsed = time.time() - t_start
            fit = done + int((60 * tr.time_limit_min - elapsed) / (elapsed / (done - start)))
            if ddp:  # all ranks must agree on the same end step
                ft = torch.tensor([float(fit)], device=dev)
                torch.distributed.all_reduce(ft, op=torch.distributed.ReduceOp.MIN)
                fit = int(ft.item())
            new_end = max(min(fit, end_steps), done)  # may move both ways as the measured rate changes
            if new_end != end:
                end = new_end
                horizon["steps"] = max(end, tr.warmup_steps + 1)
                log({"event": "time_limit", "step": done, "planned_end": end, "minutes": tr.time_limit_min})
        if done % tr.log_every == 0 or done == end:
            dt = max(time.time() - t_log, 1e-9)
            row = {
                "step": done,
                "loss": loss_acc / n_acc,
                "lr": opt.param_groups[0]["lr"],
                "grad_norm": float(gnorm),
                "jets_per_s": jets_acc / dt,
                "hits_per_s": hits_acc / dt,
                "time": time.time(),
            }
            log(row)
            if pbar is not None:
                pbar.set_postfix(loss=f"{row['loss']:.4f}", jets_s=f"{row['jets_per_s']:.1f}")
            t_log, jets_acc, hits_acc, loss_acc, n_acc = time.time(), 0, 0, 0.0, 0
        if (
            is_main
            and val_store is not None
            and len(val_store)
            and (done % tr.val_every == 0 or done == end)
        ):
            last_val = _validation_loss(
                ema, val_store, channel_ids, transforms, dev, cfg, schedule, autocast_dtype
            )
            log({"step": done, "val_loss": last_val, "time": time.time()})
            t_log = time.time()
        if done % tr.ckpt_every == 0 or done == end:
            checkpoint(done)
        if done >= end:
            break
    if start >= end:
        checkpoint(start)
    if pbar is not None:
        pbar.close()
    if logf is not None:
        logf.close()
    if ddp:
        torch.distributed.barrier()
    return {
        "run_dir": str(out_dir),
        "steps": max(end, start),
        "val_loss": last_val,
        "checkpoint": str(last),
        "world_size": world,
        "rank": rank,
    }


# --------------------------------------------------------------------------------------- load
@dataclass
class LoadedRun:
    """A trained run ready for sampling: EMA (or raw) denoiser in eval mode and everything around it."""

    model: SetTransformer
    multiplicity: MultiplicityModel
    transforms: Any  # e2econd.data.transforms.Transforms
    config: Config
    cond_table: dict[str, np.ndarray]  # raw pt, m0 (GeV) and y of the training jets
    channels: list[str]
    step: int
    schedule: CosineSchedule


def load_run(
    run_dir: str | os.PathLike, device: str | torch.device | None = "cpu", which: str = "ema"
) -> LoadedRun:
    """Load RUN_DIR/checkpoints/last.pt (or RUN_DIR itself if it is a .pt file); ``which`` = "ema" | "model"."""
    from e2econd.data.transforms import Transforms

    p = Path(run_dir)
    path = p if p.suffix == ".pt" else p / "checkpoints" / "last.pt"
    if which not in ("ema", "model"):
        raise E2EInputError(f"which must be 'ema' or 'model', got {which!r}", key="which")
    ck = _load_checkpoint(path)
    cfg = from_dict(ck["config"], source=path)
    dev = resolve_device(str(device) if device is not None else None)
    model = SetTransformer(cfg.model)
    model.load_state_dict(ck[which])
    model = model.to(dev).eval().requires_grad_(False)
    mult = MultiplicityModel.from_dict(ck["multiplicity"]).to(dev)
    return LoadedRun(
        model,
        mult,
        Transforms.from_dict(ck["transforms"]),
        cfg,
        {k: np.asarray(v) for k, v in ck["cond_table"].items()},
        list(ck["channels"]),
        int(ck["step"]),
        CosineSchedule(cfg.train.schedule_s),
    )
