"""Hit-set directories (the output of ``e2econd preprocess``) and fast in-memory access.

Layout::

    DATA_DIR/manifest.json      inputs (path, size, sha256, split_key), options, counts, split seed, versions
    DATA_DIR/transforms.json    fitted on the train split only
    DATA_DIR/{train,val,test}.parquet

One row per jet: ``jet_id`` int64, ``source`` int32 (index into the manifest inputs), ``row`` int64,
``pt`` f64, ``m0`` f64, ``y`` f32; per channel ``c`` in (tracks, ecal, hcal): ``n_c`` int32, ``sum_c``
f64, ``dropped_c`` f64 (GeV removed by --max-hits), and list columns ``c_ieta`` list<int16>,
``c_iphi`` list<int16>, ``c_size`` list<int8>, ``c_deta`` list<f32>, ``c_dphi`` list<f32>, ``c_e``
list<f32> (``hcal_e`` is list<f64>: exact tower sums, see :mod:`e2econd.data.hits`).

:class:`HitStore` loads one split (or several) as flat numpy arrays, all channels concatenated,
with per-jet starts and counts, so :meth:`HitStore.batch` is pure numpy fancy indexing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from e2econd.data.geometry import CHANNELS
from e2econd.data.hits import BatchHits, FlatHits, HitSet
from e2econd.data.jagged import offsets_from_counts, segment_gather
from e2econd.errors import E2EInputError

SPLITS = ("train", "val", "test")
JET_COLUMNS = ("jet_id", "source", "row", "pt", "m0", "y")
HIT_FIELDS = ("ieta", "iphi", "size", "deta", "dphi", "e")


def hit_schema(metadata: dict | None = None):
    """Arrow schema of a split file."""
    import pyarrow as pa

    cols = [
        ("jet_id", pa.int64()),
        ("source", pa.int32()),
        ("row", pa.int64()),
        ("pt", pa.float64()),
        ("m0", pa.float64()),
        ("y", pa.float32()),
    ]
    for c in CHANNELS:
        cols += [(f"n_{c}", pa.int32()), (f"sum_{c}", pa.float64()), (f"dropped_{c}", pa.float64())]
    for c in CHANNELS:
        e_type = pa.float64() if c == "hcal" else pa.float32()
        cols += [
            (f"{c}_ieta", pa.list_(pa.int16())),
            (f"{c}_iphi", pa.list_(pa.int16())),
            (f"{c}_size", pa.list_(pa.int8())),
            (f"{c}_deta", pa.list_(pa.float32())),
            (f"{c}_dphi", pa.list_(pa.float32())),
            (f"{c}_e", pa.list_(e_type)),
        ]
    md = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
    return pa.schema(cols, metadata=md or None)


def hits_to_table(jets: dict, batch: BatchHits, schema=None):
    """Jet columns (``jet_id, source, row, pt, m0, y``) + hits of the same jets -> Arrow table."""
    import pyarrow as pa

    schema = schema or hit_schema()
    arrays = {k: jets[k] for k in JET_COLUMNS}
    for c, fh in zip(CHANNELS, batch.channels):
        arrays[f"n_{c}"] = fh.counts.astype(np.int32)
        arrays[f"sum_{c}"] = fh.sums()
        arrays[f"dropped_{c}"] = fh.dropped
    for c, fh in zip(CHANNELS, batch.channels):
        off = pa.array(fh.offsets.astype(np.int32))
        for f in HIT_FIELDS:
            typ = schema.field(f"{c}_{f}").type
            arrays[f"{c}_{f}"] = pa.ListArray.from_arrays(off, pa.array(getattr(fh, f), type=typ.value_type))
    return pa.Table.from_arrays(
        [
            pa.array(arrays[n], type=schema.field(n).type) if not isinstance(arrays[n], pa.Array) else arrays[n]
            for n in schema.names
        ],
        schema=schema,
    )


def table_to_hits(table) -> tuple[dict, list[FlatHits]]:
    """Arrow table of a split file -> (jet columns as numpy, one :class:`FlatHits` per channel)."""
    jets = {}
    for name in table.column_names:
        if not name.startswith(tuple(f"{c}_" for c in CHANNELS)):
            jets[name] = table.column(name).to_numpy()
    chans = []
    for c in CHANNELS:
        counts = jets[f"n_{c}"].astype(np.int64)
        vals = {}
        for f in HIT_FIELDS:
            col = table.column(f"{c}_{f}")
            parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in col.chunks]
            vals[f] = np.concatenate(parts) if parts else np.zeros(0)
            if vals[f].size != counts.sum():
                raise E2EInputError(f"{vals[f].size} values but n_{c} sums to {counts.sum()}", key=f"{c}_{f}")
        chans.append(
            FlatHits(
                vals["ieta"].astype(np.int16, copy=False),
                vals["iphi"].astype(np.int16, copy=False),
                vals["size"].astype(np.int8, copy=False),
                vals["deta"].astype(np.float32, copy=False),
                vals["dphi"].astype(np.float32, copy=False),
                vals["e"],
                offsets_from_counts(counts),
                jets[f"dropped_{c}"].astype(np.float64),
            )
        )
    return jets, chans


def _split_list(split) -> list[str]:
    if split is None or split == "all":
        return list(SPLITS)
    names = [split] if isinstance(split, str) else list(split)
    for s in names:
        if s not in SPLITS:
            raise E2EInputError(f"unknown split {s!r}; choose from {', '.join(SPLITS)}")
    return names


def check_data_dir(data_dir: str | os.PathLike) -> Path:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise E2EInputError("not a directory (expected the output of 'e2econd preprocess')", path=data_dir)
    if not (data_dir / "manifest.json").is_file():
        raise E2EInputError("no manifest.json: not a hit-set directory from 'e2econd preprocess'", path=data_dir)
    return data_dir


def iter_split(data_dir: str | os.PathLike, split, batch_size: int = 1024) -> Iterator[tuple[dict, list[FlatHits]]]:
    """Stream (jet columns, per-channel FlatHits) batches of one or more splits, bounded memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_dir = check_data_dir(data_dir)
    for s in _split_list(split):
        path = data_dir / f"{s}.parquet"
        if not path.is_file():
            raise E2EInputError("missing split file", path=path)
        try:
            pf = pq.ParquetFile(str(path))
            for batch in pf.iter_batches(batch_size=batch_size):
                yield table_to_hits(pa.Table.from_batches([batch]))
        except pa.ArrowException as exc:
            raise E2EInputError(f"unreadable split file ({exc})", path=path) from None


