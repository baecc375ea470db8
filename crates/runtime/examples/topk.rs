//! Prints the greedy continuation of a raw prompt with the top-5 candidates at every step.
//!
//! ```text
//! cargo run --release -p ulm-runtime --example topk -- MODEL "raw prompt" [steps]
//! ```
use ulm_runtime::generate::LoadedModel;
use ulm_runtime::{Precision, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let prec = if std::env::var("ULM_F32").is_ok() { Precision::F32 } else { Precision::Native };
    let lm = LoadedModel::open(args[1].as_ref(), prec, Some(1024))?;
    let steps: usize = args.get(3).map_or(16, |s| s.parse().unwrap());
    let prompt = args[2].replace("\\n", "\n");
    let ids = lm.tokenizer.encode(&prompt, true)?;
    println!("prompt ids: {ids:?}");
    let mut s = Session::new(&lm.model);
    let mut logits = lm.model.forward(&mut s, &ids)?.to_vec();
    for _ in 0..steps {
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let m = logits[idx[0]];
        let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f32>().ln();
        let top: Vec<String> = idx[..5].iter().map(|&i| format!("{:?}={:.3}", lm.tokenizer.token_piece(i as u32).unwrap_or_default(), logits[i] - lse)).collect();
        println!("{}", top.join("  "));
        let t = idx[0] as u32;
        if lm.tokenizer.is_end_of_turn(t) {
            break;
        }
        logits = lm.model.forward(&mut s, &[t])?.to_vec();
    }
    Ok(())
}
