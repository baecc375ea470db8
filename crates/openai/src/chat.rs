//! `POST /v1/chat/completions`: request, response and streaming chunk.
//!
//! Fields every server we talk to understands are typed; anything else a client sends (tools,
//! logprobs, server-specific knobs) lands in `extra` and is written back unchanged, so a proxy
//! built on these types passes it through.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// OpenAI's newer name for system instructions.
    Developer,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl Role {
    /// The wire name (`"user"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// Message content: a plain string, or a list of typed parts (`{"type":"text","text":...}`).
/// Anthropic uses the same part shape for its content blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// `"content": "..."`.
    Text(String),
    /// `"content": [{"type": "text", "text": "..."}, ...]`.
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text of the content; parts that are not text (images, tool calls) are skipped.
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts.iter().filter_map(|p| p.text.as_deref()).collect(),
        }
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Content::Text(s.to_string())
    }
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Content::Text(s)
    }
}

/// One typed part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `"text"`, `"image_url"`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `"text"` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Every other field, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ContentPart {
    /// A `{"type":"text","text":...}` part.
    pub fn text(text: impl Into<String>) -> Self {
        ContentPart { kind: "text".into(), text: Some(text.into()), extra: Map::new() }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// What it says; `null` for an assistant message that only calls tools.
    #[serde(default)]
    pub content: Option<Content>,
    /// Optional author name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// DeepSeek / Mistral extension: on the last, assistant message, asks the server to continue
    /// it instead of starting a new reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<bool>,
    /// Every other field (tool calls, reasoning content, ...), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A message with plain text content.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            prefix: None,
            extra: Map::new(),
        }
    }

    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }

    /// A user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }

    /// An assistant message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }

    /// The message's text (empty when it has no content).
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// `"stop": "\n"`.
    One(String),
    /// `"stop": ["\n", "User:"]`.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Ask for a last chunk with empty `choices` and the token `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// A chat completion request.
