//! Small validated value types shared by every layer: [`Lsn`], [`Timestamp`], [`SessionId`],
//! [`AgentId`] and [`JsonText`].
//!
//! Preconditions live in the types: a `SessionId` is always safe to use as a file name, a
//! `JsonText` always holds one well-formed JSON value. Constructors are the only way in, so
//! the rest of the engine never re-checks.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Log sequence number: the position of a record in the log. LSNs start at 1 and are dense;
/// `Lsn::ZERO` means "before the first record".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The position before the first record.
    pub const ZERO: Lsn = Lsn(0);

    /// The largest LSN a file may hold (2^62; a record every nanosecond would take 146
    /// years to get there). Decoders refuse larger ones, so LSN arithmetic on what a
    /// crafted file claims can never overflow.
    pub const MAX: Lsn = Lsn(1 << 62);

    /// The LSN that follows this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// `<the LSN in 20 digits>.<ext>`: the name of a file named by an LSN (a log segment by
    /// its first record, a snapshot by its state's).
    pub(crate) fn file_name(self, ext: &str) -> String {
        format!("{:020}.{ext}", self.0)
    }

    /// The LSN of a file named as [`Lsn::file_name`] names it with `ext`; `None` for any
    /// other name.
    pub(crate) fn from_file_name(name: &str, ext: &str) -> Option<Lsn> {
        let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
        if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        stem.parse().ok().map(Lsn)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A UTC instant with microsecond precision, stored as microseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Microseconds since the Unix epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// Builds a timestamp from whole seconds since the epoch.
    pub fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(1_000_000))
    }

    /// The instant `secs` seconds later (saturating).
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        let micros = i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        Timestamp(self.0.saturating_add(micros))
    }

    /// Seconds elapsed from `earlier` to `self` (negative when `earlier` is later).
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        (self.0.saturating_sub(earlier.0)) as f64 / 1_000_000.0
    }

    /// Converts to a chrono value; out-of-range values clamp to the epoch.
    pub fn to_datetime(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// ISO 8601 in UTC with second precision and a `Z` suffix, the format of seed 001's
    /// JSON files: `2025-11-08T10:30:00Z`.
    pub fn to_iso8601(self) -> String {
        crate::isotime::iso(self, false, true)
    }

    /// ISO 8601 in UTC with microsecond precision: `2025-11-08T10:30:00.123456Z`.
    pub fn to_iso8601_micros(self) -> String {
        crate::isotime::iso(self, true, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso8601_micros())
    }
}

/// Longest accepted session or agent id, in bytes.
pub const MAX_ID_LEN: usize = 128;

fn validate_file_safe_id(field: &'static str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long; the limit is {MAX_ID_LEN}", s.len()),
        ));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(Error::invalid(
            field,
            format!("{s:?} must not start with '.' or '-'"),
        ));
    }
    // Bytewise: every allowed character is ASCII, and a non-ASCII character's first byte
    // is not, so the first refused byte starts the first refused character.
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if let Some(bad) = s
        .bytes()
        .position(|b| !allowed(b))
        .and_then(|i| s[i..].chars().next())
    {
        return Err(Error::invalid(
            field,
            format!(
                "{:?} contains {bad:?}; ids become file names, so only ASCII letters, digits, \
                 '_', '-' and '.' are allowed",
                s.chars().take(MAX_ID_LEN).collect::<String>()
            ),
        ));
    }
    Ok(())
}

