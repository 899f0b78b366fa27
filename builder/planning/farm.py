"""A build farm, as a build uses it (the farm setting): sccache-dist's scheduler and its build
servers compile the steps sccache splits out of each nvcc call (cudafe++, cicc's PTX, ptxas's
CUBIN and the host compile of cudafe++'s output; only the preprocessing stays here: mozilla/sccache
src/compiler/nvcc.rs, PR #2247, and the loopback farm's log, builder/building/placement.py) and the
C++ compiles, so one heavy build spreads over the farm's cores. builder drives sccache-dist; it
schedules nothing itself. Running the scheduler and servers: builder/fleet/farm.py.

The client's side is builder's: the build's sccache reads a config builder writes for that build
(`[dist]` scheduler URL and token; never the user's own sccache config), the token comes from
BUILDER_FARM_TOKEN or the file the farm-token-file setting names (never the command line, which
`ps` shows to everyone), and the build sizes its jobs by the farm's CPUs (`sccache
--dist-status`) plus the local cores. A server that fails a step costs time, not the build:
sccache compiles that step here instead (its `dist_errors`, which the build reports).

Config keys: sccache docs/Configuration.md (`[dist] scheduler_url, toolchains, cache_dir`,
`[dist.auth] type = "token"`); the --dist-status answer: src/commands.rs (`SchedulerStatus`,
`num_servers`, `num_cpus`, `in_progress`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import CommandTimeout, FarmUnanswered, UsageError
from builder.process import capture

UNANSWERED_HINT = "is the scheduler running (builder farm scheduler), and is the URL right?"


@dataclass(frozen=True)
class Farm:
    """A scheduler and the token its clients present."""

    url: str
    token: str = field(repr=False)

    def client_config(self, toolchain_cache: Path) -> str:
        """The sccache config of a build on this farm (TOML; JSON strings are TOML basic strings)."""
        return (f"[dist]\nscheduler_url = {json.dumps(self.url)}\ntoolchains = []\n"
                f"cache_dir = {json.dumps(str(toolchain_cache))}\n"
                f"[dist.auth]\ntype = \"token\"\ntoken = {json.dumps(self.token)}\n")


@dataclass(frozen=True)
class FarmStatus:
    """What the scheduler says of its farm."""

    url: str
    servers: int
    cpus: int
    in_progress: int

    def describe(self) -> str:
        return f"{self.url}: {self.servers} build server(s), {self.cpus} CPU(s), {self.in_progress} step(s) running"


def farm_from_settings(url: str | None, token: str | None, token_file: Path | None) -> Farm | None:
    """The farm the settings name, with its token; a farm without a token is refused."""
    if url is None:
        return None
    if not token and token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the farm token file {token_file}: {exc.strerror or exc}",
                             hint="farm-token-file names a file holding the scheduler's client token") from exc
    if not token:
        raise UsageError(f"the farm {url} needs its client token",
                         hint="set BUILDER_FARM_TOKEN, or farm-token-file (BUILDER_FARM_TOKEN_FILE, the config "
                              "file) to a file holding it; `builder farm scheduler` printed where it keeps it")
    return Farm(url.rstrip("/"), token)


def private_sccache_env(work: Path, config_text: str) -> dict[str, str]:
    """An environment for one sccache client talking to a server of its own, reading only
    `config_text` (written into `work`, readable by this user alone: it may hold a token)."""
    config = work / "sccache.toml"
    config.touch(mode=0o600)
    config.write_text(config_text)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SCCACHE_", "RUSTC_"))}
    return {**keep, "SCCACHE_CONF": str(config), "SCCACHE_SERVER_UDS": str(work / "sccache.sock"),
            "SCCACHE_DIR": str(work / "cache")}


def farm_status(sccache: str, farm: Farm, *, timeout: float = 60) -> FarmStatus:
    """Ask the scheduler (`sccache --dist-status`, through a private sccache server that builder
    starts in a session of its own, so it ends with builder however builder ends: left to start
    itself, it would be a daemon outside every session)."""
    from builder.building.sccache import server  # the build's server start; sccache imports Farm from here

    with tempfile.TemporaryDirectory(prefix="builder-farm-") as tmp:
        env = private_sccache_env(Path(tmp), farm.client_config(Path(tmp) / "toolchains"))
        with server(sccache, env, Path(tmp) / "server.log"):
            try:
                shown = capture([sccache, "--dist-status"], env=env, timeout=timeout)
            except CommandTimeout as exc:
                raise FarmUnanswered(f"the farm {farm.url} did not answer in {timeout:.0f} s",
                                     hint=UNANSWERED_HINT) from exc
    try:
        url, status = json.loads(shown.stdout)["SchedulerStatus"]
        return FarmStatus(url.rstrip("/"), int(status["num_servers"]), int(status["num_cpus"]),
                          int(status["in_progress"]))
    except (ValueError, KeyError, TypeError) as exc:
        said = (shown.stdout.strip() or shown.stderr.strip()).splitlines()
        raise FarmUnanswered(f"the farm {farm.url} did not answer: {said[-1] if said else 'no output'}",
                             hint=UNANSWERED_HINT) from exc
