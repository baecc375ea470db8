//! The HTTP side: one streamed request to a provider, with its timeouts, read piece by piece.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::{Instant, timeout_at};
use ulm_openai::error::ErrorBody;
use ulm_openai::sse::{SseDecoder, SseError};

use crate::config::{Config, ProviderKind, Timeouts};
use crate::error::HandoffError;
use crate::provider::{ProviderRequest, StreamFault, StreamFormat, error_message, read_event};

/// Largest error body read from a failed request.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The API key, read from the environment. It is never printed: `Debug` shows a placeholder and
/// there is no `Display`.
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// Reads the variable named `var`.
    pub(crate) fn from_env(var: &str) -> Result<Self, HandoffError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(ApiKey(v.trim().to_string())),
            _ => Err(HandoffError::MissingApiKey { var: var.to_string() }),
        }
    }
}

/// A client for one provider: the connection pool, the headers (key included) and the timeouts.
#[derive(Debug, Clone)]
pub(crate) struct Cloud {
    client: reqwest::Client,
    headers: HeaderMap,
    timeouts: Timeouts,
}

impl Cloud {
    pub(crate) fn new(cfg: &Config, key: Option<&ApiKey>) -> Result<Self, HandoffError> {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        if cfg.provider == ProviderKind::Anthropic {
            headers.insert("anthropic-version", HeaderValue::from_static(ulm_openai::anthropic::API_VERSION));
        }
        if let Some(key) = key {
            let (name, value) = match cfg.provider {
                ProviderKind::Anthropic => ("x-api-key", key.0.clone()),
                _ => ("authorization", format!("Bearer {}", key.0)),
            };
            // The error must not echo the key: describe it without the value.
            let mut value = HeaderValue::from_str(&value).map_err(|_| HandoffError::InvalidHeader {
                name: name.into(),
                detail: format!("the API key from `{}` holds characters a header cannot carry", cfg.api_key_env.as_deref().unwrap_or("?")),
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        for (name, value) in &cfg.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| HandoffError::InvalidHeader { name: name.clone(), detail: e.to_string() })?;
            let v = HeaderValue::from_str(value)
                .map_err(|e| HandoffError::InvalidHeader { name: name.clone(), detail: e.to_string() })?;
            headers.insert(n, v);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.timeouts.connect)
            // A redirect would carry the conversation (and the API key header) to a host the
            // configuration never named: a 3xx is an error instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HandoffError::Client(chain(&e)))?;
        Ok(Cloud { client, headers, timeouts: cfg.timeouts })
    }

    /// Sends `req` and waits for the response headers; the first-token clock starts now.
    pub(crate) async fn open(&self, req: &ProviderRequest) -> Result<CloudStream, HandoffError> {
        let first_deadline = Instant::now() + self.timeouts.first_token;
        let send = self.client.post(&req.url).headers(self.headers.clone()).json(&req.body).send();
        let resp = match timeout_at(first_deadline, send).await {
            Err(_) => return Err(HandoffError::FirstTokenTimeout { url: req.url.clone(), ms: ms(self.timeouts.first_token) }),
            Ok(Err(e)) => return Err(HandoffError::Connect { url: req.url.clone(), detail: chain(&e) }),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(&req.url, resp).await);
        }
        Ok(CloudStream {
            resp,
            url: req.url.clone(),
            format: req.format,
            decoder: SseDecoder::new(),
            first_deadline,
            first_limit_ms: ms(self.timeouts.first_token),
            idle: self.timeouts.idle,
            got_text: false,
            chars: 0,
            finish: None,
            done: false,
            pending: std::collections::VecDeque::new(),
        })
    }

    /// Sends a cache-warming request and reads its reply to the end; the result only matters for
    /// the timeline.
    pub(crate) async fn warm(&self, req: &ProviderRequest) -> Result<(), HandoffError> {
        let deadline = Instant::now() + self.timeouts.first_token;
        let send = self.client.post(&req.url).headers(self.headers.clone()).json(&req.body).send();
        let fail = |detail: String| HandoffError::Connect { url: req.url.clone(), detail };
        let resp = match timeout_at(deadline, send).await {
            Err(_) => return Err(HandoffError::FirstTokenTimeout { url: req.url.clone(), ms: ms(self.timeouts.first_token) }),
            Ok(r) => r.map_err(|e| fail(chain(&e)))?,
        };
        if !resp.status().is_success() {
            return Err(self.status_error(&req.url, resp).await);
        }
        match timeout_at(deadline, resp.bytes()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(fail(chain(&e))),
            Err(_) => Err(HandoffError::FirstTokenTimeout { url: req.url.clone(), ms: ms(self.timeouts.first_token) }),
        }
    }

