//! `POST /v1/completions`: raw text completion, used to continue a prompt we templated ourselves.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::{Stop, StreamOptions, Usage};

/// `prompt`: one string or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// `"prompt": "..."`.
    Text(String),
    /// `"prompt": ["...", "..."]`.
    Many(Vec<String>),
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::Text(String::new())
    }
}

impl Prompt {
    /// The first prompt's text.
    pub fn first(&self) -> &str {
        match self {
            Prompt::Text(s) => s,
            Prompt::Many(v) => v.first().map(String::as_str).unwrap_or(""),
        }
    }
}

/// A text completion request.
///
/// ```
/// use ulm_openai::completion::{CompletionRequest, Prompt};
/// let req = CompletionRequest { prompt: Prompt::Text("<|im_start|>assistant\nThe".into()), max_tokens: Some(8),
///     ..CompletionRequest::new("m") };
/// assert_eq!(serde_json::to_value(&req).unwrap()["max_tokens"], 8);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// Model name.
    #[serde(default)]
    pub model: String,
    /// The text to continue.
    #[serde(default)]
    pub prompt: Prompt,
    /// Stream the reply as SSE chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Token limit of the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
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
    /// Repeat the prompt in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Every other field, passed through unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CompletionRequest {
    /// A request for `model` with an empty prompt.
    pub fn new(model: impl Into<String>) -> Self {
        CompletionRequest { model: model.into(), ..Default::default() }
    }
}

/// One choice of a completion (or of a streamed chunk).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// Position among the choices.
    #[serde(default)]
    pub index: u32,
    /// The generated text (in a stream: the next piece).
    #[serde(default)]
    pub text: String,
    /// `"stop"`, `"length"`, or `null` before the last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Token log-probabilities, if asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

/// A text completion. Streamed chunks have the same shape (see [`CompletionChunk`]), each holding
/// the next piece in `choices[0].text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    /// Completion id.
    #[serde(default)]
    pub id: String,
    /// Always `"text_completion"`.
    #[serde(default = "text_completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Model that answered.
    #[serde(default)]
    pub model: String,
    /// The choices.
    #[serde(default)]
    pub choices: Vec<CompletionChoice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn text_completion_object() -> String {
    "text_completion".into()
}

/// A streamed completion chunk: the same shape as a whole completion.
pub type CompletionChunk = CompletionResponse;

impl CompletionResponse {
    /// A one-choice completion holding `text`; `finish_reason` is `None` for a stream chunk that is
    /// not the last.
    pub fn new(id: impl Into<String>, model: impl Into<String>, created: u64, text: impl Into<String>, finish_reason: Option<&str>) -> Self {
        CompletionResponse {
            id: id.into(),
            object: text_completion_object(),
            created,
            model: model.into(),
            choices: vec![CompletionChoice { index: 0, text: text.into(), finish_reason: finish_reason.map(str::to_string), logprobs: None }],
            usage: None,
            extra: Map::new(),
        }
    }

    /// The text of choice 0.
    pub fn text(&self) -> &str {
        self.choices.iter().find(|c| c.index == 0).map(|c| c.text.as_str()).unwrap_or("")
    }

    /// The finish reason of choice 0.
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.iter().find(|c| c.index == 0).and_then(|c| c.finish_reason.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_round_trips() {
        let wire = json!({"model": "m", "prompt": "abc", "stream": true, "max_tokens": 4, "temperature": 0.5,
            "top_p": 0.9, "seed": 1, "stop": ["<|im_end|>"], "echo": false, "n_probs": 2});
        let req: CompletionRequest = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(req.prompt.first(), "abc");
        assert_eq!(req.extra["n_probs"], 2);
        assert_eq!(serde_json::to_value(&req).unwrap(), wire);
        let many: CompletionRequest = serde_json::from_str(r#"{"prompt":["a","b"]}"#).unwrap();
        assert_eq!(many.prompt, Prompt::Many(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn response_and_chunk_parse() {
        let r: CompletionResponse = serde_json::from_str(
            r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m",
                "choices":[{"text":" Paris","index":0,"logprobs":null,"finish_reason":"length"}],
                "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!((r.text(), r.finish_reason()), (" Paris", Some("length")));
        // llama.cpp's stream chunks.
        let c: CompletionChunk = serde_json::from_str(
            r#"{"choices":[{"text":" is","index":0,"logprobs":null,"finish_reason":null}],"created":1,"model":"m","system_fingerprint":"b1","object":"text_completion","id":"x"}"#,
        )
        .unwrap();
        assert_eq!((c.text(), c.finish_reason()), (" is", None));
        let built = CompletionResponse::new("x", "m", 1, "hi", Some("stop"));
        assert_eq!(serde_json::to_value(&built).unwrap()["choices"][0], json!({"index": 0, "text": "hi", "finish_reason": "stop"}));
    }
}
