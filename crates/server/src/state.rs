//! Settings (defaults in one block), the models a server hosts, and the state every handler shares.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use ulm_handoff::{Config as HandoffConfig, Handoff, ProviderKind};
use ulm_runtime::generate::LoadedModel;
use ulm_runtime::pool::Pool;
use ulm_runtime::sampler::Rng;

use crate::batcher::Batcher;
use crate::error::ServerError;
use crate::scheduler::Scheduler;
use crate::sessions::SessionPool;

// ---- Defaults, in one block ------------------------------------------------------------------

/// Concurrent generations.
pub const DEFAULT_SLOTS: usize = 2;
/// Requests that may wait for a slot.
pub const DEFAULT_QUEUE: usize = 64;
/// Sessions one batched decode pass steps together (0: batching off, each slot runs its own
/// generation). On: decoding is bound by reading the weights, and a pass reads them once for
/// every running generation (see docs/benchmarks.md, "batched decoding on vs off": SmolLM2
/// serves 1.3–1.4× the requests at 8–32 clients, and time to first token drops 5–7×).
pub const DEFAULT_BATCH: usize = 32;
/// Longest wait for a slot before 503.
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 120_000;
/// Largest request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Longest prompt in tokens.
pub const DEFAULT_MAX_PROMPT_TOKENS: usize = 4096;
/// Largest `max_tokens` a request may ask for.
pub const DEFAULT_MAX_TOKENS_LIMIT: u32 = 2048;
/// `max_tokens` when the request does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Sampling when the request does not say.
pub const DEFAULT_TEMPERATURE: f32 = 0.7;
/// Nucleus mass when the request does not say.
pub const DEFAULT_TOP_P: f32 = 0.9;
/// Handoffs running at once. Each holds a cloud request for its whole reply; its local model
/// calls take generation slots (and queue places) like `/v1` requests.
pub const DEFAULT_MAX_HANDOFFS: usize = 16;
/// Handoff engines kept (one per distinct cloud setting, each with its TTFT estimate).
const MAX_CACHED_HANDOFFS: usize = 32;

/// Limits on what one request may ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
    /// Longest prompt in tokens (400 above).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` (400 above).
    pub max_tokens_limit: u32,
    /// `max_tokens` when the request does not say.
    pub default_max_tokens: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_prompt_tokens: DEFAULT_MAX_PROMPT_TOKENS,
            max_tokens_limit: DEFAULT_MAX_TOKENS_LIMIT,
            default_max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

/// Cloud-like latency added to `/v1` generations, for honest demos on one machine (off by
/// default). The time to first token is `ttft + U(0, jitter)`, spent before taking a slot (a
/// remote cloud's latency does not use local cores); pieces are then delivered at no more than
/// `tokens_per_s` (0: as fast as they come).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    /// Added time to first token.
    pub ttft: Duration,
    /// Pieces per second at most (0: unpaced).
    pub tokens_per_s: f64,
    /// Uniform random extra time to first token, up to this.
    pub jitter: Duration,
}

/// Which cloud URLs a `/api/handoff` request may name instead of the configured cloud (the server
/// then sends the conversation there: a request-chosen URL is a request the *server* makes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CloudOverride {
    /// Only the configured cloud (`ulm serve --no-cloud-override`).
    Off,
    /// Loopback hosts only: `127.0.0.0/8`, `::1`, `localhost` — a server on this machine, such as
    /// a llama.cpp started beside it (the default; `ulm serve` on a non-loopback address
    /// defaults to [`CloudOverride::Off`]).
    #[default]
    Loopback,
    /// Any `http(s)` URL (`ulm serve --allow-cloud-override`).
    Any,
}

impl CloudOverride {
    /// `off`, `loopback` or `any`, as `/api/config` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudOverride::Off => "off",
            CloudOverride::Loopback => "loopback",
            CloudOverride::Any => "any",
        }
    }
}

