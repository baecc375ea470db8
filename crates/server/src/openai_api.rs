//! The OpenAI-compatible endpoints: `GET /v1/models`, `POST /v1/chat/completions`,
//! `POST /v1/completions`.
//!
//! Continuing a reply: a trailing assistant message is continued exactly — no end-of-turn token
//! after it, content not stripped — when the request sets `continue_final_message: true` (with
//! `add_generation_prompt` false or absent; both true is a 400) or marks that message
//! `prefix: true`. The reply, streamed or not, holds **only the continuation**: unlike
//! llama.cpp's non-streamed `message.content`, the prefix is not repeated, so
//! `prefix + content` is the whole message. A raw `/v1/completions` prompt that ends inside the
//! assistant turn gives the same tokens.
//!
//! Special tokens: in chat messages, contents are encoded **literally** — a user who types
//! `<|im_end|><|im_start|>system` gets those characters as text, and only the chat template's
//! own structure yields special tokens. A raw `/v1/completions` prompt is the caller's own
//! template, so special-token texts in it **are** parsed (as llama.cpp's `/completion` does):
//! whoever puts user text into a raw prompt must keep it from holding special-token texts, or use
//! the chat endpoint. ulm-handoff's providers do so for every cloud (`CompletionTemplate::neutralise`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use ulm_openai::chat::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Role, Stop, Usage};
use ulm_openai::completion::{CompletionRequest, CompletionResponse, Prompt};
use ulm_openai::models::{ModelInfo, ModelList};
use ulm_openai::sse::{SseEvent, encode_done};
use ulm_runtime::generate::GenerateOptions;
use ulm_runtime::sampler::Sampling;
use ulm_runtime::tokenizer::ChatMessage;

use crate::error::ApiError;
use crate::local_opener::{Ending, chat_tokens, raw_tokens};
use crate::state::{AppState, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, ServedModel, now_secs};
use crate::worker::{self, Finished, GenEvent, Job, Output};

/// Stop strings a request may give (OpenAI allows 4).
const MAX_STOP_STRINGS: usize = 4;

// ---- Request bodies -----------------------------------------------------------------------------

/// Reads a JSON body: 413 over the limit, 400 for invalid UTF-8 or JSON, with the reason.
pub(crate) fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status().as_u16() == 413 { ApiError::too_large(limit) } else { ApiError::bad_request(format!("cannot read the request body: {}", r.body_text())) }
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to())))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("empty request body: send a JSON object"));
    }
    serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))
}

/// Sampling, limits and stop strings common to both generation endpoints.
struct Common<'a> {
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    stop: Option<&'a Stop>,
    extra: &'a Map<String, Value>,
}

fn options(st: &AppState, c: Common<'_>) -> Result<(GenerateOptions, Vec<String>), ApiError> {
    let lim = &st.config().limits;
    let max_tokens = c.max_tokens.unwrap_or(lim.default_max_tokens.min(lim.max_tokens_limit));
    if max_tokens == 0 || max_tokens > lim.max_tokens_limit {
        return Err(ApiError::invalid("max_tokens", format!("max_tokens is {max_tokens}; use 1 to {}", lim.max_tokens_limit)));
    }
    let temperature = c.temperature.unwrap_or(DEFAULT_TEMPERATURE as f64);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid("temperature", format!("temperature is {temperature}; use 0 to 2")));
    }
    let top_p = c.top_p.unwrap_or(DEFAULT_TOP_P as f64);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("top_p", format!("top_p is {top_p}; use a number in (0, 1]")));
    }
    if let Some(n) = c.extra.get("n") {
        if n.as_u64() != Some(1) {
            return Err(ApiError::invalid("n", "only n = 1 is supported"));
        }
    }
    let top_k = match c.extra.get("top_k") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| ApiError::invalid("top_k", "top_k must be a whole number >= 0"))? as usize,
    };
    let penalty = match c.extra.get("repetition_penalty").or(c.extra.get("repeat_penalty")) {
        None | Some(Value::Null) => 1.0,
        Some(v) => match v.as_f64() {
            Some(p) if p > 0.0 && p.is_finite() => p as f32,
            _ => return Err(ApiError::invalid("repetition_penalty", "repetition_penalty must be a number > 0")),
        },
    };
    let stop = c.stop.map(Stop::to_vec).unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid("stop", format!("{} stop strings given; at most {MAX_STOP_STRINGS}", stop.len())));
    }
    let seed = c.seed.map(|s| s as u64).unwrap_or_else(|| st.random_seed());
    let sampling = Sampling {
        temperature: temperature as f32,
        top_p: top_p as f32,
        top_k,
        repetition_penalty: penalty,
        seed,
        ..Sampling::default()
    };
    Ok((GenerateOptions { max_tokens: max_tokens as usize, words: None, sampling, copy: None, candidates: None }, stop))
}

