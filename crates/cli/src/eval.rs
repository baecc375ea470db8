//! `ulm eval`: opener plausibility, handoff seamlessness and latency, per model and opener length.
//!
//! ```text
//! ulm eval --models smollm2,ulm-30m --scorer smollm2 --words 4,8,16 --limit 20 --out runs/eval
//! ulm serve --port 8081 &
//! ulm eval --models smollm2 --cloud http://127.0.0.1:8081/v1 --provider prefill --out runs/eval
//! ulm eval --report-only --out runs/eval            # report.md and plots again from per_prompt.jsonl
//! ```
//! For every prompt × opener model × opener length one line goes to `per_prompt.jsonl` as soon as
//! it is complete, so a killed run resumes where it stopped. `report.md`, `meta.json` and the PNG
//! plots are written at the end (and by `--report-only`), always from `per_prompt.jsonl`.
//!
//! Metrics: the scorer's mean per-token log-likelihood of the opener given the prompt (scorer's own
//! chat prompt, opener re-tokenized by the scorer) and the share of opener tokens inside the
//! scorer's top-k; with `--cloud`, the handoff's recovery mode, repetition/restart counts, the
//! scorer's log-likelihood of the first 8 continuation words given prompt + opener, and the
//! timeline; with `--judge`, one overall 1–5 score per full reply from an OpenAI-compatible model.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use ulm_handoff::{Config, Handoff, Overrides, ProviderKind, Turn};
use ulm_runtime::Session;
use ulm_runtime::generate::{GenerateOptions, LoadedModel, generate, logprob_entropy};
use ulm_runtime::sampler::Sampling;
use ulm_server::local_opener::LocalOpener;

use crate::models;

#[derive(clap::Args)]
pub struct Args {
    /// Prompt set (JSONL with `prompt`, optional `id`, `source`, `category`).
    #[arg(long, default_value = "data/eval/dev.jsonl")]
    pub prompts: PathBuf,
    /// Report directory (per_prompt.jsonl, report.md, meta.json, plots).
    #[arg(long, default_value = "runs/eval")]
    pub out: PathBuf,
    /// Opener models, comma-separated: names (smollm2, ulm-8m, ulm-30m) or paths.
    #[arg(long, default_value = "smollm2", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Scorer model (name or path).
    #[arg(long, default_value = "smollm2")]
    pub scorer: String,
    /// Opener lengths in words, comma-separated.
    #[arg(long, default_value = "4,8,16", value_delimiter = ',')]
    pub words: Vec<usize>,
    /// Top-k of the acceptance rate.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Weights precision: native, f32 or int8.
    #[arg(long, default_value = "native")]
    pub precision: String,
    /// Context cap per session (tokens).
    #[arg(long, default_value_t = 1024)]
    pub ctx: usize,
    /// Continuator base URL (e.g. http://127.0.0.1:8080/v1 after `ulm serve`); no handoff without it.
    #[arg(long)]
    pub cloud: Option<String>,
    /// How the cloud continues: prefill, prefix, anthropic, instruct, completion.
    #[arg(long, default_value = "prefill")]
    pub provider: String,
    /// The cloud's model name.
    #[arg(long = "cloud-model")]
    pub cloud_model: Option<String>,
    /// Environment variable holding the cloud's API key.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Cap on continuation tokens.
    #[arg(long, default_value_t = 64)]
    pub cloud_max_tokens: u32,
    /// Judge base URL (OpenAI-compatible); no judge scores without it.
    #[arg(long)]
    pub judge: Option<String>,
    /// The judge's model name.
    #[arg(long = "judge-model", default_value = "gpt-4o")]
    pub judge_model: String,
    /// Environment variable holding the judge's API key.
    #[arg(long)]
    pub judge_key_env: Option<String>,
    /// Only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Base seed; each prompt's seed is derived from it and the prompt id.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only rewrite report.md and the plots from per_prompt.jsonl.
    #[arg(long)]
    pub report_only: bool,
}

/// One prompt of the set.
#[derive(Clone, Debug, Deserialize)]
struct Prompt {
    #[serde(default)]
    id: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    category: String,
    prompt: String,
}

/// The handoff's outcome for one row.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HandoffRow {
    pub provider: String,
    pub opener: String,
    pub continuation: String,
    /// fragment_completion, clean_continuation, self_repair_pivot (None: no continuation).
    pub mode: Option<String>,
    /// The continuation contains the opener's first 3 words again.
    pub repeats_opener: bool,
    /// The opener stopped mid-sentence and the continuation starts a new sentence (capitalized).
    pub restart: bool,
    /// Scorer's mean log-likelihood per token of the first 8 continuation words given prompt + opener.
    pub cont_ll: Option<f64>,
    pub cont_tokens: usize,
    pub first_word_ms: Option<f64>,
    pub opener_done_ms: Option<f64>,
    pub cloud_request_ms: Option<f64>,
    pub cloud_first_token_ms: Option<f64>,
    pub first_continuation_word_ms: Option<f64>,
    pub gap_ms: Option<f64>,
    pub done_ms: f64,
    pub error: Option<String>,
}

