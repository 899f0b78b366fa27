"""Facts about toolchains, in one place, each table with the source it was read from.

Where the toolkit at hand can answer (nvcc --version, nvcc --list-gpu-arch) builder asks it;
these tables are the fallback and the basis for refusing a plan before anything compiles.
"""

from __future__ import annotations

from packaging.version import Version

# Newest host gcc major each nvcc accepts: the `#if __GNUC__ > N` check in
# include/crt/host_config.h of NVIDIA's nvcc wheels and of the local 13.0 toolkit; the 11.0-11.6
# rows from Spack's build_systems/cuda.py conflicts. Keyed by (major, minor) of the first release
# with that limit; a toolkit takes the row of the newest key not above it.
NEWEST_GCC_FOR_CUDA: dict[tuple[int, int], int] = {
    (11, 0): 9,
    (11, 1): 10,
    (11, 5): 11,
    (12, 0): 12,
    (12, 4): 13,
    (12, 8): 14,
    (13, 0): 15,
}

# Real architectures each toolkit can target, for when `nvcc --list-gpu-arch` is unavailable:
# `ptxas --help` of each nvidia-cuda-nvcc wheel, `nvcc --list-gpu-arch` of 13.0.
_ARCHS_11_7 = ("35", "37", "50", "52", "53", "60", "61", "62", "70", "72", "75", "80", "86", "87")
_ARCHS_11_8 = _ARCHS_11_7 + ("89", "90")
_ARCHS_12_0 = tuple(a for a in _ARCHS_11_8 if a not in ("35", "37")) + ("90a",)
_ARCHS_12_8 = _ARCHS_12_0 + ("100", "100a", "101", "101a", "120", "120a")
_ARCHS_12_9 = _ARCHS_12_8 + ("103", "103a", "121", "121a")
_ARCHS_13_0 = ("75", "80", "86", "87", "88", "89", "90", "90a", "100", "100a", "103", "103a",
               "110", "110a", "120", "120a", "121", "121a")
ARCHS_FOR_CUDA: dict[tuple[int, int], tuple[str, ...]] = {
    (11, 7): _ARCHS_11_7,
    (11, 8): _ARCHS_11_8,
    (12, 0): _ARCHS_12_0,
    (12, 8): _ARCHS_12_8,
    (12, 9): _ARCHS_12_9,
    (13, 0): _ARCHS_13_0,
}

# C++ standard torch's headers need: torch/csrc/api/include/torch/all.h says "C++14 or later" in v2.0.1
# (whose cpp_extension.py passes -std=c++17), "C++17 or later" from v2.1.0 (pytorch/pytorch#100557) to
# v2.13.0, "C++20 or later" in v2.14.1 (pytorch/pytorch#178150; c10/util/intrusive_ptr.h uses std::strong_ordering)
# and in v2.14.0 and v2.15.0 (all.h of their cp311 manylinux_2_28_x86_64 wheels on PyPI, read with HTTP
# range requests, 2026-12-03; v2.12.0, v2.12.1 and v2.13.0 there say C++17).
def cxx_standard_for_torch(torch_version: str) -> str:
    """The -std value a package must pass to compile against this torch's headers."""
    return "c++20" if Version(torch_version).release[:2] >= (2, 14) else "c++17"


# CUDA build of torch on PyPI per release (up to 2.11 checked with `pip install --dry-run
# --report`); other CUDA builds live on PyTorch's own per-CUDA indexes. 2.12-2.15: the CUDA runtime
# the release's wheel requires, read from the METADATA of its cp311 manylinux_2_28_x86_64 wheel on
# PyPI (fetched with HTTP range requests, 2026-12-03): `Requires-Dist: cuda-toolkit[cudart,...]==`
# 13.0.2 in 2.12.0 and 2.12.1, 13.0.3 in 2.13.0, 2.14.0 and 2.14.1, 13.2.2 in 2.15.0 (with
# nvidia-cudnn-cu13 and nvidia-nccl-cu13 beside it).
PYPI_TORCH_CUDA: dict[tuple[int, int], str] = {
    (2, 0): "11.7",
    (2, 1): "12.1", (2, 2): "12.1", (2, 3): "12.1", (2, 4): "12.1",
    (2, 5): "12.4", (2, 6): "12.4",
    (2, 7): "12.6",
    (2, 8): "12.8", (2, 9): "12.8", (2, 10): "12.8",
    (2, 11): "13.0", (2, 12): "13.0", (2, 13): "13.0", (2, 14): "13.0",
    (2, 15): "13.2",
}


# Oldest driver branch that runs any toolkit of a CUDA major through minor-version compatibility:
# NVIDIA's CUDA release notes ("CUDA 11.x >= 450.80.02", "CUDA 12.x >= 525.60.13") and NVIDIA's
# data-center "Supported Drivers and CUDA Toolkit Versions" (R580: CUDA 13.0+). The driver's own
# answer (nvidia-smi's "CUDA Version", cuDriverGetVersion) is asked first; this is the fallback.
MIN_DRIVER_FOR_CUDA_MAJOR: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580"}


