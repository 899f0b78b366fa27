"""Where a farm build's compile steps ran, per source file: builder's sccache server logs each
step's result (its stderr, LOG in the work directory, under LOG_FILTER), and after the build the
gate's records learn from it which farm servers ran each file's steps and how many fell back to
this machine.

sccache splits an nvcc call into steps (src/compiler/nvcc.rs) and names each in its log by its
output's file name: `vec_add.module_id` (cudafe++), `vec_add.ptx` or `vec_add.compute_86.ptx`
(cicc), `vec_add.cubin` (ptxas), `vec_add.o` (the host compile of cudafe++'s output), all from
the source's name; a host compile's step is its object file. A step is a file's when the file's
name without its suffix, then a dot, begins it (the longest such name wins). Files of one name in
two folders cannot be told apart there: neither gets a placement.

No log line names the server a step ran on (sccache 0.16 logs "[vec_add.ptx]: Running job" and
nothing after it with the server, but when the farm failed it); its per-server counts, logged after
each step, do: the placement comes from those (`where_steps_ran`).
The log holds a line per compile request and two per step (about 1 KB): a few MB for the largest
builds, in the work directory, which goes with a successful build.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from builder.building.costs import BuildCosts

LOG = "sccache-server.log"
# The two modules whose lines `where_steps_ran` reads, and nothing else of sccache's (env_logger's filter:
# modules not named log nothing).
LOG_FILTER = "sccache::server=debug,sccache::compiler::compiler=warn"

# sccache 0.16's lines (env_logger's "[time LEVEL module] message"), from its source:
#   src/server.rs, for each compile and each nvcc step, under the server's stats lock:
#     debug!("[{}]: compile result: cache miss", out_pretty);   (or cache hit, not cached,
#                                              not cacheable, compile failed, cache error)
#     debug!("stats after compile result: {stats:?}");          (after a cache miss only)
#   then, still under that lock, the step's farm server counted: stats.dist_compiles[addr] += 1.
#   e.g. [2026-12-06T23:52:14.047Z DEBUG sccache::server] [vec_sum.ptx]: compile result: cache miss
#        [2026-12-06T23:52:14.047Z DEBUG sccache::server] stats after compile result: ServerStats {
#        ..., dist_compiles: {"127.0.0.1:10713": 1, "127.0.0.1:10712": 2}, dist_errors: 0, ... }
#   src/compiler/compiler.rs (dist_or_local_compile), a step the farm failed, compiled here:
#     warn!("[{}]: Could not perform distributed compile, falling back to local: {}", out_pretty2, errmsg);
RESULT = re.compile(r" sccache::server\] \[(?P<step>[^\]]+)\]: compile result: (?P<kind>[a-z ]+)$")
STATS = re.compile(r" sccache::server\] stats after compile result: .*\bdist_compiles: \{(?P<counts>[^}]*)\}")
FELL_BACK = re.compile(r" sccache::compiler::compiler\] \[(?P<step>[^\]]+)\]: Could not perform distributed compile")
COUNT = re.compile(r'"(?P<server>[^"]+)": (?P<n>\d+)')
LEVEL = re.compile(r"^\[\S+ (WARN |ERROR) ")
# Results that may have run on the farm. "not cacheable" is the outer nvcc call (src/compiler/nvcc.rs:
# "Never assume the outer `nvcc` call is cacheable"), which runs its steps here and never goes out.
MAY_BE_REMOTE = frozenset({"cache miss", "not cached", "compile failed"})


def where_steps_ran(lines: Iterable[str], totals: Mapping[str, int]) -> tuple[dict[str, Counter[str]], Counter[str]]:
    """(step -> {server: times it ran there}, step -> times it fell back to this machine) from the
    server's log and its final dist_compiles (`totals`, from --show-stats).

    Each stats line shows the counts before its own step's server is added, so the servers it
    adds over the previous stats line are those of the steps whose results came in between: that
    line's own step, and any that printed no stats. Only where exactly one of them may have run
    on the farm is the step known; otherwise (a failed step beside it) they stay unplaced."""
    remote: dict[str, Counter[str]] = {}
    fell_back: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    pending: list[str] = []  # steps that may have run on the farm since the last stats line

    def settle(now: Counter[str]) -> None:
        added = now - seen
        if added and len(pending) == 1:
            remote.setdefault(pending[0], Counter()).update(added)

    for line in lines:
        if found := RESULT.search(line):
            if found["kind"] in MAY_BE_REMOTE:
                pending.append(found["step"])
        elif (found := STATS.search(line)) and pending:
            now = Counter({m["server"]: int(m["n"]) for m in COUNT.finditer(found["counts"])})
            own = pending.pop()  # the result just above it, counted after it
            settle(now)
            pending, seen = [own], now
        elif found := FELL_BACK.search(line):
            fell_back[found["step"]] += 1
    settle(Counter(totals))
    return remote, fell_back


def keep_warnings(log: Path, kept: Path) -> None:
    """sccache's warnings and errors in the server's log (why the farm failed a step, e.g. "[vec_add.ptx]:
    Could not perform distributed compile, falling back to local: Error 500: ...") appended to `kept`,
    a log that outlives the work directory."""
    if log.is_file():
        with log.open(errors="replace") as lines, kept.open("a") as out:
            out.writelines(line for line in lines if LEVEL.search(line))


def owner(step: str, files: Mapping[str, str]) -> str | None:
    """The file (of `files`: name without suffix -> file) whose step this is."""
    names = [name for name in files if step.startswith(name + ".")]
    return files[max(names, key=len)] if names else None


def on_farm(costs: BuildCosts | None, log: Path, totals: Mapping[str, int]) -> BuildCosts | None:
    """The build's records, each file's with where its steps ran."""
    if costs is None or not log.is_file():
        return costs
    with log.open(errors="replace") as lines:
        remote, fell_back = where_steps_ran(lines, totals)
    names = Counter(Path(f.file).name.rsplit(".", 1)[0] for f in costs.files)
    files = {Path(f.file).name.rsplit(".", 1)[0]: f.file for f in costs.files}
    files = {name: file for name, file in files.items() if names[name] == 1}
    ran: dict[str, Counter[str]] = {}
    back: Counter[str] = Counter()
    for step, servers in remote.items():
        if (file := owner(step, files)) is not None:
            ran.setdefault(file, Counter()).update(servers)
    for step, n in fell_back.items():
        if (file := owner(step, files)) is not None:
            back[file] += n
    return replace(costs, files=[replace(f, remote=dict(sorted(ran.get(f.file, Counter()).items())),
                                         local_fallback=back[f.file]) for f in costs.files])
