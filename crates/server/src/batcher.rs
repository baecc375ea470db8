//! Batched decoding: one thread per model steps every running generation of that model by one
//! token in one [`Model::forward_batch`](ulm_runtime::Model::forward_batch) pass.
//!
//! On a CPU, decoding a small model is bound by reading its weights; a pass over `B` sessions
//! reads each weight row once for all `B` (attention still runs per session over its own
//! cache), so throughput grows with the number of clients at little cost to each. A request
//! still holds a slot of the [`Scheduler`](crate::scheduler::Scheduler) from admission to its
//! end; the slot is what bounds the batch, the queue and the 429/503 replies.
//!
//! The loop: take the requests that arrived (waiting when nothing runs), prefill each on its own
//! and sample its first token at once (its time to first token does not wait for a batch); then
//! step all running generations together; retire those that stopped (end of turn, max tokens,
//! stop string, words, full context) or whose client went away. Each generation's stop rules,
//! sampling and streaming are [`Generator`]'s, the same code `generate` runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use ulm_runtime::generate::{Generation, Generator, LoadedModel, Piece};
use ulm_runtime::pool::Pool;
use ulm_runtime::{Batch, Session};

use crate::scheduler::Slot;
use crate::sessions::SessionPool;
use crate::state::AppState;
use crate::worker::{GenEvent, Job, StopStrings, report};

/// One admitted request handed to a model's decode loop.
pub(crate) struct Task {
    pub job: Job,
    pub tx: UnboundedSender<GenEvent>,
    pub slot: Slot,
    pub state: AppState,
    pub model_id: String,
}

/// The sending end of a model's decode loop; the loop ends when this is dropped.
pub(crate) struct Batcher {
    tx: Sender<Task>,
    stats: Arc<PassStats>,
}

/// Batched passes run and sessions stepped in them (rows / passes = the mean batch).
#[derive(Debug, Default)]
pub(crate) struct PassStats {
    pub passes: AtomicU64,
    pub rows: AtomicU64,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl Batcher {
    /// Starts the decode loop of `lm`: passes of at most `rows` sessions (more running
    /// generations take several passes per step), products split over `pool`.
    pub fn spawn(lm: LoadedModel, sessions: Arc<SessionPool>, rows: usize, pool: Option<Arc<Pool>>) -> std::io::Result<Batcher> {
        let (tx, rx) = channel();
        let mut batch = Batch::new(&lm.model, rows);
        if let Some(p) = pool {
            batch = batch.with_pool(p);
        }
        let stats = Arc::new(PassStats::default());
        let st = stats.clone();
        std::thread::Builder::new().name(format!("ulm-batch-{}", lm.name)).spawn(move || decode_loop(lm, sessions, batch, rx, &st))?;
        Ok(Batcher { tx, stats })
    }

    /// Counters of the loop's passes.
    pub fn stats(&self) -> &PassStats {
        &self.stats
    }

    /// Hands `task` to the loop; gives it back if the loop is gone.
    pub fn send(&self, task: Task) -> Result<(), Box<Task>> {
        self.tx.send(task).map_err(|e| Box::new(e.0))
    }
}

/// A generation in the loop.
struct Running<'a> {
    task: Task,
    session: Session,
    generator: Generator<'a>,
    stops: StopStrings,
    /// The client went away (a piece could not be sent).
    gone: bool,
    /// The token to feed next; `None` once the generation stopped.
    next: Option<u32>,
    /// The model failed; the failure was sent.
    failed: bool,
    t0: Instant,
}

impl Running<'_> {
    /// Samples the next token from the session's logits (or stops).
    fn step(&mut self) -> ulm_runtime::Result<()> {
        if self.task.tx.is_closed() {
            self.generator.cancel();
        }
        let Running { task, session, generator, stops, gone, .. } = self;
        self.next = generator.step(session, &mut |p| on_piece(p, stops, &task.tx, gone))?;
        Ok(())
    }
}

/// Sends a piece through the stop strings; `false` stops the generation.
fn on_piece(p: Piece<'_>, stops: &mut StopStrings, tx: &UnboundedSender<GenEvent>, gone: &mut bool) -> bool {
    let (text, hit) = stops.push(p.text);
    if !text.is_empty() && tx.send(GenEvent::Piece(text)).is_err() {
        *gone = true;
        return false;
    }
    !hit && !tx.is_closed()
}

