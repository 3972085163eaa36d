"""E2E data: read/write E2E files, lossless image <-> hit sets, invertible transforms, hit store.

Submodules: ``geometry`` (constants), ``e2e_io`` (Parquet/HDF5 readers and writer: the face of
``e2e_format``, ``e2e_read``, ``e2e_write``, ``shards``), ``hits`` (image <-> hit sets), ``snap``
(snapping model output to the grid), ``transforms`` (fitted, invertible
feature and condition transforms), ``hitstore`` (hit-set directories in memory),
``preprocess`` / ``export`` (the CLI workhorses). Imported lazily: ``import e2econd.data`` is cheap.
"""

from e2econd.data.geometry import CENTRE, CHANNELS, IMAGE_SIZE, PIXEL, TOWER

__all__ = ["CENTRE", "CHANNELS", "IMAGE_SIZE", "PIXEL", "TOWER"]
