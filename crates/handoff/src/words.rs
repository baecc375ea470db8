//! Word helpers shared by the opener, the seam and the recovery classifier. A word is a run of
//! non-whitespace, as in the authors' demo; that keeps "N words" the same count everywhere.

/// Number of whitespace-separated words in `text`.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The first `n` words of `text`, with the whitespace between them kept and nothing after the
/// last one (so the result never ends in a space).
pub fn first_words(text: &str, n: usize) -> &str {
    let text = text.trim_start();
    if n == 0 {
        return "";
    }
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                seen += 1;
                if seen == n {
                    return &text[..i];
                }
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    text.trim_end()
}

/// A word reduced for comparison: lower case, without leading and trailing punctuation.
/// Falls back to the lower-cased word when it is all punctuation (e.g. "—").
pub(crate) fn norm(word: &str) -> String {
    let core = word.trim_matches(|c: char| !c.is_alphanumeric());
    if core.is_empty() { word.to_lowercase() } else { core.to_lowercase() }
}

/// True if `c` ends a sentence.
pub(crate) fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

/// True if `text` (ignoring trailing whitespace, closing quotes and brackets) ends a sentence.
/// A colon counts too: "Here are the steps:" is complete and the next part is a new block.
pub fn ends_sentence(text: &str) -> bool {
    let t = text.trim_end().trim_end_matches(['"', '\'', '”', '’', ')', ']', '*', '_']);
    t.chars().next_back().is_some_and(|c| is_sentence_end(c) || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_cuts_words() {
        assert_eq!(count_words("  The capital  of France\nis "), 5);
        assert_eq!(first_words("The capital of France is Paris.", 4), "The capital of France");
        assert_eq!(first_words("  Hi there ", 5), "Hi there");
        assert_eq!(first_words("one two", 0), "");
        assert_eq!(first_words("one two", 2), "one two");
    }

    #[test]
    fn sentence_ends() {
        assert!(ends_sentence("It is Paris."));
        assert!(ends_sentence("Really?\" "));
        assert!(ends_sentence("Here are the steps:"));
        assert!(!ends_sentence("The capital of France is"));
        assert!(!ends_sentence("Paris, the"));
        assert!(!ends_sentence(""));
    }

    #[test]
    fn norm_strips_punctuation_and_case() {
        assert_eq!(norm("\"Paris,\""), "paris");
        assert_eq!(norm("—"), "—");
        assert_eq!(norm("It's"), "it's");
    }
}
