//! When things happened during one reply, the gap the user perceives, and the adaptive opener
//! length that tries to close it.

use serde::Serialize;

/// Milestones of one reply in milliseconds since the user's message arrived (the call to
/// [`crate::Handoff::run`]). `None`: it did not happen.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// The local model's first piece.
    pub first_token_ms: Option<f64>,
    /// The first shown piece holding a letter or digit (delayed when the guard holds the opener).
    pub first_word_ms: Option<f64>,
    /// The opener is complete.
    pub opener_done_ms: Option<f64>,
    /// Words in the opener shown.
    pub opener_words: usize,
    /// The opener has been fully shown, or spoken at `words_per_second` from its first word.
    pub opener_shown_ms: Option<f64>,
    /// The cache-warming request was sent.
    pub warm_request_ms: Option<f64>,
    /// The cache-warming request finished.
    pub warm_done_ms: Option<f64>,
    /// The (last) continuation request was sent.
    pub cloud_request_ms: Option<f64>,
    /// Its first non-empty piece arrived.
    pub cloud_first_token_ms: Option<f64>,
    /// The first word of continuation (or of the local fallback) was shown.
    pub first_continuation_word_ms: Option<f64>,
    /// Cloud requests made (retries included).
    pub attempts: u32,
    /// The reply is complete.
    pub done_ms: f64,
    /// From `opener_shown_ms` to `first_continuation_word_ms`; 0 when the cloud was in time.
    pub gap_ms: Option<f64>,
}

impl Timeline {
    /// Fills in `opener_shown_ms` and `gap_ms` from the milestones and the speaking rate
    /// (`words_per_second`; 0 means the opener counts as shown when complete).
    pub fn finish(&mut self, words_per_second: f64) {
        self.opener_shown_ms = self.opener_done_ms.map(|done| {
            match (self.first_word_ms, words_per_second > 0.0) {
                (Some(first), true) => done.max(first + self.opener_words as f64 / words_per_second * 1000.0),
                _ => done,
            }
        });
        self.gap_ms = match (self.opener_shown_ms, self.first_continuation_word_ms) {
            (Some(shown), Some(next)) => Some((next - shown).max(0.0)),
            _ => None,
        };
    }
}

/// Running estimate of the provider's time to first token (request sent → first piece), an
/// exponentially weighted mean so that it follows a server whose load changes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TtftEstimate {
    mean_ms: Option<f64>,
    samples: u32,
}

/// Weight of the newest sample.
const TTFT_ALPHA: f64 = 0.3;

impl TtftEstimate {
    /// Adds one measurement.
    pub fn observe(&mut self, ttft_ms: f64) {
        if !ttft_ms.is_finite() || ttft_ms < 0.0 {
            return;
        }
        self.mean_ms = Some(match self.mean_ms {
            None => ttft_ms,
            Some(m) => m + TTFT_ALPHA * (ttft_ms - m),
        });
        self.samples += 1;
    }

    /// The estimate, if any request has been measured.
    pub fn mean_ms(&self) -> Option<f64> {
        self.mean_ms
    }

    /// Measurements so far.
    pub fn samples(&self) -> u32 {
        self.samples
    }
}

/// Opener length that covers the provider's time to first token: speaking `n` words at
/// `words_per_second` takes `n / rate` seconds, so `n = ceil(ttft * rate)`, clamped to
/// `min..=max`. Without an estimate, or when text is shown at once (rate 0), `default`.
///
/// ```
/// use ulm_handoff::timeline::choose_words;
/// assert_eq!(choose_words(Some(1_000.0), 2.5, 4, 8, 8), 4); // 2.5 words cover 1 s: at least 4
/// assert_eq!(choose_words(Some(2_500.0), 2.5, 4, 8, 8), 7);
/// assert_eq!(choose_words(Some(9_000.0), 2.5, 4, 8, 8), 8);
/// assert_eq!(choose_words(None, 2.5, 4, 8, 8), 8);
/// ```
pub fn choose_words(ttft_ms: Option<f64>, words_per_second: f64, min: usize, max: usize, default: usize) -> usize {
    match ttft_ms {
        Some(ms) if words_per_second > 0.0 => {
            let n = (ms / 1000.0 * words_per_second).ceil();
            (n.max(0.0) as usize).clamp(min, max)
        }
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_is_zero_when_the_cloud_is_in_time() {
        let mut t = Timeline {
            first_word_ms: Some(50.0),
            opener_done_ms: Some(60.0),
            opener_words: 5,
            first_continuation_word_ms: Some(900.0),
            ..Default::default()
        };
        t.finish(2.5); // 5 words at 2.5 words/s: spoken by 50 + 2000 ms
        assert_eq!(t.opener_shown_ms, Some(2050.0));
        assert_eq!(t.gap_ms, Some(0.0));
    }

    #[test]
    fn gap_counts_from_the_end_of_speech() {
        let mut t = Timeline {
            first_word_ms: Some(50.0),
            opener_done_ms: Some(60.0),
            opener_words: 5,
            first_continuation_word_ms: Some(3050.0),
            ..Default::default()
        };
        t.finish(2.5);
        assert_eq!(t.gap_ms, Some(1000.0));
        // Shown as text: the opener is "shown" when complete.
        t.finish(0.0);
        assert_eq!((t.opener_shown_ms, t.gap_ms), (Some(60.0), Some(2990.0)));
        // No continuation word: no gap.
        t.first_continuation_word_ms = None;
        t.finish(2.5);
        assert_eq!(t.gap_ms, None);
    }

    #[test]
    fn estimate_follows_the_samples() {
        let mut e = TtftEstimate::default();
        assert_eq!(e.mean_ms(), None);
        e.observe(1000.0);
        assert_eq!(e.mean_ms(), Some(1000.0));
        e.observe(2000.0);
        assert_eq!(e.mean_ms(), Some(1300.0));
        e.observe(f64::NAN);
        e.observe(-5.0);
        assert_eq!(e.samples(), 2);
    }

    #[test]
    fn word_choice_is_clamped() {
        assert_eq!(choose_words(Some(0.0), 2.5, 4, 8, 8), 4);
        assert_eq!(choose_words(Some(2_000.0), 2.5, 4, 8, 8), 5);
        assert_eq!(choose_words(Some(3_000.0), 0.0, 4, 8, 6), 6);
    }
}
