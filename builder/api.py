"""builder as a library: the functions the CLI is a thin layer over.

    from builder import BuildRequest, build, plan

    report = plan(BuildRequest("causal-conv1d", archs=("86",)))
    print(report.plan.key, report.commands)
    result = build(BuildRequest("causal-conv1d", archs=("86",)))
    print(result.entry.wheel, result.verified)

Each call resolves the settings cascade once (pass `settings=load_settings(...)` to choose) and
reports progress to `reporter` (default: the `builder` logger). Errors are BuilderError
subclasses carrying a message, a hint and an exit code; nothing here prints or exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.building.backends import get_backend
from builder.delivery.destination import install_mode
from builder.errors import CacheError
from builder.pipeline import BuildResult, CheckResult, pin_preview, prepare
from builder.pipeline import build as run_build
from builder.pipeline import check as run_check
from builder.planning.plan import Plan
from builder.planning.recipe import Recipe
from builder.planning.request import Request
from builder.reporting import Reporter
from builder.settings import Settings
from builder.workspace import Workspace

BuildRequest = Request


@dataclass(frozen=True)
class PlanReport:
    """What a build would do: the plan, its commands, whether the cache has it already, and how
    the package's own requirement pins would be rewritten."""

    plan: Plan
    commands: list[list[str]]
    cache_hit: bool
    pin_rewrites: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "commands": self.commands, "cache_hit": self.cache_hit,
                "pin_rewrites": self.pin_rewrites}


@dataclass(frozen=True)
class RecipeInfo:
    """A recipe a user can name, and where it comes from ("shipped" or a recipe-path folder)."""

    recipe: Recipe
    origin: str

    def to_json(self) -> dict[str, Any]:
        r = self.recipe
        return {"name": r.name, "backend": r.backend, "default_version": r.default_version,
                "versions": sorted(r.versions), "description": r.description, "origin": self.origin,
                "path": str(r.path),
                "variants": {v.name: {"choices": list(v.choices), "default": v.default, "multi": v.multi,
                                      "description": v.description} for v in r.variants.values()}}


def workspace(settings: Settings | None = None, reporter: Reporter | None = None) -> Workspace:
    return Workspace.open(settings, reporter=reporter)


def plan(request: Request, *, settings: Settings | None = None, reporter: Reporter | None = None,
         ws: Workspace | None = None) -> PlanReport:
    """Resolve what `build` would do, building nothing (a --torch venv is predicted, not made)."""
    ws = ws or workspace(settings, reporter)
    resolved = prepare(request, ws, make_env=False)
    if request.install_mode != "auto":  # refused here as a build would refuse it
        install_mode(request, resolved.recipe, resolved.target.python_exe)
    commands = get_backend(resolved.backend).commands(resolved, Path("<src>"), Path("<out>"))
    try:
        cached = ws.cache.get(resolved.key) is not None
    except CacheError:
        cached = False  # a corrupt entry: a build makes it again
    return PlanReport(resolved, commands, cached,
                      [change.describe() for change in pin_preview(resolved, ws)])


def build(request: Request, *, settings: Settings | None = None, reporter: Reporter | None = None,
          ws: Workspace | None = None) -> BuildResult:
    """Build (or find in the cache), install and verify what `request` asks for."""
    return run_build(request, ws or workspace(settings, reporter))


def check(request: Request, *, settings: Settings | None = None, reporter: Reporter | None = None,
          ws: Workspace | None = None) -> CheckResult:
    """Rebuild a cached build in a fresh work directory and compare the wheels file by file."""
    return run_check(request, ws or workspace(settings, reporter))


def recipes(*, settings: Settings | None = None, ws: Workspace | None = None) -> list[RecipeInfo]:
    """Every recipe a user can name: their recipe-path folders' first, then the shipped ones."""
    ws = ws or workspace(settings)
    book = ws.recipes
    return [RecipeInfo(book.load(str(path)), book.origin(path)) for path in book.available().values()]
