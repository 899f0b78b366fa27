"""The command line: a thin layer over the library (builder.api and the stages' modules).

`main` parses the arguments, resolves the settings cascade once (the options are its last layer),
runs the command and renders its answer. Errors arrive as BuilderError and leave as one line (plus
a hint) and the error's exit code, the traceback only with --debug; --json prints one JSON
document on stdout (for a failure: {"error", "kind", "exit_code", ...}). An OSError that no stage
turned into an error of its own (a full disk, a permission, a path that is a file) is the last
resort: it leaves the same way, as a FileAccessError. Every command runs inside
children_end_with_builder (builder/lifetime.py): Ctrl-C, SIGTERM and SIGHUP end the compilers it
started and exit with 128 + the signal's number (130, 143, 129).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

from builder.cli.commands import (
    cmd_build,
    cmd_config,
    cmd_doctor,
    cmd_fetch,
    cmd_install,
    cmd_plan,
    cmd_recipes,
    cmd_stats,
    cmd_toolchain,
    cmd_uninstall,
)
from builder.cli.display import Output, RichReporter, report_error
from builder.cli.fleet_commands import cmd_ci, cmd_farm, cmd_matrix
from builder.cli.parser import build_parser, command_line_settings
from builder.cli.recipe_commands import cmd_recipe
from builder.cli.store_commands import cmd_cache, cmd_index_url
from builder.errors import BuilderError, FileAccessError, UsageError
from builder.lifetime import Interrupted, children_end_with_builder
from builder.settings import load_settings
from builder.workspace import Workspace

Command = Callable[[argparse.Namespace, Workspace, Output], int]
COMMANDS: dict[str, Command] = {
    "build": cmd_build, "plan": cmd_plan, "recipes": cmd_recipes, "config": cmd_config, "fetch": cmd_fetch,
    "matrix": cmd_matrix, "ci": cmd_ci, "cache": cmd_cache, "install": cmd_install, "uninstall": cmd_uninstall,
    "stats": cmd_stats, "doctor": cmd_doctor, "toolchain": cmd_toolchain, "index-url": cmd_index_url,
    "recipe": cmd_recipe, "farm": cmd_farm,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:  # not yet known whether --json was asked for: the line alone
        report_error(exc)
        return exc.exit_code
    out = Output(getattr(args, "json", False))
    try:
        with children_end_with_builder():
            try:
                settings = load_settings(command_line_settings(args))
                ws = Workspace.open(settings, reporter=RichReporter(quiet=out.as_json))
                return COMMANDS[args.command](args, ws, out)
            except OSError as exc:
                if getattr(args, "debug", False):
                    raise
                raise FileAccessError.from_os_error(exc) from exc
    except BuilderError as exc:
        if getattr(args, "debug", False):
            raise
        report_error(exc)
        out.emit(exc.to_json())
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (Interrupted): the children have ended
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        name = signal.Signals(signum).name
        print(f"interrupted ({name})", file=sys.stderr)
        out.emit({"error": f"interrupted ({name})", "kind": "Interrupted", "exit_code": 128 + signum})
        return 128 + signum