/// Everything a server is told at start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Generations running at once.
    pub slots: usize,
    /// Requests that may wait for a slot (then 429).
    pub queue: usize,
    /// Longest wait for a slot (then 503).
    pub queue_timeout: Duration,
    /// Request limits.
    pub limits: Limits,
    /// Injected latency.
    pub latency: Latency,
    /// Bearer token required on `/v1/*` and `/api/*` (except `/api/config`).
    pub api_key: Option<String>,
    /// Folder of the static web page served at `/` (none: no page).
    pub web_dir: Option<PathBuf>,
    /// Id of the model that writes openers (empty: the first model).
    pub edge_model: String,
    /// Id of the model the default cloud serves (empty: the last model).
    pub cloud_model: String,
    /// Base handoff settings; requests override the cloud and the opener length. Its `base_url`
    /// empty means "this server's own `/v1`", set through [`ServerConfig::self_url`].
    pub handoff: HandoffConfig,
    /// Which other cloud (`cloud.base_url`) a request to `/api/handoff` may name.
    pub cloud_override: CloudOverride,
    /// This server's own root URL (`http://127.0.0.1:PORT`), once known.
    pub self_url: Option<String>,
    /// Handoffs running at once (then 429). Besides this cap, each handoff's local model calls
    /// take generation slots like `/v1` requests (see [`ServerConfig::slots`]).
    pub max_handoffs: usize,
    /// Threads per session.
    pub threads: usize,
    /// Batched decoding: one decode loop per model steps up to this many running generations
    /// in one forward pass; 0 turns it off (each slot runs its own generation on its own
    /// thread). The slots still bound how many generations run.
    pub batch: usize,
    /// Threads of a model's decode loop (its passes and the prefills it runs).
    pub batch_threads: usize,
    /// Sessions kept idle per model (the prompt cache).
    pub idle_sessions: usize,
    /// Sampling seed base of the local opener.
    pub seed: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut handoff = HandoffConfig::new(ProviderKind::Prefill, "http://127.0.0.1");
        handoff.base_url = String::new();
        ServerConfig {
            slots: DEFAULT_SLOTS,
            queue: DEFAULT_QUEUE,
            queue_timeout: Duration::from_millis(DEFAULT_QUEUE_TIMEOUT_MS),
            limits: Limits::default(),
            latency: Latency::default(),
            api_key: None,
            web_dir: None,
            edge_model: String::new(),
            cloud_model: String::new(),
            handoff,
            cloud_override: CloudOverride::default(),
            self_url: None,
            max_handoffs: DEFAULT_MAX_HANDOFFS,
            threads: 1,
            batch: DEFAULT_BATCH,
            batch_threads: 1,
            idle_sessions: DEFAULT_SLOTS,
            seed: 0,
        }
    }
}

/// One model the server hosts.
pub struct ServedModel {
    /// The name clients put in `model`.
    pub id: String,
    /// Other names that select it.
    pub aliases: Vec<String>,
    /// Weights and tokenizer.
    pub lm: LoadedModel,
    /// Render chats with the model's own template (else plain ChatML with no system turn).
    pub template: bool,
    /// Copy boost of the demo's openers when this model is the edge model (0 = off; the
    /// model's own by default; see
    /// [`crate::local_opener::LocalOpener::copy_boost`]).
    pub copy_boost: f32,
    /// Openers sampled per demo reply, the best kept (1 = off; the model's own by default; see
    /// [`crate::local_opener::LocalOpener::candidates`]).
    pub candidates: usize,
    /// Idle sessions (the prompt cache).
    pub sessions: Arc<SessionPool>,
    /// The model's decode loop when batching is on (started by [`AppState::new`]).
    pub(crate) batcher: Option<Batcher>,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel").field("id", &self.id).field("aliases", &self.aliases).field("sessions", &self.sessions).finish()
    }
}

impl ServedModel {
    /// `lm` served as `id`, plain ChatML (its session pool is sized by [`AppState::new`]).
    pub fn new(id: impl Into<String>, lm: LoadedModel) -> Self {
        let sessions = Arc::new(SessionPool::new(&lm.model, DEFAULT_SLOTS, 1));
        let (copy_boost, candidates) = (lm.defaults.copy_boost, lm.defaults.candidates_or(None));
        ServedModel { id: id.into(), aliases: Vec::new(), lm, template: false, copy_boost, candidates, sessions, batcher: None }
    }

    /// Also answer to `alias`.
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.aliases.push(alias.into());
        self
    }

    /// Use the model's own chat template.
    pub fn template(mut self, on: bool) -> Self {
        self.template = on;
        self
    }

    /// Pull the demo's openers toward the question's words with this strength (0 = off;
    /// default: the model's own, from its `generation_config.json`).
    pub fn copy_boost(mut self, strength: f32) -> Self {
        self.copy_boost = strength;
        self
    }

    /// Sample this many openers for the demo and keep the best (1 = off; default: the model's
    /// own, from its `generation_config.json`).
    pub fn candidates(mut self, n: usize) -> Self {
        self.candidates = n.max(1);
        self
    }

    fn answers_to(&self, name: &str) -> bool {
        self.id == name || self.aliases.iter().any(|a| a == name)
    }
}

/// The state shared by every handler. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ServerConfig,
    models: Vec<Arc<ServedModel>>,
    edge: usize,
    cloud: usize,
    scheduler: Scheduler,
    handoffs: Arc<Semaphore>,
    handoff_cache: Mutex<HashMap<String, Arc<Handoff>>>,
    started: u64,
    ids: AtomicU64,
    rng: Mutex<Rng>,
}

