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

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use ulm_handoff::{Config, Handoff, Overrides, ProviderKind, Turn};
use ulm_eval::{HandoffRow, Row, first_words, names_topic, opener as opener_of, params, read_rows, score, seed_of, sha256_file, write_report};
use ulm_runtime::Session;
use ulm_runtime::generate::LoadedModel;
use ulm_runtime::sampler::Sampling;
use ulm_server::local_opener::LocalOpener;

use crate::models;

#[derive(clap::Args)]
pub struct Args {
    /// Prompt set (JSONL with `prompt` or `text`, optional `id`, `source`, `category`; `ulm
    /// distill --print-prompts` writes one).
    #[arg(long, default_value = "data/eval/dev.jsonl")]
    pub prompts: PathBuf,
    /// Report directory (per_prompt.jsonl, report.md, meta.json, plots).
    #[arg(long, default_value = "runs/eval")]
    pub out: PathBuf,
    /// Opener models, comma-separated: names (smollm2, ulm-8m, ulm-15m, ulm-30m) or paths.
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
    /// Copy boost of the openers (logit added to the question's content words, see
    /// ulm_runtime::copy; 0: the model alone; default: each model's generation_config.json, 1
    /// for the shipped μLMs, 0 for the others). Each row records the value it ran with.
    #[arg(long)]
    pub copy_boost: Option<f32>,
    /// Openers sampled per prompt, the best kept (ulm_runtime::generate::Candidates; default:
    /// each model's generation_config.json, 1 without one). Each row records it.
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Weight of the question-free probability when choosing among candidates
    /// (ulm_runtime::generate::Candidates::pmi; 0: the model's probability alone; default: each
    /// model's generation_config.json). Each row records it.
    #[arg(long, value_parser = crate::generate::parse_pmi, allow_negative_numbers = true)]
    pub pmi: Option<f32>,
    /// Record every candidate of the best-of choice in each row (`rivals`: text, fit, the
    /// model's log-probabilities, the question-free one when pmi scored it, which was chosen,
    /// and the scorer's mean log-likelihood after the question and after an empty one): the
    /// material for studying how the choice should rank (scripts/rival_study.py).
    #[arg(long)]
    pub keep_candidates: bool,
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
    /// Also read as `text`, the name `ulm distill --print-prompts` gives it.
    #[serde(alias = "text")]
    prompt: String,
}

pub fn run(a: Args) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let rows_path = a.out.join("per_prompt.jsonl");
    if a.report_only {
        let rows = read_rows(&rows_path);
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
    let before = read_rows(&rows_path);
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
    if let Some(url) = &a.cloud {
        handoff(&a, url, a.words[0], 0)?; // a bad provider or config fails now, not per row
    }
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
            opener_of(&lm, &mut s, &p.prompt, max_words, seed_of(a.seed, &p.id), lm.defaults.copy_boost_or(a.copy_boost), lm.defaults.candidates_or(a.candidates), lm.defaults.pmi_or(a.pmi))?;
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
        let copy_boost = lm.defaults.copy_boost_or(a.copy_boost);
        let candidates = lm.defaults.candidates_or(a.candidates);
        let pmi = lm.defaults.pmi_or(a.pmi);
        eprintln!("{m}: copy boost {copy_boost}, best of {candidates}, pmi {pmi}");
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
                    copy_boost: Some(copy_boost),
                    candidates: Some(candidates),
                    pmi: Some(pmi),
                    ..Row::default()
                };
                match opener_of(&lm, &mut s, &p.prompt, w, seed, copy_boost, candidates, pmi) {
                    Ok(o) => {
                        row.names_topic = Some(names_topic(&p.prompt, &o.text));
                        row.opener = o.text;
                        if a.keep_candidates && !o.rivals.is_empty() {
                            let mut rivals = o.rivals;
                            for r in &mut rivals {
                                let mean = |s: ulm_eval::Score| (s.tokens > 0).then(|| s.ll_sum / s.tokens as f64);
                                r.scorer_ll = score(sc, ss, &p.prompt, "", &r.text, a.top_k).ok().and_then(mean);
                                r.scorer_prior = score(sc, ss, "", "", &r.text, a.top_k).ok().and_then(mean);
                            }
                            row.rivals = Some(rivals);
                        }
                        row.opener_tokens = o.tokens;
                        row.ttfw_ms = o.ttfw_ms;
                        row.opener_ms = o.ms;
                        // The pre-handoff guard's decision at its default threshold, recorded
                        // with the guard off so the handoff below is not changed by it.
                        let guard = Config::new(ProviderKind::Prefill, "").guard;
                        row.guard_confidence = o.confidence.map(f64::from);
                        row.guard_min_confidence = Some(f64::from(guard.min_confidence));
                        row.guard_fires = o.confidence.is_some().then(|| guard.fires(o.confidence));
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
                if let Some(url) = &a.cloud {
                    // One engine per row: the cloud's sampling seed follows the prompt's.
                    let h = handoff(&a, url, w, seed)?;
                    let mut opener = LocalOpener::new(lm.clone()).sampling(Sampling { seed, ..Sampling::default() });
                    let reply = rt.block_on(h.run(&mut opener, &[Turn::user(&p.prompt)], |_| {}));
                    let mut hr = HandoffRow::from_reply(&reply);
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
                    // A reply the judge cannot score is recorded as such (judge_error), never
                    // dropped and never given a number.
                    let reply = row.handoff.as_ref().map_or(row.opener.clone(), |h| format!("{}{}", h.opener, h.continuation));
                    row.judge_model = Some(a.judge_model.clone());
                    let verdict = if reply.trim().is_empty() {
                        Err(anyhow::anyhow!("no reply to judge ({})", row.error.as_deref().unwrap_or("empty opener")))
                    } else {
                        rt.block_on(judge(&http, url, &a.judge_model, a.judge_key_env.as_deref(), &p.prompt, &reply))
                    };
                    match verdict {
                        Ok(j) => row.judge = Some(j),
                        Err(e) => {
                            eprintln!("judge could not score {}: {e:#}", p.id);
                            row.judge_error = Some(format!("{e:#}"));
                        }
                    }
                }
                writeln!(out, "{}", serde_json::to_string(&row)?)?;
                out.flush()?;
                written += 1;
            }
        }
    }
    eprintln!("{written} new rows in {}", rows_path.display());
    let rows = read_rows(&rows_path);
    write_meta(&a, &rows)?;
    write_report(&a.out, &rows)?;
    eprintln!("report: {}", a.out.join("report.md").display());
    Ok(())
}

