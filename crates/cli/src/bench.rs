//! `ulm bench`: runtime speed — prefill tok/s, decode ms/token, time to first token and to the
//! first 8 words, peak RSS — for the μLM presets (random weights) in f32 and int8 on 1 and 2
//! threads, and for SmolLM2-135M side by side with llama.cpp on the same file and threads.
//!
//! ```text
//! ulm bench                       # full table, then one JSON line
//! ulm bench --quick               # fewer repetitions
//! ulm bench --only smollm2        # one model (here beside llama.cpp)
//! ulm bench --no-peer             # skip llama.cpp
//! ```
//! Each configuration runs in its own child process (`ulm bench --one ...`) so peak RSS is its
//! own. Time it on an idle machine: pause background jobs (kill -STOP) first, or say it was loaded.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use ulm_runtime::generate::{GenerateOptions, LoadedModel, generate};
use ulm_runtime::sampler::{Rng, Sampling, argmax};
use ulm_runtime::{Config, Model, Precision, Session};

use crate::models;

#[derive(clap::Args)]
pub struct Args {
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 40)]
    prompt_tokens: usize,
    /// Decode steps timed.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Fewer repetitions and no 2-thread runs.
    #[arg(long)]
    quick: bool,
    /// Skip llama.cpp.
    #[arg(long)]
    no_peer: bool,
    /// Only the models whose name contains this (`smollm2`, `micro_30m`, …).
    #[arg(long)]
    only: Option<String>,
    /// Internal: run one configuration `name:precision:threads` and print its JSON.
    #[arg(long, hide = true)]
    one: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Row {
    engine: String,
    model: String,
    precision: String,
    threads: usize,
    prefill_tok_s: f64,
    ttft_ms: f64,
    decode_ms_per_token: f64,
    first8_words_ms: Option<f64>,
    peak_rss_mib: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A fixed prompt of SmolLM2-sized chat: the real text the SmolLM2 rows use.
const QUESTION: &str = "I am planning a small dinner party for six friends this weekend and one of them is vegetarian. What simple main dish could I cook?";

fn run_one(spec: &str, a: &Args) -> Result<Row> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [name, prec, threads] = parts[..] else { bail!("bad --one spec {spec}") };
    let threads: usize = threads.parse()?;
    let prec = models::precision(prec)?;
    let mut rng = Rng::new(1);
    let (lm, prompt): (Option<LoadedModel>, Vec<u32>) = if let Some(c) = Config::preset(name) {
        (None, (0..a.prompt_tokens).map(|_| (rng.next_u64() % c.vocab_size as u64) as u32).collect())
    } else {
        let lm = models::load(Some(name), &format!("{prec:?}").to_lowercase(), 1024)?;
        let mut p = lm.chat_prompt(QUESTION)?;
        p.truncate(a.prompt_tokens);
        (Some(lm), p)
    };
    let model: std::sync::Arc<Model> = match &lm {
        Some(lm) => lm.model.clone(),
        None => {
            let mut c = Config::preset(name).unwrap();
            c.max_seq_len = 512;
            std::sync::Arc::new(Model::random(c, 7).converted(prec))
        }
    };
    let mut session = Session::new(&model).with_threads(threads);
    // Warm-up: page in the weights and the pool.
    model.forward(&mut session, &prompt)?;
    let (mut prefill, mut decode, mut words) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.reps {
        session.truncate(0);
        let t0 = Instant::now();
        let mut tok = argmax(model.forward(&mut session, &prompt)?);
        let tp = t0.elapsed();
        let t1 = Instant::now();
        for _ in 0..a.decode_tokens {
            tok = argmax(model.forward(&mut session, &[tok])?);
        }
        prefill.push(tp.as_secs_f64());
        decode.push(t1.elapsed().as_secs_f64() / a.decode_tokens as f64);
        if let Some(lm) = &lm {
            let mut s = Session::new(&lm.model).with_threads(threads);
            let opts = GenerateOptions { max_tokens: 48, words: Some(8), sampling: Sampling::greedy(), copy: None, candidates: None };
            let g = generate(lm, &mut s, &prompt, &opts, &mut |_| true)?;
            if let Some(w) = g.words_done {
                words.push(w.as_secs_f64());
            }
        }
    }
    let p = median(prefill);
    let d = median(decode);
    // Random weights make no words: estimate 8 words as 11 tokens (0.75 words per token).
    let w8 = if words.is_empty() { p + 10.0 * d } else { median(words) };
    Ok(Row {
        engine: "ulm".into(),
        model: lm.as_ref().map_or(name.to_string(), |l| l.name.clone()),
        precision: model.weight_format().into(),
        threads,
        prefill_tok_s: prompt.len() as f64 / p,
        ttft_ms: p * 1e3,
        decode_ms_per_token: d * 1e3,
        first8_words_ms: Some(w8 * 1e3),
        peak_rss_mib: models::peak_rss().map(|b| b as f64 / 1048576.0),
    })
}

