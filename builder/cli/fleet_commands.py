"""`builder matrix`, `builder matrix build`, `builder ci github` and `builder farm`: many builds at once,
and one build over many machines."""

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
from builder.fleet import farm
from builder.fleet.ci_github import DEFAULT_RUNNER_LABELS, render_workflow
from builder.fleet.ci_sources import cells_in_repository, repository_root, workflow_requirement
from builder.fleet.matrix import AXES, Cell, MatrixSpec, expand, filter_cells, github_matrices
from builder.fleet.matrix_build import CellOutcome, run_matrix
from builder.planning.farm import farm_status
from builder.planning.plan import find_sccache
from builder.planning.target import running_torch
from builder.process import call
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
        # As `builder plan` takes torch's CUDA: that of each torch release's build on the index.
        axes["cuda"] = axes["cuda"] or sorted({ws.torch_cuda(torch) for torch in axes["torch"]})
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


def cmd_farm(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    """`builder farm scheduler|server|status`: builder/fleet/farm.py."""
    return {"scheduler": farm_scheduler, "server": farm_server, "status": farm_status_command}[args.farm_command](
        args, ws, out)


def farm_scheduler(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    listen = farm.address(args.listen, "--listen")
    folder = ws.cache.dir("farm")
    made = farm.tokens(folder)
    config = farm.write_config(folder / "scheduler.toml", farm.scheduler_config(listen, made))
    host, port = listen.rsplit(":", 1)
    shown = f"http://{host if host not in ('0.0.0.0', '::') else '<this host>'}:{port}"
    for line in (f"scheduler on {listen} (config {config})",
                 f"builds:  BUILDER_FARM={shown} BUILDER_FARM_TOKEN_FILE=<a copy of {made.client}>",
                 f"servers: builder farm server --scheduler {shown} --token-file <a copy of {made.server}>"):
        ws.reporter.say(line)
    run_service([farm.sccache_dist(), "scheduler", "--config", str(config)], ws, "farm-scheduler",
                "sccache-dist scheduler")
    return 0


def farm_server(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    scheduler = args.scheduler.rstrip("/")
    if not scheduler.startswith(("http://", "https://")):
        raise UsageError(f"--scheduler {scheduler!r} is not the scheduler's http(s)://host:port URL")
    public = farm.address(args.addr, "--addr")
    token = farm.read_token(args.token_file)
    bwrap = farm.check_sandbox()
    folder = ws.cache.dir("farm") / f"server-{public.rsplit(':', 1)[1]}"
    config = farm.write_config(folder / "server.toml",
                               farm.server_config(scheduler, public, token, folder, bwrap))
    ws.reporter.say(f"build server {public} for {scheduler} (config {config}, sandboxes by {bwrap})")
    run_service([*farm.cpu_list(args.cores), farm.sccache_dist(), "server", "--config", str(config)], ws,
                f"farm-server-{public.rsplit(':', 1)[1]}", "sccache-dist server")
    return 0


def farm_status_command(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    chosen = ws.farm()
    if chosen is None:
        raise UsageError("no farm is set", hint="--farm URL, BUILDER_FARM or the config file's farm = \"...\"")
    status = farm_status(find_sccache(Path(sys.executable), ws.environ.get("PATH", "")), chosen)
    out.emit({"url": status.url, "servers": status.servers, "cpus": status.cpus, "in_progress": status.in_progress},
             lambda: out.line(status.describe()))
    return 0


def run_service(command: list[str], ws: Workspace, name: str, what: str) -> None:
    """A farm process in the foreground until it ends or builder is stopped (Ctrl-C, SIGTERM: it
    ends with builder), its output shown and logged."""
    log = ws.cache.dir("logs") / f"{name}.log"
    ws.reporter.say(f"log: {log}; Ctrl-C stops it")
    call(command, log_path=log, env={**ws.environ, "SCCACHE_NO_DAEMON": "1"}, on_line=ws.reporter.say,
         what=what)
