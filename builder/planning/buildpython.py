"""Which interpreter a build runs in and which one gets the install.

Without --torch: the given (--python) or current interpreter, as it is. With --torch V: a cached
venv holding exactly torch V (pyenv.ensure_env); `builder plan` only predicts what that venv will
hold (torch's CUDA from the index URL or compat's PyPI table), so planning stays cheap.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from builder.errors import ToolchainError
from builder.planning import compat
from builder.planning.recipe import Recipe
from builder.planning.request import Request
from builder.planning.target import TargetInfo, probe_interpreter
from builder.planning.venvs import ensure_env
from builder.process import capture


@dataclass(frozen=True)
class BuildPython:
    """The build interpreter as probed (or predicted), how it is made, where the install goes."""

    target: TargetInfo
    kind: str
    """"existing" (an interpreter as it is) or "venv" (made for --torch)."""
    install_python: Path | None
    torch_request: str | None = None
    index_url: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "python": str(self.target.python_exe), "torch": self.torch_request,
                "index_url": self.index_url}


def torch_cuda_of_request(torch: str, index_url: str | None) -> str:
    """The CUDA a requested torch is built for: a `+cuXYZ` label or `/cuXYZ` index, else PyPI's."""
    for text in (torch, index_url or ""):
        for part in text.replace("/", "+").split("+"):
            if part.startswith("cu") and part[2:].isdigit():
                return f"{part[2:-1]}.{part[-1]}"
    cuda = compat.pypi_torch_cuda(torch)
    if cuda is None:
        raise ToolchainError(f"builder does not know which CUDA torch {torch}'s PyPI build uses",
                             hint="pass --torch-index with a per-CUDA index, e.g. .../whl/cu128")
    return cuda


def choose_torch_index(torch: str, cuda: str | None, index_url: str | None) -> str | None:
    """--torch-index when given; else PyPI when its build of `torch` has the CUDA major asked for;
    else PyTorch's own index for that CUDA, when it carries that torch; else a clear refusal."""
    if index_url or cuda is None:
        return index_url
    pypi = compat.pypi_torch_cuda(torch)
    if pypi is None or pypi.split(".")[0] == cuda.split(".")[0]:
        return None  # PyPI's build (unknown to the table: the venv's probe tells, and the plan checks it)
    release = Version(torch).release[:2]
    span = compat.PYTORCH_INDEX_BUILDS.get(".".join(cuda.split(".")[:2]))
    if span is not None and span[0] <= release <= span[1]:
        return compat.PYTORCH_INDEX_URL.format(tag=compat.cuda_tag(cuda))
    raise ToolchainError(
        f"no known torch {torch} build for CUDA {cuda}: PyPI's is CUDA {pypi or 'unknown'}",
        hint="pass --torch-index URL of an index that has one, or choose another --torch / --cuda")


def base_interpreter(python: Path) -> Path:
    """The interpreter a venv should be made from (a venv's own base when given a venv)."""
    result = capture([python, "-c", "import sys; print(sys._base_executable)"])
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else python


def build_python(request: Request, recipe: Recipe, envs_dir: Path, logs_dir: Path, *, make_env: bool,
                 package_index: Callable[[], str], environ: Mapping[str, str] | None = None,
                 say: Callable[[str], None] | None = None) -> BuildPython:
    """The build interpreter; with make_env, a --torch venv made from `package_index()` (asked only
    then: the index-url setting, which may run pip to read its configuration) in `environ`."""
    given = Path(request.python) if request.python else Path(sys.executable)
    if not request.torch:
        return BuildPython(probe_interpreter(given), "existing", given)
    index = choose_torch_index(request.torch, request.cuda, request.torch_index)
    if not make_env:
        base = probe_interpreter(given)
        predicted = dataclasses.replace(
            base, torch=request.torch, torch_cuda=torch_cuda_of_request(request.torch, index),
            cxx11_abi=compat.pypi_torch_cxx11_abi(request.torch), cuda_available=False, torch_error=None)
        return BuildPython(predicted, "venv", given if request.python else None, request.torch, index)
    if say:
        say(f"==> build environment with torch=={request.torch}" + (f" from {index}" if index else ""))
    python = ensure_env(torch=request.torch, index_url=index, package_index=package_index(),
                        requirements=recipe.build.requirements, envs_dir=envs_dir,
                        log_path=logs_dir / f"env-torch-{request.torch}.log",
                        base_python=base_interpreter(given), environ=environ)
    return BuildPython(probe_interpreter(python), "venv", given if request.python else python, request.torch, index)
