"""Build e2econd and its C++/CUDA extension ``e2econd._C``.

Environment switches:
  E2ECOND_EXT=0        build no extension at all (pure-PyTorch package)
  E2ECOND_CUDA=1|0     force / skip the CUDA kernels (default: build them when torch is a CUDA
                       build and a CUDA toolkit is found, even with no GPU present)
  MAX_JOBS=N           parallel compile jobs (ninja)
  TORCH_CUDA_ARCH_LIST defaults to "8.0;9.0" (A100, H100) when no GPU is visible
  E2ECOND_DEBUG=1      -O0 -g builds
Install with ``pip install --no-build-isolation .`` so the extension is compiled against the
torch that is installed (an isolated build would fetch another torch and produce an ABI mismatch).
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value in (None, "") else value.strip().lower()


def _extensions():
    if _flag("E2ECOND_EXT") in ("0", "false", "no", "off"):
        print("e2econd: E2ECOND_EXT=0, building no extension (pure-PyTorch package)", file=sys.stderr)
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    want_cuda = _flag("E2ECOND_CUDA")
    have_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if want_cuda in ("1", "true", "yes", "on") and not have_cuda:
        raise RuntimeError(
            f"E2ECOND_CUDA=1 but torch.version.cuda={torch.version.cuda!r} and CUDA_HOME={CUDA_HOME!r}: "
            "install a CUDA build of torch and a CUDA toolkit (export CUDA_HOME=/usr/local/cuda)"
        )
    use_cuda = have_cuda and want_cuda not in ("0", "false", "no", "off")

    debug = _flag("E2ECOND_DEBUG") in ("1", "true")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # E2ECOND_PYTHON_MODULE: csrc/e2econd.cpp defines PyInit__C (the CMake build leaves it out).
    cxx = [*opt, "-fopenmp", "-DNDEBUG" if not debug else "-UNDEBUG", "-DE2ECOND_PYTHON_MODULE"]
    sources = [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")))]
    sources += [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))]
    kwargs = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"])
    if use_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "native")
        cuda_version = int(torch.version.cuda.split(".")[0]) * 1000 + int(torch.version.cuda.split(".")[1]) * 10
        defines = ["-DE2ECOND_WITH_CUDA", f"-DE2ECOND_CUDA_VERSION={cuda_version}",
                   f'-DE2ECOND_CUDA_ARCHS="{archs}"']
        sources += [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))]
        ext = CUDAExtension(
            "e2econd._C",
            sources,
            extra_compile_args={
                "cxx": cxx + defines,
                "nvcc": [*opt, "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr", *defines],
            },
            **kwargs,
        )
        print(f"e2econd: building CPU + CUDA kernels (CUDA {torch.version.cuda}, archs {archs})", file=sys.stderr)
    else:
        ext = CppExtension("e2econd._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
        why = "E2ECOND_CUDA=0" if want_cuda in ("0", "false", "no", "off") else (
            "torch is a CPU build" if torch.version.cuda is None else "no CUDA toolkit found (set CUDA_HOME)")
        print(f"e2econd: building CPU kernels only ({why})", file=sys.stderr)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
