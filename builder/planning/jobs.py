"""Memory-aware parallelism: how many compiles run at once, and the memory they may use together.

Backends whose compilers run through the compile gate (`Backend.gated`, builder/building/gate.py)
start one job per core and let the gate admit each compile while its expected peak fits in the
memory budget; the others get jobs = min(cores, budget // memory of one job).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

GIB = 1024**3
# The default budget: this fraction of the memory available when the build starts; the rest is
# left to the system, the page cache and the compiles the estimate underrates.
SAFE_FRACTION = 0.8


@dataclass(frozen=True)
class JobPlan:
    """How many compiles run at once, within which memory, and why."""

    jobs: int
    cores: int
    available_gb: float
    job_memory_gb: float
    reason: str
    memory_budget_gb: float = 0.0
    gated: bool = False
    """Compiles are admitted by the gate under memory_budget_gb."""


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def plan_jobs(job_memory_gb: float, cap: int | None = None, *, cap_origin: str = "--jobs",
              budget_gb: float | None = None, gated: bool = False, farm_cpus: int = 0) -> JobPlan:
    """A job per core under the gate (and per CPU of a build farm's servers), else min(cores,
    budget // memory of one job), never below 1; then at most `cap` (the jobs setting: --jobs,
    BUILDER_JOBS or the user's MAX_JOBS), the reason naming where the cap came from."""
    cores = usable_cores()
    available_gb = psutil.virtual_memory().available / GIB
    budget = budget_gb if budget_gb is not None else round(available_gb * SAFE_FRACTION, 1)
    if gated and farm_cpus:
        jobs, reason = cores + farm_cpus, (f"one per core here and per farm CPU ({cores} + {farm_cpus}); each "
                                           f"compile admitted while the heaviest {cores} running (sccache runs "
                                           f"one process per core here) fit in {budget:g} GB")
    elif gated:
        jobs, reason = cores, f"one per core; each compile admitted while its expected peak fits in {budget:g} GB"
    else:
        by_memory = int(budget // job_memory_gb) if job_memory_gb > 0 else cores
        jobs = max(1, min(cores, by_memory))
        reason = "limited by " + ("cores" if jobs == cores else f"{budget:g} GB budget / {job_memory_gb:g} GB per job")
    if cap is not None and cap < jobs:
        jobs, reason = cap, f"capped at {cap} by {cap_origin} ({reason.split(';')[0]} would be {jobs})"
    elif cap is not None:
        reason += f" (within the cap of {cap} from {cap_origin})"
    return JobPlan(jobs, cores, available_gb, job_memory_gb, reason, memory_budget_gb=budget, gated=gated)
