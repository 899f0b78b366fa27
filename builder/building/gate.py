"""The compile gate: a wrapper builder puts in front of every compiler a build runs (nvcc through
PYTORCH_NVCC or the `nvcc` variable of torch's build.ninja, CXX for torch extensions, the
Makefile's NVCC, CMake's compiler launchers). For one compile it

1. decides how many threads an nvcc compile gets (`--split-compile N`, below), and waits until the
   compile's expected peak memory fits in the build's memory budget beside the compiles already
   running, and until fewer than the build's jobs (BUILDER_GATE_CORES) run: one ninja's -j bounds
   its own compiles, not those of the ninjas a setup.py building its extensions at once starts
   side by side (patches/autoawq-kernels/0.0.9-extensions-at-once.patch). Always admitted when none
   runs, so a build never deadlocks;
2. runs the compiler, sampling the resident memory of its whole process tree (a split compile's
   threads included);
3. appends a record: file, start, end, wall and CPU seconds, peak RSS, threads, expected and waited.

Expected costs come from hints.json (file -> cpu_s, wall_s, peak_mb, threads, basis): the last
build's records of the same kind, else the recipe's shipped reference costs; without a hint the
expected peak is the recipe's job_memory_gb. Commands that compile no source file (version
queries, links) pass straight through.

With BUILDER_GATE_NVCC_SEED=1 it also gives each nvcc compile `-frandom-seed=<source file relative
to the source tree>`: nvcc otherwise puts its process id into the names of internal-linkage
entities (`_ZN57_INTERNAL_..._causal_conv1d_fwd_cu_6ed2b511_28350...`), and its --help asks for a
different seed per file (builder/building/reproducible.py).

Split compilation: nvcc's `--split-compile N` runs one file's device optimisation on N threads
(nvcc 13.0 --help; CUDA 11.8's nvcc has no such option, so builder asks each toolkit's --help).
A file gets more than one thread when cores would otherwise sit idle: fewer compiles starting
than free cores (the free ones are shared in proportion to the expected work), or the file would
set the build's end alone: then it gets 2 or 4 threads, from split compilation's measured effect on
one file's wall (SPLIT_WALL). `split_threads` decides, from the build's planned files (planned.json,
written by the ordering ninja), the compiles running (running.json) and the hints. It leaves device
code unchanged: `cuobjdump -sass` is identical with and without (tests/test_split.py), so it is not
part of the cache key.

Through sccache (--ccache, a compile cache, a farm) the thread count is part of what sccache
hashes: cicc's and ptxas's steps carry `--split-compile=N` (bench/RESULTS.md, 2026-12-07). A count
that follows the load would give every cell, machine and re-run keys of their own for the very
files that cost most, so there (BUILDER_GATE_SPLIT=shipped) `shipped_threads` decides from the
file's shipped reference work alone, the same wherever the store is shared, and the gate waits for
memory rather than take fewer threads.

On a build farm most compiles run on its servers, and what runs here is bounded by sccache
itself: its server spawns every process (a preprocessing step, a step the farm failed) only with a
token of its jobserver, which holds one token per core (sccache 0.16 src/server.rs `start_server`:
`Client::new()`, = `num_cpus`, src/jobserver.rs; acquired in src/mock_command.rs `spawn`). So there
(BUILDER_GATE_LOCAL_SLOTS = the cores here) the memory that may be in use is that of the heaviest
compiles running, one per core, not all of them: with every server dead, the farm's jobs still
cannot all land here at once.

It runs as a script (`python builder/building/gate.py COMPILER ARGS...`) with the build's
environment, needing only the standard library, psutil and filelock, so the compiler it starts
sees exactly the environment builder set. The gate's settings come from BUILDER_GATE_* variables.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

SOURCE_SUFFIXES = (".cu", ".cpp", ".cc", ".cxx", ".c")
# Compile without linking: gcc's -c; nvcc's -c, -dc (relocatable device code) and long forms.
COMPILE_FLAGS = frozenset({"-c", "-dc", "--compile", "--device-c"})
# How often a compile's process tree is measured. psutil's children() reads every process in /proc,
# so each sample costs in proportion to the machine's processes: at 0.05 s, 0.135 of a core per
# running compile with 370 processes (CPU machine, 2026-12-06; the H200 whole flash-attn build spent
# 1,036 CPU-s outside its compiles, and each compile got 0.933 of a core). At 0.5 s: 0.016. The
# compilers' peaks last seconds, and ru_maxrss (the largest single process) is the floor.
SAMPLE_SECONDS = 0.5
WAIT_SECONDS = 0.1
# A recorded peak is a sample; the next build of the file is expected a little above it.
RECORD_MARGIN = 1.15
# A split compile's peak over the same file's unsplit one: costly.cu (tests/fixtures/costly), sm_86,
# nvcc 13.0, largest process RSS 191 MB unsplit, 292 MB with --split-compile 2, 296 MB with 4 (+52%,
# +55%). Modelled as 1 + 0.5 * log2(N), above both; a record made at N threads replaces the model.
SPLIT_PEAK_GROWTH = 0.5
# Below this expected CPU time a compile is not split: the gain is seconds, the threads cost memory.
MIN_SPLIT_SECONDS = 20.0
# One file's wall under split compilation, against unsplit (its CPU seconds stay about the same):
# flash-attn 2.8.3.post2 flash_fwd_split_hdim64_fp16_sm80.cu, sm_90, nvcc 13.0.88, 2 threads 0.75x
# (316.3 -> 237.0 s, CPU machine: bench/RESULTS.md 2026-12-07 03:13); 2.8.3 fwd_split hdim128 fp16,
# 4 threads 0.69x (291 -> 202 s, H200 with 16 cores: ../shared/DESIGN.md 2026-12-03). Only a part of
# nvcc's work is spread (cicc's optimisation; not cudafe++, the front end or the host compile), so
# threads gain less and less; beyond 4 nothing was measured, and a file gets at most 4 to outlast the
# rest of a build.
SPLIT_WALL = {1: 1.0, 2: 0.75, 4: 0.69}
CRITICAL_MOST_THREADS = max(SPLIT_WALL)
# Through sccache, a file whose shipped reference work reaches this many CPU seconds gets 2 threads,
# and 4 from twice that. flash-attn 2.8.3.post2 sm_90 (recipes/costs/): the 9 files of 245-311 s,
# the ones that bound the build on a farm of 4 x 16 cores (bench/farm_predict.py --split).
SHIPPED_SPLIT_SECONDS = 240.0
# Set for the compiler the gate runs: a gated compiler it starts in turn (nvcc's host compiler, were
# it wrapped too) passes straight through instead of waiting for room its parent holds.
INSIDE = "BUILDER_GATE_INSIDE"
SPLIT_OPTIONS = ("--split-compile", "-split-compile")
MB = 1024 * 1024


def source_file(args: list[str], root: str) -> str | None:
    """What a compiler command compiles (its source files, relative to the source tree when inside
    it, joined by spaces), or None for a command that compiles nothing (a link, a version query)."""
    if not COMPILE_FLAGS.intersection(args):
        return None
    files = []
    for arg in args:
        if arg.endswith(SOURCE_SUFFIXES) and os.path.isfile(arg):
            files.append(source_key(os.path.abspath(arg), root))
    return " ".join(files) or None


def with_seed(args: list[str], file: str) -> list[str]:
    """An nvcc compile (run directly or through a launcher such as sccache) with a seed of its own."""
    if not is_nvcc(args) or any(arg.lstrip("-").startswith("frandom-seed") for arg in args):
        return args
    return [*args, f"-frandom-seed={file}"]


def source_key(path: str, root: str) -> str:
    """A source's name in records and hints: relative to the source tree when inside it."""
    return os.path.relpath(path, root) if root and path.startswith(root.rstrip("/") + "/") else path


