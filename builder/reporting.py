"""Progress of long work, told to a Reporter.

The library reports through the `Reporter` protocol and never prints. `LoggingReporter` (the
default) writes to the `builder` logger; the CLI's rich display (builder/cli/display.py) is another
implementation, and `Steps` times each pipeline step for the build's result.

A compile's progress comes from the build tool's own output: ninja's `[n/N]` lines (and cmake's,
which drives ninja) are parsed once here into (done, total, what).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

LOG = logging.getLogger("builder")
_NINJA_RE = re.compile(r"^\s*\[(\d+)/(\d+)\]\s*(.*)$")
_SOURCE_RE = re.compile(r"(\S+\.(?:cu|cpp|cc|c))\b")


class Reporter(Protocol):
    """Where the progress of a build goes."""

    def say(self, message: str) -> None:
        """One line of news: a cache hit, a warning, where a kept build directory is."""

    def step_started(self, key: str, label: str) -> None:
        """A pipeline step (plan, fetch, patch, compile, store, install, verify, ...) begins."""

    def step_finished(self, key: str, seconds: float) -> None:
        """The step of `key` ended after `seconds`."""

    def compile_progress(self, label: str) -> AbstractContextManager[Callable[[int, int, str], None]]:
        """While a compile runs: a callback given (files done, files in all, the file now compiling)."""


class LoggingReporter:
    """Reports to the `builder` logger: steps and news at INFO, each compiled file at DEBUG."""

    def __init__(self, logger: logging.Logger = LOG) -> None:
        self.logger = logger

    def say(self, message: str) -> None:
        self.logger.info(message)

    def step_started(self, key: str, label: str) -> None:
        self.logger.info("==> %s", label)

    def step_finished(self, key: str, seconds: float) -> None:
        self.logger.info("    %s done in %.1fs", key, seconds)

    @contextmanager
    def compile_progress(self, label: str) -> Iterator[Callable[[int, int, str], None]]:
        yield lambda done, total, what: self.logger.debug("    [%d/%d] %s", done, total, what)


def compile_line_parser(update: Callable[[int, int, str], None]) -> Callable[[str], None]:
    """A build-output line handler that reports ninja's `[n/N] ...` lines through `update`, counted
    over the whole build. A setup.py runs one ninja per extension, one after another or side by
    side, each counting from 1. Printing to a pipe, ninja writes a line as each edge finishes (its
    default status "[%f/%t] ", %f the edges finished), so every line is one more done, and a run's
    first line, [1/N], adds its N to the total."""
    done = total = 0

    def on_line(line: str) -> None:
        nonlocal done, total
        match = _NINJA_RE.match(line)
        if match is None:
            return
        done += 1
        if int(match[1]) == 1:
            total += int(match[2])
        total = max(total, done)
        source = _SOURCE_RE.search(match[3])
        what = source[1].rsplit("/", 1)[-1] if source else match[3][:60]
        update(done, total, what)
    return on_line


class Steps:
    """Times the pipeline's steps for the result, telling the reporter as each begins and ends."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.timings: dict[str, float] = {}
        """Seconds each finished step took, by its key."""

    @contextmanager
    def __call__(self, key: str, label: str | None = None) -> Iterator[None]:
        start = time.monotonic()
        self.reporter.step_started(key, label or key)
        yield
        self.timings[key] = round(time.monotonic() - start, 2)
        self.reporter.step_finished(key, self.timings[key])
