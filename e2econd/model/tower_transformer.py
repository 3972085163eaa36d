"""The tower family's denoiser: a set transformer over the occupied towers of each jet.

A token is one tower's diffusion state (:class:`e2econd.data.towers.TowerTransform`: tower
coordinates, a presence bit and a value per cell); a linear map makes it a width-d token. The
blocks are the hit family's (:class:`e2econd.model.set_transformer.Block`: adaLN-Zero, masked
packed attention through ``e2econd.ops.attention.packed_attention``, so towers of different jets
never mix). The conditioning vector per jet = time embedding + kinematics embedding (pt, m0, y with
null tokens for classifier-free guidance) + an MLP of the jet summary drawn by stage 1 (standardised
tower count, cell counts and energy sums per channel, centring flag), which is never dropped.
The head predicts v = α ε − σ x0 for every feature.

Tokens are ordered by energy within a jet and each carries a learned embedding of its energy rank
(passed in the ``channel`` slot of the shared call convention; ranks ≥ ``RANKS`` − 1 share the last
embedding, added at the input). The rank tells the network from the first step which token is the
jet's hottest tower,
so where that tower sits (the core, the producer's crop) and how much it holds are learned as narrow
conditional distributions rather than recovered from noise by attention; the set of tokens of a jet
still attends only to itself.
"""

from __future__ import annotations

from torch import nn

from e2econd.config import ModelConfig
from e2econd.model.embeddings import ConditionEmbedding, TimeEmbedding
from e2econd.model.set_transformer import PackedTrunk

RANKS = 128  # energy ranks with their own embedding (a top jet has ~110 occupied towers)


class TowerTransformer(PackedTrunk):
    """v-prediction denoiser over packed tower tokens; same call convention as ``SetTransformer.forward_packed``."""

    def __init__(self, cfg: ModelConfig, n_features: int, n_summary: int):
        super().__init__()
        self.cfg, self.n_features, self.n_summary = cfg, int(n_features), int(n_summary)
        d, dc = cfg.width, cfg.cond_width
        self.inp = nn.Sequential(nn.Linear(n_features, d), nn.SiLU(), nn.Linear(d, d))
        self.rank = nn.Embedding(RANKS, d)
        nn.init.normal_(self.rank.weight, std=0.5)
        self.time = TimeEmbedding(dc, cfg.fourier_features)
        self.cond = ConditionEmbedding(dc, cfg.n_classes)
        self.summary = nn.Sequential(nn.Linear(n_summary, dc), nn.SiLU(), nn.Linear(dc, dc))
        self._init_trunk(cfg, n_features)

    def conditioning(self, t, cond, drop_cond):
        """(B, cond_width): time + kinematics (or null tokens) + stage-1 summary (``cond["summary"]``)."""
        c = self.time(t) + self.cond(cond["pt"], cond["m0"], cond["y"], drop_cond)
        return c + self.summary(cond["summary"].float())

    def forward_packed(self, x, channel, cu_seqlens, t, cond, drop_cond=None, max_seqlen=None, check=True):
        """x (total, F) packed tokens of B jets, ``channel`` (total,) their energy ranks -> v (total, F).

        ``max_seqlen`` given with ``check=False``: no host reads (CUDA-graph capturable), as for hits.
        """
        bidx, max_seqlen = self._jet_index(x, cu_seqlens, max_seqlen)
        c = self.conditioning(t, cond, drop_cond)
        h = self.inp(x.float()) + self.rank(channel.long().clamp(0, RANKS - 1))
        return self._run_trunk(h, c, bidx, cu_seqlens, max_seqlen, check)
