"""One nvcc compile at several `--split-compile` thread counts: its wall, CPU seconds and largest
process, each against the unsplit compile. What bench/farm_predict.py needs to say what splitting a
long file buys (a file's split is the one thing that shortens a farm build past its longest file).

    python bench/split_file.py --threads 1,2,4 --label "flash_fwd_split_hdim64_fp16_sm80.cu, sm_90" \\
        -- nvcc -c csrc/flash_attn/src/flash_fwd_split_hdim64_fp16_sm80.cu -o /tmp/k.o ...

The command runs as given, once per thread count, with `--split-compile=N` appended when N > 1,
back to back on an otherwise idle machine. A table goes to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import append_results

ROOT = Path(__file__).resolve().parent.parent


def measured(command: list[str]) -> dict[str, object]:
    """bench/measure.py's result for one run, in a process of its own (its ru_maxrss is this run's)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run([sys.executable, str(Path(__file__).with_name("measure.py")), "--interval", "0.5",
                        "--out", str(out), "--", *command], check=False)
        return dict(json.loads(out.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="thread counts, comma separated (default 1,2)")
    parser.add_argument("--label", required=True, help="what is compiled, for the results table")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the nvcc command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the nvcc command after --")
    runs = {}
    for threads in (int(n) for n in args.threads.split(",")):
        split = [f"--split-compile={threads}"] if threads > 1 else []
        result = measured([*command, *split])
        print(json.dumps({"threads": threads, **{k: v for k, v in result.items() if k != "command"}}), flush=True)
        if result["returncode"] != 0:
            print(f"the compile failed at {threads} thread(s)", file=sys.stderr)
            return 1
        runs[threads] = result
    base = runs[min(runs)]
    rows = [f"| {threads} thread(s) | {r['wall_s']} s wall ({float(r['wall_s']) / float(base['wall_s']):.2f}x), "
            f"{r['cpu_s']} CPU-s ({float(r['cpu_s']) / float(base['cpu_s']):.2f}x), largest process "
            f"{r['max_process_rss_gb']} GB |" for threads, r in runs.items()]
    heading = f"`python bench/split_file.py --threads {args.threads}`: {args.label}"
    intro = f"{os.cpu_count()} cores, run back to back. The command:\n\n    {shlex.join(command)}"
    print(append_results(args.results, heading, ("split", "cost"), rows, intro))
    return 0


if __name__ == "__main__":
    sys.exit(main())
