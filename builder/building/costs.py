"""Per-file compile costs: recorded by the compile gate on every build, kept in the cache, and fed
back to the next build of the same kind (memory admission, heaviest-first order, split compiles).
A build with no records of its own starts from the recipe's shipped reference costs
(builder/building/reference.py).

A build's records are keyed by what decides a file's cost: recipe, version, arch set, toolkit and
host compiler. The store keeps them (builder/store/records.py).

The build's tools folder (work/tools) holds the wrappers builder puts in place:
  gate    the compile gate (builder/building/gate.py) in front of nvcc (PYTORCH_NVCC, the `nvcc`
          variable of torch's build.ninja, make's NVCC) and CMake's compiler launchers
          (CMAKE_<LANG>_COMPILER_LAUNCHER, read from the environment)
  ninja   the real ninja after preparing build.ninja (builder/building/ninja_order.py): the gate in
          front of nvcc, heaviest first, the planned files listed; first on PATH (torch's
          cpp_extension runs `ninja`) and CMake's CMAKE_MAKE_PROGRAM
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from builder.building.launchers import launcher_script
from builder.planning.key import digest
from builder.planning.plan import Plan

HERE = Path(__file__).resolve().parent
MB_PER_GB = 1024


@dataclass(frozen=True)
class FileCost:
    file: str
    wall_s: float
    cpu_s: float
    peak_mb: float
    start: float = 0.0
    end: float = 0.0
    expected_mb: float = 0.0
    basis: str = "estimate"
    waited_s: float = 0.0
    threads: int = 1
    """nvcc's --split-compile threads the gate gave it (1: not split)."""
    remote: dict[str, int] = field(default_factory=dict)
    """On a farm: the build servers that ran the file's steps, and how many each (builder/building/placement.py)."""
    local_fallback: int = 0
    """On a farm: its steps a server failed, compiled here instead."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileCost:
        """A record, of this builder or of another (keys it does not know are left out)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def ran_on(self) -> str:
        """Where its steps ran on a farm, e.g. "3 on 127.0.0.1:10712, 1 here (the farm failed it)"."""
        said = [f"{n} on {server}" for server, n in self.remote.items()]
        if self.local_fallback:
            said.append(f"{self.local_fallback} here (the farm failed it)")
        return ", ".join(said)


@dataclass(frozen=True)
class BuildCosts:
    """One build's records and what it ran with."""

    key: str
    recipe: str
    version: str
    archs: list[str]
    cuda: str
    host: str
    jobs: int
    cores: int
    memory_budget_gb: float
    files: list[FileCost] = field(default_factory=list)
    created: float = 0.0
    reference: str = ""
    """Set for costs read from a recipe's shipped reference (what they were measured on), not
    recorded by a build of this kind."""
    farm: str = ""
    """Set for the records of a build on a farm (its scheduler): each file's wall time and where its
    steps ran; CPU and memory are sccache's client's, the compilers ran in its server or on the
    farm. Kept under a key of their own (`farm_key`): never the hints of a build."""
    unfinished: bool = False
    """Set when the build stopped (failed or interrupted) before its wheel: `files` are the compiles
    that finished."""
    earlier: list[FileCost] = field(default_factory=list)
    """Of an unfinished build: the records it would have replaced of the files it did not reach, kept
    as hints for the next build (`with_earlier`); not part of this build's times."""

    @property
    def wall_s(self) -> float:
        return max(f.end for f in self.files) - min(f.start for f in self.files) if self.files else 0.0

    @property
    def cpu_s(self) -> float:
        return sum(f.cpu_s for f in self.files)

    @property
    def core_use(self) -> float:
        """CPU seconds over the cores' seconds while compiles ran: 1.0 is every core busy throughout."""
        return self.cpu_s / (self.wall_s * self.cores) if self.wall_s > 0 and self.cores else 0.0

    @property
    def peak_mb(self) -> float:
        return max((f.peak_mb for f in self.files), default=0.0)

    def concurrent_peak_mb(self) -> float:
        """The most the running compiles' peaks added up to at any start (a bound on their RSS)."""
        return max((sum(o.peak_mb for o in self.files if o.start <= f.start < o.end) for f in self.files),
                   default=0.0)

    def hints(self) -> dict[str, dict[str, float | int | str]]:
        """What the gate and the ordering ninja read (hints.json)."""
        basis = "reference" if self.reference else "record"
        return {f.file: {"wall_s": f.wall_s, "cpu_s": f.cpu_s, "peak_mb": f.peak_mb, "threads": f.threads,
                         "basis": basis} for f in [*self.earlier, *self.files]}

    def with_earlier(self, older: BuildCosts | None) -> BuildCosts:
        """An unfinished build's records, keeping those of `older` (the records of its kind it would
        replace) for the files it did not reach: an interrupted build loses no file's record."""
        if older is None:
            return self
        reached = {f.file for f in self.files}
        kept = {f.file: f for f in [*older.earlier, *older.files] if f.file not in reached}
        return replace(self, earlier=list(kept.values()))

    def summary(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 1), "cpu_s": round(self.cpu_s, 1),
                "core_use": round(self.core_use, 3), "files": len(self.files), "unfinished": self.unfinished,
                "peak_mb": round(self.peak_mb, 1), "concurrent_peak_mb": round(self.concurrent_peak_mb(), 1)}

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuildCosts:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in ("files", "earlier")}
        return cls(**fields, files=[FileCost.from_json(f) for f in data.get("files", ())],
                   earlier=[FileCost.from_json(f) for f in data.get("earlier", ())])


