//! The handoff against a real HTTP server on loopback that misbehaves on purpose: every fault of
//! issue 4 (timeout, refused connection, 4xx/5xx with the OpenAI error body, 429 + Retry-After, a
//! stream cut mid-reply, malformed SSE, an empty continuation) plus the happy paths of each
//! provider's wire format, the guard, the early request, the adaptive length and the gap.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{End, FaultServer, Step, closed_port_url};
use ulm_handoff::{Config, Event, FixedOpener, Handoff, Mode, ProviderKind, Reply, Turn};

const OPENER: &str = "The capital of France is";

fn conversation() -> Vec<Turn> {
    vec![Turn::user("What is the capital of France?")]
}

fn config(url: &str, provider: ProviderKind) -> Config {
    let mut c = Config::new(provider, url);
    c.model = "test-model".into();
    c.max_tokens = 24;
    c.retry.backoff = Duration::from_millis(20);
    c.timeouts.first_token = Duration::from_secs(5);
    c.timeouts.idle = Duration::from_secs(5);
    c
}

fn opener() -> FixedOpener {
    FixedOpener::new(format!("{OPENER} Paris, the largest city.")).finish_with(" Paris.")
}

async fn run(mut cfg: Config, opener: &mut FixedOpener) -> (Reply, Vec<Event>) {
    cfg.opener.words = 5;
    let h = Handoff::new(cfg).expect("config");
    let mut events = Vec::new();
    let reply = h.run(opener, &conversation(), |e| events.push(e)).await;
    (reply, events)
}

