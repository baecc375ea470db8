//! The held-out split: a stable hash of `source:id`, so the same document is held out on every
//! machine and in every later build, whatever else the corpus holds.

/// Which side of the split a document (or prompt) is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Used for training and distillation.
    Train,
    /// Never trained on; used for held-out loss and evaluation.
    Heldout,
}

/// Share of every source held out, in per mille.
pub const HELDOUT_PER_MILLE: u64 = 50;

/// 64-bit FNV-1a: tiny, stable across platforms and Rust versions (unlike `DefaultHasher`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A well-mixed 64-bit hash of `bytes` (FNV-1a, then the splitmix64 finalizer): for orders and
/// shuffles, where FNV-1a alone keeps ids that differ only at the end next to each other.
pub fn mix_hash(bytes: &[u8]) -> u64 {
    let mut z = fnv1a(bytes).wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// The split of the item `id` of `source`.
pub fn split_of(source: &str, id: &str) -> Split {
    let h = fnv1a(format!("{source}:{id}").as_bytes());
    if h % 1000 < HELDOUT_PER_MILLE { Split::Heldout } else { Split::Train }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_the_reference_function() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn about_five_percent_is_held_out() {
        let n = 20_000;
        let held = (0..n).filter(|i| split_of("t", &i.to_string()) == Split::Heldout).count();
        let share = held as f64 / n as f64;
        assert!((0.04..0.06).contains(&share), "held-out share {share}");
    }
}
