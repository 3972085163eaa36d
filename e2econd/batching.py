"""Training batches: the train split's jets, global batches bucketed by multiplicity, DDP shards,
the random draws of one step, dequantisation and the device batch the loss sees.

Every draw of a step comes from generators seeded by (seed, step), so ``--resume`` continues
bit-exactly on CPU and a DDP run draws exactly what a single process draws for the same global
batch. Dequantisation is uniform within the cell: ±0.5 pixel = ±0.0087 in Δη/Δφ for crystals,
±2.5 pixels around the centre for HCAL towers (``size`` 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2econd.config import Config
from e2econd.data.geometry import CHANNELS, PIXEL
from e2econd.errors import E2EInputError


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
    eps: torch.Tensor  # (total_hits, n_feat)
    dq: torch.Tensor  # (total_hits, 2), U[-0.5, 0.5)


def draw(
    gen: torch.Generator, n_jets: int, n_hits: int, cond_drop: float, stratified: bool = True, n_feat: int = 3
) -> StepDraws:
    """t stratified over the batch (u0 + i/B mod 1, shuffled), drop ~ Bernoulli(cond_drop), ε ~ N(0, 1)
    of shape (n_hits, n_feat) (tokens × features), dequantisation (n_hits, 2)."""
    if stratified:
        u0 = torch.rand(1, generator=gen, dtype=torch.float64)
        t = (u0 + torch.arange(n_jets, dtype=torch.float64) / max(n_jets, 1)) % 1.0
        t = t[torch.randperm(n_jets, generator=gen)].float()
    else:
        t = torch.rand(n_jets, generator=gen)
    drop = torch.rand(n_jets, generator=gen) < cond_drop
    eps = torch.randn(n_hits, n_feat, generator=gen)
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
    weight: torch.Tensor | None = (
        None  # (F,) per feature, (total, F) per token and feature or (total, 1) per token (mean 1); None = 1
    )

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
    c = transforms.condition.forward(np.asarray(_np(packed.pt), np.float64), np.asarray(_np(packed.m0), np.float64))
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


# ------------------------------------------------------------------------------ the train split
def channel_counts(jets: dict) -> np.ndarray:
    return np.stack([np.asarray(jets[f"n_{c}"], np.int64) for c in CHANNELS], axis=1)


def _open_store(data_dir, split):
    from e2econd.data.hitstore import HitStore

    return HitStore(data_dir, split)


@dataclass
class TrainData:
    """The train split and what the loop needs of it: usable jets, their hit counts, conditions."""

    store: Any
    val_store: Any
    counts: np.ndarray  # (n_jets, 3) hits per channel
    y: np.ndarray
    n_sel: np.ndarray  # hits in the trained channels
    usable: np.ndarray  # jets with at least one such hit
    ccond: np.ndarray  # transformed (log pt, log m0)
    cond_table: dict
    extra: dict = field(default_factory=dict)  # family-specific fitted objects (e.g. the tower transform)


def checked_labels(jets: dict, cfg: Config, data_dir: Path) -> np.ndarray:
    """Integer labels y of the train split; outside 0..n_classes-1: one-line error naming the file."""
    y = np.rint(np.asarray(jets["y"], np.float64)).astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= cfg.model.n_classes):
        raise E2EInputError(
            f"labels y range over {y.min()}..{y.max()}, outside 0..{cfg.model.n_classes - 1} (set model.n_classes)",
            path=data_dir / "train.parquet",
            key="y",
        )
    return y


def usable_jets(n_sel: np.ndarray, world: int, cfg: Config, data_dir: Path, what: str) -> np.ndarray:
    """Jets with at least one token (the others carry no loss); fewer than the world size: error."""
    usable = np.flatnonzero(n_sel > 0)
    if len(usable) < world:
        raise E2EInputError(
            f"only {len(usable)} training jets have {what} in channels {cfg.data.channels}",
            path=data_dir / "train.parquet",
        )
    return usable


def load_train_data(data_dir: Path, cfg: Config, world: int) -> TrainData:
    """Open the train (and val) split and check labels and usable jets before any work starts."""
    if not data_dir.is_dir():
        raise E2EInputError("data directory not found (run `e2econd preprocess` first)", path=data_dir)
    store = _open_store(data_dir, "train")
    try:
        val_store = _open_store(data_dir, "val")
    except (E2EInputError, FileNotFoundError):
        val_store = None
    jets = store.jets
    counts = channel_counts(jets)
    y = checked_labels(jets, cfg, data_dir)
    n_sel = counts[:, cfg.channel_ids].sum(1)
    usable = usable_jets(n_sel, world, cfg, data_dir, "hits")
    pt, m0 = np.asarray(jets["pt"], np.float64), np.asarray(jets["m0"], np.float64)
    ccond = store.transforms.condition.forward(pt, m0)
    cond_table = {"pt": pt, "m0": m0, "y": np.asarray(jets["y"], np.float32)}
    return TrainData(store, val_store, counts, y, n_sel, usable, ccond, cond_table)


def non_finite_jets(batch: Batch) -> np.ndarray:
    """Indices of the batch's jets with a NaN/inf token feature or condition (pt, m0)."""
    cu = np.asarray(_np(batch.cu_seqlens), np.int64)
    token_bad = ~np.isfinite(np.asarray(_np(batch.x0), np.float64)).all(1)
    bad = np.repeat(np.arange(len(cu) - 1), np.diff(cu))[token_bad]
    cond_bad = [~np.isfinite(np.asarray(_np(batch.cond[k]), np.float64)) for k in ("pt", "m0")]
    return np.union1d(bad, np.flatnonzero(cond_bad[0] | cond_bad[1]))
