"""Build e2econd, with its C++/CUDA extension ``e2econd._C`` when torch is in the build environment.

Two install paths, both from the same sources (``csrc/``, shipped in the package as ``e2econd/_csrc``):
  pip install --no-build-isolation .   torch is importable here: ``e2econd._C`` is compiled now,
                                       against that torch ("prebuilt at install"; Makefile and CI)
  pip install .                        isolated build, no torch here: a pure-Python wheel; the
                                       kernels are compiled on first use against the installed
                                       torch and cached (e2econd/ops/_extension.py, "JIT-compiled")

Environment switches:
  E2ECOND_EXT=0        build no extension at all (the JIT path can still compile it on first use)
  E2ECOND_CUDA=1|0     force / skip the CUDA kernels (default: built when torch is a CUDA build and a
                       CUDA toolkit that can compile and link is found, even with no GPU present)
  MAX_JOBS=N           parallel compile jobs (ninja)
  TORCH_CUDA_ARCH_LIST defaults to "8.0;9.0" (A100, H100) when no GPU is visible
  E2ECOND_DEBUG=1      -O0 -g builds
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("_e2econd_build", os.path.join(ROOT, "e2econd", "ops", "_build.py"))
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)


def say(msg: str) -> None:
    print(f"e2econd: {msg}", file=sys.stderr)


class BuildPyWithSources(build_py):
    """Also copies the kernel sources (csrc/, without its C++ tests) into the package as ``e2econd/_csrc``,
    so an installed wheel can compile them against whatever torch it meets (and CMake users find them)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install compiles from the checkout's csrc/ directly
        src = os.path.join(ROOT, "csrc")
        dst = os.path.join(self.build_lib, "e2econd", "_csrc")
        for rel in B.package_files(src):
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copyfile(os.path.join(src, rel), os.path.join(dst, rel))


def _use_cuda(torch) -> tuple[bool, str]:
    """(build the CUDA kernels?, why / what). Forcing with E2ECOND_CUDA=1 raises if impossible."""
    want = B.flag("E2ECOND_CUDA")
    if want in B.OFF:
        return False, "E2ECOND_CUDA=0"
    home = B.find_cuda_home()
    problem = B.cuda_toolkit_problem(home, torch.version.cuda)
    if problem is None:
        os.environ["CUDA_HOME"] = home  # before torch.utils.cpp_extension guesses its own
        return True, home
    if want in B.ON:
        raise RuntimeError(f"E2ECOND_CUDA=1 but the CUDA kernels cannot be built: {problem}")
    return False, problem


def _extensions():
    if B.flag("E2ECOND_EXT") in B.OFF:
        say("E2ECOND_EXT=0, building no extension (pure-Python package; kernels compiled on first use)")
        return [], {}
    try:
        import torch
    except ImportError:
        say(
            "torch is not importable in the build environment (isolated build), so no extension is built "
            "now: the C++ kernels are compiled on first use against the installed torch and cached "
            "(`e2econd info` shows it). For a build at install time: pip install --no-build-isolation ."
        )
        return [], {}
    use_cuda, why = _use_cuda(torch)
    import torch.utils.cpp_extension as cpp
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    if use_cuda:
        cpp.CUDA_HOME = why  # in case torch guessed its own before the environment was set

    debug = B.flag("E2ECOND_DEBUG") in B.ON
    cxx = B.cxx_flags(debug, python_module=True)
    srcs = [os.path.relpath(p, ROOT) for p in B.sources(os.path.join(ROOT, "csrc"), use_cuda)]
    kwargs = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"])
    if use_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = B.DEFAULT_CUDA_ARCHS
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "native")
        defines = B.cuda_defines(torch.version.cuda, archs)
        ext = CUDAExtension(
            "e2econd._C",
            srcs,
            library_dirs=[B.cudart_dir(why)],
            extra_compile_args={"cxx": cxx + defines, "nvcc": B.nvcc_flags(debug) + defines},
            **kwargs,
        )
        say(
            f"building CPU + CUDA kernels (torch {torch.__version__}, CUDA {torch.version.cuda}, toolkit {why}, "
            f"archs {archs})"
        )
    else:
        ext = CppExtension("e2econd._C", srcs, extra_compile_args={"cxx": cxx}, **kwargs)
        say(f"building CPU kernels only against torch {torch.__version__} ({why})")
    return [ext], {"build_ext": _recording(BuildExtension, torch)}


def _recording(base, torch):
    """``build_ext`` that also writes ``e2econd/_C.torch.json`` (B.TORCH_STAMP) beside the library: the torch
    it was built against, checked before the library is imported (never a silent ABI mismatch)."""

    class BuildExtRecordingTorch(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, use_ninja=True, **kwargs)

        def run(self):
            super().run()  # builds into build_lib, then copies the library into the source tree if inplace
            dirs = {os.path.dirname(self.get_ext_fullpath("e2econd._C")), os.path.join(self.build_lib, "e2econd")}
            for d in dirs:  # beside the library wherever it is (editable: the source tree; wheel: build_lib)
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, B.TORCH_STAMP), "w") as f:
                    json.dump(B.torch_identity(torch), f)

    return BuildExtRecordingTorch


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass={**cmdclass, "build_py": BuildPyWithSources})
