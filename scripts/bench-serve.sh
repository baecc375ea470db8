#!/usr/bin/env bash
# Serving benchmark: requests/s and p50/p99 time to first token of `ulm serve` at 1, 8 and 32
# streaming clients, for SmolLM2 side by side with llama.cpp's own server (xllamacpp wheel) on the
# same GGUF and the same number of cores, and for the shipped μLM when there is one; one run, a
# table, then one JSON line.
#   scripts/bench-serve.sh        # SECS=15 CORES=2 CLIENTS="1 8 32" MAX_TOKENS=24 LLAMA_THREADS="2 1" BATCH="32 0"
#   LLAMA_THREADS= scripts/bench-serve.sh   # ulm only: batched decoding on vs off in one run
# ulm serve runs once per BATCH entry: N > 0 is batched decoding (N slots, up to N generations
# per forward pass on CORES threads); 0 is CORES slots of one thread each, every generation
# decoding on its own. llama.cpp runs with 8 parallel slots (continuous
# batching) once per LLAMA_THREADS entry: CORES threads (the same cores) and 1 thread (the same
# threads per generation; llama.cpp's spinning threads collapse when another process holds a core).
# Time it on an idle machine: the table says what else was running.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-15}; CORES=${CORES:-2}; CLIENTS=${CLIENTS:-"1 8 32"}; MAX_TOKENS=${MAX_TOKENS:-24}
LLAMA_THREADS=${LLAMA_THREADS-"$CORES 1"}; BATCH=${BATCH:-"32 0"}
SMOL=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$SMOL" ] || scripts/fetch-assets.sh models
# Two commands: with --example, cargo would build only the example and leave a stale `ulm`.
cargo build --release -q -p ulm
cargo build --release -q -p ulm-server --example bench_serve
BENCH=target/release/examples/bench_serve
out=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$out"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; exit 1; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
others=$(ps -eo pcpu=,args= --sort=-pcpu | awk '$1 > 20 {print}' | grep -v -e bench_serve -e "ulm serve" | head -3 | cut -c1-90 || true)

declare -A uport
for b in $BATCH; do
  uport[$b]=$(free_port)
  if [ "$b" -gt 0 ]; then flags=(--batch "$b" --slots "$b"); else flags=(--batch 0 --slots "$CORES" --threads 1); fi
  target/release/ulm serve --port "${uport[$b]}" "${flags[@]}" --ctx 1024 --queue 256 >"$out/ulm$b.log" 2>&1 & pids+=($!)
  wait_line "$out/ulm$b.log" "listening on"
done
declare -A lport
for t in $LLAMA_THREADS; do
  lport[$t]=$(free_port)
  assets/venv/bin/python scripts/llama_server.py --model "$SMOL" --port "${lport[$t]}" --threads "$t" --parallel 8 --ctx-per-slot 1024 >"$out/llama$t.log" 2>&1 & pids+=($!)
  wait_line "$out/llama$t.log" "listening"
done
first=${BATCH%% *}
edge=$(curl -s "http://127.0.0.1:${uport[$first]}/api/config" | python3 -c 'import json,sys; print(json.load(sys.stdin)["edge_model"])')

run() { # label url model clients
  "$BENCH" --label "$1" --url "$2" --model "$3" --clients "$4" --secs "$SECS" --max-tokens "$MAX_TOKENS" | tee -a "$out/results.jsonl" >&2
}
for c in $CLIENTS; do
  for b in $BATCH; do run "ulm b$b" "http://127.0.0.1:${uport[$b]}" smollm2 "$c"; done
  for t in $LLAMA_THREADS; do run "llama.cpp/${t}t" "http://127.0.0.1:${lport[$t]}" smollm2 "$c"; done
  if [ "$edge" != "smollm2" ]; then
    for b in $BATCH; do run "ulm b$b" "http://127.0.0.1:${uport[$b]}" "$edge" "$c"; done
  fi
done

python3 - "$out/results.jsonl" "$load_before" "$CORES" "$MAX_TOKENS" "$others" "$BATCH" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
load, cores, max_tokens, others, batch = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
print(f"\nserving benchmark: {cores} cores, {max_tokens} tokens per reply, streaming; load average before: {load}")
print("ulm bN: batched decoding, up to N generations per forward pass; ulm b0: batching off, one generation per slot and thread")
if others.strip():
    print("busy processes before the run (the numbers below are from a loaded machine):")
    for l in others.splitlines():
        print("   ", l.strip())
print(f"{'server':<12} {'model':<10} {'clients':>7} {'req/s':>7} {'pieces/s':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'429/503':>8} {'errors':>6}")
for r in rows:
    print(f"{r['label'][:12]:<12} {r['model'][:10]:<10} {r['clients']:>7} {r['req_per_s']:>7.2f} {r['pieces_per_s']:>9.1f} {r['ttft_p50_ms']:>7.0f}ms {r['ttft_p99_ms']:>7.0f}ms {r['busy_429_503']:>8} {r['errors']:>6}")
print(json.dumps({"bench": "serve", "batch": batch, "cores": int(cores), "max_tokens": int(max_tokens), "load_before": load, "loaded": bool(others.strip()), "results": rows}))
PY
