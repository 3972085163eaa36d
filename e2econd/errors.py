"""Errors for bad user input.

``E2EInputError`` carries a one-line message naming the file, the row or key, and what is
wrong. The CLI prints it as ``error: <message>`` and exits with status 2; library callers can
catch it as a ``ValueError``.
"""

from __future__ import annotations


class E2EInputError(ValueError):
    """Bad input file, option or configuration (one-line message: where and what)."""

    def __init__(self, message: str, *, path: object = None, key: object = None, row: object = None):
        parts = []
        if path is not None:
            parts.append(str(path))
        if key is not None:
            parts.append(f"key '{key}'")
        if row is not None:
            parts.append(f"row {row}")
        prefix = ": ".join([", ".join(parts)]) if parts else ""
        msg = f"{prefix}: {message}" if prefix else message
        super().__init__(" ".join(msg.split()))  # always one line
        self.path, self.key, self.row = path, key, row


class NonFiniteError(E2EInputError):
    """Training or sampling produced NaN/inf (bad values in the input data, or a diverging run)."""
