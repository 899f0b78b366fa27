"""One compile of a planned build in its work directory: the backend's build behind the compile
gate (and through sccache with --ccache), with the build's environment composed once.

The work directory is removed when the build succeeds and kept, and named, when it fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.building import costs, sccache
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
    """A fresh build directory: removed on success, kept (and named) on failure."""
    check_build_path(path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    except BaseException:
        reporter.say(f"    build directory kept for inspection: {path}")
        raise
    shutil.rmtree(path, ignore_errors=True)


def check_build_path(path: Path) -> None:
    """nvcc splits option values at commas (-I paths included), so a build under such a path fails
    late with a missing header; refuse it up front."""
    if "," in str(path.resolve()):
        raise UsageError(f"the build directory {path} contains a comma, which nvcc takes as a list separator",
                         hint="use a cache directory whose path has no comma")


def build_env(plan: Plan, inherited: Mapping[str, str], sccache_dir: Path, work: Path) -> dict[str, str]:
    """The inherited environment plus the plan's variables (and sccache with --ccache)."""
    env = {**inherited, **plan.env, "PYTHONUNBUFFERED": "1"}
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
        if previous is not None and previous.reference:
            steps.reporter.say(f"    no records of this build yet: starting from the recipe's reference costs "
                               f"({previous.reference})")
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
