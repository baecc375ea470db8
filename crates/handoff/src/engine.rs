//! The handoff itself: opener locally → shown at once → cloud continues → seam → label.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use ulm_openai::sse::SseEvent;

use crate::cloud::{ApiKey, Cloud};
use crate::config::{Config, ProviderKind};
use crate::error::HandoffError;
use crate::opener::{OpenerModel, OpenerOut, Turn};
use crate::provider::{continuation_request, warm_request};
use crate::recovery::{Mode, PivotCheck, check_pivot, classify};
use crate::seam::Seam;
use crate::timeline::{Timeline, TtftEstimate, choose_words};
use crate::words::{count_words, ends_sentence};

/// What happens during a reply, in order, for a UI (or an SSE stream) to follow.
///
/// A run emits `OpenerPiece`* (or `Error` if the opener failed), then `GuardFired` if the guard
/// replaced the opener, then `ContinuationDelta`* — or, when the cloud fails, `Error`,
/// `FallbackPiece`* and `Notice` — then `ModeDecided` (when there is a continuation to label),
/// `Timeline` and `Done`. A UI shows the text of `OpenerPiece`, `ContinuationDelta`,
/// `FallbackPiece` and `Notice` in order; together they are exactly [`Reply::text`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Text of the opener, to show at once.
    OpenerPiece(String),
    /// The guard replaced a doubtful opener (never shown) by the hedge.
    GuardFired {
        /// The opener's confidence.
        confidence: f32,
        /// The opener that was dropped.
        replaced: String,
    },
    /// Text of the cloud's continuation, after seam repair.
    ContinuationDelta(String),
    /// Text the local model added when the cloud failed.
    FallbackPiece(String),
    /// The note that the rest of the reply is unavailable (begins with its separator).
    Notice(String),
    /// The recovery mode of the reply.
    ModeDecided(Mode),
    /// Milestones of the reply.
    Timeline(Timeline),
    /// Something failed: the local opener (the cloud is then asked for a plain answer), or the
    /// cloud for good (the reply then ends with the local fallback and the note).
    Error(HandoffError),
    /// The reply is complete.
    Done,
}

impl Event {
    /// The SSE event name: `opener`, `guard`, `continuation`, `fallback`, `notice`, `mode`,
    /// `timeline`, `error` or `done`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::OpenerPiece(_) => "opener",
            Event::GuardFired { .. } => "guard",
            Event::ContinuationDelta(_) => "continuation",
            Event::FallbackPiece(_) => "fallback",
            Event::Notice(_) => "notice",
            Event::ModeDecided(_) => "mode",
            Event::Timeline(_) => "timeline",
            Event::Error(_) => "error",
            Event::Done => "done",
        }
    }

    /// The event as a named SSE event with a JSON payload (`{"text": ...}` for text events).
    pub fn to_sse(&self) -> SseEvent {
        use serde_json::json;
        let data = match self {
            Event::OpenerPiece(t) | Event::ContinuationDelta(t) | Event::FallbackPiece(t) | Event::Notice(t) => json!({ "text": t }),
            Event::GuardFired { confidence, replaced } => json!({ "confidence": confidence, "replaced": replaced }),
            Event::ModeDecided(m) => json!({ "mode": m }),
            Event::Timeline(t) => serde_json::to_value(t).unwrap_or_default(),
            Event::Error(e) => serde_json::to_value(e).unwrap_or_default(),
            Event::Done => json!({}),
        };
        SseEvent::named(self.name(), data.to_string())
    }
}

/// What the pre-handoff guard did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GuardReport {
    /// The guard was on.
    pub enabled: bool,
    /// The opener's confidence, if the model reported one.
    pub confidence: Option<f32>,
    /// The opener was replaced by the hedge.
    pub fired: bool,
    /// The replaced opener.
    pub replaced: Option<String>,
}

/// The outcome of one handoff. Always holds the text shown, even when something failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reply {
    /// Everything shown, in order: opener, continuation, local fallback, note.
    pub text: String,
    /// The opener as shown (the hedge if the guard fired).
    pub opener: String,
    /// The cloud's continuation after seam repair (possibly partial when `error` is set).
    pub continuation: String,
    /// What the local model added after a cloud failure.
    pub fallback: String,
    /// The note appended after a cloud failure (empty otherwise).
    pub note: String,
    /// Recovery mode of the continuation; `None` without one.
    pub mode: Option<Mode>,
    /// How a pivot's bridge measured up against the contract.
    pub pivot: Option<PivotCheck>,
    /// What the guard did.
    pub guard: GuardReport,
    /// The opener ended the reply by itself and the cloud was not asked.
    pub standalone: bool,
    /// The provider used.
    pub provider: ProviderKind,
    /// Words asked of the opener.
    pub words_requested: usize,
    /// The provider's finish reason (`stop`, `length`, `end_turn`, ...).
    pub finish_reason: Option<String>,
    /// Milestones and the gap.
    pub timeline: Timeline,
    /// What failed: the cloud's final error when the reply ended in the local fallback, else
    /// the opener's error if the local model failed (every failure is also an [`Event::Error`]).
    pub error: Option<HandoffError>,
}