    // An error status: read (a bounded amount of) the body for the server's message.
    async fn status_error(&self, url: &str, mut resp: reqwest::Response) -> HandoffError {
        let status = resp.status();
        let retry_after_ms = retry_after(resp.headers());
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match timeout_at(Instant::now() + self.timeouts.idle, resp.chunk()).await {
                Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
                _ => break,
            }
        }
        let (message, kind) = match ErrorBody::parse(&body) {
            Some(b) => (b.error.message, Some(b.error.kind).filter(|k| !k.is_empty())),
            None => {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.trim().chars().take(200).collect();
                let reason = status.canonical_reason().unwrap_or("error");
                (if text.is_empty() { reason.to_string() } else { text }, None)
            }
        };
        if status.as_u16() == 429 {
            HandoffError::RateLimited { url: url.to_string(), message, retry_after_ms, attempts: 1 }
        } else {
            HandoffError::Http { url: url.to_string(), status: status.as_u16(), message, kind }
        }
    }
}

/// An open stream of continuation pieces.
#[derive(Debug)]
pub(crate) struct CloudStream {
    resp: reqwest::Response,
    url: String,
    format: StreamFormat,
    decoder: SseDecoder,
    first_deadline: Instant,
    first_limit_ms: u64,
    idle: Duration,
    got_text: bool,
    chars: usize,
    finish: Option<String>,
    done: bool,
    pending: std::collections::VecDeque<String>,
}

impl CloudStream {
    /// The next piece of text; `Ok(None)` when the provider ended the reply cleanly.
    pub(crate) async fn next(&mut self) -> Result<Option<String>, HandoffError> {
        loop {
            if let Some(text) = self.pending.pop_front() {
                return Ok(Some(text));
            }
            if self.done {
                return Ok(None);
            }
            // Before the first piece the first-token deadline rules; after it, the idle limit.
            let deadline = if self.got_text { Instant::now() + self.idle } else { self.first_deadline };
            let chunk = match timeout_at(deadline, self.resp.chunk()).await {
                Err(_) if self.got_text => return Err(HandoffError::IdleTimeout { url: self.url.clone(), ms: ms(self.idle) }),
                Err(_) => return Err(HandoffError::FirstTokenTimeout { url: self.url.clone(), ms: self.first_limit_ms }),
                Ok(Err(e)) => return Err(self.cut(chain(&e))),
                Ok(Ok(None)) => return self.end(),
                Ok(Ok(Some(bytes))) => bytes,
            };
            self.decoder.push(&chunk);
            while let Some(ev) = self.decoder.next_event() {
                let ev = match ev {
                    Ok(ev) => ev,
                    // llama.cpp reports a failure mid-stream as an `error:` line.
                    Err(SseError::UnknownField { field, value, .. }) if field == "error" => {
                        let message = serde_json::from_str(&value).map(|v| error_message(&v)).unwrap_or(value);
                        return Err(HandoffError::StreamError { url: self.url.clone(), message });
                    }
                    Err(e) => return Err(HandoffError::Malformed { url: self.url.clone(), detail: e.to_string() }),
                };
                match read_event(self.format, &ev) {
                    Ok(item) => {
                        if !item.text.is_empty() {
                            self.got_text = true;
                            self.chars += item.text.chars().count();
                            self.pending.push_back(item.text);
                        }
                        if item.finish.is_some() {
                            self.finish = item.finish;
                        }
                        if item.done {
                            self.done = true;
                            break;
                        }
                    }
                    Err(StreamFault::Malformed(detail)) => return Err(HandoffError::Malformed { url: self.url.clone(), detail }),
                    Err(StreamFault::Server(message)) => return Err(HandoffError::StreamError { url: self.url.clone(), message }),
                }
            }
        }
    }

    /// The provider's finish reason, once it has sent one.
    pub(crate) fn finish_reason(&self) -> Option<&str> {
        self.finish.as_deref()
    }

