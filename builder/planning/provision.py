"""`builder toolchain install <cuda>`: get a CUDA toolkit onto this machine.

CUDA 13.x comes from NVIDIA's PyPI wheels, laid out under cache/toolchains/<version>/ as a
CUDA_HOME (provision_pypi). CUDA 11.8 comes from Debian bookworm's nvidia-cuda-toolkit in the
non-free component, with the g++ that nvcc accepts, where apt is available and we are root.
PyPI's -cu11/-cu12 nvcc wheels hold only ptxas and cannot compile, so other versions are
explained, not attempted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.errors import BuildError, ToolchainError, UsageError
from builder.planning import compat
from builder.planning.provision_pypi import provision_from_pypi
from builder.planning.toolchain import parse_cuda
from builder.process import call

# The CUDA version of nvidia-cuda-toolkit per Debian release (apt-cache policy on bookworm:
# 11.8.89~11.8.0-5~deb12u1, in non-free).
DEBIAN_CUDA = {"bookworm": "11.8"}

NON_FREE_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: {codename} {codename}-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
SOURCES_FILE = Path("/etc/apt/sources.list.d/builder-non-free.sources")


def os_release() -> dict[str, str]:
    path = Path("/etc/os-release")
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in pairs}


def debian_codename() -> str | None:
    info = os_release()
    return info.get("VERSION_CODENAME") if info.get("ID") == "debian" else None


def provision_debian(version: str, log_path: Path) -> Path:
    """apt-get install nvidia-cuda-toolkit and a g++ its nvcc accepts; the toolkit's root is /usr."""
    codename = debian_codename()
    if codename is None or DEBIAN_CUDA.get(codename) != version:
        offered = ", ".join(f"{cuda} on Debian {name}" for name, cuda in DEBIAN_CUDA.items())
        raise ToolchainError(f"Debian's nvidia-cuda-toolkit gives {offered}; this machine is "
                             f"{os_release().get('PRETTY_NAME', 'not Debian')}",
                             hint=f"install CUDA {version} with NVIDIA's installer under /usr/local/cuda-{version}")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise ToolchainError("installing CUDA from Debian's archive needs apt-get and root",
                             hint=f"run as root: builder toolchain install {version}")
    gcc = compat.newest_gcc(tuple(int(p) for p in version.split(".")[:2]))  # type: ignore[arg-type]
    SOURCES_FILE.write_text(NON_FREE_SOURCES.format(codename=codename))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        call(["apt-get", "update", "-qq"], log_path=log_path, env=env, what="apt-get update")
        call(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nvidia-cuda-toolkit", f"g++-{gcc}"],
             log_path=log_path, env=env, what="apt-get install nvidia-cuda-toolkit")
    except BuildError as exc:
        raise ToolchainError(f"{exc.message}: {exc.first_error or 'see the log'}",
                             hint=f"{exc.hint}; log: {log_path}" if exc.hint else f"log: {log_path}") from exc
    return Path("/usr")


def can_provision(version: str) -> bool:
    """Whether `builder toolchain install VERSION` knows a way to get this CUDA X.Y."""
    parts = version.split(".")
    return len(parts) >= 2 and parts[0].isdigit() and (int(parts[0]) >= 13 or version in DEBIAN_CUDA.values())


def install_toolchain(version: str, toolchains_dir: Path, log_path: Path) -> Path:
    """Provision CUDA `version` (major.minor) and return its root; a malformed one is a usage error."""
    try:
        wanted = parse_cuda(version)
    except UsageError:
        wanted = ""
    if "." not in wanted:
        raise UsageError(f"malformed CUDA version {version!r} to install: a toolkit is installed by its X.Y release",
                         hint="e.g. `builder toolchain install 13.0` (from PyPI's NVIDIA wheels) or 11.8 "
                              "(from Debian's archive)")
    version = wanted
    major = int(version.split(".")[0])
    if major >= 13:
        return provision_from_pypi(version, toolchains_dir, log_path=log_path)
    if version in DEBIAN_CUDA.values():
        return provision_debian(version, log_path)
    raise ToolchainError(
        f"builder cannot provision CUDA {version}: PyPI's nvidia-cuda-nvcc-cu{major} wheels hold only "
        "ptxas and cannot compile, and Debian packages only "
        + ", ".join(sorted(set(DEBIAN_CUDA.values()))),
        hint=f"install CUDA {version} with NVIDIA's runfile under /usr/local/cuda-{version}, "
             "or use --cuda 13.0 / 11.8")
