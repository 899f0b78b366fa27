"""The interpreter a build is for: its Python and platform tags, its torch, and the visible GPUs.

Everything is read by running a small probe in that interpreter, so the answer is the target's,
not builder's own (builder may run under another Python than the one it builds for).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import EnvironmentSetupError, UsageError
from builder.planning.driver import list_gpus
from builder.process import capture

_PROBE = r"""
import json, os, platform, sys, sysconfig
from packaging import tags
info = {
    "python": "%d.%d" % sys.version_info[:2],
    "libc": " ".join(platform.libc_ver()).strip() or None,
    "python_tag": next(iter(tags.sys_tags())).interpreter,
    "platform": sysconfig.get_platform().replace("-", "_").replace(".", "_"),
    "torch": None, "torch_cuda": None, "cxx11_abi": None, "cuda_available": False,
    "gpu_capabilities": [], "torch_error": None,
}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_root"] = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
    info["torch_cuda"] = torch.version.cuda
    info["cxx11_abi"] = bool(torch._C._GLIBCXX_USE_CXX11_ABI)
    info["cuda_available"] = bool(torch.cuda.is_available())
    if info["cuda_available"]:
        info["gpu_capabilities"] = sorted({
            "%d%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())
        })
except Exception as exc:
    info["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(info))
"""

_PROBE_NO_PACKAGING = _PROBE.replace(
    "from packaging import tags", "tags = None"
).replace(
    "next(iter(tags.sys_tags())).interpreter", "'cp%d%d' % sys.version_info[:2]"
)


@dataclass(frozen=True)
class TargetInfo:
    """What the target interpreter has, as it reported it."""

    python_exe: Path
    python: str
    python_tag: str
    platform: str
    torch: str | None
    torch_cuda: str | None
    cxx11_abi: bool | None
    cuda_available: bool
    gpu_capabilities: tuple[str, ...]
    torch_error: str | None = None
    libc: str | None = None
    """The C library the interpreter runs on, e.g. "glibc 2.36" (None where it is not glibc):
    the compilers link against it, so it is part of the cache key and bounds the platform tag."""
    torch_root: Path | None = None
    """The folder torch is imported from (its site-packages, as sys.path names it), whose path is in
    every header path torch's include flags give; None without torch."""

    @property
    def torch_public(self) -> str | None:
        """torch's version without its local label: "2.14.1+cu130" -> "2.14.1"."""
        return self.torch.split("+")[0] if self.torch else None


def probe_interpreter(python_exe: Path | str | None = None) -> TargetInfo:
    """Run the probe in `python_exe` (default: this interpreter) and parse its report."""
    exe = Path(python_exe) if python_exe else Path(sys.executable)
    check_interpreter_path(exe)
    result = capture([exe, "-c", _PROBE], timeout=300)
    if result.returncode != 0 and "packaging" in result.stderr:
        result = capture([exe, "-c", _PROBE_NO_PACKAGING], timeout=300)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentSetupError(f"cannot run the target interpreter {exe}: {last}")
    data = probe_answer(exe, result.stdout)
    return TargetInfo(
        python_exe=exe,
        python=data["python"],
        python_tag=data["python_tag"],
        platform=data["platform"],
        torch=data["torch"],
        torch_cuda=data["torch_cuda"],
        cxx11_abi=data["cxx11_abi"],
        cuda_available=data["cuda_available"],
        gpu_capabilities=tuple(data["gpu_capabilities"]),
        torch_error=data["torch_error"],
        libc=data.get("libc"),
        torch_root=Path(data["torch_root"]) if data.get("torch_root") else None,
    )


# What the probe's answer must hold, and of which type (None: may be null).
_ANSWER: dict[str, tuple[type, ...]] = {
    "python": (str,), "python_tag": (str,), "platform": (str,), "torch": (str, type(None)),
    "torch_cuda": (str, type(None)), "cxx11_abi": (bool, type(None)), "cuda_available": (bool,),
    "gpu_capabilities": (list,), "torch_error": (str, type(None)),
}


def probe_answer(exe: Path, stdout: str) -> dict[str, Any]:
    """The probe's JSON answer (its last line of output); an executable that answers anything else
    (`/bin/true`, a script printing other text or other JSON) is refused as no usable interpreter."""
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        said = f"it printed {_cut(lines[-1])!r}" if lines else "it printed nothing"
        raise _not_an_interpreter(exe, f"{said} where builder's probe expects one line of JSON")
    missing = [key for key in _ANSWER if key not in data]
    if missing:
        raise _not_an_interpreter(exe, f"its answer to builder's probe lacks {', '.join(missing)}")
    mistyped = [f"{key}={_cut(json.dumps(data[key]))}" for key, types in _ANSWER.items()
                if not isinstance(data[key], types)]
    if mistyped:
        raise _not_an_interpreter(exe, f"its answer to builder's probe has {', '.join(mistyped)}, "
                                       "not what a Python running the probe says")
    return data


def _cut(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _not_an_interpreter(exe: Path, why: str) -> UsageError:
    return UsageError(f"{exe} is not a Python interpreter builder can use: {why}",
                      hint="pass --python the path of a Python 3 executable, e.g. /path/to/venv/bin/python")


def check_interpreter_path(exe: Path) -> None:
    """Refuse a --python that cannot be an interpreter: missing, a directory, not executable (a
    bare name is looked up on PATH, as running it would)."""
    if os.sep not in str(exe) and shutil.which(str(exe)):
        return
    what = ("does not exist" if not exe.exists() else "is a directory" if exe.is_dir()
            else "is not executable" if not os.access(exe, os.X_OK) else None)
    if what is not None:
        raise UsageError(f"the target interpreter {exe} {what}",
                         hint="pass --python the path of a Python executable, e.g. /path/to/venv/bin/python")


def best_platform_tag(info: TargetInfo) -> str:
    """The most a wheel built here can be promised before it is built: the manylinux tag of this
    machine's glibc (PEP 600: `manylinux_<major>_<minor>_<arch>`), since the compilers link
    against it; the built wheel's own symbol versions may allow an older one
    (builder/store/platform_tag.py). Other platforms keep their own tag."""
    kind, _, version = (info.libc or "").partition(" ")
    arch = info.platform.removeprefix("linux_")
    if kind != "glibc" or not info.platform.startswith("linux_") or version.count(".") < 1:
        return info.platform
    major, minor = version.split(".")[:2]
    return f"manylinux_{major}_{minor}_{arch}"


def visible_gpu_capabilities(info: TargetInfo) -> tuple[str, ...]:
    """Compute capabilities of the visible GPUs: torch's answer, else nvidia-smi's."""
    if info.gpu_capabilities:
        return info.gpu_capabilities
    return tuple(sorted({gpu.capability for gpu in list_gpus()}))


def running_torch() -> str | None:
    """The torch release of the interpreter running builder ("2.14.1"), or None without torch."""
    try:
        return importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None
