//! Load test (ignored by default; about a minute): 32 streaming clients for 60 s against `app()`
//! on loopback with a real model. Reports requests/s and p50/p99 time to first token; the only
//! errors allowed are the documented 429 (queue full) and 503 (no slot in time), which the client
//! honours by waiting `Retry-After`; afterwards nothing may be left running, waiting or checked out.
//!
//! ```text
//! cargo test --release -p ulm-server --test load -- --ignored --nocapture
//! ULM_LOAD_MODEL=golden ULM_LOAD_CLIENTS=32 ULM_LOAD_SECS=60 cargo test --release -p ulm-server --test load -- --ignored --nocapture
//! ```

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use ulm_server::ServedModel;

use support::{Live, config};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

#[derive(Default)]
struct Tally {
    ttft_ms: Vec<f64>,
    ok: u64,
    q429: u64,
    q503: u64,
    errors: Vec<String>,
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
#[ignore = "a minute of load; run with --ignored"]
fn thirty_two_streaming_clients_for_a_minute() {
    let which: String = env("ULM_LOAD_MODEL", "smollm2".to_string());
    let clients: usize = env("ULM_LOAD_CLIENTS", 32);
    let secs: u64 = env("ULM_LOAD_SECS", 60);
    let max_tokens: u32 = env("ULM_LOAD_TOKENS", 16);
    let lm = match which.as_str() {
        "golden" => support::golden(),
        _ => match support::smollm2() {
            Some(lm) => lm,
            None => return,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let cfg = config();
        let (slots, queue) = (cfg.slots, cfg.queue);
        let live = Live::start(cfg, || vec![ServedModel::new("m", lm)]).await;
        let url = format!("{}/v1/chat/completions", live.url);
        let rss0 = rss_mib();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (url, tally) = (url.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let body = json!({"messages": [{"role": "user", "content": format!("Client {c}, question {i}: name a fruit.")}],
                        "max_tokens": max_tokens, "stream": true, "seed": i});
                    let sent = Instant::now();
                    let res = match http.post(&url).json(&body).send().await {
                        Ok(r) => r,
                        Err(e) => {
                            tally.lock().unwrap().errors.push(format!("send: {e}"));
                            continue;
                        }
                    };
                    let status = res.status().as_u16();
                    if status == 429 || status == 503 {
                        let wait = res.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(1);
                        {
                            let mut t = tally.lock().unwrap();
                            if status == 429 { t.q429 += 1 } else { t.q503 += 1 }
                        }
                        tokio::time::sleep(Duration::from_secs(wait.min(2))).await;
                        continue;
                    }
                    if status != 200 {
                        let text = res.text().await.unwrap_or_default();
                        tally.lock().unwrap().errors.push(format!("HTTP {status}: {text}"));
                        continue;
                    }
                    let mut stream = res.bytes_stream();
                    let mut ttft = None;
                    let mut body = String::new();
                    while let Some(chunk) = stream.next().await {
                        match chunk {
                            Ok(b) => {
                                body.push_str(&String::from_utf8_lossy(&b));
                                if ttft.is_none() && body.contains("\"content\":\"") && body.matches("data: ").count() >= 2 {
                                    ttft = Some(sent.elapsed().as_secs_f64() * 1e3);
                                }
                            }
                            Err(e) => {
                                tally.lock().unwrap().errors.push(format!("stream: {e}"));
                                break;
                            }
                        }
                    }
                    let mut t = tally.lock().unwrap();
                    if body.ends_with("data: [DONE]\n\n") {
                        t.ok += 1;
                        if let Some(ms) = ttft {
                            t.ttft_ms.push(ms);
                        }
                    } else {
                        t.errors.push(format!("stream ended without [DONE]: {:?}", &body[body.len().saturating_sub(200)..]));
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let wall = t0.elapsed().as_secs_f64();
        let stats = live.settled(Duration::from_secs(30)).await;
        let rss1 = rss_mib();
        let mut t = std::mem::take(&mut *tally.lock().unwrap());
        t.ttft_ms.sort_by(f64::total_cmp);
        let (p50, p99) = (pct(&t.ttft_ms, 0.5), pct(&t.ttft_ms, 0.99));
        println!("load: {clients} streaming clients × {secs} s, model {which}, max_tokens {max_tokens}, {slots} slots, queue {queue}");
        println!("  completed {}  ({:.2} req/s)   429 {}   503 {}   other errors {}", t.ok, t.ok as f64 / wall, t.q429, t.q503, t.errors.len());
        println!("  TTFT p50 {p50:.0} ms   p99 {p99:.0} ms   RSS {rss0:.0} → {rss1:.0} MiB");
        println!("  server after: {stats}");
        println!(
            "{}",
            json!({"bench": "load", "model": which, "clients": clients, "secs": secs, "completed": t.ok, "req_per_s": t.ok as f64 / wall,
                "ttft_p50_ms": p50, "ttft_p99_ms": p99, "http_429": t.q429, "http_503": t.q503, "errors": t.errors.len(),
                "rss_before_mib": rss0, "rss_after_mib": rss1})
        );
        assert!(t.errors.is_empty(), "errors besides 429/503: {:?}", &t.errors[..t.errors.len().min(5)]);
        assert!(t.ok > 0);
        // Nothing leaked: no sessions beyond the slots (+ the kept idle ones), none checked out.
        let m = &stats["models"][0];
        assert_eq!(m["sessions_in_use"], 0);
        assert!(m["sessions_created"].as_u64().unwrap() <= (slots * 2) as u64, "{m}");
        live.shutdown().await;
    });
}
