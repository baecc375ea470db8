//! Anthropic Messages API (`POST /v1/messages`): request, reply and stream events.
//!
//! A trailing assistant message is a *prefill*: the model continues it. Anthropic rejects a
//! prefill that ends in whitespace, and its newest models reject prefill altogether.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::{Content, ContentPart};
use crate::sse::SseEvent;

/// The `anthropic-version` header value this module speaks.
pub const API_VERSION: &str = "2023-06-01";

/// Who wrote a message (system text goes in [`MessagesRequest::system`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnthropicRole {
    /// The person.
    User,
    /// The model.
    Assistant,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnthropicMessage {
    /// Who wrote it.
    pub role: AnthropicRole,
    /// A string or a list of content blocks.
    pub content: Content,
}

impl AnthropicMessage {
    /// A message with plain text.
    pub fn new(role: AnthropicRole, text: impl Into<String>) -> Self {
        AnthropicMessage { role, content: Content::Text(text.into()) }
    }
}

/// A Messages API request.
///
/// ```
/// use ulm_openai::anthropic::{AnthropicMessage, AnthropicRole::*, MessagesRequest};
/// let req = MessagesRequest::new("claude-x", 64, vec![
///     AnthropicMessage::new(User, "Capital of France?"),
///     AnthropicMessage::new(Assistant, "The capital of France is"), // prefill: no trailing space
/// ]);
/// assert_eq!(serde_json::to_value(&req).unwrap()["max_tokens"], 64);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// Model name.
    pub model: String,
    /// Token limit of the reply (required by the API).
    pub max_tokens: u32,
    /// The conversation; user and assistant alternate, a trailing assistant message is a prefill.
    pub messages: Vec<AnthropicMessage>,
    /// System prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Content>,
    /// Stream the reply as SSE events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Every other field, passed through unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MessagesRequest {
    /// A request with the required fields only.
    pub fn new(model: impl Into<String>, max_tokens: u32, messages: Vec<AnthropicMessage>) -> Self {
        MessagesRequest {
            model: model.into(),
            max_tokens,
            messages,
            system: None,
            stream: None,
            temperature: None,
            top_p: None,
            stop_sequences: None,
            extra: Map::new(),
        }
    }
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AnthropicUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: u32,
    /// Generated tokens.
    #[serde(default)]
    pub output_tokens: u32,
}

/// A non-streamed reply. With a prefill, `content` holds only the continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// Message id.
    #[serde(default)]
    pub id: String,
    /// Always `"message"`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Always assistant.
    pub role: AnthropicRole,
    /// Content blocks.
    #[serde(default)]
    pub content: Vec<ContentPart>,
    /// Model that answered.
    #[serde(default)]
    pub model: String,
    /// `"end_turn"`, `"max_tokens"`, `"stop_sequence"`, ...
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Token counts.
    #[serde(default)]
    pub usage: Option<AnthropicUsage>,
}

impl MessagesResponse {
    /// The text of all text blocks.
    pub fn text(&self) -> String {
        self.content.iter().filter_map(|b| b.text.as_deref()).collect()
    }
}

/// The `error` object of an error event or error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnthropicError {
    /// e.g. `overloaded_error`, `invalid_request_error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// What a `content_block_delta` adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// More text.
    TextDelta {
        /// The next piece.
        text: String,
    },
    /// Part of a tool call's JSON input.
    InputJsonDelta {
        /// The next piece of JSON.
        partial_json: String,
    },
    /// Any delta kind this module does not model (thinking, signatures, ...).
    #[serde(other)]
    Other,
}

