"""Children end with builder: every long-running child (pip wheel -> setuptools -> ninja -> nvcc,
make, cmake) runs in a session of its own, and every way out of builder ends that session.

`builder.process.call` starts each child with start_new_session (its pid is then the id of its
session and of its process group) and ends the session when the call returns or raises: SIGTERM
to every member, SIGKILL after GRACE_SECONDS, waiting until none is left. The session, not only
the group, because ninja puts each compile in a process group of its own (ninja
src/subprocess-posix.cc, POSIX_SPAWN_SETPGROUP) inside the same session. A child in its own
session does not see the terminal's Ctrl-C, so builder alone decides when it stops.

`children_end_with_builder()` is the guard around a command (the CLI wraps every command in it; a
library user can too): in the main thread it turns SIGINT, SIGTERM and SIGHUP into `Interrupted`,
a KeyboardInterrupt, so all unwind the same way (context managers remove temp dirs, the build
directory is kept), after sending SIGTERM to every live session at once so that builds running in
other threads (`builder matrix`) stop too; a second signal sends SIGKILL. On its way out it ends
every session still live.

kill -9 of builder cannot be caught: each session's leader, builder/session_guard.py, sees builder
gone within a second and ends its session itself; should that fail too, the next build of the key
finds what is left through the build directory's owner record (builder/building/workdir.py) and
ends it with `end_processes`.

`SESSIONS` is process-wide state, as the set of a process's children is (subprocess keeps such a
list too).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

import psutil

GRACE_SECONDS = 5.0
"""How long children have after SIGTERM before SIGKILL."""
POLL_SECONDS = 0.1
KILL_ROUNDS = 10
# SIGHUP too: when the terminal closes, children in sessions of their own are not told.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised in the main thread; a KeyboardInterrupt, so code that cleans up
    after Ctrl-C cleans up after SIGTERM the same way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by a signal: 128 + its number (130, 143, 129)."""
        return 128 + self.signum


def session_members(sid: int, *, not_before: float | None = None) -> list[psutil.Process]:
    """The running (not zombie) processes of session `sid`; with `not_before`, only those started
    since then (an id from an old record may have been reused since)."""
    members = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) != sid:
                continue
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if not_before is not None and process.create_time() < not_before - 1:
                continue
        except (OSError, psutil.Error):
            continue
        members.append(process)
    return members


def _send(processes: Iterable[psutil.Process], signum: int) -> None:
    for process in processes:
        with suppress(psutil.Error):
            process.send_signal(signum)


def _wait_gone(find: Callable[[], list[psutil.Process]], seconds: float,
               reap: Callable[[], object] | None) -> list[psutil.Process]:
    """Members still running after waiting up to `seconds` for none to be left."""
    deadline = time.monotonic() + seconds
    while True:
        if reap is not None:
            reap()
        left = find()
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_SECONDS)


def end_processes(find: Callable[[], list[psutil.Process]], *, grace: float = GRACE_SECONDS,
                  reap: Callable[[], object] | None = None) -> int:
    """End what `find` lists: SIGTERM, then SIGKILL after `grace` seconds (again to what a dying
    process started meanwhile), waiting until none is left (or, for a process the kernel holds
    in an uninterruptible wait, giving up after KILL_ROUNDS). `reap` collects a child of ours
    (Popen.poll) so it does not linger as a zombie. Returns how many were running."""
    running = find()
    if not running:
        return 0
    _send(running, signal.SIGTERM)
    left = _wait_gone(find, grace, reap)
    for _ in range(KILL_ROUNDS):
        if not left:
            break
        _send(left, signal.SIGKILL)
        left = _wait_gone(find, 1.0, reap)
    return len(running)


def end_session(sid: int, *, grace: float = GRACE_SECONDS, reap: Callable[[], object] | None = None) -> int:
    """End every process of session `sid` (see `end_processes`)."""
    return end_processes(lambda: session_members(sid), grace=grace, reap=reap)


class Sessions:
    """The sessions of builder's children that are not yet ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._watchers: dict[int, list[Callable[[int], None]]] = {}
        self.stopping: int | None = None
        """The signal builder is stopping for; no new child starts once it is set."""

    def add(self, sid: int) -> None:
        """Record a started session (and tell this thread's watchers); one started after a stop
        signal is ended at once and Interrupted raised."""
        with self._lock:
            self._live.add(sid)
            watchers = list(self._watchers.get(threading.get_ident(), ()))
            stopping = self.stopping
        for watcher in watchers:
            watcher(sid)
        if stopping is not None:
            end_session(sid)
            self.discard(sid)
            raise Interrupted(stopping or signal.SIGINT)

    def discard(self, sid: int) -> None:
        with self._lock:
            self._live.discard(sid)

    def live(self) -> list[int]:
        with self._lock:
            return sorted(self._live)

    def signal_all(self, signum: int) -> None:
        _send([p for sid in self.live() for p in session_members(sid)], signum)

    def end_all(self) -> None:
        for sid in self.live():
            end_session(sid)
            self.discard(sid)

    @contextmanager
    def watch(self, watcher: Callable[[int], None]) -> Iterator[None]:
        """While the block runs, `watcher` is told the id of each session this thread starts."""
        ident = threading.get_ident()
        with self._lock:
            self._watchers.setdefault(ident, []).append(watcher)
        try:
            yield
        finally:
            with self._lock:
                self._watchers[ident].remove(watcher)
                if not self._watchers[ident]:
                    del self._watchers[ident]


SESSIONS = Sessions()


class _Deferred:
    """A stop signal held back while the main thread starts a child and records its session."""

    depth = 0
    pending: int | None = None


_DEFERRED = _Deferred()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """In the main thread, a stop signal arriving inside the block is raised at its end, so a
    child is never left started without its session recorded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _DEFERRED.depth += 1
    try:
        yield
    finally:
        _DEFERRED.depth -= 1
        pending, _DEFERRED.pending = _DEFERRED.pending, None
        if pending is not None and _DEFERRED.depth == 0:
            raise Interrupted(pending)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if SESSIONS.stopping is not None:  # a second signal, or one while ending: no more grace
        SESSIONS.signal_all(signal.SIGKILL)
        return
    SESSIONS.stopping = signum
    SESSIONS.signal_all(signal.SIGTERM)
    if _DEFERRED.depth:
        _DEFERRED.pending = signum
        return
    raise Interrupted(signum)


@contextmanager
def children_end_with_builder() -> Iterator[None]:
    """Around a command: SIGINT, SIGTERM and SIGHUP raise Interrupted in the main thread (handlers are
    installed only there, where Python allows it), and on every way out each child session still
    live is ended."""
    installed: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in HANDLED_SIGNALS:
            installed[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        if SESSIONS.stopping is None:
            SESSIONS.stopping = 0  # a signal now only hurries the ending, it does not abort it
        try:
            SESSIONS.end_all()
        finally:
            SESSIONS.stopping = None
            for number, previous in installed.items():
                signal.signal(number, previous)
