"""Train a μLM on token shards: stage 1 language modelling, stage 2 chat SFT.

    scripts/train.sh --data data/shards --out runs/ulm-8m --preset micro_8m --max-steps 20000
    scripts/train.sh --data data/sft --out runs/ulm-8m-sft --stage sft --init runs/ulm-8m --max-steps 3000
    train/.venv/bin/python train/export.py --ckpt runs/ulm-8m-sft --out models/ulm-8m

Re-running the same command after a kill (or a stop flag) resumes from <out>/ckpt.pt exactly:
the losses match those of an uninterrupted run. <out>/ holds ckpt.pt, log.jsonl and loss.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import WindowSampler, class_weights, load_manifest, open_shards, to_tensors  # noqa: E402
from model import PRESETS, ModelConfig, Transformer, grow_depth, weighted_loss  # noqa: E402

# ------------------------------------------------------------------------------------------------
# Defaults (one block)

# name: (default, help). Tokens per optimizer step = batch_size * grad_accum * seq_len.
DEFAULTS = dict(
    data=(None, "data directory with manifest.json (required)"),
    out=(None, "run directory: ckpt.pt, log.jsonl, loss.png; resumed from when ckpt.pt exists (required)"),
    preset=("micro_8m", "the one size knob: micro_8m | micro_15m | micro_30m | tiny (tests)"),
    stage=("lm", "lm: language modelling; sft: chat SFT, usually with --init"),
    init=(None, "start from these weights: a checkpoint (file or run directory) or an exported model "
                "folder (config.json + model.safetensors or its shards, e.g. models/ulm-8m); its shape wins"),
    grow_layers=(0, "with --init: deepen it to this many layers (a multiple of its own), each layer followed "
                    "by copies whose output projections start at zero, so training starts from the --init "
                    "model's own loss (0 = keep its depth)"),
    seq_len=(256, "tokens per training window"),
    batch_size=(16, "windows per micro-batch"),
    grad_accum=(1, "micro-batches per optimizer step"),
    max_steps=(10_000, "optimizer steps; the cosine schedule ends here"),
    lr=(None, "peak learning rate (per stage: lm 1e-3, sft 3e-4)"),
    warmup_steps=(None, "linear warm-up steps (per stage: lm 200, sft 50)"),
    min_lr_frac=(0.1, "cosine decays to this fraction of lr"),
    weight_decay=(0.1, "AdamW decay of matrices; norms are not decayed"),
    beta1=(0.9, "AdamW beta1"),
    beta2=(0.95, "AdamW beta2"),
    grad_clip=(1.0, "clip the global gradient norm to this"),
    opener_weight=(None, "loss weight of class-2 (opener) targets (per stage: lm 1, sft 2)"),
    prompt_weight=(0.0, "loss weight of class-0 targets (0 = masked out)"),
    eval_every=(200, "steps between held-out evaluations (0 = never)"),
    eval_batches=(20, "held-out batches per evaluation"),
    log_every=(10, "steps between progress lines (log.jsonl gets every step)"),
    ckpt_minutes=(5.0, "wall-clock minutes between checkpoints"),
    ckpt_every=(0, "also checkpoint every N steps (0 = off)"),
    stop_at_step=(0, "checkpoint and exit on reaching this step (0 = off; ignored when resuming past it)"),
    stop_after_minutes=(0.0, "checkpoint and exit after this many minutes (0 = off)"),
    device=("auto", "auto | cpu | cuda | cuda:N"),
    threads=(2, "torch CPU threads; use 1 when another process is busy"),
    compile=(False, "torch.compile the model (+4%% measured on this CPU: not worth its start-up)"),
    amp=(False, "bf16 autocast, CUDA only (unusably slow on CPUs without AVX512-BF16)"),
    seed=(1337, "seed of the init and the data order"),
    overwrite=(False, "start afresh even if <out>/ckpt.pt exists"),
)

STAGE_DEFAULTS = {
    "lm": dict(lr=1e-3, warmup_steps=200, opener_weight=1.0),
    "sft": dict(lr=3e-4, warmup_steps=50, opener_weight=2.0),
}

# Arguments whose change on resume alters the trajectory: warned about.
TRAJECTORY_ARGS = ("data", "preset", "stage", "seq_len", "batch_size", "grad_accum", "max_steps", "lr",
                   "warmup_steps", "min_lr_frac", "weight_decay", "opener_weight", "prompt_weight", "seed")

CHOICES = {"preset": list(PRESETS), "stage": list(STAGE_DEFAULTS)}

# Types of the defaults that are None.
NONE_TYPES = {"data": str, "out": str, "init": str, "lr": float, "warmup_steps": int, "opener_weight": float}

EVAL_SEED = 20260419  # held-out windows are the same at every evaluation


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, (default, help) in DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", default=default, help=help)
        elif key in CHOICES:
            p.add_argument(flag, default=default, choices=CHOICES[key], help=help)
        else:
            kind = NONE_TYPES.get(key, type(default))
            p.add_argument(flag, type=kind, default=default, help=help + (f" (default {default})" if default is not None else ""))
    args = p.parse_args(argv)
    for key, value in STAGE_DEFAULTS[args.stage].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.data is None or args.out is None:
        p.error("--data and --out are required")
    return args


# ------------------------------------------------------------------------------------------------
# Schedule, optimizer, checkpoints


def lr_at(step: int, args) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr_frac * lr at max_steps. `step` counts from 0."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    span = max(1, args.max_steps - args.warmup_steps)
    progress = min(1.0, (step - args.warmup_steps) / span)
    floor = args.min_lr_frac * args.lr
    return floor + 0.5 * (args.lr - floor) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model, args, device):
    decay = [p for p in model.parameters() if p.dim() >= 2]  # embeddings and linear weights
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # norm weights
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8,
                             fused=device.type == "cuda")


def rng_states() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, state: dict):
    """Atomic: write a temporary file beside the target, fsync, rename over it."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_init(path: str) -> dict:
    """Weights for --init: a training checkpoint, or an export folder (the shipped models), so a run
    can continue from committed weights when the checkpoints did not survive."""
    from export import has_weights, load_hf

    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "ckpt.pt")) and has_weights(path):
        model = load_hf(path)
        return {"model_config": model.cfg.to_dict(), "model": model.state_dict()}
    return load_checkpoint(path)


