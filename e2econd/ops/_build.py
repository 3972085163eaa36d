"""How the C++/CUDA kernels are built: sources, compiler flags and the CUDA-toolkit check.

One place for both build paths, so that they compile the same thing:

* ``setup.py`` (``pip install --no-build-isolation .``, ``make setup``) builds ``e2econd._C`` at
  install time against the torch of the build environment;
* ``e2econd.ops._extension`` compiles the same sources on first use (JIT) when the package was
  installed without torch in the build environment (plain, isolated ``pip install .``).

This module imports nothing outside the standard library at import time (``setup.py`` loads it
by file path before it knows whether torch is importable).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess

OFF = ("0", "false", "no", "off")
ON = ("1", "true", "yes", "on")
DEFAULT_CUDA_ARCHS = "8.0;9.0"  # A100, H100: used when no GPU is visible at build time
TORCH_STAMP = "_C.torch.json"  # beside e2econd/_C*.so: the torch it was built against (setup.py writes it)


def torch_identity(torch) -> dict:
    """What a compiled library's ABI depends on: torch's version, git revision and CUDA version."""
    return {"torch": torch.__version__, "git": getattr(torch.version, "git_version", None), "cuda": torch.version.cuda}


def flag(name: str) -> str | None:
    """The environment variable ``name``, stripped and lower-cased; None when unset or empty."""
    value = os.environ.get(name)
    return None if value in (None, "") else value.strip().lower()


def source_root(package_dir: str) -> str | None:
    """Directory holding the kernel sources: ``e2econd/_csrc`` in an installed wheel, else the
    checkout's top-level ``csrc/`` (editable install, source tree). None when neither exists."""
    for cand in (os.path.join(package_dir, "_csrc"), os.path.join(os.path.dirname(package_dir), "csrc")):
        if os.path.isfile(os.path.join(cand, "e2econd.cpp")):
            return cand
    return None


#: the one list of translation units (globs relative to csrc/), shared with CMakeLists.txt
SOURCE_LIST = "sources.txt"


def source_globs(root: str) -> list[tuple[str, bool]]:
    """``(glob, is_cuda)`` pairs of ``root/sources.txt`` (comments and blank lines skipped)."""
    out = []
    with open(os.path.join(root, SOURCE_LIST), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            is_cuda = line.startswith("cuda:")
            out.append((line[len("cuda:") :].strip() if is_cuda else line, is_cuda))
    return out


def sources(root: str, cuda: bool) -> list[str]:
    """The translation units of the library under ``root`` (absolute paths), in ``sources.txt`` order."""
    files = []
    for pattern, is_cuda in source_globs(root):
        if is_cuda and not cuda:
            continue
        files += sorted(glob.glob(os.path.join(root, pattern)))
    return files


def package_files(root: str) -> list[str]:
    """Every file of the library (sources and headers, no C++ tests), relative to ``root``."""
    out = []
    for pattern in ("*", "cpu/*", "cuda/*"):
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            if os.path.isfile(path) and (
                path.rsplit(".", 1)[-1] in ("cpp", "h", "cu", "cuh") or os.path.basename(path) == SOURCE_LIST
            ):
                out.append(os.path.relpath(path, root))
    return out


def source_hash(root: str) -> str:
    """sha256 over the names and bytes of every library file under ``root`` (first 16 hex digits)."""
    h = hashlib.sha256()
    for rel in package_files(root):
        h.update(rel.encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()[:16]


def cxx_flags(debug: bool, python_module: bool) -> list[str]:
    """C++ flags of the library. ``python_module`` adds ``PyInit__C`` (import as ``e2econd._C``)."""
    opt = ["-O0", "-g", "-UNDEBUG"] if debug else ["-O3", "-DNDEBUG"]
    return [*opt, "-fopenmp"] + (["-DE2ECOND_PYTHON_MODULE"] if python_module else [])


def cuda_defines(torch_cuda: str, archs: str) -> list[str]:
    """Preprocessor defines of a CUDA build (``torch_cuda`` like "13.0")."""
    major, minor = (int(x) for x in torch_cuda.split(".")[:2])
    return [
        "-DE2ECOND_WITH_CUDA",
        f"-DE2ECOND_CUDA_VERSION={major * 1000 + minor * 10}",
        f'-DE2ECOND_CUDA_ARCHS="{archs}"',
    ]


def nvcc_flags(debug: bool) -> list[str]:
    return ["-O0" if debug else "-O3", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr"]


def find_cuda_home() -> str | None:
    """The CUDA toolkit to use: $CUDA_HOME / $CUDA_PATH when set; else the first of the toolkit of
    the ``nvcc`` on PATH (symlinks and small wrapper scripts such as /usr/local/bin/nvcc followed),
    and /usr/local/cuda, that has bin/nvcc and a linkable libcudart.so. torch's own guess,
    ``dirname(dirname(which nvcc))``, gives /usr/local for that wrapper, which cannot link."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return home
    cands = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands += [os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), os.path.dirname(os.path.dirname(nvcc))]
        target = _wrapper_target(nvcc)
        if target:
            cands.append(os.path.dirname(os.path.dirname(os.path.realpath(target))))
    if os.path.isdir("/usr/local/cuda"):
        cands.append("/usr/local/cuda")
    for cand in cands:
        if os.access(os.path.join(cand, "bin", "nvcc"), os.X_OK) and cudart_dir(cand):
            return cand
    return cands[0] if cands else None


def _wrapper_target(nvcc: str) -> str | None:
    """For a small shell wrapper (``exec /path/to/bin/nvcc "$@"``), the nvcc it runs."""
    try:
        if os.path.getsize(nvcc) > 4096:
            return None
        with open(nvcc, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"(/\S+/bin/nvcc)\b", text)
    return m.group(1) if m and os.path.isfile(m.group(1)) and m.group(1) != nvcc else None


def cudart_dir(home: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """Directory with a linkable (unversioned) ``libcudart.so`` for ``-lcudart``, or None."""
    for d in (
        os.path.join(home, "lib64"),
        os.path.join(home, "lib"),
        os.path.join(home, "targets", "x86_64-linux", "lib"),
        *extra_dirs,
    ):
        if os.path.isfile(os.path.join(d, "libcudart.so")):
            return d
    return None


def nvcc_version(nvcc: str) -> str | None:
    """``nvcc --version``'s release (e.g. "13.0"), or None when it does not run."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def cuda_toolkit_problem(home: str | None, torch_cuda: str | None, extra_lib_dirs: tuple[str, ...] = ()) -> str | None:
    """Why the CUDA kernels cannot be built and linked with toolkit ``home`` for a torch built
    with CUDA ``torch_cuda``; None when nvcc runs, matches torch's CUDA major version, and a
    linkable libcudart.so exists."""
    if torch_cuda is None:
        return "torch is a CPU build"
    if not home:
        return "no CUDA toolkit found (no nvcc on PATH, CUDA_HOME unset, no /usr/local/cuda)"
    nvcc = os.path.join(home, "bin", "nvcc")
    if not os.access(nvcc, os.X_OK):
        return f"no nvcc in {home}/bin (set CUDA_HOME to the toolkit)"
    version = nvcc_version(nvcc)
    if version is None:
        return f"{nvcc} --version does not run"
    if version.split(".")[0] != torch_cuda.split(".")[0]:
        return f"nvcc {version} ({home}) does not match torch's CUDA {torch_cuda}"
    if cudart_dir(home, extra_lib_dirs) is None:
        return (
            f"no libcudart.so under {home}/lib64, {home}/lib or {home}/targets/x86_64-linux/lib "
            "(set CUDA_HOME to a full toolkit)"
        )
    return None
