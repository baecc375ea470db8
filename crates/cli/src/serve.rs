//! `ulm serve`: the OpenAI-compatible server, the handoff endpoint and the web demo.
//!
//! ```text
//! ulm serve                                   # edge μLM + SmolLM2 as the local "cloud", http://127.0.0.1:8080/
//! ulm serve --ttft-ms 800 --tokens-per-s 40   # make the local cloud feel like a remote one
//! ulm serve --batch 0                         # no batched decoding: one generation per slot and thread
//! ulm serve --cloud https://api.example.com/v1 --provider instruct --cloud-model gpt-4o --cloud-key-env OPENAI_API_KEY
//! ULM_API_KEY=secret ulm serve --host 0.0.0.0 # bearer auth on /v1 and /api
//! ```
//! It hosts the edge model (the default model: the shipped μLM, else SmolLM2) and the cloud model
//! (SmolLM2) at once, selected by the request's `model`. Stops gracefully on SIGTERM or Ctrl-C.
//!
//! A handoff request may name its own cloud URL only on a loopback host (a model server on this
//! machine), and only while the server itself listens on loopback: on any other `--host` the
//! default is `--no-cloud-override`. `--allow-cloud-override` lets requests name any URL.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use ulm_handoff::ProviderKind;
use ulm_server::{AppState, CloudOverride, Latency, Limits, ServedModel, ServerConfig};

use crate::models;

/// How long requests in flight may run on after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to bind (loopback by default; anything else exposes the server).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the URL is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Edge model writing openers: a path or a name (ulm-8m, ulm-15m, ulm-30m, smollm2); default: the shipped μLM, else SmolLM2.
    #[arg(long)]
    pub model: Option<String>,
    /// Model served as the local cloud.
    #[arg(long, default_value = "smollm2")]
    pub cloud_model: String,
    /// Weight storage: auto (int8 for a float μLM folder, as stored for GGUF), native, f32 or int8.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Context length of a session.
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// Threads per generation.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Generations at once (default: --batch when batching, else the number of cores).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Batched decoding: each model steps up to N running generations in one forward pass on
    /// one thread (--threads: more) (0: off, each slot decodes on its own thread).
    #[arg(long, default_value_t = ulm_server::state::DEFAULT_BATCH)]
    pub batch: usize,
    /// Requests that may wait for a slot before 429.
    #[arg(long, default_value_t = ulm_server::state::DEFAULT_QUEUE)]
    pub queue: usize,
    /// Longest wait for a slot before 503, in ms.
    #[arg(long, default_value_t = ulm_server::state::DEFAULT_QUEUE_TIMEOUT_MS)]
    pub queue_timeout_ms: u64,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = ulm_server::state::DEFAULT_MAX_TOKENS_LIMIT)]
    pub max_tokens_limit: u32,
    /// Longest prompt in tokens.
    #[arg(long, default_value_t = ulm_server::state::DEFAULT_MAX_PROMPT_TOKENS)]
    pub max_prompt_tokens: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = ulm_server::state::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Require `Authorization: Bearer KEY` on /v1 and /api.
    #[arg(long, env = "ULM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Injected time to first token on /v1 generations, in ms (cloud-like latency; off by default).
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Injected delivery rate on /v1 generations, tokens per second (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub tokens_per_s: f64,
    /// Uniform random extra time to first token, up to this many ms.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Folder of the web page (default: web/ of the checkout).
    #[arg(long)]
    pub web: Option<PathBuf>,
    /// Render chats with each model's own template instead of plain ChatML with no system turn.
    #[arg(long)]
    pub template: bool,
    /// Copy boost of the demo's openers (`ulm ask --copy-boost`; 0 = the edge model alone;
    /// default: the edge model's generation_config.json, 1 for the shipped μLMs).
    #[arg(long)]
    pub copy_boost: Option<f32>,
    /// Openers sampled per demo reply, the best kept (`ulm ask --candidates`; default: the edge
    /// model's generation_config.json).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Handoff settings file (TOML, see ulm-handoff's config); flags below override it.
    #[arg(long)]
    pub handoff_config: Option<PathBuf>,
    /// Cloud that continues openers (default: this server's own /v1).
    #[arg(long)]
    pub cloud: Option<String>,
    /// How the cloud is asked to continue: prefill, prefix, anthropic, instruct, completion.
    #[arg(long)]
    pub provider: Option<ProviderKind>,
    /// Name of the environment variable holding the cloud's API key.
    #[arg(long)]
    pub cloud_key_env: Option<String>,
    /// Opener length in words.
    #[arg(long)]
    pub words: Option<usize>,
    /// Do not let /api/handoff requests pick another cloud URL (the default off loopback).
    #[arg(long, conflicts_with = "allow_cloud_override")]
    pub no_cloud_override: bool,
    /// Let /api/handoff requests pick any cloud URL (default: loopback hosts only, and only when
    /// the server listens on loopback). The server then sends conversations wherever a client says.
    #[arg(long)]
    pub allow_cloud_override: bool,
}

