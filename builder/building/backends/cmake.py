"""CMake packages (bitsandbytes from 0.43: `-DCOMPUTE_BACKEND=cuda -DCOMPUTE_CAPABILITY=...`):
configure with Ninja, the plan's nvcc and host compiler and CMAKE_CUDA_ARCHITECTURES from the
requested archs, plus the recipe's [cmake] defines; build with the planned jobs; then package
the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from builder.building.backends.native import (
    NativeBackend,
    build_environment,
    find_tool,
    native_spec,
    package,
    wheel_command,
)
from builder.planning.plan import Plan
from builder.process import call

BUILD_DIR = "build-builder"


def cuda_architectures(plan: Plan) -> str:
    """CMAKE_CUDA_ARCHITECTURES: a cubin per arch ("86-real"), PTX too where +PTX was asked ("90")."""
    return ";".join(arch.name if arch.ptx else f"{arch.name}-real" for arch in plan.archs)


class CMakeBackend(NativeBackend):
    name = "cmake"

    def configure_command(self, plan: Plan, source_dir: Path, cmake: str = "cmake", ninja: str = "ninja") -> list[str]:
        defines = {
            "CMAKE_BUILD_TYPE": "Release",
            "CMAKE_MAKE_PROGRAM": ninja,
            "CMAKE_C_COMPILER": plan.host.cc,
            "CMAKE_CXX_COMPILER": plan.host.cxx,
            "CMAKE_CUDA_COMPILER": str(plan.toolkit.nvcc),
            "CMAKE_CUDA_HOST_COMPILER": plan.host.cxx,
            **({"CMAKE_CUDA_ARCHITECTURES": cuda_architectures(plan)} if plan.archs else {}),
            **{key: plan.render(value) for key, value in native_spec(plan).variables.items()},
        }
        return [cmake, "-S", str(source_dir), "-B", str(source_dir / BUILD_DIR), "-G", "Ninja",
                *(f"-D{key}={value}" for key, value in defines.items())]

    def build_command(self, plan: Plan, source_dir: Path, cmake: str = "cmake") -> list[str]:
        targets = [arg for target in native_spec(plan).targets for arg in ("--target", target)]
        return [cmake, "--build", str(source_dir / BUILD_DIR), "-j", str(plan.jobs.jobs), *targets]

    def commands(self, plan: Plan, source_dir: Path, out_dir: Path) -> list[list[str]]:
        return [self.configure_command(plan, source_dir), self.build_command(plan, source_dir),
                wheel_command(plan, source_dir, out_dir)]

    def build(self, plan: Plan, source_dir: Path, out_dir: Path, env: Mapping[str, str],
              log_path: Path, on_line: Callable[[str], None]) -> Path:
        env = build_environment(plan, env, out_dir.parent)
        hint = f"{plan.target.python_exe} -m pip install cmake ninja"
        cmake = find_tool("cmake", plan, env, hint)
        ninja = env.get("BUILDER_NINJA") or find_tool("ninja", plan, env, hint)
        call(self.configure_command(plan, source_dir, cmake, ninja), log_path=log_path, env=env,
             cwd=source_dir, on_line=on_line, what="configuring with CMake")
        call(self.build_command(plan, source_dir, cmake), log_path=log_path, env=env, cwd=source_dir,
             on_line=on_line, what="building with CMake")
        return package(plan, source_dir, out_dir, env, log_path, on_line)