impl AppState {
    /// A state serving `models` (the edge and cloud roles are named in `config`).
    pub fn new(config: ServerConfig, mut models: Vec<ServedModel>) -> Result<AppState, ServerError> {
        if models.is_empty() {
            return Err(ServerError::NoModels);
        }
        let bad = |key, message: String| Err(ServerError::Config { key, message });
        if config.slots == 0 {
            return bad("slots", "0 slots cannot serve anything; use at least 1".into());
        }
        if config.max_handoffs == 0 {
            return bad("max_handoffs", "use at least 1".into());
        }
        if !(config.latency.tokens_per_s >= 0.0 && config.latency.tokens_per_s.is_finite()) {
            return bad("tokens_per_s", format!("{} must be a finite number >= 0", config.latency.tokens_per_s));
        }
        let mut names: Vec<&str> = Vec::new();
        for m in &models {
            for n in std::iter::once(&m.id).chain(&m.aliases) {
                if names.contains(&n.as_str()) {
                    return Err(ServerError::DuplicateModel(n.clone()));
                }
                names.push(n);
            }
        }
        let known = models.iter().map(|m| m.id.clone()).collect::<Vec<_>>().join(", ");
        let find = |role: &'static str, name: &str, default: usize| -> Result<usize, ServerError> {
            if name.is_empty() {
                return Ok(default);
            }
            models.iter().position(|m| m.answers_to(name)).ok_or_else(|| ServerError::UnknownModel { role, name: name.into(), known: known.clone() })
        };
        let edge = find("edge", &config.edge_model, 0)?;
        let cloud = find("cloud", &config.cloud_model, models.len() - 1)?;
        for m in &mut models {
            if config.batch > 0 {
                // The loop's pool also runs the prefills of its sessions (on the loop's thread).
                let pool = (config.batch_threads > 1).then(|| Arc::new(Pool::new(config.batch_threads)));
                let sessions = match &pool {
                    Some(p) => SessionPool::new(&m.lm.model, config.idle_sessions, 1).shared_pool(p.clone()),
                    None => SessionPool::new(&m.lm.model, config.idle_sessions, config.threads),
                };
                m.sessions = Arc::new(sessions);
                let batcher = Batcher::spawn(m.lm.clone(), m.sessions.clone(), config.batch, pool)
                    .map_err(|e| ServerError::Config { key: "batch", message: format!("cannot start the decode loop of `{}`: {e}", m.id) })?;
                m.batcher = Some(batcher);
            } else {
                m.sessions = Arc::new(SessionPool::new(&m.lm.model, config.idle_sessions, config.threads));
            }
        }
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let scheduler = Scheduler::new(config.slots, config.queue, config.queue_timeout);
        let handoffs = Arc::new(Semaphore::new(config.max_handoffs));
        Ok(AppState {
            inner: Arc::new(Inner {
                models: models.into_iter().map(Arc::new).collect(),
                edge,
                cloud,
                scheduler,
                handoffs,
                handoff_cache: Mutex::new(HashMap::new()),
                started,
                ids: AtomicU64::new(0),
                rng: Mutex::new(Rng::new(started ^ 0x5eed)),
                config,
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Served models, in order.
    pub fn models(&self) -> &[Arc<ServedModel>] {
        &self.inner.models
    }

    /// The model named `name`; an empty name picks the cloud model.
    pub fn model(&self, name: &str) -> Option<Arc<ServedModel>> {
        if name.is_empty() {
            return Some(self.cloud());
        }
        self.inner.models.iter().find(|m| m.answers_to(name)).cloned()
    }

    /// The model that writes openers.
    pub fn edge(&self) -> Arc<ServedModel> {
        self.inner.models[self.inner.edge].clone()
    }

    /// The model the default cloud serves.
    pub fn cloud(&self) -> Arc<ServedModel> {
        self.inner.models[self.inner.cloud].clone()
    }

    /// The default cloud root: the configured `base_url`, else this server's own `/v1`.
    pub fn default_cloud_url(&self) -> Option<String> {
        let base = &self.inner.config.handoff.base_url;
        if !base.is_empty() {
            return Some(base.clone());
        }
        self.inner.config.self_url.as_ref().map(|u| format!("{}/v1", u.trim_end_matches('/')))
    }

    pub(crate) fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    pub(crate) fn handoff_slots(&self) -> &Arc<Semaphore> {
        &self.inner.handoffs
    }

    /// A cached engine for `cfg` (keeping its TTFT estimate across requests), or a new one.
    pub(crate) fn handoff_for(&self, cfg: HandoffConfig) -> Result<Arc<Handoff>, ulm_handoff::HandoffError> {
        let key = format!("{cfg:?}");
        let mut cache = self.inner.handoff_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = cache.get(&key) {
            return Ok(h.clone());
        }
        let h = Arc::new(Handoff::new(cfg)?);
        if cache.len() >= MAX_CACHED_HANDOFFS {
            cache.clear();
        }
        cache.insert(key, h.clone());
        Ok(h)
    }

    /// Unix seconds when the server started.
    pub fn started(&self) -> u64 {
        self.inner.started
    }

    /// A fresh id with `prefix` (`chatcmpl-…`).
    pub(crate) fn next_id(&self, prefix: &str) -> String {
        let n = self.inner.ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06x}", self.inner.started)
    }

    /// Uniform in `0..1` (for jitter and default seeds).
    pub(crate) fn random_unit(&self) -> f64 {
        self.inner.rng.lock().map(|mut r| r.uniform() as f64).unwrap_or(0.5)
    }

    /// A random seed for requests that give none.
    pub(crate) fn random_seed(&self) -> u64 {
        self.inner.rng.lock().map(|mut r| r.next_u64()).unwrap_or(0)
    }
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
