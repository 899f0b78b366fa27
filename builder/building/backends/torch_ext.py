"""torch CUDAExtension packages (flash-attn, causal-conv1d): `pip wheel` in the build interpreter
(`uv build --wheel` where it has no pip: the frontend the plan records, builder/planning/frontend.py).

--no-build-isolation so the build sees the target's torch and nothing else; --no-deps so pip
never resolves (and replaces) torch from the package's metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from builder.building.cuda_libs import header_env
from builder.errors import BuildError
from builder.planning.frontend import recorded_frontend
from builder.planning.plan import Plan
from builder.process import call


class TorchExtension:
    name = "torch-ext"
    gated = True
    gates_host_compiler = True

    def libraries(self, plan: Plan) -> list[str]:
        return []

    def commands(self, plan: Plan, source_dir: Path, out_dir: Path) -> list[list[str]]:
        return [recorded_frontend(plan.build_env, plan.target.python_exe).wheel_command(source_dir, out_dir)]

    def build(self, plan: Plan, source_dir: Path, out_dir: Path, env: Mapping[str, str],
              log_path: Path, on_line: Callable[[str], None]) -> Path:
        env = {**env, **header_env(plan.toolkit, plan.target.python_exe, env)}
        for command in self.commands(plan, source_dir, out_dir):
            call(command, log_path=log_path, env=env, cwd=source_dir, on_line=on_line,
                 what=f"building {plan.recipe.name}")
        wheels = sorted(out_dir.glob("*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"the build wrote {len(wheels)} wheels, expected one", log_path=log_path)
        return wheels[0]
