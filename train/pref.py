"""Preference training (DPO) of a μLM on pairs of its own openers.

    ulm data --stage pref --distill-corpus corpus/student5 --out runs/data/pref
    scripts/train.sh pref --data runs/data/pref --init models/ulm-8m --out runs/ulm-8m-pref --max-steps 300
    train/.venv/bin/python train/export.py --ckpt runs/ulm-8m-pref --out runs/ulm-8m-pref-hf --dtype f16

Each pair is one prompt with two openers the model wrote itself, the one the teacher preferred and
one it did not (off topic, looping, or much less likely: crates/data/src/pref.rs). The loss is
DPO's (Rafailov et al. 2023): with r(y) = log pi(y|x) - log ref(y|x) summed over the opener's
tokens, -log sigmoid(beta * (r(chosen) - r(rejected))), plus --sft-weight times the mean NLL per
token of the chosen opener, which keeps the chosen openers likely (DPO alone can lower both).
The reference is the --init model, frozen. Re-running the same command resumes from
<out>/ckpt.pt; the checkpoint has train.py's layout, so export.py reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import ModelConfig, Transformer  # noqa: E402
from train import (fmt_duration, load_checkpoint, load_init, make_optimizer, lr_at, pick_device,  # noqa: E402
                   rewind_log, rng_states, save_checkpoint, set_rng_states)

PAD = 0  # <|endoftext|>: padding sits after every real token, so causal attention never sees it


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder written by `ulm data --stage pref`")
    p.add_argument("--out", required=True, help="run directory: ckpt.pt, log.jsonl (resumed from)")
    p.add_argument("--init", required=True, help="the policy's start and the frozen reference (checkpoint or model folder)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO temperature (default 0.1)")
    p.add_argument("--sft-weight", type=float, default=0.2, help="weight of the chosen openers' NLL (default 0.2)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step (default 32)")
    p.add_argument("--max-steps", type=int, default=300, help="optimizer steps; the cosine ends here")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decay of matrices (default 0: stay near init)")
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=50, help="steps between held-out evaluations (0 = never)")
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--stop-at-step", type=int, default=0, help="checkpoint and exit on reaching this step (0 = off)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--overwrite", action="store_true", help="start afresh even if <out>/ckpt.pt exists")
    return p.parse_args(argv)


def load_pairs(data_dir: str, split: str) -> list[dict]:
    path = os.path.join(data_dir, "manifest.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path}: not found; build the pairs with `ulm data --stage pref --out {data_dir}`")
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("stage") != "pref":
        raise SystemExit(f"{path}: stage {manifest.get('stage')!r}, not pref: this folder holds token shards for train.py")
    pairs = []
    with open(os.path.join(data_dir, manifest[split])) as f:
        for line in f:
            pairs.append(json.loads(line))
    return pairs


def batch_tensors(pairs: list[dict], device):
    """Chosen rows first, then rejected: x (2B, T) ids, y (2B, T) targets, m (2B, T) 1.0 on opener targets."""
    seqs, starts = [], []
    for key in ("chosen", "rejected"):
        for p in pairs:
            seqs.append(p["prompt"] + p[key])
            starts.append(len(p["prompt"]))
    T = max(len(s) for s in seqs) - 1
    x = torch.full((len(seqs), T), PAD, dtype=torch.long)
    y = torch.full((len(seqs), T), PAD, dtype=torch.long)
    m = torch.zeros((len(seqs), T))
    for i, (s, k) in enumerate(zip(seqs, starts)):
        t = torch.tensor(s, dtype=torch.long)
        x[i, : len(s) - 1] = t[:-1]
        y[i, : len(s) - 1] = t[1:]
        m[i, k - 1 : len(s) - 1] = 1.0  # predicting opener token j from position j-1
    return x.to(device), y.to(device), m.to(device)


def opener_logps(model, x, y, m):
    """-> (2B,) summed log-probabilities of the opener tokens, (2B,) their counts."""
    logits = model(x)  # (2B, T, vocab)
    lp = -F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view_as(m)  # (2B, T)
    return (lp * m).sum(1), m.sum(1)


def pref_loss(policy, ref, pairs, args, device):
    x, y, m = batch_tensors(pairs, device)
    B = len(pairs)
    pi, n = opener_logps(policy, x, y, m)
    with torch.no_grad():
        rf, _ = opener_logps(ref, x, y, m)
    r = pi - rf  # (2B,) implicit rewards / beta
    margin = r[:B] - r[B:]
    dpo = -F.logsigmoid(args.beta * margin).mean()
    nll = -(pi[:B] / n[:B]).mean()
    loss = dpo + args.sft_weight * nll
    r, dpo, nll = r.detach(), dpo.detach(), nll.detach()
    margin = r[:B] - r[B:]
    stats = {"dpo": float(dpo), "nll_chosen": float(nll), "acc": float((margin > 0).float().mean()),
             "margin": float(margin.mean()), "d_chosen": float((r[:B] / n[:B]).mean()),
             "d_rejected": float((r[B:] / n[B:]).mean())}
    return loss, stats


@torch.no_grad()
def evaluate(policy, ref, pairs, args, device) -> dict:
    policy.eval()
    sums, k = {}, 0
    for i in range(0, len(pairs), args.batch_size):
        chunk = pairs[i : i + args.batch_size]
        loss, stats = pref_loss(policy, ref, chunk, args, device)
        for key, v in {"loss": float(loss), **stats}.items():
            sums[key] = sums.get(key, 0.0) + v * len(chunk)
        k += len(chunk)
    policy.train()
    return {"heldout_" + key: v / max(k, 1) for key, v in sums.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    os.makedirs(args.out, exist_ok=True)
    ckpt_path, log_path = os.path.join(args.out, "ckpt.pt"), os.path.join(args.out, "log.jsonl")
    if args.overwrite:
        for path in (ckpt_path, log_path):
            if os.path.exists(path):
                os.remove(path)
    train_pairs, held = load_pairs(args.data, "train"), load_pairs(args.data, "heldout")
    if not train_pairs:
        raise SystemExit(f"{args.data}: no training pairs")

    init = load_init(args.init)
    cfg = ModelConfig(**init["model_config"])
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    policy, ref = Transformer(cfg).to(device), Transformer(cfg).to(device)
    policy.load_state_dict(init["model"])
    ref.load_state_dict(init["model"])
    ref.eval().requires_grad_(False)
    # data=args.data so export.py finds the tokenizer; stage marks the checkpoint as preference-trained.
    args.stage = "pref"
    optimizer = make_optimizer(policy, args, device)
    rng = np.random.Generator(np.random.PCG64(args.seed))
    order, pos, step = rng.permutation(len(train_pairs)), 0, 0
    if os.path.exists(ckpt_path):
        ck = load_checkpoint(ckpt_path)
        policy.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        set_rng_states(ck["rng"])
        rng.bit_generator.state = ck["sampler"]["bit_generator"]
        order, pos, step = np.array(ck["sampler"]["order"]), ck["sampler"]["pos"], ck["step"]
        rewind_log(log_path, step)
    print(f"pref | {policy.n_params():,} params | {'resuming at step %d' % step if step else 'from ' + args.init} | "
          f"{len(train_pairs):,} train pairs, {len(held):,} held out | {args.batch_size} pairs/step, "
          f"{args.max_steps} steps ({args.max_steps * args.batch_size / len(train_pairs):.2f} epochs) | "
          f"beta {args.beta}, sft {args.sft_weight}, lr {args.lr} | {device}, {args.threads} threads", file=sys.stderr)

    stop = {"signal": None}
    handlers = {s: signal.signal(s, lambda signum, frame: stop.__setitem__("signal", signum)) for s in (signal.SIGTERM, signal.SIGINT)}

    def checkpoint():
        save_checkpoint(ckpt_path, {
            "model": policy.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "model_config": cfg.to_dict(), "args": vars(args), "rng": rng_states(),
            "sampler": {"bit_generator": rng.bit_generator.state, "order": order.tolist(), "pos": pos},
        })

    log = open(log_path, "a")
    if step == 0 and held and args.eval_every:
        result = evaluate(policy, ref, held, args, device)
        log.write(json.dumps({"kind": "eval", "step": 0, **result}) + "\n")
        print(f"step 0 | held-out {json.dumps({k: round(v, 4) for k, v in result.items()})}", file=sys.stderr)
    t0 = t_ckpt = time.time()
    start = step
    try:
        while step < args.max_steps:
            if pos + args.batch_size > len(order):
                order, pos = rng.permutation(len(train_pairs)), 0
            batch = [train_pairs[i] for i in order[pos : pos + args.batch_size]]
            pos += args.batch_size
            lr = lr_at(step, args)
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss, stats = pref_loss(policy, ref, batch, args, device)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            log.write(json.dumps({"kind": "train", "step": step, "loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm, **stats}) + "\n")
            if step % 10 == 0 or step == args.max_steps:
                el = time.time() - t0
                print(f"step {step}/{args.max_steps} | loss {float(loss.detach()):.4f} | dpo {stats['dpo']:.4f} | acc {stats['acc']:.2f} | "
                      f"nll {stats['nll_chosen']:.3f} | lr {lr:.1e} | ETA {fmt_duration((args.max_steps - step) * el / (step - start))}",
                      file=sys.stderr)
            if held and args.eval_every and (step % args.eval_every == 0 or step == args.max_steps):
                result = evaluate(policy, ref, held, args, device)
                log.write(json.dumps({"kind": "eval", "step": step, **result}) + "\n")
                print(f"step {step} | held-out {json.dumps({k: round(v, 4) for k, v in result.items()})}", file=sys.stderr)
            log.flush()
            halt = stop["signal"] is not None or (args.stop_at_step and step == args.stop_at_step)
            if step == args.max_steps or halt or time.time() - t_ckpt >= args.ckpt_minutes * 60:
                checkpoint()
                t_ckpt = time.time()
                if halt:
                    break
    finally:
        log.close()
        for s, h in handlers.items():
            signal.signal(s, h)
    print(f"{'done' if step >= args.max_steps else 'stopped'}: step {step} in {fmt_duration(time.time() - t0)}; "
          f"checkpoint {ckpt_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
