//! Aggregates per opener model × length, `report.md` and the plots, all from the rows.

use std::collections::BTreeMap;
use std::path::Path;

use ulm_handoff::recovery;

use crate::plots;
use crate::{EvalError, HandoffRow, Row, repeats_opener};

/// Recovery-mode keys of the report, in table order (`none`: no continuation).
pub const MODES: &[&str] = &["fragment_completion", "clean_continuation", "self_repair_pivot", "restart", "none"];

/// The breakdown group of a row: MT-Bench prompts by their category (writing, roleplay, ...),
/// every other source as one group (chitchat, chatterbot), `–` when the row names neither.
pub fn category_of(r: &Row) -> String {
    let label = if r.source == "mtbench" || r.source.is_empty() { &r.category } else { &r.source };
    if label.is_empty() { "–".into() } else { label.clone() }
}

/// The seam labels of a handoff row, recomputed from its texts with the current classifier
/// (`ulm_handoff::recovery`): (mode, repeats the opener, restarts). A report rewritten after a
/// classifier fix so uses the fix; the labels the run saw stay in per_prompt.jsonl.
pub fn seam_labels(h: &HandoffRow) -> (String, bool, bool) {
    let mode = match &h.mode {
        Some(_) => recovery::classify(&h.opener, &h.continuation).as_str().to_string(),
        None => "none".to_string(),
    };
    (mode, repeats_opener(&h.opener, &h.continuation), recovery::restarts(&h.opener, &h.continuation))
}

/// The paper's published GPT-4o judge scores (REFERENCE.md §4): *their* judge, not ours.
pub const PAPER_POINTS: &[(&str, f64, f64)] = &[
    ("μLM 8.8M", 8.8e6, 2.378),
    ("μLM 14.43M", 14.43e6, 2.685),
    ("μLM 28.85M", 28.85e6, 3.044),
    ("SmolLM2-135M-Instruct", 135e6, 3.373),
    ("LaMini-Neo-125M", 125e6, 1.874),
];


/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
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

/// Aggregates of one opener model × opener length.
#[derive(Clone, Debug, Default)]
pub struct Group {
    /// Opener model as given.
    pub model: String,
    /// Opener length in words.
    pub words: usize,
    /// Scorer(s) of the rows.
    pub scorer: String,
    /// Parameter count.
    pub params: u64,
    /// Rows.
    pub n: usize,
    /// Mean over prompts of the opener's mean per-token log-likelihood.
    pub mean_ll: Option<f64>,
    /// Token-weighted top-k acceptance.
    pub acceptance: Option<f64>,
    /// Mean time to first word, ms.
    pub ttfw_ms: Option<f64>,
    /// Mean opener time, ms.
    pub opener_ms: Option<f64>,
    /// Peak RSS with only the edge model loaded (bytes).
    pub peak_rss: Option<u64>,
    /// Rows with a handoff.
    pub handoffs: usize,
    /// Handoff rows per recovery mode (`none` without a continuation).
    pub modes: BTreeMap<String, usize>,
    /// Handoffs whose continuation repeats the opener's first 3 words.
    pub repeats: usize,
    /// Handoffs whose continuation restarts the sentence.
    pub restarts: usize,
    /// Mean continuation log-likelihood (first 8 words) under the scorer.
    pub cont_ll: Option<f64>,
    /// Handoff first word, p50 ms.
    pub h_first_word_p50: Option<f64>,
    /// Handoff opener complete, p50 ms.
    pub h_opener_done_p50: Option<f64>,
    /// First continuation piece, p50 ms.
    pub h_cloud_first_token_p50: Option<f64>,
    /// First continuation word shown, p50 ms.
    pub h_first_cont_p50: Option<f64>,
    /// From the opener's end to the first continuation word (the gap if text is shown at once).
    pub wait_p50: Option<f64>,
    /// Gap p50 ms.
    pub gap_p50: Option<f64>,
    /// Gap p90 ms.
    pub gap_p90: Option<f64>,
    /// Reply complete, p50 ms.
    pub total_p50: Option<f64>,
    /// Mean judge score.
    pub judge: Option<f64>,
    /// Rows with a judge score.
    pub judged: usize,
    /// Rows the judge was asked about but gave no score for (`judge_error`).
    pub judge_unscored: usize,
    /// Rows with a recorded guard confidence.
    pub guard_scored: usize,
    /// Of those, rows where the guard would fire.
    pub guard_fires: usize,
    /// Mean guard confidence.
    pub guard_confidence: Option<f64>,
    /// The guard thresholds of the rows (one, unless rows from different runs are mixed).
    pub guard_min_confidence: Vec<f64>,
    /// Openers (without errors) that repeat a word trigram of their own ([`opener_repeats_itself`]).
    pub self_repeats: usize,
    /// Openers (without errors) with a word that runs on ([`ulm_runtime::generate::runs_on`]:
    /// "non-re-re-re-re"), a loop the trigram count cannot see.
    pub runs_on: usize,
    /// Share of openers with a recorded [`ulm_runtime::copy::names_topic`] that name the prompt's topic.
    pub names_topic: Option<f64>,
}

