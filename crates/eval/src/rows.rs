//! The per-prompt rows of `per_prompt.jsonl`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use ulm_handoff::Reply;
use ulm_runtime::generate::Rival;

use crate::{repeats_opener, restarts};

/// The handoff's outcome for one row.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HandoffRow {
    /// Provider kind used (`prefill`, `instruct`, ...).
    pub provider: String,
    /// The opener as shown.
    pub opener: String,
    /// The continuation after seam repair.
    pub continuation: String,
    /// fragment_completion, clean_continuation, self_repair_pivot (None: no continuation).
    pub mode: Option<String>,
    /// The continuation contains the opener's first 3 words again.
    pub repeats_opener: bool,
    /// The opener stopped mid-sentence and the continuation began the answer again ([`crate::restarts`]).
    pub restart: bool,
    /// Scorer's mean log-likelihood per token of the first 8 continuation words given prompt + opener.
    pub cont_ll: Option<f64>,
    /// Tokens scored for `cont_ll`.
    pub cont_tokens: usize,
    /// First word shown, ms since the message.
    pub first_word_ms: Option<f64>,
    /// Opener complete, ms.
    pub opener_done_ms: Option<f64>,
    /// Continuation request sent, ms.
    pub cloud_request_ms: Option<f64>,
    /// First continuation piece arrived, ms.
    pub cloud_first_token_ms: Option<f64>,
    /// First continuation word shown, ms.
    pub first_continuation_word_ms: Option<f64>,
    /// Opener shown (at the config's speaking rate) → first continuation word, ms; 0 when in time.
    pub gap_ms: Option<f64>,
    /// Reply complete, ms.
    pub done_ms: f64,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// One line of per_prompt.jsonl: one prompt × opener model × opener length.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Row {
    /// Prompt id.
    pub id: String,
    /// Prompt source (mtbench, chatterbot, ...).
    pub source: String,
    /// Prompt category.
    pub category: String,
    /// Opener model as given (name or path).
    pub model: String,
    /// Parameter count of the opener model.
    pub params: u64,
    /// Opener length asked, in words.
    pub words: usize,
    /// Sampling seed of this prompt.
    pub seed: u64,
    /// The opener as shown.
    pub opener: String,
    /// Tokens the edge model generated.
    pub opener_tokens: usize,
    /// Time to first word (prefill included), ms.
    pub ttfw_ms: Option<f64>,
    /// Time to the whole opener, ms.
    pub opener_ms: f64,
    /// Peak RSS of a process holding only this edge model (bytes), measured once per model.
    pub peak_rss: Option<u64>,
    /// Scorer model as given.
    pub scorer: String,
    /// k of the acceptance rate.
    pub top_k: usize,
    /// Opener tokens as the scorer tokenizes them.
    pub scored_tokens: usize,
    /// Sum of the opener's token log-probabilities under the scorer (nats).
    pub ll_sum: f64,
    /// `ll_sum / scored_tokens`.
    pub mean_ll: Option<f64>,
    /// Scored tokens inside the scorer's top-k.
    pub accepted: usize,
    /// The handoff, when a continuator was given.
    pub handoff: Option<HandoffRow>,
    /// The opener model's confidence in its opener, as the pre-handoff guard reads it (mean
    /// probability of the sampled tokens); `None` in rows written before it was recorded.
    #[serde(default)]
    pub guard_confidence: Option<f64>,
    /// The guard's threshold (`guard.min_confidence` of the handoff's defaults).
    #[serde(default)]
    pub guard_min_confidence: Option<f64>,
    /// The guard would replace this opener by its hedge (`GuardSettings::fires`). Recorded
    /// whether or not the guard is on: the eval's handoff runs with the guard off.
    #[serde(default)]
    pub guard_fires: Option<bool>,
    /// The opener names a content word of the prompt ([`crate::names_topic`]); `None` in rows
    /// written before it was recorded.
    #[serde(default)]
    pub names_topic: Option<bool>,
    /// Copy boost the opener ran with; `None` in rows written before it was recorded.
    #[serde(default)]
    pub copy_boost: Option<f32>,
    /// Openers sampled, the best kept (`ulm_runtime::generate::Candidates`); `None` in rows
    /// written before it was recorded (one).
    #[serde(default)]
    pub candidates: Option<usize>,
    /// Weight of the question-free probability in the choice among candidates
    /// (`ulm_runtime::generate::Candidates::pmi`); `None` in rows written before it was recorded (0).
    #[serde(default)]
    pub pmi: Option<f32>,
    /// Every candidate the choice saw, with `ulm eval --keep-candidates` (else absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rivals: Option<Vec<RivalRow>>,
    /// The judge's 1–5 score of the full reply.
    pub judge: Option<f64>,
    /// The judge model.
    pub judge_model: Option<String>,
    /// Why the judge gave no score (HTTP error, no 1–5 number in its answer); such rows are
    /// counted as unscored, never dropped.
    #[serde(default)]
    pub judge_error: Option<String>,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// One candidate of a best-of choice ([`Rival`]), as a row records it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RivalRow {
    /// Its text.
    pub text: String,
    /// It loops.
    pub loops: bool,
    /// It names the question's topic.
    pub names_topic: bool,
    /// Tokens sampled.
    pub tokens: usize,
    /// Mean log-probability of its tokens under the opener model.
    pub mean_logprob: f32,
    /// Its least probable token's log-probability.
    pub min_logprob: f32,
    /// Mean entropy of the model's distribution over its steps (nats).
    pub mean_entropy: f32,
    /// Mean log-probability after an empty question, when the pmi choice scored it.
    pub prior: Option<f32>,
    /// The one chosen.
    pub chosen: bool,
    /// Mean log-likelihood per token under the scorer after the question (`ulm eval`'s scorer).
    #[serde(default)]
    pub scorer_ll: Option<f64>,
    /// The same after an empty question: with `scorer_ll`, how much the question made it likely.
    #[serde(default)]
    pub scorer_prior: Option<f64>,
}

impl From<&Rival> for RivalRow {
    fn from(r: &Rival) -> RivalRow {
        RivalRow {
            text: r.text.clone(),
            loops: r.fit.loops,
            names_topic: r.fit.names_topic,
            tokens: r.tokens,
            mean_logprob: r.mean_logprob,
            min_logprob: r.min_logprob,
            mean_entropy: r.mean_entropy,
            prior: r.prior,
            chosen: r.chosen,
            scorer_ll: None,
            scorer_prior: None,
        }
    }
}

/// Rows of per_prompt.jsonl; a torn last line (a kill mid-write) is skipped.
pub fn read_rows(path: &Path) -> Vec<Row> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

impl HandoffRow {
    /// The row of a handoff reply: its texts, mode, seam flags and timeline (`cont_ll` is left
    /// for the scorer).
    pub fn from_reply(reply: &Reply) -> HandoffRow {
        let t = &reply.timeline;
        HandoffRow {
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
        }
    }
}
