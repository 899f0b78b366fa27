"""One compile of a planned build in its work directory: the backend's build behind the compile
gate (and through sccache with --ccache), with the build's environment composed once.

The work directory (builder/building/workdir.py) is `<build-dir>/<cache key>`, the same path from
every cache so that rebuilds are byte-identical (builder/building/reproducible.py); the build's
TMPDIR is its tmp/, so pip's, nvcc's and gcc's temp files stay inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.building import costs, placement, reproducible, sccache
from builder.building.backends import Backend
from builder.building.workdir import TMP_DIR
from builder.planning.compile_cache import CompileCache
from builder.planning.plan import Plan
from builder.reporting import Steps, compile_line_parser


@dataclass
class Compiled:
    """What a compile left: the wheel (None when it failed) and what it recorded on the way."""

    wheel: Path | None = None
    costs: costs.BuildCosts | None = None
    sccache: dict[str, Any] = field(default_factory=dict)


def build_env(plan: Plan, backend: Backend, sccache_dir: Path, work: Path) -> dict[str, str]:
    """What the build runs with: what it inherits from the user's environment (the table in
    builder/planning/environment.py), the plan's variables over it, TMPDIR inside the work
    directory, the flags that keep this work directory's path out of the binary
    (builder/building/reproducible.py), and builder's own sccache with --ccache."""
    env = {**plan.inherited.for_build(), **plan.env, "PYTHONUNBUFFERED": "1", "TMPDIR": str(work / TMP_DIR)}
    env.update(reproducible.build_flags(plan, env, work))
    if plan.ccache:
        store = CompileCache(plan.compile_cache or str(sccache_dir))
        env = sccache.sccache_env(plan.env["BUILDER_SCCACHE"], store, work, env, wrap_cxx=backend.gates_host_compiler,
                                  relative_to=sccache.hashed_relative(plan.target.torch_root, plan.toolkit.root),
                                  farm=plan.farm, toolchains=sccache_dir.with_name("sccache-dist"))
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
    farm_log = work / placement.LOG if plan.farm else None
    try:
        with (steps("compile", label), steps.reporter.compile_progress(plan.recipe.name) as update,
              sccache.server(plan.env["BUILDER_SCCACHE"], env, log_path.with_suffix(".sccache.log"), farm_log=farm_log)
              if plan.ccache else contextlib.nullcontext()):
            try:
                compiled.wheel = backend.build(plan, src, work / "raw", env, log_path, compile_line_parser(update))
                return compiled.wheel
            finally:
                if plan.ccache:  # its counts, while its server still runs; the files the gate split
                    compiled.sccache = sccache.finish(plan.env["BUILDER_SCCACHE"], env)
                    if split := {f.file: f.threads for f in costs.gate_records(work) if f.threads > 1}:
                        compiled.sccache["split"] = split
    finally:
        # Through sccache the compilers run in its server, out of the gate's sight: no records of
        # their costs. On a farm, the records say where each file's steps ran (kept apart).
        if plan.ccache:
            steps.reporter.say(f"    {sccache.describe(compiled.sccache)}")
            if plan.farm is not None:
                compiled.costs = placement.on_farm(costs.collect(plan, work, farm=plan.farm.url),
                                                   work / placement.LOG, compiled.sccache.get("distributed", {}))
                if compiled.costs is not None:
                    steps.reporter.say(f"    where each file ran: builder stats {plan.recipe.name}")
                placement.keep_warnings(work / placement.LOG, log_path.with_suffix(".sccache.log"))
        else:
            compiled.costs = costs.collect(plan, work)
            if compiled.costs is not None:
                steps.reporter.say(f"    {costs.describe(compiled.costs)} (builder stats {plan.recipe.name})")