/// True if `opener` says the same three words twice (case and punctuation ignored): the
/// repetition that sets in when openers grow to 16 words (REFERENCE.md §4).
///
/// ```
/// use ulm_eval::opener_repeats_itself;
/// assert!(opener_repeats_itself("I am not sure. I am not sure what you mean"));
/// assert!(!opener_repeats_itself("The capital of France is Paris, a city on the Seine"));
/// ```
pub fn opener_repeats_itself(opener: &str) -> bool {
    let words: Vec<String> = opener
        .split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect();
    let mut seen = std::collections::HashSet::new();
    words.windows(3).any(|t| !seen.insert(t.to_vec()))
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
            let labels: Vec<(String, bool, bool)> = hs.iter().map(|h| seam_labels(h)).collect();
            let mut modes = BTreeMap::new();
            for (m, _, _) in &labels {
                *modes.entry(m.clone()).or_insert(0) += 1;
            }
            let f = |g: fn(&HandoffRow) -> Option<f64>| hs.iter().filter_map(|h| g(h)).collect::<Vec<f64>>();
            let gaps = f(|h| h.gap_ms);
            let judges: Vec<f64> = rs.iter().filter_map(|r| r.judge).collect();
            let guard: Vec<(f64, bool)> = rs.iter().filter_map(|r| r.guard_confidence.zip(r.guard_fires)).collect();
            let mut thresholds: Vec<f64> = rs.iter().filter_map(|r| r.guard_min_confidence).collect();
            thresholds.sort_by(f64::total_cmp);
            thresholds.dedup();
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
                repeats: labels.iter().filter(|l| l.1).count(),
                restarts: labels.iter().filter(|l| l.2).count(),
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
                judge_unscored: rs.iter().filter(|r| r.judge.is_none() && r.judge_error.is_some()).count(),
                guard_scored: guard.len(),
                guard_fires: guard.iter().filter(|g| g.1).count(),
                guard_confidence: mean(&guard.iter().map(|g| g.0).collect::<Vec<_>>()),
                guard_min_confidence: thresholds,
                self_repeats: ok.iter().filter(|r| opener_repeats_itself(&r.opener)).count(),
                runs_on: ok.iter().filter(|r| ulm_runtime::generate::runs_on(&r.opener)).count(),
                names_topic: {
                    let t: Vec<bool> = ok.iter().filter_map(|r| r.names_topic).collect();
                    (!t.is_empty()).then(|| t.iter().filter(|&&b| b).count() as f64 / t.len() as f64)
                },
                model: m,
                words: w,
            }
        })
        .collect()
}

/// A model's display name: the name given, or the file/folder name of a path.
pub fn short(m: &str) -> String {
    Path::new(m).file_name().map_or(m.to_string(), |n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
}

fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.prec$}"))
}

// The mode shares of a group as table cells, in `MODES` order.
fn mode_shares(g: &Group) -> String {
    MODES.iter().map(|k| format!("{:.2}", *g.modes.get(*k).unwrap_or(&0) as f64 / g.handoffs as f64)).collect::<Vec<_>>().join(" | ")
}

