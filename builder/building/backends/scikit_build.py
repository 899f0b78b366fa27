"""A CMake project of builder's own around the package's C sources, built by scikit-build-core
(ChatGLM's int4 kernels as a pybind11 module).

The recipe's [wheel] table names the project (a folder beside the recipe) and the source files
copied into its kernels/ folder. The wheel is made by `pip wheel --no-build-isolation --no-deps`
like a torch extension's, so the build env's scikit-build-core, pybind11 and cmake are used and
nothing is downloaded; CMAKE_BUILD_PARALLEL_LEVEL carries the planned jobs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from builder.building.backends.cc import check_openmp, compiler
from builder.building.backends.torch_ext import TorchExtension
from builder.errors import BuildError, RecipeError
from builder.planning.plan import Plan


class ScikitBuild(TorchExtension):
    name = "scikit-build"
    gates_host_compiler = False

    def build(self, plan: Plan, source_dir: Path, out_dir: Path, env: Mapping[str, str],
              log_path: Path, on_line: Callable[[str], None]) -> Path:
        spec = plan.recipe.wheel
        if spec is None:
            raise RecipeError(f"{plan.recipe.name}: the scikit-build backend needs a [wheel] table")
        missing = [s for s in spec.sources if not (source_dir / s).is_file()]
        if missing:
            raise BuildError(f"the source has no {', '.join(missing)}", log_path=log_path)
        check_openmp(compiler(env), ("-fopenmp",), env)
        project = source_dir.parent / "wheel-project"
        shutil.copytree(spec.project_dir, project)
        (project / "kernels").mkdir(exist_ok=True)
        for name in spec.sources:
            shutil.copy2(source_dir / name, project / "kernels" / Path(name).name)
        build_env = {**env, "CMAKE_BUILD_PARALLEL_LEVEL": str(plan.jobs.jobs)}
        return super().build(plan, project, out_dir, build_env, log_path, on_line)
