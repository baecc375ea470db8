//! `ulm distill --invent N`: a base model (Gemma 3 270M behind llama.cpp's server) continues
//! numbered lists of example requests, and the new requests it writes become prompts that
//! `ulm distill --requests FILE` asks the teacher (`ulm_data::invent`).
//!
//! ```text
//! assets/venv/bin/python scripts/llama_server.py --model assets/models/gemma-3-270m-q4_k_m.gguf --port 8091 --parallel 4 &
//! ulm distill --invent 6000 --writer http://127.0.0.1:8091 --requests runs/distill/invented.jsonl
//! ulm distill --requests runs/distill/invented.jsonl --prefer invented --teacher http://127.0.0.1:8090 --out runs/distill/invented-replies.jsonl
//! ```
//! Each list shows three of our own requests (`SEED_REQUESTS`) and five training prompts (never
//! held-out ones, never chitchat small talk); whatever the writer adds is parsed, deduplicated
//! against every request so far, and dropped if it is close to a held-out or MT-Bench prompt.
//! With `--invent-style tasks` the lists are of many-part tasks instead: five of ours
//! (`SEED_TASKS`) and three of the training tasks, and the writer's are kept at 12–90 words.
//! With `--invent-style passages` they are of tasks that hand over their material (a paragraph,
//! a list, figures, code): seven of ours (`SEED_PASSAGES`) and one training task; the writer's
//! are kept at 20–160 words when five or more of them follow a colon or sit in quotes.
//! Append-only and resumable: a restart counts what the file holds.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use ulm_data::invent::{Guard, Style, norm, styled_examples, styled_list_prompt, styled_parse_list};
use ulm_data::prompts::Prompt;
use ulm_data::sources;

/// Source name of invented requests (ids `invented:<hash>`).
pub const SOURCE: &str = "invented";

