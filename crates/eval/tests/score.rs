//! `ulm_eval::metrics::score` reuses the prompt the session already holds: scoring a text right
//! after another one to the same prompt gives what a fresh session gives.

use ulm_eval::score;
use ulm_runtime::Session;
use ulm_runtime::generate::LoadedModel;
use ulm_runtime::quant::Precision;

fn ulm_8m() -> LoadedModel {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/ulm-8m");
    LoadedModel::open(std::path::Path::new(dir), Precision::F32, Some(256)).unwrap_or_else(|e| panic!("{dir}: {e}"))
}

#[test]
fn scoring_after_the_same_prompt_equals_scoring_fresh() {
    let lm = ulm_8m();
    let prompt = "What is a volcano?";
    let texts = ["A volcano is a mountain that erupts", "Volcanoes are openings in the crust", "I like turtles"];
    let fresh: Vec<_> = texts
        .iter()
        .map(|t| {
            let mut s = Session::new(&lm.model);
            score(&lm, &mut s, prompt, "", t, 10).unwrap()
        })
        .collect();
    let mut s = Session::new(&lm.model);
    for _round in 0..2 {
        for (t, f) in texts.iter().zip(&fresh) {
            let again = score(&lm, &mut s, prompt, "", t, 10).unwrap();
            assert_eq!((again.tokens, again.accepted), (f.tokens, f.accepted), "{t}");
            assert!((again.ll_sum - f.ll_sum).abs() < 1e-3, "{t}: {} reused vs {} fresh", again.ll_sum, f.ll_sum);
        }
    }
    // Another prompt after these: only the shared head of the chat template is kept.
    let other = score(&lm, &mut s, "How do I bake bread?", "", texts[0], 10).unwrap();
    let mut s2 = Session::new(&lm.model);
    let other_fresh = score(&lm, &mut s2, "How do I bake bread?", "", texts[0], 10).unwrap();
    assert!((other.ll_sum - other_fresh.ll_sum).abs() < 1e-3);
    let mean = |x: &ulm_eval::Score| x.ll_sum / x.tokens as f64;
    assert!(mean(&fresh[0]) > mean(&fresh[2]), "an on-topic opener should score above an off-topic one: {fresh:?}");
}
