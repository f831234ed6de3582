//! Seed 003 tracker files: `<agent>_sessions.json`, as `SessionTracker._save_sessions`
//! writes them, read into [`ImportedChain`]s that keep every field.
//!
//! The file (`json.dump(data, f, indent=2)`):
//!
//! ```json
//! {
//!   "agent_id": "py-agent",
//!   "current_session_id": "s2",
//!   "interaction_count": 2,
//!   "sessions": [
//!     { "session_id": "s1", "created_at": "2025-11-08T10:30:00.123456",
//!       "interaction_count": 1, "last_prompt": "P1", "last_response": "R1",
//!       "metadata": null }
//!   ]
//! }
//! ```
//!
//! What is kept, so that the engine's chain file
//! (`crate::projection::schema::ChainFile`) is equal, as a JSON value, to the file read:
//! * every field as read: `current_session_id` (a string or null) even when it is not the
//!   newest entry's, both counts even when they disagree with the entries, prompts and
//!   responses even past 200 characters or with control characters, `metadata` (any
//!   JSON value; null is no metadata);
//! * `created_at` as parsed and, when the engine would render the parsed time otherwise
//!   (`datetime.isoformat()` leaves out zero microseconds; an offset; another precision),
//!   as its text. Accepted: `YYYY-MM-DD`, `T` or a space, `HH:MM:SS`, an optional
//!   fraction of 1 to 9 digits, and an optional offset (`Z`, `+HH:MM`); a time without an
//!   offset is taken as UTC, as the engine writes them;
//! * keys the tracker does not write, at the top level and in entries, in file order.
//!
//! What is refused ([`ChainFileError`], and nothing is imported): a path that is not a
//! regular file (a symbolic link is refused, not followed); a file over
//! [`MAX_CHAIN_FILE_BYTES`]; bytes that are not UTF-8 JSON (Python's `json.dump` writes
//! `NaN` and `Infinity` for such floats, which are not JSON), or JSON that breaks a rule of
//! every JSON input (a repeated key, nesting past `MAX_JSON_DEPTH` levels in a value); a
//! missing field (seed 003's writer always writes all four at the top and all six in each
//! entry) or one of the wrong type (`interaction_count` must be an integer from 0 to
//! 2^64 - 1); a value the engine would not keep exactly (an integer that does not fit in
//! 64 bits, a JSON value over `MAX_JSON_LEN` bytes); an id or a text over the limits of
//! `chain --link` (`crate::command::check_imported_chain`); an `agent_id` that is not a
//! safe file name, or that differs from the agent in the file's name.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::{ImportedChain, ImportedLink};
use crate::projection::schema::chain_timestamp;
use crate::storage::{FileKind, Storage};
use crate::types::{AgentId, JsonText, MAX_JSON_DEPTH, Timestamp, parse_json_input};

/// Largest tracker file accepted, in bytes (a chain is imported as one log record, whose
/// payload is at most 16 MiB; the binary form of a chain is smaller than its JSON).
pub const MAX_CHAIN_FILE_BYTES: u64 = 16 << 20;

/// The levels of arrays and objects a tracker file has around a value: the file, its
/// `sessions`, an entry.
const FILE_WRAPPING: usize = 3;

/// Why a seed 003 tracker file was refused. Nothing is imported when one is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainFileError {
    /// The path is a symbolic link, a directory, a device...: only a regular file is read.
    NotARegularFile {
        /// What is there.
        kind: FileKind,
    },
    /// The file is larger than [`MAX_CHAIN_FILE_BYTES`].
    TooLarge {
        /// Its size.
        bytes: u64,
    },
    /// Not UTF-8 JSON, or JSON that breaks a rule of JSON input (a repeated key, too deep).
    NotJson {
        /// The parser's complaint.
        reason: String,
    },
    /// A field is missing, of the wrong type, or over a limit.
    Field {
        /// Where: `interaction_count`, `sessions[2].created_at`, ...
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file holds a value the engine would not write back exactly.
    Unrepresentable {
        /// Which, and why.
        reason: String,
    },
    /// `agent_id` is not a safe file name (it names the engine's chain file).
    UnsafeAgentId {
        /// The id found.
        agent_id: String,
        /// Why it is refused.
        reason: String,
    },
    /// The file's name says one agent and its `agent_id` another.
    AgentMismatch {
        /// The agent in the file name (`<agent>_sessions.json`).
        file_agent: String,
        /// The file's `agent_id`.
        agent_id: String,
    },
    /// The engine would write the chain to a path that already holds a different file.
    TargetTaken {
        /// That path (`chains/<agent>_sessions.json` in the data directory).
        target: PathBuf,
    },
}

