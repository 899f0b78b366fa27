"""CUDA's math libraries (cuBLAS, cuBLASLt, cuSPARSE) for builds that link them directly
(bitsandbytes' Makefile and CMake project), taken from torch's nvidia wheels when the toolkit
has none; and their headers for torch extensions, which include them through torch's own
ATen/cuda/CUDAContext.h (flash-attn, autoawq-kernels).

A toolkit made of the compiler alone is common (the CPU machines' /usr/local/cuda holds nvcc,
cudart and CCCL: `ls /usr/local/cuda/lib64 /usr/local/cuda/include | grep -ci -E 'cublas|cusparse'`
prints 0 there), while the torch the build targets always brings these libraries
as wheels: `nvidia/cu13/{include,lib}` for CUDA 13 torch, `nvidia/<name>/{include,lib}` for
CUDA 12 and older. The wheels ship only versioned names (libcublas.so.13), so builder links
unversioned names to them in a folder of its own; the compilers and CMake are pointed at it
through the environment (LIBRARY_PATH and CPATH for gcc and nvcc, CMAKE_LIBRARY_PATH and
CMAKE_INCLUDE_PATH for FindCUDAToolkit's searches), which changes nothing for a toolkit that
has the libraries.

CUDA 13 also moved thrust, CUB and libcu++ to include/cccl: nvcc adds that folder itself, a host
compiler compiling a .cpp that includes thrust (bitsandbytes 0.41's ops.cuh) does not, so it
goes on CPATH too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder.errors import ToolchainError
from builder.planning.toolchain import Toolkit
from builder.process import capture

LIBRARIES = ("cublas", "cublasLt", "cusparse")
# What torch's ATen/cuda/CUDAContextLight.h includes beyond the runtime (torch 2.14.1: cusparse.h,
# cublas_v2.h, cublasLt.h, and cusolverDn.h where CUDART_VERSION is defined).
TORCH_HEADERS = ("cusparse.h", "cublas_v2.h", "cublasLt.h", "cusolverDn.h")

_NVIDIA_DIRS = """
import json
try:
    import nvidia
    print(json.dumps([str(p) for p in nvidia.__path__]))
except ImportError:
    print("[]")
"""


def toolkit_has(toolkit: Toolkit, name: str) -> bool:
    lib_dirs = (toolkit.root / "lib64", toolkit.root / "lib", toolkit.root / "targets" / "x86_64-linux" / "lib")
    return any((d / f"lib{name}.so").exists() for d in lib_dirs)


def nvidia_wheel_dirs(python: Path) -> list[Path]:
    """The folders of the `nvidia` namespace package in `python` (torch's CUDA wheels)."""
    result = capture([python, "-c", _NVIDIA_DIRS])
    return [Path(p) for p in json.loads(result.stdout or "[]")] if result.returncode == 0 else []


def find_in_wheels(roots: Sequence[Path], name: str) -> Path | None:
    """lib<name>.so.N in a wheel's lib folder (cu13/lib or <name>/lib), the newest major first."""
    found = sorted((p for root in roots for p in root.glob(f"*/lib/lib{name}.so.*")
                    if p.name.split(".so.")[1].isdigit()), key=lambda p: int(p.name.split(".so.")[1]), reverse=True)
    return found[0] if found else None


def _prepend(paths: Sequence[str], variable: str, base: Mapping[str, str]) -> str:
    return os.pathsep.join([*paths, *([base[variable]] if base.get(variable) else [])])


def header_env(toolkit: Toolkit, python: Path, base: Mapping[str, str]) -> dict[str, str]:
    """For a torch extension on a toolkit without the math libraries' headers (a compiler-only
    toolkit: the CPU machines' /usr/local/cuda, NVIDIA's nvcc wheels): the include folders of
    torch's nvidia wheels that hold them, on CPATH. Compilers search CPATH after every -I, so the
    toolkit's own headers still come first; nothing changes for a toolkit that has them."""
    include_dirs = (toolkit.root / "include", toolkit.root / "targets" / "x86_64-linux" / "include")
    missing = [name for name in TORCH_HEADERS if not any((d / name).is_file() for d in include_dirs)]
    if not missing:
        return {}
    roots = nvidia_wheel_dirs(python)
    folders = list(dict.fromkeys(str(header.parent) for root in roots for name in missing
                                 for header in root.glob(f"*/include/{name}")))
    return {"CPATH": _prepend(folders, "CPATH", base)} if folders else {}


def library_env(toolkit: Toolkit, python: Path, link_dir: Path, base: Mapping[str, str],
                names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Environment additions that let host compilers find CCCL's headers and a build find `names`,
    each folder list put in front of the build environment's own (`base`)."""
    cccl = toolkit.root / "include" / "cccl"
    env = {"CPATH": _prepend([str(cccl)], "CPATH", base)} if cccl.is_dir() else {}
    missing = [name for name in names if not toolkit_has(toolkit, name)]
    if not missing:
        return env
    roots = nvidia_wheel_dirs(python)
    link_dir.mkdir(parents=True, exist_ok=True)
    lib_dirs: list[str] = []
    include_dirs: list[str] = []
    for name in missing:
        library = find_in_wheels(roots, name)
        if library is None:
            raise ToolchainError(f"lib{name}.so is in neither the CUDA {toolkit.short} toolkit at {toolkit.root} "
                                 f"nor torch's nvidia wheels in {python}",
                                 hint="install the toolkit's math libraries (Debian: libcublas-dev, "
                                      "libcusparse-dev) or a torch whose CUDA wheels bring them")
        link = link_dir / f"lib{name}.so"
        link.unlink(missing_ok=True)
        link.symlink_to(library)
        for folder, into in ((library.parent, lib_dirs), (library.parent.parent / "include", include_dirs)):
            if str(folder) not in into and folder.is_dir():
                into.append(str(folder))
    return {
        "LIBRARY_PATH": _prepend([str(link_dir), *lib_dirs], "LIBRARY_PATH", base),
        "LD_LIBRARY_PATH": _prepend(lib_dirs, "LD_LIBRARY_PATH", base),
        "CPATH": _prepend([*include_dirs, *([str(cccl)] if cccl.is_dir() else [])], "CPATH", base),
        "CMAKE_LIBRARY_PATH": _prepend([str(link_dir)], "CMAKE_LIBRARY_PATH", base),
        "CMAKE_INCLUDE_PATH": _prepend(include_dirs, "CMAKE_INCLUDE_PATH", base),
    }