/// llama.cpp's server (xllamacpp wheel) on the same GGUF: its own timings of prompt and decode.
fn llamacpp_row(gguf: &str, prompt: &[u32], threads: usize, a: &Args) -> Result<Row> {
    let port = 18000 + (std::process::id() % 1000) as u16 + threads as u16;
    let mut child = Command::new("assets/venv/bin/python")
        .args(["scripts/llama_server.py", "--model", gguf, "--port", &port.to_string(), "--threads", &threads.to_string(), "--parallel", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting llama.cpp (run scripts/fetch-assets.sh to install xllamacpp)")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let res = (|| -> Result<Row> {
        let (mut pf, mut dc, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..a.reps + 1 {
            let body = serde_json::json!({"prompt": prompt, "n_predict": a.decode_tokens + 1, "temperature": 0.0,
                "cache_prompt": false, "ignore_eos": true});
            let v = http_post_json(port, "/completion", &body)?;
            let t = &v["timings"];
            pf.push(t["prompt_per_second"].as_f64().context("no timings from llama.cpp")?);
            ttft.push(t["prompt_ms"].as_f64().unwrap_or(0.0));
            dc.push(t["predicted_per_token_ms"].as_f64().unwrap_or(0.0));
        }
        pf.remove(0); // first request warms up
        dc.remove(0);
        ttft.remove(0);
        let rss = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok().and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        });
        Ok(Row {
            engine: "llama.cpp".into(),
            model: "SmolLM2-135M-Instruct.Q4_1".into(),
            precision: "q4_1".into(),
            threads,
            prefill_tok_s: median(pf),
            ttft_ms: median(ttft),
            decode_ms_per_token: median(dc),
            first8_words_ms: None,
            peak_rss_mib: rss.map(|k| k / 1024.0),
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    res
}

/// A minimal HTTP/1.1 POST on loopback (the bench must not need a TLS stack).
fn http_post_json(port: u16, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(s, "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (_, json) = resp.split_once("\r\n\r\n").context("bad HTTP response")?;
    Ok(serde_json::from_str(json.trim())?)
}

pub fn run(a: Args) -> Result<()> {
    if let Some(spec) = &a.one {
        println!("{}", serde_json::to_string(&run_one(spec, &a)?)?);
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let threads: &[usize] = if a.quick { &[1] } else { &[1, 2] };
    let reps = if a.quick { 2 } else { a.reps };
    let mut specs = Vec::new();
    for m in ["micro_8m", "micro_15m", "micro_30m"] {
        for p in ["f32", "int8"] {
            for &t in threads {
                specs.push(format!("{m}:{p}:{t}"));
            }
        }
    }
    let smol = models::resolve(Some("smollm2")).ok();
    if smol.is_some() {
        for &t in threads {
            specs.push(format!("smollm2:native:{t}"));
        }
    }
    if let Some(only) = &a.only {
        specs.retain(|s| s.contains(only.as_str()));
        if specs.is_empty() {
            bail!("--only {only}: no model matches (micro_8m, micro_15m, micro_30m, smollm2)");
        }
    }
    let mut rows = Vec::new();
    for spec in &specs {
        eprint!("{spec} … ");
        let out = Command::new(&exe)
            .args(["bench", "--one", spec, "--reps", &reps.to_string()])
            .args(["--prompt-tokens", &a.prompt_tokens.to_string(), "--decode-tokens", &a.decode_tokens.to_string()])
            .output()?;
        if !out.status.success() {
            bail!("{spec}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let row: Row = serde_json::from_slice(&out.stdout)?;
        eprintln!("{:.2} ms/token", row.decode_ms_per_token);
        rows.push(row);
    }
    let smol_rows = specs.iter().any(|s| s.starts_with("smollm2"));
    if let (Some(smol), false, true) = (&smol, a.no_peer, smol_rows) {
        let lm = LoadedModel::open(smol, Precision::Native, Some(1024))?;
        let mut prompt = lm.chat_prompt(QUESTION)?;
        prompt.truncate(a.prompt_tokens);
        for &t in threads {
            eprint!("llama.cpp x{t} … ");
            match llamacpp_row(&smol.to_string_lossy(), &prompt, t, &Args { reps, ..a_clone(&a) }) {
                Ok(r) => {
                    eprintln!("{:.2} ms/token", r.decode_ms_per_token);
                    rows.push(r)
                }
                Err(e) => eprintln!("skipped: {e:#}"),
            }
        }
    }
    print_table(&rows, a.prompt_tokens);
    Ok(())
}

fn a_clone(a: &Args) -> Args {
    Args { prompt_tokens: a.prompt_tokens, decode_tokens: a.decode_tokens, reps: a.reps, quick: a.quick, no_peer: a.no_peer, only: a.only.clone(), one: None }
}

fn print_table(rows: &[Row], prompt_tokens: usize) {
    println!("prompt {prompt_tokens} tokens; first-8-words for random-weight presets is estimated as prefill + 10 decode steps");
    println!("| engine | model | weights | threads | prefill tok/s | TTFT ms | decode ms/token | first 8 words ms | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.1} | {:.2} | {} | {} |",
            r.engine,
            r.model,
            r.precision,
            r.threads,
            r.prefill_tok_s,
            r.ttft_ms,
            r.decode_ms_per_token,
            r.first8_words_ms.map_or("–".into(), |v| format!("{v:.1}")),
            r.peak_rss_mib.map_or("–".into(), |v| format!("{v:.0}")),
        );
    }
    let mut ratios = serde_json::Map::new();
    for t in [1, 2] {
        let ours = rows.iter().find(|r| r.engine == "ulm" && r.model.starts_with("SmolLM2") && r.threads == t);
        let peer = rows.iter().find(|r| r.engine == "llama.cpp" && r.threads == t);
        if let (Some(o), Some(p)) = (ours, peer) {
            let decode = p.decode_ms_per_token / o.decode_ms_per_token;
            let prefill = o.prefill_tok_s / p.prefill_tok_s;
            println!("SmolLM2 x{t}: ulm/llama.cpp decode speed ratio {decode:.2}, prefill ratio {prefill:.2}");
            ratios.insert(format!("smollm2_decode_ratio_vs_llamacpp_x{t}"), decode.into());
            ratios.insert(format!("smollm2_prefill_ratio_vs_llamacpp_x{t}"), prefill.into());
        }
    }
    println!("{}", serde_json::json!({"bench": "runtime", "rows": rows, "ratios": ratios}));
}