/// The collaborative generation engine. Build one per provider config and share it (it is
/// `Send + Sync`; the server keeps it in an `Arc`); each [`run`](Self::run) is one reply.
#[derive(Debug)]
pub struct Handoff {
    cfg: Config,
    cloud: Cloud,
    ttft: Mutex<TtftEstimate>,
}

impl Handoff {
    /// Checks the config, reads the API key from the variable it names and builds the HTTP client.
    pub fn new(cfg: Config) -> Result<Self, HandoffError> {
        cfg.validate()?;
        let key = cfg.api_key_env.as_deref().map(ApiKey::from_env).transpose()?;
        let cloud = Cloud::new(&cfg, key.as_ref())?;
        Ok(Handoff { cfg, cloud, ttft: Mutex::new(TtftEstimate::default()) })
    }

    /// The config in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The running estimate of the provider's time to first token.
    pub fn ttft_estimate(&self) -> TtftEstimate {
        *self.ttft.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Words the next opener will be asked for: `opener.words`, or with `opener.adaptive` the
    /// count that covers the estimated time to first token at `words_per_second`.
    pub fn next_opener_words(&self) -> usize {
        let o = &self.cfg.opener;
        if !o.adaptive {
            return o.words;
        }
        let default = o.words.clamp(o.min_words, o.max_words);
        choose_words(self.ttft_estimate().mean_ms(), self.cfg.words_per_second, o.min_words, o.max_words, default)
    }

    /// One reply to `conversation` (which ends with the user's turn). The opener is written by
    /// `opener` and streamed through `events` as it comes; the cloud continues it; the seam is
    /// repaired; the reply is labelled. Never fails: problems end up in [`Reply::error`] and an
    /// [`Event::Error`], after a graceful local fallback.
    ///
    /// Needs a tokio runtime with IO and time enabled. On a multi-threaded runtime the opener
    /// model runs under `block_in_place`; on a current-thread runtime it blocks the thread while
    /// it writes (the early request then starts only afterwards). Do not call it inside a
    /// `LocalSet` on a multi-threaded runtime: tokio forbids `block_in_place` there.
    pub async fn run<F: FnMut(Event)>(&self, opener: &mut dyn OpenerModel, conversation: &[Turn], mut events: F) -> Reply {
        let t0 = Instant::now();
        let at = move || t0.elapsed().as_secs_f64() * 1000.0;
        let cfg = &self.cfg;
        let mut tl = Timeline::default();
        let mut reply = Reply { provider: cfg.provider, ..Default::default() };

        // 1. Warm the provider's prompt cache while the opener is written.
        let warm = if cfg.early_request { self.spawn_warm(conversation) } else { None };
        if warm.is_some() {
            tl.warm_request_ms = Some(at());
        }

        // 2. The opener, shown piece by piece (held back while the guard needs to judge it).
        let words = self.next_opener_words();
        reply.words_requested = words;
        let hold = cfg.guard.enabled;
        let mut show = Shown::default();
        let mut held = String::new();
        let result = {
            let events = &mut events;
            let tl = &mut tl;
            let show = &mut show;
            let held = &mut held;
            blocking(|| {
                opener.write_opener(conversation, words, &mut |piece: &str| {
                    if tl.first_token_ms.is_none() {
                        tl.first_token_ms = Some(at());
                    }
                    if hold {
                        held.push_str(piece);
                    } else {
                        show.push(piece, tl, &at, events);
                    }
                })
            })
        };
        let out = match result {
            Ok(out) => Some(out),
            Err(e) => {
                // The cloud is still asked, for a plain answer; the failure is reported at once.
                let err = HandoffError::from(e);
                events(Event::Error(err.clone()));
                reply.error = Some(err);
                None
            }
        };
        if let Some(out) = &out {
            if hold {
                let confidence = out.confidence;
                reply.guard = GuardReport { enabled: true, confidence, fired: false, replaced: None };
                let text = if held.trim().is_empty() { out.text.clone() } else { held.clone() };
                match confidence {
                    Some(c) if cfg.guard.fires(Some(c)) => {
                        reply.guard.fired = true;
                        reply.guard.replaced = Some(text.trim().to_string());
                        events(Event::GuardFired { confidence: c, replaced: text.trim().to_string() });
                        show.push(&cfg.guard.hedge, &mut tl, &at, &mut events);
                    }
                    _ => show.push(&text, &mut tl, &at, &mut events),
                }
            } else if show.text.is_empty() && !out.text.trim().is_empty() {
                // The model returned its opener without streaming it.
                show.push(&out.text, &mut tl, &at, &mut events);
            }
        }
        tl.opener_done_ms = Some(at());
        tl.opener_words = count_words(&show.text);
        reply.opener = show.text.clone();

        let standalone = matches!(&out, Some(OpenerOut { ended: true, .. }))
            && cfg.opener.allow_standalone
            && !reply.guard.fired
            && !reply.opener.is_empty();
        if standalone {
            reply.standalone = true;
            return self.finish(reply, tl, &at, &mut events);
        }

        // 3. Let the warming request finish first, so that the real one hits a warm cache.
        if let Some(handle) = warm {
            if let Ok(Ok(Ok(()))) = tokio::time::timeout(cfg.early_request_wait, handle).await {
                tl.warm_done_ms = Some(at());
            }
        }

        // 4. The cloud continues the opener.
        let cloud_error = self.continue_in_cloud(conversation, &mut reply, &mut tl, &at, &mut events).await;

        // 5. Graceful fallback: the local model finishes the sentence, then a note.
        if let Some(err) = cloud_error {
            events(Event::Error(err.clone()));
            let so_far = format!("{}{}", reply.opener, reply.continuation);
            if out.is_some() && !so_far.trim().is_empty() {
                let mut seam = Seam::new(&so_far);
                let mut added = String::new();
                let local = {
                    let (events, tl, added, seam) = (&mut events, &mut tl, &mut added, &mut seam);
                    blocking(|| {
                        opener.finish_locally(conversation, &so_far, cfg.fallback.max_words, &mut |piece: &str| {
                            let text = seam.push(piece);
                            emit_fallback(text, added, tl, &at, events);
                        })
                    })
                };
                emit_fallback(seam.finish(), &mut added, &mut tl, &at, &mut events);
                reply.fallback = added;
                if let Err(e) = local {
                    events(Event::Error(e.into()));
                }
            }
            let before = format!("{so_far}{}", reply.fallback);
            let sep = if before.trim().is_empty() { "" } else { " " };
            reply.note = format!("{sep}{}", cfg.fallback.note);
            events(Event::Notice(reply.note.clone()));
            // The cloud's failure decided how the reply ends: it is the one the reply carries.
            reply.error = Some(err);
        }
        self.finish(reply, tl, &at, &mut events)
    }

    fn finish<F: FnMut(Event)>(&self, mut reply: Reply, mut tl: Timeline, at: &impl Fn() -> f64, events: &mut F) -> Reply {
        let labelled = !reply.continuation.trim().is_empty() || (reply.error.is_none() && !reply.standalone);
        if labelled && !reply.opener.is_empty() {
            let mode = classify(&reply.opener, &reply.continuation);
            reply.mode = Some(mode);
            reply.pivot = check_pivot(&reply.opener, &reply.continuation);
            events(Event::ModeDecided(mode));
        }
        reply.text = format!("{}{}{}{}", reply.opener, reply.continuation, reply.fallback, reply.note);
        tl.done_ms = at();
        tl.finish(self.cfg.words_per_second);
        reply.timeline = tl.clone();
        events(Event::Timeline(tl));
        events(Event::Done);
        reply
    }

    fn spawn_warm(&self, conversation: &[Turn]) -> Option<tokio::task::JoinHandle<Result<(), HandoffError>>> {
        let req = warm_request(&self.cfg, conversation)?;
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let cloud = self.cloud.clone();
        Some(handle.spawn(async move { cloud.warm(&req).await }))
    }

    // Streams the continuation, retrying within the policy; returns the final error, if any.
    async fn continue_in_cloud<F: FnMut(Event)>(
        &self,
        conversation: &[Turn],
        reply: &mut Reply,
        tl: &mut Timeline,
        at: &impl Fn() -> f64,
        events: &mut F,
    ) -> Option<HandoffError> {
        let cfg = &self.cfg;
        let total_deadline = cfg.timeouts.total.map(|d| Instant::now() + d);
        let mut attempt = 0;
        loop {
            attempt += 1;
            tl.attempts = attempt;
            // After a cut, the text already shown becomes the prefix of the retry.
            let prefix = format!("{}{}", reply.opener, reply.continuation);
            let req = continuation_request(cfg, conversation, &prefix);
            let mut seam = Seam::new(&prefix);
            let sent = at();
            tl.cloud_request_ms = Some(sent);
            let stream = self.stream_once(&req, &mut seam, reply, tl, sent, at, events);
            let result = match total_deadline {
                Some(d) => match tokio::time::timeout_at(d, stream).await {
                    Ok(r) => r,
                    Err(_) => Err(HandoffError::TotalTimeout { ms: cfg.timeouts.total.map(|t| t.as_millis() as u64).unwrap_or(0) }),
                },
                None => stream.await,
            };
            let err = match result {
                Ok(finish) => {
                    reply.finish_reason = finish;
                    // Nothing after an unfinished opener is a fault; after a finished sentence it
                    // is the cloud agreeing that the opener said it all.
                    let unfinished = !prefix.trim().is_empty() && !ends_sentence(&prefix);
                    if reply.continuation.trim().is_empty() && unfinished {
                        HandoffError::EmptyContinuation { url: req.url.clone() }
                    } else {
                        return None;
                    }
                }
                Err(e) => e,
            };
            let err = match err {
                HandoffError::RateLimited { url, message, retry_after_ms, .. } => {
                    HandoffError::RateLimited { url, message, retry_after_ms, attempts: attempt }
                }
                other => other,
            };
            let Some(wait) = retry_wait(cfg, &err, attempt) else { return Some(err) };
            if total_deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return Some(err);
            }
            tokio::time::sleep(wait).await;
        }
    }

