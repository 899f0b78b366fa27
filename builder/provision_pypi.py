"""CUDA 13.x as a CUDA_HOME made from NVIDIA's PyPI wheels, under cache/toolchains/<version>/.

The cu13 wheels all install into nvidia/cu13/{bin,include,lib,nvvm}, and their nvcc.profile finds
cicc, libdevice and the headers relative to nvcc itself, so `pip install --target` gives a tree
nvcc can use as it is. Two links make it a CUDA_HOME for torch and CMake too: lib64 -> lib
(nvcc.profile and torch look in lib64) and libcudart.so -> libcudart.so.13 (for -lcudart).
Read from the wheels of nvidia-cuda-nvcc, -runtime, -cccl, -crt and nvidia-nvvm 13.0.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from builder.errors import BuildError, ToolchainError
from builder.run import call

PYPI_PACKAGES: dict[str, tuple[str, ...]] = {
    "core": ("nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cuda-cccl", "nvidia-cuda-crt", "nvidia-nvvm"),
    "cublas": ("nvidia-cublas",),
    "cusparse": ("nvidia-cusparse",),
}
_COMPLETE = ".builder-toolchain-complete"


def provisioned_roots(toolchains_dir: Path) -> list[Path]:
    """Roots under toolchains_dir that hold a complete provisioned toolkit."""
    if not toolchains_dir.is_dir():
        return []
    return sorted(p for p in toolchains_dir.iterdir() if (p / _COMPLETE).is_file())


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
    """A CUDA_HOME for CUDA `version` ("13.0") at dest/<version>/, made once, atomically."""
    major = version.split(".")[0]
    if major != "13":
        raise ToolchainError(
            f"PyPI has no complete CUDA {version}: its nvidia-cuda-nvcc-cu{major} wheels hold only ptxas and "
            "cannot compile", hint=f"install CUDA {version} from Debian (11.8) or NVIDIA's installer")
    final = dest / version
    if (final / _COMPLETE).is_file():
        return final
    unknown = [c for c in components if c not in PYPI_PACKAGES]
    if unknown:
        raise ToolchainError(f"unknown toolkit component(s) {', '.join(unknown)}; known: {', '.join(PYPI_PACKAGES)}")
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=dest))
    try:
        packages = [f"{name}=={version}.*" for c in components for name in PYPI_PACKAGES[c]]
        call([python or sys.executable, "-m", "pip", "install", "--no-deps", "--target", staging / "site", *packages],
             log_path=log_path, what=f"pip install of CUDA {version}")
        tree = staging / "site" / "nvidia" / f"cu{major}"
        os.rename(tree, staging / "root")
        _link_as_cuda_home(staging / "root")
        (staging / "root" / _COMPLETE).write_text(" ".join(packages) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging / "root", final)
    except BuildError as exc:
        raise ToolchainError(f"could not install CUDA {version} from PyPI: {exc.first_error or exc.message}",
                             hint=f"see {log_path}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
