"""Conditional jet-summary model of the tower family (issue 16, stage 1): p(s | pt, m0, y).

The summary s (B, S) holds, per jet, integer counts (occupied towers, non-zero cells per channel),
energy sums (GeV, may be zero or negative for ECAL) and 0/1 flags (e.g. "hottest HCAL tower is the
central one"). Each column is mapped to a real z and standardised (buffers fitted on the train split):

- "count":  z = log(1 + n + u), u ~ U[0, 1) dequantisation, so floor(exp(z) - 1) recovers n;
- "energy": z = asinh(e / e_scale), e_scale = median |e| of the column's non-zero train values (GeV):
  linear (sign-safe) for |e| << e_scale, logarithmic for |e| >> e_scale, so zero and negative ECAL sums
  are smooth and the pt-proportional tail of large sums is compressed like a log-normal;
- "flag":   z = the 0/1 value itself (Bernoulli).

The density is autoregressive, p(s | c) = prod_d p(s_d | s_<d, c), so the summary is joint (the
tracks/calorimeter ratio, multiplicity vs energy). Each dimension d has its own 2-hidden-layer MLP over
(pt, m0, y-embedding, standardised z_<d); the S MLPs are evaluated as batched matmuls with a
strictly-lower-triangular input mask (MADE-style). Counts and energies get a K-component 1-D Gaussian
mixture, flags a logistic. Order: flags first, then counts, then energies (stable within a kind): the
discrete, jet-level facts (central tower, multiplicities) are decided before the continuous sums, so
the sums are modelled given the multiplicities they scale with, and an energy gated by a count (exactly
0 GeV when its count is 0, see ``gates``) always comes after its gate.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from e2econd.errors import E2EInputError

KINDS = ("count", "energy", "flag")
_KIND_RANK = {"flag": 0, "count": 1, "energy": 2}
Y_DIM = 8


def name_gates(names: list[str]) -> dict[int, int]:
    """Gates from summary column names: each ``e_<c>`` is exactly 0 GeV when ``n_<c>`` is 0 (towers spec)."""
    idx = {n: i for i, n in enumerate(names)}
    return {i: idx["n_" + n[2:]] for i, n in enumerate(names) if n.startswith("e_") and "n_" + n[2:] in idx}


def _t64(a, dev) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), device=dev)


class SummaryModel(nn.Module):
    """Autoregressive p(s | pt, m0, y) over S summary columns of the given ``kinds``.

    ``gates[d] = g`` (optional, a count column g) declares that energy column d is exactly 0 GeV when
    count column g is 0 (e.g. e_ecal and n_ecal); such rows are deterministic and left out of d's
    likelihood, and sampling writes 0 there.
    """

    def __init__(
        self,
        kinds: list[str],
        n_classes: int = 2,
        components: int = 8,
        hidden: int = 64,
        gates: dict[int, int] | None = None,
    ):
        super().__init__()
        self.kinds = [str(k) for k in kinds]
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise E2EInputError(f"summary kinds must be a non-empty list of {KINDS}, got {self.kinds}")
        self.n_classes, self.components, self.hidden = int(n_classes), int(components), int(hidden)
        self.gates = {int(d): int(g) for d, g in (gates or {}).items()}
        for d, g in self.gates.items():
            if not (0 <= d < len(self.kinds) and 0 <= g < len(self.kinds)):
                raise E2EInputError(f"summary gate {d}->{g} outside the {len(self.kinds)} columns")
            if self.kinds[d] != "energy" or self.kinds[g] != "count":
                raise E2EInputError(f"summary gate {d}->{g} must map an energy column to a count column")
        S, K, H = len(self.kinds), self.components, hidden
        self.order = sorted(range(S), key=lambda d: (_KIND_RANK[self.kinds[d]], d))  # column at position p
        d_in = 2 + Y_DIM + S
        self.y_emb = nn.Embedding(self.n_classes, Y_DIM)
        self.w1 = nn.Parameter(torch.zeros(S, d_in, H))
        self.b1 = nn.Parameter(torch.zeros(S, H))
        self.w2 = nn.Parameter(torch.zeros(S, H, H))
        self.b2 = nn.Parameter(torch.zeros(S, H))
        self.w3 = nn.Parameter(torch.zeros(S, H, 3 * K))
        self.b3 = nn.Parameter(torch.zeros(S, 3 * K))
        mask = torch.ones(S, d_in)
        mask[:, 2 + Y_DIM :] = torch.tril(torch.ones(S, S), diagonal=-1)  # position p sees positions < p
        self.register_buffer("mask", mask)
        self.register_buffer("z_mean", torch.zeros(S, dtype=torch.float64))  # per column, not per position
        self.register_buffer("z_std", torch.ones(S, dtype=torch.float64))
        self.register_buffer("z_lo", torch.full((S,), -1e3, dtype=torch.float64))  # sampling clamp, raw z
        self.register_buffer("z_hi", torch.full((S,), 1e3, dtype=torch.float64))
        self.register_buffer("e_scale", torch.ones(S, dtype=torch.float64))  # GeV, energy columns
        self.register_buffer("n_max", torch.full((S,), 10**6, dtype=torch.float64))  # count clamp
        self.train_nll = float("nan")
        self._reset(torch.Generator().manual_seed(0))

    def _reset(self, gen: torch.Generator) -> None:
        """Deterministic initialisation from ``gen`` (uniform +-1/sqrt(fan_in), like nn.Linear)."""
        with torch.no_grad():
            for w, b in ((self.w1, self.b1), (self.w2, self.b2), (self.w3, self.b3)):
                bound = 1.0 / math.sqrt(w.shape[1])
                w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1) * bound)
                b.copy_((torch.rand(b.shape, generator=gen) * 2 - 1) * bound)
            self.y_emb.weight.copy_(torch.randn(self.y_emb.weight.shape, generator=gen))

    # ---- transforms -------------------------------------------------------------------------------
    def _check(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != len(self.kinds):
            raise E2EInputError(f"summary values must have shape (N, {len(self.kinds)}), got {v.shape}")
        for d, kind in enumerate(self.kinds):
            col = v[:, d]
            if not np.all(np.isfinite(col)):
                raise E2EInputError("non-finite summary value", key=f"column {d} ({kind})")
            if kind == "count" and (np.any(col < 0) or np.any(col != np.floor(col))):
                raise E2EInputError("counts must be non-negative integers", key=f"column {d}")
            if kind == "flag" and np.any((col != 0) & (col != 1)):
                raise E2EInputError("flags must be 0 or 1", key=f"column {d}")
        for d, g in self.gates.items():
            bad = np.flatnonzero((v[:, g] == 0) & (v[:, d] != 0))
            if bad.size:
                raise E2EInputError(
                    f"energy is non-zero where its gate count (column {g}) is 0", key=f"column {d}", row=int(bad[0])
                )
        return v

    def _raw_z(self, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Unstandardised z (B, S) float64 of values v (B, S) with dequantisation noise u (B, S) in [0, 1)."""
        z = v.clone()
        for d, kind in enumerate(self.kinds):
            if kind == "count":
                z[:, d] = torch.log1p(v[:, d] + u[:, d])
            elif kind == "energy":
                z[:, d] = torch.asinh(v[:, d] / self.e_scale[d])
        return z

    def _gated(self, v: torch.Tensor) -> torch.Tensor:
        """Bool (B, S): entries fixed to 0 GeV by their gate count being 0."""
        g = torch.zeros(v.shape, dtype=torch.bool, device=v.device)
        for d, c in self.gates.items():
            g[:, d] = v[:, c] == 0
        return g

    @torch.no_grad()
    def _fit_transforms(self, v: torch.Tensor) -> None:
        gated = self._gated(v)
        for d, kind in enumerate(self.kinds):
            col = v[~gated[:, d], d]
            if kind == "energy":
                nz = col[col != 0].abs()
                self.e_scale[d] = float(nz.median()) if nz.numel() else 1.0
                z = torch.asinh(col / self.e_scale[d])
            elif kind == "count":
                z = torch.log1p(col + 0.5)
                self.n_max[d] = math.floor(1.5 * float(v[:, d].max())) if v.shape[0] else 10**6
            else:
                z = col
            if z.numel() > 1:
                self.z_mean[d], self.z_std[d] = z.mean(), z.std().clamp_min(0.05)
                span = float(z.max() - z.min())
                self.z_lo[d], self.z_hi[d] = float(z.min()) - 0.25 * span - 0.5, float(z.max()) + 0.25 * span + 0.5
        for d, kind in enumerate(self.kinds):
            if kind == "count":
                self.z_lo[d], self.z_hi[d] = 0.0, math.log1p(float(self.n_max[d]) + 1.0 - 1e-6)

    # ---- network ----------------------------------------------------------------------------------
    def _cond(self, pt, m0, y) -> torch.Tensor:
        dev = self.w1.device
        y = torch.as_tensor(y, device=dev).long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise E2EInputError(f"labels y must be in [0, {self.n_classes - 1}], got {int(y.min())}..{int(y.max())}")
        pt = torch.as_tensor(pt, device=dev).float()[:, None]
        m0 = torch.as_tensor(m0, device=dev).float()[:, None]
        return torch.cat([pt, m0, self.y_emb(y)], dim=-1)

    def _net(self, x: torch.Tensor, p: slice) -> torch.Tensor:
        """Outputs (B, P, 3K) of the MLPs at order positions ``p`` for inputs x (B, 2 + Y_DIM + S)."""
        w1 = self.w1[p] * self.mask[p, :, None]  # (P, D, H); batched matmuls in (P, B, .) layout
        h = torch.nn.functional.silu(torch.baddbmm(self.b1[p, None], x.expand(w1.shape[0], *x.shape), w1))
        h = torch.nn.functional.silu(torch.baddbmm(self.b2[p, None], h, self.w2[p]))
        return torch.baddbmm(self.b3[p, None], h, self.w3[p]).transpose(0, 1)

    def _mixture(self, out: torch.Tensor):
        K = self.components
        return out[..., :K].log_softmax(-1), out[..., K : 2 * K], out[..., 2 * K :].clamp(-7.0, 3.0)

    def _log_prob_std(self, zs: torch.Tensor, v: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Per-column log densities (B, S) in standardised z space (flags: Bernoulli log-probabilities)."""
        order = torch.tensor(self.order, device=zs.device)
        x = torch.cat([cond, zs[:, order].float()], dim=-1)
        out = self._net(x, slice(None))  # (B, S, 3K) by position
        logits, mu, log_sd = self._mixture(out)
        zp = zs[:, order].float()[:, :, None]
        comp = -0.5 * ((zp - mu) / log_sd.exp()) ** 2 - log_sd - 0.5 * math.log(2 * math.pi)
        lp_cont = torch.logsumexp(logits + comp, dim=-1)
        vp = v[:, order].float()
        lp_flag = -torch.nn.functional.binary_cross_entropy_with_logits(out[..., 0], vp, reduction="none")
        is_flag = torch.tensor([self.kinds[d] == "flag" for d in self.order], device=zs.device)
        lp = torch.where(is_flag, lp_flag, lp_cont)
        lp = lp.masked_fill(self._gated(v)[:, order], 0.0)
        res = torch.empty_like(lp)
        res[:, order] = lp
        return res

    def _standardise(self, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        zs = (z - self.z_mean) / self.z_std
        return torch.where(self._gated(v), -self.z_mean / self.z_std, zs)  # gated: the z of 0 GeV

    # ---- public API -------------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, values, pt, m0, y, units: bool = False) -> torch.Tensor:
        """Log density per jet (B,) float64 (no gradient), counts dequantised at the midpoint u = 0.5.

        Default (``units=False``): density of the standardised z vector (what ``fit`` minimises), no
        Jacobian, flags as Bernoulli log-probabilities, gated entries contribute 0; comparable only
        between models with the same fitted transforms. ``units=True`` adds the log-Jacobian of the
        transforms: a density per GeV for energies and per unit of dequantised count (≈ the log-pmf) for
        counts, comparable between any two models.
        """
        dev = self.w1.device
        v = _t64(self._check(values), dev)
        z = self._raw_z(v, torch.full_like(v, 0.5))
        lp = self._log_prob_std(self._standardise(z, v), v, self._cond(pt, m0, y)).double()
        if units:
            lp = lp - self._log_jacobian(v).masked_fill(self._gated(v), 0.0)
        return lp.sum(-1)

    def _log_jacobian(self, v: torch.Tensor) -> torch.Tensor:
        """log |d(value)/d(standardised z)| per entry (B, S); 0 for flags."""
        lj = torch.zeros_like(v)
        for d, kind in enumerate(self.kinds):
            if kind == "count":
                lj[:, d] = torch.log1p(v[:, d] + 0.5) + torch.log(self.z_std[d])
            elif kind == "energy":
                s = self.e_scale[d]
                lj[:, d] = torch.log(s) + 0.5 * torch.log1p((v[:, d] / s) ** 2) + torch.log(self.z_std[d])
        return lj

    def fit(self, values, pt, m0, y, steps=1500, lr=3e-3, seed=0, batch_size=None, progress=None) -> SummaryModel:
        """Fit transforms and network (Adam, cosine schedule) on train summaries (N, S); returns self.

        Re-initialises the network from ``seed``, so equal seeds give identical models on CPU. Full batch
        unless ``batch_size`` is given. ``self.train_nll`` holds the last step's loss (nats per jet; NaN for
        ``steps=0``, which fits the transforms only). Cost on the 2-core box (N = 10^4, S = 8, defaults):
        ~0.15 s per full-batch step, ~12 ms per step with ``batch_size=1024`` (docs/BENCHMARKS.md).
        """
        dev = self.w1.device
        v = _t64(self._check(values), dev)
        cond_args = (_t64(pt, dev), _t64(m0, dev), torch.as_tensor(np.asarray(y), device=dev).long())
        self._cond(*cond_args)  # validates y
        if v.shape[0] == 0:
            raise E2EInputError("cannot fit the summary model on 0 jets")
        gen = torch.Generator().manual_seed(int(seed))
        self._reset(gen)
        self._fit_transforms(v)
        threads = torch.get_num_threads()
        if dev.type == "cpu":
            torch.set_num_threads(1)  # tiny batched matmuls: extra threads only add synchronisation
        try:
            self._fit_loop(v, cond_args, steps, lr, gen, batch_size, progress)
        finally:
            torch.set_num_threads(threads)
        return self.eval()

    def _fit_loop(self, v, cond_args, steps, lr, gen, batch_size, progress) -> None:
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr * 0.05)
        N, dev = v.shape[0], v.device
        self.train()
        for _ in range(int(steps)):
            idx = None if not batch_size or batch_size >= N else torch.randint(0, N, (int(batch_size),), generator=gen)
            vb = v if idx is None else v[idx.to(dev)]
            cb = [a if idx is None else a[idx.to(dev)] for a in cond_args]
            u = torch.rand(vb.shape, generator=gen, dtype=torch.float64).to(dev)
            zs = self._standardise(self._raw_z(vb, u), vb)
            loss = -self._log_prob_std(zs, vb, self._cond(*cb)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            self.train_nll = float(loss.detach())
            if progress is not None:
                progress()

    @torch.no_grad()
    def sample(self, pt, m0, y, generator: torch.Generator | None = None) -> torch.Tensor:
        """Summaries (B, S) float64 in original units for transformed pt, m0 (B,) and labels y (B,).

        Counts are non-negative integers (at most 1.5 x the train maximum), flags 0/1, energies GeV
        (0 where gated). Vectorised over jets; the only loop is over the S dimensions.
        """
        dev = self.w1.device
        cond = self._cond(pt, m0, y)
        B, S = cond.shape[0], len(self.kinds)
        gdev = generator.device if generator is not None else torch.device("cpu")
        v = torch.zeros(B, S, dtype=torch.float64, device=dev)
        zin = torch.zeros(B, S, device=dev)  # standardised z by order position
        for p, d in enumerate(self.order):
            out = self._net(torch.cat([cond, zin], dim=-1), slice(p, p + 1))[:, 0]
            if self.kinds[d] == "flag":
                r = torch.rand(B, generator=generator, device=gdev).to(dev)
                v[:, d] = (r < torch.sigmoid(out[:, 0])).double()
                z = v[:, d]
            else:
                logits, mu, log_sd = self._mixture(out)
                k = torch.multinomial(logits.exp().to(gdev), 1, generator=generator).to(dev)[:, 0]
                eps = torch.randn(B, generator=generator, device=gdev).to(dev)
                ar = torch.arange(B, device=dev)
                zst = (mu[ar, k] + log_sd[ar, k].exp() * eps).double()
                z = (zst * self.z_std[d] + self.z_mean[d]).clamp(self.z_lo[d], self.z_hi[d])
                if self.kinds[d] == "count":
                    v[:, d] = torch.floor(torch.expm1(z)).clamp_min(0.0).minimum(self.n_max[d])
                else:
                    v[:, d] = self.e_scale[d] * torch.sinh(z)
                    if d in self.gates:
                        off = v[:, self.gates[d]] == 0
                        v[:, d] = v[:, d].masked_fill(off, 0.0)
                        z = z.masked_fill(off, 0.0)
            zin[:, p] = ((z - self.z_mean[d]) / self.z_std[d]).float()
        return v

    def to_dict(self) -> dict:
        """JSON-able config and state (tensors as nested lists)."""
        return {
            "kinds": self.kinds,
            "n_classes": self.n_classes,
            "components": self.components,
            "hidden": self.hidden,
            "gates": {str(d): g for d, g in self.gates.items()},
            "train_nll": self.train_nll,
            "state": {k: v.detach().cpu().tolist() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> SummaryModel:
        gates = {int(k): int(g) for k, g in (d.get("gates") or {}).items()}
        m = cls(d["kinds"], d["n_classes"], d["components"], d["hidden"], gates=gates)
        ref = m.state_dict()
        missing = set(ref) - set(d["state"])
        if missing:
            raise E2EInputError(f"summary model state lacks {sorted(missing)}", key="state")
        state = {k: torch.tensor(d["state"][k], dtype=ref[k].dtype).reshape(ref[k].shape) for k in ref}
        m.load_state_dict(state)
        m.train_nll = float(d.get("train_nll", float("nan")))
        return m.eval()
