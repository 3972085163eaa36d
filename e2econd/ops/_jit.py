"""Compile the C++/CUDA kernels on first use against the installed torch, and cache the library.

Used when the package carries no prebuilt ``e2econd._C`` (plain, isolated ``pip install .``) or the
prebuilt one fails to import. The library is built with ``torch.utils.cpp_extension.load`` from
the shipped sources with the flags ``setup.py`` uses (``e2econd.ops._build``), into

    $E2ECOND_CACHE (default ~/.cache/e2econd) / torch<version>-<key>/e2econd_ops.so

where ``key`` hashes the torch build, the Python ABI, the sources and the flags, so a change of
any of them compiles afresh and nothing built against another torch is ever loaded. A file lock
makes concurrent processes (torchrun ranks) wait for one compile. A failed compile is recorded in
that directory (``failed.log``) and not retried until the directory is removed or the key changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from e2econd.ops import _build as B

NAME = "e2econd_ops"
#: rough first-compile times on 2 cores (docs/BENCHMARKS.md), shown in the progress message
MINUTES = {False: 2, True: 12}


def cache_root() -> Path:
    """Where JIT-compiled kernels are kept: $E2ECOND_CACHE, else ~/.cache/e2econd."""
    return Path(os.environ.get("E2ECOND_CACHE") or Path.home() / ".cache" / "e2econd")


def plan(src_root: str) -> dict:
    """What would be compiled: sources, flags, whether CUDA kernels are included (and why not), key."""
    import torch

    cuda_problem = "E2ECOND_CUDA=0" if B.flag("E2ECOND_CUDA") in B.OFF else None
    home = B.find_cuda_home()
    if cuda_problem is None:
        cuda_problem = B.cuda_toolkit_problem(home, torch.version.cuda)
    if cuda_problem is not None and B.flag("E2ECOND_CUDA") in B.ON:
        raise RuntimeError(f"E2ECOND_CUDA=1 but the CUDA kernels cannot be built: {cuda_problem}")
    use_cuda = cuda_problem is None
    debug = B.flag("E2ECOND_DEBUG") in B.ON
    cflags, cuda_flags, archs = B.cxx_flags(debug, python_module=False), [], None
    if use_cuda:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or (
            "native" if torch.cuda.is_available() else B.DEFAULT_CUDA_ARCHS
        )
        defines = B.cuda_defines(torch.version.cuda, archs)
        cflags, cuda_flags = cflags + defines, B.nvcc_flags(debug) + defines
    ident = {
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", None),
        "torch_cuda": torch.version.cuda,
        "python": sys.implementation.cache_tag,
        "machine": platform.machine(),
        "sources": B.source_hash(src_root),
        "cflags": cflags,
        "cuda_flags": cuda_flags,
        "archs": archs,
        "cuda_home": home if use_cuda else None,
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    tag = "".join(c if c.isalnum() or c in ".-_" else "_" for c in torch.__version__)
    return {
        "sources": B.sources(src_root, use_cuda),
        "include": src_root,
        "cflags": cflags,
        "cuda_flags": cuda_flags,
        "cuda": use_cuda,
        "cuda_home": home,
        "archs": archs,
        "cuda_skipped": cuda_problem,
        "key": key,
        "dir": cache_root() / f"torch{tag}-{key}",
        "ident": ident,
    }


@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive lock on ``path`` (created); says so when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"e2econd: waiting for another process compiling the C++ kernels (lock {path})", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _ninja_on_path():
    """torch's JIT runs ``ninja`` from PATH: add the ninja wheel's and this interpreter's bin dirs
    (a venv used without being activated)."""
    old = os.environ.get("PATH", "")
    extra = [os.path.dirname(sys.executable)]
    with contextlib.suppress(ImportError, AttributeError):
        import ninja

        extra.insert(0, ninja.BIN_DIR)
    os.environ["PATH"] = os.pathsep.join([*extra, old])
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _compile(p: dict) -> None:
    import torch
    import torch.utils.cpp_extension as cpp

    if p["cuda"]:  # torch guessed CUDA_HOME when it was imported; use the toolkit that was checked
        os.environ["CUDA_HOME"] = cpp.CUDA_HOME = p["cuda_home"]
        if p["archs"] != "native":
            os.environ["TORCH_CUDA_ARCH_LIST"] = p["archs"]
    ldflags = ["-fopenmp"]
    if p["cuda"]:
        ldflags.append(f"-L{B.cudart_dir(p['cuda_home'])}")
    p["dir"].mkdir(parents=True, exist_ok=True)
    with _ninja_on_path():
        cpp.load(
            name=NAME,
            sources=p["sources"],
            extra_cflags=p["cflags"],
            extra_cuda_cflags=p["cuda_flags"],
            extra_ldflags=ldflags,
            extra_include_paths=[p["include"]],
            build_directory=str(p["dir"]),
            with_cuda=p["cuda"],
            is_python_module=False,
            verbose=False,
        )
    if not hasattr(torch.ops.e2econd, "build_info"):
        raise RuntimeError(f"{p['dir'] / (NAME + '.so')} loaded but registered no e2econd ops")


def _summary(text: str) -> str:
    """One line out of a compiler log: the first line that names an error, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower() and not ln.lower().startswith("error building extension"):
            return ln[:300]
    return lines[-1][:300] if lines else "unknown error"


