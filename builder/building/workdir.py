"""A build's work directory (<build-dir>/<cache key>, Workspace.work_dir: the same path from every
cache, so that rebuilds are byte-identical, builder/building/reproducible.py): fresh for each
build, owned while the build runs, kept for inspection when it fails, never shared. Builds of one
key from several caches take turns (a lock beside it). A build through sccache takes the folder
of its sources first (Plan.build_folders), which every key built from them shares, and its key's
when another build holds that one.

owner.json in it names the builder working there (builder/owner.py) and the sessions its
compilers run in; the builder removes it when it leaves the directory in order (success, a
failure, Ctrl-C, SIGTERM: its compilers have ended by then). Found by a later build, it means:

- a live owner: another builder works here although this one holds the key's lock (a lock file
  removed, a shared directory whose locks do not hold): wait until it is gone, and say so;
- a dead owner (kill -9, a crash, a power cut) or one on another host: its compilers may still be
  writing here. End them (the sessions it recorded, and whatever else runs inside the directory),
  move the directory aside (<key>.stale-<time>, kept for inspection) and start afresh, so two
  builds never share one directory.

The build's temp dir (TMPDIR for pip, nvcc and gcc) is tmp/ inside it and goes whenever the build
ends, so nothing is left under the user's /tmp.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil
from filelock import FileLock, Timeout

from builder.errors import UsageError
from builder.lifetime import SESSIONS, end_processes, session_members
from builder.owner import Owner, read_owner, wait_reporting, write_owner
from builder.reporting import Reporter

OWNER_FILE = "owner.json"
TMP_DIR = "tmp"


@contextmanager
def workdir(paths: Sequence[Path], reporter: Reporter) -> Iterator[Path]:
    """A fresh build directory owned by this process, the first of `paths` whose lock is free (the
    last one waited for): removed on success, kept (and named) on failure; its tmp/ goes either way."""
    for path in paths:
        check_build_path(path)
    make_root(paths[-1].parent)
    with _first_free(paths) as path:
        take_over(path, reporter)
        path.mkdir(parents=True)
        owner = Owner.me()
        write_owner(path / OWNER_FILE, owner)
        (path / TMP_DIR).mkdir()

        def record(sid: int) -> None:
            nonlocal owner
            owner = owner.with_group(sid)
            write_owner(path / OWNER_FILE, owner)

        try:
            with SESSIONS.watch(record):
                yield path
        except BaseException:
            reporter.say(f"    build directory kept for inspection: {path}")
            raise
        finally:
            shutil.rmtree(path / TMP_DIR, ignore_errors=True)
            (path / OWNER_FILE).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _first_free(paths: Sequence[Path]) -> Iterator[Path]:
    """The first of `paths` whose lock this process can take now, held while in use; else the last
    one, its lock waited for (builds of one key from several caches take turns)."""
    for path in paths[:-1]:
        lock = _lock_now(path)
        if lock is None:
            continue
        try:
            yield path
        finally:
            lock.release()
        return
    with FileLock(f"{paths[-1]}.lock"):
        yield paths[-1]


def _lock_now(path: Path) -> FileLock | None:
    """The lock of build folder `path`, taken, if no build holds it now; else None."""
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def make_root(root: Path) -> None:
    """The folder of all build directories; made like /var/tmp itself (every user may build there,
    each removes only their own) when builder makes it."""
    if root.is_dir():
        return
    try:
        root.mkdir(parents=True)
        root.chmod(0o1777)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UsageError(f"cannot make the build directory {root}: {exc.strerror or exc}",
                         hint="choose another with the build-dir setting (BUILDER_BUILD_DIR)") from exc


def check_build_path(path: Path, what: str = "the build directory",
                     hint: str = "choose a build-dir setting (BUILDER_BUILD_DIR) whose path has no comma") -> None:
    """nvcc splits option values at commas (-I paths included), so a build under such a path fails
    late with a missing header; refuse it up front."""
    if "," in str(path.resolve()):
        raise UsageError(f"{what} {path} contains a comma, which nvcc takes as a list separator", hint=hint)


def take_over(path: Path, reporter: Reporter) -> None:
    """Clear the way for a build in `path`: a directory left in order is removed; one in use is
    waited for; one left by a builder that died is moved aside after its compilers are ended."""
    owner_file = path / OWNER_FILE
    owner = read_owner(owner_file)
    if owner is not None and owner.alive() and not owner.is_me():
        wait_for(owner, path, reporter)
    if not owner_file.exists():
        shutil.rmtree(path, ignore_errors=True)
        return
    ended = end_processes(lambda: left_running(owner, path)) if owner is not None else 0
    aside = path.with_name(f"{path.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    os.rename(path, aside)
    who = owner.describe() if owner is not None else "a builder that left no readable owner.json"
    running = f"ended {ended} process(es) it left running; " if ended else ""
    reporter.say(f"    {path.name} was left by {who}, which is gone: {running}moved it aside to {aside}")


LEFT_MIN_AGE_S = 24 * 3600
"""A folder a build left is pruned only when untouched this long: time to inspect a failure."""


def left_folders(root: Path, *, min_age_s: float = LEFT_MIN_AGE_S) -> list[Path]:
    """Folders under the build root that builds left and no build uses, untouched for `min_age_s`:
    a failed build's (kept for inspection, no owner.json) and those moved aside from a builder that
    died (<key>.stale-<time>). A folder whose key's lock is held is in use and not listed."""
    if not root.is_dir():
        return []
    now, left = time.time(), []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.is_symlink() or now - path.stat().st_mtime < min_age_s:
            continue
        if ".stale-" in path.name or (not (path / OWNER_FILE).exists() and _unused(path)):
            left.append(path)
    return left


def _unused(path: Path) -> bool:
    lock = _lock_now(path)
    if lock is not None:
        lock.release()
    return lock is not None


def folder_size(path: Path) -> int:
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def wait_for(owner: Owner, path: Path, reporter: Reporter) -> None:
    """Wait until the live `owner` of `path` has ended, saying so now and every so often."""
    reporter.say(f"==> waiting: the build directory {path} is in use by {owner.describe()}")

    def gone(timeout: float) -> bool:
        try:
            psutil.Process(owner.pid).wait(timeout)
        except psutil.TimeoutExpired:
            return not owner.alive()
        except psutil.Error:
            pass
        return True

    wait_reporting(gone, reporter.say, f"pid {owner.pid}")


def left_running(owner: Owner, path: Path) -> list[psutil.Process]:
    """What a dead builder left running on this host: the members of the sessions it recorded
    (started after it was), and any process working inside its build directory or given its
    tmp/ as TMPDIR (which reaches even a daemon that left the session: sccache's server)."""
    if owner.host != socket.gethostname():
        return []
    found = {p.pid: p for sid in owner.groups for p in session_members(sid, not_before=owner.started)}
    inside, tmpdir = str(path.resolve()) + os.sep, str(path.resolve() / TMP_DIR)
    # A Process made now for each pid, not process_iter's: its cache keeps the object of an earlier
    # process whose pid a later one reuses, and psutil refuses to signal that one ("PID reused").
    for pid in set(psutil.pids()) - {os.getpid()}:
        try:
            process = psutil.Process(pid)
            info = process.as_dict(["cwd", "environ"])
        except psutil.Error:
            continue
        cwd, environ = info["cwd"] or "", info["environ"] or {}
        if (cwd + os.sep).startswith(inside) or environ.get("TMPDIR") == tmpdir:
            found[pid] = process
    return list(found.values())
