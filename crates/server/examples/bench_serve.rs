//! Load client for `scripts/bench-serve.sh`: N streaming clients against one OpenAI-compatible
//! server for a fixed time; prints one JSON line with requests/s and p50/p99 time to first token.
//!
//! ```text
//! cargo run --release -p ulm-server --example bench_serve -- --url http://127.0.0.1:8080 --model smollm2 --clients 8 --secs 15
//! ```
//! Any server works (ulm serve, llama.cpp's): it only speaks `/v1/chat/completions` with
//! `stream: true`. 429/503 are counted and retried after `Retry-After` (at most 2 s).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

#[derive(Default)]
struct Tally {
    ttft_ms: Vec<f64>,
    ok: u64,
    busy: u64,
    errors: u64,
    tokens: u64,
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone()).unwrap_or_else(|| default.to_string())
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() { f64::NAN } else { v[((v.len() as f64 - 1.0) * p).round() as usize] }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = format!("{}/v1/chat/completions", arg(&args, "--url", "http://127.0.0.1:8080").trim_end_matches('/'));
    let model = arg(&args, "--model", "");
    let label = arg(&args, "--label", "server");
    let clients: usize = arg(&args, "--clients", "1").parse().expect("--clients N");
    let secs: f64 = arg(&args, "--secs", "15").parse().expect("--secs S");
    let max_tokens: u32 = arg(&args, "--max-tokens", "24").parse().expect("--max-tokens N");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let t0 = Instant::now();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (url, model, tally) = (url.clone(), model.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                // A fresh connection per request: llama.cpp's server closes kept-alive connections
                // that a pooled client would then fail on; loopback connects cost microseconds.
                let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    // Different questions, so that no server answers from a prompt cache only.
                    let body = json!({"model": model, "messages": [{"role": "user", "content": format!("Question {c}-{i}: what is a good way to start learning to cook?")}],
                        "max_tokens": max_tokens, "temperature": 0.7, "seed": i, "stream": true});
                    let sent = Instant::now();
                    let Ok(res) = http.post(&url).json(&body).send().await else {
                        tally.lock().unwrap().errors += 1;
                        continue;
                    };
                    let status = res.status().as_u16();
                    if status == 429 || status == 503 {
                        let wait = res.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(1);
                        tally.lock().unwrap().busy += 1;
                        tokio::time::sleep(Duration::from_secs(wait.min(2))).await;
                        continue;
                    }
                    if status != 200 {
                        tally.lock().unwrap().errors += 1;
                        continue;
                    }
                    let mut stream = res.bytes_stream();
                    let (mut ttft, mut buf, mut pieces, mut done) = (None, String::new(), 0u64, false);
                    while let Some(Ok(chunk)) = stream.next().await {
                        buf.push_str(&String::from_utf8_lossy(&chunk));
                        while let Some(i) = buf.find("\n\n") {
                            let ev: String = buf.drain(..i + 2).collect();
                            let data = ev.trim().trim_start_matches("data:").trim();
                            if data == "[DONE]" {
                                done = true;
                                continue;
                            }
                            let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                            if v["choices"][0]["delta"]["content"].as_str().is_some_and(|s| !s.is_empty()) {
                                pieces += 1;
                                ttft.get_or_insert_with(|| sent.elapsed().as_secs_f64() * 1e3);
                            }
                        }
                    }
                    let mut t = tally.lock().unwrap();
                    if done {
                        t.ok += 1;
                        t.tokens += pieces;
                        t.ttft_ms.extend(ttft);
                    } else {
                        t.errors += 1;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let wall = t0.elapsed().as_secs_f64();
    let mut t = tally.lock().unwrap();
    t.ttft_ms.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"label": label, "model": model, "clients": clients, "secs": wall, "completed": t.ok, "req_per_s": t.ok as f64 / wall,
            "pieces_per_s": t.tokens as f64 / wall, "ttft_p50_ms": pct(&t.ttft_ms, 0.5), "ttft_p99_ms": pct(&t.ttft_ms, 0.99),
            "busy_429_503": t.busy, "errors": t.errors})
    );
}
