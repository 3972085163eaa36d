"""Tower tokens: a jet as the set of its occupied 5×5 towers of the 25×25 tower grid.

Tower (ti, tj) covers pixels ieta ∈ [5ti, 5ti+5), iphi ∈ [5tj, 5tj+5); HCAL towers and ECAL trigger
towers are these same blocks. A token carries its tower position and its cells, channel by channel
(``TowerLayout``): 25 track pixels (slot a·5+b = pixel (5ti+a, 5tj+b)), 25 ECAL crystals (same
order), 1 HCAL tower energy (GeV, the exact float64 sum of its 25 pixels). Cell values live on
their crystals by construction: no snapping inside a tower, no two tokens on one tower.

Also here: the per-jet summary (stage 1 of the tower family), the fitted feature transform of the
diffusion state (``TowerTransform``), the vectorised assignment of generated continuous tower
coordinates to distinct free towers (``assign_towers``) and the producer's centring rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e2econd.data.geometry import CHANNELS, energy_from_asinh
from e2econd.data.jagged import Jagged

TOWER = 5  # pixels per tower side
GRID = 25  # towers per image side
CENTRAL_TOWER = (12, 12)  # holds the centre pixel (62, 62)
_CELLS = {"tracks": TOWER * TOWER, "ecal": TOWER * TOWER, "hcal": 1}


@dataclass(frozen=True)
class TowerLayout:
    """Which channels a token carries and where their cells sit in ``cells`` (tracks, ecal, hcal)."""

    channels: tuple[str, ...]

    @classmethod
    def of(cls, channels) -> TowerLayout:
        names = {str(c) for c in channels}
        bad = names - set(CHANNELS)
        if bad or not names:
            raise ValueError(f"unknown or no channels {sorted(bad)} (choose from {CHANNELS})")
        return cls(tuple(c for c in CHANNELS if c in names))

    @property
    def n_cells(self) -> int:
        return sum(_CELLS[c] for c in self.channels)

    def slots(self, channel: str) -> slice:
        start = 0
        for c in self.channels:
            if c == channel:
                return slice(start, start + _CELLS[c])
            start += _CELLS[c]
        raise KeyError(f"channel {channel!r} is not in the layout {self.channels}")

    def cell_channel(self) -> np.ndarray:
        """Detector channel index (0, 1, 2) of every cell slot, (n_cells,) int64."""
        return np.concatenate([np.full(_CELLS[c], CHANNELS.index(c), np.int64) for c in self.channels])


@dataclass
class TowerTokens(Jagged):
    """Tokens of many jets, flat: jet i owns rows ``offsets[i]:offsets[i+1]`` (row-major tower order)."""

    pos: np.ndarray  # int16 (T, 2): (ti, tj)
    cells: np.ndarray  # float64 (T, n_cells), GeV
    offsets: np.ndarray  # int64 (n+1,)
    layout: TowerLayout

    def take_jets(self, idx) -> TowerTokens:
        """Sub-batch of jets (in the given order)."""
        rows, offsets = self._jet_rows(idx)
        return TowerTokens(self.pos[rows], self.cells[rows], offsets, self.layout)


def _blocks(images: np.ndarray, c: int) -> np.ndarray:
    """(n, 125, 125) channel c -> (n, 625, 25): tower ti*25+tj, cell a*5+b."""
    n = images.shape[0]
    x = images[:, c].reshape(n, GRID, TOWER, GRID, TOWER).transpose(0, 1, 3, 2, 4)
    return x.reshape(n, GRID * GRID, TOWER * TOWER)


def images_to_tokens(images: np.ndarray, layout: TowerLayout) -> TowerTokens:
    """E2E images (n, 3, 125, 125) -> tokens of the occupied towers of the layout's channels (vectorised)."""
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    parts = []
    for c in layout.channels:
        b = _blocks(images, CHANNELS.index(c))
        parts.append(b.astype(np.float64).sum(-1, keepdims=True) if c == "hcal" else b.astype(np.float64))
    dense = np.concatenate(parts, axis=-1)  # (n, 625, n_cells)
    occupied = (dense != 0).any(-1)
    jet, tower = np.nonzero(occupied)  # row-major: jets in order, towers ascending
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(occupied.sum(1), out=offsets[1:])
    pos = np.stack([tower // GRID, tower % GRID], 1).astype(np.int16)
    return TowerTokens(pos, dense[jet, tower], offsets, layout)


def tokens_to_images(tokens: TowerTokens, out: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """Tokens -> images (n, 3, 125, 125) float32; HCAL tower energy / 25 on all 25 pixels of its tower.

    ``out`` (zero where the tokens go) receives jet i in row ``rows[i]`` (default i): written in place,
    no temporary image batch (fresh pages cost more than the writes on a small box)."""
    n = tokens.n_jets
    if out is None:
        out = np.zeros((n, 3, 125, 125), np.float32)
    jet = tokens.jet if rows is None else np.asarray(rows, np.int64)[tokens.jet]
    a, b = np.divmod(np.arange(TOWER * TOWER), TOWER)
    ieta = tokens.pos[:, 0:1].astype(np.int64) * TOWER + a[None, :]  # (T, 25)
    iphi = tokens.pos[:, 1:2].astype(np.int64) * TOWER + b[None, :]
    jj = np.broadcast_to(jet[:, None], ieta.shape)
    for c in tokens.layout.channels:
        vals = tokens.cells[:, tokens.layout.slots(c)]
        if c == "hcal":
            vals = np.broadcast_to(vals / 25.0, ieta.shape)
        out[jj, CHANNELS.index(c), ieta, iphi] = vals.astype(np.float32)
    return out


# ----------------------------------------------------------------------------------- summary
def summary_names(layout: TowerLayout) -> list[str]:
    names = ["n_towers"]
    for c in layout.channels:
        names += [f"n_{c}", f"e_{c}"]
    return names + (["hcal_central"] if "hcal" in layout.channels else [])


def summary_kinds(layout: TowerLayout) -> list[str]:
    return [{"n": "count", "e": "energy", "h": "flag"}[n[0]] for n in summary_names(layout)]


def jet_summary(tokens: TowerTokens) -> np.ndarray:
    """(n, S) float64 per jet, columns :func:`summary_names`: towers, non-zero cells and energy (GeV)
    per channel, and whether the hottest HCAL tower is the central one (the producer's crop)."""
    n, jet, lay = tokens.n_jets, tokens.jet, tokens.layout
    cols = [tokens.counts.astype(np.float64)]
    for c in lay.channels:
        v = tokens.cells[:, lay.slots(c)]
        cols.append(np.bincount(jet, (v != 0).sum(1), minlength=n).astype(np.float64))
        cols.append(np.bincount(jet, v.sum(1), minlength=n))
    if "hcal" in lay.channels:
        h = tokens.cells[:, lay.slots("hcal")][:, 0]
        cols.append(_hottest_is_central(h, tokens.pos, tokens.offsets).astype(np.float64))
    return np.stack(cols, 1)


def _segment_argmax(v: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Row of the largest v in each segment (first on ties), -1 for empty segments."""
    n = len(offsets) - 1
    out = np.full(n, -1, np.int64)
    if v.size == 0:
        return out
    jet = np.repeat(np.arange(n), np.diff(offsets))
    order = np.lexsort((np.arange(v.size), -v, jet))  # by jet, then descending v, then row
    first = offsets[:-1][np.diff(offsets) > 0]
    out[np.diff(offsets) > 0] = order[first]
    return out


def _hottest_is_central(h: np.ndarray, pos: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    top = _segment_argmax(h, offsets)
    ok = top >= 0
    ok[ok] = h[top[ok]] > 0
    central = np.zeros(len(top), bool)
    r = top[ok]
    central[ok] = (pos[r, 0] == CENTRAL_TOWER[0]) & (pos[r, 1] == CENTRAL_TOWER[1])
    return central


# --------------------------------------------------------------------------------- transform
class TowerTransform:
    """Token -> diffusion state ``x = [pos_eta, pos_phi, presence (n_cells), value (n_cells)]`` (float32).

    Positions standardised in tower units (dequantised by ``dq`` ∈ [-0.5, 0.5) towers in training);
    presence ±1 (analog bit: the cell is non-zero); value = (asinh(E/e0_c) − μ_c)/sd_c on present
    cells, 0 elsewhere, with e0_c the median |E| of channel c's non-zero train cells (log-like for
    large E, linear near 0, negative ECAL values kept). ``inverse`` writes exactly 0 on absent cells.

    With ``sums`` (fitted ``(e0, mu, sd)`` per 25-cell channel: tracks, ECAL) the state ends with each such
    channel's tower energy, (asinh(S/e0) − μ)/sd: a low-dimensional target for where a jet's energy sits,
    which the decoder uses to scale the tower's cells (``split``); with ECAL in the layout also a
    readout bit (±1: all 25 crystals of the trigger tower read, the selective readout's full-readout
    pattern), so the decoder can read whole towers together.
    """

    def __init__(
        self, layout: TowerLayout, pos_mean, pos_std, e0, mu, sd, sums=None, readout: bool = False, floor=None
    ):
        self.layout = layout
        # per layout channel, GeV (<= 0): the most negative training cell; generated cells are kept above it
        # (negative cells are ECAL noise, a few hundred MeV). None (runs fitted before it): no floor.
        self.floor = None if floor is None else np.minimum(np.asarray(floor, np.float64), 0.0)
        self.sum_channels = [c for c in layout.channels if c != "hcal"] if sums is not None else []
        self.sums = None if sums is None else np.asarray(sums, np.float64).reshape(3, len(self.sum_channels))
        self.readout = bool(readout) and "ecal" in self.sum_channels  # the ECAL full-readout bit (last feature)
        self.pos_mean, self.pos_std = np.asarray(pos_mean, np.float64), np.asarray(pos_std, np.float64)
        self.e0, self.mu, self.sd = (np.asarray(a, np.float64) for a in (e0, mu, sd))  # per layout channel
        chan = [layout.channels.index(CHANNELS[c]) for c in layout.cell_channel()]
        self._cell = np.asarray(chan, np.int64)  # layout-channel index of every cell slot

    @classmethod
    def fit(cls, tokens: TowerTokens, sums: bool = False) -> TowerTransform:
        lay = tokens.layout
        pos = tokens.pos.astype(np.float64)
        pm = pos.mean(0) if len(pos) else np.full(2, 12.0)
        ps = pos.std(0) if len(pos) > 1 else np.full(2, 5.0)
        e0, mu, sd, floor = [], [], [], []
        for c in lay.channels:
            v = tokens.cells[:, lay.slots(c)]
            nz = v[v != 0]
            floor.append(float(min(nz.min(), 0.0)) if nz.size else 0.0)
            e = float(np.median(np.abs(nz))) if nz.size else 1.0
            z = np.arcsinh(nz / e) if nz.size else np.zeros(1)
            e0.append(e)
            mu.append(float(z.mean()))
            sd.append(float(max(z.std(), 1e-3)))
        fitted = None
        if sums:
            cols = [tokens.cells[:, lay.slots(c)].sum(1) for c in lay.channels if c != "hcal"]
            fitted = np.zeros((3, len(cols)))
            for j, s in enumerate(cols):
                nz = s[s != 0]
                fitted[0, j] = float(np.median(np.abs(nz))) if nz.size else 1.0
                z = np.arcsinh(s / fitted[0, j])
                fitted[1, j], fitted[2, j] = float(z.mean()), float(max(z.std(), 1e-3))
        return cls(lay, pm, np.maximum(ps, 1e-3), e0, mu, sd, fitted, readout=sums, floor=floor)

    @property
    def n_features(self) -> int:
        return 2 + 2 * self.layout.n_cells + len(self.sum_channels) + int(self.readout)

    def _sum_features(self, cells: np.ndarray) -> list[np.ndarray]:
        if self.sums is None:
            return []
        s = np.stack([cells[:, self.layout.slots(c)].sum(1) for c in self.sum_channels], 1)
        out = [(np.arcsinh(s / self.sums[0]) - self.sums[1]) / self.sums[2]]
        if self.readout:
            out.append(np.where((cells[:, self.layout.slots("ecal")] != 0).all(1), 1.0, -1.0)[:, None])
        return out

    def forward(self, pos, cells, dq=None) -> np.ndarray:
        p = np.asarray(pos, np.float64) + (0.0 if dq is None else np.asarray(dq, np.float64))
        cells = np.asarray(cells, np.float64)
        present = cells != 0
        z = (np.arcsinh(cells / self.e0[self._cell]) - self.mu[self._cell]) / self.sd[self._cell]
        x = np.concatenate(
            [(p - self.pos_mean) / self.pos_std, np.where(present, 1.0, -1.0), np.where(present, z, 0.0)]
            + self._sum_features(cells),
            1,
        )
        return x.astype(np.float32)

    def inverse(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(coords float64 (T, 2) in tower units, cells float64 (T, n_cells) GeV)."""
        if not isinstance(x, np.ndarray):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, np.float64)
        k = self.layout.n_cells
        coords = x[:, :2] * self.pos_std + self.pos_mean
        cells = np.where(x[:, 2 : 2 + k] > 0, self._cell_energies(x), 0.0)
        return coords, cells

    def _cell_energies(self, x) -> np.ndarray:
        """Cell energies (T, n_cells) GeV of states x, |E| clipped to the collision energy ``E_MAX``."""
        k = self.layout.n_cells
        e = energy_from_asinh(x[:, 2 + k : 2 + 2 * k] * self.sd[self._cell] + self.mu[self._cell], self.e0[self._cell])
        return e if self.floor is None else np.maximum(e, self.floor[self._cell])

    def split(self, x):
        """(coords (T, 2) tower units, presence scores (T, n_cells), cell values (T, n_cells) GeV if present,
        tower energies (T, len(sum_channels)) GeV or None, full ECAL readout (T,) bool or None); energies
        are clipped to ±``E_MAX``, the collision energy (a state far outside the data, e.g. from too few
        sampler steps, must not overflow), and cells from below to the fitted ``floor``."""
        if not isinstance(x, np.ndarray):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, np.float64)
        k = self.layout.n_cells
        sums = full = None
        if self.sums is not None:
            ns = len(self.sum_channels)
            sums = energy_from_asinh(x[:, 2 + 2 * k : 2 + 2 * k + ns] * self.sums[2] + self.sums[1], self.sums[0])
            full = x[:, 2 + 2 * k + ns] > 0 if self.readout else None
        coords = x[:, :2] * self.pos_std + self.pos_mean
        return coords, x[:, 2 : 2 + k], self._cell_energies(x), sums, full

    def to_dict(self) -> dict:
        d = {k: getattr(self, k).tolist() for k in ("pos_mean", "pos_std", "e0", "mu", "sd")}
        if self.sums is not None:
            d["sums"], d["readout"] = self.sums.tolist(), self.readout
        if self.floor is not None:
            d["floor"] = self.floor.tolist()
        return {"channels": list(self.layout.channels), **d}

    @classmethod
    def from_dict(cls, d: dict) -> TowerTransform:
        args = (d["pos_mean"], d["pos_std"], d["e0"], d["mu"], d["sd"], d.get("sums"), d.get("readout", False))
        return cls(TowerLayout.of(d["channels"]), *args, floor=d.get("floor"))


def top_k_presence(score: np.ndarray, offsets: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per jet, the ``k[jet]`` cells with the highest presence score (ties: lower row, then lower column).

    score (T, m) of one channel's m cells, offsets (n+1,), k (n,) -> bool (T, m). Vectorised: the jets'
    cells are padded into one (n, max cells) matrix (-inf) and sorted row by row (stable).
    """
    score = np.asarray(score, np.float64)
    T, m = score.shape
    counts = np.diff(np.asarray(offsets, np.int64))
    n = len(counts)
    keep = np.zeros(T * m, bool)
    if T == 0 or n == 0:
        return keep.reshape(T, m)
    width = int(counts.max()) * m
    jet = np.repeat(np.repeat(np.arange(n), counts), m)  # jet of every flattened cell
    col = np.arange(T * m) - np.repeat(np.asarray(offsets[:-1], np.int64) * m, counts * m)
    padded = np.full((n, width), -np.inf)
    padded[jet, col] = score.reshape(-1)
    order = np.argsort(-padded, axis=1, kind="stable")  # descending score, lower index first on ties
    take = np.arange(width)[None, :] < np.minimum(np.asarray(k, np.int64), counts * m)[:, None]
    rows = np.broadcast_to(np.arange(n)[:, None], order.shape)[take]
    flat = np.asarray(offsets[:-1], np.int64)[rows] * m + order[take]
    keep[flat] = True
    return keep.reshape(T, m)


# -------------------------------------------------------------------------------- assignment
_TOWER_IJ = np.stack(np.divmod(np.arange(GRID * GRID), GRID), 1).astype(np.float64)  # (625, 2)


def assign_towers(coords: np.ndarray, offsets: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Continuous tower coordinates (T, 2) -> distinct towers (T, 2) int16 per jet, greedy by priority.

    Tokens of a jet are placed in descending ``priority`` (ties: lower row first), each on the free
    tower nearest to its coordinates (ties: lowest ti·25+tj); vectorised over jets, the Python loop
    runs over the rank inside a jet only.
    """
    coords = np.asarray(coords, np.float64)
    offsets = np.asarray(offsets, np.int64)
    counts = np.diff(offsets)
    n, T = len(counts), len(coords)
    out = np.zeros((T, 2), np.int16)
    if T == 0:
        return out
    if counts.max() > GRID * GRID:
        raise ValueError(f"a jet has {int(counts.max())} tokens, more than the {GRID * GRID} towers")
    jet = np.repeat(np.arange(n), counts)
    order = np.lexsort((np.arange(T), -np.asarray(priority, np.float64), jet))  # rows by jet, then rank
    taken = np.zeros((n, GRID * GRID), bool)
    rank_start = offsets[:-1]
    # The nearest tower of a point is separable per axis (squared distance is a sum): the per-axis nearest
    # index, lower on exact half-way ties, clipped to the grid. Only when it is taken is the full search run.
    near = np.clip(np.ceil(coords - 0.5), 0, GRID - 1).astype(np.int64)
    near = near[:, 0] * GRID + near[:, 1]
    for r in range(int(counts.max())):
        jets = np.flatnonzero(counts > r)
        rows = order[rank_start[jets] + r]
        best = near[rows]
        busy = taken[jets, best]
        if busy.any():
            jb, rb = jets[busy], rows[busy]
            d2 = ((coords[rb, None, :] - _TOWER_IJ[None]) ** 2).sum(-1)  # (J, 625)
            d2[taken[jb]] = np.inf
            best[busy] = d2.argmin(1)  # first minimum: lowest tower index on ties
        taken[jets, best] = True
        out[rows] = _TOWER_IJ[best].astype(np.int16)
    return out


def apply_centre_rule(pos: np.ndarray, hcal_e: np.ndarray, offsets: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """The producer's crop: in flagged jets the hottest-HCAL token moves to CENTRAL_TOWER (swap with the
    token there, if any). Jets without flag or without HCAL energy are unchanged."""
    pos = np.array(pos, np.int16, copy=True)
    hcal_e = np.asarray(hcal_e, np.float64)
    top = _segment_argmax(hcal_e, offsets)
    ok = (top >= 0) & np.asarray(flag, bool)
    ok[ok] = hcal_e[top[ok]] > 0
    jets = np.flatnonzero(ok)
    if jets.size == 0:
        return pos
    jet = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    at_centre = (pos[:, 0] == CENTRAL_TOWER[0]) & (pos[:, 1] == CENTRAL_TOWER[1])
    holder = np.full(len(offsets) - 1, -1, np.int64)
    holder[jet[at_centre]] = np.flatnonzero(at_centre)
    hot = top[jets]
    old = pos[hot].copy()
    other = holder[jets]
    swap = other >= 0
    pos[other[swap]] = old[swap]
    pos[hot] = np.asarray(CENTRAL_TOWER, np.int16)
    return pos
