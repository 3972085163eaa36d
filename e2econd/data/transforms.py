"""Invertible preprocessing transforms, fitted on the train split's real hits only.

Hit features ``[Δη, Δφ, E]`` per channel c:

* Δη, Δφ: affine standardisation ``(x - mean_c) / std_c``.
* E: ``u = asinh(E / e0_c)`` then standardised. ``e0_c`` is the median |E| of the channel's hits
  (GeV): asinh is linear for |E| << e0 (so the small negative ECAL noise values stay well
  behaved, unlike a log or a logit of min-max scaled values, which needs clipping and is not
  defined at the bounds) and logarithmic for E >> e0 (tames the multi-decade energy range). It
  is exactly invertible: ``E = e0_c * sinh(u)``.

Jet conditions ``(pt, m0)`` (GeV): ``log(pt)``, ``log(m0 + 1 GeV)`` (the offset keeps massless
one-particle jets finite), then standardised.

Statistics are accumulated in a streaming, mergeable way (count/mean/M2 per feature and a
fine log-spaced histogram of |E| for the median), so fitting never holds all hits in memory and
does not depend on how the data were chunked across workers. Padding never enters: only the
real hits passed in are counted.

Both transforms work on numpy arrays (computed in float64, returned in the input dtype) and on
torch tensors (computed in the tensor's dtype on its device); the torch version takes a channel
index tensor so one call transforms a mixed-channel set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from e2econd.data.geometry import CHANNELS, E_MAX, energy_from_asinh

FORMAT_VERSION = 1
M0_OFFSET = 1.0  # GeV, added to m0 before the log
_HIST_LO, _HIST_HI, _HIST_BINS = -8.0, 6.0, 14000  # log10 |E| / GeV, 0.001 dex bins


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


class _Moments:
    """Streaming count / mean / M2 (Chan et al. parallel merge), float64, per column."""

    def __init__(self, k: int):
        self.n = 0
        self.mean = np.zeros(k)
        self.m2 = np.zeros(k)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        nb = x.shape[0]
        if nb == 0:  # an empty chunk (e.g. no train jets in it) adds nothing
            return
        x = x.reshape(nb, -1)
        mb = x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        self._merge(nb, mb, m2b)

    def _merge(self, nb, mb, m2b) -> None:
        na = self.n
        n = na + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta**2 * (na * nb / n)
        self.n = n

    def merge(self, other: _Moments) -> None:
        if other.n:
            self._merge(other.n, other.mean, other.m2)

    def std(self) -> np.ndarray:
        if self.n < 2:
            return np.ones_like(self.mean)
        s = np.sqrt(self.m2 / self.n)
        return np.where(s > 0, s, 1.0)


# --------------------------------------------------------------------------------------------
# feature transform


@dataclass
class FeatureTransform:
    """Per-channel transform of hit features ``[Δη, Δφ, E]`` (see module docstring).

    ``shift``, ``scale``: (3 channels, 3 features) applied after asinh; ``e0``: (3,) GeV.
    """

    shift: np.ndarray
    scale: np.ndarray
    e0: np.ndarray
    _torch_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.shift = np.asarray(self.shift, np.float64).reshape(len(CHANNELS), 3)
        self.scale = np.asarray(self.scale, np.float64).reshape(len(CHANNELS), 3)
        self.e0 = np.asarray(self.e0, np.float64).reshape(len(CHANNELS))
        if not (np.all(self.scale > 0) and np.all(self.e0 > 0)):
            raise ValueError("FeatureTransform: scales and e0 must be > 0")

    @classmethod
    def identity(cls) -> FeatureTransform:
        return cls(np.zeros((3, 3)), np.ones((3, 3)), np.ones(3))

    def _params_torch(self, ref):
        import torch

        key = (ref.device, ref.dtype)
        if key not in self._torch_cache:
            self._torch_cache[key] = tuple(
                torch.as_tensor(a, dtype=ref.dtype, device=ref.device) for a in (self.shift, self.scale, self.e0)
            )
        return self._torch_cache[key]

    def forward(self, feats, channel):
        """Raw ``feats`` (..., 3) [Δη, Δφ, E GeV] of channel(s) ``channel`` (int or int array/tensor
        broadcastable to ``feats[..., 0]``) -> standardised features, same type/dtype."""
        if _is_torch(feats):
            import torch

            shift, scale, e0 = self._params_torch(feats)
            ch = torch.as_tensor(channel, device=feats.device, dtype=torch.long)
            u = torch.cat([feats[..., :2], torch.asinh(feats[..., 2:3] / e0[ch].unsqueeze(-1))], dim=-1)
            return (u - shift[ch]) / scale[ch]
        x = np.asarray(feats)
        ch = np.asarray(channel, np.int64)
        u = x.astype(np.float64, copy=True)
        u[..., 2] = np.arcsinh(u[..., 2] / self.e0[ch])
        z = (u - self.shift[ch]) / self.scale[ch]
        return z.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64, copy=False)

    def inverse(self, z, channel):
        """Standardised features -> raw ``[Δη, Δφ, E GeV]`` (exact inverse of :meth:`forward` for
        |E| <= ``geometry.E_MAX``; a generated energy beyond the collision energy is clipped to it)."""
        if _is_torch(z):
            import torch

            shift, scale, e0 = self._params_torch(z)
            ch = torch.as_tensor(channel, device=z.device, dtype=torch.long)
            u = z * scale[ch] + shift[ch]
            lim = torch.asinh(E_MAX / e0[ch]).unsqueeze(-1)  # as geometry.energy_from_asinh, in torch
            e = torch.sinh(torch.clamp(u[..., 2:3], -lim, lim)) * e0[ch].unsqueeze(-1)
            return torch.cat([u[..., :2], e], dim=-1)
        z = np.asarray(z)
        ch = np.asarray(channel, np.int64)
        u = z.astype(np.float64) * self.scale[ch] + self.shift[ch]
        u[..., 2] = energy_from_asinh(u[..., 2], self.e0[ch])
        return u.astype(z.dtype if np.issubdtype(z.dtype, np.floating) else np.float64, copy=False)

    def to_dict(self) -> dict:
        return {
            "kind": "asinh-standardise",
            "channels": list(CHANNELS),
            "features": ["deta", "dphi", "e"],
            "shift": self.shift.tolist(),
            "scale": self.scale.tolist(),
            "e0": self.e0.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureTransform:
        return cls(np.array(d["shift"]), np.array(d["scale"]), np.array(d["e0"]))


@dataclass
class ConditionTransform:
    """Jet conditions ``(pt, m0)`` GeV -> ``[(log pt - a0)/b0, (log(m0 + m0_offset) - a1)/b1]``."""

    shift: np.ndarray
    scale: np.ndarray
    m0_offset: float = M0_OFFSET

    def __post_init__(self):
        self.shift = np.asarray(self.shift, np.float64).reshape(2)
        self.scale = np.asarray(self.scale, np.float64).reshape(2)
        if not np.all(self.scale > 0):
            raise ValueError("ConditionTransform: scales must be > 0")

    @classmethod
    def identity(cls) -> ConditionTransform:
        return cls(np.zeros(2), np.ones(2))

    def forward(self, pt, m0):
        """pt, m0 (n,) GeV -> standardised conditions (n, 2)."""
        if _is_torch(pt):
            import torch

            m0 = torch.as_tensor(m0, dtype=pt.dtype, device=pt.device)
            shift = torch.as_tensor(self.shift, dtype=pt.dtype, device=pt.device)
            scale = torch.as_tensor(self.scale, dtype=pt.dtype, device=pt.device)
            u = torch.stack([torch.log(pt), torch.log(m0 + self.m0_offset)], dim=-1)
            return (u - shift) / scale
        pt = np.asarray(pt)
        dt = pt.dtype if np.issubdtype(pt.dtype, np.floating) else np.float64
        u = np.stack([np.log(pt.astype(np.float64)), np.log(np.asarray(m0, np.float64) + self.m0_offset)], -1)
        return ((u - self.shift) / self.scale).astype(dt, copy=False)

    def inverse(self, z):
        """Standardised conditions (n, 2) -> (pt, m0) GeV."""
        if _is_torch(z):
            import torch

            shift = torch.as_tensor(self.shift, dtype=z.dtype, device=z.device)
            scale = torch.as_tensor(self.scale, dtype=z.dtype, device=z.device)
            u = z * scale + shift
            return torch.exp(u[..., 0]), torch.exp(u[..., 1]) - self.m0_offset
        z = np.asarray(z)
        dt = z.dtype if np.issubdtype(z.dtype, np.floating) else np.float64
        u = z.astype(np.float64) * self.scale + self.shift
        return np.exp(u[..., 0]).astype(dt), (np.exp(u[..., 1]) - self.m0_offset).astype(dt)

    def to_dict(self) -> dict:
        return {
            "kind": "log-standardise",
            "columns": ["pt", "m0"],
            "shift": self.shift.tolist(),
            "scale": self.scale.tolist(),
            "m0_offset": self.m0_offset,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ConditionTransform:
        return cls(np.array(d["shift"]), np.array(d["scale"]), float(d.get("m0_offset", M0_OFFSET)))


@dataclass
class Transforms:
    """Everything in ``transforms.json``: hit features and jet conditions, plus fit statistics."""

    features: FeatureTransform
    condition: ConditionTransform
    fit: dict = field(default_factory=dict)

    # shortcuts, so ``store.transforms.forward(feats, channel)`` works like the feature transform
    def forward(self, feats, channel):
        return self.features.forward(feats, channel)

    def inverse(self, z, channel):
        return self.features.inverse(z, channel)

    def to_dict(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "features": self.features.to_dict(),
            "condition": self.condition.to_dict(),
            "fit": self.fit,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Transforms:
        return cls(
            FeatureTransform.from_dict(d["features"]),
            ConditionTransform.from_dict(d["condition"]),
            d.get("fit", {}),
        )

    def save(self, path: str | os.PathLike, config: dict | None = None) -> None:
        from e2econd.utils import provenance, write_json_atomic

        d = self.to_dict()
        d["provenance"] = provenance(config)
        write_json_atomic(path, d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Transforms:
        return cls.from_dict(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------------------------
# fitting


class TransformFitter:
    """Streaming fit in two passes over the train split's real hits.

    Pass 1 (:meth:`update`): Δη/Δφ moments, |E| histogram (for e0), (log pt, log m0) moments.
    Pass 2 (:meth:`update_energy`, after :meth:`e0`): moments of asinh(E / e0).
    Partial fitters from workers are combined with :meth:`merge` (exact for counts/histograms).
    """

    def __init__(self):
        self.pos = [_Moments(2) for _ in CHANNELS]
        self.hist = np.zeros((len(CHANNELS), _HIST_BINS + 2), np.int64)
        self.energy = [_Moments(1) for _ in CHANNELS]
        self.cond = _Moments(2)
        self.n_zero = np.zeros(len(CHANNELS), np.int64)
        self._e0 = None

    def update(self, channel: int, deta, dphi, e) -> None:
        deta = np.asarray(deta)
        self.pos[channel].update(np.stack([deta, np.asarray(dphi)], axis=1))
        a = np.abs(np.asarray(e, np.float64))
        self.n_zero[channel] += int((a == 0).sum())
        a = a[a > 0]
        b = np.floor((np.log10(a) - _HIST_LO) * (_HIST_BINS / (_HIST_HI - _HIST_LO))).astype(np.int64) + 1
        self.hist[channel] += np.bincount(np.clip(b, 0, _HIST_BINS + 1), minlength=_HIST_BINS + 2)

    def update_conditions(self, pt, m0, m0_offset: float = M0_OFFSET) -> None:
        self.cond.update(
            np.stack([np.log(np.asarray(pt, np.float64)), np.log(np.asarray(m0, np.float64) + m0_offset)], axis=1)
        )

    def merge(self, other: TransformFitter) -> None:
        for a, b in zip(self.pos, other.pos):
            a.merge(b)
        for a, b in zip(self.energy, other.energy):
            a.merge(b)
        self.hist += other.hist
        self.n_zero += other.n_zero
        self.cond.merge(other.cond)

    def e0(self) -> np.ndarray:
        """Median |E| per channel (GeV) from the histogram (0.23 % resolution); 1 GeV if no hits."""
        if self._e0 is None:
            out = np.ones(len(CHANNELS))
            width = (_HIST_HI - _HIST_LO) / _HIST_BINS
            for c in range(len(CHANNELS)):
                h = self.hist[c]
                total = h.sum() + self.n_zero[c]
                if total == 0 or h.sum() == 0:
                    continue
                cum = np.cumsum(h) + self.n_zero[c]
                k = int(np.searchsorted(cum, 0.5 * total))
                k = min(max(k, 1), _HIST_BINS)
                out[c] = 10 ** (_HIST_LO + (k - 0.5) * width)
            self._e0 = out
        return self._e0

    def update_energy(self, channel: int, e) -> None:
        self.energy[channel].update(np.arcsinh(np.asarray(e, np.float64) / self.e0()[channel])[:, None])

    def result(self) -> Transforms:
        e0 = self.e0()
        shift = np.zeros((3, 3))
        scale = np.ones((3, 3))
        n_hits = []
        for c in range(len(CHANNELS)):
            n_hits.append(int(self.pos[c].n))
            if self.pos[c].n:
                shift[c, :2] = self.pos[c].mean
                scale[c, :2] = self.pos[c].std()
            if self.energy[c].n:
                shift[c, 2] = self.energy[c].mean[0]
                scale[c, 2] = self.energy[c].std()[0]
        cshift = self.cond.mean if self.cond.n else np.zeros(2)
        cscale = self.cond.std() if self.cond.n else np.ones(2)
        fit = {
            "n_jets": int(self.cond.n),
            "n_hits": dict(zip(CHANNELS, n_hits)),
            "e0": "median |E| per channel (log histogram, 0.001 dex bins)",
        }
        return Transforms(FeatureTransform(shift, scale, e0), ConditionTransform(cshift, cscale), fit)


def fit_transforms(store, chunk: int = 1 << 22) -> Transforms:
    """Fit on a :class:`~e2econd.data.hitstore.HitStore` (use the train split): real hits only."""
    fitter = TransformFitter()
    fitter.update_conditions(store.jets["pt"], store.jets["m0"])
    for c in range(len(CHANNELS)):
        lo, hi = store.channel_range(c)
        for a in range(lo, hi, chunk):
            b = min(hi, a + chunk)
            fitter.update(c, store.deta[a:b], store.dphi[a:b], store.e[a:b])
    for c in range(len(CHANNELS)):
        lo, hi = store.channel_range(c)
        for a in range(lo, hi, chunk):
            fitter.update_energy(c, store.e[a : min(hi, a + chunk)])
    return fitter.result()