def load_or_compile(src: str | None = None) -> tuple[bool, str, str | None]:
    """Load the cached JIT library, compiling it first if needed: (loaded, source, error).

    ``src``: the kernel sources (default: the package's ``_csrc``, else the checkout's ``csrc``)."""
    if B.flag("E2ECOND_JIT") in B.OFF:
        return (
            False,
            "reference (no usable prebuilt e2econd._C; JIT compile disabled by E2ECOND_JIT=0)",
            "no usable prebuilt e2econd._C and E2ECOND_JIT=0",
        )
    src = src or B.source_root(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if src is None:
        return (
            False,
            "reference (no prebuilt e2econd._C and no kernel sources shipped)",
            "no prebuilt e2econd._C and no kernel sources (e2econd/_csrc) to compile",
        )
    import torch

    try:
        p = plan(src)
        so, failed = p["dir"] / f"{NAME}.so", p["dir"] / "failed.log"
        with _locked(p["dir"].with_name(p["dir"].name + ".lock")):
            if failed.exists():
                msg = f"JIT compile failed earlier: {_summary(failed.read_text())} (log {failed}; remove it to retry)"
                return False, "reference (JIT compile failed)", msg
            if (p["dir"] / "ok").exists() and so.exists():
                torch.ops.load_library(str(so))
            else:
                _compile_logged(p, so, failed)
    except Exception as exc:  # never break the import: the references still work
        return False, "reference (JIT compile failed)", f"JIT compile failed: {_summary(str(exc))}"
    return True, f"JIT-compiled ({p['dir']})", None


def _compile_logged(p: dict, so: Path, failed: Path) -> None:
    import torch

    what = "C++ + CUDA" if p["cuda"] else "C++"
    why = "" if p["cuda"] or p["cuda_skipped"] == "torch is a CPU build" else f"; no CUDA kernels: {p['cuda_skipped']}"
    print(
        f"e2econd: compiling {what} kernels for torch {torch.__version__} (first use, ~{MINUTES[p['cuda']]} min) "
        f"into {p['dir']}{why}…",
        file=sys.stderr,
        flush=True,
    )
    t0 = time.time()
    try:
        _compile(p)
    except Exception as exc:
        p["dir"].mkdir(parents=True, exist_ok=True)
        failed.write_text(f"{type(exc).__name__}: {exc}\n")
        raise
    (p["dir"] / "ok").write_text(json.dumps({**p["ident"], "seconds": round(time.time() - t0, 1)}) + "\n")
    print(f"e2econd: compiled the kernels in {time.time() - t0:.0f} s (cached for later runs)", file=sys.stderr)
