"""Children end with builder, with real processes: a call's whole session ends whichever way the
call ends; a build directory's owner is waited for while alive and moved aside (its leftovers
ended) once dead; a key's lock says who holds it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from builder import owner as owner_module
from builder.building.workdir import OWNER_FILE, take_over, workdir
from builder.errors import BuildError
from builder.owner import Owner, write_owner
from builder.process import call
from builder.reporting import LoggingReporter
from builder.store.cache import Cache
from tests.conftest import ROOT

# A child that starts a grandchild in a process group of its own (as ninja starts each compile),
# says its pid, and sleeps or exits (leaving the grandchild running).
FAMILY = """
import subprocess, sys, time
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
grouped = subprocess.Popen(sleeper, process_group=0)  # holding the call's pipe open
print("family", grouped.pid, flush=True)
if sys.argv[1] == "exit":
    sys.exit(int(sys.argv[2]))
time.sleep(600)
"""


class Collected(LoggingReporter):
    """A reporter that keeps what it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def say(self, message: str) -> None:
        self.lines.append(message)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def test_a_call_that_raises_ends_its_whole_session(tmp_path: Path) -> None:
    seen: list[int] = []

    def on_line(line: str) -> None:
        seen.append(int(line.split()[1]))
        raise RuntimeError("the caller gives up")

    with pytest.raises(RuntimeError):
        call([sys.executable, "-c", FAMILY, "sleep"], log_path=tmp_path / "log", on_line=on_line)
    [grandchild] = seen
    assert not running(grandchild)


def test_a_call_that_returns_leaves_nothing_of_its_session(tmp_path: Path) -> None:
    seen: list[int] = []
    call([sys.executable, "-c", FAMILY, "exit", "0"], log_path=tmp_path / "log",
         on_line=lambda line: seen.append(int(line.split()[1])))
    assert seen and not running(seen[0])
    with pytest.raises(BuildError):
        call([sys.executable, "-c", FAMILY, "exit", "3"], log_path=tmp_path / "log2",
             on_line=lambda line: seen.append(int(line.split()[1])))
    assert not running(seen[1])


# A builder stand-in: a process that runs FAMILY through `call` and is then killed with -9.
CALLER = """
import sys
from pathlib import Path
from builder.process import call
call([sys.executable, "-c", sys.argv[1], "sleep"], log_path=Path(sys.argv[2]), on_line=print)
"""


