#!/usr/bin/env bash
# The README's main command: set up a fresh machine, build, and answer a question instantly.
#   scripts/run.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."
q=${1:-"What is a good way to start learning to cook?"}
scripts/fetch-assets.sh models >&2
cargo build --release -p ulm >&2
echo "== ulm generate (default model, first 8 words, then the rest) ==" >&2
ulm="${CARGO_TARGET_DIR:-target}/release/ulm"
"$ulm" generate --words 8 "$q"
"$ulm" generate "$q"
if "$ulm" serve --help >/dev/null 2>&1 && [ -z "${ULM_NO_SERVE:-}" ]; then
  echo "== starting ulm serve: open http://127.0.0.1:8080/ (Ctrl-C stops it) ==" >&2
  exec "$ulm" serve
fi