def is_configure_probe(file: str) -> bool:
    """A compile no build file names: outside the source tree (CMake's compiler-ABI probes under its
    own Modules/), or one of CMake's try_compile projects, which it makes under CMakeFiles/
    (CMakeScratch/TryCompile-* since CMake 3.25, CMakeTmp before). Not gated, not recorded: they
    would only add noise to the costs."""
    return os.path.isabs(file) or file.startswith("CMakeFiles/") or "/CMakeFiles/" in file


def is_nvcc(args: Sequence[str]) -> bool:
    """The command runs nvcc: the compiler itself, or behind a launcher (sccache nvcc ...)."""
    for arg in args:
        if arg.startswith("-"):
            return False
        if os.path.basename(arg) == "nvcc":
            return True
    return False


def splits_already(args: Sequence[str], env: Mapping[str, str]) -> bool:
    """The compile already asks for split compilation (its flags or NVCC_APPEND/PREPEND_FLAGS)."""
    words = [*args, *shlex.split(env.get("NVCC_APPEND_FLAGS", "")), *shlex.split(env.get("NVCC_PREPEND_FLAGS", ""))]
    return any(word.split("=")[0] in SPLIT_OPTIONS for word in words)


def work_of(hint: Mapping[str, Any] | None) -> float | None:
    """A file's expected work in CPU seconds (its single-thread time), None when unrecorded."""
    if not hint:
        return None
    return float(hint.get("cpu_s") or hint.get("wall_s") or 0.0) or None


