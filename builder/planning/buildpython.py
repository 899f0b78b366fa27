"""Which interpreter a build runs in and which one gets the install.

Without --torch: the given (--python) or current interpreter, as it is. With --torch V: a cached
venv holding exactly torch V (pyenv.ensure_env); `builder plan` only predicts what that venv will
hold (torch's CUDA from the index URL or compat's PyPI table), so planning stays cheap. The
wheel is built by the interpreter's own pip, or by uv where it has none (builder/planning/frontend.py).
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
from builder.planning.fixes import torch_fix
from builder.planning.frontend import Frontend, choose_frontend
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
    frontend: Frontend | None = None
    """What builds the wheel in it: its pip, or uv where it has none (None: pip)."""

    def describe(self) -> dict[str, Any]:
        frontend = self.frontend or Frontend(self.target.python_exe)
        return {"kind": self.kind, "python": str(self.target.python_exe), "torch": self.torch_request,
                "index_url": self.index_url, **frontend.record()}

    @property
    def notes(self) -> tuple[str, ...]:
        """What the plan says of the frontend when it is not the interpreter's own pip."""
        if self.frontend is None or self.frontend.uv is None:
            return ()
        return (f"{self.target.python_exe} has no pip: uv ({self.frontend.uv}) builds the wheel in it "
                "(`uv build --wheel --no-build-isolation`)",)


CudaOfTorch = Callable[[str, str | None], str]
"""(torch release, index URL or None for the default index) -> the CUDA of that index's build."""


@dataclass(frozen=True)
class TorchBuild:
    """Where a requested torch comes from and the CUDA it is built for."""

    index_url: str | None
    """--torch-index, PyTorch's own per-CUDA index, or None: the default index."""
    cuda: str
    """The CUDA of that build: "13.0", or a major ("12") where only that is known."""


def _cuda_label(torch: str, index_url: str | None) -> str | None:
    """The CUDA a `+cuXYZ` label of the torch asked for, or a `/cuXYZ` index, names."""
    for text in (torch, index_url or ""):
        for part in text.replace("/", "+").split("+"):
            if part.startswith("cu") and part[2:].isdigit() and len(part) >= 5:
                return f"{part[2:-1]}.{part[-1]}"
    return None


def choose_torch_build(torch: str, cuda: str | None, index_url: str | None,
                       default_cuda: CudaOfTorch) -> TorchBuild:
    """The one decision of where a requested torch comes from and which CUDA it is built for, made
    for `builder plan`/`build` and for every cell of `builder matrix` alike:
    --torch-index when given (its CUDA from a /cuXYZ in it, a +cuXYZ label, else that index's
    build of it); else the default index when its build has the CUDA major asked for
    (`default_cuda(torch, index)`: compat's table, else the release's metadata on `index`, the
    default one when None, builder/planning/torch_facts.py); else PyTorch's own index for that
    CUDA when it carries that torch; else a refusal naming a torch that has it."""
    labelled = _cuda_label(torch, index_url)
    if index_url or labelled:
        return TorchBuild(index_url, labelled or default_cuda(torch, index_url))
    default = default_cuda(torch, None)
    if cuda is None or default.split(".")[0] == cuda.split(".")[0]:
        return TorchBuild(None, default)
    release = Version(torch).release[:2]
    span = compat.PYTORCH_INDEX_BUILDS.get(".".join(cuda.split(".")[:2]))
    if span is not None and span[0] <= release <= span[1]:
        return TorchBuild(compat.PYTORCH_INDEX_URL.format(tag=compat.cuda_tag(cuda)), cuda)
    raise ToolchainError(
        f"no known torch {torch} build for CUDA {cuda}: PyPI's is CUDA {default}",
        hint=f"use {torch_fix(cuda)}; or pass --torch-index URL of an index that has one")


def table_cuda(torch: str, index_url: str | None = None) -> str:
    """The CUDA of PyPI's build of `torch` by compat's table alone (offline, `index_url` unread):
    the default of `default_cuda` where no index may be asked."""
    cuda = compat.pypi_torch_cuda(torch)
    if cuda is None:
        raise ToolchainError(f"builder does not know which CUDA torch {torch}'s PyPI build uses",
                             hint="pass --torch-index with a per-CUDA index, e.g. .../whl/cu128")
    return cuda


def choose_torch_index(torch: str, cuda: str | None, index_url: str | None) -> str | None:
    """choose_torch_build's index, by compat's table alone."""
    return choose_torch_build(torch, cuda, index_url, table_cuda).index_url


def base_interpreter(python: Path) -> Path:
    """The interpreter a venv should be made from (a venv's own base when given a venv)."""
    result = capture([python, "-c", "import sys; print(sys._base_executable)"])
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else python


def build_python(request: Request, recipe: Recipe, envs_dir: Path, logs_dir: Path, *, make_env: bool,
                 package_index: Callable[[], str], environ: Mapping[str, str] | None = None,
                 say: Callable[[str], None] | None = None,
                 default_cuda: CudaOfTorch = table_cuda) -> BuildPython:
    """The build interpreter: --python (or this one) as it is, or for --torch a venv with exactly
    that torch, made (make_env, from `package_index()`: asked only then, since the index-url
    setting may run pip to read its configuration) or predicted; `default_cuda` answers which
    CUDA the default index's build of a torch release is made for."""
    given = Path(request.python) if request.python else Path(sys.executable)
    path = environ.get("PATH") if environ is not None else None
    if not request.torch:
        target = probe_interpreter(given)
        return BuildPython(target, "existing", given, frontend=choose_frontend(given, path=path))
    if make_env and request.torch_index:  # the venv made from it says which CUDA its torch has
        index: str | None = request.torch_index
    else:
        chosen = choose_torch_build(request.torch, request.cuda, request.torch_index, default_cuda)
        index = chosen.index_url
    if not make_env:
        base = probe_interpreter(given)
        predicted = dataclasses.replace(
            base, torch=request.torch, torch_cuda=chosen.cuda,
            cxx11_abi=compat.pypi_torch_cxx11_abi(request.torch), cuda_available=False, torch_error=None)
        # builder makes the venv with pip (venvs.ensure_env), and builds with it
        return BuildPython(predicted, "venv", given if request.python else None, request.torch, index)
    if say:
        say(f"==> build environment with torch=={request.torch}" + (f" from {index}" if index else ""))
    python = ensure_env(torch=request.torch, index_url=index, package_index=package_index(),
                        requirements=recipe.build.requirements, envs_dir=envs_dir,
                        log_path=logs_dir / f"env-torch-{request.torch}.log",
                        base_python=base_interpreter(given), environ=environ)
    return BuildPython(probe_interpreter(python), "venv", given if request.python else python, request.torch, index,
                       frontend=choose_frontend(python, path=path))
