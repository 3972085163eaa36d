"""Embedded dataset generator: Pythia 8 events, anti-kt jets, a CMS-like detector, E2E jet images.

``make_data(process, n, seed, out, ...)`` writes E2E Parquet/HDF5 files (``e2econd make-data``).
Pythia (``pythia8mc``) and ``fastjet`` are imported only when generating.
"""

from __future__ import annotations

from e2econd.generate.detector import DetectorConfig
from e2econd.generate.make_data import PROCESSES, make_data

__all__ = ["DetectorConfig", "PROCESSES", "make_data"]