/// One line of per_prompt.jsonl: one prompt × opener model × opener length.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub source: String,
    pub category: String,
    pub model: String,
    pub params: u64,
    pub words: usize,
    pub seed: u64,
    pub opener: String,
    pub opener_tokens: usize,
    pub ttfw_ms: Option<f64>,
    pub opener_ms: f64,
    /// Peak RSS of a process holding only this edge model (bytes), measured once per model.
    pub peak_rss: Option<u64>,
    pub scorer: String,
    pub top_k: usize,
    /// Opener tokens as the scorer tokenizes them.
    pub scored_tokens: usize,
    pub ll_sum: f64,
    pub mean_ll: Option<f64>,
    /// Scored tokens inside the scorer's top-k.
    pub accepted: usize,
    pub handoff: Option<HandoffRow>,
    pub judge: Option<f64>,
    pub judge_model: Option<String>,
    pub error: Option<String>,
}

/// The paper's published GPT-4o judge scores (REFERENCE.md §4): *their* judge, not ours.
pub const PAPER_POINTS: &[(&str, f64, f64)] = &[
    ("μLM 8.8M", 8.8e6, 2.378),
    ("μLM 14.43M", 14.43e6, 2.685),
    ("μLM 28.85M", 28.85e6, 3.044),
    ("SmolLM2-135M-Instruct", 135e6, 3.373),
    ("LaMini-Neo-125M", 125e6, 1.874),
];

