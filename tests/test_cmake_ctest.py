"""The CMake build (CMakeLists.txt) of the op library compiles and its C++ unit tests pass under ctest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cmake_build_and_ctest(tmp_path):
    for tool in ("cmake", "ctest", "ninja"):
        assert shutil.which(tool), f"{tool} not found on PATH (needed for the CMake build)"
    prefix = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.utils.cmake_prefix_path)"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    build = tmp_path / "cmk"

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc.stdout

    run("cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", f"-DCMAKE_PREFIX_PATH={prefix}")
    run("cmake", "--build", str(build), "-j2")
    out = run("ctest", "--test-dir", str(build), "--output-on-failure")
    assert "100% tests passed" in out and "out of 3" in out, out  # build_info, philox, diffusion_step