def split_threads(work: float | None, pending: Sequence[float | None],
                  running: Sequence[tuple[int, float | None]], cores: int) -> int:
    """The threads a compile starting now gets (1: no split), from expected CPU seconds.

    `work` is this file's, `pending` the build's files not started yet, `running` (threads,
    remaining CPU seconds) of each compile running; None is unrecorded, taken as the mean of the
    recorded ones (all alike when none is). Two ways to idle cores, the larger answer wins:
    - fewer compiles start than there are free cores: this one and the heaviest pending ones
      share the free cores in proportion to their work (rounded), leaving a core to each of the
      others;
    - this file's recorded work would end the build alone (`critical_threads`).
    """
    known = [w for w in (work, *pending) if w is not None]
    fill = sum(known) / len(known) if known else 1.0
    mine = work if work is not None else fill
    if cores <= 1 or (work is not None and work < MIN_SPLIT_SECONDS):
        return 1
    others = sorted((w if w is not None else fill for w in pending), reverse=True)
    free = cores - sum(threads for threads, _ in running)
    starting = [mine, *others[:max(0, free - 1)]]
    idle = 1
    if free > len(starting):
        idle = min(int(free * mine / sum(starting) + 0.5), free - len(starting) + 1)
    critical = 1
    if work is not None:  # only a recorded cost can say a file outlasts the rest
        busy = [(threads, fill if left is None else left) for threads, left in running]
        critical = critical_threads(mine, others, busy, cores)
    return max(1, min(cores, max(idle, critical)))


def critical_threads(work: float, others: Sequence[float], running: Sequence[tuple[int, float]],
                     cores: int) -> int:
    """The threads (1, 2 or 4) a file of `work` CPU seconds needs not to end the build alone.

    The build cannot end before the latest of: its remaining work over the cores, the longest file
    split as far as pays (SPLIT_WALL at 4 threads) and the longest running compile's remaining wall.
    A file longer than that gets the fewest threads whose wall (SPLIT_WALL) reaches it, else 4:
    flash-attn's hdims=128 subset on 16 cores gives its two fwd_split files 4 (0.69 x 277 s sets the
    end), its bwd files 2, the rest 1. The whole build, whose work over 16 cores outlasts every file,
    splits nothing at the start.
    """
    total = work + sum(others) + sum(left for _, left in running)
    end = max(total / cores, SPLIT_WALL[CRITICAL_MOST_THREADS] * max([work, *others]),
              *(left * split_wall(threads) for threads, left in running))
    reaching = (threads for threads in sorted(SPLIT_WALL) if work * SPLIT_WALL[threads] <= end)
    return next(reaching, CRITICAL_MOST_THREADS)


def split_wall(threads: int) -> float:
    """One file's wall at `threads` against unsplit, from the nearest measured count at or below."""
    return SPLIT_WALL[max(count for count in SPLIT_WALL if count <= threads)]


def shipped_threads(hint: Mapping[str, Any] | None) -> int:
    """The threads of a compile through sccache: from its file's shipped reference work alone (a
    build's own records differ from machine to machine), so every build sharing a store splits alike."""
    work = work_of(hint) if hint and hint.get("basis") == "reference" else None
    if work is None or work < SHIPPED_SPLIT_SECONDS:
        return 1
    return 2 if work < 2 * SHIPPED_SPLIT_SECONDS else 4


