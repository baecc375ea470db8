//! Compares the logits of the same sequence fed in one chunk and token by token (debug aid).
//!
//! ```text
//! cargo run --release -p ulm-runtime --example prefill_vs_decode -- MODEL "raw prompt" N
//! ```
use ulm_runtime::generate::LoadedModel;
use ulm_runtime::sampler::argmax;
use ulm_runtime::{Precision, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let lm = LoadedModel::open(args[1].as_ref(), Precision::Native, Some(1024))?;
    let mut ids = lm.tokenizer.encode(&args[2].replace("\\n", "\n"), true)?;
    let n: usize = args[3].parse()?;
    let mut s = Session::new(&lm.model);
    let mut l = lm.model.forward(&mut s, &ids)?.to_vec();
    for _ in 0..n {
        let t = argmax(&l);
        ids.push(t);
        l = lm.model.forward(&mut s, &[t])?.to_vec();
    }
    let mut s2 = Session::new(&lm.model);
    let l2 = lm.model.forward(&mut s2, &ids)?.to_vec();
    let d = l.iter().zip(&l2).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("max |decode - prefill| logit difference after {n} steps: {d}");
    Ok(())
}