/// Requests stored in `path`, plain or gzipped (`.gz`); none if it does not exist, and a torn
/// last line is skipped.
pub fn read_requests(path: &Path) -> Result<Vec<Prompt>> {
    let Ok(f) = std::fs::File::open(path) else { return Ok(Vec::new()) };
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") { Box::new(flate2::read::GzDecoder::new(f)) } else { Box::new(f) };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(reader).lines() {
        if let Ok(p) = serde_json::from_str::<Prompt>(&line?) {
            out.push(p);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    text: String,
}

/// Writes requests into `out` until it holds `want`.
pub fn run(writer: &str, style: Style, want: usize, out: &Path, train: &[Prompt], heldout: &[String], concurrency: usize) -> Result<()> {
    if out.extension().is_some_and(|e| e == "gz") {
        bail!("{}: --invent appends to a plain JSON-lines file; give one without .gz and compress it when done", out.display());
    }
    let mut have = read_requests(out)?;
    let mut seen: HashSet<String> = have.iter().map(|p| norm(&p.text)).collect();
    seen.extend(train.iter().map(|p| norm(&p.text)));
    let guard = Guard::new(heldout);
    // Near-repeats: the writer often goes on with variations of a request it just wrote, or of
    // an example; with tasks (long enough for content words to tell them apart) those are
    // dropped as repeats too, not only the same text.
    let mut near = (style != Style::Questions).then(|| {
        let mut g = Guard::new(style.seeds());
        have.iter().for_each(|p| g.add(&p.text));
        g
    });
    // Examples: training prompts that read as requests of the style, not small talk; tasks from
    // the task templates only (not trivia or sums, which are long questions, not tasks).
    let pool: Vec<&str> = train
        .iter()
        .filter(|p| p.source != "chitchat" && style.pool_style().reads(&p.text) && (style == Style::Questions || p.id.starts_with(ulm_data::build::TASK_PREFIX)))
        .map(|p| p.text.as_str())
        .collect();
    if pool.len() < 5 {
        bail!("only {} training prompts read as {style:?}; run scripts/fetch-assets.sh", pool.len());
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out).with_context(|| format!("{}", out.display()))?;
    let start_n = have.len();
    eprintln!("{start_n} requests in {}, writing up to {want} ({style:?}) with {writer}", out.display());
    let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(300)).build()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let start = Instant::now();
    let (mut calls, mut dropped_leak, mut dropped_seen, mut failures) = (have.len() as u64 * 7919, 0usize, 0usize, 0usize);
    let mut bar = super::Progress::new(want.saturating_sub(start_n) as u64);
    let mut barren = 0; // rounds in a row that added nothing
    while have.len() < want {
        if barren == 25 {
            bail!("the writer at {writer} added no usable request in 25 rounds of {concurrency} lists; it should be a base model that continues a numbered list (Gemma 3 270M)");
        }
        let before = have.len();
        // One round of `concurrency` lists, each with its own seed (resumable: seeds go on from
        // the count in the file, so a restart does not ask the same lists again).
        let round: Vec<(u64, String)> = (0..concurrency as u64)
            .map(|k| (calls + k, styled_list_prompt(style, &styled_examples(style, calls + k, &pool))))
            .collect();
        calls += concurrency as u64;
        let answers: Vec<Result<String>> = rt.block_on(
            futures_util::stream::iter(round.iter().map(|(seed, prompt)| {
                let body = serde_json::json!({"prompt": prompt, "max_tokens": style.list_tokens(), "temperature": 1.0, "top_p": 0.95, "seed": seed, "stop": ["\n\n"]});
                let (client, url) = (client.clone(), format!("{}/v1/completions", writer.trim_end_matches('/')));
                async move {
                    let r = client.post(&url).json(&body).send().await?.error_for_status()?;
                    let c: Completion = r.json().await?;
                    Ok(c.choices.into_iter().next().map(|c| c.text).unwrap_or_default())
                }
            }))
            .buffer_unordered(concurrency)
            .collect(),
        );
        for a in answers {
            let text = match a {
                Ok(t) => t,
                Err(e) => {
                    failures += 1;
                    bar.println(format!("skipped: {e:#}"));
                    if failures > 20 {
                        bail!("more than 20 requests to {writer} failed; is the writer's server up?");
                    }
                    continue;
                }
            };
            for r in styled_parse_list(style, &text, 9) {
                if guard.leaks(&r) {
                    dropped_leak += 1;
                    continue;
                }
                if near.as_ref().is_some_and(|g| g.leaks(&r)) || !seen.insert(norm(&r)) {
                    dropped_seen += 1;
                    continue;
                }
                if let Some(g) = near.as_mut() {
                    g.add(&r);
                }
                let p = Prompt { id: format!("{SOURCE}:{:016x}", ulm_data::split::fnv1a(norm(&r).as_bytes())), source: SOURCE.into(), text: r };
                file.write_all((serde_json::to_string(&p)? + "\n").as_bytes())?;
                have.push(p);
                bar.inc();
            }
        }
        file.flush()?;
        barren = if have.len() == before { barren + 1 } else { 0 };
        bar.set_message(format!("{:.1} requests/s, {dropped_seen} repeats and {dropped_leak} near held-out prompts dropped", (have.len() - start_n) as f64 / start.elapsed().as_secs_f64()));
    }
    bar.finish();
    eprintln!("{} new requests in {:.0} s ({dropped_seen} repeats, {dropped_leak} too close to a held-out prompt dropped)", have.len() - start_n, start.elapsed().as_secs_f64());
    Ok(())
}

/// Every held-out prompt text the guard keeps invented requests away from: MT-Bench's turns and
/// the held-out split's prompts.
pub fn heldout_texts(assets: &Path, heldout: &[Prompt]) -> Result<Vec<String>> {
    let mut out: Vec<String> = heldout.iter().map(|p| p.text.clone()).collect();
    for q in sources::mtbench(&assets.join("data/mt_bench_questions.jsonl"))? {
        out.extend(q.turns);
    }
    Ok(out)
}
