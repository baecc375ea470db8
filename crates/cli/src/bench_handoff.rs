//! `ulm bench-handoff`: perceived latency of the handoff against asking the cloud alone, with
//! our own `ulm serve` on loopback standing in for the cloud at several injected latencies.
//!
//! ```text
//! scripts/bench-handoff.sh                                   # release build, then the run below
//! ulm bench-handoff                                          # 20 dev prompts, TTFT 0.3 s, 1 s, 3 s, 50 tokens/s
//! ulm bench-handoff --ttft-ms 1000 --limit 5 --provider completion
//! ```
//! For every injected time to first token it starts `ulm serve --port 0 --ttft-ms T
//! --tokens-per-s R` (this binary, the cloud model on its own thread and slot) and, prompt by
//! prompt, asks it for a plain answer (cloud-only: the user waits for the cloud's first word) and
//! runs the handoff (the local opener at once, the server continues it). It prints a table and
//! ends with one JSON line.
//!
//! Everything runs on one machine: the cloud's injected latency costs no CPU, but its prefill and
//! decoding share the cores with the local opener (and with whatever else runs). Say so when
//! quoting the numbers.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use ulm_handoff::{Config, Handoff, Mode, ProviderKind, Reply, Turn};
use ulm_openai::chat::ChatCompletionChunk;
use ulm_openai::sse::SseDecoder;
use ulm_runtime::sampler::Sampling;
use ulm_server::local_opener::LocalOpener;
use ulm_server::sessions::SessionPool;

use crate::models;

/// Percentiles reported (nearest rank: always a value that was measured).
const PERCENTILES: [f64; 2] = [0.5, 0.9];

#[derive(clap::Args)]
pub struct Args {
    /// Prompt set (JSONL with `prompt`, optional `id`).
    #[arg(long, default_value = "data/eval/dev.jsonl")]
    pub prompts: PathBuf,
    /// Only the first N prompts.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Injected cloud time to first token, ms, comma-separated: one server run per value.
    #[arg(long, default_value = "300,1000,3000", value_delimiter = ',')]
    pub ttft_ms: Vec<u64>,
    /// Injected cloud delivery rate, tokens per second (a hosted model streams 50–100).
    #[arg(long, default_value_t = 50.0)]
    pub tokens_per_s: f64,
    /// Uniform random extra time to first token, up to this many ms.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// How the server is asked to continue: prefill, prefix, instruct, completion.
    #[arg(long, default_value = "prefill")]
    pub provider: String,
    /// Opener length in words.
    #[arg(long, default_value_t = 8)]
    pub words: usize,
    /// Speaking rate for the gap (words per second).
    #[arg(long, default_value_t = 2.5)]
    pub words_per_second: f64,
    /// Token cap of the cloud's reply (the same for the handoff and cloud-only).
    #[arg(long, default_value_t = 48)]
    pub max_tokens: u32,
    /// Local opener model (path or name); default: the shipped μLM, else SmolLM2.
    #[arg(long)]
    pub model: Option<String>,
    /// Model the server serves as the cloud.
    #[arg(long, default_value = "smollm2")]
    pub cloud_model: String,
    /// Threads of the local opener.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Threads of the server's generation.
    #[arg(long, default_value_t = 1)]
    pub cloud_threads: usize,
    /// Context length of the local opener's session.
    #[arg(long, default_value_t = 1024)]
    pub ctx: usize,
    /// Base sampling seed (each prompt's seed is derived from it and the prompt's position).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also run every handoff a second time with the cache-warming early request (extra rows).
    #[arg(long)]
    pub early_request: bool,
}

#[derive(Deserialize)]
struct Prompt {
    prompt: String,
}

/// What one prompt gave at one latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Handoff: first opener word shown, ms after the message.
    pub first_word_ms: Option<f64>,
    /// Handoff: first continuation word shown (the cloud's first word), ms after the message.
    pub first_cloud_word_ms: Option<f64>,
    /// Handoff: the continuation request's time to first token.
    pub cloud_ttft_ms: Option<f64>,
    /// Handoff: gap at the speaking rate.
    pub gap_ms: Option<f64>,
    /// Handoff: wait from the opener's last word to the continuation's first, text shown at once.
    pub text_gap_ms: Option<f64>,
    /// Handoff: reply complete.
    pub total_ms: f64,
    /// Handoff: recovery mode (`None`: not labelled, e.g. the cloud failed).
    pub mode: Option<Mode>,
    /// Handoff: the cloud failed and the reply ended locally.
    pub error: bool,
    /// Cloud-only: first word, ms after the request.
    pub cloud_only_first_word_ms: Option<f64>,
    /// Cloud-only: reply complete.
    pub cloud_only_total_ms: Option<f64>,
}