def expected_mb(hint: Mapping[str, Any] | None, default_mb: float, threads: int = 1) -> tuple[float, str]:
    """The compile's expected peak at `threads` and where the number came from ("record",
    "reference" or "estimate"). A hint measured at other threads is scaled by the split model."""
    if not hint:
        return default_mb * split_growth(threads), "estimate"
    measured_at = int(hint.get("threads", 1) or 1)
    peak = float(hint["peak_mb"]) * split_growth(threads) / split_growth(measured_at)
    return peak * RECORD_MARGIN, str(hint.get("basis", "record"))


def work_done(pid: int, entry: Mapping[str, Any], now: float) -> float:
    """CPU seconds a running compile has used so far: its gate's process tree, measured (a loaded
    machine stretches wall time, not work); else its wall time so far on its threads."""
    with contextlib.suppress(psutil.Error):
        total = 0.0
        for member in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                # Its own time, and that of its children it has waited for (the live ones count apart).
                times = member.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        return total
    return (now - float(entry["start"])) * int(entry["threads"])


def split_growth(threads: int) -> float:
    return 1.0 + SPLIT_PEAK_GROWTH * math.log2(max(1, threads))


def local_mb(peaks: Sequence[float], slots: int | None) -> float:
    """The memory compiles with these expected peaks may hold here together: all of them, or, when
    at most `slots` can run here at once (on a farm), the heaviest `slots` of them."""
    return sum(sorted(peaks, reverse=True)[:slots] if slots is not None else peaks)


def read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


class Admission:
    """What the gate knows when a compile asks to start, read from the gate folder."""

    def __init__(self, gate_dir: Path, file: str, *, budget_mb: float, default_mb: float, cores: int,
                 split: str, local_slots: int | None = None) -> None:
        """`cores`: the build's jobs, the most compiles running at once and the cores split decisions
        share; `split`: "load" (split_threads), "shipped" (shipped_threads) or "off"; `local_slots`:
        on a farm, the most compiles that run here at once (local_mb)."""
        self.gate_dir, self.file, self.budget_mb, self.default_mb = gate_dir, file, budget_mb, default_mb
        self.cores, self.split, self.local_slots = cores, split, local_slots
        self.hints: dict[str, dict[str, Any]] = read_json(gate_dir / "hints.json", {})

    def pending(self, running: Mapping[str, Mapping[str, Any]]) -> list[str] | None:
        """The build's files not started yet (but this one): the planned ones (this ninja run's, from
        planned.json), else the hinted ones; None when neither says what the build compiles."""
        planned = read_json(self.gate_dir / "planned.json", None)
        names = planned if planned is not None else (list(self.hints) or None)
        if names is None:
            return None
        records = self.gate_dir / "records.jsonl"
        started = {json.loads(line)["file"] for line in records.read_text().splitlines() if line.strip()} \
            if records.is_file() else set()
        started |= {str(r.get("file")) for r in running.values()} | {self.file}
        return [name for name in names if name not in started]

    def threads(self, running: Mapping[str, Mapping[str, Any]], now: float) -> int:
        if self.split == "shipped":
            return shipped_threads(self.hints.get(self.file))
        if self.split != "load":
            return 1
        pending = self.pending(running)
        if pending is None:
            return 1
        busy = [(int(r["threads"]), max(0.0, float(r["work"]) - work_done(int(pid), r, now)) if r.get("work") else None)
                for pid, r in running.items()]
        return split_threads(work_of(self.hints.get(self.file)), [work_of(self.hints.get(p)) for p in pending],
                             busy, self.cores)

    def decide(self, running: Mapping[str, Mapping[str, Any]], now: float) -> tuple[int, float, str] | None:
        """(threads, expected MB, basis) when the compile may start now, else None (wait: the build's
        jobs all run, or memory is short): the most threads up to split_threads' answer whose expected
        peak fits beside the running ones (the shipped count or nothing, through sccache)."""
        if len(running) >= self.cores:
            return None
        hint = self.hints.get(self.file)
        in_use = [float(r["mb"]) for r in running.values()]
        most = self.threads(running, now)
        for threads in [most] if self.split == "shipped" else range(most, 0, -1):
            need, basis = expected_mb(hint, self.default_mb, threads)
            if not running or local_mb([*in_use, need], self.local_slots) <= self.budget_mb:
                return threads, need, basis
        return None