def costs_key(plan: Plan) -> str:
    what = {"recipe": plan.recipe.name, "version": plan.version, "archs": [str(a) for a in plan.archs],
            "cuda": plan.toolkit.version, "host": f"{Path(plan.host.cxx).name} {plan.host.major}"}
    return digest(what, 16)


def farm_key(plan: Plan) -> str:
    """Where a farm build's records are kept: apart from the costs its kind of build starts from."""
    return f"{costs_key(plan)}-farm"


def host_compiler_gate(tools: Path, cxx: str) -> str:
    """The gate in front of the host compiler, as one executable for torch's CXX (its ninja rule runs
    `$cxx`, and it checks CXX's path for "g++"/"clang", so the wrapper keeps the compiler's name).
    In a folder of its own, off PATH: nothing looking for `g++` by name finds it."""
    folder = tools / "host"
    folder.mkdir(exist_ok=True)
    return launcher_script(folder / Path(cxx).name, [sys.executable, str(HERE / "gate.py"), cxx])


def instrument(plan: Plan, work: Path, source_dir: Path, env: Mapping[str, str], *,
               previous: BuildCosts | None, gates_host_compiler: bool) -> dict[str, str]:
    """The build's environment with the gate and the ordering ninja in place, seeded with the
    `previous` costs of this kind (a build's records, or the recipe's reference)."""
    tools, gate_dir = work / "tools", work / "gate"
    tools.mkdir(parents=True, exist_ok=True)
    gate_dir.mkdir(parents=True, exist_ok=True)
    if previous is not None:
        (gate_dir / "hints.json").write_text(json.dumps(previous.hints()))
    gate = launcher_script(tools / "gate", [sys.executable, str(HERE / "gate.py")])
    out = {**env, "BUILDER_GATE_DIR": str(gate_dir), "BUILDER_GATE_SOURCE_ROOT": str(source_dir.resolve()),
           "BUILDER_GATE_BUDGET_MB": str(plan.jobs.memory_budget_gb * MB_PER_GB),
           "BUILDER_GATE_JOB_MB": str(plan.recipe.build.job_memory_gb * MB_PER_GB), "BUILDER_GATE": gate,
           "BUILDER_GATE_CORES": str(plan.jobs.jobs), "BUILDER_GATE_SPLIT": plan.split_mode}
    if plan.farm is not None:  # sccache runs one process per core here (builder/building/gate.py)
        out["BUILDER_GATE_LOCAL_SLOTS"] = str(plan.jobs.cores)
    nvcc = env.get("PYTORCH_NVCC", str(plan.toolkit.nvcc))
    out["PYTORCH_NVCC"] = f"{gate} {nvcc}"
    # What the ordering ninja puts in front of a build.ninja's bare `nvcc` (torch without PYTORCH_NVCC).
    out["BUILDER_NVCC_LAUNCHER"] = shlex.join([gate, env["BUILDER_SCCACHE"]]) if plan.ccache else gate
    if gates_host_compiler and not plan.ccache and env.get("CXX"):
        out["CXX"] = host_compiler_gate(tools, env["CXX"])
    launcher = f"{gate};{env['BUILDER_SCCACHE']}" if plan.ccache else gate
    for language in ("C", "CXX", "CUDA"):
        out[f"CMAKE_{language}_COMPILER_LAUNCHER"] = launcher
    path = env.get("PATH", "")
    real_ninja = shutil.which("ninja", path=os.pathsep.join([str(plan.target.python_exe.parent), path]))
    if real_ninja is not None:
        ordering = [sys.executable, str(HERE / "ninja_order.py"), real_ninja]
        out["BUILDER_NINJA"] = launcher_script(tools / "ninja", ordering)
        out["PATH"] = os.pathsep.join([str(tools), path])
    return out


def collect(plan: Plan, work: Path, *, farm: str = "") -> BuildCosts | None:
    """The gate's records of this build (on the `farm`, when it names one), or None when nothing
    compiled through it."""
    files = gate_records(work)
    if not files:
        return None
    return BuildCosts(key=farm_key(plan) if farm else costs_key(plan), recipe=plan.recipe.name, version=plan.version,
                      archs=[str(a) for a in plan.archs], cuda=plan.toolkit.version,
                      host=f"{Path(plan.host.cxx).name} {plan.host.major}", jobs=plan.jobs.jobs,
                      cores=plan.jobs.cores, memory_budget_gb=plan.jobs.memory_budget_gb, files=files,
                      created=time.time(), farm=farm)


def describe(costs: BuildCosts) -> str:
    s = costs.summary()
    split = [f"{f.file} on {f.threads} threads" for f in costs.files if f.threads > 1]
    unfinished = (f"unfinished build, {len(costs.earlier)} more file(s) kept from the records before it; "
                  if costs.unfinished else "")
    return (f"{unfinished}{s['files']} compile(s): {s['wall_s']:g} s, core use {s['core_use']:.0%}, "
            f"peak {s['peak_mb']:.0f} MB per compile, {s['concurrent_peak_mb']:.0f} MB together"
            + (f"; split: {', '.join(split)}" if split else ""))


def gate_records(work: Path) -> list[FileCost]:
    """What the gate recorded of each compile of the build in `work` that succeeded (none when nothing
    compiled through it): a compile that failed or was stopped says nothing of what the file costs."""
    records = work / "gate" / "records.jsonl"
    if not records.is_file():
        return []
    found = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    return [FileCost.from_json(record) for record in found if record.get("returncode", 0) == 0]
