#!/usr/bin/env bash
# Distillation throughput: teacher tokens/s of `ulm distill` against llama.cpp's server (SmolLM2
# Q4_1, xllamacpp wheel) with 1 and several concurrent sequences, on the same threads.
#
#   scripts/bench-distill.sh                 # slots 1,4,8,16 × threads 1,2; 48 prompts each
#   SLOTS=1,8 THREADS=1 N=32 scripts/bench-distill.sh
#
# Time is distill's own clock from the first request to the last reply (not its start-up).
# Run it on an idle machine. Prints a table and ends with one JSON line. Nothing is written to the
# corpus: each run answers the first N prompts of the set into a scratch file.
set -euo pipefail
cd "$(dirname "$0")/.."
SLOTS=${SLOTS:-1,4,8,16}
THREADS=${THREADS:-1,2}
N=${N:-48}
MAX_TOKENS=${MAX_TOKENS:-32}
PORT=${PORT:-8097}
ulm=${ULM:-target/release/ulm}
model=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -x "$ulm" ] || cargo build --release -p ulm >&2
[ -f "$model" ] || scripts/fetch-assets.sh models >&2
scratch=$(mktemp -d)
trap 'kill $srv 2>/dev/null || true; rm -rf "$scratch"' EXIT

rows=()
printf '%-8s %-6s %8s %10s %10s\n' threads slots replies "tok/s" "replies/s"
for t in ${THREADS//,/ }; do
  for s in ${SLOTS//,/ }; do
    assets/venv/bin/python scripts/llama_server.py --model "$model" --port "$PORT" --threads "$t" --parallel "$s" \
      --ctx-per-slot 256 > "$scratch/server.log" 2>&1 &
    srv=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/v1/models" > /dev/null && break; sleep 0.2; done
    out="$scratch/t$t-s$s.jsonl"
    "$ulm" distill --teacher "http://127.0.0.1:$PORT" --concurrency "$s" --max-tokens "$MAX_TOKENS" --limit "$N" \
      --out "$out" --corpus "$scratch/none" 2> "$scratch/distill.log"
    kill $srv; wait $srv 2>/dev/null || true
    read -r replies tokens < <(python3 -c "
import json,sys; r=[json.loads(l) for l in open('$out')]; print(len(r), sum(x['n_tokens'] for x in r))")
    row=$(python3 -c "
import re; w=float(re.search(r'teacher tokens in ([0-9.]+) s', open('$scratch/distill.log').read()).group(1))
print('%d %d %d %.1f %.2f %.1f' % ($t, $s, $replies, $tokens/w, $replies/w, w))")
    read -r _ _ _ tps rps wall <<< "$row"
    printf '%-8s %-6s %8s %10s %10s\n' "$t" "$s" "$replies" "$tps" "$rps"
    rows+=("{\"threads\":$t,\"slots\":$s,\"replies\":$replies,\"teacher_tokens\":$tokens,\"wall_s\":$wall,\"tok_s\":$tps,\"replies_s\":$rps}")
  done
done
(IFS=,; echo "{\"bench\":\"distill\",\"teacher\":\"SmolLM2-135M-Instruct.Q4_1 (llama.cpp, xllamacpp)\",\"max_tokens\":$MAX_TOKENS,\"rows\":[${rows[*]}]}")
