//! A pool of idle sessions per model that doubles as a prompt cache.
//!
//! ```no_run
//! use ulm_server::sessions::SessionPool;
//! # fn f(lm: &ulm_runtime::generate::LoadedModel, prompt: &[u32]) {
//! let pool = SessionPool::new(&lm.model, 2, 1);
//! let session = pool.take(prompt); // the idle session whose cache shares most of `prompt`
//! // ... generate(lm, &mut session, prompt, ...) reuses the shared prefix ...
//! pool.give(session);
//! # }
//! ```
//!
//! Sessions are allocated once (their KV cache is sized by the model's context) and reused; a
//! request takes the idle session whose cached tokens share the longest prefix with its prompt, so
//! a multi-turn conversation or the repeated conversation of a handoff pays only for its new
//! tokens. At most `max_idle` sessions are kept; the rest are freed when given back.

use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering};

use ulm_runtime::pool::Pool;
use ulm_runtime::{Config, Model, Session};

/// Idle sessions of one model.
pub struct SessionPool {
    config: Config,
    threads: usize,
    pool: Option<Arc<Pool>>,
    max_idle: usize,
    idle: Mutex<Vec<Session>>,
    out: AtomicUsize,
    created: AtomicUsize,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool").field("idle", &self.idle()).field("in_use", &self.in_use()).finish()
    }
}

impl SessionPool {
    /// A pool for `model` keeping up to `max_idle` idle sessions, each splitting its matrix
    /// products over `threads` threads.
    pub fn new(model: &Model, max_idle: usize, threads: usize) -> Self {
        SessionPool {
            config: model.config().clone(),
            threads: threads.max(1),
            pool: None,
            max_idle,
            idle: Mutex::new(Vec::new()),
            out: AtomicUsize::new(0),
            created: AtomicUsize::new(0),
        }
    }

    /// New sessions share `pool` (a batched decode loop's) instead of owning threads.
    pub fn shared_pool(mut self, pool: Arc<Pool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The idle session sharing the longest prefix with `prompt`, or a new one.
    pub fn take(&self, prompt: &[u32]) -> Session {
        self.out.fetch_add(1, Ordering::SeqCst);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let best = idle.iter().enumerate().max_by_key(|(_, s)| s.common_prefix(prompt)).map(|(i, _)| i);
        match best {
            Some(i) => idle.swap_remove(i),
            None => {
                drop(idle);
                self.created.fetch_add(1, Ordering::SeqCst);
                let s = Session::for_config(&self.config);
                match &self.pool {
                    Some(p) => s.with_pool(p.clone()),
                    None if self.threads > 1 => s.with_threads(self.threads),
                    None => s,
                }
            }
        }
    }

    /// Returns a session taken with [`take`](Self::take); it is kept for reuse or freed.
    pub fn give(&self, session: Session) {
        self.out.fetch_sub(1, Ordering::SeqCst);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(session);
        }
    }

    /// Idle sessions kept.
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Sessions taken and not given back.
    pub fn in_use(&self) -> usize {
        self.out.load(Ordering::SeqCst)
    }

    /// Sessions allocated since the pool was made.
    pub fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }
}
