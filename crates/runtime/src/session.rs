//! The mutable half of inference: KV cache and scratch buffers, allocated once per session.
//!
//! ```no_run
//! # use ulm_runtime::{Model, Session};
//! # fn f(model: &Model) -> ulm_runtime::Result<()> {
//! let mut session = Session::new(model);
//! let logits = model.forward(&mut session, &[1, 2, 3])?; // appends 3 tokens at session.pos()
//! session.truncate(1); // roll back to the first token
//! # Ok(()) }
//! ```
//!
//! [`Batch`] holds the scratch for stepping several sessions together.

use std::sync::Arc;

use crate::config::Config;
use crate::model::Model;
use crate::pool::Pool;
use crate::quant::QActs;

/// Tokens one forward call processes at a time; longer prompts are fed in chunks.
pub const MAX_BATCH: usize = 64;

/// KV cache, scratch and position of one conversation. Many sessions can share one model.
pub struct Session {
    pub(crate) pos: usize,
    pub(crate) max_seq: usize,
    pub(crate) k_cache: Vec<f32>, // (n_layers, max_seq, kv_dim)
    pub(crate) v_cache: Vec<f32>, // (n_layers, max_seq, kv_dim)
    pub(crate) scratch: Scratch,  // MAX_BATCH rows
    pub(crate) logits: Vec<f32>,  // (vocab)
    pub(crate) pool: Option<Arc<Pool>>,
    pub(crate) history: Vec<u32>, // (max_seq) the tokens in the cache, capacity reserved up front
    /// A second cache that scores candidate replies without the question
    /// ([`crate::generate::Candidates::pmi`]), made on first use and kept.
    pub(crate) side: Option<Box<Session>>,
}

/// Scratch for advancing up to `max` sessions by one token each in one forward pass
/// ([`Model::forward_batch`]): each weight matrix is read once for all of them, and each session
/// attends over its own KV cache. Sized once; a pass allocates nothing.
///
/// ```no_run
/// # use ulm_runtime::{Model, Session, session::Batch};
/// # fn f(model: &Model, a: &mut Session, b: &mut Session) -> ulm_runtime::Result<()> {
/// let mut batch = Batch::new(model, 32);
/// model.forward_batch(&mut batch, &mut [a, b], &[17, 42])?; // a gets token 17, b token 42
/// # Ok(()) }
/// ```
pub struct Batch {
    pub(crate) max: usize,
    pub(crate) scratch: Scratch, // max rows
    pub(crate) logits: Vec<f32>, // (max, vocab) before they are copied into each session
    pub(crate) pool: Option<Arc<Pool>>,
}

impl Batch {
    /// Scratch for batches of up to `max` sessions of `model` (single-threaded).
    pub fn new(model: &Model, max: usize) -> Batch {
        let c = model.config();
        let max = max.max(1);
        Batch { max, scratch: Scratch::new(c, max), logits: vec![0.0; max * c.vocab_size], pool: None }
    }

    /// Splits each pass's matrix products across `n` threads (a pool owned by this batch).
    pub fn with_threads(mut self, n: usize) -> Batch {
        self.pool = (n > 1).then(|| Arc::new(Pool::new(n)));
        self
    }

    /// Shares an existing pool.
    pub fn with_pool(mut self, pool: Arc<Pool>) -> Batch {
        self.pool = Some(pool);
        self
    }

    /// Most sessions one pass takes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The pool the passes use, if any (sessions may share it for their prefill).
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        self.pool.as_ref()
    }
}

