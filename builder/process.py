"""The one way builder runs a program: echo it, log it, and fail with the line that matters.

`call` writes `+ cmd`, the environment changes and all output to a log file; on failure it
raises BuildError carrying the command, the exit code, the first compiler error line, the log
path, and a known cause with its hint when the output shows one (builder/diagnosis.py). The
child runs in a session of its own that ends with the call, whichever way the call ends
(builder/lifetime.py), and that ends itself should builder be killed with -9: its leader is
builder/session_guard.py, which runs the command and watches builder. `capture` runs a short
query (nvcc --version, a python probe) and returns its stdout.
"""

from __future__ import annotations

import codecs
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from builder.diagnosis import diagnose
from builder.errors import BuilderError, BuildError, CommandTimeout
from builder.lifetime import SESSIONS, end_session, signals_deferred

# Lines that name the first real problem in a compiler or build-tool log, most specific first.
_ERROR_PATTERNS = [
    re.compile(r"^\S+\.(?:c|cc|cpp|cxx|cu|cuh|h|hpp)[:(]\d+.*\b(?:error|fatal error)\b", re.I),
    re.compile(r"\b(?:fatal error|error):", re.I),
    re.compile(r"^nvcc fatal\s*:", re.I),
    re.compile(r"^(?:ModuleNotFoundError|ImportError|RuntimeError|OSError|ValueError)\b"),
    re.compile(r"^FAILED: "),
]


def first_error_line(lines: Sequence[str]) -> str | None:
    """The first line of `lines` that names a compiler or build error, if any."""
    for pattern in _ERROR_PATTERNS:
        for line in lines:
            if pattern.search(line.strip()):
                return line.strip()
    return None


def short_command(argv: Sequence[str]) -> str:
    """The command as one short line: the program's name and its first few short arguments."""
    shown = [Path(argv[0]).name]
    for arg in argv[1:4]:
        shown.append(arg if len(arg) <= 40 and "\n" not in arg else "...")
    return shlex.join(shown) + (" ..." if len(argv) > 4 else "")


def require_program(name: str, *, hint: str | None = None) -> str:
    """Path of `name` on PATH, or a clear error saying it is missing."""
    found = shutil.which(name)
    if found is None:
        raise BuilderError(f"{name} was not found on PATH", hint=hint)
    return found


SESSION_GUARD = Path(__file__).resolve().with_name("session_guard.py")


def guarded(argv: Sequence[str]) -> list[str]:
    """`argv` run under the session guard, which ends the session if this process dies first."""
    return [sys.executable, "-I", "-S", str(SESSION_GUARD), str(os.getpid()), "--", *argv]


def check_runnable(argv: list[str], env: Mapping[str, str] | None, log_path: Path) -> None:
    """Refuse a program that cannot be started (the guard would start it, so Popen cannot tell)."""
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    program = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=path)
    if program is None or not os.path.exists(program):
        raise BuildError(f"{argv[0]} was not found", command=argv, log_path=log_path)
    if os.path.isdir(program) or not os.access(program, os.X_OK):
        raise BuildError(f"{argv[0]} cannot be run: Permission denied", command=argv, log_path=log_path)


def env_changes(env: Mapping[str, str] | None) -> dict[str, str]:
    """The variables of `env` that differ from this process's environment."""
    if env is None:
        return {}
    return {key: value for key, value in env.items() if os.environ.get(key) != value}


def output_lines(process: subprocess.Popen[bytes], *, quiet_after_exit: float = 0.5) -> Iterator[str]:
    """The child's stdout, line by line as it comes, until its end; or, once the child has exited,
    until nothing more comes for `quiet_after_exit` seconds: a process it left running (a daemon)
    may hold the pipe open for ever, and the call ends it anyway."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while True:
        ready, _, _ = select.select([fd], [], [], quiet_after_exit)
        if not ready:
            if process.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        text = pending + decoder.decode(chunk)
        held = "\r" if text.endswith("\r") else ""  # half of a \r\n, perhaps
        *lines, pending = _universal_newlines(text.removesuffix("\r") if held else text).split("\n")
        pending += held
        yield from (line + "\n" for line in lines)
    pending = _universal_newlines(pending + decoder.decode(b"", final=True))
    yield from (line + "\n" for line in pending.split("\n") if line)


def _universal_newlines(text: str) -> str:
    """\r\n and \r as \n, as a text-mode pipe reads them."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def call(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    what: str | None = None,
) -> None:
    """Run `cmd`, appending everything to `log_path`; raise BuildError when it fails."""
    argv = [str(part) for part in cmd]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: list[str] = []
    with log_path.open("a", encoding="utf-8", errors="replace") as log:
        log.write(f"+ {shlex.join(argv)}\n")
        if cwd is not None:
            log.write(f"  (in {cwd})\n")
        for key, value in sorted(env_changes(env).items()):
            log.write(f"  {key}={value}\n")
        log.flush()
        check_runnable(argv, env, log_path)
        try:
            with signals_deferred():
                process = subprocess.Popen(
                    guarded(argv),
                    cwd=cwd,
                    env=dict(env) if env is not None else None,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own session: builder alone decides when it ends
                )
                SESSIONS.add(process.pid)
        except FileNotFoundError as exc:
            raise BuildError(f"{argv[0]} was not found", command=argv, log_path=log_path) from exc
        except OSError as exc:
            raise BuildError(f"{argv[0]} cannot be run: {exc.strerror or exc}", command=argv,
                             log_path=log_path) from exc
        try:
            for line in output_lines(process):
                log.write(line)
                tail.append(line.rstrip("\n"))
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            returncode = process.wait()
        finally:  # whichever way out, what the child left running ends with it
            end_session(process.pid, reap=process.poll)
            SESSIONS.discard(process.pid)
            if process.stdout is not None:
                process.stdout.close()
            process.wait()
        log.write(f"# exit code {returncode}\n")
    if returncode != 0:
        label = what or Path(argv[0]).name
        known = diagnose(tail, returncode)
        raise BuildError(
            f"{label} failed with exit code {returncode}" + (f": {known.cause}" if known else ""),
            command=argv,
            returncode=returncode,
            first_error=first_error_line(tail),
            log_path=log_path,
            hint=known.hint if known else None,
            cause=known.cause if known else None,
            cause_line=known.line if known else None,
        )


def capture(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a short query and return it finished, output captured; never raises on exit code. A
    program that cannot be started answers 127 (missing) or 126 (not executable), as a shell
    would; one that outlives `timeout` seconds is killed and raises CommandTimeout."""
    argv = [str(part) for part in cmd]
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: not found")
    except OSError as exc:
        return subprocess.CompletedProcess(argv, 126, "", f"{argv[0]}: {exc.strerror or exc}")
    except subprocess.TimeoutExpired as exc:
        raise CommandTimeout(f"`{short_command(argv)}` did not finish "
                             f"within {timeout:g} s and was stopped",
                             hint="it hangs, or the machine is overloaded; run it by hand to see, "
                                  "or retry when the load is lower") from exc
