"""The whole flash-attn sm_90 build on a build farm, on paper: the per-file costs shipped with the
recipe (recipes/costs/flash-attn-2.8.3.post2.json: a real build on the GPU machine, 16 cores)
scheduled longest first over N build servers of C cores, each step paying the per-step overhead
measured on loopback (bench/run.py --farm), against one machine's floor (CPU-s / its cores).

    python bench/farm_predict.py --overhead 1.2      # appends a table to bench/RESULTS.md

What it assumes: a file's compile runs on one core of a server for its recorded CPU seconds (the
records' wall under a loaded 16-core machine is within a few percent of its CPU time); the building
machine's own work per file (preprocessing, cudafe++, sending the toolchain once) is inside the
overhead; nothing is split (split compilation is off under sccache). So the longest file bounds
the wall however many servers there are.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from pathlib import Path

from measure import append_results

ROOT = Path(__file__).resolve().parent.parent
COSTS = ROOT / "recipes" / "costs" / "flash-attn-2.8.3.post2.json"


def longest_first(seconds: list[float], slots: int) -> float:
    """The wall of `seconds` (one job each) on `slots` cores, the longest started first."""
    free = [0.0] * slots
    for job in sorted(seconds, reverse=True):
        start = heapq.heappop(free)
        heapq.heappush(free, start + job)
    return max(free)


def predict(files: list[dict[str, float]], servers: int, cores: int, overhead: float) -> float:
    return longest_first([f["cpu_s"] + overhead for f in files], servers * cores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overhead", type=float, required=True,
                        help="seconds each remote compile adds (bench/run.py --farm measures it on loopback)")
    parser.add_argument("--cores", type=int, default=16, help="cores per build server (default 16)")
    parser.add_argument("--servers", default="1,2,4,8", help="server counts (default 1,2,4,8)")
    parser.add_argument("--costs", type=Path, default=COSTS)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    measurement = json.loads(args.costs.read_text())["measurements"][0]
    files = measurement["files"]
    cpu = sum(f["cpu_s"] for f in files)
    floor = cpu / measurement["cores"]
    longest = max(f["cpu_s"] for f in files)
    rows = [f"| one machine's floor ({measurement['cores']} cores: {cpu:,.0f} CPU-s / {measurement['cores']}) "
            f"| {floor:,.0f} s |"]
    for servers in (int(n) for n in args.servers.split(",")):
        wall = predict(files, servers, args.cores, args.overhead)
        rows.append(f"| {servers} server(s) x {args.cores} cores, longest first, +{args.overhead:g} s a file "
                    f"| {wall:,.0f} s ({floor / wall:.2f}x the speed of one machine) |")
    rows.append(f"| the longest file alone (what no number of servers goes below, unsplit) "
                f"| {longest + args.overhead:,.0f} s |")
    command = "python bench/farm_predict.py " + " ".join(sys.argv[1:])
    heading = f"`{command}`: flash-attn {json.loads(args.costs.read_text())['version']} sm_90 on a farm, on paper"
    intro = f"From {args.costs.relative_to(ROOT)} ({len(files)} files, {measurement.get('machine', 'GPU machine')})."
    print(append_results(args.results, heading, ("what", "predicted wall"), rows, intro))
    return 0


if __name__ == "__main__":
    sys.exit(main())