pub fn run(a: Args) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let rows_path = a.out.join("per_prompt.jsonl");
    if a.report_only {
        let rows = read_rows(&rows_path)?;
        if rows.is_empty() {
            bail!("no rows in {}: run `ulm eval --out {}` first", rows_path.display(), a.out.display());
        }
        write_report(&a.out, &rows)?;
        eprintln!("report: {}", a.out.join("report.md").display());
        return Ok(());
    }
    if a.words.is_empty() || a.words.contains(&0) {
        bail!("--words takes opener lengths of at least one word, e.g. --words 4,8,16");
    }
    let mut prompts = read_prompts(&a.prompts)?;
    if let Some(n) = a.limit {
        prompts.truncate(n);
    }
    let before = read_rows(&rows_path)?;
    if let Some(r) = before.iter().find(|r| r.scorer != a.scorer || r.top_k != a.top_k) {
        bail!(
            "{} holds rows scored by `{}` (top-{}); this run asks for `{}` (top-{}): give another --out to keep the report consistent",
            rows_path.display(),
            r.scorer,
            r.top_k,
            a.scorer,
            a.top_k
        );
    }
    let done: HashSet<(String, String, usize)> = before.into_iter().map(|r| (r.id, r.model, r.words)).collect();
    let prec = models::precision(&a.precision)?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let handoffs: Vec<(usize, Handoff)> = match &a.cloud {
        Some(url) => a.words.iter().map(|&w| Ok((w, handoff(&a, url, w)?))).collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let http = reqwest::Client::new();

    // Footprint first, one edge model at a time, before the scorer is loaded.
    let mut rss: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let max_words = *a.words.iter().max().unwrap();
    for m in &a.models {
        let todo = prompts.iter().any(|p| a.words.iter().any(|&w| !done.contains(&(p.id.clone(), m.clone(), w))));
        if !todo {
            continue;
        }
        let reset = reset_peak_rss();
        let lm = LoadedModel::open(&models::resolve(Some(m))?, prec, Some(a.ctx))?;
        let mut s = Session::new(&lm.model);
        if let Some(p) = prompts.first() {
            opener_of(&lm, &mut s, &p.prompt, max_words, seed_of(a.seed, &p.id))?;
        }
        rss.insert(m.clone(), if reset { models::peak_rss() } else { None });
    }

    let scorer_path = models::resolve(Some(&a.scorer))?;
    let mut scorer: Option<(LoadedModel, Session)> = None;
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&rows_path)?;
    // A kill mid-write leaves a torn last line (skipped when read): end it before appending.
    if std::fs::read(&rows_path)?.last().is_some_and(|&b| b != b'\n') {
        writeln!(out)?;
    }
    let mut written = 0usize;
    for m in &a.models {
        let pending: Vec<&Prompt> = prompts.iter().filter(|p| a.words.iter().any(|&w| !done.contains(&(p.id.clone(), m.clone(), w)))).collect();
        if pending.is_empty() {
            eprintln!("{m}: all {} prompts done", prompts.len());
            continue;
        }
        let lm = LoadedModel::open(&models::resolve(Some(m))?, prec, Some(a.ctx))?;
        let params = params(&lm);
        let mut s = Session::new(&lm.model);
        if scorer.is_none() {
            let sc = LoadedModel::open(&scorer_path, prec, Some(a.ctx.max(2048)))?;
            let ss = Session::new(&sc.model);
            scorer = Some((sc, ss));
        }
        let (sc, ss) = scorer.as_mut().unwrap();
        eprintln!("{m}: {} prompts to go ({} done before)", pending.len(), prompts.len() - pending.len());
        for p in pending {
            for &w in &a.words {
                if done.contains(&(p.id.clone(), m.clone(), w)) {
                    continue;
                }
                let seed = seed_of(a.seed, &p.id);
                let mut row = Row {
                    id: p.id.clone(),
                    source: p.source.clone(),
                    category: p.category.clone(),
                    model: m.clone(),
                    params,
                    words: w,
                    seed,
                    peak_rss: rss.get(m).copied().flatten(),
                    scorer: a.scorer.clone(),
                    top_k: a.top_k,
                    ..Row::default()
                };
                match opener_of(&lm, &mut s, &p.prompt, w, seed) {
                    Ok(o) => {
                        row.opener = o.text;
                        row.opener_tokens = o.tokens;
                        row.ttfw_ms = o.ttfw_ms;
                        row.opener_ms = o.ms;
                    }
                    Err(e) => row.error = Some(format!("opener: {e:#}")),
                }
                if row.error.is_none() {
                    match score(sc, ss, &p.prompt, "", &row.opener, a.top_k) {
                        Ok(sco) => {
                            row.scored_tokens = sco.tokens;
                            row.ll_sum = sco.ll_sum;
                            row.mean_ll = (sco.tokens > 0).then(|| sco.ll_sum / sco.tokens as f64);
                            row.accepted = sco.accepted;
                        }
                        Err(e) => row.error = Some(format!("scorer: {e:#}")),
                    }
                }
                if let Some((_, h)) = handoffs.iter().find(|(hw, _)| *hw == w) {
                    let mut opener = LocalOpener::new(lm.clone()).sampling(Sampling { seed, ..Sampling::default() });
                    let reply = rt.block_on(h.run(&mut opener, &[Turn::user(&p.prompt)], |_| {}));
                    let t = &reply.timeline;
                    let mut hr = HandoffRow {
                        provider: reply.provider.as_str().to_string(),
                        opener: reply.opener.clone(),
                        continuation: reply.continuation.clone(),
                        mode: reply.mode.map(|m| m.as_str().to_string()),
                        repeats_opener: repeats_opener(&reply.opener, &reply.continuation),
                        restart: restarts(&reply.opener, &reply.continuation),
                        first_word_ms: t.first_word_ms,
                        opener_done_ms: t.opener_done_ms,
                        cloud_request_ms: t.cloud_request_ms,
                        cloud_first_token_ms: t.cloud_first_token_ms,
                        first_continuation_word_ms: t.first_continuation_word_ms,
                        gap_ms: t.gap_ms,
                        done_ms: t.done_ms,
                        error: reply.error.as_ref().map(|e| e.to_string()),
                        ..HandoffRow::default()
                    };
                    let cont8 = first_words(&reply.continuation, 8);
                    if !cont8.trim().is_empty() {
                        match score(sc, ss, &p.prompt, &reply.opener, cont8, a.top_k) {
                            Ok(sco) if sco.tokens > 0 => {
                                hr.cont_ll = Some(sco.ll_sum / sco.tokens as f64);
                                hr.cont_tokens = sco.tokens;
                            }
                            Ok(_) => {}
                            Err(e) => hr.error = Some(format!("scorer: {e:#}")),
                        }
                    }
                    row.handoff = Some(hr);
                }
                if let Some(url) = &a.judge {
                    let reply = row.handoff.as_ref().map_or(row.opener.clone(), |h| format!("{}{}", h.opener, h.continuation));
                    match rt.block_on(judge(&http, url, &a.judge_model, a.judge_key_env.as_deref(), &p.prompt, &reply)) {
                        Ok(j) => {
                            row.judge = Some(j);
                            row.judge_model = Some(a.judge_model.clone());
                        }
                        Err(e) => eprintln!("judge failed on {}: {e:#}", p.id),
                    }
                }
                writeln!(out, "{}", serde_json::to_string(&row)?)?;
                out.flush()?;
                written += 1;
            }
        }
    }
    eprintln!("{written} new rows in {}", rows_path.display());
    let rows = read_rows(&rows_path)?;
    write_meta(&a, &rows)?;
    write_report(&a.out, &rows)?;
    eprintln!("report: {}", a.out.join("report.md").display());
    Ok(())
}

fn handoff(a: &Args, url: &str, words: usize) -> Result<Handoff> {
    let provider: ProviderKind = a.provider.parse()?;
    let mut cfg = Config::new(provider, url.to_string());
    let o = Overrides {
        model: a.cloud_model.clone(),
        api_key_env: a.api_key_env.clone(),
        words: Some(words),
        max_tokens: Some(a.cloud_max_tokens),
        ..Overrides::default()
    };
    cfg.apply(&o)?;
    // The eval asks for exactly `words` words.
    cfg.opener.min_words = cfg.opener.min_words.min(words);
    cfg.opener.max_words = cfg.opener.max_words.max(words);
    Ok(Handoff::new(cfg)?)
}

fn read_prompts(path: &Path) -> Result<Vec<Prompt>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open the prompt set {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut p: Prompt = serde_json::from_str(&line).with_context(|| format!("{}:{}: expected a JSON object with `prompt`", path.display(), i + 1))?;
        if p.id.is_empty() {
            p.id = format!("line{}", i + 1);
        }
        out.push(p);
    }
    if out.is_empty() {
        bail!("no prompts in {}", path.display());
    }
    Ok(out)
}