impl fmt::Display for ChainFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainFileError::NotARegularFile { kind } => write!(
                f,
                "it is {kind}, not a regular file; name the tracker file (or the directory \
                 holding them) itself"
            ),
            ChainFileError::TooLarge { bytes } => write!(
                f,
                "the tracker file is {bytes} bytes; the limit is {MAX_CHAIN_FILE_BYTES} bytes"
            ),
            ChainFileError::NotJson { reason } => {
                write!(f, "not a seed 003 tracker file: not valid JSON ({reason})")
            }
            ChainFileError::Field { field, reason } => {
                write!(f, "not a seed 003 tracker file: {field} {reason}")
            }
            ChainFileError::Unrepresentable { reason } => write!(f, "{reason}"),
            ChainFileError::UnsafeAgentId { agent_id, reason } => write!(
                f,
                "agent_id {agent_id:?} cannot name a chain file: {reason}"
            ),
            ChainFileError::AgentMismatch {
                file_agent,
                agent_id,
            } => write!(
                f,
                "the file is named for agent {file_agent:?} but its agent_id is {agent_id:?}"
            ),
            ChainFileError::TargetTaken { target } => write!(
                f,
                "the engine would write this chain to {}, which already holds a different \
                 file; import that file instead, or move it out of the data directory first",
                target.display()
            ),
        }
    }
}

impl std::error::Error for ChainFileError {}

/// Whether `name` is a tracker file's name, `<agent>_sessions.json` with a non-empty
/// agent.
pub fn is_chain_file_name(name: &str) -> bool {
    name.strip_suffix("_sessions.json")
        .is_some_and(|a| !a.is_empty())
}

/// The agent a tracker file's name gives, as written (it may not be a safe id).
fn agent_of_name(name: &str) -> Option<&str> {
    name.strip_suffix("_sessions.json")
        .filter(|a| !a.is_empty())
}

/// Whether directory `dir` has an entry named like a tracker file.
pub(crate) fn has_chain_files(storage: &dyn Storage, dir: &Path) -> Result<bool> {
    let names = storage
        .list_dir(dir)
        .map_err(|e| Error::io("list import directory", dir, e))?;
    Ok(names.iter().any(|n| is_chain_file_name(n)))
}

/// What a quick look at a JSON file's top-level keys says it is.
pub(crate) enum Sniffed {
    Bundle,
    Chain,
    Neither,
}

/// Tells a bundle (`"format": "session-engine-bundle"`) from a tracker file (`agent_id`
/// and `sessions`) by the top-level keys, skipping every value but `format`'s.
pub(crate) fn sniff(bytes: &[u8]) -> Sniffed {
    struct Top {
        format: Option<String>,
        agent_id: bool,
        sessions: bool,
    }
    impl<'de> serde::Deserialize<'de> for Top {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Top;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Top, A::Error> {
                    let mut top = Top {
                        format: None,
                        agent_id: false,
                        sessions: false,
                    };
                    while let Some(k) = map.next_key::<String>()? {
                        match k.as_str() {
                            "format" => match map.next_value::<Value>()? {
                                Value::String(s) => top.format = Some(s),
                                _ => top.format = Some(String::new()),
                            },
                            other => {
                                top.agent_id |= other == "agent_id";
                                top.sessions |= other == "sessions";
                                map.next_value::<serde::de::IgnoredAny>()?;
                            }
                        }
                    }
                    Ok(top)
                }
            }
            d.deserialize_map(V)
        }
    }
    match serde_json::from_slice::<Top>(bytes) {
        Ok(t) if t.format.is_some() => Sniffed::Bundle,
        Ok(t) if t.agent_id && t.sessions => Sniffed::Chain,
        _ => Sniffed::Neither,
    }
}

/// One tracker file read for import: where it was, its bytes, and the chain it holds.
#[derive(Clone, Debug)]
pub struct ChainSource {
    /// The file.
    pub path: PathBuf,
    /// Its content as read.
    pub bytes: Vec<u8>,
    /// The chain, every field kept.
    pub chain: ImportedChain,
}

