"""The one source list (csrc/sources.txt) read by setup.py / the first-use compile and by CMakeLists.txt."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from e2econd.ops import _build

CSRC = Path(__file__).resolve().parents[2] / "csrc"


def test_every_translation_unit_is_listed_once():
    # oracle: the files on disk, found independently of sources.txt (C++ tests are ctest's, not the library's)
    on_disk = {
        os.path.relpath(p, CSRC)
        for p in glob.glob(str(CSRC / "**" / "*"), recursive=True)
        if p.endswith((".cpp", ".cu")) and os.sep + "tests" + os.sep not in p
    }
    listed = [os.path.relpath(p, CSRC) for p in _build.sources(str(CSRC), cuda=True)]
    assert len(listed) == len(set(listed))
    assert set(listed) == on_disk
    cpu_only = {os.path.relpath(p, CSRC) for p in _build.sources(str(CSRC), cuda=False)}
    assert cpu_only == {p for p in on_disk if p.endswith(".cpp")}


def test_cmake_reads_the_same_list():
    cmake = (CSRC.parent / "CMakeLists.txt").read_text()
    assert re.search(r"file\(STRINGS \$\{CMAKE_CURRENT_SOURCE_DIR\}/csrc/sources.txt", cmake)
    # no second, hand-written list of library sources beside it
    assert not re.search(r"file\(GLOB[^)]*csrc/(cpu|cuda)/", cmake)


def test_the_list_ships_with_the_sources():
    assert _build.SOURCE_LIST in _build.package_files(str(CSRC))
