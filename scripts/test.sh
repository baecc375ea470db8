#!/usr/bin/env bash
# The README's test command (and CI's): fetch assets, run every Rust and Python test, check the
# dependency directions, and end with one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
fail=0
# CI's disk is small: no incremental caches, and each step reports the free space it left.
export CARGO_INCREMENTAL=0
step() { printf '\n== %s ==  (disk free: %s)\n' "$*" "$(df -h --output=avail . | tail -1 | tr -d ' ')"; }

step "assets (SmolLM2, data, llama.cpp peer)"
scripts/fetch-assets.sh || exit 1

step "ulm-runtime stays plain: no async runtime, HTTP, anyhow or autograd"
bad=$(cargo tree -p ulm-runtime -e normal --prefix none 2>/dev/null | grep -E '^(tokio|hyper|reqwest|axum|anyhow|candle-core|tch|burn) ' | sort -u)
if [ -n "$bad" ]; then echo "ulm-runtime depends on: $bad"; fail=1; else echo ok; fi

step "PyTorch venv for train/ (the Rust parity test uses it too)"
scripts/setup-train.sh || fail=1

step "cargo test --workspace"
cargo test --workspace 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1

if [ -d train/tests ]; then
  step "train/ (PyTorch)"
  train/.venv/bin/python -m pytest -q train/tests 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
fi

for t in web/test/run.sh; do
  if [ -x "$t" ]; then
    step "$t"
    "$t" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
  fi
done

passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
rm -f "$log"
[ "$failed" -eq 0 ] || fail=1
echo
echo "ulm: $passed passed, $failed failed"
exit $fail
