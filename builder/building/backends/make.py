"""Makefile packages (bitsandbytes up to 0.42: `CUDA_VERSION=113 make cuda11x`): each target of
the recipe's [make] table, one after another (they share the Makefile's build/ folder), with the
table's variables on the command line, where they override the Makefile's own assignments; that
is how the requested archs replace its fixed -gencode lists. Then the tree is packaged.
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
from builder.errors import BuildError
from builder.planning.plan import Plan
from builder.process import call, capture


class MakeBackend(NativeBackend):
    name = "make"

    def make_command(self, plan: Plan, target: str, make: str = "make", gate: str | None = None) -> list[str]:
        """The make command line; with builder's compile gate, NVCC runs through it (unless the recipe
        sets NVCC itself)."""
        variables = {key: plan.render(value) for key, value in native_spec(plan).variables.items()}
        if gate is not None:
            variables.setdefault("NVCC", f"{gate} {plan.toolkit.nvcc}")
        return [make, f"-j{plan.jobs.jobs}", target, *(f"{key}={value}" for key, value in variables.items())]

    def commands(self, plan: Plan, source_dir: Path, out_dir: Path) -> list[list[str]]:
        return [*(self.make_command(plan, t) for t in native_spec(plan).targets),
                wheel_command(plan, source_dir, out_dir)]

    def build(self, plan: Plan, source_dir: Path, out_dir: Path, env: Mapping[str, str],
              log_path: Path, on_line: Callable[[str], None]) -> Path:
        env = build_environment(plan, env, out_dir.parent)
        make = find_tool("make", plan, env, hint="install GNU make (Debian: apt install make)")
        for target in native_spec(plan).targets:
            check_target(make, target, source_dir, env, log_path)
        for target in native_spec(plan).targets:
            command = self.make_command(plan, target, make, env.get("BUILDER_GATE"))
            call(command, log_path=log_path, env=env, cwd=source_dir, on_line=on_line, what=f"make {target}")
        return package(plan, source_dir, out_dir, env, log_path, on_line)


def check_target(make: str, target: str, source_dir: Path, env: Mapping[str, str], log_path: Path) -> None:
    """Refuse a target the Makefile does not have before anything compiles (`make -n`)."""
    result = capture([make, "-n", target], env=dict(env), cwd=source_dir)
    if "No rule to make target" in result.stderr:
        raise BuildError(f"the Makefile in {source_dir.name} has no target {target!r}", log_path=log_path)