/// Rows grouped by [`category_of`] (first-seen order), each summarized per model × length.
pub fn by_category(rows: &[Row]) -> Vec<(String, Vec<Group>)> {
    let mut cats: Vec<String> = Vec::new();
    for r in rows {
        let c = category_of(r);
        if !cats.contains(&c) {
            cats.push(c);
        }
    }
    cats.into_iter()
        .map(|c| {
            let rs: Vec<Row> = rows.iter().filter(|r| category_of(r) == c).cloned().collect();
            let groups = summarize(&rs);
            (c, groups)
        })
        .collect()
}

// The per-category tables of report.md: opener LL and acceptance, and with a continuator the mode shares.
fn category_section(rows: &[Row]) -> String {
    let cats = by_category(rows);
    let mut md = String::from("\n## By category\n\n");
    md += "MT-Bench prompts by their category, every other source (chitchat, chatterbot) as one group. Same definitions as above; \
small groups (n = 10 per MT-Bench category on the dev set) move a lot from run to run.\n\n";
    md += "| category | model | words | n | mean LL | acceptance |\n|---|---|---|---|---|---|\n";
    for (c, gs) in &cats {
        for g in gs {
            md += &format!("| {c} | {} | {} | {} | {} | {} |\n", short(&g.model), g.words, g.n, f(g.mean_ll, 4), f(g.acceptance, 3));
        }
    }
    if cats.iter().any(|(_, gs)| gs.iter().any(|g| g.handoffs > 0)) {
        md += "\nRecovery modes per category (shares of the handoffs):\n\n";
        md += "| category | model | words | n | fragment completion | clean continuation | self-repair pivot | restart | none | repeats | restarts |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
        for (c, gs) in &cats {
            for g in gs.iter().filter(|g| g.handoffs > 0) {
                md += &format!(
                    "| {c} | {} | {} | {} | {} | {:.2} | {:.2} |\n",
                    short(&g.model),
                    g.words,
                    g.handoffs,
                    mode_shares(g),
                    g.repeats as f64 / g.handoffs as f64,
                    g.restarts as f64 / g.handoffs as f64,
                );
            }
        }
    }
    md
}