impl Sample {
    fn from_reply(r: &Reply) -> Self {
        let t = &r.timeline;
        Sample {
            first_word_ms: t.first_word_ms,
            first_cloud_word_ms: t.first_continuation_word_ms.filter(|_| !r.continuation.trim().is_empty()),
            cloud_ttft_ms: t.cloud_first_token_ms.zip(t.cloud_request_ms).map(|(a, b)| a - b),
            gap_ms: t.gap_ms,
            text_gap_ms: t.first_continuation_word_ms.zip(t.opener_done_ms).map(|(c, o)| (c - o).max(0.0)),
            total_ms: t.done_ms,
            mode: r.mode,
            error: r.error.is_some(),
            ..Sample::default()
        }
    }
}

/// p50 and p90 of a column (nearest rank), `None` without values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pct {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
}

/// Nearest-rank percentile `q` in `0..=1` of `values` (NaN-free); `None` when empty.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

fn pct(values: impl Iterator<Item = Option<f64>>) -> Pct {
    let v: Vec<f64> = values.flatten().collect();
    Pct { p50: percentile(&v, PERCENTILES[0]), p90: percentile(&v, PERCENTILES[1]) }
}

/// One injected latency and handoff variant, summarised.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Injected time to first token, ms.
    pub injected_ttft_ms: u64,
    /// `handoff`, or `handoff+early` with the cache-warming request.
    pub variant: String,
    /// Prompts run.
    pub n: usize,
    /// Handoff: first word shown.
    pub first_word_ms: Pct,
    /// Handoff: first cloud word shown.
    pub first_cloud_word_ms: Pct,
    /// Handoff: measured cloud time to first token (injected + prefill + queueing).
    pub cloud_ttft_ms: Pct,
    /// Handoff: gap at the speaking rate.
    pub gap_ms: Pct,
    /// Handoff: wait after the opener when text is shown at once.
    pub text_gap_ms: Pct,
    /// Handoff: total.
    pub total_ms: Pct,
    /// Shares of fragment completion, clean continuation, self-repair pivot, restart, unlabelled.
    pub modes: ModeShares,
    /// Handoffs whose cloud failed.
    pub errors: usize,
    /// Cloud-only: first word.
    pub cloud_only_first_word_ms: Pct,
    /// Cloud-only: total.
    pub cloud_only_total_ms: Pct,
    /// Cloud-only requests that failed.
    pub cloud_only_errors: usize,
}

/// Recovery-mode shares of the replies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ModeShares {
    /// Fragment completion.
    pub fragment_completion: f64,
    /// Clean continuation.
    pub clean_continuation: f64,
    /// Self-repair pivot.
    pub self_repair_pivot: f64,
    /// Restart (the contract broken: the answer began again).
    pub restart: f64,
    /// No label (no continuation).
    pub none: f64,
}

/// The summary of one latency's samples.
pub fn summarise(injected_ttft_ms: u64, variant: &str, s: &[Sample]) -> Summary {
    let n = s.len();
    let share = |m: Option<Mode>| if n == 0 { 0.0 } else { s.iter().filter(|x| x.mode == m).count() as f64 / n as f64 };
    Summary {
        injected_ttft_ms,
        variant: variant.to_string(),
        n,
        first_word_ms: pct(s.iter().map(|x| x.first_word_ms)),
        first_cloud_word_ms: pct(s.iter().map(|x| x.first_cloud_word_ms)),
        cloud_ttft_ms: pct(s.iter().map(|x| x.cloud_ttft_ms)),
        gap_ms: pct(s.iter().map(|x| x.gap_ms)),
        text_gap_ms: pct(s.iter().map(|x| x.text_gap_ms)),
        total_ms: pct(s.iter().map(|x| Some(x.total_ms))),
        modes: ModeShares {
            fragment_completion: share(Some(Mode::FragmentCompletion)),
            clean_continuation: share(Some(Mode::CleanContinuation)),
            self_repair_pivot: share(Some(Mode::SelfRepairPivot)),
            restart: share(Some(Mode::Restart)),
            none: share(None),
        },
        errors: s.iter().filter(|x| x.error).count(),
        cloud_only_first_word_ms: pct(s.iter().map(|x| x.cloud_only_first_word_ms)),
        cloud_only_total_ms: pct(s.iter().map(|x| x.cloud_only_total_ms)),
        cloud_only_errors: s.iter().filter(|x| x.cloud_only_first_word_ms.is_none()).count(),
    }
}

