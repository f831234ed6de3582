//! Sharing of repeated short strings while a log or a snapshot is decoded.
//!
//! A replay decodes the same few strings over and over: every event names its session, and
//! activities repeat a handful of action names. Decoding each into a fresh `Arc<str>` costs
//! an allocation per string and keeps a copy per activity in the state. Inside
//! [`scope`], [`arc_str`] hands out one shared `Arc<str>` per distinct string instead.
//!
//! The table lives only as long as the scope (a replay, a snapshot load), on the decoding
//! thread, so it holds no memory afterwards; outside a scope [`arc_str`] just allocates.
//! Its size is capped: past [`MAX_ENTRIES`] distinct strings it starts over.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Longest string worth sharing: ids are at most 128 bytes, action names are short.
const MAX_LEN: usize = 128;

/// Most distinct strings one table holds before it is emptied.
pub(crate) const MAX_ENTRIES: usize = 1 << 16;

thread_local! {
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

type Table = HashSet<Arc<str>, BuildHasherDefault<WordHasher>>;

/// Runs `f` with string sharing on for this thread's decoding. Scopes nest: an inner one
/// shares the outer one's table.
pub(crate) fn scope<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            if self.0 {
                TABLE.with(|t| t.borrow_mut().take());
            }
        }
    }
    let outermost = TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let fresh = t.is_none();
        if fresh {
            *t = Some(Table::default());
        }
        fresh
    });
    let _reset = Reset(outermost);
    f()
}

/// `s` as an `Arc<str>`: the shared copy inside a [`scope`], a new one outside.
pub(crate) fn arc_str(s: &str) -> Arc<str> {
    if s.len() > MAX_LEN {
        return Arc::from(s);
    }
    TABLE.with(|t| match t.borrow_mut().as_mut() {
        None => Arc::from(s),
        Some(table) => {
            if let Some(a) = table.get(s) {
                return Arc::clone(a);
            }
            if table.len() >= MAX_ENTRIES {
                table.clear();
            }
            let a: Arc<str> = Arc::from(s);
            table.insert(Arc::clone(&a));
            a
        }
    })
}

/// Deserializes a string into an `Arc<str>` (one allocation at most, none for a string
/// already shared in the current [`scope`]); for `#[serde(deserialize_with)]`.
pub(crate) fn deserialize_arc_str<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Arc<str>, D::Error> {
    d.deserialize_str(ArcStrVisitor)
}

/// [`deserialize_arc_str`]'s visitor, also used where a string is wrapped afterwards.
pub(crate) struct ArcStrVisitor;

impl serde::de::Visitor<'_> for ArcStrVisitor {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arc<str>, E> {
        Ok(arc_str(v))
    }
}

/// A fast hash for short strings (FxHash's word-at-a-time mix). The table is private to
/// one decoding thread and bounded, so it needs no protection against chosen collisions.
#[derive(Default)]
pub(crate) struct WordHasher(u64);

impl WordHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.mix(u64::from(b));
    }

    fn finish(&self) -> u64 {
        // A product's low bits depend only on its inputs' low bits, and the table picks
        // buckets by the low bits: rotate the well-mixed high bits down (as rustc-hash 2).
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_a_scope_equal_strings_share_one_allocation() {
        scope(|| {
            let a = arc_str("tool_use");
            let b = arc_str(&String::from("tool_use"));
            assert!(Arc::ptr_eq(&a, &b));
            assert!(!Arc::ptr_eq(&a, &arc_str("api_call")));
            // Nested scopes share the table.
            scope(|| assert!(Arc::ptr_eq(&a, &arc_str("tool_use"))));
            assert!(Arc::ptr_eq(&a, &arc_str("tool_use")));
        });
    }

    #[test]
    fn outside_a_scope_and_after_it_nothing_is_kept() {
        let a = arc_str("x");
        assert!(!Arc::ptr_eq(&a, &arc_str("x")));
        let kept = scope(|| arc_str("y"));
        assert_eq!(Arc::strong_count(&kept), 1, "the table let go of its copy");
        assert!(TABLE.with(|t| t.borrow().is_none()));
        // A panic inside a scope still ends it.
        let _ = std::panic::catch_unwind(|| scope(|| panic!("boom")));
        assert!(TABLE.with(|t| t.borrow().is_none()));
    }

    #[test]
    fn long_strings_are_not_shared_and_the_table_is_bounded() {
        scope(|| {
            let long = "l".repeat(MAX_LEN + 1);
            assert!(!Arc::ptr_eq(&arc_str(&long), &arc_str(&long)));
            for i in 0..MAX_ENTRIES + 10 {
                arc_str(&i.to_string());
            }
            assert!(TABLE.with(|t| t.borrow().as_ref().map_or(0, |t| t.len())) <= MAX_ENTRIES);
        });
    }
}
