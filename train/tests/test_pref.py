"""Preference training: DPO on synthetic pairs learns to prefer the chosen replies, and resumes exactly."""

import json
import math

import pref
import train
from conftest import ASSISTANT, IM_END, IM_START, USER
from test_train import tiny_args


def chain(start: int, n: int):
    """The fixture's reply chain (conftest.chat_stream): r0 = start, r_{i+1} = 10 + (3 r_i + 7) % 50."""
    out = [start]
    while len(out) < n:
        out.append(10 + (3 * out[-1] + 7) % 50)
    return out


def write_pairs(path, n_train=256, n_heldout=32):
    """Chosen: the chain the fixture teaches, from p0. Rejected: the same chain from p0 + 1, so both
    are fluent to the LM-trained model and only the preference tells them apart."""
    import numpy as np

    rng = np.random.default_rng(7)
    path.mkdir()
    for name, n in (("pref-train.jsonl", n_train), ("pref-heldout.jsonl", n_heldout)):
        with open(path / name, "w") as f:
            for _ in range(n):
                p = rng.integers(10, 59, size=4).tolist()
                prompt = [IM_START, USER, *p, IM_END, IM_START, ASSISTANT]
                f.write(json.dumps({"prompt": prompt, "chosen": chain(p[0], 6), "rejected": chain(p[0] + 1, 6),
                                    "why": "off-topic"}) + "\n")
    (path / "manifest.json").write_text(json.dumps({"stage": "pref", "vocab_size": 64, "tokenizer": "tokenizer.json",
                                                    "train": "pref-train.jsonl", "heldout": "pref-heldout.jsonl"}))
    (path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    return path


def pref_args(data, out, init, *extra):
    return ["--data", str(data), "--out", str(out), "--init", str(init), "--batch-size", "16", "--lr", "3e-3",
            "--warmup-steps", "2", "--beta", "0.5", "--threads", "1", *extra]


def test_dpo_learns_the_preference_and_resumes_exactly(data_dir, tmp_path):
    lm = tmp_path / "lm"
    assert train.main(tiny_args(data_dir, lm, "--max-steps", "60", "--eval-every", "0")) == 0
    pairs = write_pairs(tmp_path / "pairs")

    straight = tmp_path / "straight"
    assert pref.main(pref_args(pairs, straight, lm, "--max-steps", "60", "--eval-every", "30")) == 0
    log = train.read_log(str(straight / "log.jsonl"))
    evals = [r for r in log if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 30, 60]
    first, last = evals[0], evals[-1]
    # At step 0 the policy is the reference: every implicit reward is 0 and the loss is log 2.
    assert abs(first["heldout_dpo"] - math.log(2)) < 1e-5 and first["heldout_acc"] == 0.0
    # Only the first reply token tells the two apart (the rest follows from it), and held-out
    # prompts are new: 0.75 measured at step 60, chance is 0.5.
    assert last["heldout_acc"] >= 0.7
    assert last["heldout_dpo"] < first["heldout_dpo"] - 0.1
    assert last["heldout_d_rejected"] < last["heldout_d_chosen"]  # the rejected replies lost more
    assert train.load_init(str(straight))["model_config"]["vocab_size"] == 64  # train.py's layout

    stopped = tmp_path / "stopped"
    assert pref.main(pref_args(pairs, stopped, lm, "--max-steps", "60", "--eval-every", "30", "--stop-at-step", "25")) == 0
    assert train.read_log(str(stopped / "log.jsonl"))[-1]["step"] == 25
    assert pref.main(pref_args(pairs, stopped, lm, "--max-steps", "60", "--eval-every", "30")) == 0
    key = lambda r: (r["kind"], r["step"], r.get("loss", r.get("heldout_loss")))  # noqa: E731
    assert [key(r) for r in train.read_log(str(stopped / "log.jsonl"))] == [key(r) for r in log]