/// The table printed at the end: one row per latency.
pub fn table(rows: &[Summary]) -> String {
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    let both = |p: Pct| format!("{} / {}", ms(p.p50), ms(p.p90));
    let mut out = String::from(
        "| injected cloud TTFT | variant | n | first word shown p50 / p90 ms | first cloud word p50 / p90 ms | cloud TTFT measured p50 ms | gap at speech rate p50 / p90 ms | \
         wait after opener (text) p50 ms | total p50 ms | modes frag / clean / pivot / restart / none | cloud errors | cloud-only: first word p50 / p90 ms | cloud-only total p50 ms |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let m = r.modes;
        out += &format!(
            "| {} ms | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} / {:.2} / {:.2} / {:.2} / {:.2} | {} | {} | {} |\n",
            r.injected_ttft_ms,
            r.variant,
            r.n,
            both(r.first_word_ms),
            both(r.first_cloud_word_ms),
            ms(r.cloud_ttft_ms.p50),
            both(r.gap_ms),
            ms(r.text_gap_ms.p50),
            ms(r.total_ms.p50),
            m.fragment_completion,
            m.clean_continuation,
            m.self_repair_pivot,
            m.restart,
            m.none,
            r.errors,
            both(r.cloud_only_first_word_ms),
            ms(r.cloud_only_total_ms.p50),
        );
    }
    out
}