/// The `delta` of a `message_delta` event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// Why generation stopped.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The stop string that matched.
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// One event of a streamed reply; the SSE `event:` name equals the `type` field.
///
/// ```
/// use ulm_openai::anthropic::StreamEvent;
/// let ev: StreamEvent = serde_json::from_str(
///     r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" Paris"}}"#).unwrap();
/// assert_eq!(ev.text(), Some(" Paris"));
/// assert_eq!(ev.to_sse().event.as_deref(), Some("content_block_delta"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The reply starts; `message` is a [`MessagesResponse`] with empty content.
    MessageStart {
        /// The message so far.
        message: Value,
    },
    /// A content block starts.
    ContentBlockStart {
        /// Block index.
        index: u32,
        /// The block so far.
        content_block: Value,
    },
    /// A content block grows.
    ContentBlockDelta {
        /// Block index.
        index: u32,
        /// What it adds.
        delta: BlockDelta,
    },
    /// A content block ends.
    ContentBlockStop {
        /// Block index.
        index: u32,
    },
    /// Top-level changes: the stop reason and the final usage.
    MessageDelta {
        /// The changes.
        #[serde(default)]
        delta: MessageDeltaBody,
        /// Cumulative usage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Value>,
    },
    /// The reply is complete.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// The server failed mid-stream.
    Error {
        /// What went wrong.
        error: AnthropicError,
    },
    /// An event type this module does not know; the API may add new ones at any time.
    #[serde(other)]
    Unknown,
}

impl StreamEvent {
    /// The text a `text_delta` adds.
    pub fn text(&self) -> Option<&str> {
        match self {
            StreamEvent::ContentBlockDelta { delta: BlockDelta::TextDelta { text }, .. } => Some(text),
            _ => None,
        }
    }

    /// The `type` name, which is also the SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Unknown => "unknown",
        }
    }

    /// A `text_delta` event for block `index`.
    pub fn text_delta(index: u32, text: impl Into<String>) -> Self {
        StreamEvent::ContentBlockDelta { index, delta: BlockDelta::TextDelta { text: text.into() } }
    }

    /// The event as a named SSE event.
    pub fn to_sse(&self) -> SseEvent {
        // Serializing these types cannot fail: every field is a string, a number or a JSON value.
        SseEvent::named(self.name(), serde_json::to_string(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseDecoder;
    use serde_json::json;

    #[test]
    fn request_with_prefill_round_trips() {
        let wire = json!({
            "model": "claude-x", "max_tokens": 32, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
            "stream": true, "temperature": 0.0, "stop_sequences": ["\n\n"], "metadata": {"user_id": "u"}
        });
        let req: MessagesRequest = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(req.messages[1].role, AnthropicRole::Assistant);
        assert_eq!(req.extra["metadata"]["user_id"], "u");
        assert_eq!(serde_json::to_value(&req).unwrap(), wire);
    }

    #[test]
    fn reply_parses() {
        let r: MessagesResponse = serde_json::from_str(
            r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":" Paris."}],
                "model":"claude-x","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!(r.text(), " Paris.");
        assert_eq!(r.usage.unwrap().output_tokens, 3);
    }

    #[test]
    fn a_real_looking_stream_decodes() {
        let wire = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" Paris\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n\
event: brand_new\ndata: {\"type\":\"brand_new\",\"x\":1}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let events: Vec<StreamEvent> = SseDecoder::new()
            .feed(wire.as_bytes())
            .into_iter()
            .map(|e| serde_json::from_str(&e.unwrap().data).unwrap())
            .collect();
        let text: String = events.iter().filter_map(StreamEvent::text).collect();
        assert_eq!(text, " Paris");
        assert!(matches!(events[4], StreamEvent::ContentBlockDelta { delta: BlockDelta::Other, .. }));
        assert!(matches!(&events[6], StreamEvent::MessageDelta { delta, .. } if delta.stop_reason.as_deref() == Some("end_turn")));
        assert_eq!(events[7], StreamEvent::Unknown);
        assert_eq!(events[8], StreamEvent::MessageStop);
    }

    #[test]
    fn error_event_parses_and_encodes() {
        let ev: StreamEvent =
            serde_json::from_str(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#).unwrap();
        assert_eq!(ev, StreamEvent::Error { error: AnthropicError { kind: "overloaded_error".into(), message: "Overloaded".into() } });
        let sse = ev.to_sse();
        assert_eq!(sse.event.as_deref(), Some("error"));
        let back: StreamEvent = serde_json::from_str(&sse.data).unwrap();
        assert_eq!(back, ev);
        let stop = StreamEvent::MessageStop.to_sse();
        assert_eq!(stop.encode(), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert_eq!(StreamEvent::text_delta(0, "x").to_sse().data, r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#);
    }
}
