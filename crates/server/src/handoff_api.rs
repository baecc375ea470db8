//! `POST /api/handoff`: one reply of the collaborative generation, streamed as named SSE events.
//!
//! ```text
//! curl -N localhost:8080/api/handoff -d '{"messages":[{"role":"user","content":"How do I boil an egg?"}],"words":6}'
//! event: meta          {"edge_model":"ulm-8m","cloud_url":"http://127.0.0.1:8080/v1","cloud_model":"smollm2","provider":"prefill","words":6}
//! event: opener        {"text":"To"}            one per piece of the local opener, at once
//! event: continuation  {"text":" boil an egg"}  the cloud's continuation, after seam repair
//! event: mode          {"mode":"fragment_completion"}
//! event: timeline      {"first_word_ms":..,"cloud_first_token_ms":..,"gap_ms":..,...}
//! event: reply         the whole ulm_handoff::Reply as JSON
//! event: done          {}
//! ```
//! Also, when they happen: `guard` (the opener was replaced by the hedge), `error` (the local model
//! or the cloud failed; `{"kind","message"}`), `fallback` and `notice` (the local model finished
//! the sentence after a cloud failure). The text of `opener`, `continuation`, `fallback` and
//! `notice` events, in order, is the reply.
//!
//! The body: `messages` (ending with the user's turn), and optionally `words` (1–16; the paper
//! uses 4–8), `cloud: {base_url, provider, model}`, `max_tokens`, `temperature` (of the cloud),
//! `seed` (of the opener), `guard`, `adaptive`, `words_per_second`, `early_request`. The default
//! cloud is the server's configured one, else the server itself (`/v1` with its cloud model). The
//! server's cloud API key is only ever sent to the configured cloud, never to a URL a request names.
//!
//! Another `cloud.base_url` is a request the server itself makes, so by default only loopback
//! hosts may be named (`127.0.0.0/8`, `::1`, `localhost`: a model server on this machine);
//! [`CloudOverride`] (`--allow-cloud-override`, `--no-cloud-override`) widens or closes that.
//!
//! Load: the opener is written on this machine in one of the server's generation slots, taken
//! before the stream starts — a full queue answers 429 with `Retry-After`, a long wait 503, like
//! `/v1` — and given back before the cloud is asked. At most [`ServerConfig::max_handoffs`]
//! handoffs run at once (then 429), each holding one cloud request.
//!
//! [`ServerConfig::max_handoffs`]: crate::ServerConfig::max_handoffs

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use ulm_handoff::{Event, ProviderKind, Role, Turn};
use ulm_openai::ChatMessage;
use ulm_openai::sse::SseEvent;
use ulm_runtime::sampler::Sampling;

use crate::error::ApiError;
use crate::local_opener::LocalOpener;
use crate::openai_api::{parse_json, sse};
use crate::state::{AppState, CloudOverride};

/// Longest opener a request may ask for.
const MAX_WORDS: usize = 16;

/// The body of `POST /api/handoff`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffRequest {
    /// The conversation, ending with the user's turn.
    pub messages: Vec<ChatMessage>,
    /// Words in the opener.
    #[serde(default)]
    pub words: Option<usize>,
    /// Which cloud continues the opener.
    #[serde(default)]
    pub cloud: Option<CloudChoice>,
    /// Token limit of the continuation.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature of the continuation.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Seed of the opener.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Turn the pre-handoff guard on or off.
    #[serde(default)]
    pub guard: Option<bool>,
    /// Choose the opener length from the cloud's measured time to first token.
    #[serde(default)]
    pub adaptive: Option<bool>,
    /// Speaking rate for the gap measurement (0: text shown at once).
    #[serde(default)]
    pub words_per_second: Option<f64>,
    /// Warm the cloud's prompt cache while the opener is written.
    #[serde(default)]
    pub early_request: Option<bool>,
}

/// The cloud a request picks; every field falls back to the server's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudChoice {
    /// API root, e.g. `http://127.0.0.1:8090/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// `prefill`, `prefix`, `anthropic`, `instruct` or `completion`.
    #[serde(default)]
    pub provider: Option<ProviderKind>,
    /// Model name sent to the cloud.
    #[serde(default)]
    pub model: Option<String>,
}

fn turns(messages: &[ChatMessage]) -> Result<Vec<Turn>, ApiError> {
    let Some(last) = messages.last() else {
        return Err(ApiError::invalid("messages", "messages is empty; send the user's message"));
    };
    if last.role != Role::User || last.text().trim().is_empty() {
        return Err(ApiError::invalid("messages", "the last message must be the user's, and not empty"));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| match m.role {
            Role::Tool => Err(ApiError::invalid("messages", format!("messages[{i}]: tool messages are not supported"))),
            Role::Developer => Ok(Turn::system(m.text())),
            r => Ok(Turn::new(r, m.text())),
        })
        .collect()
}

