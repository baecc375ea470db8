//! The local side: the conversation type and the [`OpenerModel`] seam that ulm-runtime fills.

use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use ulm_openai::chat::Role;

use crate::words::{count_words, first_words};

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who said it (system, user or assistant).
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Turn {
    /// A turn.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Turn { role, content: content.into() }
    }

    /// A system turn.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// A turn from an OpenAI chat message (its text parts joined).
impl From<&ulm_openai::chat::ChatMessage> for Turn {
    fn from(m: &ulm_openai::chat::ChatMessage) -> Self {
        Turn { role: m.role, content: m.text() }
    }
}

/// What [`OpenerModel::write_opener`] produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpenerOut {
    /// The opener: the concatenation of the pieces streamed, ending at a word boundary.
    pub text: String,
    /// True if the model ended its turn (EOS) before reaching the word budget.
    pub ended: bool,
    /// Tokens generated.
    pub tokens: usize,
    /// How sure the model was, in `0.0..=1.0`, higher is surer (for instance the mean probability
    /// of the sampled tokens, or `exp(-mean entropy)`); `None` if the model does not say. The
    /// pre-handoff guard compares it with `guard.min_confidence`.
    pub confidence: Option<f32>,
}

/// The opener's confidence as the shipped local side reports it: the mean probability of the
/// sampled tokens, from their log-probabilities (natural log); `None` for no tokens.
///
/// ```
/// let c = ulm_handoff::opener::mean_probability(&[0.0, (0.5f32).ln()]).unwrap();
/// assert!((c - 0.75).abs() < 1e-6);
/// assert_eq!(ulm_handoff::opener::mean_probability(&[]), None);
/// ```
pub fn mean_probability(logprobs: &[f32]) -> Option<f32> {
    (!logprobs.is_empty()).then(|| logprobs.iter().map(|lp| lp.exp()).sum::<f32>() / logprobs.len() as f32)
}

/// The local model failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the local opener model failed: {message}")]
pub struct OpenerError {
    /// What went wrong, in the model's words.
    pub message: String,
}

impl OpenerError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        OpenerError { message: message.into() }
    }
}

/// Writes the opener locally. The CLI and the server implement it over ulm-runtime (a session of
/// the μLM); [`FixedOpener`] is a scripted stand-in for tests and demos.
///
/// Both methods are synchronous and run on the caller's thread; inside a multi-threaded tokio
/// runtime the engine wraps them in `block_in_place`, so a server's other tasks keep running.
pub trait OpenerModel: Send {
    /// Streams the opener for `conversation` (ending with the user's turn) through `on_piece`, piece
    /// by piece as it is decoded (text, never half a UTF-8 character), and stops after `words`
    /// words at a word boundary (when the next word starts, then cut) or at the model's end of
    /// turn. The pieces concatenated must equal the returned `text`.
    fn write_opener(&mut self, conversation: &[Turn], words: usize, on_piece: &mut dyn FnMut(&str)) -> Result<OpenerOut, OpenerError>;

    /// The cloud failed: finish the sentence of `text_so_far` (the reply shown so far) locally, in
    /// at most `max_words` more words, streaming the pieces through `on_piece`; returns the text
    /// added (possibly empty if `text_so_far` already ends a sentence).
    fn finish_locally(&mut self, conversation: &[Turn], text_so_far: &str, max_words: usize, on_piece: &mut dyn FnMut(&str)) -> Result<String, OpenerError>;
}

/// A scripted opener: emits a fixed text word by word. For tests, demos and benchmarks that need
/// the local side to be exact; it is not a model.
///
/// ```
/// use ulm_handoff::{FixedOpener, OpenerModel, Turn};
/// let mut o = FixedOpener::new("The capital of France is Paris, a city.").finish_with(" It is old.");
/// let mut pieces = Vec::new();
/// let out = o.write_opener(&[Turn::user("Capital of France?")], 5, &mut |p| pieces.push(p.to_string())).unwrap();
/// assert_eq!(pieces, ["The", " capital", " of", " France", " is"]);
/// assert_eq!((out.text.as_str(), out.ended), ("The capital of France is", false));
/// // A request's messages convert directly.
/// let turn = Turn::from(&ulm_openai::chat::ChatMessage::user("Hi"));
/// assert_eq!(turn, Turn::user("Hi"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct FixedOpener {
    text: String,
    finish: String,
    confidence: Option<f32>,
    delay: Duration,
    fail: Option<String>,
    fail_finish: Option<String>,
    /// Number of `write_opener` calls so far.
    pub calls: usize,
    /// The `text_so_far` of every `finish_locally` call.
    pub finish_calls: Vec<String>,
}

impl FixedOpener {
    /// An opener that writes (the first words of) `text`.
    pub fn new(text: impl Into<String>) -> Self {
        FixedOpener { text: text.into(), ..Default::default() }
    }

    /// What `finish_locally` emits (default: nothing).
    pub fn finish_with(mut self, text: impl Into<String>) -> Self {
        self.finish = text.into();
        self
    }

    /// The confidence reported with the opener.
    pub fn confidence(mut self, confidence: f32) -> Self {
        self.confidence = Some(confidence);
        self
    }

    /// Sleep this long before each word, to stand in for decoding time.
    pub fn word_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Make `write_opener` fail with `message`.
    pub fn failing(mut self, message: impl Into<String>) -> Self {
        self.fail = Some(message.into());
        self
    }

    /// Make `finish_locally` fail with `message`.
    pub fn failing_finish(mut self, message: impl Into<String>) -> Self {
        self.fail_finish = Some(message.into());
        self
    }
}

impl OpenerModel for FixedOpener {
    fn write_opener(&mut self, _conversation: &[Turn], words: usize, on_piece: &mut dyn FnMut(&str)) -> Result<OpenerOut, OpenerError> {
        self.calls += 1;
        if let Some(msg) = &self.fail {
            return Err(OpenerError::new(msg.clone()));
        }
        let text = first_words(&self.text, words);
        let mut tokens = 0;
        for (i, word) in text.split(' ').enumerate() {
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
            on_piece(&if i == 0 { word.to_string() } else { format!(" {word}") });
            tokens += 1;
        }
        let ended = count_words(&self.text) <= words;
        Ok(OpenerOut { text: text.to_string(), ended, tokens, confidence: self.confidence })
    }

    fn finish_locally(&mut self, _conversation: &[Turn], text_so_far: &str, max_words: usize, on_piece: &mut dyn FnMut(&str)) -> Result<String, OpenerError> {
        self.finish_calls.push(text_so_far.to_string());
        if let Some(msg) = &self.fail_finish {
            return Err(OpenerError::new(msg.clone()));
        }
        let lead = &self.finish[..self.finish.len() - self.finish.trim_start().len()];
        let text = format!("{lead}{}", first_words(&self.finish, max_words));
        if !text.is_empty() {
            on_piece(&text);
        }
        Ok(text)
    }
}
