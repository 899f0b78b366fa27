"""The leader of each child session builder starts (builder/process.py `call`): it runs the command
as its own child and, should builder die without ending the session (kill -9, the OOM killer: no
signal handler runs then), ends every process of the session itself.

    python -I -S session_guard.py BUILDER_PID -- COMMAND [ARG...]

Without it an orphaned `pip wheel` goes on starting compiles (ninja -> nvcc -> cicc) on a machine
that then works for nobody until the next build of the key finds them through the build
directory's owner record (builder/building/workdir.py). The guard notices within POLL_SECONDS that
its parent is gone (its parent pid changes when the parent dies: the orphan is re-parented, man 2
getppid), then sends SIGTERM to every member of its session, and SIGKILL to what is left after
GRACE_SECONDS. The session, not the process group: ninja puts each compile in a group of its own.

Otherwise it only waits: the command's exit code is its own (a death by signal N is passed on as
the same signal), and builder ends the session itself whenever a call returns or raises.

Run by path with -I -S: it imports only the standard library, so it starts in milliseconds and
never imports builder (or the build's Python path) into a process that outlives nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_SECONDS = 0.5
GRACE_SECONDS = 5.0
NOT_FOUND, NOT_EXECUTABLE = 127, 126  # a shell's codes for a command that cannot be started


def session_members() -> list[int]:
    """The pids of this session's other processes (from /proc: Linux)."""
    sid, me = os.getsid(0), os.getpid()
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                if os.getsid(int(name)) == sid:
                    members.append(int(name))
            except OSError:  # gone meanwhile
                continue
    return members


def end_session() -> None:
    """SIGTERM to every other member of the session, then SIGKILL to those still there."""
    for signum, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, 1.0)):
        for pid in session_members():
            try:
                os.kill(pid, signum)
            except OSError:
                continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _live(session_members()):
            _reap()
            time.sleep(0.1)


def _live(pids: list[int]) -> bool:
    """Whether any of `pids` is not a zombie."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                    return True
        except (OSError, IndexError):
            continue
    return False


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[2:]
    try:
        child = subprocess.Popen(command)
    except FileNotFoundError:
        print(f"{command[0]}: not found", file=sys.stderr)
        return NOT_FOUND
    except OSError as exc:
        print(f"{command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return NOT_EXECUTABLE
    while True:
        try:
            returncode = child.wait(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:  # builder is gone
                end_session()
                return 128 + signal.SIGKILL
    if returncode < 0:  # died of a signal: die of the same one, so the caller sees it
        if -returncode not in (signal.SIGKILL, signal.SIGSTOP):  # whose action cannot be changed
            signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