fn decode_loop(lm: LoadedModel, sessions: Arc<SessionPool>, mut batch: Batch, rx: Receiver<Task>, stats: &PassStats) {
    let lm = &lm;
    let mut running: Vec<Running<'_>> = Vec::new();
    let mut tokens: Vec<u32> = Vec::with_capacity(batch.max());
    loop {
        // Newcomers: wait for one when nothing runs, else take whoever is there.
        if running.is_empty() {
            match rx.recv() {
                Ok(task) => admit(lm, &sessions, task, &mut running),
                Err(_) => return, // the model is no longer served
            }
        }
        while let Ok(task) = rx.try_recv() {
            admit(lm, &sessions, task, &mut running);
        }
        // One step for everyone still going, in passes of at most `batch.max()` sessions.
        let mut i = 0;
        while i < running.len() {
            let mut rows: Vec<&mut Session> = Vec::with_capacity(batch.max());
            tokens.clear();
            let start = i;
            for r in running[i..].iter_mut() {
                i += 1;
                if let Some(t) = r.next {
                    rows.push(&mut r.session);
                    tokens.push(t);
                    if rows.len() == batch.max() {
                        break;
                    }
                }
            }
            if rows.is_empty() {
                continue;
            }
            let result = lm.model.forward_batch(&mut batch, &mut rows, &tokens);
            stats.passes.fetch_add(1, Ordering::Relaxed);
            stats.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
            drop(rows);
            for r in running[start..i].iter_mut().filter(|r| r.next.is_some()) {
                let stepped = match &result {
                    Ok(()) => r.step(),
                    Err(e) => Err(ulm_runtime::Error::Request(e.to_string())),
                };
                if let Err(e) = stepped {
                    r.next = None;
                    fail(r, e);
                }
            }
        }
        // Retire the generations that stopped.
        let mut k = 0;
        while k < running.len() {
            if running[k].next.is_none() {
                let r = running.swap_remove(k);
                retire(&sessions, r);
            } else {
                k += 1;
            }
        }
    }
}

/// Prefills `task`'s prompt on its own and samples its first token at once.
fn admit<'a>(lm: &'a LoadedModel, sessions: &SessionPool, task: Task, running: &mut Vec<Running<'a>>) {
    let t0 = Instant::now();
    let mut session = sessions.take(&task.job.prompt);
    let generator = match Generator::start(lm, &mut session, &task.job.prompt, &task.job.opts) {
        Ok(g) => g,
        Err(e) => {
            sessions.give(session);
            let stops = StopStrings::new(Vec::new());
            report(&task.state, &task.model_id, Err(e), stops, false, &task.tx, task.job.prompt.len(), t0);
            return;
        }
    };
    let stops = StopStrings::new(task.job.stop.clone());
    let mut r = Running { task, session, generator, stops, gone: false, next: None, failed: false, t0 };
    if let Err(e) = r.step() {
        return fail_and_give(sessions, r, e);
    }
    running.push(r);
}

/// Marks a generation as failed; it is retired (and its error reported) with the others.
fn fail(r: &mut Running<'_>, e: ulm_runtime::Error) {
    eprintln!("ulm-server: batched generation with {} failed: {e}", r.task.model_id);
    r.failed = true;
    r.task.state.scheduler().counters.failed.fetch_add(1, Ordering::Relaxed);
    let _ = r.task.tx.send(GenEvent::Failed);
    r.generator.cancel();
}

fn fail_and_give(sessions: &SessionPool, mut r: Running<'_>, e: ulm_runtime::Error) {
    fail(&mut r, e);
    sessions.give(r.session);
}

/// Ends a generation that stopped: flushes its text, sends its end, frees its session and slot.
fn retire(sessions: &SessionPool, r: Running<'_>) {
    let Running { task, session, generator, mut stops, mut gone, failed, t0, .. } = r;
    sessions.give(session);
    if failed {
        return; // its failure was sent when it happened
    }
    let result: ulm_runtime::Result<Generation> = generator.finish(&mut |p| on_piece(p, &mut stops, &task.tx, &mut gone));
    report(&task.state, &task.model_id, result, stops, gone, &task.tx, task.job.prompt.len(), t0);
    drop(task.slot);
}
