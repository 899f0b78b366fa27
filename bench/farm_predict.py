"""The whole flash-attn sm_90 build on a build farm, on paper: the per-file costs shipped with the
recipe (recipes/costs/flash-attn-2.8.3.post2.json: a real build on the GPU machine, 16 cores)
scheduled longest first over N build servers of C cores (one compile per core, as sccache-dist's
scheduler assigns them), each step paying the per-step overhead measured on loopback (bench/run.py
--farm), against one machine's floor (CPU-s / its cores).

    python bench/farm_predict.py --overhead 1.2      # appends a table to bench/RESULTS.md

What it assumes: a file's compile runs on one core of a server for its recorded CPU seconds (the
records' wall under a loaded 16-core machine is within a few percent of its CPU time); the building
machine's own work per file (preprocessing, cudafe++, sending the toolchain once) is inside the
overhead. Without --split nothing is split, so the longest file bounds the wall however many
servers there are. With --split the files the gate splits through sccache (its shipped_threads, from
these same costs) run in the measured share of their wall (SPLIT_WALL) on more than one core
(SPLIT_CPU / SPLIT_WALL), sharing the cores with the others when all are taken.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from measure import append_results

from builder.building.gate import SPLIT_WALL, shipped_threads

ROOT = Path(__file__).resolve().parent.parent
COSTS = ROOT / "recipes" / "costs" / "flash-attn-2.8.3.post2.json"
# A split compile's CPU seconds over the same file's unsplit ones, by threads (its wall: the gate's
# SPLIT_WALL, from the same runs). 4: flash-attn 2.8.3 fwd_split hdim128 fp16, sm_90, on the H200
# machine (../shared/DESIGN.md, 2026-12-03: the subset's CPU +4%). 2: flash_fwd_split_hdim64_fp16_sm80.cu,
# sm_90, on the CPU machine (bench/split_file.py, bench/RESULTS.md 2026-12-07).
SPLIT_CPU = {1: 1.0, 2: 0.99, 4: 1.04}


def longest_first(jobs: list[tuple[float, float, float]], cores: int) -> float:
    """The wall of `jobs` ((CPU seconds unsplit, seconds at full speed, cores it keeps busy) each) on
    `cores` cores, started by CPU seconds, the most first (what builder's ordering ninja does), one
    job per core at a time (what ninja's -j and sccache-dist's scheduler do);
    when the running jobs want more cores than there are (split ones want more than one), they share
    them in proportion."""
    pending = [[seconds, want] for _, seconds, want in sorted(jobs, reverse=True)]
    running: list[list[float]] = []  # [seconds left at full speed, cores it wants]
    wall = 0.0
    while pending or running:
        while pending and len(running) < cores:
            running.append(pending.pop(0))
        speed = min(1.0, cores / sum(want for _, want in running))
        step = min(left for left, _ in running) / speed
        wall += step
        for job in running:
            job[0] -= step * speed
        running = [job for job in running if job[0] > 1e-9]
    return wall


def threads_of(f: dict[str, float], split: bool) -> int:
    """The threads the gate gives the file through sccache (1 without --split)."""
    return shipped_threads({**f, "basis": "reference"}) if split else 1


def job(f: dict[str, float], overhead: float, threads: int) -> tuple[float, float, float]:
    """One file's (CPU seconds, seconds at full speed on the farm, cores it keeps busy): a split file
    runs its threads' measured share of the wall on SPLIT_CPU / SPLIT_WALL cores."""
    return f["cpu_s"], f["cpu_s"] * SPLIT_WALL[threads] + overhead, SPLIT_CPU[threads] / SPLIT_WALL[threads]


def predict(files: list[dict[str, float]], servers: int, cores: int, overhead: float, split: bool) -> float:
    return longest_first([job(f, overhead, threads_of(f, split)) for f in files], servers * cores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overhead", type=float, required=True,
                        help="seconds each remote compile adds (bench/run.py --farm measures it on loopback)")
    parser.add_argument("--cores", type=int, default=16, help="cores per build server (default 16)")
    parser.add_argument("--servers", default="1,2,4,8", help="server counts (default 1,2,4,8)")
    parser.add_argument("--split", action="store_true",
                        help="split the files the gate splits through sccache (gate.shipped_threads)")
    parser.add_argument("--costs", type=Path, default=COSTS)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    measurement = json.loads(args.costs.read_text())["measurements"][0]
    files = measurement["files"]
    cpu = sum(f["cpu_s"] for f in files)
    floor = cpu / measurement["cores"]
    split = [threads_of(f, args.split) for f in files]
    longest = max(job(f, args.overhead, n)[1] for f, n in zip(files, split, strict=True))
    rows = [f"| one machine's floor ({measurement['cores']} cores: {cpu:,.0f} CPU-s / {measurement['cores']}) "
            f"| {floor:,.0f} s |"]
    for servers in (int(n) for n in args.servers.split(",")):
        wall = predict(files, servers, args.cores, args.overhead, args.split)
        rows.append(f"| {servers} server(s) x {args.cores} cores, longest first, +{args.overhead:g} s a file "
                    f"| {wall:,.0f} s ({floor / wall:.2f}x the speed of one machine) |")
    if args.split:
        rows.append(f"| files split (2 / 4 threads) | {split.count(2)} / {split.count(4)}, "
                    f"{sum(f['cpu_s'] * (SPLIT_CPU[n] - 1) for f, n in zip(files, split, strict=True)):+,.0f} CPU-s |")
    rows.append(f"| the longest compile alone (what no number of servers goes below"
                f"{', split as the gate splits' if args.split else ', unsplit'}) | {longest:,.0f} s |")
    command = "python bench/farm_predict.py " + " ".join(sys.argv[1:])
    heading = f"`{command}`: flash-attn {json.loads(args.costs.read_text())['version']} sm_90 on a farm, on paper"
    intro = f"From {args.costs.relative_to(ROOT)} ({len(files)} files, {measurement.get('machine', 'GPU machine')})."
    print(append_results(args.results, heading, ("what", "predicted wall"), rows, intro))
    return 0


if __name__ == "__main__":
    sys.exit(main())
