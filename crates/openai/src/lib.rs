//! OpenAI (and Anthropic Messages) wire types plus a server-sent-events encoder and incremental
//! decoder; serde only, no IO.
//!
//! ```
//! use ulm_openai::chat::{ChatCompletionChunk, ChatCompletionRequest, ChatMessage};
//! use ulm_openai::sse::{SseDecoder, SseEvent};
//!
//! // A client asks a server to continue a reply that has already begun.
//! let mut req = ChatCompletionRequest::new("smollm2", vec![
//!     ChatMessage::user("What is the capital of France?"),
//!     ChatMessage::assistant("The capital of France is"),
//! ]);
//! req.stream = Some(true);
//! req.continue_final_message = Some(true);
//! req.add_generation_prompt = Some(false);
//! let body = serde_json::to_string(&req).unwrap();
//! assert!(body.contains(r#""continue_final_message":true"#));
//!
//! // The server streams chunks back as SSE; the decoder takes the bytes however they are split.
//! let chunk = ChatCompletionChunk::delta("id", "smollm2", 0, None, " Paris.");
//! let wire = SseEvent::data(serde_json::to_string(&chunk).unwrap()).encode() + &SseEvent::done().encode();
//! let (a, b) = wire.as_bytes().split_at(17);
//! let mut dec = SseDecoder::new();
//! let mut text = String::new();
//! for ev in dec.feed(a).into_iter().chain(dec.feed(b)) {
//!     let ev = ev.unwrap();
//!     if ev.is_done() { break; }
//!     text += serde_json::from_str::<ChatCompletionChunk>(&ev.data).unwrap().text();
//! }
//! assert_eq!(text, " Paris.");
//! ```
#![deny(missing_docs)]

pub mod anthropic;
pub mod chat;
pub mod completion;
pub mod error;
pub mod models;
pub mod sse;

pub use chat::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Role};
pub use error::ErrorBody;
pub use sse::{SseDecoder, SseError, SseEvent};
