//! Runs one generation off the async runtime and streams its pieces back through a channel.
//!
//! The runtime is synchronous: a generation runs on tokio's blocking pool while holding a slot of
//! the [`Scheduler`](crate::scheduler::Scheduler). Its pieces go into an unbounded channel (a
//! reply is at most `max_tokens` pieces), so the slot is freed as soon as the model is done even
//! when the client reads slowly or the injected latency paces the stream. When the receiver is
//! dropped (the client went away) the next piece's callback returns `false` and the generation
//! stops, which returns its session to the pool and frees its slot.
//!
//! With batching on ([`ServerConfig::batch`](crate::state::ServerConfig::batch)) the slot and
//! the channel go to the model's decode loop instead ([`crate::batcher`]), which steps this
//! generation together with the others.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use ulm_runtime::generate::{GenerateOptions, Generation, StopReason, generate};

use crate::batcher::Task;
use crate::error::ApiError;
use crate::state::{AppState, ServedModel};

/// What a generation sends back.
#[derive(Debug)]
pub(crate) enum GenEvent {
    /// Text to show.
    Piece(String),
    /// The end: why, and token counts.
    End(Finished),
    /// The model failed (the detail is logged, not sent).
    Failed,
}

/// How a generation ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished {
    pub finish_reason: &'static str,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// One generation to run.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    pub stop: Vec<String>,
}

/// The receiving end of a generation, paced to the injected token rate.
pub(crate) struct Output {
    rx: mpsc::UnboundedReceiver<GenEvent>,
    per_piece: Option<Duration>,
    next_at: Option<tokio::time::Instant>,
}

impl Output {
    /// The next event, no sooner than the injected rate allows.
    pub async fn next(&mut self) -> Option<GenEvent> {
        let ev = self.rx.recv().await?;
        if let (GenEvent::Piece(_), Some(per)) = (&ev, self.per_piece) {
            let now = tokio::time::Instant::now();
            let at = self.next_at.unwrap_or(now).max(now);
            tokio::time::sleep_until(at).await;
            self.next_at = Some(at + per);
        }
        Some(ev)
    }
}

/// Admits the job, waits out the injected time to first token, takes a slot and starts the
/// generation. Errors are 429/503 from the scheduler.
pub(crate) async fn start(state: &AppState, model: Arc<ServedModel>, job: Job) -> Result<Output, ApiError> {
    let sched = state.scheduler();
    let ticket = sched.admit()?;
    let lat = &state.config().latency;
    let delay = lat.ttft + lat.jitter.mul_f64(state.random_unit());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let slot = sched.slot(ticket).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(batcher) = &model.batcher {
        // The model's decode loop steps this generation together with the others.
        let task = Task { job, tx, slot, state: state.clone(), model_id: model.id.clone() };
        if batcher.send(task).is_err() {
            sched.counters.failed.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unavailable(format!("the decode loop of `{}` stopped; restart the server", model.id), 5));
        }
    } else {
        let st = state.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let t0 = Instant::now();
            let mut session = model.sessions.take(&job.prompt);
            let mut stops = StopStrings::new(job.stop);
            let mut gone = false;
            let result = generate(&model.lm, &mut session, &job.prompt, &job.opts, &mut |p| {
                let (text, hit) = stops.push(p.text);
                if !text.is_empty() && tx.send(GenEvent::Piece(text)).is_err() {
                    gone = true;
                    return false;
                }
                !hit && !tx.is_closed()
            });
            model.sessions.give(session);
            report(&st, &model.id, result, stops, gone, &tx, job.prompt.len(), t0);
        });
    }
    let tps = lat.tokens_per_s;
    let per_piece = (tps > 0.0).then(|| Duration::from_secs_f64(1.0 / tps));
    Ok(Output { rx, per_piece, next_at: None })
}

/// Sends the end of a generation (or its failure) and updates the scheduler's counters and
/// mean duration. Shared by the one-slot-per-generation path and the batched decode loop.
#[allow(clippy::too_many_arguments)]
pub(crate) fn report(
    st: &AppState,
    model_id: &str,
    result: ulm_runtime::Result<Generation>,
    mut stops: StopStrings,
    mut gone: bool,
    tx: &mpsc::UnboundedSender<GenEvent>,
    prompt_tokens: usize,
    t0: Instant,
) {
    let sched = st.scheduler();
    sched.observe(t0.elapsed());
    match result {
        Ok(g) => {
            let rest = stops.flush();
            if !rest.is_empty() {
                let _ = tx.send(GenEvent::Piece(rest));
            }
            let finish_reason = match g.stop {
                _ if stops.hit => "stop",
                StopReason::EndOfTurn | StopReason::Words | StopReason::RunsOn => "stop",
                StopReason::MaxTokens | StopReason::ContextFull => "length",
                StopReason::Cancelled => {
                    gone = true;
                    "stop"
                }
            };
            if gone || tx.is_closed() {
                sched.counters.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            let _ = tx.send(GenEvent::End(Finished { finish_reason, prompt_tokens: prompt_tokens as u32, completion_tokens: g.tokens.len() as u32 }));
        }
        Err(e) => {
            sched.counters.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("ulm-server: generation with {model_id} failed: {e}");
            let _ = tx.send(GenEvent::Failed);
        }
    }
}

/// Stop strings: text is passed on as soon as it cannot be the start of a stop string; at the
/// first stop string the text before it is passed on and generation ends.
#[derive(Debug, Default)]
pub(crate) struct StopStrings {
    stops: Vec<String>,
    held: String,
    pub hit: bool,
}

impl StopStrings {
    pub fn new(stops: Vec<String>) -> Self {
        StopStrings { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new(), hit: false }
    }

    /// Adds `piece`; returns the text that can be shown and whether a stop string was reached.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.hit {
            return (String::new(), true);
        }
        if self.stops.is_empty() {
            return (piece.to_string(), false);
        }
        self.held.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.hit = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Hold back the longest tail that begins some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .rev()
                    .find(|&k| self.held.is_char_boundary(self.held.len() - k) && s.starts_with(&self.held[self.held.len() - k..]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// What is still held back (the generation ended without completing a stop string).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_cut_and_hold_back() {
        let mut s = StopStrings::new(vec!["\nUser:".into(), "".into()]);
        assert_eq!(s.push("Hello"), ("Hello".into(), false));
        assert_eq!(s.push(" there\nUs"), (" there".into(), false));
        assert_eq!(s.push("er: hi"), ("".into(), true));
        assert!(s.hit);
        let mut s = StopStrings::new(vec!["END".into()]);
        assert_eq!(s.push("a E"), ("a ".into(), false));
        assert_eq!(s.push("x"), ("Ex".into(), false));
        assert_eq!(s.push("EN"), ("".into(), false));
        assert_eq!(s.flush(), "EN");
        let mut s = StopStrings::new(vec!["é!".into()]);
        assert_eq!(s.push("café"), ("caf".into(), false), "held back whole characters");
        assert_eq!(s.push("s"), ("és".into(), false));
        let mut none = StopStrings::new(vec![]);
        assert_eq!(none.push("x"), ("x".into(), false));
    }
}
