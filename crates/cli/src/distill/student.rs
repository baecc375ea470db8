//! `ulm distill --student`: on-policy distillation. The μLM writes several openers to each
//! prompt, the teacher (as a scorer) reads them, and the one it finds most likely — among those
//! that name the question's topic and do not repeat themselves — is stored as a record like a
//! teacher reply. Training on these moves the μLM towards what the teacher would say *within
//! what the μLM can already say*, which supervised replies of the teacher (often out of a small
//! model's reach) do not.
//!
//! ```text
//! ulm distill --student models/ulm-8m --scorer smollm2 --candidates 8 --corpus corpus/student --shard 0/2 --out runs/distill/student-0.jsonl &
//! ulm distill --student models/ulm-8m --scorer smollm2 --candidates 8 --corpus corpus/student --shard 1/2 --out runs/distill/student-1.jsonl &
//! ulm distill --pack --corpus corpus/student --out runs/distill/student-0.jsonl   # then the same for -1
//! ```
//! One process per core (each runs single-threaded); records are appended and flushed one by
//! one, and a restart skips the prompts already done in its working file or in `--corpus`, as
//! with a teacher server: give the student's own folder, or every prompt is asked again.

use std::collections::HashSet;
use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ulm_data::distilled::STUDENT_SUFFIX;
use ulm_data::pref::Candidate;
use ulm_data::prompts::Prompt;
use ulm_eval::score;
use ulm_runtime::copy::CopyBoost;
use ulm_runtime::generate::{Fit, GenerateOptions, LoadedModel, StopReason, generate};
use ulm_runtime::sampler::Sampling;
use ulm_runtime::{Precision, Session};

use super::{Args, Record, end_with_newline, read_records};
use crate::models;

/// Which of `n` shards a prompt falls in: `K/N`.
pub fn parse_shard(s: &str) -> Result<(u64, u64)> {
    let (k, n) = s.split_once('/').context("--shard wants K/N, e.g. 0/2")?;
    let (k, n): (u64, u64) = (k.trim().parse().context("--shard K/N: K is not a number")?, n.trim().parse().context("--shard K/N: N is not a number")?);
    if n == 0 || k >= n {
        bail!("--shard {s}: K must be below N (0/2 and 1/2 split the prompts in two)");
    }
    Ok((k, n))
}

/// One scored candidate.
#[derive(Clone, Debug)]
struct Scored {
    text: String,
    finish: &'static str,
    seed: u64,
    /// The scorer's mean per-token log-likelihood.
    ll: f64,
    rank: (bool, bool),
}

