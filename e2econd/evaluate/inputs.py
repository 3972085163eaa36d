"""Reading the inputs of ``evaluate``: E2E files and hit directories, streamed as image chunks.

E2E files (Parquet/HDF5) are read with :func:`e2econd.data.e2e_io.iter_e2e` (which rejects NaN/inf
pixels, missing keys and wrong shapes with a one-line :class:`E2EInputError`); hit directories
(``e2econd preprocess`` output) with :func:`e2econd.data.hitstore.iter_split` after a schema check
(a missing column is named with its file), rebuilt into images with
:func:`e2econd.data.hits.batch_hits_to_images`. :func:`expand_inputs` is the one place where a
generated input is expanded into the files it stands for (a multi-rank sample manifest).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from e2econd.errors import E2EInputError

Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # images (n,3,125,125) f32, pt, m0, y (f64)


def as_paths(spec) -> list[Path]:
    """A path or a list of paths -> list[Path]."""
    return [Path(p) for p in ([spec] if isinstance(spec, (str, os.PathLike)) else spec)]


def expand_inputs(paths: list[Path]) -> list[Path]:
    """The one place where inputs are expanded into the files they stand for: a multi-rank sample
    manifest (``OUT.manifest.json``) becomes its shards (:func:`e2econd.data.e2e_io.expand_generated_inputs`)."""
    from e2econd.data.e2e_io import expand_generated_inputs

    return expand_generated_inputs(paths)


def _split_file(path: Path, split: str) -> Path:
    p = path / f"{split}.parquet"
    if not p.is_file():
        raise E2EInputError(f"hit directory has no split '{split}' ({p.name} missing)", path=path)
    return p


def _check_hit_schema(table_path: Path) -> int:
    """Every column of the documented hit table present (else a one-line error naming it); returns the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from e2econd.data.hitstore import hit_schema

    try:
        pf = pq.ParquetFile(str(table_path))
    except (pa.ArrowException, OSError) as exc:
        raise E2EInputError(f"unreadable hit table ({' '.join(str(exc).split())[:120]})", path=table_path) from None
    names = set(pf.schema_arrow.names)
    need = [n for n in hit_schema().names if n not in ("jet_id", "source", "row")]
    missing = [k for k in need if k not in names]
    if missing:
        raise E2EInputError("missing column", path=table_path, key=missing[0])
    return int(pf.metadata.num_rows)


def count(path: Path, split: str) -> int:
    """Jets in one input (a hit directory's ``split`` table, or an E2E file); validates the input."""
    if path.is_dir():
        from e2econd.data.hitstore import check_data_dir

        check_data_dir(path)
        return _check_hit_schema(_split_file(path, split))
    if not path.exists():
        raise E2EInputError("no such file or directory", path=path)
    from e2econd.data.e2e_io import count_jets

    return int(count_jets(path))


def _validate_hits(chans, table_path: Path, start: int) -> None:
    """Finite energies and hits inside the image (HCAL towers on the 5-pixel grid)."""
    from e2econd.data.geometry import CHANNELS, IMAGE_SIZE, TOWER

    for c, fh in zip(CHANNELS, chans):
        ie, ip = fh.ieta.astype(np.int64), fh.iphi.astype(np.int64)
        size, e = fh.size.astype(np.int64), np.asarray(fh.e, np.float64)
        bad = ~np.isfinite(e) | (ie < 0) | (ip < 0) | (ie + size > IMAGE_SIZE) | (ip + size > IMAGE_SIZE)
        bad |= (size != 1) & (size != TOWER)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise E2EInputError(
                f"invalid hit (ieta={ie[i]}, iphi={ip[i]}, size={size[i]}, e={e[i]})",
                path=table_path,
                key=f"{c}_e",
                row=start + int(fh.jet[i]),
            )


def iter_images(path: Path, split: str, chunk_size: int, stop: int) -> Iterator[Chunk]:
    """Yield (images, pt, m0, y) chunks of the first ``stop`` jets of one input."""
    if path.is_dir():
        from e2econd.data.hits import batch_hits_to_images
        from e2econd.data.hitstore import iter_split

        table = _split_file(path, split)
        start = 0
        for jets, chans in iter_split(path, split, chunk_size):
            if start >= stop:
                break
            _validate_hits(chans, table, start)
            imgs = batch_hits_to_images(chans)
            cols = [np.asarray(jets[k], np.float64) for k in ("pt", "m0", "y")]
            k = min(len(imgs), stop - start)
            yield imgs[:k], cols[0][:k], cols[1][:k], cols[2][:k]
            start += k
        return
    from e2econd.data.e2e_io import iter_e2e

    for ch in iter_e2e(path, chunk_size, stop=stop):
        yield ch.images, *(np.asarray(a, np.float64) for a in (ch.pt, ch.m0, ch.y))


def counts_of(paths: list[Path], split: str, max_jets: int | None) -> list[int]:
    """Jets to read from each input, at most ``max_jets`` in total (inputs in order)."""
    out, left = [], float("inf") if max_jets is None else int(max_jets)
    for p in paths:
        c = int(min(count(p, split), left))
        out.append(c)
        left -= c
    return out
