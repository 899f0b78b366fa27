"""What the `make` and `cmake` backends share: the package's own build system runs in its tree
and leaves the libraries the recipe names there; `pip wheel --no-build-isolation --no-deps` then
packages the tree (its setup.py picks the libraries up), and the wheel must hold every one.

The tools come from the build interpreter's folder first (pip's cmake and ninja), then PATH.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

from builder.building.backends.torch_ext import TorchExtension
from builder.building.cuda_libs import library_env
from builder.errors import BuildError, ToolchainError
from builder.planning.plan import Plan
from builder.planning.recipe import NativeBuild


def native_spec(plan: Plan) -> NativeBuild:
    return plan.recipe.native[plan.backend]


def outputs(plan: Plan) -> list[str]:
    """The libraries the build makes, as paths in its tree (and in the wheel)."""
    return [plan.render(output) for output in native_spec(plan).outputs]


class NativeBackend:
    """What the make and cmake backends share as a style: gated compiles, native libraries."""

    gated = True
    gates_host_compiler = False

    def libraries(self, plan: Plan) -> list[str]:
        return outputs(plan)


def find_tool(name: str, plan: Plan, env: Mapping[str, str], hint: str) -> str:
    path = os.pathsep.join([str(plan.target.python_exe.parent), env.get("PATH", "")])
    found = shutil.which(name, path=path)
    if found is None:
        raise ToolchainError(f"{name} not found beside {plan.target.python_exe} or on PATH", hint=hint)
    return found


def build_environment(plan: Plan, env: Mapping[str, str], work: Path) -> dict[str, str]:
    """The build's env plus where cuBLAS/cuSPARSE are when the toolkit lacks them."""
    return {**env, **library_env(plan.toolkit, plan.target.python_exe, work / "cuda-libs", env)}


def check_outputs(plan: Plan, source_dir: Path, log_path: Path) -> None:
    missing = [output for output in outputs(plan) if not (source_dir / output).is_file()]
    if missing:
        raise BuildError(f"the {plan.backend} build did not make {', '.join(missing)}", log_path=log_path)


def package(plan: Plan, source_dir: Path, out_dir: Path, env: Mapping[str, str], log_path: Path,
            on_line: Callable[[str], None]) -> Path:
    """`pip wheel` over the built tree; the wheel must carry every output."""
    check_outputs(plan, source_dir, log_path)
    wheel_env = {**env, **{k: plan.render(v) for k, v in native_spec(plan).wheel_env.items()}}
    wheel = TorchExtension().build(plan, source_dir, out_dir, wheel_env, log_path, on_line)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = [output for output in outputs(plan) if output not in names]
    if missing:
        raise BuildError(f"{wheel.name} does not carry {', '.join(missing)}: the package's setup does not "
                         f"pick them up", log_path=log_path)
    return wheel


def wheel_command(plan: Plan, source_dir: Path, out_dir: Path) -> list[str]:
    return TorchExtension().commands(plan, source_dir, out_dir)[0]
