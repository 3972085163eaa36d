"""The CMake build (CMakeLists.txt) of the op library compiles and its C++ unit tests pass under ctest.

The build directory persists (``build/cmake-ctest``, git-ignored; ``make clean`` removes it): a second
run only recompiles what changed (ninja tracks the sources; CMakeLists.txt and the source globs are
CONFIGURE_DEPENDS, so ninja re-runs cmake itself when they change). It is configured afresh only when
it does not exist or was configured for another torch (a stamp records torch's prefix and version).
``E2ECOND_CMAKE_BUILD`` chooses another directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _torch_identity() -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, torch; print(json.dumps({'prefix': torch.utils.cmake_prefix_path, "
            "'torch': torch.__version__, 'git': torch.version.git_version}))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {**json.loads(out), "source": str(ROOT)}


def prepare_build_dir(build: Path, ident: dict) -> bool:
    """Make ``build`` ready for ``cmake --build``; True when it had to be configured afresh."""
    stamp = build / "e2econd-torch.json"
    if (build / "build.ninja").exists() and stamp.exists() and json.loads(stamp.read_text()) == ident:
        return False
    shutil.rmtree(build, ignore_errors=True)
    _run("cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", f"-DCMAKE_PREFIX_PATH={ident['prefix']}")
    build.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(ident))
    return True


@pytest.mark.slow
def test_cmake_build_and_ctest():
    for tool in ("cmake", "ctest", "ninja"):
        assert shutil.which(tool), f"{tool} not found on PATH (needed for the CMake build)"
    build = Path(os.environ.get("E2ECOND_CMAKE_BUILD") or ROOT / "build" / "cmake-ctest")
    prepare_build_dir(build, _torch_identity())
    _run("cmake", "--build", str(build), "-j2")
    out = _run("ctest", "--test-dir", str(build), "--output-on-failure")
    assert "100% tests passed" in out and "out of 3" in out, out  # build_info, philox, diffusion_step


def test_build_dir_is_reconfigured_only_for_another_torch(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sys.modules[__name__], "_run", lambda *cmd: calls.append(cmd) or "")
    build = tmp_path / "b"
    ident = {"prefix": "/t/a", "torch": "2.13.0", "git": "x", "source": str(ROOT)}
    build.mkdir()
    (build / "build.ninja").write_text("")
    assert prepare_build_dir(build, ident) and len(calls) == 1  # no stamp: configured
    (build / "build.ninja").write_text("")
    assert not prepare_build_dir(build, ident) and len(calls) == 1  # same torch: reused
    assert prepare_build_dir(build, {**ident, "torch": "2.14.1"}) and len(calls) == 2  # another torch
    assert calls[-1][:3] == ("cmake", "-S", str(ROOT))
