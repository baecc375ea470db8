"""Token shards written by `ulm data`, read as random training windows.

    shards = open_shards("data/", "train")
    sampler = WindowSampler(shards, seq_len=256, seed=1337)
    x, y, cls = sampler.sample(16)           # (16, 256) inputs, targets, target classes

Format of a data directory (the Rust data builder writes exactly this):
    manifest.json  {"vocab_size": 12288, "tokenizer": "tokenizer.json",
                    "shards": [{"tokens": "train-000.u16", "mask": "train-000.u8",
                                "n_tokens": N, "split": "train" | "heldout"}, ...]}
    *.u16          flat little-endian uint16 token ids, documents and ChatML chats concatenated
    *.u8           same length; byte i is the loss class of token i *as a prediction target*:
                   0 = no loss (user/system turns, template tokens), 1 = normal,
                   2 = opener (the first 16 tokens of an assistant reply)
A window of seq_len + 1 tokens gives inputs tokens[s:s+T], targets tokens[s+1:s+T+1] and target
classes mask[s+1:s+T+1]. Class weights are chosen by the trainer (see class_weights()).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

CLASS_NONE, CLASS_NORMAL, CLASS_OPENER = 0, 1, 2
N_CLASSES = 3


def class_weights(prompt_weight: float = 0.0, normal_weight: float = 1.0, opener_weight: float = 1.0):
    """Weight of each target class, indexed by class id: (3,) f32."""
    return np.array([prompt_weight, normal_weight, opener_weight], dtype=np.float32)


@dataclass
class Shard:
    name: str
    tokens: np.ndarray  # (n_tokens,) uint16, memory-mapped
    mask: np.ndarray  # (n_tokens,) uint8, memory-mapped

    def __len__(self):
        return len(self.tokens)


class DataError(ValueError):
    pass


def load_manifest(data_dir: str) -> dict:
    path = os.path.join(data_dir, "manifest.json")
    if not os.path.exists(path):
        raise DataError(f"{path}: not found; build the shards first with `ulm data` (or pass --data DIR)")
    with open(path) as f:
        manifest = json.load(f)
    for key in ("vocab_size", "shards"):
        if key not in manifest:
            raise DataError(f"{path}: missing field {key!r}")
    return manifest


def open_shards(data_dir: str, split: str, check: bool = True) -> list[Shard]:
    """Memory-map every shard of one split ("train" or "heldout"), checking sizes and values."""
    manifest = load_manifest(data_dir)
    vocab = int(manifest["vocab_size"])
    shards = []
    for entry in manifest["shards"]:
        if entry.get("split", "train") != split:
            continue
        tok_path = os.path.join(data_dir, entry["tokens"])
        mask_path = os.path.join(data_dir, entry["mask"])
        n = int(entry["n_tokens"])
        for path, width in ((tok_path, 2), (mask_path, 1)):
            if not os.path.exists(path):
                raise DataError(f"{path}: listed in manifest.json but missing")
            size = os.path.getsize(path)
            if size != n * width:
                raise DataError(f"{path}: {size} bytes, expected {n * width} (n_tokens {n} x {width} bytes)")
        if n == 0:
            continue
        tokens = np.memmap(tok_path, dtype="<u2", mode="r", shape=(n,))
        mask = np.memmap(mask_path, dtype="u1", mode="r", shape=(n,))
        if check:
            if int(tokens.max()) >= vocab:
                raise DataError(f"{tok_path}: token id {int(tokens.max())} >= vocab_size {vocab}")
            if int(mask.max()) >= N_CLASSES:
                raise DataError(f"{mask_path}: class {int(mask.max())} unknown (expected 0, 1 or 2)")
        shards.append(Shard(entry["tokens"], tokens, mask))
    return shards


def _window(shard: Shard, start: int, seq_len: int):
    tok = np.asarray(shard.tokens[start : start + seq_len + 1], dtype=np.int64)  # (T+1,)
    cls = np.asarray(shard.mask[start + 1 : start + seq_len + 1], dtype=np.uint8)  # (T,)
    return tok[:-1], tok[1:], cls


class WindowSampler:
    """Uniformly random windows over all shards of a split; its only state is its RNG."""

    def __init__(self, shards: list[Shard], seq_len: int, seed: int):
        self.seq_len = seq_len
        self.shards = [s for s in shards if len(s) > seq_len]
        if not self.shards:
            raise DataError(f"no shard holds more than seq_len {seq_len} tokens")
        self.starts = np.array([len(s) - seq_len for s in self.shards], dtype=np.int64)  # windows per shard
        self.cum = np.cumsum(self.starts)  # (n_shards,)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    @property
    def n_tokens(self) -> int:
        return int(sum(len(s) for s in self.shards))

    def sample(self, batch_size: int):
        """-> x, y (B, T) int64 and cls (B, T) uint8, numpy."""
        picks = self.rng.integers(0, int(self.cum[-1]), size=batch_size)
        return self._gather(picks)

    def _gather(self, picks):
        xs, ys, cs = [], [], []
        for g in picks:
            i = int(np.searchsorted(self.cum, g, side="right"))
            start = int(g) - (int(self.cum[i - 1]) if i > 0 else 0)
            x, y, c = _window(self.shards[i], start, self.seq_len)
            xs.append(x), ys.append(y), cs.append(c)
        return np.stack(xs), np.stack(ys), np.stack(cs)

    def fixed_batches(self, n_batches: int, batch_size: int, seed: int):
        """The same windows on every call (held-out evaluation), without touching self.rng."""
        rng = np.random.Generator(np.random.PCG64(seed))
        picks = rng.integers(0, int(self.cum[-1]), size=n_batches * batch_size)
        return [self._gather(picks[i * batch_size : (i + 1) * batch_size]) for i in range(n_batches)]

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict):
        self.rng.bit_generator.state = state["bit_generator"]


def to_tensors(batch, weights: np.ndarray, device):
    """(x, y, cls) numpy -> x, y int64 and w f32 tensors on `device`; w = weights[cls]."""
    x, y, cls = batch
    w = weights[cls]  # (B, T) f32
    return tuple(torch.from_numpy(a).to(device, non_blocking=True) for a in (x, y, w))


def write_shards(data_dir: str, shards: list[tuple], vocab_size: int, tokenizer: str = "tokenizer.json"):
    """Write a data directory in the format above (tests and tools): shards = [(stem, tokens, mask, split)]."""
    os.makedirs(data_dir, exist_ok=True)
    entries = []
    for stem, tokens, mask, split in shards:
        tokens, mask = np.asarray(tokens, dtype="<u2"), np.asarray(mask, dtype="u1")
        assert tokens.shape == mask.shape
        tokens.tofile(os.path.join(data_dir, stem + ".u16"))
        mask.tofile(os.path.join(data_dir, stem + ".u8"))
        entries.append({"tokens": stem + ".u16", "mask": stem + ".u8", "n_tokens": int(len(tokens)), "split": split})
    with open(os.path.join(data_dir, "manifest.json"), "w") as f:
        json.dump({"vocab_size": vocab_size, "tokenizer": tokenizer, "shards": entries}, f, indent=1)
