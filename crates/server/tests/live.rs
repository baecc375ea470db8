//! A real server (`app()` on a loopback port) with real models: the queue's 429 and 503, client
//! disconnects, injected latency, graceful shutdown, and the handoff — through its SSE endpoint and
//! through ulm-handoff's client with every provider strategy this server speaks.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use ulm_handoff::{Config as HandoffConfig, FixedOpener, Handoff, ProviderKind, Turn};
use ulm_server::{ServedModel, ServerConfig};

use support::{Live, config, golden, parse_sse, smollm2};

fn chat(max_tokens: u32, stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}],
        "max_tokens": max_tokens, "temperature": 0, "stream": stream})
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new().post(url).json(body).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let mut cfg = config();
    cfg.slots = 1;
    cfg.queue = 0;
    cfg.latency.ttft = Duration::from_millis(1500); // holds the one place while "the cloud thinks"
    let live = Live::start(cfg, || vec![ServedModel::new("golden", golden())]).await;
    let url = format!("{}/v1/chat/completions", live.url);
    let first = tokio::spawn({
        let url = url.clone();
        async move { post(&url, &json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4})).await.status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = post(&url, &json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4})).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "queue_full");
    assert_eq!(first.await.unwrap(), 200, "the admitted request is served");
    let s = live.settled(Duration::from_secs(5)).await;
    assert_eq!(s["rejected_queue_full"], 1);
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_latency_delays_the_first_token_and_paces_the_rest() {
    let mut cfg = config();
    cfg.latency.ttft = Duration::from_millis(300);
    cfg.latency.tokens_per_s = 50.0;
    let live = Live::start(cfg, || vec![ServedModel::new("golden", golden())]).await;
    let t0 = Instant::now();
    let res = post(&format!("{}/v1/completions", live.url), &json!({"prompt": "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", "max_tokens": 11, "temperature": 0, "stream": true})).await;
    let mut stream = res.bytes_stream();
    let mut first = None;
    let mut body = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if first.is_none() && String::from_utf8_lossy(&chunk).contains("\"text\":\"f") {
            first = Some(t0.elapsed());
        }
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let total = t0.elapsed();
    let first = first.expect("a first token");
    assert!(first >= Duration::from_millis(300), "first token after {first:?}");
    // 11 pieces at 50/s: the last comes at least 10 × 20 ms after the first.
    assert!(total - first >= Duration::from_millis(190), "paced: first {first:?}, total {total:?}");
    assert!(body.ends_with("data: [DONE]\n\n"));
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_a_stream_in_flight_finish() {
    let mut cfg = config();
    cfg.latency.tokens_per_s = 40.0;
    let live = Live::start(cfg, || vec![ServedModel::new("golden", golden())]).await;
    let res = post(&format!("{}/v1/chat/completions", live.url), &json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20, "stream": true})).await;
    assert_eq!(res.status(), 200);
    let reading = tokio::spawn(async move { res.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    live.shutdown().await; // returns once the stream is done
    let body = reading.await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let events = parse_sse(&body);
    assert_eq!(events.len(), 1 + 20 + 1 + 1, "role chunk, 20 pieces, finish, [DONE]");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_cancels_its_generation() {
    let Some(lm) = smollm2() else { return };
    let mut cfg = config();
    cfg.slots = 1;
    cfg.queue = 1;
    cfg.queue_timeout = Duration::from_millis(300);
    let live = Live::start(cfg, || vec![ServedModel::new("smollm2", lm)]).await;
    let url = format!("{}/v1/chat/completions", live.url);

    // A long streamed reply: read one chunk, then hang up.
    let res = post(&url, &chat(900, true)).await;
    let mut stream = res.bytes_stream();
    let _ = stream.next().await.unwrap().unwrap();
    let _ = stream.next().await.unwrap().unwrap();
    // While it holds the only slot, another request waits 300 ms and gets 503.
    let res = post(&url, &chat(4, false)).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    drop(stream);
    let t0 = Instant::now();
    let s = live.settled(Duration::from_secs(10)).await;
    eprintln!("streamed generation cancelled {:?} after the disconnect", t0.elapsed());
    assert_eq!(s["cancelled"], 1, "{s}");
    assert_eq!(s["rejected_timeout"], 1, "{s}");

    // A non-streamed request whose client gives up is cancelled too.
    let client = reqwest::Client::builder().timeout(Duration::from_millis(400)).build().unwrap();
    assert!(client.post(&url).json(&chat(900, false)).send().await.is_err());
    let s = live.settled(Duration::from_secs(10)).await;
    assert_eq!(s["cancelled"], 2, "{s}");
    assert_eq!(s["models"][0]["sessions_in_use"], 0);
    live.shutdown().await;
}

/// Edge: the golden model (instant); cloud: SmolLM2 served by the same server.
async fn handoff_server(extra: impl FnOnce(&mut ServerConfig)) -> Option<Live> {
    let cloud = smollm2()?;
    let mut cfg = config();
    cfg.edge_model = "golden".into();
    cfg.cloud_model = "smollm2".into();
    extra(&mut cfg);
    Some(Live::start(cfg, || vec![ServedModel::new("golden", golden()), ServedModel::new("smollm2", cloud)]).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handoff_endpoint_streams_the_opener_before_the_continuation() {
    // One slot: the opener holds it, then lets it go for the continuation this server generates.
    let Some(live) = handoff_server(|c| {
        c.api_key = Some("k3y".into());
        c.slots = 1;
    })
    .await
    else {
        return;
    };
    let body = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "words": 4, "max_tokens": 12,
        "temperature": 0, "seed": 1});
    let res = reqwest::Client::new().post(format!("{}/api/handoff", live.url)).bearer_auth("k3y").json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    let events = parse_sse(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "meta");
    let meta: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!((meta["edge_model"].as_str(), meta["cloud_model"].as_str(), meta["words"].as_u64()), (Some("golden"), Some("smollm2"), Some(4)));
    let first_opener = names.iter().position(|n| *n == "opener").expect("opener events");
    let first_cont = names.iter().position(|n| *n == "continuation").unwrap_or_else(|| panic!("no continuation: {text}"));
    assert!(first_opener < first_cont);
    assert!(!names.contains(&"error"), "{text}");
    assert_eq!(&names[names.len() - 4..], ["mode", "timeline", "reply", "done"], "{names:?}");
    let shown: String = events
        .iter()
        .filter(|(n, _)| matches!(n.as_str(), "opener" | "continuation" | "fallback" | "notice"))
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    let reply: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(reply["text"], shown.as_str());
    let t = &reply["timeline"];
    for k in ["first_word_ms", "opener_done_ms", "cloud_request_ms", "cloud_first_token_ms", "first_continuation_word_ms", "gap_ms"] {
        assert!(t[k].is_number(), "{k} in {t}");
    }
    assert!(t["first_word_ms"].as_f64() < t["cloud_first_token_ms"].as_f64());
    eprintln!("handoff: {shown:?}\ntimeline: {t}");
    let s = live.settled(Duration::from_secs(10)).await;
    assert_eq!(s["requests"], 2, "the opener's slot, then the continuation from this server's /v1: {s}");
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ulm_handoff_continues_through_this_server_with_every_strategy_it_speaks() {
    let Some(live) = handoff_server(|_| {}).await else { return };
    const OPENER: &str = "The capital of France is";
    let mut rows = Vec::new();
    for p in [ProviderKind::Prefill, ProviderKind::Prefix, ProviderKind::Completion, ProviderKind::Instruct] {
        let mut cfg = HandoffConfig::new(p, format!("{}/v1", live.url));
        cfg.model = "smollm2".into();
        cfg.max_tokens = 12;
        cfg.temperature = Some(0.0);
        cfg.opener.words = 5;
        cfg.timeouts.first_token = Duration::from_secs(60);
        let h = Handoff::new(cfg).unwrap();
        let mut o = FixedOpener::new(OPENER);
        let reply = h.run(&mut o, &[Turn::user("What is the capital of France?")], |_| {}).await;
        assert_eq!(reply.error, None, "{p}: {:?}", reply.error.as_ref().map(|e| e.to_string()));
        assert!(reply.text.starts_with(OPENER) && !reply.continuation.trim().is_empty(), "{p}: {:?}", reply.text);
        assert!(!reply.text.contains("  "), "{p}: {:?}", reply.text);
        rows.push(format!("{p:<10} {:?} ({:?})", reply.text, reply.mode));
    }
    eprintln!("{}", rows.join("\n"));
    live.settled(Duration::from_secs(10)).await;
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_whose_cloud_is_down_ends_with_the_local_fallback_and_an_error_event() {
    let live = Live::start(config(), || vec![ServedModel::new("golden", golden())]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let body = json!({"messages": [{"role": "user", "content": "Hello"}], "words": 4, "seed": 3,
        "cloud": {"base_url": format!("http://127.0.0.1:{closed}/v1"), "provider": "prefill", "model": "x"}});
    let res = post(&format!("{}/api/handoff", live.url), &body).await;
    assert_eq!(res.status(), 200);
    let events = parse_sse(&res.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"opener") && names.contains(&"error") && names.contains(&"notice"), "{names:?}");
    let err: Value = serde_json::from_str(&events[names.iter().position(|n| *n == "error").unwrap()].1).unwrap();
    assert_eq!(err["kind"], "connect", "{err}");
    let reply: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert!(reply["text"].as_str().unwrap().ends_with(reply["note"].as_str().unwrap()), "{reply}");
    assert_eq!(names.last(), Some(&"done"));
    let s = live.settled(Duration::from_secs(5)).await;
    assert_eq!(s["requests"], 2, "the opener and the local fallback each took a generation slot: {s}");
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_turns_a_handoff_away_with_429_instead_of_running_its_opener() {
    let mut cfg = config();
    cfg.slots = 1;
    cfg.queue = 0;
    cfg.latency.ttft = Duration::from_millis(1500); // a /v1 request holds the one place meanwhile
    let live = Live::start(cfg, || vec![ServedModel::new("golden", golden())]).await;
    let first = tokio::spawn({
        let url = format!("{}/v1/chat/completions", live.url);
        async move { post(&url, &json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4})).await.status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let handoff = json!({"messages": [{"role": "user", "content": "Hello"}], "words": 3});
    let res = post(&format!("{}/api/handoff", live.url), &handoff).await;
    assert_eq!(res.status(), 429);
    assert!(t0.elapsed() < Duration::from_millis(1000), "answered at once, not after the slot: {:?}", t0.elapsed());
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!((body["error"]["type"].as_str(), body["error"]["code"].as_str()), (Some("rate_limit_error"), Some("queue_full")));
    assert_eq!(first.await.unwrap(), 200);
    let s = live.settled(Duration::from_secs(5)).await;
    assert_eq!(s["rejected_queue_full"], 1, "{s}");

    // Idle again, with one slot: the handoff runs to its end (its cloud is this server, which
    // needs the slot the opener held).
    let res = post(&format!("{}/api/handoff", live.url), &handoff).await;
    assert_eq!(res.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(60), res.text()).await.expect("no deadlock over the one slot").unwrap();
    assert!(text.contains("event: done"), "{text}");
    let s = live.settled(Duration::from_secs(5)).await;
    assert!(s["requests"].as_u64().unwrap() >= 3, "{s}");
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_a_handoff_cancels_the_cloud_generation_it_started() {
    // SmolLM2 on both sides, so that the opener is real words and the story goes on and on.
    let Some(lm) = smollm2() else { return };
    let live = Live::start(config(), || vec![ServedModel::new("smollm2", lm)]).await;
    let body = json!({"messages": [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}], "words": 4,
        "max_tokens": 900, "temperature": 0});
    let res = post(&format!("{}/api/handoff", live.url), &body).await;
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: continuation") {
        seen.push_str(&String::from_utf8_lossy(&stream.next().await.expect("events until the continuation").unwrap()));
    }
    drop(stream);
    let s = live.settled(Duration::from_secs(15)).await;
    assert!(s["cancelled"].as_u64().unwrap() >= 1, "the cloud side was cancelled: {s}");
    live.shutdown().await;
}

/// The demo's openers of `question` from the shipped ulm-8m with `copy_boost`; the golden model continues.
async fn demo_opener(copy_boost: f32, question: &str) -> String {
    let lm = ulm_runtime::generate::LoadedModel::open(&support::root().join("models/ulm-8m"), ulm_runtime::Precision::F32, Some(512)).unwrap();
    let mut cfg = config();
    cfg.edge_model = "ulm-8m".into();
    cfg.cloud_model = "golden".into();
    let live = Live::start(cfg, || vec![ServedModel::new("ulm-8m", lm).copy_boost(copy_boost), ServedModel::new("golden", golden())]).await;
    let body = json!({"messages": [{"role": "user", "content": question}], "words": 6, "max_tokens": 4, "seed": 11});
    let res = post(&format!("{}/api/handoff", live.url), &body).await;
    assert_eq!(res.status(), 200);
    let events = parse_sse(&res.text().await.unwrap());
    let opener: String = events
        .iter()
        .filter(|(n, _)| n == "opener")
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    live.shutdown().await;
    opener
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ulm_serve_copy_boost_pulls_the_demo_openers_toward_the_question() {
    const Q: &str = "Why do volcanoes erupt?";
    let (alone, boosted) = (demo_opener(0.0, Q).await, demo_opener(6.0, Q).await);
    eprintln!("copy boost 0: {alone:?}\ncopy boost 6: {boosted:?}");
    assert!(!boosted.trim().is_empty() && alone != boosted);
    assert!(ulm_runtime::copy::names_topic(Q, &boosted), "{boosted:?}");
}
