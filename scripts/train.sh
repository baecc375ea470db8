#!/usr/bin/env bash
# Train a μLM with the train/.venv PyTorch (see train/README.md):
#   scripts/train.sh --data DIR --out runs/NAME --preset micro_8m --max-steps 20000
#   scripts/train.sh pref --data runs/data/pref --init models/ulm-8m --out runs/NAME   (train/pref.py)
# Re-running the same command resumes from runs/NAME/ckpt.pt. Paths are taken as given (no cd).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/train/.venv/bin/python"
if [ ! -x "$py" ]; then
  echo "train/.venv is missing: run scripts/setup-train.sh first" >&2
  exit 1
fi
# glibc malloc returns big blocks to the kernel and faults them in again every step; keeping
# them raised PyTorch from 1,377 to 2,024 tok/s on micro_8m here (shared/ASSETS.md).
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456
entry=train.py
if [ "${1:-}" = pref ]; then  # scripts/train.sh pref ...: preference training (train/pref.py)
  entry=pref.py
  shift
fi
exec "$py" "$root/train/$entry" "$@"
