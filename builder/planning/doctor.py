"""`builder doctor`: what this machine can build, and each mismatch with the command that fixes it.

It gathers the driver and GPUs, every toolkit (with the archs it targets and the host compiler
it would use), the host compilers, and the target interpreter's torch; then states verdicts.
It only reads: nothing is installed or changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from builder.errors import ToolchainError
from builder.planning import compat
from builder.planning.driver import DriverInfo, driver_info
from builder.planning.target import TargetInfo, probe_interpreter
from builder.planning.toolchain import HostCompiler, Toolkit, host_compilers, select_host_compiler


@dataclass(frozen=True)
class Verdict:
    level: str
    """"ok", "warn" or "error"."""
    text: str
    fix: str | None = None


@dataclass(frozen=True)
class Report:
    driver: DriverInfo
    toolkits: tuple[Toolkit, ...]
    compilers: tuple[HostCompiler, ...]
    target: TargetInfo
    verdicts: tuple[Verdict, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "driver": asdict(self.driver),
            "toolkits": [{"version": t.version, "root": str(t.root), "nvcc": str(t.nvcc), "archs": list(t.archs)}
                         for t in self.toolkits],
            "host_compilers": [asdict(c) for c in self.compilers],
            "torch": {"python": str(self.target.python_exe), "version": self.target.torch,
                      "cuda": self.target.torch_cuda, "cxx11_abi": self.target.cxx11_abi,
                      "cuda_available": self.target.cuda_available, "error": self.target.torch_error},
            "verdicts": [asdict(v) for v in self.verdicts],
        }


def _newer(cuda: str, than: str) -> bool:
    return Version(cuda).release[:2] > Version(than).release[:2]


def toolkit_verdicts(toolkit: Toolkit, compilers: list[HostCompiler], driver: DriverInfo) -> list[Verdict]:
    found = []
    try:
        host = select_host_compiler(toolkit, compilers)
        found.append(Verdict("ok", f"CUDA {toolkit.short} at {toolkit.root} can build for "
                                   f"{', '.join(toolkit.archs)} with g++ {host.major} ({host.cxx})"))
    except ToolchainError as exc:
        found.append(Verdict("error", f"CUDA {toolkit.short} at {toolkit.root}: {exc.message}", exc.hint))
    if driver.running and driver.cuda and _newer(toolkit.short, driver.cuda):
        need = compat.MIN_DRIVER_FOR_CUDA_MAJOR.get(toolkit.major_minor[0], "a newer one")
        found.append(Verdict(
            "warn", f"CUDA {toolkit.short} is newer than the driver's CUDA {driver.cuda} (driver "
                    f"{driver.version or driver.library}): it builds, but what it builds will not run here",
            f"update the NVIDIA driver to {need} or newer, or build with --cuda {driver.cuda}"))
    return found


def torch_verdicts(target: TargetInfo, toolkits: list[Toolkit], driver: DriverInfo) -> list[Verdict]:
    if target.torch is None:
        return [Verdict("error", f"{target.python_exe} has no torch ({target.torch_error})",
                        "pip install torch, or name an interpreter that has it with --python PATH, or build "
                        "with --torch VERSION (a venv builder makes)")]
    if target.torch_cuda is None:
        return [Verdict("error", f"torch {target.torch} is a CPU-only build: CUDA extensions cannot build against it",
                        "install a CUDA build of torch, or name an interpreter that has one with --python PATH, "
                        "or build with --torch VERSION")]
    major = target.torch_cuda.split(".")[0]
    usable = [t.short for t in toolkits if str(t.major_minor[0]) == major]
    found = []
    if usable:
        found.append(Verdict("ok", f"torch {target.torch} (CUDA {target.torch_cuda}) builds with --cuda "
                                   f"{' or --cuda '.join(usable)}"))
    else:
        found.append(Verdict("error", f"torch {target.torch} is built with CUDA {target.torch_cuda} but no "
                                      f"CUDA {major}.x toolkit was found",
                             f"builder toolchain install {target.torch_cuda}"))
    if driver.running and driver.cuda and _newer(target.torch_cuda, driver.cuda):
        found.append(Verdict("warn", f"torch's CUDA {target.torch_cuda} is newer than the driver's CUDA "
                                     f"{driver.cuda}: torch.cuda will not work here",
                             "update the NVIDIA driver, or use a torch built for an older CUDA"))
    return found


def machine_verdicts(driver: DriverInfo, target: TargetInfo) -> list[Verdict]:
    if driver.gpus:
        caps = ", ".join(sorted({g.capability for g in driver.gpus}))
        return [Verdict("ok", f"GPUs visible: {', '.join(g.name for g in driver.gpus)} (sm_{caps}); "
                              "builds default to these archs")]
    return [Verdict("warn", f"{driver.summary()}: builds need --arch, GPU checks are skipped",
                    "pass the architecture to build for, e.g. --arch 86")]


def diagnose(python: Path | None, *, environ: Mapping[str, str], toolkits: list[Toolkit]) -> Report:
    """The machine as it is for a build into `python`: `toolkits` found (the workspace's), the host
    compilers on `environ`'s PATH, the driver and the target's torch."""
    driver = driver_info()
    compilers = host_compilers(environ)
    target = probe_interpreter(python)
    verdicts = machine_verdicts(driver, target) + torch_verdicts(target, toolkits, driver)
    for toolkit in toolkits:
        verdicts += toolkit_verdicts(toolkit, compilers, driver)
    if not toolkits:
        verdicts.append(Verdict("error", "no CUDA toolkit found (looked in CUDA_HOME, /usr/local/cuda*, "
                                         "nvcc on PATH, /usr)", "builder toolchain install 13.0"))
    return Report(driver, tuple(toolkits), tuple(compilers), target, tuple(verdicts))