    // One request: its pieces go through the seam and out as events.
    #[allow(clippy::too_many_arguments)]
    async fn stream_once<F: FnMut(Event)>(
        &self,
        req: &crate::provider::ProviderRequest,
        seam: &mut Seam,
        reply: &mut Reply,
        tl: &mut Timeline,
        sent: f64,
        at: &impl Fn() -> f64,
        events: &mut F,
    ) -> Result<Option<String>, HandoffError> {
        let mut stream = self.cloud.open(req).await?;
        let mut first = true;
        while let Some(piece) = stream.next().await? {
            if first {
                first = false;
                let now = at();
                tl.cloud_first_token_ms = Some(now);
                self.ttft.lock().unwrap_or_else(|e| e.into_inner()).observe(now - sent);
            }
            emit_continuation(seam.push(&piece), reply, tl, at, events);
        }
        emit_continuation(seam.finish(), reply, tl, at, events);
        Ok(stream.finish_reason().map(str::to_string))
    }
}

fn emit_continuation<F: FnMut(Event)>(text: String, reply: &mut Reply, tl: &mut Timeline, at: &impl Fn() -> f64, events: &mut F) {
    if text.is_empty() {
        return;
    }
    if tl.first_continuation_word_ms.is_none() && text.chars().any(char::is_alphanumeric) {
        tl.first_continuation_word_ms = Some(at());
    }
    reply.continuation.push_str(&text);
    events(Event::ContinuationDelta(text));
}

