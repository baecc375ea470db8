//! Text cleaning and deduplication.

use std::collections::HashSet;

use crate::split::fnv1a;

/// Collapses runs of whitespace to one space and trims; keeps newlines only where `keep_lines`.
pub fn normalize_space(s: &str, keep_lines: bool) -> String {
    let lines = s.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    if !keep_lines {
        return lines.filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    }
    let mut out = lines.collect::<Vec<_>>().join("\n");
    // At most one blank line in a row.
    while out.contains("\n\n\n") {
        out = out.replace("\n\n\n", "\n\n");
    }
    out.trim().to_string()
}

/// The key two texts share when they differ only in case, spacing or punctuation.
pub fn dedup_key(s: &str) -> u64 {
    let folded: String = s
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(|c| c.to_lowercase())
        .collect();
    fnv1a(folded.as_bytes())
}

/// Keeps the first of every group of items whose `text` has the same [`dedup_key`]; returns how
/// many were dropped.
pub fn dedup_by<T>(items: &mut Vec<T>, text: impl Fn(&T) -> String) -> usize {
    let mut seen = HashSet::new();
    let before = items.len();
    items.retain(|it| seen.insert(dedup_key(&text(it))));
    before - items.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_collapsed() {
        assert_eq!(normalize_space("  a \t b\n\n c  ", false), "a b c");
        assert_eq!(normalize_space("a\n\n\n\nb", true), "a\n\nb");
    }

    #[test]
    fn near_duplicates_are_dropped() {
        let mut v = vec!["Hello, world!", "hello world", "Hello there", "HELLO   WORLD."];
        let dropped = dedup_by(&mut v, |s| s.to_string());
        assert_eq!(dropped, 2);
        assert_eq!(v, vec!["Hello, world!", "Hello there"]);
    }
}