pub fn run(a: Args) -> Result<()> {
    let provider: ProviderKind = a.provider.parse()?;
    if provider == ProviderKind::Anthropic {
        bail!("--provider anthropic needs an Anthropic Messages endpoint; `ulm serve` speaks the OpenAI API (use prefill, prefix, instruct or completion)");
    }
    if a.ttft_ms.is_empty() || a.limit == 0 || a.words == 0 {
        bail!("nothing to run: give --ttft-ms (e.g. 300,1000,3000), --limit >= 1 and --words >= 1");
    }
    let prompts = read_prompts(&a.prompts, a.limit)?;
    let opener_path = models::resolve(a.model.as_deref())?;
    let lm = models::load(a.model.as_deref(), "auto", a.ctx)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let http = reqwest::Client::new();
    let load_before = loadavg();
    eprintln!(
        "bench-handoff: opener {} ({}), cloud `ulm serve` with {}, provider {provider}, {} words, {} prompts, {} tokens/s, load average {}",
        lm.name,
        opener_path.display(),
        a.cloud_model,
        a.words,
        prompts.len(),
        a.tokens_per_s,
        load_before.as_deref().unwrap_or("?")
    );

    let variants: &[(&str, bool)] = if a.early_request { &[("handoff", false), ("handoff+early", true)] } else { &[("handoff", false)] };
    // One session pool per variant, kept across prompts as on a device (the session stays
    // allocated between turns). Per variant, so that a variant never finds the same prompt already
    // in the cache from the variant before it.
    let pools: Vec<Arc<SessionPool>> = variants.iter().map(|_| Arc::new(SessionPool::new(&lm.model, 1, a.threads))).collect();
    let mut rows: Vec<(u64, &str, Sample)> = Vec::new();
    let mut per_prompt = Vec::new();
    let started = Instant::now();
    for &ttft in &a.ttft_ms {
        let server = Server::start(&a, ttft)?;
        let base = server.url.clone();
        eprintln!("bench-handoff: TTFT {ttft} ms: cloud at {base}");
        // Warm-up, not measured: the first request of a fresh process pays for page faults.
        let warm = ["Hello! What can you do?".to_string()];
        for (i, p) in warm.iter().chain(prompts.iter()).enumerate() {
            let measured = i > 0;
            let seed = a.seed.wrapping_add(i as u64);
            let only = rt.block_on(cloud_only(&http, &base, p, a.max_tokens, seed));
            let only = match only {
                Ok(v) => Some(v),
                Err(e) => {
                    eprintln!("  cloud-only failed on prompt {i}: {e:#}");
                    None
                }
            };
            for (&(variant, early), sessions) in variants.iter().zip(&pools) {
                let handoff = handoff(&a, provider, &base, seed, early)?;
                // The same seed per prompt in every variant and latency: the same opener.
                let mut opener = LocalOpener::with_sessions(lm.clone(), sessions.clone()).sampling(Sampling { seed, ..Sampling::default() });
                let reply = rt.block_on(handoff.run(&mut opener, &[Turn::user(p)], |_| {}));
                if !measured {
                    continue;
                }
                let mut s = Sample::from_reply(&reply);
                if let Some((first, total)) = only {
                    s.cloud_only_first_word_ms = first;
                    s.cloud_only_total_ms = Some(total);
                }
                if let Some(e) = &reply.error {
                    eprintln!("  {variant} on prompt {i}: {e}");
                }
                eprintln!(
                    "  [{ttft} ms {variant}] {i:>2}/{}: first word {} ms, cloud word {} ms (TTFT {} ms), gap {} ms, {} | cloud-only first word {} ms",
                    prompts.len(),
                    fmt(s.first_word_ms),
                    fmt(s.first_cloud_word_ms),
                    fmt(s.cloud_ttft_ms),
                    fmt(s.gap_ms),
                    s.mode.map_or("–", Mode::as_str),
                    fmt(s.cloud_only_first_word_ms),
                );
                per_prompt.push(json!({"injected_ttft_ms": ttft, "variant": variant, "prompt": i, "opener": reply.opener, "continuation": reply.continuation, "sample": s}));
                rows.push((ttft, variant, s));
            }
        }
        drop(server);
    }

    let mut summaries = Vec::new();
    for &t in &a.ttft_ms {
        for &(v, _) in variants {
            let s: Vec<Sample> = rows.iter().filter(|(x, y, _)| *x == t && *y == v).map(|(_, _, s)| s.clone()).collect();
            summaries.push(summarise(t, v, &s));
        }
    }
    if std::env::var_os("ULM_BENCH_PER_PROMPT").is_some() {
        for p in &per_prompt {
            eprintln!("{p}");
        }
    }
    println!(
        "handoff vs cloud-only: {} prompts of {}, opener {} ({} words, {} thread), cloud `ulm serve` {} at {} tokens/s, provider {provider}, gap at {} words/s",
        prompts.len(),
        a.prompts.display(),
        lm.name,
        a.words,
        a.threads,
        a.cloud_model,
        a.tokens_per_s,
        a.words_per_second
    );
    println!("load average before {} / after {}; {:.0} s", load_before.as_deref().unwrap_or("?"), loadavg().as_deref().unwrap_or("?"), started.elapsed().as_secs_f64());
    println!();
    print!("{}", table(&summaries));
    let line = json!({
        "bench": "handoff",
        "prompts": a.prompts.display().to_string(),
        "n": prompts.len(),
        "opener_model": lm.name,
        "opener_threads": a.threads,
        "cloud_model": a.cloud_model,
        "cloud_threads": a.cloud_threads,
        "provider": provider.as_str(),
        "words": a.words,
        "words_per_second": a.words_per_second,
        "tokens_per_s": a.tokens_per_s,
        "jitter_ms": a.jitter_ms,
        "max_tokens": a.max_tokens,
        "early_request": a.early_request,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "git_commit": git_commit(),
        "rows": summaries,
    });
    println!("{line}");
    std::io::stdout().flush()?;
    Ok(())
}

