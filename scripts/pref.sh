#!/usr/bin/env bash
# Preference training (DPO) of a μLM on pairs of its own openers (train/pref.py):
#   scripts/pref.sh --data runs/data/pref --init models/ulm-8m --out runs/ulm-8m-pref --max-steps 300
# Re-running the same command resumes from runs/NAME/ckpt.pt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/train/.venv/bin/python"
if [ ! -x "$py" ]; then
  echo "train/.venv is missing: run scripts/setup-train.sh first" >&2
  exit 1
fi
# The glibc malloc settings of scripts/train.sh (shared/ASSETS.md).
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456
exec "$py" "$root/train/pref.py" "$@"
