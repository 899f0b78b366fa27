#!/usr/bin/env bash
# Proof on hardware for autoawq-kernels (issue 4): builder builds it from .carry/sources/
# AutoAWQ_kernels-0.0.9 (a checkout of the tag) for sm_90 against the machine's torch, installs it
# into python3, and bench/awq_kernels_check.py compares its GEMM and GEMV with torch.
#
#   bench/awq_gpu_proof.sh start   # detached; then
#   bench/awq_gpu_proof.sh wait N [OUT]   # waits up to N s, prints the results, copies them to OUT
set -uo pipefail
P=${AWQ_PROOF:-/tmp/awq-proof}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in
  start)
    mkdir -p $P
    setsid nohup bash -c "cd $ROOT && python3 bench/measure.py --interval 2 --out $P/measure.json -- \
      sh -c 'python3 -m builder build autoawq-kernels --source .carry/sources/AutoAWQ_kernels-0.0.9 \
      --arch 90 --cache $P/cache --json > $P/build.json 2> $P/build.err'; \
      python3 bench/awq_kernels_check.py > $P/check.txt 2>&1; echo \$? > $P/done" > $P/nohup.log 2>&1 < /dev/null &
    sleep 2; echo started ;;
  wait)
    end=$((SECONDS + ${2:-540}))
    while [ $SECONDS -lt $end ] && [ ! -f $P/done ]; do sleep 10; done
    echo "done: $(cat $P/done 2>/dev/null || echo no)"
    grep -ho '^ *\[[0-9]*/[0-9]*\]' $P/cache/logs/autoawq-kernels-*.log 2>/dev/null | tail -1
    tail -4 $P/build.err; cat $P/measure.json $P/check.txt 2>/dev/null
    python3 -c "import json; d=json.load(open('$P/build.json')); print(d['seconds'], d['verified'], d['wheel'])" 2>/dev/null
    [ -n "${3:-}" ] && cp $P/build.json $P/build.err $P/measure.json $P/check.txt "$3"/ 2>/dev/null
    true ;;
esac
