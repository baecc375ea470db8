#!/usr/bin/env bash
# The recipe of models/ulm-30m, resumable: re-run the same command after a kill and every stage
# continues from its last checkpoint (finished stages are skipped).
#   scripts/recipe-ulm-30m.sh [RUNS_DIR]        # default runs/ulm-30m; log in RUNS_DIR/recipe.log
# Environment: THREADS (default 2), LM_STEPS (700), SFT_STEPS (450). 4,096 tokens per step.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
runs="${1:-runs/ulm-30m}"
threads="${THREADS:-2}"
lm_steps="${LM_STEPS:-700}"
sft_steps="${SFT_STEPS:-450}"
ulm="${ULM:-target/release/ulm}"
mkdir -p "$runs"
[ -f "$runs/data-lm/manifest.json" ] || "$ulm" data --stage lm --out "$runs/data-lm"
[ -f "$runs/data-sft/manifest.json" ] || "$ulm" data --stage sft --out "$runs/data-sft"
# Stage 1: language modelling on everything (chitchat, WordNet glosses, fortunes, distilled replies).
scripts/train.sh --data "$runs/data-lm" --out "$runs/lm" --preset micro_30m --stage lm \
  --lr 1e-3 --warmup-steps 60 --max-steps "$lm_steps" --threads "$threads" --eval-every 100
# Stage 2: chat SFT, loss on assistant tokens, first 16 reply tokens weighted 2x.
scripts/train.sh --data "$runs/data-sft" --out "$runs/sft" --stage sft --init "$runs/lm" \
  --lr 5e-4 --warmup-steps 30 --max-steps "$sft_steps" --threads "$threads" --eval-every 100
train/.venv/bin/python train/export.py --ckpt "$runs/sft" --out "$runs/export" --dtype f16
echo "recipe done: $runs/export"