def load_checkpoint(path: str) -> dict:
    if os.path.isdir(path):
        path = os.path.join(path, "ckpt.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no checkpoint here (a run directory holds ckpt.pt)")
    # weights_only=False: the checkpoint holds RNG states (tuples, numpy arrays); it is our own file.
    return torch.load(path, map_location="cpu", weights_only=False)


# ------------------------------------------------------------------------------------------------
# Logging: progress line, JSON lines, loss curve


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def read_log(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                pass
    return records


def rewind_log(path: str, step: int):
    """Drop the records written after the checkpoint we resume from (they will be redone)."""
    kept = [r for r in read_log(path) if r.get("step", 0) <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(path + ".tmp", path)


def plot_losses(log_path: str, png_path: str, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    held = [(r["step"], r["heldout_loss"]) for r in records if r.get("kind") == "eval"]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps, losses = zip(*train)
    ax.plot(steps, losses, lw=0.6, alpha=0.35, color="tab:blue", label="train")
    k = max(1, min(200, len(losses) // 20))  # moving-average window: ~5% of the run
    if k > 1:
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k // 2 : k // 2 + len(smooth)], smooth, lw=1.5, color="tab:blue", label=f"train (mean of {k})")
    if held:
        ax.plot(*zip(*held), "o-", ms=3, color="tab:orange", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path + ".tmp.png")
    plt.close(fig)
    os.replace(png_path + ".tmp.png", png_path)


class OtherLoad:
    """CPU cores used by *other* processes since the last call (Linux /proc/stat), or None."""

    def __init__(self):
        self.last = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle, iowait
        t = os.times()
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), t.user + t.system

    def cores(self):
        now = self._sample()
        if now is None or self.last is None:
            return None
        (t0, b0, s0), (t1, b1, s1), self.last = self.last, now, now
        return max(0.0, ((b1 - b0) - (s1 - s0)) / max(t1 - t0, 1e-3))


def load_hint(load: OtherLoad, threads: int, device):
    cores = load.cores()
    if device.type != "cpu" or cores is None:
        return
    if cores > 0.5 and threads > 1 and cores + threads > os.cpu_count() + 0.25:
        print(f"hint: other processes use about {cores:.1f} of {os.cpu_count()} cores; with --threads {threads} "
              f"PyTorch slows down sharply when cores are shared. Consider --threads 1.", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# One step, evaluation


def train_step(fwd, model, optimizer, sampler, weights, step, args, device, autocast):
    """One optimizer step -> (lr, loss, grad_norm before clipping).

    Every micro-batch is sampled first so each can be divided by the weight of the whole step:
    accumulated gradients then equal those of one big batch.
    """
    lr = lr_at(step, args)
    for group in optimizer.param_groups:
        group["lr"] = lr
    micro = [sampler.sample(args.batch_size) for _ in range(args.grad_accum)]
    total_w = float(sum(weights[cls].sum(dtype=np.float64) for _, _, cls in micro))
    loss_sum = 0.0
    for batch in micro:
        x, y, w = to_tensors(batch, weights, device)
        with autocast():
            logits = fwd(x)
        loss = weighted_loss(logits, y, w, total_w)
        loss.backward()
        loss_sum += float(loss.detach())
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return lr, loss_sum, grad_norm



@torch.no_grad()
def evaluate(model, batches, weights, device, autocast) -> dict:
    """Held-out loss with the training weights, plus the mean loss over opener (class 2) targets."""
    import torch.nn.functional as F

    model.eval()
    wsum = wce = osum = oce = 0.0
    for x, y, cls in batches:
        xt, yt, wt = to_tensors((x, y, cls), weights, device)
        with autocast():
            logits = model(xt)
        ce = F.cross_entropy(logits.float().flatten(0, 1), yt.flatten(), reduction="none")
        wflat = wt.flatten()
        opener = torch.from_numpy(cls == 2).to(device).flatten()
        wsum += float(wflat.sum())
        wce += float((wflat * ce).sum())
        osum += float(opener.sum())
        oce += float((ce * opener).sum())
    model.train()
    out = {"heldout_loss": wce / max(wsum, 1e-8)}
    if osum > 0:
        out["heldout_opener_loss"] = oce / osum
    return out


# ------------------------------------------------------------------------------------------------
# Main loop


def pick_device(name: str):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.amp and device.type != "cuda":
        sys.exit("--amp (bf16 autocast) is for CUDA only: on this CPU it is unusably slow; drop --amp")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    load = OtherLoad()

    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    log_path = os.path.join(args.out, "log.jsonl")
    png_path = os.path.join(args.out, "loss.png")
    if args.overwrite:
        for path in (ckpt_path, ckpt_path + ".tmp", log_path, png_path):
            if os.path.exists(path):
                os.remove(path)

    # Data
    manifest = load_manifest(args.data)
    sampler = WindowSampler(open_shards(args.data, "train"), args.seq_len, seed=args.seed)
    heldout_shards = [s for s in open_shards(args.data, "heldout") if len(s) > args.seq_len]
    eval_batches = []
    if heldout_shards and args.eval_every > 0:
        eval_batches = WindowSampler(heldout_shards, args.seq_len, seed=0).fixed_batches(
            args.eval_batches, args.batch_size, EVAL_SEED)
    elif args.eval_every > 0:
        print(f"warning: {args.data} has no held-out shard longer than seq_len; no held-out loss", file=sys.stderr)
    weights = class_weights(args.prompt_weight, 1.0, args.opener_weight)

    # Model: resume > init > preset
    resume = load_checkpoint(ckpt_path) if os.path.exists(ckpt_path) else None
    init = load_init(args.init) if args.init and resume is None else None
    if args.grow_layers and not args.init:
        sys.exit("--grow-layers deepens the --init model: give --init too")
    if init is not None and args.grow_layers:
        try:
            grown_cfg, grown = grow_depth(ModelConfig(**init["model_config"]), init["model"], args.grow_layers)
        except ValueError as e:
            sys.exit(f"--grow-layers: {e}")
        init = {"model_config": grown_cfg.to_dict(), "model": grown}
    if resume is not None:
        cfg = ModelConfig(**resume["model_config"])
    elif init is not None:
        cfg = ModelConfig(**init["model_config"])
    else:
        cfg = ModelConfig.preset(args.preset, vocab_size=int(manifest["vocab_size"]))
    if cfg.vocab_size != int(manifest["vocab_size"]):
        sys.exit(f"{args.data}/manifest.json: vocab_size {manifest['vocab_size']} but the model has {cfg.vocab_size}")
    if args.seq_len > cfg.max_position_embeddings:
        sys.exit(f"--seq-len {args.seq_len} exceeds max_position_embeddings {cfg.max_position_embeddings}")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = Transformer(cfg).to(device)
    if init is not None:
        model.load_state_dict(init["model"])
    optimizer = make_optimizer(model, args, device)
    step = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        sampler.load_state_dict(resume["sampler"])
        set_rng_states(resume["rng"])
        step = resume["step"]
        rewind_log(log_path, step)
        changed = [k for k in TRAJECTORY_ARGS if resume["args"].get(k) != getattr(args, k)]
        if changed:
            print("warning: resuming with changed " + ", ".join(
                f"{k} ({resume['args'].get(k)} -> {getattr(args, k)})" for k in changed), file=sys.stderr)
    fwd = torch.compile(model) if args.compile else model  # the state dict stays `model`'s

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if args.amp else contextlib.nullcontext()

    tokens_per_step = args.batch_size * args.grad_accum * args.seq_len
    what = "resuming at step %d" % step if resume is not None else (
        "from " + args.init + (f" grown to {args.grow_layers} layers" if args.grow_layers else "")
        if init is not None else "from scratch")
    print(f"{args.stage} | {args.preset if resume is None and init is None else 'model'} "
          f"{model.n_params():,} params | {what} | {tokens_per_step:,} tok/step, "
          f"{args.max_steps * tokens_per_step / 1e6:.1f}M tokens over {args.max_steps} steps | "
          f"train data {sampler.n_tokens / 1e6:.2f}M tokens | {device}, {args.threads} threads", file=sys.stderr)
    if step >= args.max_steps:
        print(f"already at step {step} of {args.max_steps}: nothing to do", file=sys.stderr)
        return 0

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum  # finish the step, checkpoint, exit

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def checkpoint():
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "model_config": cfg.to_dict(),
            "args": vars(args),
            "rng": rng_states(),
            "sampler": sampler.state_dict(),
            "data_manifest": manifest,
        })
        try:
            plot_losses(log_path, png_path, f"{args.out}: {args.stage}, {model.n_params():,} params, step {step}")
        except Exception as e:  # a plot must never cost a run
            print(f"warning: loss plot failed: {e}", file=sys.stderr)

    load_hint(load, args.threads, device)
    model.train()
    t_start = t_ckpt = t_window = time.time()
    window_steps, start_step = 0, step
    reason = None
    log = open(log_path, "a")
    try:
        while True:
            lr, loss, grad_norm = train_step(fwd, model, optimizer, sampler, weights, step, args, device, autocast)
            step += 1
            window_steps += 1

            record = {"kind": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                      "tokens": step * tokens_per_step}
            if step % args.log_every == 0 or step == args.max_steps:
                now = time.time()
                tok_s = window_steps * tokens_per_step / max(now - t_window, 1e-9)
                eta = (args.max_steps - step) * (now - t_window) / window_steps
                record["tok_s"] = round(tok_s, 1)
                print(f"step {step}/{args.max_steps} | loss {loss:.4f} | lr {lr:.2e} | "
                      f"grad {grad_norm:.2f} | {tok_s:,.0f} tok/s | {step * tokens_per_step / 1e6:.2f}M tok | "
                      f"ETA {fmt_duration(eta)}", file=sys.stderr)
                t_window, window_steps = now, 0
            log.write(json.dumps(record) + "\n")

            if eval_batches and (step % args.eval_every == 0 or step == args.max_steps):
                result = evaluate(fwd, eval_batches, weights, device, autocast)
                log.write(json.dumps({"kind": "eval", "step": step, **result}) + "\n")
                extra = f" | opener {result['heldout_opener_loss']:.4f}" if "heldout_opener_loss" in result else ""
                print(f"step {step} | held-out loss {result['heldout_loss']:.4f}{extra}", file=sys.stderr)
                load_hint(load, args.threads, device)
                t_window = time.time()  # evaluation time is not training throughput
            log.flush()

            now = time.time()
            if step >= args.max_steps:
                reason = "done"
            elif args.stop_at_step and start_step < args.stop_at_step <= step:
                reason = f"stop at step {args.stop_at_step}"
            elif args.stop_after_minutes and now - t_start >= args.stop_after_minutes * 60:
                reason = f"stopped after {args.stop_after_minutes} minutes"
            elif stop["signal"] is not None:
                reason = f"signal {signal.Signals(stop['signal']).name}"
            if reason or now - t_ckpt >= args.ckpt_minutes * 60 or (args.ckpt_every and step % args.ckpt_every == 0):
                log.write(json.dumps({"kind": "ckpt", "step": step}) + "\n")
                log.flush()
                checkpoint()
                t_ckpt = time.time()
                t_window += t_ckpt - now  # checkpoint time is not training throughput either
            if reason:
                break
    finally:
        log.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    elapsed = time.time() - t_start
    print(f"{reason}: step {step}, {(step - start_step) * tokens_per_step / max(elapsed, 1e-9):,.0f} tok/s "
          f"over {fmt_duration(elapsed)}; checkpoint {ckpt_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