    // The connection closed: a clean end only after a finish reason (some servers skip [DONE]).
    fn end(&mut self) -> Result<Option<String>, HandoffError> {
        if let Err(e) = self.decoder.finish() {
            return Err(self.cut(e.to_string()));
        }
        if self.finish.is_some() {
            self.done = true;
            return Ok(None);
        }
        Err(self.cut("connection closed without [DONE] or a finish reason".into()))
    }

    fn cut(&self, detail: String) -> HandoffError {
        HandoffError::StreamCut { url: self.url.clone(), detail, chars: self.chars }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// `Retry-After` in milliseconds: `retry-after-ms` (OpenAI), else `retry-after` in seconds or as an
/// HTTP date (RFC 9110). A date is measured from the response's own `Date` header when it has one,
/// so that a server whose clock differs from ours still means "in N seconds"; else from our clock.
/// A date in the past means "now" (0); anything unreadable counts as absent.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    retry_after_at(headers, now)
}

fn retry_after_at(headers: &HeaderMap, now: Duration) -> Option<u64> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(ms.max(0.0) as u64);
    }
    let value = get("retry-after")?;
    if let Ok(s) = value.parse::<f64>() {
        return s.is_finite().then(|| (s.max(0.0) * 1000.0) as u64);
    }
    let at_ms = crate::httpdate::parse(value)? * 1000;
    let now_ms = match get("date").and_then(crate::httpdate::parse) {
        Some(server_now) => server_now * 1000,
        None => now.as_millis().min(u64::MAX as u128) as u64,
    };
    Some(at_ms.saturating_sub(now_ms))
}

/// An error with its causes, e.g. "error sending request: client error (Connect): tcp connect
/// error: Connection refused (os error 111)".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_is_never_printed() {
        let k = ApiKey("sk-secret-123".into());
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
        let mut cfg = Config::new(ProviderKind::Prefill, "http://127.0.0.1:9");
        cfg.api_key_env = Some("X".into());
        let cloud = Cloud::new(&cfg, Some(&k)).unwrap();
        let dbg = format!("{cloud:?}");
        assert!(!dbg.contains("sk-secret-123"), "{dbg}");
    }

    #[test]
    fn missing_key_names_the_variable_only() {
        let e = ApiKey::from_env("ULM_SURELY_UNSET_VARIABLE_42").unwrap_err();
        assert_eq!(e.kind(), "missing_api_key");
        assert!(e.to_string().contains("ULM_SURELY_UNSET_VARIABLE_42"));
    }

    #[test]
    fn retry_after_reads_seconds_and_ms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(2000));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(150));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn retry_after_reads_an_http_date() {
        let at = |s: u64| Duration::from_secs(s);
        let date = 1_445_412_480; // Wed, 21 Oct 2015 07:28:00 GMT
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        // From our clock when the response has no Date header.
        assert_eq!(retry_after_at(&h, at(date - 3)), Some(3000));
        assert_eq!(retry_after_at(&h, at(date + 60)), Some(0), "a date in the past: retry now");
        // The obsolete forms are read too.
        h.insert("retry-after", HeaderValue::from_static("Wed Oct 21 07:28:00 2015"));
        assert_eq!(retry_after_at(&h, at(date - 2)), Some(2000));
        // The server's Date header is the reference when given: its clock may differ from ours.
        h.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        h.insert("date", HeaderValue::from_static("Wed, 21 Oct 2015 07:27:55 GMT"));
        assert_eq!(retry_after_at(&h, at(date + 3600)), Some(5000));
        // An unreadable Date falls back to our clock.
        h.insert("date", HeaderValue::from_static("yesterday"));
        assert_eq!(retry_after_at(&h, at(date - 1)), Some(1000));
        // Seconds still win over nothing, and retry-after-ms over both.
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after_at(&h, at(0)), Some(150));
    }

    #[test]
    fn bad_headers_are_named() {
        let mut cfg = Config::new(ProviderKind::Prefill, "http://127.0.0.1:9");
        cfg.headers.insert("bad header".into(), "x".into());
        let e = Cloud::new(&cfg, None).unwrap_err();
        assert!(e.to_string().contains("bad header"), "{e}");
    }
}
