//! Evaluation of the handoff's local side and its seams: opener plausibility under a scorer model
//! (mean per-token log-likelihood, top-k acceptance), seam metrics of a handoff reply (repetition,
//! restart, continuation log-likelihood), and the report (`report.md` + PNG plots) recomputed from
//! the per-prompt rows. `ulm eval` drives it.
//!
//! ```no_run
//! use ulm_eval::{opener, score};
//! use ulm_runtime::{Precision, Session, generate::LoadedModel};
//!
//! let lm = LoadedModel::open("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), Precision::Native, Some(1024))?;
//! let mut s = Session::new(&lm.model);
//! let o = opener(&lm, &mut s, "What is a comet?", 8, 42, 0.0, 1, 0.0)?;
//! let sc = score(&lm, &mut s, "What is a comet?", "", &o.text, 10)?;
//! println!("{:.3} nats/token, {}/{} in top-10", sc.ll_sum / sc.tokens as f64, sc.accepted, sc.tokens);
//! # Ok::<(), ulm_eval::EvalError>(())
//! ```
#![deny(missing_docs)]

mod error;
mod metrics;
mod plots;
mod report;
mod rows;

pub use error::EvalError;
pub use metrics::{Opener, Score, first_words, opener, params, repeats_opener, score, seed_of};
/// The restart flag of a handoff row: the handoff's own heuristic, so that the report's
/// `restarts` and the engine's `restart` mode use one rule (measured against
/// `data/eval/seams.jsonl` in `tests/seams.rs`).
pub use ulm_handoff::recovery::restarts;
pub use ulm_runtime::copy::names_topic;
pub use report::{Group, MODES, PAPER_POINTS, by_category, category_of, opener_repeats_itself, seam_labels, sha256_file, short, summarize, write_report};
pub use rows::{HandoffRow, RivalRow, Row, read_rows};
