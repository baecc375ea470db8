"""Training throughput of the μLM family on this machine, and the share of its f32 peak it reaches.

    scripts/train.sh is the trainer; this is its benchmark (same model, loss and AdamW step):
    train/.venv/bin/python train/bench.py                      # micro_8m, micro_30m × 1, 2 threads
    train/.venv/bin/python train/bench.py --presets micro_8m --threads 1 --steps 5

Prints a table and ends with one JSON line. Run it on an idle machine: with anything else on the
CPU, two threads collapse (shared/ASSETS.md).

FLOPs per trained token (forward + backward = 3 × forward), counting multiply-adds as 2:
    6 · (matmul parameters: every linear of every layer + the LM head)
  + 6 · n_layers · seq_len · hidden        (QKᵀ and AV, causal: half of the full 12·L·T·d)
Embedding look-ups, norms, RoPE, softmax and the optimizer are not counted, so the share of the
peak is a lower bound on how busy the FMA units are.

Two peaks: the sustained single-precision GEMM rate torch reaches on a large square matmul with
the same threads (what a perfect trainer could get), and the nominal AVX2 peak
cores × GHz × 2 FMA units × 8 lanes × 2 (from the CPU flags and /proc/cpuinfo's clock, when known).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import ModelConfig, Transformer, weighted_loss  # noqa: E402


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    h, kv, f = cfg.hidden_size, cfg.n_kv_heads * cfg.head_dim, cfg.intermediate_size
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * f  # q, o, k, v, gate, up, down
    matmul_params = cfg.n_layers * per_layer + cfg.vocab_size * h  # + LM head
    return 6.0 * matmul_params + 6.0 * cfg.n_layers * seq_len * h


def gemm_peak(threads: int, n: int = 1536, reps: int = 6) -> float:
    """Sustained f32 GEMM FLOP/s of torch on this CPU with `threads` threads (best of reps)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def nominal_peak(threads: int) -> float | None:
    """cores × GHz × 32 f32 FLOP/cycle (two 8-lane FMA units) when the CPU has AVX2+FMA."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return None
    if " avx2 " not in info or " fma " not in info:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    return threads * max(mhz) * 1e6 * 32 if mhz else None


def bench(preset: str, threads: int, batch: int, seq_len: int, steps: int, warmup: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    y = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    w = torch.ones(batch, seq_len)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        loss = weighted_loss(model(x), y, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    tok_s = batch * seq_len / median
    return {"preset": preset, "params": cfg.n_params(), "threads": threads, "batch": batch, "seq_len": seq_len,
            "steps": steps, "step_s": round(median, 4), "tok_s": round(tok_s, 1),
            "gflops": round(tok_s * flops_per_token(cfg, seq_len) / 1e9, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="micro_8m,micro_30m")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=8, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    peaks = {t: gemm_peak(t) for t in threads}
    rows = [bench(pr, t, a.batch, a.seq_len, a.steps, a.warmup) for pr in a.presets.split(",") for t in threads]
    print(f"{'preset':<10} {'thr':>3} {'tok/s':>9} {'GFLOP/s':>8} {'of GEMM':>8} {'of nominal':>10}")
    for r in rows:
        g, nom = peaks[r["threads"]], nominal_peak(r["threads"])
        if nom and g > nom:
            nom = None  # the reported clock is the base clock (VMs): measured GEMM beats "nominal"
        r["of_gemm_peak"] = round(r["gflops"] * 1e9 / g, 3)
        r["of_nominal_peak"] = round(r["gflops"] * 1e9 / nom, 3) if nom else None
        nom_s = f"{r['of_nominal_peak']:.0%}" if nom else "n/a"
        print(f"{r['preset']:<10} {r['threads']:>3} {r['tok_s']:>9,.0f} {r['gflops']:>8.1f} {r['of_gemm_peak']:>8.0%} {nom_s:>10}")
    for t in threads:
        nom = nominal_peak(t)
        print(f"peak, {t} thread(s): torch GEMM {peaks[t] / 1e9:.1f} GFLOP/s"
              + (f", nominal AVX2 at the reported {nom / 32e6 / t:.0f} MHz {nom / 1e9:.1f} GFLOP/s" if nom else "")
              + (" (below the measured GEMM rate: the reported clock is not the running one; not used)"
                 if nom and peaks[t] > nom else ""))
    print(json.dumps({"bench": "train_throughput", "torch": torch.__version__, "machine": platform.machine(),
                      "cpus": os.cpu_count(), "gemm_peak_gflops": {t: round(v / 1e9, 1) for t, v in peaks.items()},
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