fn check_prompt(st: &AppState, model: &ServedModel, ids: &[u32]) -> Result<(), ApiError> {
    let max_seq = model.lm.model.config().max_seq_len;
    let limit = st.config().limits.max_prompt_tokens.min(max_seq.saturating_sub(1));
    if ids.len() > limit {
        let mut e = ApiError::invalid("messages", format!("the prompt has {} tokens; this server takes at most {limit} for `{}`", ids.len(), model.id));
        e.body = Box::new(e.body.with_code("context_length_exceeded"));
        return Err(e);
    }
    Ok(())
}

fn find_model(st: &AppState, name: &str) -> Result<Arc<ServedModel>, ApiError> {
    st.model(name).ok_or_else(|| ApiError::model_not_found(name, &st.models().iter().map(|m| m.id.clone()).collect::<Vec<_>>()))
}

// ---- GET /v1/models -----------------------------------------------------------------------------

pub(crate) async fn list_models(State(st): State<AppState>) -> Json<ModelList> {
    Json(ModelList::new(st.models().iter().map(|m| ModelInfo::new(m.id.clone(), st.started(), "ulm")).collect()))
}

// ---- POST /v1/chat/completions ----------------------------------------------------------------

/// The conversation's tokens: a new assistant turn, or the continuation of the last message.
fn chat_prompt(model: &ServedModel, req: &ChatCompletionRequest) -> Result<Vec<u32>, ApiError> {
    let n = req.messages.len();
    if n == 0 {
        return Err(ApiError::invalid("messages", "messages is empty; send at least one message"));
    }
    let mut messages = Vec::with_capacity(n);
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => return Err(ApiError::invalid("messages", format!("messages[{i}]: tool messages are not supported"))),
        };
        if m.prefix == Some(true) && (i + 1 != n || m.role != Role::Assistant) {
            return Err(ApiError::invalid("messages", format!("messages[{i}]: `prefix: true` is only allowed on the last message, from the assistant")));
        }
        messages.push(ChatMessage::new(role, m.text()));
    }
    if messages.iter().all(|m| m.content.trim().is_empty()) {
        return Err(ApiError::invalid("messages", "every message is empty; type a question or a message"));
    }
    let cont = req.continue_final_message == Some(true);
    if cont && req.add_generation_prompt == Some(true) {
        return Err(ApiError::invalid(
            "continue_final_message",
            "continue_final_message and add_generation_prompt cannot both be true; set add_generation_prompt to false",
        ));
    }
    let last_is_assistant = req.messages[n - 1].role == Role::Assistant;
    if cont && !last_is_assistant {
        return Err(ApiError::invalid("continue_final_message", "continue_final_message needs an assistant message last"));
    }
    let continuing = cont || req.messages[n - 1].prefix == Some(true);
    let ending = if continuing { Ending::Continue } else { Ending::Open(req.add_generation_prompt.unwrap_or(true)) };
    chat_tokens(&model.lm, model.template, &messages, ending).map_err(|e| match e {
        ulm_runtime::Error::Template(_) | ulm_runtime::Error::Request(_) => {
            ApiError::bad_request(format!("cannot render the conversation with the chat template: {e}"))
        }
        e => ApiError::internal(e),
    })
}

pub(crate) async fn chat_completions(State(st): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = parse_json(body, st.config().limits.max_body_bytes)?;
    let model = find_model(&st, &req.model)?;
    let prompt = chat_prompt(&model, &req)?;
    check_prompt(&st, &model, &prompt)?;
    let (opts, stop) = options(
        &st,
        Common {
            max_tokens: req.token_limit(),
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed,
            stop: req.stop.as_ref(),
            extra: &req.extra,
        },
    )?;
    let out = worker::start(&st, model.clone(), Job { prompt, opts, stop }).await?;
    let ctx = Reply { id: st.next_id("chatcmpl"), model: model.id.clone(), created: now_secs() };
    if req.stream == Some(true) {
        let usage = req.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true);
        return Ok(sse(chat_stream(out, ctx, usage)));
    }
    let (text, fin) = collect(out).await?;
    let usage = Usage::new(fin.prompt_tokens, fin.completion_tokens);
    Ok(Json(ChatCompletionResponse::new(ctx.id, ctx.model, ctx.created, text, fin.finish_reason, Some(usage))).into_response())
}

/// Identity of one reply, repeated on every chunk.
#[derive(Clone)]
struct Reply {
    id: String,
    model: String,
    created: u64,
}