/// Rows of per_prompt.jsonl; a torn last line (a kill mid-write) is skipped.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn seed_of(base: u64, id: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    base ^ h
}

/// Parameter count from the config (embeddings, attention, MLP, norms).
fn params(lm: &LoadedModel) -> u64 {
    let c = lm.model.config();
    let (d, hd) = (c.dim as u64, c.head_dim as u64);
    let attn = d * hd * c.n_heads as u64 * 2 + d * hd * c.n_kv_heads as u64 * 2;
    let mlp = 3 * d * c.ffn_dim as u64;
    let emb = c.vocab_size as u64 * d * if c.tied_embeddings { 1 } else { 2 };
    emb + c.n_layers as u64 * (attn + mlp + 2 * d) + d
}

/// Resets the kernel's peak-RSS mark (VmHWM) of this process; false where it cannot.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

struct Opener {
    text: String,
    tokens: usize,
    ttfw_ms: Option<f64>,
    ms: f64,
}

fn opener_of(lm: &LoadedModel, s: &mut Session, prompt: &str, words: usize, seed: u64) -> Result<Opener> {
    let ids = lm.chat_prompt(prompt)?;
    s.truncate(0);
    let opts = GenerateOptions { max_tokens: words * 6 + 8, words: Some(words), sampling: Sampling { seed, ..Sampling::default() } };
    let t0 = Instant::now();
    let mut ttfw = None;
    let g = generate(lm, s, &ids, &opts, &mut |p| {
        if ttfw.is_none() && p.text.chars().any(char::is_alphanumeric) {
            ttfw = Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        true
    })?;
    Ok(Opener { text: g.text, tokens: g.tokens.len(), ttfw_ms: ttfw, ms: g.total.as_secs_f64() * 1000.0 })
}

struct Score {
    tokens: usize,
    ll_sum: f64,
    accepted: usize,
}

/// Scores `text` after the scorer's chat prompt for `prompt` followed by `context`: the sum of
/// per-token log-probabilities and how many tokens were in the scorer's top-k.
fn score(sc: &LoadedModel, s: &mut Session, prompt: &str, context: &str, text: &str, k: usize) -> Result<Score> {
    let mut ids = sc.chat_prompt(prompt)?;
    if !context.is_empty() {
        ids.extend(sc.tokenizer.encode(context, false)?);
    }
    let start = ids.len();
    let target = sc.tokenizer.encode(text, false)?;
    if target.is_empty() {
        return Ok(Score { tokens: 0, ll_sum: 0.0, accepted: 0 });
    }
    ids.extend(&target);
    if ids.len() > s.max_seq() {
        bail!("{} tokens exceed the scorer's context of {}", ids.len(), s.max_seq());
    }
    s.truncate(0);
    let mut ll_sum = 0.0f64;
    let mut accepted = 0usize;
    let all = ids.clone();
    sc.model.forward_each(s, &ids, &mut |i, logits| {
        // Logits after token i predict token i + 1.
        if i + 1 >= start && i + 1 < all.len() {
            let t = all[i + 1];
            let (lp, _) = logprob_entropy(logits, t);
            ll_sum += lp as f64;
            let lt = logits[t as usize];
            if logits.iter().filter(|&&l| l > lt).count() < k {
                accepted += 1;
            }
        }
    })?;
    Ok(Score { tokens: target.len(), ll_sum, accepted })
}

fn norm_words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The continuation contains the opener's first three words again (a repetition the seam did not remove).
pub fn repeats_opener(opener: &str, continuation: &str) -> bool {
    let o = norm_words(opener);
    if o.len() < 3 {
        return false;
    }
    let c = norm_words(continuation);
    c.windows(3).any(|w| w == &o[..3])
}

/// The opener stopped mid-sentence and the continuation starts over with a capitalized word.
pub fn restarts(opener: &str, continuation: &str) -> bool {
    let o = opener.trim_end();
    let mid = !o.is_empty() && !o.ends_with(['.', '!', '?', ':', '\n']);
    let first = continuation.split_whitespace().next().unwrap_or("");
    mid && first.chars().next().is_some_and(char::is_uppercase) && first != "I" && !first.starts_with("I'")
}

/// The text up to the end of its `n`th word (leading whitespace kept).
fn first_words(text: &str, n: usize) -> &str {
    let mut count = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                count += 1;
                if count == n {
                    return &text[..i];
                }
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    text
}

async fn judge(http: &reqwest::Client, url: &str, model: &str, key_env: Option<&str>, prompt: &str, reply: &str) -> Result<f64> {
    let instruction = format!(
        "Please act as an impartial judge and evaluate the overall quality of the AI assistant's reply to the user's message below \
         (helpfulness, relevance, accuracy, coherence and fluency). Rate it on a scale of 1 to 5, where 1 is very poor and 5 is excellent. \
         Answer with the number only.\n\n[User]\n{prompt}\n\n[Assistant]\n{reply}\n\nScore (1-5):"
    );
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": instruction}],
        "temperature": 0,
        "max_tokens": 8,
    });
    let mut req = http.post(format!("{}/chat/completions", url.trim_end_matches('/'))).json(&body);
    if let Some(k) = key_env {
        let key = std::env::var(k).with_context(|| format!("the judge's key variable {k} is not set"))?;
        req = req.bearer_auth(key);
    }
    let v: serde_json::Value = req.send().await?.error_for_status()?.json().await?;
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    let d = text.chars().find(|c| ('1'..='5').contains(c)).with_context(|| format!("no 1-5 score in the judge's answer {text:?}"))?;
    Ok(d.to_digit(10).unwrap() as f64)
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// sha256 of a model's files (the GGUF file, or the folder's weights, config and tokenizer).
fn model_hashes(name: &str) -> serde_json::Value {
    let Ok(path) = models::resolve(Some(name)) else { return serde_json::json!({"error": "not found"}) };
    let files: Vec<PathBuf> = if path.is_file() {
        vec![path.clone()]
    } else {
        ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"].iter().map(|f| path.join(f)).filter(|p| p.exists()).collect()
    };
    let mut m = serde_json::Map::new();
    m.insert("path".into(), path.display().to_string().into());
    for f in files {
        let h = sha256_file(&f).unwrap_or_else(|e| format!("error: {e}"));
        m.insert(f.file_name().unwrap().to_string_lossy().into(), h.into());
    }
    m.into()
}

