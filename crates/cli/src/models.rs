//! Model names and the default model.
//!
//! `--model` takes a path (GGUF file or Hugging Face folder) or a name: `ulm-8m`, `ulm-15m`,
//! `ulm-30m` (shipped in models/), `smollm2` (fetched by scripts/fetch-assets.sh). With no
//! `--model`, the default is the shipped μLM (ulm-8m: read blind, the three sizes' openers are
//! equally often on topic, and ulm-8m is 3.5× faster than ulm-30m, see
//! docs/eval/reading-s22/README.md; else ulm-30m, a little more likely under the teacher, else
//! ulm-15m), else SmolLM2.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ulm_runtime::Precision;
use ulm_runtime::generate::LoadedModel;

/// Where SmolLM2 lands after `scripts/fetch-assets.sh`.
pub const SMOLLM2: &str = "assets/models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The μLMs we ship, best first (by the measurements in docs/models/).
pub const SHIPPED: &[&str] = &["ulm-8m", "ulm-30m", "ulm-15m"];

/// Folders to look in for relative names: $ULM_HOME, the working directory, and the checkout
/// that holds this binary (target/release/ulm → ../..).
fn roots() -> Vec<PathBuf> {
    let mut r = Vec::new();
    if let Some(h) = std::env::var_os("ULM_HOME") {
        r.push(PathBuf::from(h));
    }
    r.push(PathBuf::from("."));
    if let Ok(exe) = std::env::current_exe() {
        if let Some(root) = exe.ancestors().nth(3) {
            r.push(root.to_path_buf());
        }
    }
    r
}

fn find(rel: &str) -> Option<PathBuf> {
    roots().into_iter().map(|r| r.join(rel)).find(|p| p.exists())
}

/// Resolves `--model` (or the default when `None`) to a path.
pub fn resolve(model: Option<&str>) -> Result<PathBuf> {
    match model {
        Some(m) if Path::new(m).exists() => Ok(PathBuf::from(m)),
        Some("smollm2" | "smollm2-135m" | "SmolLM2-135M-Instruct") => find(SMOLLM2).ok_or_else(|| {
            anyhow::anyhow!("SmolLM2 is not downloaded: run `scripts/fetch-assets.sh models` (expected {SMOLLM2})")
        }),
        Some(m) if SHIPPED.contains(&m) => {
            find(&format!("models/{m}")).ok_or_else(|| anyhow::anyhow!("model `{m}` is not in models/{m}; it is shipped once trained (see docs/models)"))
        }
        Some(m) => bail!("no model file or folder `{m}`; give a path to a .gguf file or a folder with config.json, or one of: smollm2, {}", SHIPPED.join(", ")),
        None => {
            for m in SHIPPED {
                // One weights file, or shards (ulm-30m in f16 is two files under 50 MB).
                for weights in ["model.safetensors", "model.safetensors.index.json"] {
                    if let Some(p) = find(&format!("models/{m}/{weights}")) {
                        return Ok(p.parent().unwrap().to_path_buf());
                    }
                }
            }
            resolve(Some("smollm2"))
        }
    }
}

/// Parses `--precision` (`auto` is resolved per model by [`precision_for`]).
pub fn precision(s: &str) -> Result<Precision> {
    Ok(match s {
        "native" => Precision::Native,
        "f32" => Precision::F32,
        "int8" | "q8" => Precision::Int8,
        "auto" => bail!("precision `auto` needs the model: use precision_for"),
        _ => bail!("unknown precision `{s}`: use auto, native, f32 or int8"),
    })
}

/// `--precision` for the model at `path`: `auto` is int8 for a Hugging Face folder (the μLM's
/// float checkpoint becomes the fast row-scaled int8 path) and as stored for a GGUF file (already
/// quantized by its maker); anything else as [`precision`] parses it.
pub fn precision_for(s: &str, path: &Path) -> Result<Precision> {
    match s {
        "auto" if path.is_dir() => Ok(Precision::Int8),
        "auto" => Ok(Precision::Native),
        other => precision(other),
    }
}

/// Loads the model named by `--model` with a context cap.
pub fn load(model: Option<&str>, prec: &str, max_seq: usize) -> Result<LoadedModel> {
    let path = resolve(model)?;
    Ok(LoadedModel::open(&path, precision_for(prec, &path)?, Some(max_seq))?)
}

/// Peak resident memory of this process in bytes (VmHWM), where the OS tells it.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