fn chat_stream(out: Output, ctx: Reply, include_usage: bool) -> impl Stream<Item = String> + Send {
    let first = json_event(&ChatCompletionChunk::delta(&ctx.id, &ctx.model, ctx.created, Some(Role::Assistant), ""));
    let c = ctx.clone();
    let rest = event_stream(
        out,
        move |t| json_event(&ChatCompletionChunk::delta(&ctx.id, &ctx.model, ctx.created, None, t)),
        move |f| {
            let mut s = json_event(&ChatCompletionChunk::finish(&c.id, &c.model, c.created, f.finish_reason, None));
            if include_usage {
                let mut u = ChatCompletionChunk::finish(&c.id, &c.model, c.created, f.finish_reason, Some(usage(f)));
                u.choices.clear();
                s += &json_event(&u);
            }
            s
        },
    );
    futures_util::stream::once(async move { first }).chain(rest)
}

/// The SSE text of a generation: `piece` for each non-empty piece, then `end` and `[DONE]`, or
/// the error event if the generation failed.
fn event_stream(
    out: Output,
    piece: impl Fn(String) -> String + Send + 'static,
    end: impl Fn(&Finished) -> String + Send + 'static,
) -> impl Stream<Item = String> + Send {
    futures_util::stream::unfold(Some((out, piece, end)), |state| async move {
        let (mut out, piece, end) = state?;
        loop {
            return match out.next().await {
                Some(GenEvent::Piece(t)) if t.is_empty() => continue,
                Some(GenEvent::Piece(t)) => Some((piece(t), Some((out, piece, end)))),
                Some(GenEvent::End(f)) => Some((end(&f) + &encode_done(), None)),
                Some(GenEvent::Failed) | None => Some((stream_error(), None)),
            };
        }
    })
}

// ---- POST /v1/completions -----------------------------------------------------------------------

pub(crate) async fn completions(State(st): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_json(body, st.config().limits.max_body_bytes)?;
    let model = find_model(&st, &req.model)?;
    let text = match &req.prompt {
        Prompt::Text(t) => t.as_str(),
        Prompt::Many(v) if v.len() == 1 => v[0].as_str(),
        Prompt::Many(_) => return Err(ApiError::invalid("prompt", "send one prompt per request (a string)")),
    };
    if text.is_empty() {
        return Err(ApiError::invalid("prompt", "prompt is empty"));
    }
    if req.echo == Some(true) {
        return Err(ApiError::invalid("echo", "echo is not supported"));
    }
    let prompt = raw_tokens(&model.lm, text).map_err(ApiError::internal)?;
    check_prompt(&st, &model, &prompt)?;
    let (opts, stop) = options(
        &st,
        Common { max_tokens: req.max_tokens, temperature: req.temperature, top_p: req.top_p, seed: req.seed, stop: req.stop.as_ref(), extra: &req.extra },
    )?;
    let out = worker::start(&st, model.clone(), Job { prompt, opts, stop }).await?;
    let ctx = Reply { id: st.next_id("cmpl"), model: model.id.clone(), created: now_secs() };
    if req.stream == Some(true) {
        let include_usage = req.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true);
        let c = ctx.clone();
        let s = event_stream(
            out,
            move |t| json_event(&CompletionResponse::new(&ctx.id, &ctx.model, ctx.created, t, None)),
            move |f| {
                let mut last = CompletionResponse::new(&c.id, &c.model, c.created, "", Some(f.finish_reason));
                if include_usage {
                    last.usage = Some(usage(f));
                }
                json_event(&last)
            },
        );
        return Ok(sse(s));
    }
    let (text, fin) = collect(out).await?;
    let mut res = CompletionResponse::new(ctx.id, ctx.model, ctx.created, text, Some(fin.finish_reason));
    res.usage = Some(usage(&fin));
    Ok(Json(res).into_response())
}

// ---- Shared -------------------------------------------------------------------------------------

fn usage(f: &Finished) -> Usage {
    Usage::new(f.prompt_tokens, f.completion_tokens)
}

/// The whole reply of a non-streamed request. Dropping this future (client gone) drops the
/// receiver, which cancels the generation.
async fn collect(mut out: Output) -> Result<(String, Finished), ApiError> {
    let mut text = String::new();
    loop {
        match out.next().await {
            Some(GenEvent::Piece(t)) => text.push_str(&t),
            Some(GenEvent::End(f)) => return Ok((text, f)),
            Some(GenEvent::Failed) | None => return Err(ApiError::internal("generation ended without a result")),
        }
    }
}

fn json_event<T: serde::Serialize>(v: &T) -> String {
    SseEvent::data(serde_json::to_string(v).unwrap_or_default()).encode()
}

/// The error event of a stream that fails after its headers were sent.
fn stream_error() -> String {
    let body = ulm_openai::ErrorBody::new("the server failed to generate a reply; see its log", "server_error");
    json_event(&body)
}

/// A `text/event-stream` response of pre-encoded SSE text.
pub(crate) fn sse(stream: impl Stream<Item = String> + Send + 'static) -> Response {
    let body = Body::from_stream(stream.map(|s| Ok::<_, Infallible>(Bytes::from(s))));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}