///
/// ```
/// use ulm_openai::chat::{ChatCompletionRequest, ChatMessage};
/// let mut req = ChatCompletionRequest::new("m", vec![ChatMessage::user("Hi"), ChatMessage::assistant("Hello,")]);
/// req.continue_final_message = Some(true);
/// req.add_generation_prompt = Some(false);
/// let json = serde_json::to_value(&req).unwrap();
/// assert_eq!(json["continue_final_message"], true);
/// assert!(json.get("temperature").is_none()); // unset fields stay off the wire
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model name; some local servers accept any or none.
    #[serde(default)]
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Stream the reply as SSE chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Token limit of the reply (older name, still the one most servers read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Token limit of the reply (OpenAI's newer name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Seed for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// vLLM / SGLang / TGI / llama.cpp extension: continue the last (assistant) message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_final_message: Option<bool>,
    /// vLLM / llama.cpp extension: append the assistant header; must be false with
    /// `continue_final_message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_generation_prompt: Option<bool>,
    /// Every other field, passed through unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionRequest {
    /// A request with `model` and `messages` and nothing else set.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        ChatCompletionRequest { model: model.into(), messages, ..Default::default() }
    }

    /// The reply's token limit, whichever of the two names the client used.
    pub fn token_limit(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u32,
    /// The sum.
    #[serde(default)]
    pub total_tokens: u32,
}

impl Usage {
    /// Usage with the total filled in.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

/// One choice of a non-streamed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Position among the choices.
    #[serde(default)]
    pub index: u32,
    /// The reply.
    pub message: ChatMessage,
    /// `"stop"`, `"length"`, ...
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A non-streamed chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    /// Completion id.
    #[serde(default)]
    pub id: String,
    /// Always `"chat.completion"`.
    #[serde(default = "chat_completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Model that answered.
    #[serde(default)]
    pub model: String,
    /// The choices (one unless `n` was set).
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field (e.g. llama.cpp's `timings`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn chat_completion_object() -> String {
    "chat.completion".into()
}

fn chunk_object() -> String {
    "chat.completion.chunk".into()
}

impl ChatCompletionResponse {
    /// A one-choice reply holding `text`.
    pub fn new(id: impl Into<String>, model: impl Into<String>, created: u64, text: impl Into<String>, finish_reason: &str, usage: Option<Usage>) -> Self {
        ChatCompletionResponse {
            id: id.into(),
            object: chat_completion_object(),
            created,
            model: model.into(),
            choices: vec![ChatChoice {
                index: 0,
                message: ChatMessage::assistant(text),
                finish_reason: Some(finish_reason.to_string()),
            }],
            usage,
            extra: Map::new(),
        }
    }

    /// The text of the first choice.
    pub fn text(&self) -> String {
        self.choices.first().map(|c| c.message.text()).unwrap_or_default()
    }
}

/// What a chunk adds to a choice.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delta {
    /// Set on the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The next piece of text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Every other field (tool call deltas, reasoning content, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a streaming chunk.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Position among the choices.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the last chunk of the choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// One `data:` payload of a streamed chat completion.
///
/// ```
/// use ulm_openai::chat::ChatCompletionChunk;
/// let c: ChatCompletionChunk = serde_json::from_str(
///     r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m",
///         "choices":[{"index":0,"delta":{"content":" Paris"},"finish_reason":null}]}"#).unwrap();
/// assert_eq!(c.text(), " Paris");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Completion id (the same on every chunk).
    #[serde(default)]
    pub id: String,
    /// Always `"chat.completion.chunk"`.
    #[serde(default = "chunk_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Model that answered.
    #[serde(default)]
    pub model: String,
    /// Usually one choice; empty on the final usage-only chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Token counts, on the last chunk when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionChunk {
    /// A chunk carrying `text` for choice 0 (`role` is set on the first chunk of a reply).
    pub fn delta(id: impl Into<String>, model: impl Into<String>, created: u64, role: Option<Role>, text: impl Into<String>) -> Self {
        ChatCompletionChunk {
            id: id.into(),
            object: chunk_object(),
            created,
            model: model.into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta { role, content: Some(text.into()), extra: Map::new() },
                finish_reason: None,
            }],
            usage: None,
            extra: Map::new(),
        }
    }

    /// The closing chunk of choice 0: empty delta and a finish reason.
    pub fn finish(id: impl Into<String>, model: impl Into<String>, created: u64, finish_reason: &str, usage: Option<Usage>) -> Self {
        ChatCompletionChunk {
            id: id.into(),
            object: chunk_object(),
            created,
            model: model.into(),
            choices: vec![ChunkChoice { index: 0, delta: Delta::default(), finish_reason: Some(finish_reason.to_string()) }],
            usage,
            extra: Map::new(),
        }
    }

    /// The text this chunk adds to choice 0 (empty if none).
    pub fn text(&self) -> &str {
        self.choices.iter().find(|c| c.index == 0).and_then(|c| c.delta.content.as_deref()).unwrap_or("")
    }

    /// The finish reason of choice 0, on its last chunk.
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.iter().find(|c| c.index == 0).and_then(|c| c.finish_reason.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_round_trips_with_extensions_and_extras() {
        let wire = json!({
            "model": "smollm2",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]},
                {"role": "assistant", "content": "The capital is", "prefix": true}
            ],
            "stream": true, "max_tokens": 16, "max_completion_tokens": 8, "temperature": 0.0,
            "top_p": 0.9, "seed": 7, "stop": ["\n"],
            "continue_final_message": true, "add_generation_prompt": false,
            "cache_prompt": true, "logit_bias": {"50256": -100}
        });
        let req: ChatCompletionRequest = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(req.messages[1].text(), "Capital of France?");
        assert_eq!(req.messages[2].prefix, Some(true));
        assert_eq!(req.token_limit(), Some(8));
        assert_eq!(req.stop, Some(Stop::Many(vec!["\n".into()])));
        assert_eq!(req.extra["cache_prompt"], json!(true));
        assert_eq!(serde_json::to_value(&req).unwrap(), wire);
    }

    #[test]
    fn minimal_request_parses_and_writes_only_what_is_set() {
        let req: ChatCompletionRequest =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}],"stop":"x"}"#).unwrap();
        assert_eq!(req.model, "");
        assert_eq!(req.stop, Some(Stop::One("x".into())));
        let out = serde_json::to_value(ChatCompletionRequest::new("m", vec![ChatMessage::user("hi")])).unwrap();
        assert_eq!(out, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    }

    #[test]
    fn unknown_role_is_an_error() {
        let r = serde_json::from_str::<ChatMessage>(r#"{"role":"robot","content":"x"}"#);
        assert!(r.is_err());
    }

    #[test]
    fn response_parses_openai_and_llama_cpp_shapes() {
        let openai = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Paris.","refusal":null},"logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}"#;
        let r: ChatCompletionResponse = serde_json::from_str(openai).unwrap();
        assert_eq!(r.text(), "Paris.");
        assert_eq!(r.usage, Some(Usage::new(10, 2)));
        let llama = r#"{"choices":[{"finish_reason":"length","index":0,"message":{"role":"assistant","content":"Hi"}}],
            "created":1,"model":"x","object":"chat.completion","usage":{"completion_tokens":1,"prompt_tokens":3,"total_tokens":4},
            "id":"chatcmpl-abc","timings":{"predicted_ms":12.5}}"#;
        let r: ChatCompletionResponse = serde_json::from_str(llama).unwrap();
        assert_eq!(r.choices[0].finish_reason.as_deref(), Some("length"));
        assert!(r.extra.contains_key("timings"));
        let built = ChatCompletionResponse::new("id", "m", 5, "ok", "stop", None);
        let back: ChatCompletionResponse = serde_json::from_value(serde_json::to_value(&built).unwrap()).unwrap();
        assert_eq!(back, built);
    }

    #[test]
    fn chunks_parse_role_content_finish_and_usage() {
        let first: ChatCompletionChunk = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}],"created":1,"id":"a","model":"m","object":"chat.completion.chunk"}"#,
        )
        .unwrap();
        assert_eq!(first.text(), "");
        assert_eq!(first.choices[0].delta.role, Some(Role::Assistant));
        let last: ChatCompletionChunk = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"created":1,"id":"a","model":"m","object":"chat.completion.chunk"}"#,
        )
        .unwrap();
        assert_eq!(last.finish_reason(), Some("stop"));
        let usage: ChatCompletionChunk =
            serde_json::from_str(r#"{"id":"a","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#).unwrap();
        assert_eq!(usage.usage.unwrap().total_tokens, 8);
        let built = ChatCompletionChunk::delta("a", "m", 1, Some(Role::Assistant), " hi");
        let json = serde_json::to_value(&built).unwrap();
        assert_eq!(json["choices"][0]["delta"], json!({"role": "assistant", "content": " hi"}));
        assert_eq!(json["object"], "chat.completion.chunk");
        let fin = serde_json::to_value(ChatCompletionChunk::finish("a", "m", 1, "stop", Some(Usage::new(1, 2)))).unwrap();
        assert_eq!(fin["choices"][0]["finish_reason"], "stop");
        assert_eq!(fin["usage"]["total_tokens"], 3);
    }
}
