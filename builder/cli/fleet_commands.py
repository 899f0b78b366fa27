"""`builder matrix`, `builder matrix build` and `builder ci github`: many builds at once."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from builder.cli.display import Output
from builder.errors import BuildError, UsageError
from builder.files import write_text_atomic
from builder.fleet.ci_github import DEFAULT_RUNNER_LABELS, render_workflow
from builder.fleet.ci_sources import cells_in_repository, repository_root, workflow_requirement
from builder.fleet.matrix import AXES, Cell, MatrixSpec, expand, filter_cells, github_matrices
from builder.fleet.matrix_build import CellOutcome, run_matrix
from builder.planning.target import running_torch
from builder.workspace import Workspace


def matrix_cells(args: argparse.Namespace, ws: Workspace) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    """The cells the matrix file or the axis flags make: (to build, dropped with the reason)."""
    axes = {axis: [v for value in getattr(args, f"axis_{axis}") for v in value.split(",") if v]
            for axis in AXES}
    if args.matrix_file and any(axes.values()):
        raise UsageError("give either --matrix-file or the axis flags, not both")
    if args.matrix_file:
        spec = MatrixSpec.from_toml(args.matrix_file, ws.recipes)
    else:
        axes["python"] = axes["python"] or [f"{sys.version_info.major}.{sys.version_info.minor}"]
        if not axes["torch"]:
            torch = running_torch()
            if torch is None:
                raise UsageError("no --torch given and no torch installed here", hint="pass --torch V")
            axes["torch"] = [torch]
        spec = MatrixSpec.from_mapping(axes, "matrix flags", ws.recipes)
    return filter_cells(expand(spec, ws.recipes), ws.recipes, ws.torch_cuda)


def cmd_matrix(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    if args.matrix_command == "build":
        return cmd_matrix_build(args, ws, out)
    kept, dropped = matrix_cells(args, ws)
    if args.format == "github":
        matrices = github_matrices(kept)
        out.emit(matrices, lambda: print(json.dumps(matrices, indent=2)))
        return 0
    data = {"cells": [c.to_json() for c in kept],
            "dropped": [{**c.to_json(), "reason": reason} for c, reason in dropped]}

    def render() -> None:
        table = Table(*AXES, "status")
        for cell in kept:
            table.add_row(*cell.to_json().values(), "build")
        for cell, reason in dropped:
            table.add_row(*cell.to_json().values(), escape(f"skip: {reason}"))
        out.console.print(table)
        out.line(f"{len(kept)} to build, {len(dropped)} dropped")
    out.emit(data, render)
    return 0


def cmd_matrix_build(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    kept, dropped = matrix_cells(args, ws)
    skipped = [CellOutcome(cell, "skipped", reason, 0.0) for cell, reason in dropped]

    def done(outcome: CellOutcome) -> None:
        if not args.json:
            out.line(f"{outcome.status:>9}  {outcome.cell.label}  ({outcome.seconds:.0f} s)")
    outcomes = run_matrix(kept, ws, parallel=args.parallel, cache_url=ws.settings.cache_url,
                          memory_budget_gb=ws.settings.memory_budget, on_done=done) + skipped

    def render() -> None:
        table = Table("cell", "status", "seconds", "detail")
        for o in outcomes:
            table.add_row(o.cell.label, o.status, f"{o.seconds:.0f}", escape(o.detail))
        out.console.print(table)
    out.emit([o.to_json() for o in outcomes], render)
    return BuildError.exit_code if any(o.status == "failed" for o in outcomes) else 0


def cmd_ci(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    kept, dropped = matrix_cells(args, ws)
    if not kept:
        raise UsageError("every cell of the matrix was dropped; nothing to build",
                         hint="`builder matrix` with the same arguments shows why")
    repository = repository_root(args.output.parent, Path.cwd())
    cells, recipe_path = cells_in_repository(kept, ws.recipes, repository)
    requirement = workflow_requirement(args.builder_source, repository, Path.cwd())
    text = render_workflow(cells, runner_labels=tuple(args.runner_label) or DEFAULT_RUNNER_LABELS,
                           cache_url=args.cache_url_expr, builder_requirement=requirement, recipe_path=recipe_path)
    write_text_atomic(args.output, text)
    data = {"output": str(args.output), "cells": len(kept), "dropped": len(dropped)}
    out.emit(data, lambda: out.line(f"wrote {args.output}: {len(kept)} cells ({len(dropped)} dropped)"))
    return 0
