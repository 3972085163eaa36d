"""Install paths: the CUDA-toolkit check, the build without torch, the first-use (JIT) compile and its
cache, a prebuilt extension that fails to import, and (marker ``install``, CI) a wheel installed into a
fresh venv and a plain isolated ``pip install .`` next to another torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from e2econd.ops import _build as B
from e2econd.ops import _jit

ROOT = Path(__file__).resolve().parents[1]


def _fake_toolkit(root: Path, release: str = "13.0", cudart: bool = True) -> Path:
    (root / "bin").mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(0o755)
    (root / "lib64").mkdir()
    if cudart:
        (root / "lib64" / "libcudart.so").write_bytes(b"")
    return root


# ------------------------------------------------------------------------------ CUDA toolkit check
def test_toolkit_check_needs_nvcc_matching_cuda_and_a_linkable_cudart(tmp_path):
    good = _fake_toolkit(tmp_path / "good")
    assert B.cuda_toolkit_problem(str(good), "13.0") is None
    assert "does not match torch's CUDA 12.8" in B.cuda_toolkit_problem(str(good), "12.8")
    assert B.cuda_toolkit_problem(str(good), None) == "torch is a CPU build"
    nolib = _fake_toolkit(tmp_path / "nolib", cudart=False)
    assert "no libcudart.so under" in B.cuda_toolkit_problem(str(nolib), "13.0")
    assert "no nvcc in" in B.cuda_toolkit_problem(str(tmp_path / "missing"), "13.0")
    (nolib / "targets" / "x86_64-linux" / "lib").mkdir(parents=True)
    (nolib / "targets" / "x86_64-linux" / "lib" / "libcudart.so").write_bytes(b"")
    assert B.cuda_toolkit_problem(str(nolib), "13.0") is None
    assert B.cudart_dir(str(nolib)) == str(nolib / "targets" / "x86_64-linux" / "lib")


def test_nvcc_wrapper_on_path_leads_to_its_toolkit_not_its_prefix(tmp_path, monkeypatch):
    """The reported failure: /usr/local/bin/nvcc is a wrapper of /usr/local/cuda-13.0/bin/nvcc, and
    torch's guess dirname(dirname(which nvcc)) = /usr/local has no libcudart.so (link error)."""
    toolkit = _fake_toolkit(tmp_path / "cuda-13.0")
    prefix = tmp_path / "local"
    (prefix / "bin").mkdir(parents=True)
    wrapper = prefix / "bin" / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{prefix / 'bin'}:/usr/bin:/bin")
    assert "no libcudart.so under" in B.cuda_toolkit_problem(str(prefix), "13.0")  # torch's guess: cannot link
    assert B.find_cuda_home() == str(toolkit) and B.cuda_toolkit_problem(str(toolkit), "13.0") is None
    monkeypatch.setenv("CUDA_HOME", str(prefix))  # an explicit CUDA_HOME is used as given, and checked
    assert B.find_cuda_home() == str(prefix) and B.cuda_toolkit_problem(str(prefix), "13.0") is not None


