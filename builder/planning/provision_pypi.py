"""CUDA 13.x as a CUDA_HOME made from NVIDIA's PyPI wheels, under cache/toolchains/<version>/.

The cu13 wheels all install into nvidia/cu13/{bin,include,lib,nvvm}, and their nvcc.profile finds
cicc (nvvm/bin), libdevice and the headers relative to nvcc itself (TOP = bin/..), so the tree that
`pip install --target` leaves is one nvcc can use as it is; it is moved whole to dest/<version>.
Two kinds of link make it a CUDA_HOME for torch and CMake too: lib64 -> lib (nvcc.profile passes
-L lib64, torch looks there) and libX.so -> libX.so.N (for -lcudart, -lcublas).

Component versions do not follow the CUDA version (CUDA 13.0 ships cusparse 12.6.3, cublas 13.1.1;
CUDA 13.5 ships cccl 13.3.5.0.6), so each package is pinned to what NVIDIA's `cuda-toolkit`
metapackage of that release names under its `all` extra. Read from cuda-toolkit 13.0.0-13.5.0 and
the wheels of nvidia-cuda-nvcc, -runtime, -cccl, -crt and nvidia-nvvm 13.0.88.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import distributions
from pathlib import Path

from filelock import FileLock
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from builder.errors import BuildError, ToolchainError
from builder.planning.toolchain import probe_toolkit
from builder.process import call

PYPI_PACKAGES: dict[str, tuple[str, ...]] = {
    "core": ("nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cuda-cccl", "nvidia-cuda-crt", "nvidia-nvvm"),
    "cublas": ("nvidia-cublas", "nvidia-cuda-nvrtc"),  # cuda-toolkit's cublas extra adds nvrtc
    "cusparse": ("nvidia-cusparse", "nvidia-nvjitlink"),  # libcusparse.so needs libnvJitLink.so
}
METAPACKAGE = "cuda-toolkit"
_COMPLETE = ".builder-toolchain-complete"
_VERSION_RE = re.compile(r"\d+\.\d+(\.\d+)*")


def provisioned_roots(toolchains_dir: Path) -> list[Path]:
    """Roots under toolchains_dir that hold a complete provisioned toolkit."""
    if not toolchains_dir.is_dir():
        return []
    return sorted(p for p in toolchains_dir.iterdir() if (p / _COMPLETE).is_file())


def _pip(python: Path, target: Path, requirements: list[str], log_path: Path, what: str) -> None:
    call([python, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--target", target, *requirements],
         log_path=log_path, what=what)


def _pins(metadata_dir: Path, names: list[str]) -> list[str]:
    """`name<specifier>` for each of `names`, as the installed cuda-toolkit metapackage pins it."""
    pins: dict[str, str] = {}
    for dist in distributions(path=[str(metadata_dir)]):
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": "all"}):
                pins[canonicalize_name(req.name)] = f"{req.name}{req.specifier}"
    missing = [name for name in names if canonicalize_name(name) not in pins]
    if missing:
        raise ToolchainError(f"{METAPACKAGE} does not name {', '.join(missing)}", hint=f"see {metadata_dir}")
    return [pins[canonicalize_name(name)] for name in names]


def _link_as_cuda_home(root: Path) -> None:
    lib = root / "lib"
    if not (root / "lib64").exists():
        (root / "lib64").symlink_to("lib")
    for versioned in lib.glob("lib*.so.*"):
        plain = lib / (versioned.name.split(".so.")[0] + ".so")
        if not plain.exists():
            plain.symlink_to(versioned.name)


def provision_from_pypi(version: str, dest: Path, *, log_path: Path, python: Path | None = None,
                        components: Sequence[str] = ("core",)) -> Path:
    """A CUDA_HOME for CUDA `version` ("13.0") at dest/<version>/, made once, atomically.

    Staged in dest/.tmp-<version>-*, renamed into place only once its nvcc answers; a failure
    leaves nothing at dest/<version>. A second call finds the marker and installs nothing.
    """
    major = version.split(".")[0]
    if major != "13" or not _VERSION_RE.fullmatch(version):
        raise ToolchainError(
            f"PyPI has no complete CUDA {version}: only the CUDA 13 wheels hold an nvcc that compiles; "
            "the nvidia-cuda-nvcc-cu11/-cu12 wheels hold only ptxas (no nvcc, cicc or cudafe++) and cannot compile",
            hint=f"use Debian's nvidia-cuda-toolkit for 11.8 (`builder toolchain install 11.8`), NVIDIA's runfile "
                 f"installer (--toolkit --installpath=/usr/local/cuda-{version}), or a conda env with cuda-nvcc")
    final = dest / version
    if (final / _COMPLETE).is_file():
        return final
    unknown = [c for c in components if c not in PYPI_PACKAGES]
    if unknown:
        raise ToolchainError(f"unknown toolkit component(s) {', '.join(unknown)}; known: {', '.join(PYPI_PACKAGES)}")
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(dest / f".{version}.lock"):
        if (final / _COMPLETE).is_file():  # made by another process while we waited
            return final
        for stale in dest.glob(f".tmp-{version}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=dest))
        try:
            _install(version, staging, log_path, Path(python or sys.executable), components)
            shutil.rmtree(final, ignore_errors=True)  # an incomplete tree left by hand
            os.rename(staging / "root", final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _install(version: str, staging: Path, log_path: Path, python: Path, components: Sequence[str]) -> None:
    """Install the wheels into staging/site and make staging/root a checked CUDA_HOME."""
    names = list(dict.fromkeys(name for c in components for name in PYPI_PACKAGES[c]))
    try:
        _pip(python, staging / "meta", [f"{METAPACKAGE}=={version}.*"], log_path, f"pip install of {METAPACKAGE}")
        packages = _pins(staging / "meta", names)
        _pip(python, staging / "site", packages, log_path, f"pip install of CUDA {version}")
    except BuildError as exc:
        raise ToolchainError(f"could not install CUDA {version} from PyPI: "
                             f"{exc.cause or exc.first_error or exc.message}",
                             hint=f"{exc.hint}; see {log_path}" if exc.hint else f"see {log_path}") from exc
    tree, root = staging / "site" / "nvidia" / "cu13", staging / "root"
    if not (tree / "bin" / "nvcc").is_file():
        raise ToolchainError(f"the CUDA {version} wheels hold no nvidia/cu13/bin/nvcc", hint=f"see {log_path}")
    os.rename(tree, root)
    _link_as_cuda_home(root)
    toolkit = probe_toolkit(root)
    if toolkit is None or toolkit.short != ".".join(version.split(".")[:2]):
        found = toolkit.version if toolkit else "no answer from nvcc --version"
        raise ToolchainError(f"the nvcc installed for CUDA {version} is not usable ({found})", hint=f"see {log_path}")
    (root / _COMPLETE).write_text("\n".join(packages) + "\n")