fn sh(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn write_meta(a: &Args, rows: &[Row]) -> Result<()> {
    let mut hashes = serde_json::Map::new();
    let mut names: Vec<String> = a.models.clone();
    names.push(a.scorer.clone());
    names.extend(rows.iter().map(|r| r.model.clone()));
    names.sort();
    names.dedup();
    for n in names {
        let h = model_hashes(&n);
        hashes.insert(n, h);
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string());
    let meta = serde_json::json!({
        "models": hashes,
        "settings": {
            "prompts": a.prompts.display().to_string(),
            "prompts_sha256": sha256_file(&a.prompts).ok(),
            "models": a.models, "scorer": a.scorer, "words": a.words, "top_k": a.top_k,
            "precision": a.precision, "ctx": a.ctx, "limit": a.limit, "seed": a.seed,
            "sampling": {"temperature": 0.5, "top_p": 0.9, "seed": "base seed xor fnv1a64(prompt id)"},
            "cloud": a.cloud, "provider": a.provider, "cloud_model": a.cloud_model, "cloud_max_tokens": a.cloud_max_tokens,
            "words_per_second": a.cloud.as_ref().map(|_| Config::new(ProviderKind::Prefill, "").words_per_second),
            "judge": a.judge, "judge_model": a.judge.as_ref().map(|_| &a.judge_model),
        },
        "versions": {
            "ulm": env!("CARGO_PKG_VERSION"),
            "git_commit": sh("git", &["rev-parse", "HEAD"]),
        },
        "machine": {
            "uname": sh("uname", &["-a"]),
            "cpu": cpu,
            "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "loadavg": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_string()),
        },
        "rows": rows.len(),
    });
    std::fs::write(a.out.join("meta.json"), serde_json::to_string_pretty(&meta)?)?;
    Ok(())
}

/// Aggregates of one opener model × opener length.
#[derive(Clone, Debug, Default)]
pub struct Group {
    pub model: String,
    pub words: usize,
    pub scorer: String,
    pub params: u64,
    pub n: usize,
    pub mean_ll: Option<f64>,
    pub acceptance: Option<f64>,
    pub ttfw_ms: Option<f64>,
    pub opener_ms: Option<f64>,
    pub peak_rss: Option<u64>,
    pub handoffs: usize,
    pub modes: BTreeMap<String, usize>,
    pub repeats: usize,
    pub restarts: usize,
    pub cont_ll: Option<f64>,
    pub h_first_word_p50: Option<f64>,
    pub h_opener_done_p50: Option<f64>,
    pub h_cloud_first_token_p50: Option<f64>,
    pub h_first_cont_p50: Option<f64>,
    /// From the opener's end to the first continuation word (the gap if text is shown at once).
    pub wait_p50: Option<f64>,
    pub gap_p50: Option<f64>,
    pub gap_p90: Option<f64>,
    pub total_p50: Option<f64>,
    pub judge: Option<f64>,
    pub judged: usize,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Nearest-rank percentile.
fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    Some(s[i])
}

/// Groups rows by model × opener length (in first-seen order of models, ascending length).
/// Mean LL is the mean over prompts of each opener's mean per-token log-likelihood; acceptance
/// is token-weighted (accepted / scored tokens over all prompts).
pub fn summarize(rows: &[Row]) -> Vec<Group> {
    let mut order: Vec<(String, usize)> = Vec::new();
    for r in rows {
        let k = (r.model.clone(), r.words);
        if !order.contains(&k) {
            order.push(k);
        }
    }
    let mut models: Vec<String> = order.iter().map(|(m, _)| m.clone()).collect();
    models.dedup();
    order.sort_by_key(|(m, w)| (models.iter().position(|o| o == m).unwrap(), *w));
    order
        .into_iter()
        .map(|(m, w)| {
            let rs: Vec<&Row> = rows.iter().filter(|r| r.model == m && r.words == w).collect();
            let lls: Vec<f64> = rs.iter().filter_map(|r| r.mean_ll).collect();
            let tok: usize = rs.iter().map(|r| r.scored_tokens).sum();
            let acc: usize = rs.iter().map(|r| r.accepted).sum();
            let ok: Vec<&&Row> = rs.iter().filter(|r| r.error.is_none()).collect();
            let hs: Vec<&HandoffRow> = rs.iter().filter_map(|r| r.handoff.as_ref()).collect();
            let mut modes = BTreeMap::new();
            for h in &hs {
                *modes.entry(h.mode.clone().unwrap_or_else(|| "none".into())).or_insert(0) += 1;
            }
            let f = |g: fn(&HandoffRow) -> Option<f64>| hs.iter().filter_map(|h| g(h)).collect::<Vec<f64>>();
            let gaps = f(|h| h.gap_ms);
            let judges: Vec<f64> = rs.iter().filter_map(|r| r.judge).collect();
            let mut scorers: Vec<&str> = rs.iter().map(|r| r.scorer.as_str()).collect();
            scorers.dedup();
            Group {
                scorer: scorers.join("+"),
                params: rs[0].params,
                n: rs.len(),
                mean_ll: mean(&lls),
                acceptance: (tok > 0).then(|| acc as f64 / tok as f64),
                ttfw_ms: mean(&ok.iter().filter_map(|r| r.ttfw_ms).collect::<Vec<_>>()),
                opener_ms: mean(&ok.iter().map(|r| r.opener_ms).collect::<Vec<_>>()),
                peak_rss: rs.iter().filter_map(|r| r.peak_rss).max(),
                handoffs: hs.len(),
                repeats: hs.iter().filter(|h| h.repeats_opener).count(),
                restarts: hs.iter().filter(|h| h.restart).count(),
                modes,
                cont_ll: mean(&f(|h| h.cont_ll)),
                h_first_word_p50: pct(&f(|h| h.first_word_ms), 50.0),
                h_opener_done_p50: pct(&f(|h| h.opener_done_ms), 50.0),
                h_cloud_first_token_p50: pct(&f(|h| h.cloud_first_token_ms), 50.0),
                h_first_cont_p50: pct(&f(|h| h.first_continuation_word_ms), 50.0),
                wait_p50: pct(&f(|h| h.first_continuation_word_ms.zip(h.opener_done_ms).map(|(c, o)| c - o)), 50.0),
                gap_p50: pct(&gaps, 50.0),
                gap_p90: pct(&gaps, 90.0),
                total_p50: pct(&f(|h| Some(h.done_ms)), 50.0),
                judge: mean(&judges),
                judged: judges.len(),
                model: m,
                words: w,
            }
        })
        .collect()
}

/// A model's display name: the name given, or the file/folder name of a path.
fn short(m: &str) -> String {
    Path::new(m).file_name().map_or(m.to_string(), |n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
}

fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.prec$}"))
}

