"""The package's shape (docs/DESIGN.md, "Module map"): no file in e2econd/ over 450 lines, no function
over 80 lines except the justified exceptions listed in DESIGN.md, and no import cycle between modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "e2econd"
DESIGN = ROOT / "docs" / "DESIGN.md"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def size_exceptions(text: str) -> set[str]:
    """Entries ``- `e2econd/path.py` — why`` or ``- `e2econd/path.py::function` — why`` of the section
    "### Size exceptions" of DESIGN.md (until the next heading); a bullet without a reason is refused."""
    m = re.search(r"^### Size exceptions\n(.*?)(?=^#)", text + "\n#", flags=re.M | re.S)
    if m is None:
        return set()
    out = set()
    for line in m.group(1).splitlines():
        e = re.match(r"^- `([^`]+)`\s*[—:-]\s*(\S.*)$", line)
        if e:
            out.add(e.group(1))
        elif line.startswith("- "):
            raise AssertionError(f"DESIGN.md size exception without a reason: {line!r}")
    return out


def oversized(paths: list[Path], root: Path = ROOT) -> list[str]:
    """``path (N lines)`` and ``path::function (N lines)`` of every file / function over the limits."""
    found = []
    for p in paths:
        text = p.read_text()
        rel = p.relative_to(root).as_posix()
        n = len(text.splitlines())
        if n > MAX_FILE_LINES:
            found.append((rel, n))
        for node in ast.walk(ast.parse(text, filename=str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append((f"{rel}::{node.name}", length))
    return [f"{name} ({n} lines)" for name, n in found]


def _module_name(p: Path, root: Path = ROOT) -> str:
    parts = list(p.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(paths: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in the file, function-level imports too)."""
    names = {_module_name(p, root): p for p in paths}
    graph: dict[str, set[str]] = {m: set() for m in names}
    for mod, p in names.items():
        is_pkg = p.name == "__init__.py"
        for node in ast.walk(ast.parse(p.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                # `from pkg import submodule` imports the submodule; `from mod import name`, the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
            for t in targets:
                while t and t not in names:  # e2econd.data.hits.HitSet -> e2econd.data.hits
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ------------------------------------------------------------------------------- the checker itself
def test_checkers_find_what_they_should(tmp_path):
    pkg = tmp_path / "e2econd"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # def line + 80 = 81 lines
    (pkg / "long.py").write_text(f"def too_long():\n{body}\n\n\ndef fine():\n    return 1\n")
    (pkg / "big.py").write_text("\n".join(f"y{i} = {i}" for i in range(MAX_FILE_LINES + 1)) + "\n")
    (pkg / "a.py").write_text("from e2econd.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from e2econd import a\n")
    (pkg / "c.py").write_text("from . import b\n")
    paths = sorted(pkg.glob("*.py"))
    assert oversized(paths, tmp_path) == [
        f"e2econd/big.py ({MAX_FILE_LINES + 1} lines)",
        f"e2econd/long.py::too_long ({MAX_FUNCTION_LINES + 1} lines)",
    ]
    graph = import_graph(paths, tmp_path)
    assert graph["e2econd.c"] == {"e2econd.b"}
    assert cycles(graph) == [["e2econd.a", "e2econd.b"]]
    text = "# x\n### Size exceptions\n- `e2econd/long.py::too_long` — a table\n\n## next\n- `not/this.py` — no\n"
    assert size_exceptions(text) == {"e2econd/long.py::too_long"}
    with pytest.raises(AssertionError, match="without a reason"):
        size_exceptions("### Size exceptions\n- `e2econd/x.py`\n")


# --------------------------------------------------------------------------------- the package
def test_no_file_or_function_over_the_limits():
    allowed = size_exceptions(DESIGN.read_text())
    over = [o for o in oversized(_sources()) if o.rsplit(" (", 1)[0] not in allowed]
    assert not over, "over the limits (split it, or justify it under '### Size exceptions' in DESIGN.md): " + ", ".join(
        over
    )


def test_size_exceptions_are_still_needed():
    names = {o.rsplit(" (", 1)[0] for o in oversized(_sources())}
    stale = sorted(size_exceptions(DESIGN.read_text()) - names)
    assert not stale, f"DESIGN.md lists size exceptions that are no longer over the limits: {stale}"


def test_no_import_cycles():
    found = cycles(import_graph(_sources()))
    assert not found, f"import cycles between modules: {found}"
