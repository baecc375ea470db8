//! Best of several openers (`GenerateOptions::candidates`) on the tiny golden model: the chosen
//! reply is one of the replies the same seeds give one by one, an opener that names the topic
//! beats one that does not, then one that does not repeat itself, among equals the most
//! probable wins (or, with `pmi`, the one the question made most probable), it arrives in one
//! piece, and the session left behind still gives the same replies as a fresh one.

use std::path::PathBuf;

use ulm_runtime::copy::CopyBoost;
use ulm_runtime::generate::{Candidates, Fit, GenerateOptions, Generation, LoadedModel, generate};
use ulm_runtime::sampler::Sampling;
use ulm_runtime::tokenizer::{ChatMessage, render_chatml};
use ulm_runtime::{Precision, Session};

fn golden() -> LoadedModel {
    LoadedModel::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden"), Precision::F32, None).unwrap()
}

const Q: &str = "Tell me about the volcano.";

fn opts(lm: &LoadedModel, seed: u64, candidates: Option<Candidates>) -> GenerateOptions {
    GenerateOptions {
        max_tokens: 24,
        words: Some(4),
        sampling: Sampling { temperature: 1.2, top_p: 1.0, seed, ..Sampling::default() },
        // The golden model's random weights write letters, not words: at this strength some of
        // its replies spell "volca…" and some do not.
        copy: Some(CopyBoost::new(&lm.tokenizer, Q, 9.0).unwrap()),
        candidates,
    }
}

fn run(lm: &LoadedModel, s: &mut Session, o: &GenerateOptions) -> (Generation, Vec<String>) {
    let prompt = lm.chat_prompt(Q).unwrap();
    let mut pieces = Vec::new();
    let g = generate(lm, s, &prompt, o, &mut |p| {
        pieces.push(p.text.to_string());
        true
    })
    .unwrap();
    (g, pieces)
}

fn mean(g: &Generation) -> f32 {
    g.logprobs.iter().sum::<f32>() / g.logprobs.len().max(1) as f32
}

#[test]
fn the_best_of_n_does_not_loop_names_the_topic_then_is_the_most_probable() {
    let lm = golden();
    let n = 4;
    let (mut topic_won, mut probability_won) = (0, 0);
    for seed in 0..24u64 {
        // The same seeds one by one, each from a fresh session.
        let singles: Vec<Generation> = (0..n as u64).map(|k| run(&lm, &mut Session::new(&lm.model), &opts(&lm, seed + k, None)).0).collect();
        let (best, pieces) = run(&lm, &mut Session::new(&lm.model), &opts(&lm, seed, Candidates::optional(Q, n)));
        assert_eq!(pieces.concat(), best.text, "seed {seed}: the chosen opener is what was streamed");
        assert!(pieces.len() <= 1, "seed {seed}: one piece, not a stream: {pieces:?}");
        let same = singles.iter().find(|g| g.tokens == best.tokens).unwrap_or_else(|| panic!("seed {seed}: {:?} is not one of the candidates", best.text));
        assert_eq!(same.text, best.text);

        // Not looping first, then naming the topic ([`Fit::rank`]), then the mean log-probability.
        let fits: Vec<Fit> = singles.iter().map(|g| Fit::of(Q, &g.text)).collect();
        let chosen = Fit::of(Q, &best.text);
        assert_eq!(chosen.rank(), fits.iter().map(|f| f.rank()).max().unwrap(), "seed {seed}: {chosen:?} among {fits:?}");
        for (g, f) in singles.iter().zip(&fits) {
            if f.rank() == chosen.rank() {
                assert!(mean(g) <= mean(&best) + 1e-6, "seed {seed}: {:?} ({}) beats the chosen {:?} ({})", g.text, mean(g), best.text, mean(&best));
            }
        }
        topic_won += usize::from(chosen.names_topic && !fits[0].names_topic);
        probability_won += usize::from(fits.iter().all(|f| f.rank() == fits[0].rank()) && best.tokens != singles[0].tokens);
    }
    // Both rules decided something in these seeds (else the test above checks nothing).
    assert!(topic_won > 0 && probability_won > 0, "topic decided {topic_won}, probability {probability_won}");
}

#[test]
fn one_candidate_is_the_plain_stream_and_the_session_stays_usable() {
    let lm = golden();
    assert_eq!(Candidates::optional(Q, 1), None);
    assert_eq!(Candidates::new(Q, 0).n, 1);
    assert_eq!(Candidates::new(Q, 1000).n, Candidates::MAX);

    let (plain, plain_pieces) = run(&lm, &mut Session::new(&lm.model), &opts(&lm, 7, None));
    let (one, _) = run(&lm, &mut Session::new(&lm.model), &opts(&lm, 7, Some(Candidates::new(Q, 1))));
    assert_eq!(plain.tokens, one.tokens);
    assert!(plain_pieces.len() > 1, "without a choice the opener streams: {plain_pieces:?}");

    // A session that just chose among candidates answers the next request as a fresh one does.
    let mut s = Session::new(&lm.model);
    run(&lm, &mut s, &opts(&lm, 3, Candidates::optional(Q, 5)));
    let (again, _) = run(&lm, &mut s, &opts(&lm, 11, None));
    let (fresh, _) = run(&lm, &mut Session::new(&lm.model), &opts(&lm, 11, None));
    assert_eq!(again.tokens, fresh.tokens);
    assert_eq!(again.prompt_tokens, 1, "the prompt was fed once; only its last token again");
}