fn handoff(a: &Args, url: &str, words: usize, seed: u64) -> Result<Handoff> {
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
    // JSON-safe and positive: the low 31 bits.
    cfg.seed = Some((seed & 0x7fff_ffff) as i64);
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

/// Resets the kernel's peak-RSS mark (VmHWM) of this process; false where it cannot.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
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
    let res = req.send().await?;
    let status = res.status();
    if !status.is_success() {
        let body: String = res.text().await.unwrap_or_default().chars().take(200).collect();
        bail!("the judge answered HTTP {}: {body}", status.as_u16());
    }
    let v: serde_json::Value = res.json().await?;
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    judge_score(text).with_context(|| format!("no 1-5 score in the judge's answer {text:?}"))
}

/// The score in a judge's answer: its first number, if that is within 1..=5. "4", "4/5",
/// "Score: 3." and "4.5" give a score; "7/10", "0" or no number give none (a "10" is never read
/// as its first digit).
fn judge_score(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let mut end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    // One decimal part, if a digit follows the point.
    if rest[end..].starts_with('.') && rest[end + 1..].starts_with(|c: char| c.is_ascii_digit()) {
        end += 1 + rest[end + 1..].find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len() - end - 1);
    }
    let x: f64 = rest[..end].parse().ok()?;
    (1.0..=5.0).contains(&x).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::judge_score;

    #[test]
    fn judge_scores_are_read_only_within_1_to_5() {
        for (text, want) in [("4", Some(4.0)), ("4/5", Some(4.0)), ("Score: 3.", Some(3.0)), (" 4.5 out of 5", Some(4.5)), ("5", Some(5.0)), ("1", Some(1.0))] {
            assert_eq!(judge_score(text), want, "{text:?}");
        }
        for text in ["7/10", "10", "0", "", "excellent", "Score: 6", "100%"] {
            assert_eq!(judge_score(text), None, "{text:?}");
        }
    }
}

/// sha256 of a model's files (the GGUF file, or the folder's weights, config and tokenizer).
fn model_hashes(name: &str) -> serde_json::Value {
    let Ok(path) = models::resolve(Some(name)) else { return serde_json::json!({"error": "not found"}) };
    let files: Vec<PathBuf> = if path.is_file() {
        vec![path.clone()]
    } else {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        // The weights (one file or every shard with its index), config and tokenizer.
        names.retain(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json") || ["config.json", "tokenizer.json", "tokenizer_config.json"].contains(&n.as_ref())
        });
        names.sort();
        names
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
            "sampling": {"temperature": 0.5, "top_p": 0.9, "seed": "base seed xor fnv1a64(prompt id)", "copy_boost": a.copy_boost.map_or_else(|| serde_json::json!("each model's default (per row)"), |c| serde_json::json!(c)), "candidates": a.candidates.map_or_else(|| serde_json::json!("each model's default (per row)"), |c| serde_json::json!(c)), "pmi": a.pmi.map_or_else(|| serde_json::json!("each model's default (per row)"), |c| serde_json::json!(c))},
            "cloud": a.cloud, "provider": a.provider, "cloud_model": a.cloud_model, "cloud_max_tokens": a.cloud_max_tokens, "cloud_seed": a.cloud.as_ref().map(|_| "prompt seed & 0x7fffffff"),
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

