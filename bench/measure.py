"""Run a command and report what it cost: wall seconds, CPU seconds of the whole process tree,
the largest single process's peak RSS, and the peak memory in use on the machine.

    python bench/measure.py --out result.json -- builder build causal-conv1d --arch 86

The JSON goes to --out (and stdout); the command's own output passes through.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil


def append_results(results: Path, heading: str, columns: tuple[str, str], rows: list[str], intro: str = "") -> str:
    """Append a `### DATE — heading` section with a two-column table to bench/RESULTS.md; its text."""
    section = "\n".join([f"\n### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — {heading}\n",
                         *([intro + "\n"] if intro else []),
                         f"| {columns[0]} | {columns[1]} |", "| --- | --- |", *rows, ""])
    with results.open("a") as out:
        out.write(section)
    return section


def sample_memory(stop: threading.Event, peak: list[float], interval: float) -> None:
    """Record the peak of memory in use on the machine (total - available)."""
    while not stop.is_set():
        vm = psutil.virtual_memory()
        peak[0] = max(peak[0], (vm.total - vm.available) / 1024**3)
        stop.wait(interval)


def measure(command: list[str], interval: float = 1.0) -> dict[str, object]:
    baseline = psutil.virtual_memory()
    baseline_gb = (baseline.total - baseline.available) / 1024**3
    peak = [baseline_gb]
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(stop, peak, interval), daemon=True)
    sampler.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    returncode = subprocess.call(command)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stop.set()
    sampler.join()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "command": command,
        "returncode": returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cores": psutil.cpu_count(),
        "core_use": round(cpu / wall / (psutil.cpu_count() or 1), 3) if wall else None,
        "max_process_rss_gb": round(after.ru_maxrss / 1024**2, 2),
        "peak_system_used_gb": round(peak[0], 1),
        "baseline_system_used_gb": round(baseline_gb, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path,
                        help="write the JSON result here instead of stdout (which stays the command's)")
    parser.add_argument("--interval", type=float, default=1.0, help="memory sampling period (s)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    result = measure(command, args.interval)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return int(result["returncode"])  # type: ignore[call-overload]


if __name__ == "__main__":
    sys.exit(main())