/// Writes report.md and the plots from the rows.
pub fn write_report(dir: &Path, rows: &[Row]) -> Result<()> {
    let groups = summarize(rows);
    let mut md = String::new();
    md += "# ulm eval report\n\nRecomputed from `per_prompt.jsonl` (`ulm eval --report-only --out DIR`); settings, model hashes and machine in `meta.json`.\n\n";
    md += "## Openers (plausibility under the scorer)\n\n";
    md += "Mean LL: mean over prompts of the opener's mean per-token log-likelihood (nats) under the scorer, given the prompt in the scorer's chat format. ";
    md += "Acceptance: share of opener tokens (scorer's tokenization) inside the scorer's top-k. TTFW: time to first word (prefill included). ";
    md += "Peak RSS: the process with only that edge model loaded, after one opener.\n\n";
    md += "| model | params | words | scorer | n | mean LL | acceptance | TTFW ms | opener ms | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for g in &groups {
        md += &format!(
            "| {} | {:.1}M | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            short(&g.model),
            g.params as f64 / 1e6,
            g.words,
            short(&g.scorer),
            g.n,
            f(g.mean_ll, 4),
            f(g.acceptance, 3),
            f(g.ttfw_ms, 1),
            f(g.opener_ms, 1),
            g.peak_rss.map_or("–".into(), |b| format!("{:.0}", b as f64 / 1048576.0)),
        );
    }
    md += "\n## Handoff (seamlessness and latency)\n\n";
    if groups.iter().all(|g| g.handoffs == 0) {
        md += "skipped: no continuator configured (`--cloud URL --provider NAME`).\n";
    } else {
        md += "Modes from the engine's classifier. Repeats: the continuation contains the opener's first 3 words again. ";
        md += "Restarts: the opener stopped mid-sentence and the continuation starts with a capitalized word. ";
        md += "Cont LL: the scorer's mean per-token log-likelihood of the first 8 continuation words given prompt + opener. Times in ms since the message (p50 unless said). Wait after opener: opener complete → first continuation word. \
Gap: opener *shown* → first continuation word, where the opener counts as shown once spoken at the handoff config's `words_per_second` (default 2.5; see meta.json), 0 when the cloud was in time.\n\n";
        md += "| model | words | n | fragment completion | clean continuation | self-repair pivot | none | repeats | restarts | cont LL | first word | cloud first token | wait after opener | gap p50 | gap p90 | total |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
        for g in groups.iter().filter(|g| g.handoffs > 0) {
            let share = |k: &str| format!("{:.2}", *g.modes.get(k).unwrap_or(&0) as f64 / g.handoffs as f64);
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |\n",
                short(&g.model),
                g.words,
                g.handoffs,
                share("fragment_completion"),
                share("clean_continuation"),
                share("self_repair_pivot"),
                share("none"),
                g.repeats as f64 / g.handoffs as f64,
                g.restarts as f64 / g.handoffs as f64,
                f(g.cont_ll, 4),
                f(g.h_first_word_p50, 0),
                f(g.h_cloud_first_token_p50, 0),
                f(g.wait_p50, 0),
                f(g.gap_p50, 0),
                f(g.gap_p90, 0),
                f(g.total_p50, 0),
            );
        }
    }
    md += "\n## LLM judge\n\n";
    if groups.iter().all(|g| g.judged == 0) {
        md += "skipped: no judge configured (`--judge URL --judge-model M`).\n";
    } else {
        let jm: Vec<String> = {
            let mut v: Vec<String> = rows.iter().filter_map(|r| r.judge_model.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        md += &format!("One overall 1–5 score per full reply (opener + continuation, or the opener alone without a cloud), judge: {}.\n\n", jm.join(", "));
        md += "| model | words | judged | mean score |\n|---|---|---|---|\n";
        for g in groups.iter().filter(|g| g.judged > 0) {
            md += &format!("| {} | {} | {} | {} |\n", short(&g.model), g.words, g.judged, f(g.judge, 3));
        }
    }
    md += "\n## Reference: the paper's published numbers (their judge, not ours)\n\n";
    md += "GPT-4o-judged overall score, single-turn dialogue QA, as published (REFERENCE.md §4). Not produced by this run and not comparable to the log-likelihoods above.\n\n";
    md += "| model (paper) | params | their GPT-4o judge score |\n|---|---|---|\n";
    for (n, p, s) in PAPER_POINTS {
        md += &format!("| {n} | {:.2}M | {s:.3} |\n", p / 1e6);
    }
    md += "\n## Plots\n\n";
    match plots::draw(dir, &groups) {
        Ok(files) => {
            for f in files {
                md += &format!("![{f}]({f})\n");
            }
        }
        Err(e) => md += &format!("not drawn: {e}\n"),
    }
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

/// PNG plots with plotters (bitmap backend; text in DejaVu Sans read from the system's fonts,
/// Debian `fonts-dejavu-core`).
mod plots {
    use std::path::Path;

    use anyhow::{Result, anyhow};
    use plotters::prelude::*;

    use super::{Group, PAPER_POINTS};

    type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    const FONTS: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];

    fn font() -> Result<()> {
        static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let ok = *ONCE.get_or_init(|| {
            let Some(bytes) = FONTS.iter().find_map(|p| std::fs::read(p).ok()) else { return false };
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        });
        if ok { Ok(()) } else { Err(anyhow!("no DejaVuSans.ttf found (install Debian fonts-dejavu-core)")) }
    }

    /// Draws the plots into `dir`; returns their file names.
    pub fn draw(dir: &Path, groups: &[Group]) -> Result<Vec<String>> {
        font()?;
        let mut files = Vec::new();
        quality(&dir.join("quality_vs_params.png"), groups).map_err(|e| anyhow!("quality plot: {e}"))?;
        files.push("quality_vs_params.png".to_string());
        if groups.iter().any(|g| g.handoffs > 0) {
            modes(&dir.join("recovery_modes.png"), groups).map_err(|e| anyhow!("modes plot: {e}"))?;
            files.push("recovery_modes.png".to_string());
        }
        latency(&dir.join("latency.png"), groups).map_err(|e| anyhow!("latency plot: {e}"))?;
        files.push("latency.png".to_string());
        Ok(files)
    }

    fn label(g: &Group) -> String {
        format!("{} @{}w", super::short(&g.model), g.words)
    }

    const COLORS: &[RGBColor] = &[RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];

    fn quality(path: &Path, groups: &[Group]) -> Res<()> {
        let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        let pts: Vec<(f64, f64, String)> = groups.iter().filter_map(|g| g.mean_ll.map(|ll| ((g.params as f64).max(1.0), ll, label(g)))).collect();
        let xmin = pts.iter().map(|p| p.0).chain([5e6]).fold(f64::INFINITY, f64::min) / 2.0;
        let xmax = pts.iter().map(|p| p.0).chain([2e8]).fold(0.0, f64::max) * 2.0;
        let ymin = pts.iter().map(|p| p.1).fold(0.0, f64::min) - 0.5;
        let mut c = ChartBuilder::on(&left)
            .caption("Ours: opener mean LL under the scorer", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((xmin..xmax).log_scale(), ymin..0.0)?;
        c.configure_mesh().x_desc("parameters (log)").y_desc("mean log-likelihood per token (nats)").x_label_formatter(&|x| if *x < 1e6 { format!("{:.1}M", x / 1e6) } else { format!("{:.0}M", x / 1e6) }).draw()?;
        for (i, (x, y, l)) in pts.iter().enumerate() {
            let col = COLORS[i % COLORS.len()];
            c.draw_series(std::iter::once(Circle::new((*x, *y), 6, col.filled())))?;
            c.draw_series(std::iter::once(Text::new(l.clone(), (*x, *y), ("sans-serif", 13).into_font().color(&col))))?;
        }
        let mut c = ChartBuilder::on(&right)
            .caption("Reference: the paper's GPT-4o judge (theirs)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(45)
            .build_cartesian_2d((5e6f64..3e8).log_scale(), 1.0f64..5.0)?;
        c.configure_mesh().x_desc("parameters (log)").y_desc("judge score 1-5 (published)").x_label_formatter(&|x| if *x < 1e6 { format!("{:.1}M", x / 1e6) } else { format!("{:.0}M", x / 1e6) }).draw()?;
        for (n, p, s) in PAPER_POINTS {
            c.draw_series(std::iter::once(TriangleMarker::new((*p, *s), 7, BLACK.filled())))?;
            c.draw_series(std::iter::once(Text::new(n.replace("μ", "u"), (*p, *s + 0.08), ("sans-serif", 12).into_font())))?;
        }
        root.present()?;
        Ok(())
    }

    fn modes(path: &Path, groups: &[Group]) -> Res<()> {
        let gs: Vec<&Group> = groups.iter().filter(|g| g.handoffs > 0).collect();
        let keys = ["fragment_completion", "clean_continuation", "self_repair_pivot", "none"];
        let root = BitMapBackend::new(path, (900, 450)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .caption("Recovery-mode shares per opener model and length", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..gs.len() as f64, 0f64..1.0)?;
        let names: Vec<String> = gs.iter().map(|g| label(g)).collect();
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(gs.len().max(1) * 2 + 1)
            .x_label_formatter(&|x| {
                let i = (*x - 0.5).round();
                if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 { names.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
            })
            .y_desc("share of replies")
            .draw()?;
        for (k, key) in keys.iter().enumerate() {
            let col = COLORS[k % COLORS.len()];
            let w = 0.8 / keys.len() as f64;
            c.draw_series(gs.iter().enumerate().map(|(i, g)| {
                let share = *g.modes.get(*key).unwrap_or(&0) as f64 / g.handoffs as f64;
                let x0 = i as f64 + 0.1 + k as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w * 0.9, share)], col.filled())
            }))?
            .label(key.replace('_', " "))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], col.filled()));
        }
        c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperRight).draw()?;
        root.present()?;
        Ok(())
    }

    fn latency(path: &Path, groups: &[Group]) -> Res<()> {
        // One bar per group: segments between the p50 milestones.
        // (label, [(from ms, to ms, segment kind)])
        type Bar = (String, Vec<(f64, f64, usize)>);
        let rows: Vec<Bar> = groups
            .iter()
            .map(|g| {
                let mut seg = Vec::new();
                if g.handoffs > 0 {
                    let ms = [Some(0.0), g.h_first_word_p50, g.h_opener_done_p50, g.h_first_cont_p50, g.total_p50];
                    for i in 0..4 {
                        if let (Some(a), Some(b)) = (ms[i], ms[i + 1]) {
                            seg.push((a, b.max(a), i));
                        }
                    }
                } else if let Some(t) = g.ttfw_ms {
                    seg.push((0.0, t, 0));
                    if let Some(o) = g.opener_ms {
                        seg.push((t, o.max(t), 1));
                    }
                }
                (label(g), seg)
            })
            .collect();
        let xmax = rows.iter().flat_map(|r| r.1.iter().map(|s| s.1)).fold(1.0, f64::max) * 1.45;
        let root = BitMapBackend::new(path, (900, 120 + 50 * rows.len() as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .caption("Latency timeline (p50 milestones, ms)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(150)
            .build_cartesian_2d(0f64..xmax, 0f64..rows.len() as f64)?;
        let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len() * 2 + 1)
            .y_label_formatter(&|y| {
                let i = (*y - 0.5).round();
                if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 { names.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
            })
            .x_desc("ms since the message")
            .draw()?;
        let seg_names = ["to first word", "opener", "gap / cloud wait", "continuation"];
        for (k, name) in seg_names.iter().enumerate() {
            let col = COLORS[k % COLORS.len()];
            let bars: Vec<Rectangle<(f64, f64)>> = rows
                .iter()
                .enumerate()
                .flat_map(|(i, r)| r.1.iter().filter(|s| s.2 == k).map(move |s| Rectangle::new([(s.0, i as f64 + 0.2), (s.1, i as f64 + 0.8)], col.filled())))
                .collect();
            c.draw_series(bars)?.label(*name).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], col.filled()));
        }
        c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::LowerRight).draw()?;
        root.present()?;
        Ok(())
    }
}