/// Activations of up to `rows` tokens going through the blocks together: the tokens of one
/// session's prompt chunk, or one token of each session of a [`Batch`]. `Default` is empty (no
/// allocation), so the model can take it out of a session while it reads that session's cache.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) x: Vec<f32>,    // (rows, dim) residual stream
    pub(crate) xb: Vec<f32>,   // (rows, max(dim, q_dim)) normed input / attention output
    pub(crate) q: Vec<f32>,    // (rows, q_dim)
    pub(crate) k: Vec<f32>,    // (rows, kv_dim)
    pub(crate) v: Vec<f32>,    // (rows, kv_dim)
    pub(crate) att: Vec<f32>,  // (n_heads, max_seq) attention scores, reused row after row
    pub(crate) proj: Vec<f32>, // (rows, dim)
    pub(crate) hb: Vec<f32>,   // (rows, ffn_dim)
    pub(crate) hb2: Vec<f32>,  // (rows, ffn_dim)
    pub(crate) xq: QActs,      // (rows, max(dim, q_dim, ffn_dim)) quantized activations
}

impl Scratch {
    pub(crate) fn new(c: &Config, rows: usize) -> Scratch {
        let wide = c.dim.max(c.q_dim());
        let widest = wide.max(c.ffn_dim);
        Scratch {
            x: vec![0.0; rows * c.dim],
            xb: vec![0.0; rows * wide],
            q: vec![0.0; rows * c.q_dim()],
            k: vec![0.0; rows * c.kv_dim()],
            v: vec![0.0; rows * c.kv_dim()],
            att: vec![0.0; c.n_heads * c.max_seq_len],
            proj: vec![0.0; rows * c.dim],
            hb: vec![0.0; rows * c.ffn_dim],
            hb2: vec![0.0; rows * c.ffn_dim],
            xq: QActs::with_len(rows * widest.next_multiple_of(crate::quant::BLOCK)),
        }
    }

    fn bytes(&self) -> usize {
        4 * (self.x.len() + self.xb.len() + self.q.len() + self.k.len() + self.v.len() + self.att.len() + self.proj.len() + self.hb.len() + self.hb2.len())
            + self.xq.qs.len()
            + 8 * self.xq.d.len()
            + self.xq.rqs.len()
            + 4 * self.xq.rd.len()
    }
}

impl Session {
    /// A session sized for `model`'s config (single-threaded).
    pub fn new(model: &Model) -> Session {
        Session::for_config(model.config())
    }

    /// A session sized for `c`.
    pub fn for_config(c: &Config) -> Session {
        Session {
            pos: 0,
            max_seq: c.max_seq_len,
            k_cache: vec![0.0; c.n_layers * c.max_seq_len * c.kv_dim()],
            v_cache: vec![0.0; c.n_layers * c.max_seq_len * c.kv_dim()],
            scratch: Scratch::new(c, MAX_BATCH),
            logits: vec![0.0; c.vocab_size],
            pool: None,
            history: Vec::with_capacity(c.max_seq_len),
            side: None,
        }
    }

    /// Splits matrix products across `n` threads (a pool owned by this session).
    pub fn with_threads(mut self, n: usize) -> Session {
        self.pool = (n > 1).then(|| Arc::new(Pool::new(n)));
        self
    }

    /// Shares an existing pool (sessions of one server can share the cores).
    pub fn with_pool(mut self, pool: Arc<Pool>) -> Session {
        self.pool = Some(pool);
        self
    }

    /// Number of tokens in the cache: the position of the next token.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Longest sequence this session holds.
    pub fn max_seq(&self) -> usize {
        self.max_seq
    }

    /// Forgets every token from `pos` on (rollback); `truncate(0)` resets the session.
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
        self.history.truncate(self.pos);
    }

    /// The tokens in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.history
    }

    /// How many leading tokens of `prompt` the cache already holds.
    pub fn common_prefix(&self, prompt: &[u32]) -> usize {
        self.history.iter().zip(prompt).take_while(|(a, b)| a == b).count()
    }

    /// Logits of the last token forwarded.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Bytes this session holds (KV cache and scratch, and its side cache once made).
    pub fn bytes(&self) -> usize {
        4 * (self.k_cache.len() + self.v_cache.len() + self.logits.len()) + self.scratch.bytes() + self.side.as_ref().map_or(0, |s| s.bytes())
    }
}
