"""Hit-set directory -> E2E images (``e2econd export``): the inverse of ``preprocess``.

Streams the split files (bounded memory), re-expands hits to 125x125 images (HCAL towers to 5x5
blocks of E/25) and writes them with :class:`~e2econd.data.e2e_write.E2EWriter` (Parquet or HDF5 by
suffix), so the round trip can be checked from outside with any E2E reader.
"""

from __future__ import annotations

import os
from pathlib import Path

from e2econd.data.e2e_write import E2EWriter
from e2econd.data.hits import batch_hits_to_images
from e2econd.data.hitstore import SPLITS, _split_list, check_data_dir, iter_split
from e2econd.utils import bar_disabled


def export(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    split: str | None = None,
    *,
    format: str | None = None,
    chunk_size: int = 256,
    progress: bool | None = None,
) -> int:
    """Write jets of ``split`` (default: all, in train, val, test order) as E2E images; returns the count."""
    import json

    from tqdm import tqdm

    data_dir = check_data_dir(data_dir)
    splits = _split_list(split)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    total = sum(int(manifest.get("counts", {}).get("splits", {}).get(s, 0)) for s in splits) or None
    config = {
        "command": "export",
        "data_dir": str(data_dir.resolve()),
        "splits": splits,
        "inputs": manifest.get("inputs"),
        "options": manifest.get("options"),
    }
    with (
        E2EWriter(Path(out), format=format, config=config, row_group_size=chunk_size) as writer,
        tqdm(total=total, unit="jet", desc="export", disable=bar_disabled(progress)) as bar,
    ):
        for jets, chans in iter_split(data_dir, splits, batch_size=chunk_size):
            images = batch_hits_to_images(chans)
            writer.write(images, jets["pt"], jets["m0"], jets["y"])
            bar.update(len(images))
        n = writer.n_written
    return n


__all__ = ["export", "SPLITS"]