/// Reads the tracker file `path`, or every `*_sessions.json` in the directory `path`
/// (other entries are left alone), in name order. All or nothing: the first refused file
/// is the error. Symbolic links are refused (the path itself, or an entry), never
/// followed; nothing is written.
pub fn read_chain_files(storage: &dyn Storage, path: &Path) -> Result<Vec<ChainSource>> {
    let not_regular = |p: &Path, kind| Error::InvalidChainFile {
        path: p.to_path_buf(),
        reason: ChainFileError::NotARegularFile { kind },
    };
    match storage
        .kind(path)
        .map_err(|e| Error::io("inspect import path", path, e))?
    {
        None => Err(Error::NotFound {
            kind: "tracker file",
            id: path.display().to_string(),
        }),
        Some(FileKind::File) => Ok(vec![read_one(storage, path)?]),
        Some(FileKind::Dir) => {
            let names = storage
                .list_dir(path)
                .map_err(|e| Error::io("list import directory", path, e))?;
            let mut out = Vec::new();
            for name in names.iter().filter(|n| is_chain_file_name(n)) {
                let p = path.join(name);
                match storage
                    .kind(&p)
                    .map_err(|e| Error::io("inspect tracker file", &p, e))?
                {
                    Some(FileKind::File) => out.push(read_one(storage, &p)?),
                    Some(kind) => return Err(not_regular(&p, kind)),
                    None => {
                        return Err(Error::NotFound {
                            kind: "tracker file",
                            id: p.display().to_string(),
                        });
                    }
                }
            }
            if out.is_empty() {
                return Err(Error::NotFound {
                    kind: "tracker file",
                    id: path.join("<agent>_sessions.json").display().to_string(),
                });
            }
            Ok(out)
        }
        Some(kind) => Err(not_regular(path, kind)),
    }
}