pub fn run(a: Args) -> Result<()> {
    let edge_path = models::resolve(a.model.as_deref())?;
    let cloud_path = models::resolve(Some(&a.cloud_model))?;
    let load = |p: &PathBuf| -> Result<ulm_runtime::generate::LoadedModel> {
        let prec = models::precision_for(&a.precision, p)?;
        ulm_runtime::generate::LoadedModel::open(p, prec, Some(a.ctx)).with_context(|| format!("loading {}", p.display()))
    };
    let edge_lm = load(&edge_path)?;
    let copy_boost = edge_lm.defaults.copy_boost_or(a.copy_boost);
    let candidates = edge_lm.defaults.candidates_or(a.candidates);
    let edge_id = model_id(a.model.as_deref(), &edge_lm.name);
    let cloud_id = model_id(Some(&a.cloud_model), &edge_lm.name);
    let mut served = Vec::new();
    if same_file(&edge_path, &cloud_path) {
        // One model in both roles: load it once, answer to both names.
        let mut m = ServedModel::new(cloud_id.clone(), edge_lm).template(a.template).copy_boost(copy_boost).candidates(candidates);
        if edge_id != cloud_id {
            m = m.alias(edge_id.clone());
        }
        served.push(m);
    } else {
        let cloud_lm = load(&cloud_path)?;
        served.push(ServedModel::new(edge_id.clone(), edge_lm).template(a.template).copy_boost(copy_boost).candidates(candidates));
        served.push(ServedModel::new(cloud_id.clone(), cloud_lm).template(a.template));
    }

    let mut handoff = match &a.handoff_config {
        Some(p) => ulm_handoff::Config::load(p)?,
        None => ServerConfig::default().handoff,
    };
    if a.handoff_config.is_none() || a.cloud.is_some() {
        handoff.base_url = a.cloud.clone().unwrap_or_default();
    }
    if let Some(p) = a.provider {
        handoff.provider = p;
    }
    if let Some(k) = &a.cloud_key_env {
        handoff.api_key_env = Some(k.clone());
    }
    if let Some(w) = a.words {
        handoff.opener.words = w;
    }
    if a.cloud.is_some() && handoff.model.is_empty() {
        handoff.model = a.cloud_model.clone();
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let slots = a.slots.unwrap_or(if a.batch > 0 { a.batch } else { cores });
    let web_dir = a.web.clone().or_else(find_web);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let url = format!("http://{local}");
        let cloud_override = match (a.allow_cloud_override, a.no_cloud_override) {
            (true, _) => CloudOverride::Any,
            (_, true) => CloudOverride::Off,
            // Exposed beyond this machine, a loopback override would let clients reach its
            // local services through the server.
            _ if !local.ip().is_loopback() => CloudOverride::Off,
            _ => CloudOverride::Loopback,
        };
        let config = ServerConfig {
            slots,
            queue: a.queue,
            queue_timeout: Duration::from_millis(a.queue_timeout_ms),
            limits: Limits {
                max_body_bytes: a.max_body_bytes,
                max_prompt_tokens: a.max_prompt_tokens,
                max_tokens_limit: a.max_tokens_limit,
                default_max_tokens: ulm_server::state::DEFAULT_MAX_TOKENS.min(a.max_tokens_limit),
            },
            latency: Latency { ttft: Duration::from_millis(a.ttft_ms), tokens_per_s: a.tokens_per_s, jitter: Duration::from_millis(a.jitter_ms) },
            api_key: a.api_key.clone().filter(|k| !k.is_empty()),
            web_dir: web_dir.clone(),
            edge_model: edge_id.clone(),
            cloud_model: cloud_id.clone(),
            handoff,
            cloud_override,
            self_url: Some(url.clone()),
            threads: a.threads,
            batch: a.batch,
            batch_threads: a.threads,
            idle_sessions: slots,
            ..ServerConfig::default()
        };
        let state = AppState::new(config, served)?;
        eprintln!(
            "ulm serve: edge `{edge_id}`, cloud `{cloud_id}`, {slots} slots, queue {}, {}, cloud for handoffs: {} (requests may name: {}){}",
            a.queue,
            if a.batch > 0 { format!("batched decoding (up to {} per pass, {} threads)", a.batch, a.threads) } else { "batching off".into() },
            state.default_cloud_url().unwrap_or_default(),
            match cloud_override {
                CloudOverride::Off => "no other",
                CloudOverride::Loopback => "loopback only",
                CloudOverride::Any => "any",
            },
            if a.api_key.is_some() { ", API key required" } else { "" }
        );
        if web_dir.is_none() {
            eprintln!("ulm serve: no web/ folder found; the page is off (give --web DIR)");
        }
        // The URL line is what scripts and tests wait for.
        println!("listening on {url}/ — open it in a browser");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            ulm_server::shutdown_signal().await;
            eprintln!("ulm serve: shutting down; requests in flight get {} s", SHUTDOWN_GRACE.as_secs());
            let _ = stop_tx.send(());
        };
        let server = ulm_server::serve(listener, state, shutdown);
        tokio::select! {
            r = server => r?,
            _ = async { let _ = stop_rx.await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                eprintln!("ulm serve: grace period over, closing the remaining connections");
            }
        }
        anyhow::Ok(())
    })
}

/// The name a model answers to: the name it was asked by, else its file or folder name.
fn model_id(asked: Option<&str>, loaded_name: &str) -> String {
    match asked {
        Some(m) if !std::path::Path::new(m).exists() => m.to_string(),
        Some(m) => std::path::Path::new(m).file_name().map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string()).unwrap_or_else(|| m.to_string()),
        None if loaded_name.starts_with("SmolLM2") => "smollm2".into(),
        None => loaded_name.to_string(),
    }
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// web/ in the working directory, $ULM_HOME or the checkout that holds this binary.
fn find_web() -> Option<PathBuf> {
    let mut roots = vec![PathBuf::from(".")];
    if let Some(h) = std::env::var_os("ULM_HOME") {
        roots.insert(0, PathBuf::from(h));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(root) = exe.ancestors().nth(3) {
            roots.push(root.to_path_buf());
        }
    }
    roots.into_iter().map(|r| r.join("web")).find(|p| p.join("index.html").is_file())
}
