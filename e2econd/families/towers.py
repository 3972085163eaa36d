"""The tower family (``--model towers``): a jet is the set of its occupied 5×5 towers.

Stage 1 (:class:`e2econd.model.summary.SummaryModel`) draws the jet summary given (pt, m0, y):
number of occupied towers, non-zero cells and energy per channel, and whether the hottest HCAL tower
is the central one, jointly. Stage 2 (:class:`e2econd.model.tower_transformer.TowerTransformer`)
denoises the set of tower tokens (:class:`e2econd.data.towers.TowerTransform`: continuous tower
coordinates, a presence bit and a value per cell, tower energies, the ECAL full-readout bit), ordered by
energy with a rank embedding, conditioned on the summary and the kinematics; the loss weights each
feature group equally and each token by its share of the jet's energy (:func:`token_weights`).
Decoding (:func:`decode_tokens`): whole ECAL towers where the readout bit says so, then per jet and
channel the summary's number of cells with the highest presence scores (``SampleOptions.presence``;
tracks and HCAL cells must be > 0); each tower's positive cells scaled so that it holds its generated
tower energy, and each channel's so that the jet holds the summary's energy sum (``SampleOptions.rescale``;
negative ECAL cells are noise and keep their values); tokens placed on distinct towers by a greedy
nearest-free-tower assignment in rank order (:func:`~e2econd.data.towers.assign_towers`); the producer's
crop applied where the summary says so (hottest HCAL tower at the centre).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from e2econd.batching import Batch, TrainData, checked_labels, usable_jets
from e2econd.data.towers import (
    GRID,
    TowerLayout,
    TowerTokens,
    TowerTransform,
    apply_centre_rule,
    assign_towers,
    summary_kinds,
    summary_names,
    tokens_to_images,
    top_k_presence,
)
from e2econd.errors import E2EInputError


def summary_features(summary: np.ndarray, kinds: list[str]) -> np.ndarray:
    """Raw summary (B, S) -> network features before standardisation: log(1 + n), asinh(E / GeV), flag."""
    s = np.asarray(summary, np.float64)
    out = np.empty_like(s)
    for j, k in enumerate(kinds):
        col = s[:, j]
        out[:, j] = np.log1p(np.maximum(col, 0)) if k == "count" else np.arcsinh(col) if k == "energy" else col
    return out


def energy_order(cells: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of packed tokens sorted by descending tower energy (sum of |cells|, GeV) within each jet (ties:
    row order), and each sorted token's rank in its jet (0 = hottest)."""
    counts = np.diff(offsets)
    jet = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((np.arange(len(jet)), -np.abs(cells).sum(1), jet))
    return order, ranks(offsets)


def ranks(offsets: np.ndarray) -> np.ndarray:
    """0, 1, ..., n_j − 1 for every jet j of packed offsets (int64)."""
    counts = np.diff(np.asarray(offsets, np.int64))
    return np.arange(counts.sum()) - np.repeat(np.asarray(offsets[:-1], np.int64), counts)


def token_weights(cells: np.ndarray, offsets: np.ndarray, share: float = 0.5) -> torch.Tensor:
    """Loss weight per token (mean 1 in every jet): (1 − share) + share · n_j E_token / E_jet, E = sum of
    |cells| (GeV). Unweighted, a jet's hottest tower (its core, ~25 % of its energy) is one token of ~110
    and its position is learned last (measured: hottest towers 8 towers from the centre against 2.5)."""
    counts = np.diff(offsets)
    jet = np.repeat(np.arange(len(counts)), counts)
    e = np.abs(cells).sum(1)
    per_jet = np.bincount(jet, e, minlength=len(counts)) / np.maximum(counts, 1)
    frac = np.where(per_jet[jet] > 0, e / np.where(per_jet[jet] > 0, per_jet[jet], 1.0), 1.0)
    return torch.from_numpy(((1.0 - share) + share * frac).astype(np.float32))


