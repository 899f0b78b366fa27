"""What the CLI shows: the rich progress display (a Reporter), command output as text or one JSON
document, and an error as one line with its hint."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from builder.errors import BuilderError, BuildError, VerifyError


class RichReporter:
    """Progress on stderr: a line per step and its time; a bar over ninja's [n/N] on a terminal,
    a line per compiled file elsewhere (a CI log); nothing at all when `quiet` (--json)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def step_started(self, key: str, label: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold]==>[/bold] {escape(label)}")

    def step_finished(self, key: str, seconds: float) -> None:
        self.say(f"    {key} done in {seconds:.1f}s")

    @contextmanager
    def compile_progress(self, label: str) -> Iterator[Callable[[int, int, str], None]]:
        if self.quiet:
            yield lambda done, total, what: None
            return
        if not sys.stderr.isatty():
            yield lambda done, total, what: self.say(f"    [{done}/{total}] {what}")
            return
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=self.console, transient=True)
        task = progress.add_task(label, total=None)
        with progress:
            yield lambda done, total, what: progress.update(task, completed=done, total=total,
                                                            description=f"{label}: {what}")


# How wide output that goes to a pipe or a file may be (rich would take 80 columns): wide enough that
# a table keeps each cell on one line, as `grep` and a CI log want it; COLUMNS still decides.
PIPED_WIDTH = 1000


class Output:
    """A command's result: rendered as text, or with --json as one JSON document on stdout."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=True)
        if not self.console.is_terminal and not os.environ.get("COLUMNS"):
            self.console.width = PIPED_WIDTH

    def emit(self, data: Any, render: Callable[[], None] | None = None) -> None:
        if self.as_json:
            print(json.dumps(data, indent=2, default=str))
        elif render is not None:
            render()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False)


def report_error(exc: BuilderError) -> None:
    """The error as one line on stderr, then where its log is and its hint."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"[bold red]error:[/bold red] {escape(exc.message)}", markup=True)
    if isinstance(exc, BuildError):
        if exc.cause_line and exc.cause_line != exc.first_error:
            err.print(f"  seen in: {exc.cause_line}", markup=False)
        if exc.first_error:
            err.print(f"  first error: {exc.first_error}", markup=False)
        if exc.log_path:
            err.print(f"  full log: {exc.log_path}", markup=False)
    if isinstance(exc, VerifyError) and exc.output_tail:
        err.print(f"  its last {len(exc.output_tail)} lines of output:", markup=False)
        for line in exc.output_tail:
            err.print(f"    {line}", markup=False)
    if exc.hint:
        err.print(f"  hint: {exc.hint}", markup=False)
