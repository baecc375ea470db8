//! ulm-server: an OpenAI-compatible server for ulm-runtime models, the handoff as a streaming
//! endpoint, and the web demo — `pub fn app(state) -> Router` with thin handlers.
//!
//! ```no_run
//! use ulm_runtime::{Precision, generate::LoadedModel};
//! use ulm_server::{AppState, ServedModel, ServerConfig};
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let lm = LoadedModel::open("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), Precision::Native, Some(2048))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let mut config = ServerConfig::default();
//! config.self_url = Some(format!("http://{}", listener.local_addr()?)); // the handoff's default cloud
//! let state = AppState::new(config, vec![ServedModel::new("smollm2", lm)])?;
//! ulm_server::serve(listener, state, ulm_server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! Endpoints (`/v1/*` and `/api/*` need `Authorization: Bearer KEY` when a key is set, except
//! `/api/config`):
//! - `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` — see [`openai_api`]
//!   for the continuation rules (`continue_final_message`, `prefix: true`);
//! - `POST /api/handoff` — opener on this machine, continuation from the cloud, as named SSE
//!   events; see [`handoff_api`];
//! - `GET /api/config` (what the web page needs), `GET /api/stats` (slots, queue, sessions),
//!   `GET /health`;
//! - everything else: the static page in [`ServerConfig::web_dir`].
//!
//! Generation requests take one of [`ServerConfig::slots`] slots, waiting in a queue of
//! [`ServerConfig::queue`] places (then 429 with `Retry-After`) for at most
//! [`ServerConfig::queue_timeout`] (then 503). A handoff's local opener takes a slot in the same
//! way (and lets it go before the cloud is asked). A client that disconnects cancels its
//! generation. With [`ServerConfig::batch`] on (the default), each model's running `/v1`
//! generations are decoded together, one forward pass per step for all of them.
#![deny(missing_docs)]

mod auth;
mod batcher;
pub mod error;
pub mod handoff_api;
pub mod local_opener;
pub mod openai_api;
mod scheduler;
pub mod sessions;
pub mod state;
mod web;
mod worker;

use std::future::Future;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub use error::{ApiError, ServerError};
pub use state::{AppState, CloudOverride, Latency, Limits, ServedModel, ServerConfig};

/// The router: every endpoint, the auth layer and the body limit.
pub fn app(state: AppState) -> Router {
    let limit = state.config().limits.max_body_bytes;
    Router::new()
        .route("/v1/models", get(openai_api::list_models))
        .route("/v1/chat/completions", post(openai_api::chat_completions))
        .route("/v1/completions", post(openai_api::completions))
        .route("/api/handoff", post(handoff_api::handoff))
        .route("/api/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key))
        .route("/api/config", get(config))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .fallback(web::static_file)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then lets requests in flight
/// finish.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await.map_err(|source| ServerError::Io { addr, source })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn config(State(st): State<AppState>) -> Json<Value> {
    Json(handoff_api::page_config(&st))
}

/// Load and leaks at a glance: after the load test, `running`, `waiting`, `handoffs` and every
/// model's `sessions_in_use` must be back to 0.
async fn stats(State(st): State<AppState>) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = st.scheduler();
    let c = &s.counters;
    let models: Vec<Value> = st
        .models()
        .iter()
        .map(|m| {
            let mut v = json!({"id": m.id, "sessions_idle": m.sessions.idle(), "sessions_in_use": m.sessions.in_use(), "sessions_created": m.sessions.created()});
            if let Some(b) = &m.batcher {
                // rows / passes is the mean number of generations one decode pass stepped.
                v["decode_passes"] = b.stats().passes.load(Relaxed).into();
                v["decode_rows"] = b.stats().rows.load(Relaxed).into();
            }
            v
        })
        .collect();
    Json(json!({
        "slots": s.n_slots(),
        "queue": s.max_queue(),
        "running": s.running(),
        "waiting": s.waiting(),
        "handoffs": st.config().max_handoffs - st.handoff_slots().available_permits(),
        "requests": c.requests.load(Relaxed),
        "rejected_queue_full": c.rejected_full.load(Relaxed),
        "rejected_timeout": c.rejected_timeout.load(Relaxed),
        "cancelled": c.cancelled.load(Relaxed),
        "failed": c.failed.load(Relaxed),
        "models": models,
    }))
}