pub fn run(a: Args, prompts: Vec<Prompt>, student: &str) -> Result<()> {
    let shard = a.shard.as_deref().map(parse_shard).transpose()?.unwrap_or((0, 1));
    let records = read_records(&a.corpus, &a.out)?;
    let done: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let mut todo: Vec<Prompt> = prompts
        .into_iter()
        .filter(|p| ulm_data::split::fnv1a(p.id.as_bytes()) % shard.1 == shard.0)
        .map(|p| Prompt { id: format!("{}{STUDENT_SUFFIX}", p.id), ..p })
        .filter(|p| !done.contains(p.id.as_str()))
        .collect();
    if let Some(src) = &a.prefer {
        todo.sort_by_key(|p| !super::preferred(p, src));
    }
    todo.truncate(a.limit.unwrap_or(usize::MAX));

    let lm = LoadedModel::open(&models::resolve(Some(student))?, Precision::Int8, Some(512))?;
    let sc = LoadedModel::open(&models::resolve(Some(&a.scorer))?, Precision::Native, Some(512))?;
    let (mut s, mut ss) = (Session::new(&lm.model), Session::new(&sc.model));
    let boost = lm.defaults.copy_boost_or(a.copy_boost);
    let name = format!("{} best of {} by {}", student.trim_end_matches('/'), a.candidates, a.scorer);
    eprintln!("{} prompts to go (shard {}/{}), {name}, copy boost {boost}, openers of {} words", todo.len(), shard.0, shard.1, a.words);
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&a.out).with_context(|| format!("{}", a.out.display()))?;
    end_with_newline(&mut out)?;
    let mut bar = super::Progress::new(todo.len() as u64);
    let start = Instant::now();
    let (mut scored_n, mut kept_n, mut ll_sum) = (0usize, 0usize, 0.0f64);
    for p in todo {
        let t0 = Instant::now();
        let base = ulm_data::split::fnv1a(p.id.as_bytes()) & 0x7fff_ffff;
        let copy = CopyBoost::optional(&lm.tokenizer, &p.text, boost)?;
        let ids = lm.chat_prompt(&p.text)?;
        let mut seen: Vec<Scored> = Vec::new();
        let mut n_tokens = 0;
        for k in 0..a.candidates as u64 {
            let seed = base + k;
            let opts = GenerateOptions {
                max_tokens: a.words * 6 + 8,
                words: Some(a.words),
                sampling: Sampling { seed, temperature: a.temperature, top_p: a.top_p, ..Sampling::default() },
                copy: copy.clone(),
                candidates: None,
            };
            let g = generate(&lm, &mut s, &ids, &opts, &mut |_| true)?;
            n_tokens += g.tokens.len() as u32;
            let text = g.text.trim().to_string();
            if text.is_empty() || seen.iter().any(|c| c.text == text) {
                continue; // the scorer would say the same again
            }
            let sco = score(&sc, &mut ss, &p.text, "", &text, 10)?;
            scored_n += 1;
            let finish = if g.stop == StopReason::EndOfTurn { "stop" } else { "length" };
            let rank = Fit::of(&p.text, &text).rank();
            seen.push(Scored { text, finish, seed, ll: sco.ll_sum / sco.tokens.max(1) as f64, rank });
        }
        // Best first: not looping, then naming the topic, then the scorer's mean LL.
        seen.sort_by(|x, y| (y.rank, y.ll).partial_cmp(&(x.rank, x.ll)).unwrap_or(std::cmp::Ordering::Equal));
        let candidates: Vec<Candidate> = seen
            .iter()
            .map(|c| Candidate { text: c.text.clone(), ll: round4(c.ll), topic: c.rank.1, loops: !c.rank.0 })
            .collect();
        let best = seen.into_iter().next();
        // A prompt whose best opener the scorer finds implausible is stored with an empty reply:
        // done (a restart does not ask it again), and dropped by `ulm data` as empty.
        let (reply, finish, seed, ll) = match best {
            Some(b) if b.ll >= a.min_ll => (b.text, b.finish, b.seed, Some(b.ll)),
            Some(b) => (String::new(), "length", b.seed, Some(b.ll)),
            None => (String::new(), "length", base, None),
        };
        if !reply.is_empty() {
            kept_n += 1;
            ll_sum += ll.unwrap_or(0.0);
        }
        let rec = Record {
            id: p.id,
            source: p.source,
            prompt: p.text,
            reply,
            finish: finish.into(),
            teacher: name.clone(),
            temperature: a.temperature,
            top_p: a.top_p,
            max_tokens: (a.words * 6 + 8) as u32,
            seed,
            n_tokens,
            ms: t0.elapsed().as_millis() as u64,
            system: None,
            tries: Some(a.candidates),
            scorer_ll: ll.map(round4),
            candidates,
        };
        out.write_all((serde_json::to_string(&rec)? + "\n").as_bytes())?;
        out.flush()?;
        bar.set_message(format!(
            "{:.1} openers scored/s, kept {kept_n}, mean LL {:.3}",
            scored_n as f64 / start.elapsed().as_secs_f64(),
            ll_sum / kept_n.max(1) as f64
        ));
        bar.inc();
    }
    bar.finish();
    eprintln!("{scored_n} openers scored, {kept_n} kept (mean LL {:.3}) in {:.1} s", ll_sum / kept_n.max(1) as f64, start.elapsed().as_secs_f64());
    Ok(())
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_reject_nonsense() {
        assert_eq!(parse_shard("1/2").unwrap(), (1, 2));
        assert_eq!(parse_shard("0/1").unwrap(), (0, 1));
        for bad in ["2/2", "1", "a/2", "0/0"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
