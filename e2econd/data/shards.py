"""Sharded samples: the manifest ``OUT.manifest.json`` that ``torchrun ... e2econd sample`` writes beside
its per-rank shards ``OUT.rankRRR-of-WWW.ext``, read back as the list of shard files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from e2econd.data.e2e_format import _short
from e2econd.data.e2e_read import count_jets
from e2econd.errors import E2EInputError

MANIFEST_SUFFIX = ".manifest.json"


def expand_generated_inputs(paths) -> list[Path]:
    """Input paths with every sharded-sample manifest (``OUT.manifest.json``, written by
    ``torchrun ... e2econd sample``) replaced by its shards, in rank order; other paths unchanged.

    A manifest whose shards are missing, or whose shards hold another number of jets than the
    manifest's ``jets``, raises :class:`E2EInputError` naming the manifest (an incomplete sample is
    never evaluated silently).
    """
    out: list[Path] = []
    for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        p = Path(p)
        if not p.name.endswith(MANIFEST_SUFFIX):
            out.append(p)
            continue
        try:
            manifest = json.loads(p.read_text())
            shards = [p.parent / str(s) for s in manifest["shards"]]
            n_expected = int(manifest["jets"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise E2EInputError(f"not a readable sample manifest ({_short(exc)})", path=p) from exc
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise E2EInputError(f"shards missing: {', '.join(missing)}", path=p, key="shards")
        n_found = sum(count_jets(s) for s in shards)
        if n_found != n_expected:
            raise E2EInputError(f"the shards hold {n_found} jets, the manifest lists {n_expected}", path=p, key="jets")
        out.extend(shards)
    return out