/// Mean log-probability of `g`'s tokens after a chat prompt with an empty user turn, from a
/// fresh session: what the reply is worth without the question.
fn prior(lm: &LoadedModel, g: &Generation) -> f32 {
    let mut ids = lm.tokenizer.encode_chat(&[ChatMessage::user("")], |m| Ok(render_chatml(m, true))).unwrap();
    let start = ids.len();
    ids.extend(&g.tokens);
    let mut s = Session::new(&lm.model);
    let mut sum = 0.0;
    lm.model
        .forward_each(&mut s, &ids, &mut |i, logits| {
            if i + 1 >= start && i + 1 < ids.len() {
                sum += ulm_runtime::generate::logprob_entropy(logits, ids[i + 1]).0;
            }
        })
        .unwrap();
    sum / g.tokens.len() as f32
}

/// [`opts`] without the copy boost: the golden model's replies then differ more from seed to seed.
fn plain_opts(seed: u64, candidates: Option<Candidates>) -> GenerateOptions {
    GenerateOptions { copy: None, ..opts(&golden(), seed, candidates) }
}

#[test]
fn with_pmi_the_choice_among_equals_is_what_the_question_made_probable() {
    let lm = golden();
    assert_eq!(lm.defaults.pmi, 0.0, "the golden folder sets no pmi");
    let n = 8;
    let with = |pmi| Some(Candidates { pmi, ..Candidates::new(Q, n) });
    let mut changed = 0;
    for seed in 0..24u64 {
        let singles: Vec<Generation> = (0..n as u64).map(|k| run(&lm, &mut Session::new(&lm.model), &plain_opts(seed + k, None)).0).collect();
        let (plain, _) = run(&lm, &mut Session::new(&lm.model), &plain_opts(seed, with(None)));
        let (zero, _) = run(&lm, &mut Session::new(&lm.model), &plain_opts(seed, with(Some(0.0))));
        assert_eq!(zero.tokens, plain.tokens, "seed {seed}: pmi 0 is the model's probability alone");

        let mut s = Session::new(&lm.model);
        let (best, _) = run(&lm, &mut s, &plain_opts(seed, with(Some(1.0))));
        let chosen = Fit::of(Q, &best.text).rank();
        assert_eq!(chosen, singles.iter().map(|g| Fit::of(Q, &g.text).rank()).max().unwrap(), "seed {seed}: fit still comes first");
        let score = |g: &Generation| mean(g) - prior(&lm, g);
        for g in singles.iter().filter(|g| Fit::of(Q, &g.text).rank() == chosen) {
            assert!(score(g) <= score(&best) + 1e-4, "seed {seed}: {:?} ({}) beats the chosen {:?} ({})", g.text, score(g), best.text, score(&best));
        }
        changed += usize::from(best.tokens != plain.tokens);
        // The question-free scoring happens beside the session: it still holds the prompt.
        assert_eq!(&s.tokens()[..lm.chat_prompt(Q).unwrap().len()], lm.chat_prompt(Q).unwrap().as_slice());
    }
    assert!(changed > 0, "pmi never changed the choice in these seeds (the test above checks nothing)");
}

#[test]
fn the_choice_reports_every_candidate_as_it_saw_them() {
    let lm = golden();
    let n = 6;
    for seed in 0..6u64 {
        let singles: Vec<Generation> = (0..n as u64).map(|k| run(&lm, &mut Session::new(&lm.model), &plain_opts(seed + k, None)).0).collect();
        let (alone, _) = run(&lm, &mut Session::new(&lm.model), &plain_opts(seed, None));
        assert!(alone.rivals.is_empty(), "one opener: no choice to report");

        let (best, _) = run(&lm, &mut Session::new(&lm.model), &plain_opts(seed, Some(Candidates { pmi: Some(1.0), ..Candidates::new(Q, n) })));
        assert_eq!(best.rivals.len(), n, "seed {seed}");
        let top = singles.iter().map(|g| Fit::of(Q, &g.text).rank()).max().unwrap();
        for (r, g) in best.rivals.iter().zip(&singles) {
            assert_eq!((r.text.as_str(), r.tokens), (g.text.as_str(), g.tokens.len()), "seed {seed}: in sampling order");
            assert_eq!(r.fit, Fit::of(Q, &g.text));
            assert!((r.mean_logprob - mean(g)).abs() < 1e-5);
            assert_eq!(r.min_logprob, g.logprobs.iter().copied().fold(0.0, f32::min));
            assert!((r.mean_entropy - g.entropies.iter().sum::<f32>() / g.entropies.len() as f32).abs() < 1e-5);
            // The question-free probability is scored for the candidates that can win, only.
            match r.prior {
                Some(p) => assert!(r.fit.rank() == top && (p - prior(&lm, g)).abs() < 1e-4, "seed {seed}: {r:?}"),
                None => assert!(r.fit.rank() != top || g.tokens.is_empty(), "seed {seed}: {r:?} lacks its prior"),
            }
        }
        assert!(best.rivals.iter().any(|r| r.prior.is_some()), "seed {seed}: no prior scored");
        let chosen: Vec<_> = best.rivals.iter().filter(|r| r.chosen).collect();
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].text, best.text);

        let (no_pmi, _) = run(&lm, &mut Session::new(&lm.model), &plain_opts(seed, Some(Candidates { pmi: Some(0.0), ..Candidates::new(Q, n) })));
        assert!(no_pmi.rivals.iter().all(|r| r.prior.is_none()), "pmi 0 scores no question-free probability");
    }
}
