"""The training loop: a tiny run learns, and a stopped or killed run resumes exactly."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

import train
from conftest import FIXTURE_VOCAB, TRAIN_DIR


def tiny_args(data_dir, out, *extra):
    return ["--data", str(data_dir), "--out", str(out), "--preset", "tiny", "--seq-len", "32",
            "--batch-size", "8", "--warmup-steps", "5", "--lr", "3e-3", "--eval-batches", "2",
            "--threads", "1", "--log-every", "1000", *extra]


def losses(out):
    """(kind, step, loss) of every train and eval record: what must match across a resume."""
    records = train.read_log(os.path.join(out, "log.jsonl"))
    return [(r["kind"], r["step"], r.get("loss", r.get("heldout_loss"))) for r in records
            if r["kind"] in ("train", "eval")]


def test_lr_schedule_warms_up_then_decays_to_ten_percent():
    args = train.parse_args(["--data", "d", "--out", "o", "--max-steps", "100", "--warmup-steps", "10", "--lr", "1e-3"])
    assert train.lr_at(0, args) == pytest.approx(1e-4)
    assert train.lr_at(9, args) == pytest.approx(1e-3)
    assert train.lr_at(55, args) == pytest.approx(0.55e-3)
    assert train.lr_at(100, args) == pytest.approx(1e-4)
    sft = train.parse_args(["--data", "d", "--out", "o", "--stage", "sft"])
    assert sft.opener_weight == 2.0 and sft.prompt_weight == 0.0


def test_tiny_run_learns_then_sft_from_it(data_dir, tmp_path):
    lm = tmp_path / "lm"
    assert train.main(tiny_args(data_dir, lm, "--max-steps", "50", "--eval-every", "25")) == 0
    records = train.read_log(str(lm / "log.jsonl"))
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(train_losses) == 50
    assert train_losses[0] > math.log(FIXTURE_VOCAB) - 0.3  # starts near chance
    assert sum(train_losses[-10:]) / 10 < sum(train_losses[:10]) / 10 - 1.0  # and learns
    held = [r["heldout_loss"] for r in records if r["kind"] == "eval"]
    assert len(held) == 2 and held[1] < held[0] < math.log(FIXTURE_VOCAB)
    for name in ("ckpt.pt", "log.jsonl", "loss.png"):
        assert (lm / name).stat().st_size > 0

    # Stage 2 starts from the stage-1 weights: its first loss is already far below chance.
    sft = tmp_path / "sft"
    assert train.main(tiny_args(data_dir, sft, "--stage", "sft", "--init", str(lm), "--max-steps", "5",
                                "--eval-every", "5")) == 0
    first = train.read_log(str(sft / "log.jsonl"))[0]
    assert first["loss"] < train_losses[0] - 1.0

    # --grow-layers: the deeper model's first loss is the stage-1 model's own on the same batch.
    grown, same = tmp_path / "grown", tmp_path / "same"
    for out, extra in ((grown, ("--grow-layers", "4")), (same, ())):
        assert train.main(tiny_args(data_dir, out, "--stage", "sft", "--init", str(lm), "--max-steps", "1",
                                    "--eval-every", "0", *extra)) == 0
    assert train.load_checkpoint(str(grown))["model_config"]["n_layers"] == 4
    g, s = (train.read_log(str(out / "log.jsonl"))[0]["loss"] for out in (grown, same))
    assert abs(g - s) < 1e-4


def test_stopped_run_resumes_exactly(data_dir, tmp_path):
    common = ("--max-steps", "24", "--eval-every", "8", "--grad-accum", "2")
    train.main(tiny_args(data_dir, tmp_path / "straight", *common))
    train.main(tiny_args(data_dir, tmp_path / "stopped", *common, "--stop-at-step", "11"))
    assert losses(tmp_path / "stopped")[-1][1] == 11
    train.main(tiny_args(data_dir, tmp_path / "stopped", *common))  # same command: resumes at 11
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "stopped")
    assert len(straight) == 24 + 3
    assert resumed == straight  # bit for bit


def test_killed_run_resumes_exactly(data_dir, tmp_path):
    """SIGKILL a real training process between checkpoints, rerun the same command, compare."""
    common = ("--max-steps", "60", "--eval-every", "20", "--ckpt-every", "10")
    cmd = [sys.executable, os.path.join(TRAIN_DIR, "train.py"), *tiny_args(data_dir, tmp_path / "killed", *common)]
    log = tmp_path / "killed" / "log.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        last = 0
        while time.time() < deadline and proc.poll() is None:
            records = train.read_log(str(log))
            last = max((r["step"] for r in records if r["kind"] == "train"), default=0)
            if last >= 25:  # past the checkpoint at step 20, so steps 21.. are lost and redone
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 25 <= last < 60

    train.main(tiny_args(data_dir, tmp_path / "straight", *common))
    resumed = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step" in resumed.stderr
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")


def test_grad_accumulation_equals_one_big_batch(data_dir, tmp_path):
    """Micro-batches are divided by the whole batch's weight: 2 x 4 matches 1 x 8 on the first step."""
    train.main(tiny_args(data_dir, tmp_path / "a", "--max-steps", "1", "--batch-size", "8", "--eval-every", "0"))
    train.main(tiny_args(data_dir, tmp_path / "b", "--max-steps", "1", "--batch-size", "4", "--grad-accum", "2",
                         "--eval-every", "0"))
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert a[0][2] == pytest.approx(b[0][2], rel=1e-5)