# CUDA builds of torch on PyTorch's own per-CUDA indexes (download.pytorch.org/whl/cuXYZ) that
# PyPI lacks, as (first, last) torch minor releases: cu118 for 2.0-2.7 (pytorch/pytorch RELEASE.md@v2.11.0,
# "Release Compatibility Matrix": CUDA 11.8 experimental in 2.0, stable in 2.1-2.7, absent from 2.8 on).
PYTORCH_INDEX_BUILDS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {"11.8": ((2, 0), (2, 7))}
PYTORCH_INDEX_URL = "https://download.pytorch.org/whl/{tag}"


# The last release of each torch minor on PyPI (the versions of pypi.org/simple/torch/, read
# 2026-12): the exact release a suggestion of `--torch` names.
TORCH_LAST_PATCH: dict[tuple[int, int], str] = {
    (2, 0): "2.0.1", (2, 1): "2.1.2", (2, 2): "2.2.2", (2, 3): "2.3.1", (2, 4): "2.4.1", (2, 5): "2.5.1",
    (2, 6): "2.6.0", (2, 7): "2.7.1", (2, 8): "2.8.0", (2, 9): "2.9.1", (2, 10): "2.10.0", (2, 11): "2.11.0",
    (2, 12): "2.12.1", (2, 13): "2.13.0", (2, 14): "2.14.1", (2, 15): "2.15.0",
}


def torch_for_cuda(cuda: str) -> str | None:
    """The torch to pair with CUDA `cuda` ("11.8", or a major "12"), as the options that get it:
    the newest PyPI release built for that major, then the other builds there are; None when the
    tables know none."""
    major = cuda.split(".")[0]
    pypi = sorted(minor for minor, built in PYPI_TORCH_CUDA.items() if built.split(".")[0] == major)
    span = PYTORCH_INDEX_BUILDS.get(cuda)
    if not pypi and span is None:
        return None
    if pypi:
        chosen = f"--torch {TORCH_LAST_PATCH[pypi[-1]]}"
    else:
        assert span is not None
        chosen = f"--torch {TORCH_LAST_PATCH[span[1]]} --torch-index {PYTORCH_INDEX_URL.format(tag=cuda_tag(cuda))}"
    others = ([f"{_minor(span[0])}-{_minor(span[1])} from PyTorch's {cuda_tag(cuda)} index"] if span
              else [f"{_minor(pypi[0])}-{_minor(pypi[-1])} from PyPI"] if len(pypi) > 1 else [])
    return chosen + (f" (or another cu{major}x torch: {', '.join(others)})" if others else "")


def _minor(release: tuple[int, int]) -> str:
    return "{}.{}".format(*release)


def pypi_torch_cuda(torch: str) -> str | None:
    """CUDA version of the build PyPI carries for this torch release, or None when unknown."""
    release = Version(torch).release
    return PYPI_TORCH_CUDA.get((release[0], release[1]))


def pypi_torch_cxx11_abi(torch: str) -> bool:
    """PyPI's torch wheels are pre-cxx11 ABI up to 2.6 (manylinux1) and cxx11 ABI from 2.7
    (manylinux_2_28): https://github.com/pytorch/pytorch/issues/123649; the wheels' tags on
    https://pypi.org/simple/torch/ and share/cmake/Torch/TorchConfig.cmake in them (2.6.0: ABI=0, 2.7.0: =1)."""
    return Version(torch).release[:2] >= (2, 7)


def _row_for(table: dict[tuple[int, int], object], cuda: tuple[int, int]) -> object | None:
    keys = [key for key in sorted(table) if key <= cuda and key[0] == cuda[0]]
    return table[keys[-1]] if keys else None


def newest_gcc(cuda: tuple[int, int]) -> int | None:
    """Newest gcc major nvcc of this CUDA version accepts, or None when unknown."""
    keys = [key for key in sorted(NEWEST_GCC_FOR_CUDA) if key <= cuda]
    return NEWEST_GCC_FOR_CUDA[keys[-1]] if keys else None


def known_archs(cuda: tuple[int, int]) -> tuple[str, ...] | None:
    """Real archs this CUDA version can target according to the table, or None when unknown."""
    row = _row_for(ARCHS_FOR_CUDA, cuda)  # type: ignore[arg-type]
    return row if isinstance(row, tuple) else None


def cuda_tag(cuda: str) -> str:
    """"13.0" -> "cu130", "11.8" -> "cu118" (the naming of torch's indexes and local versions)."""
    major, minor = cuda.split(".")[:2]
    return f"cu{major}{minor}"



# gcc -ffile-prefix-map (maps a path prefix in __FILE__ and debug info): new in gcc 8 (gcc 8
# release notes). builder/building/reproducible.py passes it from that release on.
GCC_FILE_PREFIX_MAP_SINCE = 8
