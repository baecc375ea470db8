#!/usr/bin/env bash
# Handoff latency benchmark: time to first word shown with the handoff (local opener at once, the
# cloud continues it) against asking the cloud alone, with our own `ulm serve` on loopback as the
# cloud at an injected time to first token of 0.3 s, 1 s and 3 s; one table, then one JSON line.
#   scripts/bench-handoff.sh                               # 20 dev prompts, prefill, 50 tokens/s
#   scripts/bench-handoff.sh --limit 5 --ttft-ms 1000      # any `ulm bench-handoff` flag
#   EARLY=0 scripts/bench-handoff.sh                       # without the cache-warming variant rows
# Everything shares this machine's cores (the opener, the cloud's prefill and decoding): time it
# on an idle machine, or quote the load averages the table prints and say the machine was loaded.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOL=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$SMOL" ] || scripts/fetch-assets.sh models
cargo build --release -q -p ulm
ULM="${CARGO_TARGET_DIR:-target}/release/ulm"
# A private copy: a rebuild of target/ during the run must not swap the binary the servers start.
bin=$(mktemp -d); trap 'rm -rf "$bin"' EXIT
cp "$ULM" "$bin/ulm"
early=(); [ "${EARLY:-1}" = 1 ] && early=(--early-request)
"$bin/ulm" bench-handoff "${early[@]}" "$@"