fn read_one(storage: &dyn Storage, path: &Path) -> Result<ChainSource> {
    let refused = |reason| Error::InvalidChainFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = storage
        .read(path)
        .map_err(|e| Error::io("read tracker file", path, e))?;
    let name = path.file_name().and_then(|n| n.to_str());
    let chain = parse_chain_file(name, &bytes).map_err(refused)?;
    Ok(ChainSource {
        path: path.to_path_buf(),
        bytes: bytes.to_vec(),
        chain,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> ChainFileError {
    ChainFileError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

fn wrong_type(field: &str, v: &Value, wanted: &str) -> ChainFileError {
    field_error(field, format!("is {}, not {wanted}", type_name(v)))
}

/// Takes the known key `key` out of `obj`: missing is an error.
fn take(
    obj: &mut serde_json::Map<String, Value>,
    key: &str,
    place: &str,
) -> std::result::Result<Value, ChainFileError> {
    obj.shift_remove(key)
        .ok_or_else(|| field_error(place, "is missing"))
}

fn string(v: Value, place: &str) -> std::result::Result<String, ChainFileError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(wrong_type(place, &other, "a string")),
    }
}

fn count(v: &Value, place: &str) -> std::result::Result<u64, ChainFileError> {
    v.as_u64()
        .ok_or_else(|| wrong_type(place, v, "an integer from 0 to 2^64 - 1"))
}

fn json_value(v: &Value, place: &str) -> std::result::Result<JsonText, ChainFileError> {
    JsonText::from_value(v).map_err(|e| match e {
        Error::InvalidInput { reason, .. } => field_error(place, reason),
        other => field_error(place, other.to_string()),
    })
}

/// The remaining (unknown) keys of an object, in file order.
fn extras(
    obj: serde_json::Map<String, Value>,
    place: &str,
) -> std::result::Result<Vec<(String, JsonText)>, ChainFileError> {
    obj.into_iter()
        .map(|(k, v)| {
            let here = if place.is_empty() {
                k.clone()
            } else {
                format!("{place}.{k}")
            };
            Ok((k, json_value(&v, &here)?))
        })
        .collect()
}

/// Parses `created_at` as seed 003 writes it (see the module documentation).
pub fn parse_created_at(text: &str) -> Option<Timestamp> {
    use chrono::{DateTime, NaiveDateTime};
    let micros = |t: i64| Some(Timestamp(t));
    for sep in ['T', ' '] {
        let naive = format!("%Y-%m-%d{sep}%H:%M:%S%.f");
        if let Some(stem) = text.strip_suffix('Z') {
            if let Ok(t) = NaiveDateTime::parse_from_str(stem, &naive) {
                return micros(t.and_utc().timestamp_micros());
            }
        } else if let Ok(t) = NaiveDateTime::parse_from_str(text, &naive) {
            return micros(t.and_utc().timestamp_micros());
        } else if let Ok(t) = DateTime::parse_from_str(text, &format!("{naive}%:z")) {
            return micros(t.timestamp_micros());
        }
    }
    None
}

/// The first integer literal outside strings in the JSON `text` that does not fit in 64
/// bits (serde_json would read it as a float and write it back changed).
fn wide_integer(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let token = text.get(start..i).unwrap_or_default();
                if !token.contains(['.', 'e', 'E'])
                    && token.parse::<i64>().is_err()
                    && token.parse::<u64>().is_err()
                {
                    return Some(token);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Parses the bytes of a tracker file. `name` is the file's name, when it has one: if it
/// is `<agent>_sessions.json`, the agent must be the file's `agent_id`. Never panics.
pub fn parse_chain_file(
    name: Option<&str>,
    bytes: &[u8],
) -> std::result::Result<ImportedChain, ChainFileError> {
    if bytes.len() as u64 > MAX_CHAIN_FILE_BYTES {
        return Err(ChainFileError::TooLarge {
            bytes: bytes.len() as u64,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ChainFileError::NotJson {
        reason: format!("not UTF-8: {e}"),
    })?;
    let value = parse_json_input(text, MAX_JSON_DEPTH + FILE_WRAPPING).map_err(|e| {
        ChainFileError::NotJson {
            reason: e.to_string(),
        }
    })?;
    if let Some(n) = wide_integer(text) {
        return Err(ChainFileError::Unrepresentable {
            reason: format!(
                "the file holds the integer {n}, which does not fit in 64 bits: importing it \
                 would change its value"
            ),
        });
    }
    let Value::Object(mut top) = value else {
        return Err(wrong_type("the file", &value, "an object"));
    };
    let agent_id = string(take(&mut top, "agent_id", "agent_id")?, "agent_id")?;
    let agent = AgentId::new(&agent_id).map_err(|e| ChainFileError::UnsafeAgentId {
        agent_id: agent_id.clone(),
        reason: match e {
            Error::InvalidInput { reason, .. } => reason,
            other => other.to_string(),
        },
    })?;
    if let Some(file_agent) = name.and_then(agent_of_name)
        && file_agent != agent_id
    {
        return Err(ChainFileError::AgentMismatch {
            file_agent: file_agent.to_owned(),
            agent_id,
        });
    }
    let current_session_id = match take(&mut top, "current_session_id", "current_session_id")? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => {
            return Err(wrong_type("current_session_id", &other, "a string or null"));
        }
    };
    let interaction_count = count(
        &take(&mut top, "interaction_count", "interaction_count")?,
        "interaction_count",
    )?;
    let entries = match take(&mut top, "sessions", "sessions")? {
        Value::Array(a) => a,
        other => return Err(wrong_type("sessions", &other, "an array")),
    };
    let mut links = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let place = format!("sessions[{i}]");
        let at = |k: &str| format!("{place}.{k}");
        let Value::Object(mut e) = entry else {
            return Err(wrong_type(&place, &entry, "an object"));
        };
        let session_id = string(
            take(&mut e, "session_id", &at("session_id"))?,
            &at("session_id"),
        )?;
        let created_text = string(
            take(&mut e, "created_at", &at("created_at"))?,
            &at("created_at"),
        )?;
        let created_at = parse_created_at(&created_text).ok_or_else(|| {
            field_error(
                at("created_at"),
                format!(
                    "{created_text:?} is not an ISO 8601 time as datetime.isoformat() \
                     writes it (YYYY-MM-DDTHH:MM:SS[.ffffff][+HH:MM])"
                ),
            )
        })?;
        let interaction_count = count(
            &take(&mut e, "interaction_count", &at("interaction_count"))?,
            &at("interaction_count"),
        )?;
        let last_prompt = string(
            take(&mut e, "last_prompt", &at("last_prompt"))?,
            &at("last_prompt"),
        )?;
        let last_response = string(
            take(&mut e, "last_response", &at("last_response"))?,
            &at("last_response"),
        )?;
        let metadata = match take(&mut e, "metadata", &at("metadata"))? {
            Value::Null => None,
            v => Some(json_value(&v, &at("metadata"))?),
        };
        let created_at_text = (chain_timestamp(created_at) != created_text).then_some(created_text);
        links.push(ImportedLink {
            session_id,
            created_at,
            created_at_text,
            interaction_count,
            last_prompt,
            last_response,
            metadata,
            extra: extras(e, &place)?,
        });
    }
    let chain = ImportedChain {
        agent,
        current_session_id,
        interaction_count,
        links,
        extra: extras(top, "")?,
    };
    crate::command::check_imported_chain(&chain).map_err(|e| match e {
        // The reason starts with the place: `sessions[3]: ...`, `current_session_id: ...`,
        // `top level: ...`.
        Error::InvalidInput { field, reason } => match reason.split_once(": ") {
            Some((place, why)) if place.starts_with("sessions[") => {
                field_error(format!("{place}.{field}"), why)
            }
            Some(("top level", why)) => field_error(format!("a top-level {field}"), why),
            Some((place, why)) if place == field => field_error(field, why),
            _ => field_error(field, reason),
        },
        other => field_error("the file", other.to_string()),
    })?;
    Ok(chain)
}

#[cfg(test)]
mod tests;
