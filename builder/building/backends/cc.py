"""Plain C shared libraries (ChatGLM's int4 CPU kernels): one compiler call per output library.

The recipe's [cc] table names each library, its sources and the flags (`-O3 -fPIC -pthread
-fopenmp -std=c99 -shared`). Before compiling, a three-line OpenMP program is built with the same
compiler and flags, so a compiler without OpenMP fails with that reason instead of a missing
omp.h halfway. The libraries travel in a wheel (`<package>/<library>`, tagged for this platform),
so they are cached, shared and re-tagged like every other build; installing them as artifacts
copies them out of it.

The compiler is the plan's host compiler ($CC); BUILDER_CC names another.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from packaging.utils import canonicalize_name

from builder import __version__
from builder.errors import BuildError, RecipeError, ToolchainError
from builder.planning.plan import Plan
from builder.process import call, capture, first_error_line
from builder.wheelfile import EXECUTABLE
from builder.wheelfile import write_wheel as write_wheel_file

OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def compiler(env: Mapping[str, str]) -> str:
    return env.get("BUILDER_CC") or env.get("CC") or "gcc"


def check_openmp(cc: str, flags: tuple[str, ...], env: Mapping[str, str]) -> None:
    """Refuse a compiler that cannot build and link an OpenMP program with these flags."""
    if "-fopenmp" not in flags:
        return
    with tempfile.TemporaryDirectory(prefix="builder-omp-", dir=env.get("TMPDIR")) as tmp:  # the build's own
        source = Path(tmp) / "probe.c"
        source.write_text(OPENMP_PROBE)
        link_flags = [f for f in flags if f != "-shared"]
        result = capture([cc, *link_flags, str(source), "-o", str(Path(tmp) / "probe")], env=dict(env))
    if result.returncode != 0:
        reason = first_error_line((result.stdout + result.stderr).splitlines()) or f"exit status {result.returncode}"
        raise ToolchainError(f"the C compiler {cc} cannot build with -fopenmp: {reason}",
                             hint="install a gcc with OpenMP (libgomp; Debian: apt install gcc), "
                                  "or name one with BUILDER_CC")


class CBackend:
    name = "cc"
    gated = False
    gates_host_compiler = False

    def libraries(self, plan: Plan) -> list[str]:
        return [f"{plan.recipe.cc.package}/{name}" for name in plan.recipe.cc.outputs]

    def commands(self, plan: Plan, source_dir: Path, out_dir: Path) -> list[list[str]]:
        cc = compiler(plan.env)
        return [[cc, *plan.recipe.cc.flags, *(str(source_dir / s) for s in sources),
                 "-o", str(out_dir / library)]
                for library, sources in plan.recipe.cc.outputs.items()]

    def build(self, plan: Plan, source_dir: Path, out_dir: Path, env: Mapping[str, str],
              log_path: Path, on_line: Callable[[str], None]) -> Path:
        spec = plan.recipe.cc
        if not spec.outputs or not spec.package:
            raise RecipeError(f"{plan.recipe.name}: the cc backend needs [cc] outputs and package")
        missing = sorted({s for sources in spec.outputs.values() for s in sources
                          if not (source_dir / s).is_file()})
        if missing:
            raise BuildError(f"the source has no {', '.join(missing)}", log_path=log_path)
        check_openmp(compiler(env), spec.flags, env)
        libraries = out_dir / "lib"
        libraries.mkdir(parents=True, exist_ok=True)
        for command in self.commands(plan, source_dir, libraries):
            on_line(" ".join(command))
            call(command, log_path=log_path, env=env, cwd=source_dir, on_line=on_line,
                 what=f"compiling {Path(command[-1]).name}")
        return write_wheel(plan, libraries, out_dir)


def write_wheel(plan: Plan, libraries: Path, out_dir: Path) -> Path:
    """A wheel holding `<package>/<library>` for each built library, tagged for this platform."""
    distribution = canonicalize_name(plan.recipe.name).replace("-", "_")
    package = plan.recipe.cc.package
    dist_info = f"{distribution}-{plan.version}.dist-info"
    tag = f"py3-none-{plan.target.platform}"
    wheel = out_dir / f"{distribution}-{plan.version}-{tag}.whl"
    with write_wheel_file(wheel, dist_info) as out:
        out.add_bytes(f"{package}/__init__.py",
                      f'"""{plan.recipe.description or plan.recipe.name}, built by builder."""\n'.encode())
        for library in plan.recipe.cc.outputs:
            with (libraries / library).open("rb") as data:
                out.add(f"{package}/{library}", data, (libraries / library).stat().st_size, attributes=EXECUTABLE)
        metadata = (f"Metadata-Version: 2.1\nName: {plan.recipe.name}\nVersion: {plan.version}\n"
                    f"Summary: {plan.recipe.description}\n")
        out.add_bytes(f"{dist_info}/METADATA", metadata.encode())
        out.add_bytes(f"{dist_info}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: builder {__version__}\n"
                                              f"Root-Is-Purelib: false\nTag: {tag}\n").encode())
    return wheel
