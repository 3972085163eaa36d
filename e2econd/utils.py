"""Small shared helpers: provenance records and atomic writes.

Every output file of e2econd carries ``provenance(config)`` so that it says which code,
versions and options made it. Files and directories are written under a temporary sibling
name and renamed into place only on success, so a failure never leaves partial output.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata as _metadata
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from e2econd._version import __version__


def bar_disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a progress switch: True shows the bar, False hides it, None shows it
    only when stderr is a terminal (tqdm's own check)."""
    return None if progress is None else not progress


def provenance(config: dict[str, Any] | None = None, timestamp: bool = True) -> dict[str, Any]:
    """Versions, backend, time and command line that produced an output, plus its config.

    ``timestamp=False`` leaves out the creation time, so that outputs made with the same
    options are byte-identical (reproducible sampling).
    """
    record: dict[str, Any] = {
        "e2econd": __version__,
        "python": platform.python_version(),
        "argv": list(sys.argv),
    }
    if timestamp:
        record["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for mod in ("torch", "numpy", "pyarrow", "h5py"):
        m = sys.modules.get(mod)
        if m is not None:
            record[mod] = getattr(m, "__version__", "unknown")
        else:  # read the installed version without importing (torch alone costs seconds and 0.5 GB)
            with contextlib.suppress(Exception):
                record[mod] = _metadata.version(mod)
    if "torch" in sys.modules:
        with contextlib.suppress(Exception):
            from e2econd.ops import backend

            record["backend"] = backend()
    if config is not None:
        record["config"] = config
    return record


def provenance_json(config: dict[str, Any] | None = None, timestamp: bool = True) -> str:
    return json.dumps(provenance(config, timestamp), sort_keys=True, default=str)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``path`` on success, delete it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; move it to ``path`` on success, remove it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path}: output directory exists (use --overwrite)")
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
