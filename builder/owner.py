"""Who holds something (a cache key's lock, a build directory): the process, when it started, on
which host, its command, since when, and the process groups it started there.

A pid alone can name another process after a restart or pid reuse, so an owner is alive only when
a process of that pid exists with the same start time (psutil's create_time) on this host. An
owner on another host cannot be checked from here: its liveness is unknown (None).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from builder.files import write_text_atomic

COMMAND_CHARS = 160
REPORT_EVERY = 30.0
"""Seconds between the lines that tell a waiting user how long it has been."""


@dataclass(frozen=True)
class Owner:
    pid: int
    started: float
    """The process's start time (psutil create_time, seconds since the epoch)."""
    host: str
    command: str
    since: float
    """When it took hold (seconds since the epoch)."""
    groups: tuple[int, ...] = field(default=())
    """The process groups it started while holding (its compilers run in them)."""

    @classmethod
    def me(cls) -> Owner:
        """This process, taking hold now."""
        process = psutil.Process()
        return cls(pid=process.pid, started=process.create_time(), host=socket.gethostname(),
                   command=short_command(process.cmdline()), since=time.time())

    def with_group(self, pgid: int) -> Owner:
        return replace(self, groups=(*self.groups, pgid))

    def alive(self) -> bool | None:
        """Whether this owner still runs: None when it is on another host (cannot be told)."""
        if self.host != socket.gethostname():
            return None
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 0.5
        except psutil.Error:
            return False

    def is_me(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()

    def describe(self) -> str:
        """e.g. "pid 4242 (python -m builder build flash-attn) on gpu1 since 09:04:10"."""
        since = time.strftime("%H:%M:%S", time.localtime(self.since))
        day = time.strftime("%Y-%m-%d ", time.localtime(self.since))
        today = time.strftime("%Y-%m-%d ", time.localtime())
        return f"pid {self.pid} ({self.command}) on {self.host} since {'' if day == today else day}{since}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "groups": list(self.groups)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Owner:
        return cls(pid=int(data["pid"]), started=float(data["started"]), host=str(data["host"]),
                   command=str(data.get("command", "")), since=float(data.get("since", 0.0)),
                   groups=tuple(int(g) for g in data.get("groups", ())))


def short_command(argv: list[str]) -> str:
    """e.g. "python -m builder build flash-attn --arch 86": the program's name, not its path, and
    an ellipsis past COMMAND_CHARS."""
    text = " ".join([Path(argv[0]).name, *argv[1:]]) if argv else "?"
    return text if len(text) <= COMMAND_CHARS else text[:COMMAND_CHARS - 3] + "..."


def read_owner(path: Path) -> Owner | None:
    """The owner recorded at `path`; None when there is none (or the record is unreadable)."""
    try:
        return Owner.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_owner(path: Path, owner: Owner) -> None:
    write_text_atomic(path, json.dumps(owner.to_json(), indent=1))


def waited(seconds: float) -> str:
    """e.g. "45s", "2m30s", "1h05m"."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def wait_reporting(done: Callable[[float], bool], say: Callable[[str], None], what: str) -> None:
    """Wait until `done(timeout)` (which itself waits up to `timeout` seconds) is true, telling
    `say` every REPORT_EVERY seconds how long it has been."""
    start = time.monotonic()
    while not done(REPORT_EVERY):
        say(f"    still waiting for {what} ({waited(time.monotonic() - start)} so far)")