/// Writes report.md and the plots from the rows.
pub fn write_report(dir: &Path, rows: &[Row]) -> Result<(), EvalError> {
    let groups = summarize(rows);
    let mut md = String::new();
    md += "# ulm eval report\n\nRecomputed from `per_prompt.jsonl` (`ulm eval --report-only --out DIR`); settings, model hashes and machine in `meta.json`.\n\n";
    md += "## Openers (plausibility under the scorer)\n\n";
    md += "Mean LL: mean over prompts of the opener's mean per-token log-likelihood (nats) under the scorer, given the prompt in the scorer's chat format. ";
    md += "Acceptance: share of opener tokens (scorer's tokenization) inside the scorer's top-k. TTFW: time to first word (prefill included). ";
    md += "Peak RSS: the process with only that edge model loaded, after one opener.\n\n";
    md += "Repeats itself: share of openers that say the same three words twice (case and punctuation ignored). ";
    md += "Runs on: share of openers with a word that is one piece of 1–4 characters said over and over (`ulm_runtime::generate::runs_on`: \"re-re-re-re\"). ";
    md += "Names the topic: share of openers that name a content word of the prompt (first five letters compared; `ulm_eval::names_topic`).\n\n";
    md += "| model | params | words | scorer | n | mean LL | acceptance | TTFW ms | opener ms | peak RSS MB | repeats itself | runs on | names the topic |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for g in &groups {
        md += &format!(
            "| {} | {:.1}M | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {} |\n",
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
            g.self_repeats as f64 / g.n.max(1) as f64,
            g.runs_on as f64 / g.n.max(1) as f64,
            f(g.names_topic, 3),
        );
    }
    let mut boosts: Vec<(String, String, usize, String)> = rows
        .iter()
        .map(|r| (short(&r.model), r.copy_boost.map_or("not recorded".into(), |c| format!("{c}")), r.candidates.unwrap_or(1), format!("{}", r.pmi.unwrap_or(0.0))))
        .collect();
    boosts.sort();
    boosts.dedup();
    md += &format!(
        "\nCopy boost, candidates and pmi of the openers (`--copy-boost`, `--candidates`, `--pmi`; default each model's own): {}.\n",
        boosts.iter().map(|(m, c, n, pmi)| format!("{m} {c}, best of {n}, pmi {pmi}")).collect::<Vec<_>>().join("; ")
    );
    md += &guard_section(&groups);
    md += "\n## Handoff (seamlessness and latency)\n\n";
    if groups.iter().all(|g| g.handoffs == 0) {
        md += "skipped: no continuator configured (`--cloud URL --provider NAME`).\n";
    } else {
        md += "Modes: the recovery classifier of `ulm_handoff::recovery`, rerun on the texts when the report is written; `restart` is the contract broken (the opener \
stopped mid-sentence and the continuation began the answer again), `none` no continuation. Repeats: the continuation contains the opener's first 3 words again. ";
        md += "Restarts: `ulm_handoff::recovery::restarts` (the continuation restates the unfinished opener's first words or starts with a capitalized sentence opener), \
whether or not a pivot marker also follows. ";
        md += "Cont LL: the scorer's mean per-token log-likelihood of the first 8 continuation words given prompt + opener. Times in ms since the message (p50 unless said). Wait after opener: opener complete → first continuation word. \
Gap: opener *shown* → first continuation word, where the opener counts as shown once spoken at the handoff config's `words_per_second` (default 2.5; see meta.json), 0 when the cloud was in time.\n\n";
        md += "| model | words | n | fragment completion | clean continuation | self-repair pivot | restart | none | repeats | restarts | cont LL | first word | cloud first token | wait after opener | gap p50 | gap p90 | total |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
        for g in groups.iter().filter(|g| g.handoffs > 0) {
            md += &format!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |\n",
                short(&g.model),
                g.words,
                g.handoffs,
                mode_shares(g),
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
    md += &category_section(rows);
    md += "\n## LLM judge\n\n";
    if groups.iter().all(|g| g.judged + g.judge_unscored == 0) {
        md += "skipped: no judge configured (`--judge URL --judge-model M`).\n";
    } else {
        let jm: Vec<String> = {
            let mut v: Vec<String> = rows.iter().filter_map(|r| r.judge_model.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        md += &format!("One overall 1–5 score per full reply (opener + continuation, or the opener alone without a cloud), judge: {}.\n\n", jm.join(", "));
        md += "Could not score: the judge was asked but gave no 1–5 score (HTTP error, or no number from 1 to 5 in its answer; `judge_error` in per_prompt.jsonl). \
The mean is over the scored replies only.\n\n";
        md += "| model | words | n | judged | could not score | mean score |\n|---|---|---|---|---|---|\n";
        for g in groups.iter().filter(|g| g.judged + g.judge_unscored > 0) {
            md += &format!("| {} | {} | {} | {} | {} | {} |\n", short(&g.model), g.words, g.n, g.judged, g.judge_unscored, f(g.judge, 3));
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
    let path = dir.join("report.md");
    std::fs::write(&path, md).map_err(|e| EvalError::io(&path, e))
}


/// How often the pre-handoff guard would replace the opener, per model × length.
fn guard_section(groups: &[Group]) -> String {
    if groups.iter().all(|g| g.guard_scored == 0) {
        return String::new();
    }
    let mut md = String::from("\n## Pre-handoff guard (would fire)\n\n");
    md += "The guard replaces an opener whose confidence (the opener model's mean probability of its sampled tokens) is below its threshold by a safe hedge \
(`ulm_handoff::config::GuardSettings::fires`). Recorded for every opener at the handoff's default threshold; the handoff rows above ran with the guard off.\n\n";
    md += "| model | words | n | fires | fire rate | mean confidence | threshold |\n|---|---|---|---|---|---|---|\n";
    for g in groups.iter().filter(|g| g.guard_scored > 0) {
        let t: Vec<String> = g.guard_min_confidence.iter().map(|t| format!("{t:.2}")).collect();
        md += &format!(
            "| {} | {} | {} | {} | {:.3} | {} | {} |\n",
            short(&g.model),
            g.words,
            g.guard_scored,
            g.guard_fires,
            g.guard_fires as f64 / g.guard_scored as f64,
            f(g.guard_confidence, 3),
            t.join(", ")
        );
    }
    md
}