@dataclass
class PackedHits:
    """A batch of jets' hits, packed (no padding): jet b owns rows ``cu_seqlens[b]:cu_seqlens[b+1]``,
    channels in the requested order within a jet.

    ``feats`` float32 (total, 3) raw [Δη, Δφ, E GeV]; ``channel`` int64 (total,) index into CHANNELS;
    ``size`` int8 (total,) 1 or 5 (HCAL tower); ``cu_seqlens`` int32 (B+1,); jet columns ``pt``,
    ``m0`` (float64 GeV), ``y`` (float32); ``counts`` int32 (B, n_channels requested) hits per channel.
    """

    feats: np.ndarray
    channel: np.ndarray
    size: np.ndarray
    cu_seqlens: np.ndarray
    pt: np.ndarray
    m0: np.ndarray
    y: np.ndarray
    counts: np.ndarray

    @property
    def batch_size(self) -> int:
        return len(self.cu_seqlens) - 1

    @property
    def max_seqlen(self) -> int:
        return int(np.diff(self.cu_seqlens).max()) if self.batch_size else 0

    def to_torch(self, device=None) -> PackedHits:
        """Same batch as torch tensors (on ``device``)."""
        import torch

        return PackedHits(**{f.name: torch.as_tensor(getattr(self, f.name), device=device) for f in fields(self)})