fn handoff(a: &Args, provider: ProviderKind, base: &str, seed: u64, early_request: bool) -> Result<Handoff> {
    let mut cfg = Config::new(provider, format!("{base}/v1"));
    cfg.max_tokens = a.max_tokens;
    cfg.seed = Some((seed & 0x7fff_ffff) as i64);
    cfg.opener.words = a.words;
    cfg.opener.min_words = cfg.opener.min_words.min(a.words);
    cfg.opener.max_words = cfg.opener.max_words.max(a.words);
    cfg.words_per_second = a.words_per_second;
    cfg.early_request = early_request;
    Ok(Handoff::new(cfg)?)
}

/// Cloud-only: a plain streamed answer from the same server. Returns (first word ms, total ms).
async fn cloud_only(http: &reqwest::Client, base: &str, prompt: &str, max_tokens: u32, seed: u64) -> Result<(Option<f64>, f64)> {
    let body = json!({
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
        "max_tokens": max_tokens,
        "seed": seed & 0x7fff_ffff,
    });
    let t0 = Instant::now();
    let mut resp = http.post(format!("{base}/v1/chat/completions")).json(&body).send().await?.error_for_status()?;
    let mut dec = SseDecoder::new();
    let mut first = None;
    while let Some(bytes) = resp.chunk().await? {
        for ev in dec.feed(&bytes) {
            let ev = ev?;
            if ev.is_done() {
                continue;
            }
            let chunk: ChatCompletionChunk = serde_json::from_str(&ev.data).with_context(|| format!("not a chat chunk: {}", ev.data))?;
            if first.is_none() && chunk.text().chars().any(char::is_alphanumeric) {
                first = Some(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    Ok((first, t0.elapsed().as_secs_f64() * 1000.0))
}

/// `ulm serve` as a child process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(a: &Args, ttft_ms: u64) -> Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--slots", "1"])
            .args(["--model", &a.cloud_model, "--cloud-model", &a.cloud_model])
            .args(["--threads", &a.cloud_threads.to_string(), "--ttft-ms", &ttft_ms.to_string()])
            .args(["--tokens-per-s", &a.tokens_per_s.to_string(), "--jitter-ms", &a.jitter_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `ulm serve`")?;
        let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        // Keep reading its stdout so that the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`ulm serve` did not start (first line {line:?}); try `ulm serve --model {}` by hand", a.cloud_model);
        };
        let url = url.trim_end_matches('/').to_string();
        Ok(Server { child, url })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_prompts(path: &Path, limit: usize) -> Result<Vec<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open the prompt set {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let p: Prompt = serde_json::from_str(&line).with_context(|| format!("{}:{}: expected a JSON object with `prompt`", path.display(), i + 1))?;
        out.push(p.prompt);
        if out.len() == limit {
            break;
        }
    }
    if out.is_empty() {
        bail!("no prompts in {}", path.display());
    }
    Ok(out)
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

fn loadavg() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn git_commit() -> Option<String> {
    let o = Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(10.0));
        assert_eq!(percentile(&v, 0.9), Some(18.0));
        assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn summary_counts_modes_and_failures() {
        let s = |mode, first: Option<f64>, error| Sample {
            first_word_ms: Some(100.0),
            gap_ms: Some(0.0),
            total_ms: 2000.0,
            mode,
            error,
            cloud_only_first_word_ms: first,
            ..Sample::default()
        };
        let rows = [
            s(Some(Mode::FragmentCompletion), Some(900.0), false),
            s(Some(Mode::FragmentCompletion), Some(1100.0), false),
            s(Some(Mode::CleanContinuation), None, false),
            s(None, Some(1000.0), true),
        ];
        let sum = summarise(300, "handoff", &rows);
        assert_eq!(sum.n, 4);
        assert_eq!(sum.modes, ModeShares { fragment_completion: 0.5, clean_continuation: 0.25, self_repair_pivot: 0.0, restart: 0.0, none: 0.25 });
        assert_eq!((sum.errors, sum.cloud_only_errors), (1, 1));
        assert_eq!(sum.cloud_only_first_word_ms, Pct { p50: Some(1000.0), p90: Some(1100.0) });
        assert_eq!(sum.first_cloud_word_ms, Pct::default(), "no cloud word: no value, not zero");
        let t = table(&[sum]);
        assert!(t.lines().nth(2).unwrap().starts_with("| 300 ms | handoff | 4 | 100 / 100 | – / – | – | 0 / 0 |"), "{t}");
    }
}