def feature_weights(n_cells: int, n_sums: int = 0, cell_channel: np.ndarray | None = None) -> torch.Tensor:
    """Loss weight per feature (mean 1): the 2 coordinates, the n_cells presence bits, the n_cells values and
    the tower energies (if any) each carry an equal share of a token's loss. Unweighted, the coordinates
    would be 2 % of it and the model learns where the energy sits last. ``cell_channel`` (the detector
    channel of every cell slot) balances the channels inside the presence and value groups
    (``objective.balance = "channel"``): tracks' 25 pixels, ECAL's 25 crystals and the one HCAL tower
    then carry equal shares instead of 25 : 25 : 1."""
    groups = [2, n_cells, n_cells] + ([n_sums] if n_sums else [])
    f, share = sum(groups), 1.0 / len(groups)
    cell = torch.ones(n_cells)
    if cell_channel is not None:
        ch = np.asarray(cell_channel)
        _, inv, counts = np.unique(ch, return_inverse=True, return_counts=True)
        cell = torch.from_numpy(n_cells / (len(counts) * counts[inv])).float()  # mean 1, equal channel sums
    parts = [torch.ones(2), cell, cell] + ([torch.ones(n_sums)] if n_sums else [])
    return torch.cat([p * (share * f / g) for p, g in zip(parts, groups)])


class SummaryNorm:
    """Standardisation of :func:`summary_features` (fitted on the train split)."""

    def __init__(self, kinds, mean, std):
        self.kinds, self.mean, self.std = list(kinds), np.asarray(mean, np.float64), np.asarray(std, np.float64)

    @classmethod
    def fit(cls, summary, kinds) -> SummaryNorm:
        f = summary_features(summary, kinds)
        return cls(kinds, f.mean(0), np.maximum(f.std(0), 1e-3))

    def __call__(self, summary) -> torch.Tensor:
        return torch.from_numpy(((summary_features(summary, self.kinds) - self.mean) / self.std).astype(np.float32))

    def to_dict(self) -> dict:
        return {"kinds": self.kinds, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d) -> SummaryNorm:
        return cls(d["kinds"], d["mean"], d["std"])


