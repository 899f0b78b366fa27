"""Progress over a long build: ninja's `[n/N]` lines (and make's, through a counter) as a bar.

`StepReporter` prints one line per pipeline step to stderr; `CompileProgress` turns the build's
output lines into a rich progress bar. Both stay silent when `quiet` (used by --json).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_NINJA_RE = re.compile(r"^\s*\[(\d+)/(\d+)\]\s*(.*)$")
_SOURCE_RE = re.compile(r"(\S+\.(?:cu|cpp|cc|c))\b")


class StepReporter:
    """One line per pipeline step, with the time it took."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.timings: dict[str, float] = {}
        """Seconds each finished step took, by its key."""

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def step(self, key: str, label: str | None = None) -> Iterator[None]:
        """Announce a step, time it, and record the time under `key`."""
        start = time.monotonic()
        self.say(f"[bold]==>[/bold] {label or key}")
        yield
        self.timings[key] = round(time.monotonic() - start, 2)
        self.say(f"    {key} done in {self.timings[key]:.1f}s")


class CompileProgress:
    """Feed build output lines to `on_line`; shows [n/N] as a bar while the build runs."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.quiet = quiet or not sys.stderr.isatty()
        self.label = label
        self.done = 0
        self.total: int | None = None
        self._progress: Progress | None = None
        self._task: object = None
        self._plain = Console(stderr=True, highlight=False, soft_wrap=True)
        self._quiet_all = quiet

    def __enter__(self) -> CompileProgress:
        if not self.quiet:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=Console(stderr=True), transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_line(self, line: str) -> None:
        match = _NINJA_RE.match(line)
        if match is None:
            return
        self.done, self.total = int(match[1]), int(match[2])
        source = _SOURCE_RE.search(match[3])
        what = source[1].rsplit("/", 1)[-1] if source else match[3][:60]
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, total=self.total,  # type: ignore[arg-type]
                                  description=f"{self.label}: {what}")
        elif not self._quiet_all:
            self._plain.print(f"    [{self.done}/{self.total}] {what}", highlight=False)
