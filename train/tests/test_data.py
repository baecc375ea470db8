"""The shard format, the window sampler and the class-weighted loss."""

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURE_VOCAB
from data import DataError, WindowSampler, class_weights, open_shards, to_tensors, write_shards
from model import ModelConfig, Transformer, weighted_loss


def test_windows_align_targets_and_classes(tmp_path):
    tokens = np.arange(100, dtype=np.uint16)  # token == position: a window shows where it started
    mask = (np.arange(100) % 3).astype(np.uint8)
    write_shards(str(tmp_path), [("s", tokens, mask, "train")], vocab_size=100)
    sampler = WindowSampler(open_shards(str(tmp_path), "train"), seq_len=10, seed=1)
    x, y, cls = sampler.sample(4)
    assert x.shape == y.shape == cls.shape == (4, 10)
    for row in range(4):
        start = int(x[row, 0])
        assert np.array_equal(x[row], tokens[start : start + 10])
        assert np.array_equal(y[row], tokens[start + 1 : start + 11])
        assert np.array_equal(cls[row], mask[start + 1 : start + 11])  # class of each *target*


def test_sampler_covers_every_shard_and_resumes_from_its_state(data_dir):
    sampler = WindowSampler(open_shards(str(data_dir), "train"), seq_len=32, seed=7)
    sampler.sample(3)
    state = json.loads(json.dumps(sampler.state_dict()))  # plain data
    a = [sampler.sample(5) for _ in range(3)]
    other = WindowSampler(open_shards(str(data_dir), "train"), seq_len=32, seed=999)
    other.load_state_dict(state)
    b = [other.sample(5) for _ in range(3)]
    for (xa, ya, ca), (xb, yb, cb) in zip(a, b):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb) and np.array_equal(ca, cb)
    assert len(sampler.shards) == 2 and len(open_shards(str(data_dir), "heldout")) == 1


def test_fixed_batches_do_not_move_the_sampler(data_dir):
    sampler = WindowSampler(open_shards(str(data_dir), "train"), seq_len=32, seed=7)
    before = sampler.state_dict()
    first = sampler.fixed_batches(2, 4, seed=5)
    again = sampler.fixed_batches(2, 4, seed=5)
    assert sampler.state_dict() == before
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(first, again))


def test_bad_shards_are_named(tmp_path):
    write_shards(str(tmp_path), [("s", np.array([1, 2, 3]), np.array([0, 1, 1]), "train")], vocab_size=3)
    with pytest.raises(DataError, match="token id 3 >= vocab_size 3"):
        open_shards(str(tmp_path), "train")
    write_shards(str(tmp_path), [("s", np.array([1, 2, 0]), np.array([0, 5, 1]), "train")], vocab_size=3)
    with pytest.raises(DataError, match="class 5"):
        open_shards(str(tmp_path), "train")
    (tmp_path / "s.u8").write_bytes(b"\x00")
    with pytest.raises(DataError, match="s.u8: 1 bytes, expected 3"):
        open_shards(str(tmp_path), "train")
    with pytest.raises(DataError, match="manifest.json: not found"):
        open_shards(str(tmp_path / "nowhere"), "train")


def test_masked_loss_ignores_class_0_and_weights_openers(data_dir):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=FIXTURE_VOCAB))
    sampler = WindowSampler(open_shards(str(data_dir), "train"), seq_len=32, seed=3)
    x, y, cls = sampler.sample(4)
    assert (cls == 0).any() and (cls == 1).any() and (cls == 2).any()
    weights = class_weights(prompt_weight=0.0, opener_weight=2.0)
    xt, yt, wt = to_tensors((x, y, cls), weights, "cpu")
    with torch.no_grad():
        logits = model(xt)
    loss = weighted_loss(logits, yt, wt)

    # By hand: sum(w * ce) / sum(w) over the targets of classes 1 and 2 only.
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), yt.flatten(), reduction="none").view(4, 32)
    w = torch.from_numpy(np.where(cls == 2, 2.0, np.where(cls == 1, 1.0, 0.0)).astype(np.float32))
    torch.testing.assert_close(loss, (w * ce).sum() / w.sum())

    # Changing the targets of class-0 positions changes nothing.
    y2 = yt.clone()
    y2[torch.from_numpy(cls == 0)] = (y2[torch.from_numpy(cls == 0)] + 17) % FIXTURE_VOCAB
    torch.testing.assert_close(weighted_loss(logits, y2, wt), loss, rtol=0, atol=0)
    # ...while changing a class-1 target does.
    y3 = yt.clone()
    y3[torch.from_numpy(cls == 1)] = (y3[torch.from_numpy(cls == 1)] + 17) % FIXTURE_VOCAB
    assert weighted_loss(logits, y3, wt).item() != loss.item()
