#!/usr/bin/env python3
"""Start llama.cpp's own OpenAI-compatible server (from the `xllamacpp` wheel) on loopback.

    assets/venv/bin/python scripts/llama_server.py --model assets/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --port 8090 --threads 1 --parallel 8

Used as a peer in benchmarks, as a real server in handoff tests and as the distillation teacher.
Prints `listening http://127.0.0.1:PORT` once ready, then serves until SIGTERM/SIGINT.
"""
import argparse, signal, sys, time, urllib.request

import xllamacpp as xlc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--ctx-per-slot", type=int, default=1024)
    ap.add_argument("--exact", action="store_true",
                    help="f32 KV cache and no flash attention (llama.cpp's own numbers move by up to "
                         "0.4 nats between this and its f16 default): the reference for parity tests")
    a = ap.parse_args()

    p = xlc.CommonParams()
    p.model.path = a.model
    p.hostnames = ["127.0.0.1"] if hasattr(p, "hostnames") else p.hostnames
    p.port = a.port
    p.n_parallel = a.parallel
    p.n_ctx = a.ctx_per_slot * a.parallel
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    p.warmup = False
    if a.exact:
        p.cache_type_k = xlc.ggml_type.GGML_TYPE_F32
        p.cache_type_v = xlc.ggml_type.GGML_TYPE_F32
        p.flash_attn_type = xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    server = xlc.Server(p)  # noqa: F841  (kept alive for the life of the process)
    url = f"http://127.0.0.1:{a.port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            break
        except Exception:
            time.sleep(0.05)
    print(f"listening {url}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    sys.exit(0)


if __name__ == "__main__":
    main()
