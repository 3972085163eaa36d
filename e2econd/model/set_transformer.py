"""The denoiser: a permutation-equivariant set transformer over the hits of each jet.

Per-hit features (transformed Δη, Δφ, E) plus a learned embedding of the hit's detector channel
(tracks / ECAL / HCAL) become width-d tokens; L blocks of masked self-attention + MLP, each
modulated by adaptive LayerNorm (adaLN-Zero: shift, scale, gate) from one conditioning vector
per jet = time embedding (Fourier features of t) + kinematics embedding (pt, m0, y, with null
tokens for classifier-free guidance) + the jet's hit counts per channel (log(1 + n_c), known at
sampling time because the multiplicity is drawn first). The head predicts v = α ε − σ x0.

Tokens of all jets are packed into one (total, d) tensor and attention runs per jet through
``e2econd.ops.attention.packed_attention`` with ``cu_seqlens``, so hits of different jets never
mix and padding costs nothing (the thesis code's ``nn.MultiheadAttention(batch_first=...)``
mix-up attended across jets). No positional encoding: the output permutes with the input.
"""

from __future__ import annotations

import torch
from torch import nn

from e2econd.config import ModelConfig
from e2econd.model.embeddings import ConditionEmbedding, TimeEmbedding
from e2econd.ops.attention import packed_attention

N_CHANNELS = 3


def _modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Block(nn.Module):
    """adaLN-Zero transformer block over packed tokens (pre-norm attention + MLP)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, cond_width: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(round(mlp_ratio * width))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, c, bidx, cu_seqlens, max_seqlen, check: bool = True):
        mods = self.ada(c)[bidx]  # (total, 6d): per-jet modulation broadcast to its hits
        sh1, sc1, g1, sh2, sc2, g2 = mods.chunk(6, dim=-1)
        total, d = h.shape
        qkv = self.qkv(_modulate(self.norm1(h), sh1, sc1)).view(total, 3, self.heads, d // self.heads)
        # strided (total, H, Dh) views of the one projection (unit stride along Dh): the attention
        # kernels and varlen_attn take row strides, so no copies of q, k, v
        q, k, v = qkv.unbind(1)
        a = packed_attention(q, k, v, cu_seqlens, max_seqlen, check=check)
        h = h + g1 * self.drop(self.proj(a.reshape(total, d).to(h.dtype)))
        h = h + g2 * self.drop(self.mlp(_modulate(self.norm2(h), sh2, sc2)))
        return h


class PackedTrunk(nn.Module):
    """The blocks and output head shared by both families' denoisers over packed jets.

    A subclass builds its token and conditioning embeddings, then calls :meth:`_init_trunk` (so the
    parameters are created, and randomly initialised, in the same order as before the split), and runs
    :meth:`_run_trunk` on its width-d tokens.
    """

    def _init_trunk(self, cfg: ModelConfig, n_out: int) -> None:
        d, dc = cfg.width, cfg.cond_width
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio, dc, cfg.dropout) for _ in range(cfg.blocks))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(dc, 2 * d))
        self.out = nn.Linear(d, n_out)
        for lin in (self.ada_out[1], self.out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @staticmethod
    def _jet_index(x, cu_seqlens, max_seqlen):
        """(jet index of every packed row, max_seqlen) from ``cu_seqlens`` (B+1,)."""
        B = cu_seqlens.numel() - 1
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        if max_seqlen is None:
            max_seqlen = int(lengths.max()) if B else 0
        bidx = torch.repeat_interleave(torch.arange(B, device=x.device), lengths, output_size=x.shape[0])
        return bidx, max_seqlen

    def _run_trunk(self, h, c, bidx, cu_seqlens, max_seqlen, check):
        """Tokens h (total, d), per-jet conditioning c (B, cond_width) -> head output (total, n_out) float32."""
        cu = cu_seqlens.to(torch.int32)
        for i, blk in enumerate(self.blocks):
            h = blk(h, c, bidx, cu, max_seqlen, check=check and i == 0)
        sh, sc = self.ada_out(c)[bidx].chunk(2, dim=-1)
        return self.out(_modulate(self.norm_out(h), sh, sc)).float()


class SetTransformer(PackedTrunk):
    """v-prediction denoiser; see the module docstring. ``forward`` takes padded jets, ``forward_packed`` packed."""

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        self.cfg = cfg
        d, dc = cfg.width, cfg.cond_width
        self.inp = nn.Linear(3, d)
        self.channel_emb = nn.Embedding(N_CHANNELS, d)
        nn.init.normal_(self.channel_emb.weight, std=0.5)
        self.time = TimeEmbedding(dc, cfg.fourier_features)
        self.cond = ConditionEmbedding(dc, cfg.n_classes)
        self.counts = nn.Sequential(nn.Linear(N_CHANNELS, dc), nn.SiLU(), nn.Linear(dc, dc))
        self._init_trunk(cfg, 3)

    def conditioning(self, t, cond, drop_cond, counts):
        """Per-jet conditioning vector (B, cond_width): time + kinematics (or null tokens) + hit counts."""
        c = self.time(t) + self.cond(cond["pt"], cond["m0"], cond["y"], drop_cond)
        return c + self.counts(torch.log1p(counts.float()))

    def forward_packed(self, x, channel, cu_seqlens, t, cond, drop_cond=None, max_seqlen=None, check=True):
        """x (total, 3) packed hits of B jets (jet b = rows cu_seqlens[b]:cu_seqlens[b+1]) -> v (total, 3).

        With ``max_seqlen`` given and ``check=False`` (cu_seqlens validated by the caller) the call
        reads no tensor value on the host: no device sync, static shapes (CUDA-graph capturable).
        ``check=True`` validates cu_seqlens / max_seqlen once (first block) in eager mode.
        """
        bidx, max_seqlen = self._jet_index(x, cu_seqlens, max_seqlen)
        channel = channel.long()
        counts = torch.zeros(cu_seqlens.numel() - 1, N_CHANNELS, device=x.device)
        counts.index_put_((bidx, channel), torch.ones_like(bidx, dtype=counts.dtype), accumulate=True)
        c = self.conditioning(t, cond, drop_cond, counts)
        h = self.inp(x.float()) + self.channel_emb(channel)
        return self._run_trunk(h, c, bidx, cu_seqlens, max_seqlen, check)

    def forward(self, x, channel, lengths, t, cond, drop_cond=None):
        """x (B, N, 3) padded (jet b = first lengths[b] rows), channel (B, N), lengths (B,), t (B,) -> v (B, N, 3).

        Padding rows give 0 and never influence other rows.
        """
        B, N, _ = x.shape
        lengths = lengths.to(device=x.device, dtype=torch.long)
        valid = torch.arange(N, device=x.device)[None, :] < lengths[:, None]
        bidx, pos = valid.nonzero(as_tuple=True)  # row-major: jets stay contiguous and in order
        cu = torch.zeros(B + 1, dtype=torch.int32, device=x.device)
        cu[1:] = torch.cumsum(lengths, 0).to(torch.int32)
        max_len = int(lengths.max()) if B else 0
        v = self.forward_packed(x[bidx, pos], channel[bidx, pos], cu, t, cond, drop_cond, max_seqlen=max_len)
        out = torch.zeros(B, N, 3, dtype=v.dtype, device=x.device)
        out[bidx, pos] = v
        return out
