//! Test support: the real models (the tiny golden model of ulm-runtime, SmolLM2 from the assets),
//! states built from them, and `app()` served on a loopback port.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ulm_runtime::Precision;
use ulm_runtime::generate::LoadedModel;
use ulm_server::{AppState, ServedModel, ServerConfig};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny golden model (< 1 MB, HF layout, 256-token context): fast, exact, always present.
pub fn golden() -> LoadedModel {
    LoadedModel::open(&root().join("crates/runtime/tests/data/golden"), Precision::F32, None).expect("golden model")
}

/// SmolLM2-135M-Instruct from the assets, or `None` (and a note) when it was not fetched. Under CI
/// (`CI` set) a missing model is a failure: CI runs scripts/fetch-assets.sh first.
pub fn smollm2() -> Option<LoadedModel> {
    let p = root().join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !p.is_file() {
        if std::env::var_os("CI").is_some() {
            panic!("{} is missing under CI; scripts/fetch-assets.sh should have fetched it", p.display());
        }
        eprintln!("SKIPPED: {} is not there (run scripts/fetch-assets.sh models)", p.display());
        return None;
    }
    Some(LoadedModel::open(&p, Precision::Native, Some(1024)).expect("SmolLM2"))
}

pub fn config() -> ServerConfig {
    ServerConfig { web_dir: Some(root().join("web")), ..ServerConfig::default() }
}

/// The golden model served as `golden` (edge and cloud).
pub fn golden_state(cfg: ServerConfig) -> AppState {
    AppState::new(cfg, vec![ServedModel::new("golden", golden())]).unwrap()
}

/// A server on 127.0.0.1:0 running `app(state)`; dropping it shuts the server down.
pub struct Live {
    pub url: String,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<Result<(), ulm_server::ServerError>>>,
}

impl Live {
    /// Binds first, so that the state knows its own URL (the handoff's default cloud).
    pub async fn start(mut cfg: ServerConfig, models: impl FnOnce() -> Vec<ServedModel>) -> Live {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        cfg.self_url = Some(url.clone());
        let state = AppState::new(cfg, models()).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ulm_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Live { url, state, stop: Some(tx), task: Some(task) }
    }

    pub async fn stats(&self) -> serde_json::Value {
        let mut req = reqwest::Client::new().get(format!("{}/api/stats", self.url));
        if let Some(key) = &self.state.config().api_key {
            req = req.bearer_auth(key);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    /// Waits until no generation runs or waits and every session is back (or panics after `within`).
    pub async fn settled(&self, within: Duration) -> serde_json::Value {
        let t0 = std::time::Instant::now();
        loop {
            let s = self.stats().await;
            let idle = s["running"] == 0
                && s["waiting"] == 0
                && s["handoffs"] == 0
                && s["models"].as_array().unwrap().iter().all(|m| m["sessions_in_use"] == 0);
            if idle {
                return s;
            }
            assert!(t0.elapsed() < within, "server did not settle within {within:?}: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t).await.expect("graceful shutdown in time").unwrap().unwrap();
        }
    }
}

/// Reads a whole SSE body into (event name, data) pairs, unnamed events as "message".
pub fn parse_sse(body: &str) -> Vec<(String, String)> {
    let mut dec = ulm_openai::SseDecoder::new();
    dec.feed(body.as_bytes())
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            (e.event.unwrap_or_else(|| "message".into()), e.data)
        })
        .collect()
}

pub type Shared<T> = Arc<T>;