class HitStore:
    """One split (or several, concatenated in train, val, test order) of a hit directory in memory.

    ``len(store)`` jets; ``store.jets``: dict of numpy jet columns (``jet_id, source, row, pt, m0, y,
    n_tracks, sum_tracks, dropped_tracks, ...``); ``store.hits(i)``: 3 :class:`HitSet`;
    ``store.batch(indices, channels)``: :class:`PackedHits`; ``store.transforms``: fitted transforms.
    Flat hit arrays (all channels concatenated, channel-major): ``ieta, iphi, size, deta, dphi, e``
    (``e`` float32; HCAL energies also kept exactly in float64 for :meth:`hits`).
    """

    def __init__(self, data_dir: str | os.PathLike, split: str | Sequence[str] | None = "train"):
        self.data_dir = check_data_dir(data_dir)
        self.splits = _split_list(split)
        jet_parts: list[dict] = []
        chan_parts: list[list[FlatHits]] = [[] for _ in CHANNELS]
        for jets, chans in iter_split(self.data_dir, self.splits, batch_size=1 << 16):
            jet_parts.append(jets)
            for c, fh in enumerate(chans):
                chan_parts[c].append(fh)
        names = (
            list(jet_parts[0])
            if jet_parts
            else [*JET_COLUMNS] + [f"{k}_{c}" for c in CHANNELS for k in ("n", "sum", "dropped")]
        )
        self.jets = {k: np.concatenate([p[k] for p in jet_parts]) if jet_parts else np.zeros(0) for k in names}
        n = len(self.jets["pt"])
        self._n = n
        counts = [self.jets[f"n_{c}"].astype(np.int64) if n else np.zeros(0, np.int64) for c in CHANNELS]
        totals = [int(cn.sum()) for cn in counts]
        base = np.concatenate([[0], np.cumsum(totals)])
        self._base = base
        self._count = counts
        self._start = [base[c] + offsets_from_counts(counts[c])[:-1] for c in range(len(CHANNELS))]

        def cat(field_name, dtype):
            parts = [getattr(fh, field_name) for c in range(len(CHANNELS)) for fh in chan_parts[c]]
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

        self.ieta = cat("ieta", np.int16)
        self.iphi = cat("iphi", np.int16)
        self.size = cat("size", np.int8)
        self.deta = cat("deta", np.float32)
        self.dphi = cat("dphi", np.float32)
        self.e = cat("e", np.float32)
        self.channel = np.repeat(np.arange(len(CHANNELS), dtype=np.int8), totals)
        hc = CHANNELS.index("hcal")
        parts = [fh.e.astype(np.float64) for fh in chan_parts[hc]]
        self._hcal_e64 = np.concatenate(parts) if parts else np.zeros(0)
        self._transforms = None
        self.manifest = json.loads((self.data_dir / "manifest.json").read_text())

    def __len__(self) -> int:
        return self._n

    def channel_range(self, c: int) -> tuple[int, int]:
        """[lo, hi) of channel ``c``'s hits in the flat arrays."""
        return int(self._base[c]), int(self._base[c + 1])

    @property
    def transforms(self):
        """:class:`~e2econd.data.transforms.Transforms` from ``transforms.json`` (fitted on train)."""
        if self._transforms is None:
            from e2econd.data.transforms import Transforms

            path = self.data_dir / "transforms.json"
            if not path.is_file():
                raise E2EInputError("missing transforms.json", path=path)
            self._transforms = Transforms.load(path)
        return self._transforms

    def hits(self, i: int) -> list[HitSet]:
        """The 3 hit sets of jet ``i`` (HCAL energies float64, exact)."""
        if not -self._n <= i < self._n:
            raise IndexError(f"jet {i} out of range for {self._n} jets")
        i %= max(self._n, 1)
        out = []
        for c in range(len(CHANNELS)):
            a = int(self._start[c][i])
            b = a + int(self._count[c][i])
            e = self._hcal_e64[a - self._base[c] : b - self._base[c]] if CHANNELS[c] == "hcal" else self.e[a:b]
            out.append(HitSet(self.ieta[a:b], self.iphi[a:b], self.size[a:b], self.deta[a:b], self.dphi[a:b], e))
        return out

    def batch(self, indices, channels: Sequence[str] = CHANNELS) -> PackedHits:
        """Packed hits of jets ``indices`` (any order, repeats allowed), vectorised."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -self._n or idx.max() >= self._n):
            raise IndexError(f"jet index out of range for {self._n} jets")
        idx = idx % max(self._n, 1)
        chans = [CHANNELS.index(c) for c in channels]
        starts = np.stack([self._start[c][idx] for c in chans], axis=1) if chans else np.zeros((idx.size, 0))
        counts = np.stack([self._count[c][idx] for c in chans], axis=1) if chans else np.zeros((idx.size, 0))
        gather = segment_gather(starts.reshape(-1), counts.reshape(-1))
        feats = np.empty((gather.size, 3), np.float32)
        feats[:, 0] = self.deta[gather]
        feats[:, 1] = self.dphi[gather]
        feats[:, 2] = self.e[gather]
        per_jet = counts.sum(axis=1)
        cu = np.zeros(idx.size + 1, np.int32)
        np.cumsum(per_jet, out=cu[1:])
        return PackedHits(
            feats,
            self.channel[gather].astype(np.int64),
            self.size[gather],
            cu,
            self.jets["pt"][idx],
            self.jets["m0"][idx],
            self.jets["y"][idx].astype(np.float32),
            counts.astype(np.int32),
        )
