#!/usr/bin/env bash
# flash-attn 2.8.3.post2 on hardware in one short call (the GPU machine: H200 sm_90, 16 cores,
# torch 2.11+cu130, nvcc 13.0, no network): the inference subset `hdims=128 dtypes=fp16
# backward=off` (4 kernel files and flash_api.cpp) built by builder from a fresh cache (so split
# compilation decides from the shipped reference costs or none), installed and verified (the recipe's
# GPU check against SDPA), then upstream's own forward test test_flash_attn_kvcache for d=128
# (fp16; a sample of its cases), and transformers' flash_attention_2 path on a small random Llama
# against the SDPA model's logits (bench/flash_client_check.py).
#
#   bench/flash_post2_proof.sh     # sources in .carry/sources, wheels in .carry/whl, upstream's test
#                                  # file in .carry/flash-tests; results in $OUT (or /tmp/post2)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RES=${OUT:-/tmp/post2}
RUN=/tmp/post2-run
PY=${PY:-python3}
mkdir -p "$RES" "$RUN/cache/sources"
cp "$ROOT"/.carry/sources/flash_attn-2.8.3.post2.tar.gz "$RUN/cache/sources/"
$PY -m pip install -q --no-index --no-deps --target "$RUN/site" "$ROOT"/.carry/whl/*.whl || exit 1
export PYTHONPATH="$ROOT:$RUN/site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader > "$RES/gpu.txt"
nproc >> "$RES/gpu.txt"

start=$(date +%s.%N)
timeout "${BUILD_LIMIT:-330}" $PY -m builder build flash-attn --version 2.8.3.post2 --arch 90 \
  --variant hdims=128 --variant dtypes=fp16 --variant backward=off --cache "$RUN/cache" --json \
  > "$RES/build.json" 2> "$RES/build.err"
echo "build rc=$? wall=$(python3 -c "import time; print(round(time.time() - $start, 1))") s" >> "$RES/status.txt"
$PY -m builder stats flash-attn --cache "$RUN/cache" --json --top 10 > "$RES/stats.json" 2>> "$RES/build.err"

# Outside the checkout: inside it, pytest's rootdir is the checkout and it lists the ids relative to it.
mkdir -p "$RUN/flash-tests" && cp "$ROOT"/.carry/flash-tests/test_flash_attn.py "$RUN/flash-tests/"
cd "$RUN/flash-tests"
$PY -m pytest --co -q test_flash_attn.py -k test_flash_attn_kvcache 2>/dev/null | grep '::' \
  | $PY -c "import sys; ids=[l.strip() for l in sys.stdin if l.split('[')[1].split('-')[2] == '128']; print('\n'.join(ids[::40]))" \
  > "$RUN/ids.txt"
timeout "${TEST_LIMIT:-90}" $PY -m pytest -q -p no:cacheprovider $(cat "$RUN/ids.txt") > "$RES/pytest.txt" 2>&1
echo "upstream kvcache d=128 rc=$? ($(wc -l < "$RUN/ids.txt") selected)" >> "$RES/status.txt"
cd "$ROOT"
timeout "${CLIENT_LIMIT:-60}" $PY bench/flash_client_check.py > "$RES/client.txt" 2>&1
echo "transformers client rc=$?" >> "$RES/status.txt"
cat "$RES/status.txt"; tail -3 "$RES/pytest.txt"; tail -5 "$RES/client.txt"; tail -5 "$RES/build.err"