def admit(admission: Admission) -> tuple[int, float, str, float]:
    """Wait for room in the budget and register this compile; returns (threads, expected MB, basis,
    seconds waited)."""
    started = time.monotonic()
    gate_dir = admission.gate_dir
    state = gate_dir / "running.json"
    while True:
        with FileLock(str(gate_dir / "running.lock")):
            running = {pid: r for pid, r in read_json(state, {}).items() if psutil.pid_exists(int(pid))}
            now = time.time()
            decision = admission.decide(running, now)
            if decision is not None:
                threads, need, basis = decision
                running[str(os.getpid())] = {"mb": need, "threads": threads, "file": admission.file, "start": now,
                                             "work": work_of(admission.hints.get(admission.file))}
                state.write_text(json.dumps(running))
                return threads, need, basis, time.monotonic() - started
        time.sleep(WAIT_SECONDS)


def release(gate_dir: Path) -> None:
    state = gate_dir / "running.json"
    with FileLock(str(gate_dir / "running.lock")):
        running = read_json(state, {})
        running.pop(str(os.getpid()), None)
        state.write_text(json.dumps(running))


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def run_sampled(args: list[str]) -> tuple[int, float, int]:
    """Run the compiler; returns its exit code, CPU seconds (the whole tree's) and peak tree RSS."""
    child = subprocess.Popen(args, env={**os.environ, INSIDE: "1"})
    process = psutil.Process(child.pid)
    peak = 0
    while True:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, tree_rss(process))
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(SAMPLE_SECONDS)
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss (KiB) is the largest single process waited for: a floor when sampling missed it.
    peak = max(peak, usage.ru_maxrss * 1024)
    return child.returncode, usage.ru_utime + usage.ru_stime, peak


def main(args: list[str]) -> int:
    gate_dir = Path(os.environ.get("BUILDER_GATE_DIR", ""))
    file = source_file(args, os.environ.get("BUILDER_GATE_SOURCE_ROOT", ""))
    if not args or file is None or not gate_dir.is_dir() or os.environ.get(INSIDE) or is_configure_probe(file):
        return subprocess.call(args) if args else 2
    if os.environ.get("BUILDER_GATE_NVCC_SEED") == "1":
        args = with_seed(args, file)
    split = os.environ.get("BUILDER_GATE_SPLIT", "off")
    if not is_nvcc(args) or splits_already(args, os.environ):
        split = "off"
    admission = Admission(gate_dir, file, budget_mb=float(os.environ.get("BUILDER_GATE_BUDGET_MB", "inf")),
                          default_mb=float(os.environ.get("BUILDER_GATE_JOB_MB", "0")),
                          cores=int(os.environ.get("BUILDER_GATE_CORES", "1")), split=split,
                          local_slots=int(os.environ["BUILDER_GATE_LOCAL_SLOTS"])
                          if os.environ.get("BUILDER_GATE_LOCAL_SLOTS") else None)
    threads, need_mb, basis, waited = admit(admission)
    # One word: sccache 0.16 reads the value of a separated `--split-compile 2` as a second input
    # file ("multiple input files": neither cached nor sent to a farm); `--split-compile=2` passes
    # (its nvcc ARGS table has no entry for it: src/compiler/nvcc.rs, gcc.rs). Measured on loopback.
    command = [*args, f"--split-compile={threads}"] if threads > 1 else args
    start = time.time()
    try:
        code, cpu, peak = run_sampled(command)
    finally:
        release(gate_dir)
    end = time.time()
    record = {"file": file, "start": start, "end": end, "wall_s": round(end - start, 3),
              "cpu_s": round(cpu, 3), "peak_mb": round(peak / MB, 1), "threads": threads,
              "expected_mb": round(need_mb, 1), "basis": basis, "waited_s": round(waited, 3), "returncode": code}
    with open(gate_dir / "records.jsonl", "a") as out:
        out.write(json.dumps(record) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
