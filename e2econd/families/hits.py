"""The hit family (``--model hits``): a jet is the set of its hits, one token per crystal / tower hit
with features (Δη, Δφ, E); hit counts per channel come from the multiplicity model, and generated
hits are snapped back onto the crystal / tower grid (:mod:`e2econd.data.snap`)."""

from __future__ import annotations

import time

import numpy as np
import torch

from e2econd.batching import channel_counts, load_train_data, make_batch
from e2econd.data.geometry import CHANNELS
from e2econd.model.multiplicity import MultiplicityModel
from e2econd.model.set_transformer import SetTransformer
from e2econd.objective import channel_balance

MAX_HITS_PER_JET = 4000  # safety cap on sampled multiplicities (real three-channel top jets: < 2,000)


class HitFamily:
    """See :mod:`e2econd.families` for the interface."""

    name = "hits"
    extra_keys: tuple[str, ...] = ()  # checkpoint keys of extra_state

    def load_data(self, data_dir, cfg, world):
        return load_train_data(data_dir, cfg, world)

    def n_features(self, _data=None) -> int:
        return 3

    def build_network(self, cfg, _data=None) -> SetTransformer:
        return SetTransformer(cfg.model)

    def fit_stage1(self, cfg, d) -> MultiplicityModel:
        mult = MultiplicityModel(
            cfg.channel_ids, cfg.model.n_classes, cfg.multiplicity.components, cfg.multiplicity.hidden
        )
        mu = cfg.multiplicity
        mult.fit(d.counts, d.ccond[:, 0], d.ccond[:, 1], d.y, steps=mu.steps, lr=mu.lr, seed=cfg.train.seed)
        return mult

    def stage1_from_dict(self, d: dict) -> MultiplicityModel:
        return MultiplicityModel.from_dict(d)

    def make_batch(self, data, store, idx, dq, device, cfg):
        """Jets ``idx`` of ``store`` (data.store or data.val_store) -> device Batch (dequantised if ``dq``;
        weighted per channel if ``objective.balance = "channel"``)."""
        b = make_batch(store.batch(idx, cfg.data.channels), data.store.transforms, device, dq)
        if cfg.objective.balance == "channel":
            b.weight = channel_balance(b.channel, b.cu_seqlens)
        return b

    def val_sizes(self, data, cfg) -> np.ndarray:
        """Hits per val jet in the trained channels."""
        return channel_counts(data.val_store.jets)[:, cfg.channel_ids].sum(1)

    def extra_state(self, _data) -> dict:
        return {}

    def load_extras(self, _ck) -> dict:
        return {}

    # ---------------------------------------------------------------------------------- sampling
    def draw_stage1(self, run, ct, yt, gen):
        counts = run.multiplicity.sample(ct[:, 0], ct[:, 1], yt, generator=gen).cpu()
        counts = counts.clamp_max(MAX_HITS_PER_JET)
        return counts.sum(1).numpy(), counts

    def generate_batch(self, g, idx, counts_all, ct, yt, images, chunk_index, b):
        """Hits of jets ``idx``: noise -> reverse diffusion -> inverse transform -> snapped images."""
        from e2econd.data.hits import batch_hits_to_images
        from e2econd.data.snap import snap_batch

        run, dev = g.run, g.device
        counts = counts_all[idx]
        B = idx.size
        lengths = counts.sum(1)
        cu = torch.zeros(B + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(lengths, 0)
        # channel of every hit: jet-major, then tracks, ecal, hcal
        channel = torch.repeat_interleave(torch.arange(3).repeat(B), counts.reshape(-1))
        x = g.integrate(channel, cu, ct[idx], yt[idx], None, 3, chunk_index, b)
        t0 = time.perf_counter()
        feats = run.transforms.inverse(x.float(), channel.to(dev)).cpu().numpy().astype(np.float64)
        ch = channel.numpy()
        hits = []
        for c in range(3):
            sel = ch == c
            offsets = np.zeros(B + 1, np.int64)
            offsets[1:] = np.cumsum(counts[:, c].numpy())
            f = feats[sel]
            e = f[:, 2]
            if c != CHANNELS.index("ecal"):  # tracks and HCAL carry no negative values
                e = np.where(e > 0, e, np.nan)  # NaN energies are dropped by snap_batch
            hits.append(snap_batch(c, f[:, 0], f[:, 1], e, offsets, collisions=g.opts.collisions))
        images[idx] = batch_hits_to_images(hits)
        g.timing.extra["decode_s"] = g.timing.extra.get("decode_s", 0.0) + time.perf_counter() - t0
