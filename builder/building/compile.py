"""One compile of a planned build in its work directory: the backend's build behind the compile
gate (and through sccache with --ccache), with the build's environment composed once.

The work directory is `<build-dir>/<cache key>` (Workspace.work_dir), the same path from every cache
so that rebuilds are byte-identical (builder/building/reproducible.py); it is removed when the build
succeeds and kept, and named, when it fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from builder.building import costs, reproducible, sccache
from builder.building.backends import Backend
from builder.errors import UsageError
from builder.planning.plan import Plan
from builder.reporting import Reporter, Steps, compile_line_parser


@dataclass
class Compiled:
    """What a compile left: the wheel (None when it failed) and what it recorded on the way."""

    wheel: Path | None = None
    costs: costs.BuildCosts | None = None
    sccache: dict[str, Any] = field(default_factory=dict)


@contextmanager
def workdir(path: Path, reporter: Reporter) -> Iterator[Path]:
    """A fresh build directory: removed on success, kept (and named) on failure. Builds of one key
    from several caches share its path, so they take turns (a lock beside it)."""
    check_build_path(path)
    make_root(path.parent)
    with FileLock(f"{path}.lock"):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        try:
            yield path
        except BaseException:
            reporter.say(f"    build directory kept for inspection: {path}")
            raise
        shutil.rmtree(path, ignore_errors=True)


def make_root(root: Path) -> None:
    """The folder of all build directories; made like /var/tmp itself (every user may build there,
    each removes only their own) when builder makes it."""
    if root.is_dir():
        return
    try:
        root.mkdir(parents=True)
        root.chmod(0o1777)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UsageError(f"cannot make the build directory {root}: {exc.strerror or exc}",
                         hint="choose another with the build-dir setting (BUILDER_BUILD_DIR)") from exc


def check_build_path(path: Path, what: str = "the build directory",
                     hint: str = "choose a build-dir setting (BUILDER_BUILD_DIR) whose path has no comma") -> None:
    """nvcc splits option values at commas (-I paths included), so a build under such a path fails
    late with a missing header; refuse it up front."""
    if "," in str(path.resolve()):
        raise UsageError(f"{what} {path} contains a comma, which nvcc takes as a list separator", hint=hint)


def build_env(plan: Plan, sccache_dir: Path, work: Path) -> dict[str, str]:
    """What the build runs with: what it inherits from the user's environment (the table in
    builder/planning/environment.py), the plan's variables over it, the flags that keep this work
    directory's path out of the binary (builder/building/reproducible.py), and sccache with --ccache."""
    env = {**plan.inherited.for_build(), **plan.env, "PYTHONUNBUFFERED": "1"}
    env.update(reproducible.build_flags(plan, env, work))
    if plan.ccache:
        env = sccache.sccache_env(plan.env["BUILDER_SCCACHE"], sccache_dir, work, env)
    return env


def compile_wheel(plan: Plan, backend: Backend, src: Path, work: Path, env: Mapping[str, str], log_path: Path,
                  steps: Steps, *, previous: costs.BuildCosts | None, compiled: Compiled) -> Path:
    """The backend's wheel; what the build recorded goes into `compiled`, even when it fails."""
    archs = ", ".join(a.sm for a in plan.archs) or "no GPU arch"
    label = f"compile with {plan.jobs.jobs} job(s) for {archs} (log: {log_path})"
    if backend.gated:
        env = costs.instrument(plan, work, src, env, previous=previous,
                               gates_host_compiler=backend.gates_host_compiler)
    try:
        with steps("compile", label), steps.reporter.compile_progress(plan.recipe.name) as update:
            compiled.wheel = backend.build(plan, src, work / "raw", env, log_path, compile_line_parser(update))
            return compiled.wheel
    finally:
        # Through sccache the compilers run in its server, out of the gate's sight: no records.
        if plan.ccache:
            compiled.sccache = sccache.finish(plan.env["BUILDER_SCCACHE"], env)
            steps.reporter.say(f"    {sccache.describe(compiled.sccache)}")
        else:
            compiled.costs = costs.collect(plan, work)
            if compiled.costs is not None:
                steps.reporter.say(f"    {costs.describe(compiled.costs)} (builder stats {plan.recipe.name})")
