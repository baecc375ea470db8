//! The collaborative generation engine of the μLM paper: a local model writes the opener of a
//! reply and shows it at once; a cloud model, asked to *continue* rather than answer, streams the
//! rest; the seam between them is repaired, the reply is labelled with its recovery mode, and the
//! latency gap is measured. When the cloud fails, the local model finishes the sentence.
//!
//! ```
//! use ulm_handoff::{Config, Event, FixedOpener, Handoff, ProviderKind, Turn};
//!
//! // A cloud that is not there: a loopback port nobody listens on.
//! let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
//! let mut cfg = Config::new(ProviderKind::Prefill, format!("http://127.0.0.1:{port}"));
//! cfg.retry.max_attempts = 1;
//! let handoff = Handoff::new(cfg).unwrap();
//!
//! // The local side; the CLI and the server implement `OpenerModel` over ulm-runtime.
//! let mut opener = FixedOpener::new("The capital of France is Paris").finish_with(", in the north.");
//! let conversation = [Turn::user("What is the capital of France?")];
//!
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let mut shown = String::new();
//! let reply = rt.block_on(handoff.run(&mut opener, &conversation, |ev| match ev {
//!     Event::OpenerPiece(t) | Event::ContinuationDelta(t) | Event::FallbackPiece(t) | Event::Notice(t) => shown += &t,
//!     _ => {}
//! }));
//! // The caller always gets the text shown so far and a typed error.
//! assert_eq!(reply.text, shown);
//! assert!(reply.text.starts_with("The capital of France is Paris, in the north. (The rest"));
//! assert_eq!(reply.error.unwrap().kind(), "connect");
//! ```
#![deny(missing_docs)]

mod cloud;
pub mod config;
pub mod contract;
mod engine;
pub mod error;
pub mod httpdate;
pub mod opener;
pub mod provider;
pub mod recovery;
pub mod seam;
pub mod timeline;
pub mod words;

pub use config::{Config, ConfigError, Overrides, ProviderKind};
pub use engine::{Event, GuardReport, Handoff, Reply};
pub use error::HandoffError;
pub use opener::{FixedOpener, OpenerError, OpenerModel, OpenerOut, Role, Turn};
pub use recovery::Mode;
pub use timeline::Timeline;
