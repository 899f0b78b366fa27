#!/usr/bin/env bash
# Proof on hardware (the GPU machine: H100 sm_90, 16 cores, torch 2.11+cu130, nvcc 13.0, no
# network). Builds each recipe's default version (flash-attn, causal-conv1d, bitsandbytes) for
# sm_90 with builder, side by side, installs them into the machine's python3, and runs a subset of
# each package's own tests, taken from the same source archive. Per recipe (its name with _ for -),
# ARGS_<recipe> adds build options and SELECT_<recipe> replaces the tests' -k expression, e.g.
#   ARGS_flash_attn="--variant hdims=128" SELECT_flash_attn="hdim and (111 or 128)" \
#     bench/gpu_proof.sh start flash-attn bitsandbytes
#
#   bench/gpu_proof.sh start [RECIPE...]  # sources in .carry/sources, wheels the image lacks in
#                                         # .carry/whl; starts builds detached
#   bench/gpu_proof.sh wait N   # waits up to N seconds, printing progress; then the results
#   bench/gpu_proof.sh collect DIR  # copies the results (and the build log's tail) into DIR
#
# Everything lands in $PROOF (default /tmp/proof): logs, measure JSON, pytest summaries.
set -uo pipefail
PROOF=${PROOF:-/tmp/proof}
CACHE=$PROOF/cache
PY=${PY:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

build_and_test() {  # recipe, test file, tests subset
  local recipe=$1 file=$2 select=$3 sdist args_var="ARGS_${1//-/_}" select_var="SELECT_${1//-/_}"
  select=${!select_var:-$select}
  cd "$ROOT"
  sdist=$(PYTHONPATH=$ROOT $PY -c "from builder.planning.recipe import load_recipe as l; r = l('$recipe'); print(r.versions[r.default_version].file)")
  # ninja's per-file start/end times, copied while the build tree exists (it is removed after)
  (while sleep 5; do find "$CACHE/build" -name .ninja_log -exec cp {} "$PROOF/$recipe.ninja_log" \; 2>/dev/null; done) &
  local watcher=$!
  PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} $PY bench/measure.py --interval 2 --out "$PROOF/$recipe.measure.json" -- \
    $PY -m builder build "$recipe" --arch 90 ${!args_var:-} --cache "$CACHE" --json > "$PROOF/$recipe.build.json" \
    2> "$PROOF/$recipe.build.err"
  echo "build rc=$?" >> "$PROOF/$recipe.status"
  kill $watcher
  mkdir -p "$PROOF/$recipe-tests" && tar -xzf "$CACHE/sources/$sdist" -C "$PROOF/$recipe-tests" \
    --wildcards '*/tests/*' --strip-components=1
  cd "$PROOF/$recipe-tests"
  $PY -m pytest --co -q "$file" -k "$select" 2>/dev/null | grep '::' | awk 'NR % 7 == 1' | head -300 > ids.txt
  timeout 200 $PY -m pytest -q -p no:cacheprovider $(cat ids.txt) > "$PROOF/$recipe.pytest.txt" 2>&1
  echo "tests rc=$? ($(wc -l < ids.txt) selected)" >> "$PROOF/$recipe.status"
}

case "${1:-}" in
  start)
    mkdir -p "$CACHE/sources" && cp "$ROOT"/.carry/sources/* "$CACHE/sources/"
    if ls "$ROOT"/.carry/whl/*.whl >/dev/null 2>&1; then
      $PY -m pip install -q --no-index --no-deps --target "$PROOF/site" "$ROOT"/.carry/whl/*.whl || exit 1
      export PYTHONPATH="$PROOF/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv > "$PROOF/gpu.txt"
    export -f build_and_test; export PROOF CACHE PY ROOT
    want=" ${*:2} "; [ "$want" = "  " ] && want=" flash-attn causal-conv1d "
    echo "$want" > "$PROOF/wanted"
    [[ $want == *" flash-attn "* ]] && setsid nohup bash -c 'build_and_test flash-attn tests/test_flash_attn.py "test_flash_attn_qkvpacked or test_flash_attn_causal"' > "$PROOF/flash-attn.nohup" 2>&1 < /dev/null &
    [[ $want == *" causal-conv1d "* ]] && setsid nohup bash -c 'build_and_test causal-conv1d tests/test_causal_conv1d.py "test_causal_conv1d and not race"' > "$PROOF/causal-conv1d.nohup" 2>&1 < /dev/null &
    [[ $want == *" bitsandbytes "* ]] && setsid nohup bash -c 'build_and_test bitsandbytes tests/test_functional.py "(blockwise_quantization or int8_linear_matmul or int8_double_quant or dequant_mm or 4bit_quant or gemv_4bit or spmm_coo) and not cpu and not bench"' > "$PROOF/bitsandbytes.nohup" 2>&1 < /dev/null &
    sleep 5; echo started; cat "$PROOF/gpu.txt"
    ;;
  wait)
    end=$((SECONDS + ${2:-540}))
    while [ $SECONDS -lt $end ]; do
      pending=0
      for r in $(cat "$PROOF/wanted"); do grep -qs tests "$PROOF/$r.status" || pending=1; done
      [ $pending = 0 ] && break
      sleep 20
    done
    for r in $(cat "$PROOF/wanted"); do
      echo "== $r"; cat "$PROOF/$r.status" 2>/dev/null
      log=$(ls -t "$CACHE"/logs/$r-*.log 2>/dev/null | head -1)
      [ -n "$log" ] && echo "compiled: $(grep -o '^ *\[[0-9]*/[0-9]*\]' "$log" | tail -1)"
      cat "$PROOF/$r.build.json" 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({k: d[k] for k in ('cache_hit','wheel','verified','seconds')}))" 2>/dev/null
      tail -3 "$PROOF/$r.build.err" 2>/dev/null
      cat "$PROOF/$r.measure.json" 2>/dev/null
      tail -3 "$PROOF/$r.pytest.txt" 2>/dev/null
    done
    free -g | head -2
    ;;
  collect)
    for r in $(cat "$PROOF/wanted"); do
      cat "$PROOF/gpu.txt" "$PROOF/$r.status" "$PROOF/$r.build.err" > "${2:?}/$r.summary.txt"
      cp "$PROOF/$r.build.json" "$PROOF/$r.measure.json" "$PROOF/$r.pytest.txt" "$PROOF/$r.ninja_log" "$2/" 2>/dev/null
      log=$(ls -t "$CACHE"/logs/$r-*.log 2>/dev/null | head -1)
      [ -n "$log" ] && tail -c 4000000 "$log" > "$2/$r.build-log-tail.txt"
    done
    ls -l "$2"
    ;;
  *) echo "usage: $0 start [RECIPE...] | wait SECONDS | collect DIR" >&2; exit 2 ;;
esac
