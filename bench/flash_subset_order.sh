#!/usr/bin/env bash
# Heaviest first on hardware (the GPU machine: H100 sm_90, 16 cores, torch 2.11+cu130, no network):
# the flash-attn 2.8.3 kernel subset hdims=32,256 (24 kernel files and flash_api.cpp) built twice
# for sm_90 with 16 jobs.
#   run 1 "plain":   a fresh cache, no records: ninja starts the files in build.ninja's order
#                    (setuptools sorts the sources, so the costly fwd_split files come last)
#   run 2 "ordered": --force, with run 1's records: builder's ninja wrapper starts the slowest first
# Then the subset is installed and checked against PyTorch's attention (bench/flash_subset_check.py),
# including the clear error for a head dim outside the subset.
#
#   bench/flash_subset_order.sh start       # sources from .carry/sources; starts detached
#   bench/flash_subset_order.sh wait N      # waits up to N seconds, printing progress
#   bench/flash_subset_order.sh collect DIR # copies the results into DIR
set -uo pipefail
RUN=${RUN:-/tmp/subset}
CACHE=$RUN/cache
PY=${PY:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

both_runs() {
  local ARGS=(flash-attn --arch 90 --variant hdims=32,256 --jobs 16 --cache "$CACHE" --json)
  cd "$ROOT"
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
  $PY -m builder build "${ARGS[@]}" --no-install > "$RUN/plain.build.json" 2> "$RUN/plain.build.err"
  echo "plain rc=$?" >> "$RUN/status"
  $PY -m builder stats flash-attn --cache "$CACHE" --json --top 30 > "$RUN/plain.stats.json"
  $PY -m builder build "${ARGS[@]}" --force > "$RUN/ordered.build.json" 2> "$RUN/ordered.build.err"
  echo "ordered rc=$?" >> "$RUN/status"
  $PY -m builder stats flash-attn --cache "$CACHE" --json --top 30 > "$RUN/ordered.stats.json"
  timeout 300 $PY bench/flash_subset_check.py > "$RUN/check.txt" 2>&1
  echo "check rc=$?" >> "$RUN/status"
}

case "${1:-}" in
  start)
    rm -rf "$RUN" && mkdir -p "$CACHE/sources" && cp "$ROOT"/.carry/sources/flash_attn-2.8.3.tar.gz "$CACHE/sources/"
    if ls "$ROOT"/.carry/whl/*.whl >/dev/null 2>&1; then
      $PY -m pip install -q --no-index --no-deps --target "$RUN/site" "$ROOT"/.carry/whl/*.whl || exit 1
      export PYTHONPATH="$RUN/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export -f both_runs; export RUN CACHE PY ROOT
    setsid nohup bash -c both_runs > "$RUN/nohup.txt" 2>&1 < /dev/null &
    sleep 5; echo started; nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv
    ;;
  wait)
    end=$((SECONDS + ${2:-540}))
    while [ $SECONDS -lt $end ] && ! grep -qs check "$RUN/status"; do sleep 15; done
    cat "$RUN/status" 2>/dev/null
    tail -n 3 "$RUN"/*.build.err 2>/dev/null
    ;;
  collect)
    mkdir -p "$2" && cp "$RUN"/*.json "$RUN"/*.err "$RUN"/status "$RUN"/check.txt "$2"/ 2>/dev/null
    for run in plain ordered; do  # the compile lines of each build log, in the order ninja ran them
      log=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['log'])" "$RUN/$run.build.json" 2>/dev/null) \
        && grep -E '^\s*\[[0-9]+/[0-9]+\]' "$log" | grep -oE '[a-z_0-9]+\.(cu|cpp) ' > "$2/$run.order.txt"
    done
    ls "$2"
    ;;
  *) echo "usage: $0 start | wait N | collect DIR" >&2; exit 2 ;;
esac