# ------------------------------------------------------------------------------ setup.py without torch
def test_setup_without_torch_builds_a_pure_python_package(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # `import torch` raises ImportError, as in an isolated build env
        sys.argv = ["setup.py", "--name"]
        g = {{"__file__": {str(ROOT / "setup.py")!r}, "__name__": "__main__"}}
        exec(compile(open(g["__file__"]).read(), g["__file__"], "exec"), g)
        print("EXT", g["ext_modules"], sorted(g["cmdclass"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "EXT [] []" in proc.stdout and "e2econd" in proc.stdout
    assert "torch is not importable in the build environment" in proc.stderr


def test_package_files_cover_every_source_and_header():
    files = set(B.package_files(str(ROOT / "csrc")))
    on_disk = {
        str(p.relative_to(ROOT / "csrc"))
        for p in (ROOT / "csrc").rglob("*")
        if (p.suffix in (".cpp", ".h", ".cu", ".cuh") or p.name == B.SOURCE_LIST) and p.parts[-2] != "tests"
    }
    assert files == on_disk and "e2econd.cpp" in files and B.SOURCE_LIST in files


def test_sdist_and_its_pure_wheel_carry_the_kernel_sources(tmp_path):
    """sdist (MANIFEST.in) -> wheel built without an extension: the wheel holds every library source and
    header as e2econd/_csrc (what the first-use compile needs), and no compiled _C."""
    import tarfile
    import zipfile

    src = _copy_tree(tmp_path / "src")
    env = _clean_env(E2ECOND_EXT="0")
    _sh([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "sd")], src, env)
    sdist = next((tmp_path / "sd").glob("e2econd-*.tar.gz"))
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    expected = {f"csrc/{f}" for f in B.package_files(str(ROOT / "csrc"))}
    assert expected <= names and "CMakeLists.txt" in names, expected - names
    _sh(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-build-isolation",
            "--no-deps",
            "-w",
            str(tmp_path / "w"),
            str(sdist),
        ],
        tmp_path,
        env,
    )
    with zipfile.ZipFile(next((tmp_path / "w").glob("e2econd-*-py3-none-any.whl"))) as z:
        names = set(z.namelist())
    assert {f"e2econd/_csrc/{f}" for f in B.package_files(str(ROOT / "csrc"))} <= names
    assert "e2econd/ops/_build.py" in names and not any("/_C." in n for n in names)


# ------------------------------------------------------------------------------ JIT cache
def test_jit_cache_key_follows_sources_flags_and_cache_dir(tmp_path, monkeypatch):
    src = tmp_path / "csrc"
    shutil.copytree(ROOT / "csrc", src, ignore=shutil.ignore_patterns("tests"))
    monkeypatch.setenv("E2ECOND_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("E2ECOND_DEBUG", raising=False)
    p1 = _jit.plan(str(src))
    assert p1["dir"].parent == tmp_path / "cache" and p1 == _jit.plan(str(src))
    (src / "philox.h").write_text((src / "philox.h").read_text() + "\n// changed\n")
    p2 = _jit.plan(str(src))
    assert p2["key"] != p1["key"]
    monkeypatch.setenv("E2ECOND_DEBUG", "1")
    assert _jit.plan(str(src))["key"] not in (p1["key"], p2["key"])
    import torch

    assert p1["ident"]["torch"] == torch.__version__ and "-DE2ECOND_PYTHON_MODULE" not in p1["cflags"]
    monkeypatch.setenv("E2ECOND_CUDA", "1")  # forced CUDA with a toolkit that cannot link: an error, not CPU
    monkeypatch.setenv("CUDA_HOME", str(_fake_toolkit(tmp_path / "nolib", cudart=False)))
    with pytest.raises(RuntimeError, match="E2ECOND_CUDA=1 but the CUDA kernels cannot be built"):
        _jit.plan(str(src))
    monkeypatch.setenv("E2ECOND_CUDA", "0")
    assert not _jit.plan(str(src))["cuda"] and _jit.plan(str(src))["cuda_skipped"] == "E2ECOND_CUDA=0"


def test_failed_jit_compile_falls_back_and_is_not_retried(tmp_path, monkeypatch):
    src = tmp_path / "csrc"
    src.mkdir()
    (src / "e2econd.cpp").write_text("#include <e2econd_no_such_header.h>\n")
    (src / "sources.txt").write_text("e2econd.cpp\n")
    monkeypatch.setenv("E2ECOND_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("E2ECOND_CUDA", "0")
    loaded, source, error = _jit.load_or_compile(str(src))
    assert not loaded and source == "reference (JIT compile failed)"
    assert "e2econd_no_such_header.h" in error, error
    logs = list((tmp_path / "cache").glob("*/failed.log"))
    assert len(logs) == 1
    loaded, _, error = _jit.load_or_compile(str(src))  # recorded: no second compile
    assert not loaded and "failed earlier" in error and str(logs[0]) in error
    monkeypatch.setenv("E2ECOND_JIT", "0")
    assert _jit.load_or_compile(str(src))[1].startswith("reference (no usable prebuilt e2econd._C; JIT")


TINY_LIB = """
#include <torch/library.h>
#include <string>
std::string build_info() { return "tiny-test-library"; }
TORCH_LIBRARY(e2econd, m) { m.def("build_info() -> str", &build_info); }
"""


@pytest.mark.slow
def test_concurrent_first_uses_compile_once_then_load_from_the_cache(tmp_path):
    """Two processes (as two torchrun ranks) start at once: one compiles under the lock, the other
    waits and loads the result; a third process loads the cached library without compiling."""
    src = tmp_path / "csrc"
    src.mkdir()
    (src / "e2econd.cpp").write_text(TINY_LIB)
    (src / "sources.txt").write_text("e2econd.cpp\n")
    code = textwrap.dedent(f"""
        import torch
        from e2econd.ops import _jit
        print(_jit.load_or_compile({str(src)!r}), torch.ops.e2econd.build_info())
    """)
    env = _clean_env(
        E2ECOND_DISABLE_EXT="1", E2ECOND_CUDA="0", E2ECOND_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT)
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all("(True, 'JIT-compiled (" in o and "tiny-test-library" in o for o, _ in outs), outs
    assert sum("e2econd: compiling C++ kernels" in e for _, e in outs) == 1, outs
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "tiny-test-library" in again.stdout and "compiling" not in again.stderr, again


def test_a_prebuilt_extension_that_fails_to_import_is_reported(tmp_path):
    """A broken/ABI-mismatched _C is never silent: info names the failure, then the JIT path is tried."""
    pkg = tmp_path / "site" / "e2econd"
    shutil.copytree(ROOT / "e2econd", pkg, ignore=shutil.ignore_patterns("_C*.so", "__pycache__", "_csrc"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    (pkg / f"_C{suffix}").write_bytes(b"not a shared library")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), E2ECOND_CACHE=str(tmp_path / "cache"))
    env.pop("E2ECOND_DISABLE_EXT", None)
    out = subprocess.run(
        [sys.executable, "-m", "e2econd", "info", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    b = json.loads(out.stdout)["backend"]
    assert not b["extension_loaded"] and b["active"] == "reference"
    assert b["load_error"].startswith("prebuilt e2econd._C failed to import:"), b
    assert "no kernel sources" in b["load_error"] and b["source"].startswith("reference (")


def test_a_prebuilt_extension_for_another_torch_is_not_imported(tmp_path):
    """The stamp setup.py writes beside _C (the torch it was built against) is checked before the import:
    a library built for another torch is never loaded, even one that would import."""
    pkg = tmp_path / "site" / "e2econd"
    shutil.copytree(ROOT / "e2econd", pkg, ignore=shutil.ignore_patterns("_C*", "__pycache__", "_csrc"))
    (pkg / f"_C{sysconfig.get_config_var('EXT_SUFFIX')}").write_bytes(b"would fail if it were imported")
    (pkg / B.TORCH_STAMP).write_text(json.dumps({"torch": "0.0.1", "git": "abc", "cuda": None}))
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), E2ECOND_CACHE=str(tmp_path / "cache"))
    env.pop("E2ECOND_DISABLE_EXT", None)
    out = subprocess.run(
        [sys.executable, "-m", "e2econd", "info", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    err = json.loads(out.stdout)["backend"]["load_error"]
    assert err.startswith("prebuilt e2econd._C was built against torch 0.0.1 (git abc), this is torch "), err
    assert "failed to import" not in err


# ------------------------------------------------------------------------------ fresh venvs (CI)
def _copy_tree(dst: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".venv",
        "build",
        "dist",
        "demo",
        "runs",
        ".git",
        "*.egg-info",
        "_C*.so",
        "__pycache__",
        ".pytest_cache",
        ".ruff_cache",
        "shared",
    )
    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


def _sh(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 1500, stderr: bool = False) -> str:
    """Run ``cmd``; its stdout (with stderr appended when ``stderr``), failing with both on an error."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + (proc.stderr if stderr else "")


def _clean_env(**kw) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2ECOND_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "MAX_JOBS": "2", **kw}


@pytest.mark.slow
@pytest.mark.install
def test_wheel_installed_into_a_fresh_venv_runs_its_kernels(tmp_path):
    """`pip wheel --no-build-isolation` (as CI and the Makefile build), installed into a fresh venv that
    sees this venv's packages through a .pth line (so it shares torch); then `e2econd info` and a kernel
    test run outside the source tree, against the installed copy."""
    src = _copy_tree(tmp_path / "src")
    env = _clean_env(E2ECOND_CUDA="0")  # the CUDA compile is checked by `make setup`; this checks packaging
    _sh(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        tmp_path,
        env,
    )
    wheel = next((tmp_path / "dist").glob("e2econd-*.whl"))
    venv = tmp_path / "wv"
    _sh([sys.executable, "-m", "venv", str(venv)], tmp_path)
    py = venv / "bin" / "python"
    site = _sh([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip()
    Path(site, "parent-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _sh(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--no-index", str(wheel)],
        tmp_path,
        env,
    )
    run = tmp_path / "run"
    (run / "t").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "ops" / "test_diffusion_step.py", run / "t")
    shutil.copy(ROOT / "tests" / "conftest.py", run / "t")
    env = _clean_env(E2ECOND_REQUIRE_EXT="1", E2ECOND_JIT="0", E2ECOND_CACHE=str(tmp_path / "cache"))
    info = json.loads(_sh([str(venv / "bin" / "e2econd"), "info", "--json"], run, env))
    assert info["backend"]["source"] == "prebuilt at install" and info["backend"]["extension_loaded"]
    where = _sh([str(py), "-c", "import e2econd, e2econd.ops; print(e2econd.__file__)"], run, env)
    assert where.strip().startswith(site), where
    assert (Path(site) / "e2econd" / "_csrc" / "e2econd.cpp").exists()
    import torch

    stamp = json.loads((Path(site) / "e2econd" / B.TORCH_STAMP).read_text())
    assert stamp == B.torch_identity(torch), stamp
    out = _sh([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(run), "t"], run, env)
    assert " passed" in out and "failed" not in out, out[-2000:]


@pytest.mark.slow
@pytest.mark.install
def test_plain_pip_install_next_to_another_torch_compiles_on_first_use(tmp_path):
    """Acceptance of issue 15: a fresh venv holding only torch==2.13.0 (CPU); plain, isolated
    `pip install .` succeeds and `e2econd info` reports the C++ kernels, JIT-compiled for that torch."""
    spec = os.environ.get("E2ECOND_TEST_TORCH", "torch==2.13.0")
    src = _copy_tree(tmp_path / "src")
    venv = tmp_path / "v"
    env = _clean_env(E2ECOND_CACHE=str(tmp_path / "cache"))
    _sh([sys.executable, "-m", "venv", str(venv)], tmp_path)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    _sh([*pip, "install", "-q", "--prefer-binary", spec], tmp_path, env)
    _sh([*pip, "install", "-q", "--prefer-binary", str(src)], tmp_path, env)  # no --no-build-isolation
    out = _sh([str(venv / "bin" / "e2econd"), "info"], tmp_path, env, stderr=True)
    assert "e2econd: compiling C++ kernels for torch" in out and "(first use, ~" in out, out
    data = json.loads(_sh([str(venv / "bin" / "e2econd"), "info", "--json"], tmp_path, env))
    b = data["backend"]
    assert b["extension_loaded"] and b["source"].startswith("JIT-compiled (" + str(tmp_path / "cache")), b
    assert "load_error" not in b, b  # a wheel without _C is the normal case, not an error
    assert {"diffusion_step", "packed_attention_fwd", "packed_attention_bwd"} <= set(b["cpu_kernels"])
    if "==" in spec:
        assert data["torch"].split("+")[0] == spec.split("==")[1], data["torch"]
