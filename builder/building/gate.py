"""The compile gate: a wrapper builder puts in front of every compiler a build runs (PYTORCH_NVCC
and CXX for torch extensions, the Makefile's NVCC, CMake's compiler launchers). For one compile it

1. waits until the compile's expected peak memory fits in the build's memory budget beside the
   compiles already running (always admitted when none runs, so a build never deadlocks);
2. runs the compiler, sampling the resident memory of its whole process tree;
3. appends a record: file, start, end, wall and CPU seconds, peak RSS, expected and waited.

With BUILDER_GATE_NVCC_SEED=1 it also gives each nvcc compile `-frandom-seed=<source file relative
to the source tree>`: nvcc otherwise puts its process id into the names of internal-linkage
entities (`_ZN57_INTERNAL_..._causal_conv1d_fwd_cu_6ed2b511_28350...`), and its --help asks for a
different seed per file (builder/building/reproducible.py).

Expected peaks come from the last build's records (hints.json: file -> wall_s, peak_mb), else the recipe's
job_memory_gb. Commands that compile no source file (version queries, links) pass straight through.

It runs as a script (`python builder/gate.py COMPILER ARGS...`) with the build's environment,
needing only the standard library, psutil and filelock, so the compiler it starts sees exactly
the environment builder set. The gate's settings come from BUILDER_GATE_* variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
from filelock import FileLock

SOURCE_SUFFIXES = (".cu", ".cpp", ".cc", ".cxx", ".c")
# Compile without linking: gcc's -c; nvcc's -c, -dc (relocatable device code) and long forms.
COMPILE_FLAGS = frozenset({"-c", "-dc", "--compile", "--device-c"})
SAMPLE_SECONDS = 0.05
WAIT_SECONDS = 0.1
# A recorded peak is a sample; the next build of the file is expected a little above it.
RECORD_MARGIN = 1.15
# Set for the compiler the gate runs: a gated compiler it starts in turn (nvcc's host compiler, were
# it wrapped too) passes straight through instead of waiting for room its parent holds.
INSIDE = "BUILDER_GATE_INSIDE"
MB = 1024 * 1024


def source_file(args: list[str], root: str) -> str | None:
    """What a compiler command compiles (its source files, relative to the source tree when inside
    it, joined by spaces), or None for a command that compiles nothing (a link, a version query)."""
    if not COMPILE_FLAGS.intersection(args):
        return None
    files = []
    for arg in args:
        if arg.endswith(SOURCE_SUFFIXES) and os.path.isfile(arg):
            path = os.path.abspath(arg)
            files.append(os.path.relpath(path, root) if root and path.startswith(root.rstrip("/") + "/") else path)
    return " ".join(files) or None


def with_seed(args: list[str], file: str) -> list[str]:
    """An nvcc compile (run directly or through a launcher such as sccache) with a seed of its own."""
    if not any(os.path.basename(arg) == "nvcc" for arg in args[:2]) or any(
            arg.lstrip("-").startswith("frandom-seed") for arg in args):
        return args
    return [*args, f"-frandom-seed={file}"]


def expected_mb(file: str, gate_dir: Path, default_mb: float) -> tuple[float, str]:
    """The compile's expected peak and where the number came from ("record" or "estimate")."""
    hints_file = gate_dir / "hints.json"
    hints = json.loads(hints_file.read_text()) if hints_file.is_file() else {}
    if file in hints:
        return float(hints[file]["peak_mb"]) * RECORD_MARGIN, "record"
    return default_mb, "estimate"


def admit(gate_dir: Path, budget_mb: float, need_mb: float) -> float:
    """Wait for room in the budget and register this compile; returns the seconds waited."""
    started = time.monotonic()
    state = gate_dir / "running.json"
    while True:
        with FileLock(str(gate_dir / "running.lock")):
            running = json.loads(state.read_text()) if state.is_file() else {}
            running = {pid: mb for pid, mb in running.items() if psutil.pid_exists(int(pid))}
            if not running or sum(running.values()) + need_mb <= budget_mb:
                running[str(os.getpid())] = need_mb
                state.write_text(json.dumps(running))
                return time.monotonic() - started
        time.sleep(WAIT_SECONDS)


def release(gate_dir: Path) -> None:
    state = gate_dir / "running.json"
    with FileLock(str(gate_dir / "running.lock")):
        running = json.loads(state.read_text()) if state.is_file() else {}
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
    while child.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, tree_rss(process))
        time.sleep(SAMPLE_SECONDS)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss (KiB) is the largest single process waited for: a floor when sampling missed it.
    peak = max(peak, usage.ru_maxrss * 1024)
    return child.returncode, usage.ru_utime + usage.ru_stime, peak


def main(args: list[str]) -> int:
    gate_dir = Path(os.environ.get("BUILDER_GATE_DIR", ""))
    file = source_file(args, os.environ.get("BUILDER_GATE_SOURCE_ROOT", ""))
    if not args or file is None or not gate_dir.is_dir() or os.environ.get(INSIDE):
        return subprocess.call(args) if args else 2
    if os.environ.get("BUILDER_GATE_NVCC_SEED") == "1":
        args = with_seed(args, file)
    budget_mb = float(os.environ.get("BUILDER_GATE_BUDGET_MB", "inf"))
    need_mb, basis = expected_mb(file, gate_dir, float(os.environ.get("BUILDER_GATE_JOB_MB", "0")))
    waited = admit(gate_dir, budget_mb, need_mb)
    start = time.time()
    try:
        code, cpu, peak = run_sampled(args)
    finally:
        release(gate_dir)
    end = time.time()
    record = {"file": file, "start": start, "end": end, "wall_s": round(end - start, 3),
              "cpu_s": round(cpu, 3), "peak_mb": round(peak / MB, 1), "expected_mb": round(need_mb, 1),
              "basis": basis, "waited_s": round(waited, 3), "returncode": code}
    with open(gate_dir / "records.jsonl", "a") as out:
        out.write(json.dumps(record) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