class TowerFamily:
    """See :mod:`e2econd.families` for the interface."""

    name = "towers"
    extra_keys = ("tower_transform", "summary_norm")  # checkpoint keys of extra_state

    # ---------------------------------------------------------------------------------- training
    def load_data(self, data_dir, cfg, world) -> TrainData:
        from e2econd.data.towerstore import TowerStore

        if not data_dir.is_dir():
            raise E2EInputError("data directory not found (run `e2econd preprocess` first)", path=data_dir)
        layout = TowerLayout.of(cfg.data.channels)
        store = TowerStore(data_dir, "train", layout)
        val = TowerStore(data_dir, "val", layout) if (data_dir / "val.parquet").is_file() else None
        jets = store.jets
        y = checked_labels(jets, cfg, data_dir)
        n_sel = store.tokens.counts.astype(np.int64)
        usable = usable_jets(n_sel, world, cfg, data_dir, "towers")
        pt, m0 = np.asarray(jets["pt"], np.float64), np.asarray(jets["m0"], np.float64)
        ccond = store.transforms.condition.forward(pt, m0)
        kinds = summary_kinds(layout)
        extra = {
            "tower_transform": TowerTransform.fit(store.tokens, sums=True),
            "summary_norm": SummaryNorm.fit(store.summary, kinds),
        }
        cond_table = {"pt": pt, "m0": m0, "y": np.asarray(jets["y"], np.float32)}
        return TrainData(store, val, store.summary, y, n_sel, usable, ccond, cond_table, extra)

    def n_features(self, data) -> int:
        return data.extra["tower_transform"].n_features

    def build_network(self, cfg, data):
        from e2econd.model.tower_transformer import TowerTransformer

        return TowerTransformer(cfg.model, self.n_features(data), len(data.extra["summary_norm"].kinds))

    def fit_stage1(self, cfg, d):
        from e2econd.model.summary import SummaryModel, name_gates

        mu, names = cfg.multiplicity, summary_names(TowerLayout.of(cfg.data.channels))
        model = SummaryModel(
            summary_kinds(TowerLayout.of(cfg.data.channels)),
            cfg.model.n_classes,
            mu.components,
            mu.hidden,
            name_gates(names),
        )
        # minibatches of 1024 jets: full-batch steps on 10^4 jets cost ~0.15 s each (docs/BENCHMARKS.md)
        model.fit(d.counts, d.ccond[:, 0], d.ccond[:, 1], d.y, mu.steps, mu.lr, cfg.train.seed, batch_size=1024)
        return model

    def stage1_from_dict(self, d: dict):
        from e2econd.model.summary import SummaryModel

        return SummaryModel.from_dict(d)

    def make_batch(self, data, store, idx, dq, device, cfg) -> Batch:
        """Jets ``idx`` of ``store`` -> device Batch: x0 = token states (T, F), summary in ``cond``."""
        p = store.batch(idx)
        tf, norm = data.extra["tower_transform"], data.extra["summary_norm"]
        order, rank = energy_order(p.cells, p.cu_seqlens.astype(np.int64))
        pos, cells = p.pos[order], p.cells[order]
        x0 = torch.from_numpy(tf.forward(pos, cells, None if dq is None else dq.numpy()))
        c = data.store.transforms.condition.forward(p.pt, p.m0)
        cond = {
            "pt": torch.as_tensor(c[:, 0], dtype=torch.float32),
            "m0": torch.as_tensor(c[:, 1], dtype=torch.float32),
            "y": torch.as_tensor(np.rint(p.y).astype(np.int64)),
            "summary": norm(p.summary),
        }
        cu = torch.as_tensor(p.cu_seqlens, dtype=torch.int32)
        channel = torch.from_numpy(rank)  # the token's energy rank in its jet (TowerTransformer)
        dev = {k: v.to(device) for k, v in cond.items()}
        balance = tf.layout.cell_channel() if cfg.objective.balance == "channel" else None
        w_feat = feature_weights(tf.layout.n_cells, len(tf.sum_channels) + int(tf.readout), balance)
        w = (token_weights(cells, p.cu_seqlens.astype(np.int64))[:, None] * w_feat[None, :]).to(device)
        return Batch(x0.to(device), channel.to(device), cu.to(device), dev, int(cu.numel() - 1), w)

    def val_sizes(self, data, _cfg) -> np.ndarray:
        """Tower tokens per val jet."""
        return data.val_store.tokens.counts

    def extra_state(self, data) -> dict:
        return {k: v.to_dict() for k, v in data.extra.items()}

    def load_extras(self, ck) -> dict:
        return {
            "tower_transform": TowerTransform.from_dict(ck["tower_transform"]),
            "summary_norm": SummaryNorm.from_dict(ck["summary_norm"]),
        }

    # ---------------------------------------------------------------------------------- sampling
    def draw_stage1(self, run, ct, yt, gen):
        s = run.multiplicity.sample(ct[:, 0], ct[:, 1], yt, generator=gen).cpu().numpy().astype(np.float64)
        s[:, 0] = np.clip(np.rint(s[:, 0]), 1, GRID * GRID)
        return s[:, 0].astype(np.int64), s

    def generate_batch(self, g, idx, summ_all, ct, yt, images, chunk_index, b):
        """Tokens of jets ``idx``: noise -> reverse diffusion -> cells and distinct towers -> images."""
        tf, norm = g.run.extras["tower_transform"], g.run.extras["summary_norm"]
        s = summ_all[idx]
        counts = torch.from_numpy(s[:, 0].astype(np.int64))
        cu = torch.zeros(idx.size + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(counts, 0)
        rank = ranks(cu.numpy())
        channel = torch.from_numpy(rank)
        x = g.integrate(channel, cu, ct[idx], yt[idx], {"summary": norm(s)}, tf.n_features, chunk_index, b)
        t0 = time.perf_counter()
        coords, score, values, sums, full = tf.split(x.float())
        offsets = cu.numpy().astype(np.int64)
        opts = g.opts
        tokens = decode_tokens(coords, score, values, offsets, s, tf, opts.rescale, opts.presence, sums, rank, full)
        tokens_to_images(tokens, out=images, rows=idx)  # in place: rows idx of the chunk's zeroed images
        g.timing.extra["decode_s"] = g.timing.extra.get("decode_s", 0.0) + time.perf_counter() - t0


def scale_positive(v: np.ndarray, want: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
    """Cells ``v`` (T, k) GeV with their positive cells scaled so that each row (or, with ``group`` (T,),
    each group of rows) sums to ``want`` GeV, negative cells unchanged: factor (want − N) / P for
    positive sum P and negative sum N. Rows (groups) with P = 0 or want ≤ 0 are left as they are."""
    pos = np.where(v > 0, v, 0.0).sum(1)
    neg = v.sum(1) - pos
    if group is not None:
        pos, neg = (np.bincount(group, x, minlength=len(want)) for x in (pos, neg))
    ok = (pos > 0) & (want > 0)
    f = np.where(ok, (want - neg) / np.where(ok, pos, 1.0), 1.0)
    return np.where(v > 0, v * (f if group is None else f[group])[:, None], v)


def decode_tokens(
    coords,
    score,
    values,
    offsets,
    summary,
    tf: TowerTransform,
    rescale=True,
    presence="count",
    sums=None,
    rank=None,
    full=None,
) -> TowerTokens:
    """Generated states -> tokens on distinct towers (see the module docstring), vectorised over jets.

    ``presence="count"``: per jet and channel the n_c cells with the highest presence scores are kept, n_c
    the summary's count (so the occupancy is stage 1's, the places the diffusion's); ``"sign"``: every cell
    with a positive presence bit. ``sums`` (T, len(tf.sum_channels)): the generated tower energies; each
    tower of such a channel is brought to it first (when both are > 0), then the jet's channel to the
    summary's sum (``rescale``), both by scaling only the positive cells (:func:`scale_positive`): the
    negative ECAL cells are noise, which neither scaling amplifies, so they stay above the fitted
    ``tf.floor`` and a cancelling sum cannot blow the cells up. ``rank`` (T,): the energy
    rank the network generated each token for; towers are assigned in rank order (else by decoded
    energy). ``full`` (T,) bool: tokens whose ECAL trigger tower is read out whole (all 25 crystals
    kept; the count presence fills the rest of n_ecal).
    With ``sums``, a tower holds tracks / ECAL cells only if its generated tower energy of that channel
    exceeds e0_c / 10 (a tenth of the channel's median cell energy).
    """
    layout = tf.layout
    names = summary_names(layout)
    n = len(offsets) - 1
    jet = np.repeat(np.arange(n), np.diff(offsets))
    cells = np.zeros_like(np.asarray(values, np.float64))
    for c in layout.channels:
        sl = layout.slots(c)
        whole = full if (c == "ecal" and full is not None) else np.zeros(len(score), bool)
        gate = np.ones(len(score), bool)  # towers that hold channel c at all: generated tower energy > e0_c / 10
        if sums is not None and c in tf.sum_channels:
            gate = sums[:, tf.sum_channels.index(c)] > 0.1 * tf.e0[layout.channels.index(c)]
        if presence == "count":
            k = summary[:, names.index(f"n_{c}")] - 25 * np.bincount(jet, whole, minlength=n)
            sc = np.where((whole | ~gate)[:, None], -np.inf, score[:, sl])  # whole towers are not counted twice
            on = (top_k_presence(sc, offsets, np.maximum(k, 0)) & np.isfinite(sc)) | whole[:, None]
        else:
            on = ((score[:, sl] > 0) & gate[:, None]) | whole[:, None]
        v = np.where(on, values[:, sl], 0.0)
        if c != "ecal":  # tracks and HCAL carry no negative values
            v[v < 0] = 0.0
        if sums is not None and c in tf.sum_channels:
            v = scale_positive(v, sums[:, tf.sum_channels.index(c)])
        if rescale:
            v = scale_positive(v, summary[:, names.index(f"e_{c}")], jet)
        cells[:, sl] = v
    keep = (cells != 0).any(1)  # a token with no present cell leaves its tower empty
    priority = -np.asarray(rank, np.float64) if rank is not None else np.abs(cells).sum(1)
    cells, coords, jet, priority = cells[keep], np.asarray(coords)[keep], jet[keep], priority[keep]
    new_off = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(jet, minlength=n), out=new_off[1:])
    pos = assign_towers(coords, new_off, priority)
    if "hcal" in layout.channels:
        flag = summary[:, names.index("hcal_central")] > 0.5
        pos = apply_centre_rule(pos, cells[:, layout.slots("hcal")][:, 0], new_off, flag)
    return TowerTokens(pos, cells, new_off, layout)