fn emit_fallback<F: FnMut(Event)>(text: String, added: &mut String, tl: &mut Timeline, at: &impl Fn() -> f64, events: &mut F) {
    if text.is_empty() {
        return;
    }
    // With no continuation at all, the gap runs until the local words fill it.
    if tl.first_continuation_word_ms.is_none() && text.chars().any(char::is_alphanumeric) {
        tl.first_continuation_word_ms = Some(at());
    }
    added.push_str(&text);
    events(Event::FallbackPiece(text));
}

// How long to wait before trying `err` again, or `None` to give up.
fn retry_wait(cfg: &Config, err: &HandoffError, attempt: u32) -> Option<Duration> {
    if attempt >= cfg.retry.max_attempts {
        return None;
    }
    let backoff = cfg.retry.backoff * attempt;
    match err {
        HandoffError::RateLimited { retry_after_ms: Some(ms), .. } => {
            let wait = Duration::from_millis(*ms);
            (wait <= cfg.retry.max_retry_after).then_some(wait)
        }
        HandoffError::RateLimited { retry_after_ms: None, .. } => Some(backoff),
        HandoffError::Http { status, .. } if *status == 408 || *status >= 500 => Some(backoff),
        HandoffError::Connect { .. }
        | HandoffError::FirstTokenTimeout { .. }
        | HandoffError::IdleTimeout { .. }
        | HandoffError::StreamCut { .. }
        | HandoffError::Malformed { .. }
        | HandoffError::StreamError { .. }
        | HandoffError::EmptyContinuation { .. } => Some(backoff),
        _ => None,
    }
}

