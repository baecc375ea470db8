"""Shared fixtures: a small synthetic data directory in the exact shard format, and import paths."""

import os
import sys

import numpy as np
import pytest

TRAIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAIN_DIR)

import torch  # noqa: E402

torch.set_num_threads(1)  # tests share two cores with other jobs

from data import write_shards  # noqa: E402

FIXTURE_VOCAB = 64
EOT, IM_START, IM_END, USER, ASSISTANT = 0, 1, 2, 3, 4


def chat_stream(n_chats: int, seed: int):
    """ChatML-shaped synthetic chats whose reply is a learnable function of the prompt.

    Each chat: <|im_start|> user p0 p1 p2 p3 <|im_end|> <|im_start|> assistant r0..r11 <|im_end|> <|endoftext|>
    with r_0 = p0 and r_{i+1} = 10 + (3 * r_i + 7) % 50: a copy, then a fixed bigram chain. Classes (of each token as a target): 0 for the user turn and
    the template, 2 for the first 4 reply tokens, 1 for the rest of the reply and its <|im_end|>.
    """
    rng = np.random.default_rng(seed)
    tokens, classes = [], []
    for _ in range(n_chats):
        p = rng.integers(10, 60, size=4)
        reply = [int(p[0])]
        while len(reply) < 12:
            reply.append(10 + (3 * reply[-1] + 7) % 50)
        prompt = [IM_START, USER, *p.tolist(), IM_END, IM_START, ASSISTANT]
        tokens += prompt + reply + [IM_END, EOT]
        classes += [0] * len(prompt) + [2] * 4 + [1] * 8 + [1, 0]
    return np.array(tokens, dtype=np.uint16), np.array(classes, dtype=np.uint8)


def make_data_dir(path, n_train_chats=400, n_heldout_chats=60, seed=0):
    t1, m1 = chat_stream(n_train_chats // 2, seed)
    t2, m2 = chat_stream(n_train_chats - n_train_chats // 2, seed + 1)
    th, mh = chat_stream(n_heldout_chats, seed + 2)
    write_shards(str(path), [("train-000", t1, m1, "train"), ("train-001", t2, m2, "train"),
                             ("heldout-000", th, mh, "heldout")], vocab_size=FIXTURE_VOCAB)
    (path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    return path


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path / "data")
