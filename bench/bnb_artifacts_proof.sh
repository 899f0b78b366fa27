#!/usr/bin/env bash
# Proof on hardware of artifacts mode (issue 3): on the GPU machine (no network), bitsandbytes 0.49.0
# is built for sm_90 and installed as a wheel; then built again for sm_80 + sm_90, which builder
# installs as artifacts (the default: the target has bitsandbytes), verified by
# `python -m bitsandbytes`; a subset of upstream's tests runs against it; and
# `builder uninstall bitsandbytes --artifacts` must restore the first library byte for byte.
#
#   bench/bnb_artifacts_proof.sh OUT   # sources in .carry/sources, trove-classifiers in .carry/whl
set -uo pipefail
OUT=${1:?usage: $0 OUT}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
P=${BNB_PROOF:-/tmp/bnb-proof}
mkdir -p "$P/cache/sources" "$OUT" && cp "$ROOT"/.carry/sources/bitsandbytes-0.49.0.tar.gz "$P/cache/sources/"
python3 -m pip install -q --no-index --no-deps --target "$P/site" "$ROOT"/.carry/whl/*.whl || exit 1
export PYTHONPATH="$ROOT:$P/site"
builder() { python3 -m builder "$@" --cache "$P/cache" --json; }
step() { local name=$1 out=$2; shift 2; echo "== $name"; "$@" > "$OUT/$out.json" 2> "$OUT/$out.err"; echo "rc=$?"; }
lib() { python3 -c "import importlib.util as u, pathlib as p; print(p.Path(u.find_spec('bitsandbytes').origin).parent / 'libbitsandbytes_cuda130.so')"; }

step "wheel, sm_90" wheel builder build bitsandbytes --version 0.49.0 --arch 90
sha256sum "$(lib)" | tee "$OUT/sha-wheel.txt"
step "again, sm_80 + sm_90 (auto: artifacts)" artifacts builder build bitsandbytes --version 0.49.0 --arch 80,90
sha256sum "$(lib)" | tee "$OUT/sha-artifacts.txt"
cuobjdump --list-elf "$(lib)" | tee "$OUT/cuobjdump.txt"
mkdir -p "$P/tests" && tar -xzf "$P/cache/sources/bitsandbytes-0.49.0.tar.gz" -C "$P/tests" --wildcards '*/tests/*' --strip-components=1
(cd "$P/tests" && timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_functional.py \
  -k "(int8_linear_matmul or dequant_mm or gemv_4bit) and not cpu and not bench" > "$OUT/pytest.txt" 2>&1; echo "tests rc=$?")
tail -2 "$OUT/pytest.txt"
step "uninstall --artifacts" uninstall builder uninstall bitsandbytes --artifacts --python python3
sha256sum "$(lib)" | tee "$OUT/sha-restored.txt"
cmp <(cut -d' ' -f1 "$OUT/sha-wheel.txt") <(cut -d' ' -f1 "$OUT/sha-restored.txt") && echo "restored byte for byte"
python3 -c "import json; d=json.load(open('$OUT/artifacts.json')); print(json.dumps({k: d.get(k) for k in ('cache_hit', 'installed_into', 'verified', 'timings')}))"
tail -n 3 "$OUT/artifacts.err" "$OUT/uninstall.err"; cat "$OUT/uninstall.json"