/// The opener as shown: leading whitespace dropped, trailing whitespace held back until more text
/// follows, so that the opener never ends in a space (a trailing space derails continuations).
#[derive(Debug, Default)]
struct Shown {
    text: String,
    pending_ws: String,
}

impl Shown {
    fn push<F: FnMut(Event)>(&mut self, piece: &str, tl: &mut Timeline, at: &impl Fn() -> f64, events: &mut F) {
        let piece = if self.text.is_empty() && self.pending_ws.is_empty() { piece.trim_start() } else { piece };
        let body = piece.trim_end();
        let tail = &piece[body.len()..];
        if body.is_empty() {
            if !self.text.is_empty() {
                self.pending_ws.push_str(tail);
            }
            return;
        }
        let out = std::mem::take(&mut self.pending_ws) + body;
        self.pending_ws = tail.to_string();
        if tl.first_word_ms.is_none() && out.chars().any(char::is_alphanumeric) {
            tl.first_word_ms = Some(at());
        }
        self.text.push_str(&out);
        events(Event::OpenerPiece(out));
    }
}

// Runs a synchronous model call without starving a multi-threaded runtime's other tasks.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_opener_never_starts_or_ends_with_space() {
        let mut s = Shown::default();
        let mut tl = Timeline::default();
        let mut got = Vec::new();
        let at = || 1.0;
        for p in ["  The", " capital ", " ", "of", " France", " is "] {
            s.push(p, &mut tl, &at, &mut |e| got.push(e));
        }
        assert_eq!(s.text, "The capital  of France is");
        let pieces: Vec<String> = got
            .into_iter()
            .map(|e| match e {
                Event::OpenerPiece(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(pieces, ["The", " capital", "  of", " France", " is"]);
        assert_eq!(tl.first_word_ms, Some(1.0));
    }

    #[test]
    fn retry_policy() {
        let cfg = Config::new(ProviderKind::Prefill, "http://x");
        let http = |status| HandoffError::Http { url: "u".into(), status, message: "m".into(), kind: None };
        assert_eq!(retry_wait(&cfg, &http(500), 1), Some(Duration::from_millis(250)));
        assert_eq!(retry_wait(&cfg, &http(500), 2), None, "attempts are bounded");
        assert_eq!(retry_wait(&cfg, &http(400), 1), None, "a client error is not retried");
        let rl = |ms| HandoffError::RateLimited { url: "u".into(), message: "m".into(), retry_after_ms: ms, attempts: 1 };
        assert_eq!(retry_wait(&cfg, &rl(Some(1200)), 1), Some(Duration::from_millis(1200)));
        assert_eq!(retry_wait(&cfg, &rl(Some(60_000)), 1), None, "too long a wait is not honoured");
        assert_eq!(retry_wait(&cfg, &HandoffError::TotalTimeout { ms: 1 }, 1), None);
    }

    #[test]
    fn events_have_sse_names_and_json() {
        let e = Event::ContinuationDelta(" Paris".into()).to_sse();
        assert_eq!(e.encode(), "event: continuation\ndata: {\"text\":\" Paris\"}\n\n");
        let e = Event::ModeDecided(Mode::SelfRepairPivot).to_sse();
        assert_eq!(e.data, r#"{"mode":"self_repair_pivot"}"#);
        let e = Event::Error(HandoffError::TotalTimeout { ms: 5 }).to_sse();
        assert!(e.data.starts_with(r#"{"kind":"total_timeout","message":"#), "{}", e.data);
        assert_eq!(Event::Done.to_sse().encode(), "event: done\ndata: {}\n\n");
    }

    #[test]
    fn run_future_is_send_so_a_server_can_spawn_it() {
        fn assert_send<T: Send>(_: &T) {}
        let h = Handoff::new(Config::new(ProviderKind::Prefill, "http://127.0.0.1:9")).unwrap();
        let mut o = crate::FixedOpener::new("x");
        let conv = [Turn::user("hi")];
        let fut = h.run(&mut o, &conv, |_e| {});
        assert_send(&fut);
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Handoff>();
    }
}
