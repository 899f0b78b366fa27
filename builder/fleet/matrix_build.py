"""`builder matrix build`: the cells of a matrix built on this machine.

Sources are fetched once per (recipe, version) before any cell starts; --torch build envs are
cached venvs shared by the cells that ask for the same torch. Cells run `parallel` at a time,
each with its share of the cores, and a cell starts only while the running cells' expected
memory (jobs x the recipe's job_memory_gb) leaves room for it in the budget; a cell larger than
the whole budget runs alone. Every cell ends as built, cache hit, skipped (with the reason) or
failed (with the log), never stopping the others.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import BuilderError, BuildError
from builder.fleet.matrix import Cell
from builder.pipeline import build
from builder.planning.jobs import plan_jobs
from builder.planning.request import Request
from builder.planning.target import probe_interpreter
from builder.reporting import LoggingReporter
from builder.workspace import Workspace


@dataclass(frozen=True)
class CellOutcome:
    """How one cell ended."""

    cell: Cell
    status: str
    """"built", "cache hit", "skipped" or "failed"."""
    detail: str
    """The wheel, the reason it was skipped, or the error and its log."""
    seconds: float
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"cell": self.cell.to_json(), "status": self.status, "detail": self.detail,
                "seconds": round(self.seconds, 1), "cache_key": self.key}


class MemoryBudget:
    """Admits cells while the memory they expect to use fits; one cell always may run."""

    def __init__(self, budget_gb: float) -> None:
        self.budget_gb = budget_gb
        self.in_use_gb = 0.0
        self.running = 0
        self._changed = threading.Condition()

    @contextmanager
    def admit(self, need_gb: float) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self.running == 0 or self.in_use_gb + need_gb <= self.budget_gb)
            self.in_use_gb += need_gb
            self.running += 1
        try:
            yield
        finally:
            with self._changed:
                self.in_use_gb -= need_gb
                self.running -= 1
                self._changed.notify_all()


def interpreter_for(version: str) -> Path | None:
    """An interpreter of Python `version` (X.Y): this one, or pythonX.Y on PATH."""
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        return Path(sys.executable)
    found = shutil.which(f"python{version}")
    return Path(found) if found else None


def request_for(cell: Cell, python: Path, jobs: int, cache_url: str | None) -> Request:
    """A build request for one cell; the interpreter's own torch is used when it is the cell's.
    Companions are not built inside a cell: each recipe of the matrix is its own cell."""
    target = probe_interpreter(python)
    same_torch = (target.torch or "").split("+")[0] == cell.torch
    return Request(recipe=cell.recipe, version=cell.version, cuda=cell.cuda,
                   archs=(cell.arch,) if cell.arch else (),
                   torch=None if same_torch else cell.torch, python=str(python), jobs=jobs,
                   cache_url=cache_url, install=False, companions=False)


def prefetch(cells: list[Cell], ws: Workspace) -> None:
    """Each cell's source, once per (recipe, version), before the cells start."""
    for recipe_name, version in sorted({(c.recipe, c.version) for c in cells}):
        _, spec = ws.recipes.load(recipe_name).source_for(version)
        ws.fetch(spec)


def run_cell(cell: Cell, ws: Workspace, budget: MemoryBudget, jobs: int, cache_url: str | None) -> CellOutcome:
    start = time.monotonic()
    python = interpreter_for(cell.python)
    if python is None:
        return CellOutcome(cell, "skipped", f"no python{cell.python} on this machine", 0.0)
    recipe = ws.recipes.load(cell.recipe)
    try:
        with budget.admit(jobs * recipe.build.job_memory_gb):
            result = build(request_for(cell, python, jobs, cache_url), ws)
    except BuildError as exc:
        where = f" (log: {exc.log_path})" if exc.log_path else ""
        return CellOutcome(cell, "failed", f"{exc.message}{where}", time.monotonic() - start)
    except BuilderError as exc:
        return CellOutcome(cell, "failed", exc.message, time.monotonic() - start)
    status = "cache hit" if result.cache_hit else "built"
    return CellOutcome(cell, status, result.entry.wheel.name, time.monotonic() - start, result.entry.key)


def run_matrix(cells: list[Cell], ws: Workspace, *, parallel: int = 1, cache_url: str | None = None,
               memory_budget_gb: float | None = None,
               on_done: Callable[[CellOutcome], None] | None = None) -> list[CellOutcome]:
    """Build every cell; outcomes in the cells' order. `on_done` sees each as it finishes."""
    ws = ws.with_reporter(LoggingReporter(logging.getLogger("builder.matrix")))
    prefetch(cells, ws)
    machine = plan_jobs(job_memory_gb=0)
    jobs = max(1, machine.cores // parallel)
    budget = MemoryBudget(memory_budget_gb if memory_budget_gb is not None else machine.available_gb)

    def one(cell: Cell) -> CellOutcome:
        outcome = run_cell(cell, ws, budget, jobs, cache_url)
        if on_done is not None:
            on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, cells))
