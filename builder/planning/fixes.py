"""What fixes a refused plan, in the words a user types: the toolchain command that installs a
missing CUDA, and the torch that pairs with a CUDA this environment's torch cannot build with.
The facts come from compat (torch builds per CUDA) and provision (what builder can install)."""

from __future__ import annotations

from builder.planning import compat
from builder.planning.provision import can_provision

LOOKED = "looked in CUDA_HOME, CUDA_PATH, /usr/local/cuda*, nvcc on PATH and /usr"


def install_toolkit_hint(cuda: str) -> str:
    """How to get CUDA `cuda` ("X.Y", or "X": any X.y) onto this machine."""
    if can_provision(cuda):
        return f"`builder toolchain install {cuda}` installs it into the cache (or add --provision to this command)"
    named = cuda if "." in cuda else f"{cuda}.x"
    return (f"{LOOKED}; install CUDA {named} under /usr/local/cuda-{cuda} and/or set CUDA_HOME to its root "
            "(`builder toolchain install` provides 13.x and, on Debian bookworm, 11.8)")


def torch_pairing(cuda: str, torch: str | None, torch_cuda: str, *, this_environment: bool) -> str | None:
    """Why the target's torch cannot build with CUDA `cuda` and which torch can, or None when
    their majors match."""
    if cuda.split(".")[0] == torch_cuda.split(".")[0]:
        return None
    whose = "this environment's torch" if this_environment else "torch"
    named = f"{torch}" if torch and "+cu" in torch else f"{torch} (CUDA {torch_cuda})"
    return f"{whose} {named} cannot build with CUDA {cuda}; use {torch_fix(cuda)}"


def torch_fix(cuda: str) -> str:
    """The --torch (and --torch-index) options that get a torch built for CUDA `cuda`."""
    return compat.torch_for_cuda(cuda) or (
        f"--torch with a torch built for CUDA {cuda.split('.')[0]} (and --torch-index for its index)")


def missing_toolkit_hint(cuda: str, torch: str | None, torch_cuda: str, *, this_environment: bool) -> str:
    """The hint of "no CUDA X.Y toolkit found": how to install it, then the torch to pair with it."""
    pairing = torch_pairing(cuda, torch, torch_cuda, this_environment=this_environment)
    return install_toolkit_hint(cuda) + (f"; and {pairing}" if pairing else "")
