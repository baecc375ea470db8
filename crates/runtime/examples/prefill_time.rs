//! Times prefill and decode of a random-weight preset, or of a model file (GGUF or HF folder,
//! native precision), on one thread (profiling aid). Reports
//! the thread's CPU time (from /proc/thread-self/schedstat on Linux), which stays meaningful on a
//! loaded machine, beside the best wall time.
//!
//! ```text
//! cargo run --release -p ulm-runtime --example prefill_time -- micro_30m 40 200
//! cargo run --release -p ulm-runtime --example prefill_time -- assets/models/SmolLM2-135M-Instruct.Q4_1.gguf 40 20
//! ```
use std::sync::Arc;
use std::time::Instant;
use ulm_runtime::generate::LoadedModel;
use ulm_runtime::{Config, Model, Precision, Session};

/// CPU time of this thread in seconds (Linux), or None elsewhere.
fn cpu_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("micro_30m", |s| s);
    let model: Arc<Model> = match Config::preset(what) {
        Some(config) => Arc::new(Model::random(config, 7).converted(Precision::Int8)),
        None => LoadedModel::open(what.as_ref(), Precision::Native, Some(512)).expect("a preset name or a model file").model,
    };
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(40);
    let reps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let prompt: Vec<u32> = (0..n as u32).map(|i| 100 + i * 37).collect();
    let mut s = Session::new(&model);
    let mut best = f64::MAX;
    let mut dec = f64::MAX;
    let (mut cpu_prefill, mut cpu_decode) = (0.0, 0.0);
    for _ in 0..reps {
        s.truncate(0);
        let (t, c) = (Instant::now(), cpu_time().unwrap_or(0.0));
        model.forward(&mut s, &prompt).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        let (t, c2) = (Instant::now(), cpu_time().unwrap_or(0.0));
        cpu_prefill += c2 - c;
        model.forward(&mut s, &[5]).unwrap();
        dec = dec.min(t.elapsed().as_secs_f64());
        cpu_decode += cpu_time().unwrap_or(0.0) - c2;
    }
    let r = reps as f64;
    println!(
        "{n}-token prefill: CPU {:.2} ms ({:.3} ms/token), best wall {:.2} ms; decode: CPU {:.3} ms, best wall {:.3} ms",
        cpu_prefill / r * 1e3,
        cpu_prefill / r * 1e3 / n as f64,
        best * 1e3,
        cpu_decode / r * 1e3,
        dec * 1e3
    );
}