/// Concatenation of every text event, which must equal the reply text.
fn shown(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::OpenerPiece(t) | Event::ContinuationDelta(t) | Event::FallbackPiece(t) | Event::Notice(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn assert_fell_back(reply: &Reply, events: &[Event], kind: &str) {
    let err = reply.error.as_ref().unwrap_or_else(|| panic!("expected a {kind} error, reply: {reply:#?}"));
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(shown(events), reply.text, "events and reply agree");
    assert!(reply.text.ends_with(&ulm_handoff::Config::new(ProviderKind::Prefill, "http://x").fallback.note), "{}", reply.text);
    assert!(events.iter().any(|e| matches!(e, Event::Error(e) if e.kind() == kind)));
    assert!(matches!(events.last(), Some(Event::Done)));
}

// ---- Happy paths ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_happy_path_streams_joins_and_labels() {
    let server = FaultServer::start(vec![Step::chat(&[" Paris", ".", " It is", " on the Seine."])]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.text, "The capital of France is Paris. It is on the Seine.");
    assert_eq!(reply.opener, OPENER);
    assert_eq!(reply.mode, Some(Mode::FragmentCompletion));
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
    assert_eq!(shown(&events), reply.text);

    // The request continues a trailing assistant message that does not end in a space.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    let body = &reqs[0].body;
    assert_eq!(body["continue_final_message"], true);
    assert_eq!(body["add_generation_prompt"], false);
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], "test-model");
    let last = body["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(*last, json!({"role": "assistant", "content": OPENER}));
    assert_eq!(reqs[0].header("accept"), Some("text/event-stream"));

    // Event order: opener pieces, continuation deltas, mode, timeline, done.
    let names: Vec<&str> = events.iter().map(Event::name).collect();
    let first_cont = names.iter().position(|n| *n == "continuation").unwrap();
    assert!(names[..first_cont].iter().all(|n| *n == "opener"), "{names:?}");
    assert_eq!(&names[names.len() - 3..], ["mode", "timeline", "done"]);

    let t = &reply.timeline;
    let order = [t.first_token_ms, t.first_word_ms, t.opener_done_ms, t.cloud_request_ms, t.cloud_first_token_ms, t.first_continuation_word_ms];
    let order: Vec<f64> = order.iter().map(|x| x.expect("milestone recorded")).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    assert!(t.done_ms >= order[5]);
    assert_eq!(t.attempts, 1);
    assert_eq!(t.opener_words, 5);
    assert_eq!(t.gap_ms, Some(0.0), "a cloud on loopback is in time for 5 spoken words");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_opener_is_stripped_at_the_seam() {
    // Some servers echo the opener before the continuation.
    let server = FaultServer::start(vec![Step::chat(&[" The capital", " of France is", " Paris", "."])]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_eq!(reply.text, "The capital of France is Paris.");
    assert_eq!(reply.continuation, " Paris.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_sent_but_never_shown() {
    let var = "ULM_HANDOFF_TEST_KEY_FAULTS";
    // SAFETY: the variable name is unique to this test, and it is set before any thread reads it.
    unsafe { std::env::set_var(var, "sk-test-secret-42") };
    let server = FaultServer::start(vec![Step::error(401, "Incorrect API key provided")]).await;
    let mut cfg = config(&server.url, ProviderKind::Instruct);
    cfg.api_key_env = Some(var.into());
    let h = Handoff::new(cfg).unwrap();
    assert!(!format!("{h:?}").contains("sk-test-secret-42"));
    let reply = h.run(&mut opener(), &conversation(), |_| {}).await;
    assert_eq!(server.requests()[0].header("authorization"), Some("Bearer sk-test-secret-42"));
    let err = reply.error.unwrap();
    assert_eq!(err.kind(), "http");
    let msg = err.to_string();
    assert!(msg.contains("Incorrect API key provided") && msg.contains("api_key_env"), "{msg}");
    assert!(!msg.contains("sk-test-secret-42"));
    assert_eq!(server.requests().len(), 1, "401 is not retried");

    // A variable that is not set is named in the error.
    let mut cfg = config(&server.url, ProviderKind::Instruct);
    cfg.api_key_env = Some("ULM_HANDOFF_TEST_KEY_UNSET".into());
    let e = Handoff::new(cfg).unwrap_err();
    assert!(e.to_string().contains("ULM_HANDOFF_TEST_KEY_UNSET"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_wire_format() {
    let var = "ULM_HANDOFF_TEST_KEY_ANTHROPIC";
    // SAFETY: unique variable, set before use.
    unsafe { std::env::set_var(var, "ak-secret") };
    let ev = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    let chunks = [
        ev("message_start", json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": []}})),
        ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev("ping", json!({"type": "ping"})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " Paris"}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "."}})),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 2}})),
        ev("message_stop", json!({"type": "message_stop"})),
    ];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let server = FaultServer::start(vec![Step::raw(&chunks, End::Clean)]).await;
    let mut cfg = config(&server.url, ProviderKind::Anthropic);
    cfg.api_key_env = Some(var.into());
    let (reply, _) = run(cfg, &mut opener()).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.text, "The capital of France is Paris.");
    assert_eq!(reply.finish_reason.as_deref(), Some("end_turn"));
    let r = &server.requests()[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some("ak-secret"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.body["messages"].as_array().unwrap().last().unwrap(), &json!({"role": "assistant", "content": OPENER}));
    assert!(r.body["system"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_wire_format() {
    let chunk = |t: &str, f: serde_json::Value| {
        format!("data: {}\n\n", json!({"id": "x", "object": "text_completion", "created": 1, "model": "m", "choices": [{"index": 0, "text": t, "finish_reason": f}]}))
    };
    let chunks = [chunk(" Paris", json!(null)), chunk(".", json!(null)), chunk("", json!("stop")), "data: [DONE]\n\n".into()];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let server = FaultServer::start(vec![Step::raw(&chunks, End::Clean)]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Completion), &mut opener()).await;
    assert_eq!(reply.text, "The capital of France is Paris.");
    let r = &server.requests()[0];
    assert_eq!(r.path, "/v1/completions");
    let prompt = r.body["prompt"].as_str().unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\nThe capital of France is"), "{prompt}");
}

// ---- Faults -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_falls_back_locally() {
    let url = closed_port_url();
    let mut o = opener();
    let (reply, events) = run(config(&url, ProviderKind::Prefill), &mut o).await;
    assert_fell_back(&reply, &events, "connect");
    assert_eq!(reply.timeline.attempts, 2, "one retry");
    assert_eq!(reply.text, format!("{OPENER} Paris. {}", Config::new(ProviderKind::Prefill, "http://x").fallback.note));
    assert_eq!(o.finish_calls, vec![OPENER.to_string()]);
    assert!(reply.error.unwrap().to_string().contains("is the server running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_token_timeout_is_retried_then_falls_back() {
    let slow = Step::Stream { head_delay: Duration::from_secs(3), chunks: support::chat_chunks(&[" Paris."], true), end: End::Clean };
    let server = FaultServer::start(vec![slow]).await;
    let mut cfg = config(&server.url, ProviderKind::Prefill);
    cfg.timeouts.first_token = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let (reply, events) = run(cfg, &mut opener()).await;
    assert_fell_back(&reply, &events, "first_token_timeout");
    assert_eq!(server.requests().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(2), "the timeout cut the wait short: {:?}", started.elapsed());
    assert!(reply.error.unwrap().to_string().contains("timeouts.first_token_ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_message_is_surfaced_and_retried_once() {
    let server = FaultServer::start(vec![Step::error(500, "The server had an error while processing your request.")]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_fell_back(&reply, &events, "http");
    assert_eq!(server.requests().len(), 2);
    let msg = reply.error.unwrap().to_string();
    assert!(msg.contains("HTTP 500") && msg.contains("The server had an error while processing your request."), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_then_success() {
    let server = FaultServer::start(vec![Step::error(503, "overloaded"), Step::chat(&[" Paris."])]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.text, "The capital of France is Paris.");
    assert_eq!(reply.timeline.attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_is_not_retried() {
    let server = FaultServer::start(vec![Step::error(400, "Cannot set both add_generation_prompt and continue_final_message to true.")]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_fell_back(&reply, &events, "http");
    assert_eq!(server.requests().len(), 1);
    let msg = reply.error.unwrap().to_string();
    assert!(msg.contains("Cannot set both") && msg.contains("provider"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let elsewhere = FaultServer::start(vec![Step::chat(&[" Paris."])]).await;
    let location = format!("{}/chat/completions", elsewhere.url);
    let server = FaultServer::start(vec![Step::Status { status: 307, headers: vec![("Location".into(), location)], body: "{}".into() }]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert!(reply.error.is_some(), "a redirect is an error");
    assert_eq!(elsewhere.requests().len(), 0, "nothing reached the redirect target");
    assert!(reply.text.starts_with("The capital of France is"), "the opener shown is kept: {}", reply.text);
    assert!(shown(&events).starts_with("The capital of France is"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_honours_retry_after() {
    let server = FaultServer::start(vec![Step::rate_limited(1), Step::chat(&[" Paris."])]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.text, "The capital of France is Paris.");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let waited = reqs[1].at.duration_since(reqs[0].at);
    assert!(waited >= Duration::from_millis(990), "Retry-After: 1 honoured, waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_honours_retry_after_as_an_http_date() {
    use ulm_handoff::httpdate::format;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Measured from the server's Date header: its clock is an hour off ours, the wait is still 1 s.
    let server_now = now - 3_600;
    let server = FaultServer::start(vec![Step::rate_limited_until(format(server_now + 1), Some(format(server_now))), Step::chat(&[" Paris."])]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.text, "The capital of France is Paris.");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let waited = reqs[1].at.duration_since(reqs[0].at);
    assert!(waited >= Duration::from_millis(990) && waited < Duration::from_millis(4_000), "Retry-After date 1 s after Date, waited {waited:?}");

    // Without a Date header, from our clock: the date is whole seconds, so the wait is 2 to 3 s
    // minus the time the request took to arrive.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let server = FaultServer::start(vec![Step::rate_limited_until(format(now + 3), None), Step::chat(&[" Paris."])]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_eq!(reply.error, None);
    let reqs = server.requests();
    let waited = reqs[1].at.duration_since(reqs[0].at);
    assert!(waited >= Duration::from_millis(1_500), "Retry-After date 3 s ahead honoured, waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_until_a_far_date_gives_up_at_once() {
    use ulm_handoff::httpdate::format;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let server = FaultServer::start(vec![Step::rate_limited_until(format(now + 120), Some(format(now)))]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_fell_back(&reply, &events, "rate_limited");
    assert_eq!(server.requests().len(), 1);
    let msg = reply.error.unwrap().to_string();
    assert!(msg.contains("120000 ms"), "the date is read as a 120 s wait: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_beyond_the_cap_gives_up_at_once() {
    let server = FaultServer::start(vec![Step::rate_limited(120)]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_fell_back(&reply, &events, "rate_limited");
    assert_eq!(server.requests().len(), 1);
    let msg = reply.error.unwrap().to_string();
    assert!(msg.contains("120000 ms") && msg.contains("Rate limit reached") && msg.contains("retry.max_retry_after_ms"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_stream_is_resumed_from_the_text_shown() {
    let mut first = support::chat_chunks(&[" Paris,"], false);
    first.push((Duration::from_millis(10), String::new())); // nothing more: the body is cut
    let server = FaultServer::start(vec![
        Step::Stream { head_delay: Duration::ZERO, chunks: first, end: End::Cut },
        Step::chat(&[" a city", " on the Seine."]),
    ])
    .await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_eq!(reply.error, None, "{:?}", reply.error);
    assert_eq!(reply.text, "The capital of France is Paris, a city on the Seine.");
    assert_eq!(shown(&events), reply.text);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let prefix = reqs[1].body["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    assert_eq!(prefix, "The capital of France is Paris,", "the retry continues what was shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_twice_keeps_the_partial_text_and_falls_back() {
    let cut = Step::Stream { head_delay: Duration::ZERO, chunks: support::chat_chunks(&[" Paris,"], false), end: End::Cut };
    let server = FaultServer::start(vec![cut.clone(), Step::Stream { head_delay: Duration::ZERO, chunks: support::chat_chunks(&[" a"], false), end: End::Cut }]).await;
    let mut o = opener();
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut o).await;
    assert_fell_back(&reply, &events, "stream_cut");
    assert_eq!(reply.continuation, " Paris, a");
    assert_eq!(o.finish_calls, vec!["The capital of France is Paris, a".to_string()]);
    assert!(reply.text.starts_with("The capital of France is Paris, a Paris. (The rest"), "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_closed_without_done_is_a_cut() {
    // A clean chunked end, but neither [DONE] nor a finish reason.
    let server = FaultServer::start(vec![Step::Stream { head_delay: Duration::ZERO, chunks: support::chat_chunks(&[" Paris"], false), end: End::Clean }]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_fell_back(&reply, &events, "stream_cut");
    assert!(reply.error.unwrap().to_string().contains("without [DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sse_is_a_typed_error() {
    let server = FaultServer::start(vec![Step::raw(&["this is not server-sent events\n\n"], End::Clean)]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_fell_back(&reply, &events, "malformed");
    assert!(reply.error.unwrap().to_string().contains("unknown field"), "names the bad line");

    let server = FaultServer::start(vec![Step::raw(&["data: {\"choices\": [oops\n\n"], End::Clean)]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_fell_back(&reply, &events, "malformed");
    assert!(reply.error.unwrap().to_string().contains("not JSON"));

    let server = FaultServer::start(vec![Step::raw(&["data: \u{0}\u{0}\n\n", "data: \u{1}"], End::Clean)]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_eq!(reply.error.unwrap().kind(), "malformed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_event_mid_stream_is_surfaced() {
    // llama.cpp's shape: an `error:` line; OpenAI's: a data payload with an error object.
    let server = FaultServer::start(vec![Step::raw(
        &["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" Paris\"}}]}\n\n", "error: {\"code\":500,\"message\":\"slot unavailable\",\"type\":\"server_error\"}\n\n"],
        End::Clean,
    )])
    .await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_fell_back(&reply, &events, "stream_error");
    assert!(reply.error.unwrap().to_string().contains("slot unavailable"));

    let server = FaultServer::start(vec![Step::raw(&["data: {\"error\":{\"message\":\"context length exceeded\",\"type\":\"invalid_request_error\"}}\n\n"], End::Clean)]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert!(reply.error.unwrap().to_string().contains("context length exceeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_continuation_after_a_fragment_is_a_fault() {
    let server = FaultServer::start(vec![Step::chat(&[]), Step::chat(&["  "])]).await;
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_fell_back(&reply, &events, "empty_continuation");
    assert_eq!(server.requests().len(), 2);
    assert_eq!(reply.text, format!("{OPENER} Paris. {}", Config::new(ProviderKind::Prefill, "http://x").fallback.note));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_continuation_after_a_full_sentence_is_fine() {
    let server = FaultServer::start(vec![Step::chat(&[])]).await;
    let mut o = FixedOpener::new("Paris is the capital.");
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut o).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.text, "Paris is the capital.");
    assert_eq!(reply.mode, Some(Mode::CleanContinuation));
    assert!(!events.iter().any(|e| matches!(e, Event::Notice(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stream_times_out_and_resumes() {
    let mut stall = support::chat_chunks(&[" Paris,", " a city"], true);
    stall[1].0 = Duration::from_secs(3);
    let server = FaultServer::start(vec![
        Step::Stream { head_delay: Duration::ZERO, chunks: stall, end: End::Clean },
        Step::chat(&[" a city."]),
    ])
    .await;
    let mut cfg = config(&server.url, ProviderKind::Prefill);
    cfg.timeouts.idle = Duration::from_millis(300);
    let (reply, _) = run(cfg, &mut opener()).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.text, "The capital of France is Paris, a city.");
    assert_eq!(reply.timeline.attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_timeout_bounds_the_cloud_phase() {
    let slow = Step::chat_after(Duration::from_secs(3), &[" Paris."]);
    let server = FaultServer::start(vec![slow]).await;
    let mut cfg = config(&server.url, ProviderKind::Prefill);
    cfg.timeouts.total = Some(Duration::from_millis(400));
    let (reply, events) = run(cfg, &mut opener()).await;
    assert_fell_back(&reply, &events, "total_timeout");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opener_failure_asks_the_cloud_for_a_plain_answer() {
    let server = FaultServer::start(vec![Step::chat(&["Paris is the capital."])]).await;
    let mut o = FixedOpener::new("x").failing("weights not loaded");
    let (reply, events) = run(config(&server.url, ProviderKind::Prefill), &mut o).await;
    assert_eq!(reply.text, "Paris is the capital.");
    assert!(matches!(&events[0], Event::Error(e) if e.kind() == "opener"), "{events:?}");
    assert_eq!(reply.error.as_ref().map(|e| e.kind()), Some("opener"));
    assert!(reply.error.unwrap().to_string().contains("weights not loaded"));
    let body = &server.requests()[0].body;
    assert!(body.get("continue_final_message").is_none());
    assert_eq!(body["messages"], json!([{"role": "user", "content": "What is the capital of France?"}]));
}

// ---- Guard, standalone, early request, adaptive length, gap --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_replaces_a_doubtful_opener_before_anything_is_shown() {
    let server = FaultServer::start(vec![Step::chat(&[" The capital of France is Paris."])]).await;
    let mut cfg = config(&server.url, ProviderKind::Prefill);
    cfg.guard.enabled = true;
    cfg.guard.min_confidence = 0.5;
    let mut o = FixedOpener::new("The capital is Lyon").confidence(0.2);
    let (reply, events) = run(cfg.clone(), &mut o).await;
    assert!(reply.guard.fired);
    assert_eq!(reply.guard.replaced.as_deref(), Some("The capital is Lyon"));
    assert_eq!(reply.opener, cfg.guard.hedge);
    assert!(!shown(&events).contains("Lyon"), "the doubtful opener is never shown");
    assert!(matches!(events[0], Event::GuardFired { .. }));
    let last = server.requests()[0].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"], cfg.guard.hedge);
    assert_eq!(reply.text, format!("{} The capital of France is Paris.", cfg.guard.hedge));

    // A confident opener passes the guard unchanged.
    let server = FaultServer::start(vec![Step::chat(&[" Paris."])]).await;
    let mut cfg = config(&server.url, ProviderKind::Prefill);
    cfg.guard.enabled = true;
    let mut o = FixedOpener::new(OPENER).confidence(0.9);
    let (reply, _) = run(cfg, &mut o).await;
    assert!(reply.guard.enabled && !reply.guard.fired);
    assert_eq!(reply.text, "The capital of France is Paris.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_opener_skips_the_cloud() {
    let server = FaultServer::start(vec![Step::chat(&[" never"])]).await;
    let mut cfg = config(&server.url, ProviderKind::Prefill);
    cfg.opener.allow_standalone = true;
    let mut o = FixedOpener::new("Hello there!");
    let (reply, _) = run(cfg.clone(), &mut o).await;
    assert!(reply.standalone);
    assert_eq!(reply.text, "Hello there!");
    assert!(server.requests().is_empty());
    // Not allowed: the cloud continues.
    cfg.opener.allow_standalone = false;
    let (reply, _) = run(cfg, &mut FixedOpener::new("Hello there!")).await;
    assert_eq!(reply.text, "Hello there! never");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_request_warms_the_cache_before_the_real_one() {
    let warm_reply = json!({"id": "w", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "The"}, "finish_reason": "length"}]});
    let server = FaultServer::start(vec![Step::json(warm_reply), Step::chat(&[" Paris."])]).await;
    let mut cfg = config(&server.url, ProviderKind::Prefill);
    cfg.early_request = true;
    let mut o = opener().word_delay(Duration::from_millis(20));
    let (reply, _) = run(cfg, &mut o).await;
    assert_eq!(reply.text, "The capital of France is Paris.");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!((reqs[0].body["max_tokens"].clone(), reqs[0].body["stream"].clone()), (json!(1), json!(false)));
    assert_eq!(reqs[0].body["messages"][0], reqs[1].body["messages"][0], "same system prefix");
    let t = &reply.timeline;
    assert!(t.warm_request_ms.unwrap() <= t.first_token_ms.unwrap(), "warm request goes out before the opener: {t:?}");
    assert!(t.warm_done_ms.unwrap() <= t.cloud_request_ms.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_early_request_writes_the_cache_the_continuation_reads() {
    let ev = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    let chunks = [
        ev("message_start", json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": []}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " Paris."}})),
        ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}})),
        ev("message_stop", json!({"type": "message_stop"})),
    ];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let warm_reply = json!({"id": "w", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": "The"}], "stop_reason": "max_tokens", "usage": {"input_tokens": 1400, "output_tokens": 1, "cache_creation_input_tokens": 1400}});
    let server = FaultServer::start(vec![Step::json(warm_reply), Step::raw(&chunks, End::Clean)]).await;
    let mut cfg = config(&server.url, ProviderKind::Anthropic);
    cfg.early_request = true;
    cfg.opener.words = 5;
    // A conversation long enough to be cached (over 1024 tokens).
    let conversation = [Turn::user("Background: ".to_string() + &"France is a country in Europe. ".repeat(160)), Turn::user("What is the capital of France?")];
    let h = Handoff::new(cfg).unwrap();
    let mut o = opener().word_delay(Duration::from_millis(20));
    let reply = h.run(&mut o, &conversation, |_| {}).await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.text, "The capital of France is Paris.");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "the warming request, then the continuation");
    assert!(reqs.iter().all(|r| r.path == "/v1/messages"));
    assert_eq!((reqs[0].body["max_tokens"].clone(), reqs[0].body["stream"].clone()), (json!(1), json!(false)));
    let (w, r) = (reqs[0].body["messages"].as_array().unwrap(), reqs[1].body["messages"].as_array().unwrap());
    assert_eq!(&r[..w.len()], &w[..], "the continuation starts with the warmed prefix");
    assert_eq!(w.last().unwrap()["content"][0]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(r.last().unwrap(), &json!({"role": "assistant", "content": OPENER}));
    assert!(reply.timeline.warm_done_ms.unwrap() <= reply.timeline.cloud_request_ms.unwrap());

    // A short conversation is not worth warming: one request, no breakpoint.
    let server = FaultServer::start(vec![Step::raw(&chunks, End::Clean)]).await;
    let mut cfg = config(&server.url, ProviderKind::Anthropic);
    cfg.early_request = true;
    let (reply, _) = run(cfg, &mut opener()).await;
    assert_eq!(reply.text, "The capital of France is Paris.");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert!(!reqs[0].body.to_string().contains("cache_control"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_length_follows_the_measured_ttft() {
    let server = FaultServer::start(vec![Step::chat_after(Duration::from_millis(420), &[" Paris."])]).await;
    let mut cfg = config(&server.url, ProviderKind::Prefill);
    cfg.opener.adaptive = true;
    cfg.words_per_second = 10.0;
    let h = Handoff::new(cfg).unwrap();
    assert_eq!(h.next_opener_words(), 8, "no estimate yet: opener.words");
    let reply = h.run(&mut opener(), &conversation(), |_| {}).await;
    assert_eq!(reply.words_requested, 8);
    let ttft = h.ttft_estimate().mean_ms().unwrap();
    assert!((400.0..1000.0).contains(&ttft), "{ttft}");
    let want = ((ttft / 1000.0 * 10.0).ceil() as usize).clamp(4, 8);
    assert_eq!(h.next_opener_words(), want);
    let reply = h.run(&mut opener(), &conversation(), |_| {}).await;
    assert_eq!(reply.words_requested, want);
    assert_eq!(reply.timeline.opener_words, want.min(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_measures_the_wait_after_the_opener() {
    let server = FaultServer::start(vec![Step::chat_after(Duration::from_millis(600), &[" Paris."])]).await;
    let mut cfg = config(&server.url, ProviderKind::Prefill);
    cfg.words_per_second = 0.0; // shown as text: the opener is "shown" when complete
    let (reply, _) = run(cfg, &mut opener()).await;
    let gap = reply.timeline.gap_ms.unwrap();
    assert!((550.0..1500.0).contains(&gap), "gap {gap}");

    // Spoken at 2.5 words/s, 5 words take 2 s: the same cloud is in time.
    let server = FaultServer::start(vec![Step::chat_after(Duration::from_millis(600), &[" Paris."])]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    assert_eq!(reply.timeline.gap_ms, Some(0.0));
}

#[test]
fn works_from_a_sync_caller_with_a_current_thread_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server = FaultServer::start(vec![Step::chat(&[" Paris."])]).await;
        let mut cfg = config(&server.url, ProviderKind::Prefill);
        cfg.early_request = true;
        let (reply, _) = run(cfg, &mut opener()).await;
        assert_eq!(reply.text, "The capital of France is Paris.");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_serializes_for_json_output() {
    let server = FaultServer::start(vec![Step::error(500, "boom")]).await;
    let (reply, _) = run(config(&server.url, ProviderKind::Prefill), &mut opener()).await;
    let v = serde_json::to_value(&reply).unwrap();
    assert_eq!(v["text"], reply.text.as_str());
    assert_eq!(v["provider"], "prefill");
    assert_eq!(v["error"]["kind"], "http");
    assert!(v["error"]["message"].as_str().unwrap().contains("boom"));
    assert!(v["timeline"]["opener_done_ms"].is_number());
    assert_eq!(v["timeline"]["attempts"], 2);
    assert_eq!(v["guard"]["fired"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_fallback_failure_still_ends_with_the_note() {
    let url = closed_port_url();
    let mut o = FixedOpener::new(OPENER).failing_finish("session lost");
    let (reply, events) = run(config(&url, ProviderKind::Prefill), &mut o).await;
    assert_fell_back(&reply, &events, "connect");
    assert!(events.iter().any(|e| matches!(e, Event::Error(e) if e.kind() == "opener" && e.to_string().contains("session lost"))));
    assert_eq!(reply.text, format!("{OPENER} {}", Config::new(ProviderKind::Prefill, "http://x").fallback.note));
}
