"""The NVIDIA driver and GPUs as the machine reports them, told apart from a driver library alone.

nvidia-smi answers when the kernel driver runs; its "CUDA Version" is the newest CUDA the driver
supports, not an installed toolkit. Without it, libcuda.so.1 may still be present (Debian's
nvidia-cuda-toolkit installs libcuda1 with no kernel module): cuDriverGetVersion then tells which
CUDA that library speaks, and no GPU is usable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from dataclasses import dataclass, field

from builder.process import capture


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    capability: str
    """Compute capability digits, e.g. "86"."""


@dataclass(frozen=True)
class DriverInfo:
    running: bool
    """nvidia-smi answered: a kernel driver is loaded."""
    version: str | None
    cuda: str | None
    """Newest CUDA the driver supports ("12.2"), from nvidia-smi or cuDriverGetVersion."""
    library: str | None
    """libcuda found by the loader, with or without a running driver."""
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        if self.running:
            return f"driver {self.version} (supports CUDA up to {self.cuda}), {len(self.gpus)} GPU(s)"
        if self.library:
            return (f"no running NVIDIA driver; the driver library {self.library} is present "
                    f"(speaks CUDA {self.cuda or '?'}) but no GPU can be used")
        return "no NVIDIA driver and no GPU"


def _library_cuda_version(name: str) -> str | None:
    """cuDriverGetVersion from libcuda itself; it answers without a GPU."""
    try:
        lib = ctypes.CDLL(name)
        value = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(value)) != 0 or value.value <= 0:
            return None
    except OSError:
        return None
    return f"{value.value // 1000}.{value.value % 1000 // 10}"


def list_gpus() -> tuple[Gpu, ...]:
    """The GPUs nvidia-smi lists (none when it is absent or finds no driver)."""
    result = capture(["nvidia-smi", "--query-gpu=index,name,compute_cap", "--format=csv,noheader"], timeout=30)
    gpus = []
    for line in result.stdout.splitlines() if result.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append(Gpu(int(parts[0]), parts[1], parts[2].replace(".", "")))
    return tuple(gpus)


def driver_info() -> DriverInfo:
    library = ctypes.util.find_library("cuda")
    smi = capture(["nvidia-smi"], timeout=30)
    if smi.returncode == 0:
        version = re.search(r"Driver Version:\s*([\d.]+)", smi.stdout)
        cuda = re.search(r"CUDA Version:\s*([\d.]+)", smi.stdout)
        return DriverInfo(True, version[1] if version else None, cuda[1] if cuda else None, library, list_gpus())
    cuda_version = _library_cuda_version(library) if library else None
    return DriverInfo(False, None, cuda_version, library)
