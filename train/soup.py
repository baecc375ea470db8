"""Average the weights of models fine-tuned from the same start (a "model soup").

    train/.venv/bin/python train/soup.py runs/ulm-8m-s28-hf runs/ulm-8m-s28r-hf --out runs/ulm-8m-soup
    train/.venv/bin/python train/soup.py models/ulm-8m runs/ulm-8m-s28-hf --weights 0.5,0.5 --out runs/ulm-8m-half

Every input is an export directory (export.py's layout) of the same shape. The average is taken in
f32 and stored in the first input's dtype; config.json, the tokenizer files and
generation_config.json are copied from the first input. Runs of one recipe that differ only in
their seed read several points apart (docs/eval/reading-s29e); their average is one model that
does not depend on a lucky seed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import MAX_SHARD_MB, has_weights, load_weights, save_weights  # noqa: E402

COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def soup(dirs: list[str], weights: list[float] | None = None) -> dict:
    """The weighted mean of the tensors of `dirs` (equal weights by default; they need not sum
    to 1, they are normalised). Raises ValueError when the models differ in names or shapes."""
    if len(dirs) < 2:
        raise ValueError("a soup needs two models or more")
    weights = weights or [1.0] * len(dirs)
    if len(weights) != len(dirs) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{len(weights)} weights for {len(dirs)} models; give one non-negative weight per model")
    total = sum(weights)
    out, first = {}, None
    for d, w in zip(dirs, weights):
        if not has_weights(d):
            raise ValueError(f"{d}: no model.safetensors (or shard index); give an export directory")
        tensors, _ = load_weights(d)
        if first is None:
            first = {k: (v.shape, v.dtype) for k, v in tensors.items()}
            out = {k: torch.zeros(v.shape, dtype=torch.float32) for k, v in tensors.items()}
        elif {k: v.shape for k, v in tensors.items()} != {k: s for k, (s, _) in first.items()}:
            raise ValueError(f"{d}: its tensors differ from {dirs[0]}'s in names or shapes")
        for k, v in tensors.items():
            out[k] += v.to(torch.float32) * (w / total)
    return {k: v.to(first[k][1]).contiguous() for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="export directories of the same shape")
    ap.add_argument("--weights", help="comma-separated, one per model (default: equal)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    weights = [float(x) for x in a.weights.split(",")] if a.weights else None
    tensors = soup(a.models, weights)
    os.makedirs(a.out, exist_ok=True)
    written = save_weights(tensors, a.out, int(MAX_SHARD_MB * 1e6))  # as export.py splits
    for name in COPIED:
        src = os.path.join(a.models[0], name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(a.out, name))
    print(f"wrote {a.out}: the mean of {len(a.models)} models ({', '.join(written)})")


if __name__ == "__main__":
    main()
