"""One split of a hit directory as tower tokens (the tower family's training data).

Built once, in chunks of ``chunk`` jets (bounded memory: hits -> images -> tokens), from the same
hit directory ``e2econd preprocess`` writes for the hit family, so both families train on the same
jets with the same split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2econd.data.hits import batch_hits_to_images
from e2econd.data.hitstore import check_data_dir, iter_split
from e2econd.data.towers import TowerLayout, TowerTokens, images_to_tokens, jet_summary, summary_names
from e2econd.errors import E2EInputError


@dataclass
class PackedTowers:
    """A batch of jets' tokens, packed: jet b owns rows ``cu_seqlens[b]:cu_seqlens[b+1]``."""

    pos: np.ndarray  # int16 (T, 2) tower indices
    cells: np.ndarray  # float64 (T, n_cells) GeV
    cu_seqlens: np.ndarray  # int32 (B+1,)
    pt: np.ndarray  # float64 (B,) GeV
    m0: np.ndarray  # float64 (B,) GeV
    y: np.ndarray  # float32 (B,)
    summary: np.ndarray  # float64 (B, S)


class TowerStore:
    """Tokens, jet columns and per-jet summaries of one split (``split``: train, val or test)."""

    def __init__(self, data_dir: str | os.PathLike, split: str, layout: TowerLayout, chunk: int = 512):
        self.data_dir, self.split, self.layout = check_data_dir(data_dir), split, layout
        jet_parts, parts = [], []
        for jets, chans in iter_split(self.data_dir, split, batch_size=chunk):
            jet_parts.append(jets)
            parts.append(images_to_tokens(batch_hits_to_images(chans), layout))
        if not jet_parts:
            raise E2EInputError(f"the {split} split holds no jets", path=Path(self.data_dir) / f"{split}.parquet")
        self.jets = {k: np.concatenate([p[k] for p in jet_parts]) for k in jet_parts[0]}
        counts = np.concatenate([p.counts for p in parts])
        offsets = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        self.tokens = TowerTokens(
            np.concatenate([p.pos for p in parts]), np.concatenate([p.cells for p in parts]), offsets, layout
        )
        self.summary = jet_summary(self.tokens)
        self.summary_names = summary_names(layout)
        self._transforms = None

    @property
    def transforms(self):
        """The hit directory's fitted transforms (``transforms.json``; the tower family uses its condition part)."""
        if self._transforms is None:
            from e2econd.data.transforms import Transforms

            path = Path(self.data_dir) / "transforms.json"
            if not path.is_file():
                raise E2EInputError("missing transforms.json", path=path)
            self._transforms = Transforms.load(path)
        return self._transforms

    def __len__(self) -> int:
        return self.tokens.n_jets

    def batch(self, idx) -> PackedTowers:
        idx = np.asarray(idx, np.int64)
        sub = self.tokens.take_jets(idx)
        return PackedTowers(
            sub.pos,
            sub.cells,
            sub.offsets.astype(np.int32),
            np.asarray(self.jets["pt"], np.float64)[idx],
            np.asarray(self.jets["m0"], np.float64)[idx],
            np.asarray(self.jets["y"], np.float32)[idx],
            self.summary[idx],
        )