pub(crate) async fn handoff(State(st): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: HandoffRequest = parse_json(body, st.config().limits.max_body_bytes)?;
    let conversation = turns(&req.messages)?;
    let cfg = st.config();
    let mut hc = cfg.handoff.clone();

    if let Some(w) = req.words {
        if !(1..=MAX_WORDS).contains(&w) {
            return Err(ApiError::invalid("words", format!("words is {w}; use 1 to {MAX_WORDS} (the paper uses 4 to 8)")));
        }
        hc.opener.words = w;
        hc.opener.min_words = hc.opener.min_words.min(w);
    }
    if let Some(t) = req.max_tokens {
        let lim = cfg.limits.max_tokens_limit;
        if t == 0 || t > lim {
            return Err(ApiError::invalid("max_tokens", format!("max_tokens is {t}; use 1 to {lim}")));
        }
        hc.max_tokens = t;
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid("temperature", format!("temperature is {t}; use 0 to 2")));
        }
        hc.temperature = Some(t);
    }
    // The cloud: the configured one (with its key), or the one the request names (without).
    let default_url = st.default_cloud_url().ok_or_else(|| {
        let mut e = ApiError::unavailable("no cloud is configured for the handoff; start the server with --cloud URL", 1);
        e.body.error.code = None;
        e
    })?;
    let choice = req.cloud.unwrap_or_default();
    let url = choice.base_url.as_deref().map(str::trim).filter(|u| !u.is_empty()).unwrap_or(&default_url).to_string();
    let is_default = url.trim_end_matches('/') == default_url.trim_end_matches('/');
    let url = if is_default { url } else { allowed_cloud(cfg.cloud_override, &url)? };
    let is_self = is_default && cfg.handoff.base_url.is_empty();
    if !is_default {
        hc.api_key_env = None;
        hc.headers.retain(|k, _| !k.eq_ignore_ascii_case("authorization"));
    }
    if is_self {
        if let Some(key) = &cfg.api_key {
            hc.headers.insert("Authorization".into(), format!("Bearer {key}"));
        }
    }
    hc.base_url = url.clone();
    if let Some(p) = choice.provider {
        hc.provider = p;
    }
    match choice.model.filter(|m| !m.trim().is_empty()) {
        Some(m) => hc.model = m,
        None if is_self || hc.model.is_empty() => hc.model = st.cloud().id.clone(),
        None => {}
    }
    if let Some(g) = req.guard {
        hc.guard.enabled = g;
    }
    if let Some(a) = req.adaptive {
        hc.opener.adaptive = a;
    }
    if let Some(r) = req.words_per_second {
        hc.words_per_second = r;
    }
    if let Some(e) = req.early_request {
        hc.early_request = e;
    }
    hc.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let permit = st
        .handoff_slots()
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::queue_full(1))?;
    let engine = st.handoff_for(hc).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // The opener's generation slot, before the stream starts, so that overload is a status code.
    let sched = st.scheduler();
    let slot = sched.slot(sched.admit()?).await?;

    let edge = st.edge();
    let meta = json!({
        "edge_model": edge.id,
        "cloud_url": url,
        "cloud_model": engine.config().model,
        "provider": engine.config().provider,
        "words": engine.next_opener_words(),
    });
    let sampling = Sampling { seed: req.seed.unwrap_or_else(|| st.random_seed()), ..Sampling::default() };
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let _ = tx.send(SseEvent::named("meta", meta.to_string()).encode());
    let state = st.clone();
    let task = tokio::spawn(async move {
        let _permit = permit;
        let mut opener =
            LocalOpener::with_sessions(edge.lm.clone(), edge.sessions.clone()).template(edge.template).sampling(sampling).copy_boost(edge.copy_boost).candidates(edge.candidates).gated(state, slot);
        let reply = engine
            .run(&mut opener, &conversation, |ev| {
                if ev != Event::Done {
                    let _ = tx.send(ev.to_sse().encode());
                }
            })
            .await;
        let _ = tx.send(SseEvent::named("reply", serde_json::to_string(&reply).unwrap_or_default()).encode());
        let _ = tx.send(SseEvent::named("done", "{}").encode());
    });
    // The client going away drops the stream, which aborts the handoff: its cloud request is
    // dropped, and so the generation it runs (on this server, too) is cancelled.
    let guard = AbortOnDrop(task.abort_handle());
    let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move { rx.recv().await.map(|s| (s, (rx, guard))) });
    Ok(sse(stream))
}

/// `url` if `policy` lets a request name it, in the form the URL parser gives (so the host
/// checked is the host connected to).
fn allowed_cloud(policy: CloudOverride, url: &str) -> Result<String, ApiError> {
    let bad = |m: String| Err(ApiError::invalid("cloud.base_url", m));
    if policy == CloudOverride::Off {
        return bad("this server does not let requests choose the cloud (started with --no-cloud-override); leave cloud.base_url out".into());
    }
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return bad(format!("`{url}` is not a URL ({e}); use e.g. http://127.0.0.1:8090/v1")),
    };
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return bad(format!("`{url}` must be an http:// or https:// URL with a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.query().is_some() || parsed.fragment().is_some() {
        return bad(format!("`{url}`: give the API root alone, without user, query or fragment"));
    }
    if policy == CloudOverride::Loopback && !is_loopback(&parsed) {
        return bad(format!(
            "this server lets requests choose only a cloud on this machine (127.0.0.1, ::1, localhost), not `{}`; start it with --allow-cloud-override to allow any",
            parsed.host_str().unwrap_or_default()
        ));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

fn is_loopback(url: &reqwest::Url) -> bool {
    use std::net::IpAddr;
    let host = url.host_str().unwrap_or_default();
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => matches!(host, "localhost" | "localhost."),
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What `GET /api/config` tells the web page.
pub(crate) fn page_config(st: &AppState) -> serde_json::Value {
    let cfg = st.config();
    json!({
        "edge_model": st.edge().id,
        "cloud_model": st.cloud().id,
        "cloud_url": st.default_cloud_url(),
        "provider": cfg.handoff.provider,
        "words": cfg.handoff.opener.words,
        "max_words": MAX_WORDS,
        "auth": cfg.api_key.is_some(),
        "cloud_override": cfg.cloud_override != CloudOverride::Off,
        "cloud_override_hosts": cfg.cloud_override.as_str(),
        "latency": {
            "ttft_ms": cfg.latency.ttft.as_millis() as u64,
            "tokens_per_s": cfg.latency.tokens_per_s,
            "jitter_ms": cfg.latency.jitter.as_millis() as u64,
        },
        "models": st.models().iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
    })
}
