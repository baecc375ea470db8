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

#[test]
fn an_empty_prompt_scores_after_an_empty_question() {
    let lm = ulm_8m();
    let text = "A volcano is a mountain that erupts";
    let mut s = Session::new(&lm.model);
    let without = score(&lm, &mut s, "", "", text, 10).unwrap();
    // By hand: the empty question's prompt, then the text, each token's log-probability.
    let mut ids = lm.empty_question_prompt().unwrap();
    let start = ids.len();
    ids.extend(lm.tokenizer.encode(text, false).unwrap());
    let mut sum = 0.0f64;
    lm.model
        .forward_each(&mut Session::new(&lm.model), &ids, &mut |i, logits| {
            if i + 1 >= start && i + 1 < ids.len() {
                sum += f64::from(ulm_runtime::generate::logprob_entropy(logits, ids[i + 1]).0);
            }
        })
        .unwrap();
    assert_eq!(without.tokens, ids.len() - start);
    assert!((without.ll_sum - sum).abs() < 1e-3, "{} against {sum}", without.ll_sum);
    // The question makes the answer to it more likely than no question does.
    let with = score(&lm, &mut s, "What is a volcano?", "", text, 10).unwrap();
    assert!(with.ll_sum > without.ll_sum, "{} with the question, {} without", with.ll_sum, without.ll_sum);
}
