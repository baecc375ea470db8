//! ulm-runtime: the on-device μLM engine — Llama/Swen decoder, int8 and 4-bit weights, KV
//! cache, seeded sampling and streaming generation with word-boundary stops.
//!
//! ```no_run
//! use ulm_runtime::{Model, Session, Config};
//! let model = Model::random(Config::micro_8m(), 1);
//! let mut session = Session::new(&model);
//! let logits = model.forward(&mut session, &[1, 2, 3]).unwrap();
//! println!("next token: {}", ulm_runtime::sampler::argmax(logits));
//! ```
//!
//! No async runtime, no HTTP, no autograd: it builds for small ARM devices and wasm.
#![deny(missing_docs)]

pub mod config;
pub mod copy;
pub mod error;
pub mod load;
pub mod model;
pub mod ops;
pub mod pool;
pub mod quant;
pub mod sampler;
pub mod generate;
pub mod session;
pub mod tokenizer;
pub mod utf8;

pub use config::{Config, RopeStyle};
pub use error::{Error, Result};
pub use model::Model;
pub use quant::Precision;
pub use sampler::{Sampler, Sampling};
pub use session::{Batch, Session};

#[cfg(test)]
pub(crate) mod testutil {
    pub use crate::sampler::Rng;
}
