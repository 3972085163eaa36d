"""Read and write CMS End-to-End (E2E) jet files, Parquet or HDF5, with bounded memory.

Parquet: column ``X_jets`` nested lists ``[3][125][125]`` (channel-first, float or double; the
modern ``element`` and the legacy ``list.item`` nesting names both work), scalar columns ``pt``,
``m0`` (GeV) and ``y`` (label). HDF5: dataset ``X_jets`` ``(N,125,125,3)`` channel-last with ``pt``,
``m0``, ``y``. The format is detected from the file's magic bytes, never from its name.

Every reader yields :class:`E2EChunk` objects with channel-first float32 images. Any problem
(truncated or corrupt file, missing column, wrong image shape, NaN/inf or null values) raises
:class:`~e2econd.errors.E2EInputError` with a one-line message naming the file, the row or key,
and what is wrong.

This module is the public face (``from e2econd.data.e2e_io import ...``); the code lives in
:mod:`e2econd.data.e2e_format` (names, :class:`E2EChunk`, format detection, value checks),
:mod:`e2econd.data.e2e_read` (readers), :mod:`e2econd.data.e2e_write` (:class:`E2EWriter`) and
:mod:`e2econd.data.shards` (sharded-sample manifests).
"""

from __future__ import annotations

from e2econd.data.e2e_format import FORMATS, IMAGE_KEY, SCALAR_KEYS, E2EChunk, _short, detect_format
from e2econd.data.e2e_read import count_jets, iter_e2e, open_e2e, read_e2e, read_provenance
from e2econd.data.e2e_write import E2EWriter
from e2econd.data.shards import expand_generated_inputs

__all__ = [
    "FORMATS",
    "IMAGE_KEY",
    "SCALAR_KEYS",
    "E2EChunk",
    "E2EWriter",
    "count_jets",
    "detect_format",
    "expand_generated_inputs",
    "iter_e2e",
    "open_e2e",
    "read_e2e",
    "read_provenance",
    "_short",
]