def test_a_session_ends_itself_when_builder_is_killed_with_9(tmp_path: Path) -> None:
    """kill -9 runs no handler in builder: the session's leader (builder/session_guard.py) sees its
    parent gone and ends every member, the grandchild in a process group of its own too."""
    caller = subprocess.Popen([sys.executable, "-c", CALLER, FAMILY, str(tmp_path / "log")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    members: list[psutil.Process] = []
    try:
        assert caller.stdout is not None
        grandchild = int(caller.stdout.readline().split()[1])
        [guard] = psutil.Process(caller.pid).children()
        members = [guard, *guard.children(recursive=True)]
        assert running(grandchild) and len(members) == 3  # the guard, FAMILY, its sleeper
        caller.kill()
        caller.wait()
        wait_until(lambda: not any(running(p.pid) for p in members), "the orphaned session ended", seconds=30)
    finally:
        caller.kill()
        caller.wait()
        if caller.stdout is not None:
            caller.stdout.close()
        for process in members:
            with contextlib.suppress(psutil.Error):
                process.kill()


def sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env,
                            start_new_session=True)


def test_a_live_owner_is_waited_for_then_its_directory_moved_aside(tmp_path: Path) -> None:
    work = tmp_path / "build" / "k1"
    work.mkdir(parents=True)
    holder = sleeper()
    try:
        process = psutil.Process(holder.pid)
        write_owner(work / OWNER_FILE, Owner(pid=holder.pid, started=process.create_time(), host=Owner.me().host,
                                             command="another builder", since=time.time()))
        reporter = Collected()
        taking = threading.Thread(target=take_over, args=(work, reporter))
        taking.start()
        wait_until(lambda: reporter.lines, "a line saying it waits")
        assert f"in use by pid {holder.pid} (another builder)" in reporter.lines[0]
        assert taking.is_alive()
    finally:
        holder.kill()
        holder.wait()
    taking.join(60)
    assert not taking.is_alive()
    # It died without clearing its owner.json (as after kill -9): the directory goes aside.
    assert not work.exists()
    [aside] = (tmp_path / "build").glob("k1.stale-*")
    assert (aside / OWNER_FILE).is_file()
    assert "moved it aside" in reporter.lines[-1]


def test_a_dead_owners_leftovers_are_ended_and_never_shared(tmp_path: Path) -> None:
    work = tmp_path / "build" / "k2"
    (work / "tmp").mkdir(parents=True)
    # A process that reused the owner's pid is not the owner: a start time that differs.
    me = Owner.me()
    write_owner(work / OWNER_FILE, Owner(pid=os.getpid(), started=me.started - 1000, host=me.host,
                                         command="builder killed with -9", since=time.time() - 60))
    orphan = sleeper({**os.environ, "TMPDIR": str(work / "tmp")})  # a compiler it left running
    reporter = Collected()
    try:
        take_over(work, reporter)
        assert not running(orphan.pid)
    finally:
        orphan.kill()
        orphan.wait()
    assert not work.exists() and list((tmp_path / "build").glob("k2.stale-*"))
    assert "ended 1 process(es) it left running" in reporter.lines[-1]


def test_a_build_folder_another_build_holds_gives_way_to_the_next(tmp_path: Path) -> None:
    """A build through sccache takes its sources' folder first (Plan.build_folders); while another
    build (another process) holds it, this one takes its key's folder, and the first once it is free."""
    sources, key = tmp_path / "build" / "ext-1.0-0123abcd", tmp_path / "build" / "k4"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock\n"
                               "with FileLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)",
                               f"{sources}.lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with workdir([sources, key], Collected()) as work:
            assert work == key and work.is_dir() and not sources.exists()
    finally:
        holder.kill()
        holder.communicate()
    with workdir([sources, key], Collected()) as work:
        assert work == sources
    assert not sources.exists() and not key.exists()  # removed after a build that worked


def test_a_directory_left_in_order_is_reused(tmp_path: Path) -> None:
    work = tmp_path / "build" / "k3"
    work.mkdir(parents=True)
    (work / "kept-for-inspection").write_text("x")
    take_over(work, Collected())
    assert not work.exists() and not list((tmp_path / "build").glob("k3.stale-*"))


HOLD_LOCK = """
import sys, time
from pathlib import Path
from builder.store.cache import Cache
with Cache(Path(sys.argv[1])).lock("k4"):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_waiting_for_a_lock_says_who_holds_it_and_how_long(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(owner_module, "REPORT_EVERY", 0.2)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parent.parent)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        recorded = json.loads((tmp_path / "locks" / "k4.owner.json").read_text())
        assert recorded["pid"] == holder.pid
        lines: list[str] = []
        taken = Cache(tmp_path).lock("k4", say=lines.append)
        waiting = threading.Thread(target=taken.__enter__)
        waiting.start()
        wait_until(lambda: len(lines) >= 3, "a waiting line, then two more")
        assert f"waiting for another build of key k4: pid {holder.pid} (" in lines[0]
        assert " since " in lines[0] and "k4.lock" in lines[0]
        assert all(line.startswith(f"    still waiting for pid {holder.pid} (") for line in lines[1:])
    finally:
        holder.kill()
        holder.communicate()
    waiting.join(60)
    assert not waiting.is_alive()
    assert json.loads((tmp_path / "locks" / "k4.owner.json").read_text())["pid"] == os.getpid()
    taken.__exit__(None, None, None)
    assert not (tmp_path / "locks" / "k4.owner.json").exists()


def test_farm_status_killed_with_9_leaves_no_sccache(tmp_path: Path) -> None:
    """`builder farm status` asks the scheduler through a private sccache server; with builder killed
    while the scheduler keeps it waiting, that server ends too (sccache left to start itself is a
    daemon outside every session)."""
    import socket

    silent = socket.socket()  # a scheduler that accepts and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    env = {**os.environ, "BUILDER_FARM": f"http://127.0.0.1:{silent.getsockname()[1]}",
           "BUILDER_FARM_TOKEN": "token", "TMPDIR": str(tmp_path)}

    def servers() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error):
                if process.info["name"] == "sccache" and str(tmp_path) in process.environ().get("SCCACHE_CONF", ""):
                    found.append(process)
        return found

    status = subprocess.Popen([sys.executable, "-m", "builder", "farm", "status"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: bool(servers()), "the status request's sccache server")
        os.kill(status.pid, 9)
        status.wait()
        wait_until(lambda: not servers(), "no sccache of the killed status request left")
    finally:
        silent.close()
        for process in servers():
            process.kill()