macro_rules! file_safe_id {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s`: 1 to 128 bytes of ASCII letters, digits, `_`, `-` and `.`,
            /// not starting with `.` or `-`, so it is safe as a file name on every platform.
            pub fn new(s: &str) -> Result<Self> {
                validate_file_safe_id($field, s)?;
                Ok($name(Arc::from(s)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($field)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<$name, E> {
                        validate_file_safe_id($field, v).map_err(E::custom)?;
                        Ok($name(crate::intern::arc_str(v)))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

file_safe_id!(
    /// A validated session id. Session ids become file names (`session_<id>.json`).
    SessionId,
    "session id"
);

file_safe_id!(
    /// A validated agent id, the key of a session chain (`<agent>_sessions.json`).
    AgentId,
    "agent id"
);

impl SessionId {
    /// A fresh UUID v7 id (time-ordered, so ids sort by creation time).
    pub fn generate() -> SessionId {
        SessionId(Arc::from(uuid::Uuid::now_v7().to_string().as_str()))
    }
}

/// Largest accepted JSON value (details, metadata values), in bytes of compact JSON text.
pub const MAX_JSON_LEN: usize = 1 << 20;

/// Deepest accepted nesting of arrays and objects in a JSON value (details, metadata values,
/// command arguments, chain metadata): `[[0]]` is 2 levels deep, a scalar 0.
///
/// One limit, applied wherever a JSON value enters the engine ([`JsonText::parse`],
/// [`JsonText::from_value`], protocol lines, the JSON form of a bundle), so that every bundle
/// the engine writes parses again: a bundle wraps a value in at most
/// `export::BUNDLE_VALUE_WRAPPING` (43) levels of its own (the bundle object, its events,
/// eight levels of imports, a clone's checkpoint's activity), and the limit plus that
/// wrapping stays within the 127 levels that serde_json (and so `import`) reads. Values
/// decoded from the log are not checked again, so a log written before the limit existed
/// still opens.
pub const MAX_JSON_DEPTH: usize = 64;

const DEPTH_REASON: &str = "nested more than 64 levels deep (arrays and objects), over the limit \
                            of a JSON value";
const _: () = assert!(MAX_JSON_DEPTH == 64, "update DEPTH_REASON");

/// Reads one JSON value from any serde deserializer, refusing what no JSON input may hold:
/// arrays and objects nested more than `remaining` levels deep, and an object with a
/// duplicate key (which a `serde_json::Value` would keep silently, the last one winning).
#[derive(Clone, Copy)]
struct Strict {
    remaining: usize,
}

impl Strict {
    fn enter<E: serde::de::Error>(self) -> std::result::Result<Strict, E> {
        match self.remaining.checked_sub(1) {
            Some(remaining) => Ok(Strict { remaining }),
            None => Err(E::custom(DEPTH_REASON)),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = serde_json::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v)
            .map_or(serde_json::Value::Null, serde_json::Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::String(v))
    }

    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let inner = self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(serde_json::Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let inner = self.enter()?;
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?}"
                )));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(serde_json::Value::Object(out))
    }
}

/// Parses `text` as one JSON value under the input rules: no duplicate keys, arrays and
/// objects at most `max_depth` levels deep. A breach is a data error (`is_data`), a text
/// that is not JSON a syntax or end-of-input error.
pub(crate) fn parse_json_input(
    text: &str,
    max_depth: usize,
) -> std::result::Result<serde_json::Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde::de::DeserializeSeed::deserialize(
        Strict {
            remaining: max_depth,
        },
        &mut de,
    )?;
    de.end()?;
    Ok(value)
}

/// Whether `value` nests arrays and objects more than `max_depth` levels deep. Iterative,
/// so a value of any depth is checked without recursion.
fn nested_deeper_than(value: &serde_json::Value, max_depth: usize) -> bool {
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            serde_json::Value::Array(a) => {
                if depth == max_depth {
                    return true;
                }
                stack.extend(a.iter().map(|c| (c, depth + 1)));
            }
            serde_json::Value::Object(m) => {
                if depth == max_depth {
                    return true;
                }
                stack.extend(m.values().map(|c| (c, depth + 1)));
            }
            _ => {}
        }
    }
    false
}

/// One well-formed JSON value, kept as compact text.
///
/// Keeping the text rather than a `serde_json::Value` tree costs one allocation instead of
/// one per node, and the text is what both the log and the JSON projections need. In binary
/// formats it is a string; in human-readable formats it is the JSON value itself.
///
/// Every way in applies the input rules of JSON values: at most [`MAX_JSON_LEN`] bytes of
/// compact text, arrays and objects nested at most [`MAX_JSON_DEPTH`] levels deep, and (for
/// text) no object with a duplicate key. A breach is [`Error::InvalidInput`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonText(Arc<str>);

impl JsonText {
    /// Parses and validates `text` (at most [`MAX_JSON_LEN`] bytes, [`MAX_JSON_DEPTH`]
    /// levels, no duplicate keys), keeping it in compact form.
    pub fn parse(text: &str) -> Result<JsonText> {
        let value = JsonText::read(text)?.map_err(json_input_error)?;
        JsonText::compact(&value)
    }

    /// JSON when `text` is JSON, otherwise the JSON string `text` (the command line's
    /// "JSON if it parses, else a string"). Text that is JSON but breaks a rule of JSON
    /// values (too deep, a duplicate key, too long) is refused, not kept as a string.
    pub fn parse_or_string(text: &str) -> Result<JsonText> {
        match JsonText::read(text)? {
            Ok(value) => JsonText::compact(&value),
            Err(e) if !e.is_data() => JsonText::string(text),
            Err(e) => Err(json_input_error(e)),
        }
    }

    /// `text` read under the input rules: the outer error when it is far too long to be
    /// a value, the inner one when it is not JSON (syntax) or breaks a rule (data).
    fn read(text: &str) -> Result<std::result::Result<serde_json::Value, serde_json::Error>> {
        if text.len() > MAX_JSON_LEN * 4 {
            return Err(Error::invalid(
                "JSON",
                format!("{} bytes is over the limit of {MAX_JSON_LEN}", text.len()),
            ));
        }
        Ok(parse_json_input(text, MAX_JSON_DEPTH))
    }

    /// Serialises `value` (at most [`MAX_JSON_LEN`] bytes of compact text, at most
    /// [`MAX_JSON_DEPTH`] levels deep).
    pub fn from_value(value: &serde_json::Value) -> Result<JsonText> {
        if nested_deeper_than(value, MAX_JSON_DEPTH) {
            return Err(Error::invalid("JSON", DEPTH_REASON));
        }
        JsonText::compact(value)
    }

    /// `value` (already checked for depth) as compact text, at most [`MAX_JSON_LEN`] bytes.
    fn compact(value: &serde_json::Value) -> Result<JsonText> {
        let text = serde_json::to_string(value)
            .map_err(|e| Error::invalid("JSON", format!("cannot serialise: {e}")))?;
        if text.len() > MAX_JSON_LEN {
            return Err(Error::invalid(
                "JSON",
                format!("{} bytes is over the limit of {MAX_JSON_LEN}", text.len()),
            ));
        }
        Ok(JsonText(Arc::from(text)))
    }

    /// A JSON string value.
    pub fn string(s: &str) -> Result<JsonText> {
        JsonText::from_value(&serde_json::Value::String(s.to_owned()))
    }

    /// `text` as it is: the caller (the protocol's fast path) made it the compact form
    /// of a value within the limits, exactly as [`JsonText::from_value`] would write it.
    pub(crate) fn from_compact(text: String) -> JsonText {
        JsonText(Arc::from(text))
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text into a `serde_json::Value`. Text decoded from a log that passed its
    /// checksum is well formed; should it not be, the text is returned as a JSON string.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0)
            .unwrap_or_else(|_| serde_json::Value::String(self.0.to_string()))
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match serde_json::value::RawValue::from_string(self.0.to_string()) {
                Ok(raw) => raw.serialize(s),
                Err(_) => s.serialize_str(&self.0),
            }
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            // JSON from outside (a bundle): the input rules apply.
            let value = serde::de::DeserializeSeed::deserialize(
                Strict {
                    remaining: MAX_JSON_DEPTH,
                },
                d,
            )?;
            JsonText::compact(&value).map_err(serde::de::Error::custom)
        } else {
            // Binary payloads passed a CRC check before they are decoded; re-parsing every
            // value would dominate replay time, so the text is trusted here and `to_value`
            // degrades gracefully if it is not JSON.
            d.deserialize_str(crate::intern::ArcStrVisitor)
                .map(JsonText)
        }
    }
}

/// The input error for a JSON text `parse_json_input` refused: "malformed JSON" when it is
/// not JSON, the broken rule otherwise.
pub(crate) fn json_input_error(e: serde_json::Error) -> Error {
    if e.is_data() {
        Error::invalid("JSON", e.to_string())
    } else {
        Error::invalid("JSON", format!("malformed JSON: {e}"))
    }
}

/// Checks a free-text field: at most `max` bytes and no control characters other than
/// newline and tab.
pub(crate) fn validate_text(field: &'static str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long; the limit is {max}", s.len()),
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// The little-endian `u32` at `b[at..at + 4]` (of a header or frame already length-checked).
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian `u64` at `b[at..at + 8]` (of a header or frame already length-checked).
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests;
