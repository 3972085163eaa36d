"""Parsing and type-checking of config values: channel lists (``--channels``, ``data.channels``) and JSON
values against the dataclass field types of :mod:`e2econd.config` (one-line ``E2EInputError`` naming the key)."""

from __future__ import annotations

from typing import Any

from e2econd.data.geometry import CHANNELS
from e2econd.errors import E2EInputError


def parse_channels(spec: str | list[str] | tuple[str, ...], *, source: object = None) -> list[str]:
    """'ecal' | 'all' | 'tracks,ecal' | ['ecal', 'hcal'] -> ordered unique channel names (detector order)."""
    if isinstance(spec, str):
        items = [s.strip().lower() for s in spec.split(",") if s.strip()]
    else:
        items = [str(s).strip().lower() for s in spec]
    if "all" in items:
        return list(CHANNELS)
    aliases = {"track": "tracks", "trk": "tracks", "0": "tracks", "1": "ecal", "2": "hcal"}
    out = set()
    for s in items:
        s = aliases.get(s, s)
        if s not in CHANNELS:
            raise E2EInputError(
                f"unknown channel '{s}' (choose from {', '.join(CHANNELS)}, all)", path=source, key="channels"
            )
        out.add(s)
    if not out:
        raise E2EInputError("no channel given", path=source, key="channels")
    return [c for c in CHANNELS if c in out]


def _coerce(value: Any, typ: Any, *, source: object, key: str) -> Any:
    """Check a JSON value against the dataclass field type (int/float/bool/str/list/tuple/optional)."""
    t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))

    def bad(what: str):
        return E2EInputError(f"expected {what}, got {value!r}", path=source, key=key)

    if t in ("int",):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad("an integer")
        return value
    if t in ("float",):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if t in ("bool",):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if t.startswith("tuple"):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise bad("a list of two numbers")
        return tuple(_coerce(v, "float", source=source, key=key) for v in value)
    if t.startswith("list"):
        if isinstance(value, str):
            return parse_channels(value, source=source)
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        return list(value)
    if "str" in t:
        if value is None and "None" in t:
            return None
        if not isinstance(value, str):
            raise bad("a string")
        return value
    return value
