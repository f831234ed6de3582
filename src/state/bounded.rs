//! Bounded deserialization of the state's persistent collections.
//!
//! `imbl`'s serde visitors preallocate as many elements as the decoder claims. Decoding
//! untrusted bytes (a damaged or crafted record or snapshot whose checksum matches) could
//! then ask for terabytes and abort the process. These visitors cap the preallocation the
//! way serde's own do for `Vec` and let the collection grow only as elements actually
//! arrive, so a garbage length ends in a decode error once the input runs out.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Most bytes preallocated for a collection before its elements are seen.
const MAX_PREALLOC_BYTES: usize = 1 << 20;

fn cautious<T>(hint: Option<usize>) -> usize {
    hint.unwrap_or(0)
        .min(MAX_PREALLOC_BYTES / std::mem::size_of::<T>().max(1))
}

/// Deserializes an `imbl::Vector` with a bounded preallocation.
pub(crate) fn vector<'de, D, T>(d: D) -> Result<imbl::Vector<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Clone,
{
    struct SeqVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Clone> Visitor<'de> for SeqVisitor<T> {
        type Value = imbl::Vector<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut v: Vec<T> = Vec::with_capacity(cautious::<T>(seq.size_hint()));
            while let Some(x) = seq.next_element()? {
                v.push(x);
            }
            Ok(imbl::Vector::from(v))
        }
    }

    d.deserialize_seq(SeqVisitor(PhantomData))
}

/// Deserializes an `imbl::OrdMap` with a bounded preallocation. As with `imbl`'s own
/// visitor, a repeated key keeps its last value.
pub(crate) fn ord_map<'de, D, K, V>(d: D) -> Result<imbl::OrdMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    struct MapVisitor<K, V>(PhantomData<(K, V)>);

    impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
    where
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
    {
        type Value = imbl::OrdMap<K, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut v: Vec<(K, V)> = Vec::with_capacity(cautious::<(K, V)>(map.size_hint()));
            while let Some(entry) = map.next_entry()? {
                v.push(entry);
            }
            Ok(imbl::OrdMap::from(v))
        }
    }

    d.deserialize_map(MapVisitor(PhantomData))
}

/// Deserializes an `imbl::HashSet` with a bounded preallocation (as [`vector`]).
pub(crate) fn hash_set<'de, D, T>(d: D) -> Result<imbl::HashSet<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + std::hash::Hash + Eq + Clone,
{
    struct SeqVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + std::hash::Hash + Eq + Clone> Visitor<'de> for SeqVisitor<T> {
        type Value = imbl::HashSet<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut v: Vec<T> = Vec::with_capacity(cautious::<T>(seq.size_hint()));
            while let Some(x) = seq.next_element()? {
                v.push(x);
            }
            Ok(v.into_iter().collect())
        }
    }

    d.deserialize_seq(SeqVisitor(PhantomData))
}

/// Deserializes an `imbl::HashMap` with a bounded preallocation (as [`ord_map`]; a
/// repeated key keeps its last value).
pub(crate) fn hash_map<'de, D, K, V>(d: D) -> Result<imbl::HashMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + std::hash::Hash + Eq + Clone,
    V: Deserialize<'de> + Clone,
{
    struct MapVisitor<K, V>(PhantomData<(K, V)>);

    impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
    where
        K: Deserialize<'de> + std::hash::Hash + Eq + Clone,
        V: Deserialize<'de> + Clone,
    {
        type Value = imbl::HashMap<K, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut v: Vec<(K, V)> = Vec::with_capacity(cautious::<(K, V)>(map.size_hint()));
            while let Some(entry) = map.next_entry()? {
                v.push(entry);
            }
            Ok(v.into_iter().collect())
        }
    }

    d.deserialize_map(MapVisitor(PhantomData))
}
