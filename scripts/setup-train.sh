#!/usr/bin/env bash
# Create train/.venv with the pinned PyTorch stack (about 3 GB download, 5.4 GB on disk).
# Idempotent: re-running with the venv in place only checks the pins.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x train/.venv/bin/python ]; then
  python3 -m venv train/.venv
fi
train/.venv/bin/python -m pip install --quiet --no-cache-dir --upgrade pip >&2 || true
train/.venv/bin/python -m pip install --quiet --no-cache-dir -r train/requirements.txt >&2
train/.venv/bin/python -c 'import torch, safetensors, numpy; print("torch", torch.__version__)'
