"""Memory-aware parallelism: how many compile jobs fit in this machine's cores and RAM."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

GIB = 1024**3


@dataclass(frozen=True)
class JobPlan:
    """How many compiles run at once, and why."""

    jobs: int
    cores: int
    available_gb: float
    job_memory_gb: float
    reason: str


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def plan_jobs(job_memory_gb: float, requested: int | None = None) -> JobPlan:
    """jobs = min(cores, available RAM // memory of one job), never below 1; `requested` wins."""
    cores = usable_cores()
    available_gb = psutil.virtual_memory().available / GIB
    if requested is not None:
        return JobPlan(requested, cores, available_gb, job_memory_gb, "set with --jobs")
    by_memory = int(available_gb // job_memory_gb) if job_memory_gb > 0 else cores
    jobs = max(1, min(cores, by_memory))
    limit = "cores" if jobs == cores else f"{available_gb:.0f} GB free / {job_memory_gb:g} GB per job"
    return JobPlan(jobs, cores, available_gb, job_memory_gb, f"limited by {limit}")
