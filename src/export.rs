//! Export bundles: one session's history as a versioned, checksummed JSON document that
//! another engine (or the same one) can import.
//!
//! # Format (bundle version 1)
//!
//! ```json
//! {
//!   "format": "session-engine-bundle",
//!   "version": 1,
//!   "event_schema": 1,
//!   "session_id": "abc123",
//!   "exported_at": "2025-11-08T10:30:00Z",
//!   "source_lsn": 42,
//!   "event_count": 3,
//!   "checksum": "crc32:1a2b3c4d",
//!   "events": [ ... ]
//! }
//! ```
//!
//! | field          | type    | meaning |
//! | -------------- | ------- | ------- |
//! | `format`       | string  | always [`BUNDLE_FORMAT`]; anything else is a foreign file |
//! | `version`      | integer | bundle format version, [`BUNDLE_VERSION`] |
//! | `event_schema` | integer | the event schema the `events` follow: the lowest that holds them (`codec::event_schema_of`; 1 unless they hold an adoption, 2), at most `codec::NEWEST_EVENT_SCHEMA_VERSION` |
//! | `session_id`   | string  | the session's id where it was exported |
//! | `exported_at`  | string  | ISO 8601 UTC time of the export (informational) |
//! | `source_lsn`   | integer | the exporting engine's last LSN at the time (informational) |
//! | `event_count`  | integer | number of entries in `events` |
//! | `checksum`     | string  | `crc32:` and 8 lower-case hex digits: CRC-32 (IEEE) of the exact bytes of the `events` value as they appear in the file |
//! | `events`       | array   | every event that concerns the session, oldest first, in the serde JSON form of [`Event`] |
//!
//! Invariants a bundle must satisfy to be accepted (otherwise [`parse_bundle`] returns a
//! [`BundleError`] and nothing is imported):
//! * every event concerns `session_id` alone (multi-session events such as a cleanup's
//!   `SessionsArchived` are narrowed to the session at export, so a bundle never names
//!   sessions the importing engine may not have);
//! * the first event creates the session (created, imported or cloned);
//! * the events replay, in order, onto an empty state;
//! * text fields obey the same limits as commands do;
//! * no object in the file, the bundle's own or one in its events, repeats a key, and JSON
//!   values (details, metadata values, command arguments) obey the rules of every JSON
//!   input: at most [`MAX_JSON_DEPTH`] levels of arrays and objects (see
//!   [`BUNDLE_VALUE_WRAPPING`] for why every bundle the engine writes then parses again).
//!
//! The checksum detects damage (truncation, flipped bytes, edits); it is not a signature.
//! Parsing never panics and never allocates more than a small multiple of the input's
//! length, whatever the bytes: the fuzz target `bundle` calls [`parse_bundle`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::codec::{NEWEST_EVENT_SCHEMA_VERSION, event_schema_of};
use crate::command::{MAX_IMPORT_EVENTS, MAX_TIMEOUT_SECS, long, short, validate_config};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{Event, EventBody, MAX_IMPORT_DEPTH};
use crate::history::History;
use crate::state::{Session, SessionConfig, State};
use crate::storage::{FileKind, Storage, write_atomic};
use crate::types::{Lsn, MAX_JSON_DEPTH, SessionId};

/// The value of a bundle's `format` field.
pub const BUNDLE_FORMAT: &str = "session-engine-bundle";
/// The bundle format version this build writes and reads.
pub const BUNDLE_VERSION: u64 = 1;
/// Largest bundle accepted, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 256 << 20;

/// Levels of arrays and objects around a JSON value (details, a metadata value, command
/// arguments) in the deepest bundle this engine writes:
/// * the bundle object and its `events` array (2);
/// * per level of import, at most [`MAX_IMPORT_DEPTH`]: an event, its body's variant tag,
///   the variant's fields and their `events` array (4 each);
/// * the innermost event, its variant tag and fields (3);
/// * and, deepest of all, a clone's inline session, its `checkpoints`, a checkpoint, its
///   `body`, the body's `activity_log` and an activity, whose `details` hold the value (6).
///
/// With values at most [`MAX_JSON_DEPTH`] levels deep, a bundle nests at most
/// `BUNDLE_VALUE_WRAPPING + MAX_JSON_DEPTH` (107) levels, within the 127 that serde_json
/// (so [`parse_bundle`], which reads its events without the outer object, and most JSON
/// readers) accepts: every bundle the engine writes parses again.
pub const BUNDLE_VALUE_WRAPPING: usize = 2 + 4 * MAX_IMPORT_DEPTH + 3 + 6;

/// The deepest nesting serde_json reads (its recursion limit is 128).
const SERDE_JSON_MAX_DEPTH: usize = 127;
const _: () = assert!(BUNDLE_VALUE_WRAPPING + MAX_JSON_DEPTH <= SERDE_JSON_MAX_DEPTH);

/// Why a bundle was refused. Nothing is imported when parsing fails.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleError {
    /// The input is larger than [`MAX_BUNDLE_BYTES`].
    TooLarge {
        /// Its size in bytes.
        bytes: usize,
    },
    /// The input is not JSON (or is truncated).
    NotJson {
        /// The parser's complaint.
        reason: String,
    },
    /// The input is JSON but not a session-engine bundle: its `format` marker is missing or
    /// different.
    Foreign {
        /// The `format` value found, if any.
        found: Option<String>,
    },
    /// A bundle of a version this build does not read.
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// The `events` bytes do not match the recorded checksum: the file was damaged or edited.
    ChecksumMismatch {
        /// The checksum recorded in the bundle.
        recorded: String,
        /// The checksum of the bytes found.
        computed: String,
    },
    /// A bundle whose fields or events break a rule of the format.
    Malformed {
        /// What rule.
        reason: String,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::TooLarge { bytes } => write!(
                f,
                "the bundle is {bytes} bytes; the limit is {MAX_BUNDLE_BYTES} bytes"
            ),
            BundleError::NotJson { reason } => {
                write!(f, "not a bundle: the file is not valid JSON ({reason})")
            }
            BundleError::Foreign { found: None } => write!(
                f,
                "not a session-engine bundle: it has no \"format\": \"{BUNDLE_FORMAT}\" marker"
            ),
            BundleError::Foreign { found: Some(m) } => write!(
                f,
                "not a session-engine bundle: its format marker is {m:?}, expected \
                 {BUNDLE_FORMAT:?}"
            ),
            BundleError::UnsupportedVersion { found } => write!(
                f,
                "bundle version {found} is not supported (this build reads version \
                 {BUNDLE_VERSION}); export it again with a matching session-engine"
            ),
            BundleError::ChecksumMismatch { recorded, computed } => write!(
                f,
                "the bundle is damaged: its events have checksum {computed}, but the bundle \
                 records {recorded}"
            ),
            BundleError::Malformed { reason } => write!(f, "malformed bundle: {reason}"),
        }
    }
}

impl std::error::Error for BundleError {}

fn malformed(reason: impl Into<String>) -> BundleError {
    BundleError::Malformed {
        reason: reason.into(),
    }
}

/// One session's exported history.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    /// The session's id where it was exported.
    pub session_id: SessionId,
    /// When it was exported (ISO 8601 UTC).
    pub exported_at: String,
    /// The exporting engine's last LSN at the time.
    pub source_lsn: Lsn,
    /// Every event that concerns the session, narrowed to it, oldest first.
    pub events: Vec<Event>,
}

#[derive(Serialize)]
struct BundleOut<'a> {
    format: &'static str,
    version: u64,
    event_schema: u8,
    session_id: &'a str,
    exported_at: &'a str,
    source_lsn: u64,
    event_count: usize,
    checksum: String,
    events: &'a RawValue,
}

/// The checksum of a bundle's `events` bytes, as written in its `checksum` field.
pub fn events_checksum(events_json: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(events_json))
}

impl Bundle {
    /// Collects every event of session `id` from `engine`'s log, narrowed to the session.
    /// Works on read-only engines.
    pub fn export(engine: &Engine, id: &SessionId) -> Result<Bundle> {
        let state = engine.state();
        if state.session(id).is_none() {
            return Err(Error::NotFound {
                kind: "session",
                id: id.to_string(),
            });
        }
        let last = state.last_lsn;
        let mut events = Vec::new();
        engine.read_log(Lsn(1), last, |_, e| {
            if let Some(body) = e.body.narrowed_to(id) {
                events.push(Event { at: e.at, body });
            }
            Ok(true)
        })?;
        Ok(Bundle {
            session_id: id.clone(),
            exported_at: engine.now().to_iso8601(),
            source_lsn: last,
            events,
        })
    }

    /// The bundle's JSON bytes.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let events = serde_json::to_string(&self.events)
            .map_err(|e| Error::invalid("bundle", format!("cannot serialise events: {e}")))?;
        let checksum = events_checksum(events.as_bytes());
        let raw = RawValue::from_string(events)
            .map_err(|e| Error::invalid("bundle", format!("cannot serialise events: {e}")))?;
        let out = BundleOut {
            format: BUNDLE_FORMAT,
            version: BUNDLE_VERSION,
            event_schema: self
                .events
                .iter()
                .map(|e| event_schema_of(&e.body))
                .max()
                .unwrap_or(1),
            session_id: self.session_id.as_str(),
            exported_at: &self.exported_at,
            source_lsn: self.source_lsn.get(),
            event_count: self.events.len(),
            checksum,
            events: &raw,
        };
        let mut bytes = serde_json::to_vec_pretty(&out)
            .map_err(|e| Error::invalid("bundle", format!("cannot serialise: {e}")))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Writes the bundle to `path` atomically (temporary file, fsync, rename, directory
    /// fsync), creating the parent directory if needed. Replaces only a regular file: a
    /// symbolic link, a device, a fifo or a directory at `path` is refused with
    /// [`Error::InvalidInput`] and left as it is.
    pub fn write_to(&self, storage: &dyn Storage, path: &Path) -> Result<()> {
        match storage
            .kind(path)
            .map_err(|e| Error::io("check export file", path, e))?
        {
            None | Some(FileKind::File) => {}
            Some(kind) => {
                return Err(Error::invalid(
                    "export file",
                    format!(
                        "{} is {kind}, not a regular file; the bundle replaces only a \
                         regular file (name a new file instead)",
                        path.display()
                    ),
                ));
            }
        }
        let bytes = self.to_json()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // A folder that is there is used as it is (it may be a link the caller made).
            let there = storage
                .exists(parent)
                .map_err(|e| Error::io("check export directory", parent, e))?;
            if !there {
                storage
                    .create_dir_all(parent)
                    .map_err(|e| Error::io("create export directory", parent, e))?;
            }
        }
        write_atomic(storage, path, &bytes).map_err(|e| Error::io("write bundle", path, e))
    }

    /// Reads and checks the bundle at `path`. A refused bundle is
    /// [`Error::InvalidBundle`] naming the file.
    pub fn read_from(storage: &dyn Storage, path: &Path) -> Result<Bundle> {
        let bytes = storage.read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                kind: "bundle file",
                id: path.display().to_string(),
            },
            _ => Error::io("read bundle", path, e),
        })?;
        parse_bundle(&bytes).map_err(|reason| Error::InvalidBundle {
            path: Some(path.to_path_buf()),
            reason,
        })
    }
}

/// The fields of a bundle's top-level object in file order, each as its raw JSON, repeated
/// names included (so that they can be refused: a map would keep one silently).
struct TopLevel<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    out.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(TopLevel(out))
            }
        }
        d.deserialize_map(Fields)
    }
}

fn field<'a, T: serde::Deserialize<'a>>(
    top: &BTreeMap<String, &'a RawValue>,
    name: &str,
) -> Result<T, BundleError> {
    let raw = top
        .get(name)
        .ok_or_else(|| malformed(format!("the field {name:?} is missing")))?;
    serde_json::from_str(raw.get()).map_err(|e| malformed(format!("the field {name:?}: {e}")))
}

/// Parses and checks a bundle. See the module documentation for the rules; any breach is
/// a [`BundleError`]. Never panics, whatever `bytes` holds.
pub fn parse_bundle(bytes: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge { bytes: bytes.len() });
    }
    let fields: TopLevel<'_> = match serde_json::from_slice(bytes) {
        Ok(t) => t,
        Err(e) if e.is_data() => return Err(BundleError::Foreign { found: None }),
        Err(e) => {
            return Err(BundleError::NotJson {
                reason: e.to_string(),
            });
        }
    };
    let mut top: BTreeMap<String, &RawValue> = BTreeMap::new();
    let mut repeated = None;
    for (name, raw) in fields.0 {
        match top.entry(name) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(raw);
            }
            std::collections::btree_map::Entry::Occupied(e) => {
                repeated.get_or_insert_with(|| e.key().clone());
            }
        }
    }
    let format: Option<String> = top
        .get("format")
        .map(|raw| serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.to_string()));
    if format.as_deref() != Some(BUNDLE_FORMAT) {
        return Err(BundleError::Foreign { found: format });
    }
    if let Some(name) = repeated {
        return Err(malformed(format!(
            "the field {name:?} appears more than once"
        )));
    }
    let version: u64 = field(&top, "version")?;
    if version != BUNDLE_VERSION {
        return Err(BundleError::UnsupportedVersion { found: version });
    }
    let schema: u64 = field(&top, "event_schema")?;
    if schema == 0 || schema > u64::from(NEWEST_EVENT_SCHEMA_VERSION) {
        return Err(malformed(format!(
            "its events follow event schema {schema}; this build reads schemas 1 to \
             {NEWEST_EVENT_SCHEMA_VERSION}"
        )));
    }
    let raw_events = top
        .get("events")
        .ok_or_else(|| malformed("the field \"events\" is missing"))?;
    let recorded: String = field(&top, "checksum")?;
    let computed = events_checksum(raw_events.get().as_bytes());
    if recorded != computed {
        return Err(BundleError::ChecksumMismatch { recorded, computed });
    }
    let session_id: String = field(&top, "session_id")?;
    let session_id =
        SessionId::new(&session_id).map_err(|e| malformed(format!("session_id: {e}")))?;
    let exported_at: String = field(&top, "exported_at")?;
    let source_lsn: u64 = field(&top, "source_lsn")?;
    let event_count: u64 = field(&top, "event_count")?;
    if event_count > MAX_IMPORT_EVENTS as u64 {
        return Err(malformed(format!(
            "{event_count} events; the limit is {MAX_IMPORT_EVENTS}"
        )));
    }
    let events: Vec<Event> = serde_json::from_str(raw_events.get())
        .map_err(|e| malformed(format!("the events do not decode: {e}")))?;
    if events.len() as u64 != event_count {
        return Err(malformed(format!(
            "event_count says {event_count}, but there are {} events",
            events.len()
        )));
    }
    if let Some(e) = events
        .iter()
        .find(|e| u64::from(event_schema_of(&e.body)) > schema)
    {
        return Err(malformed(format!(
            "it says its events follow event schema {schema}, but it holds a {} event",
            e.body.type_name()
        )));
    }
    check_events(&session_id, &events)?;
    Ok(Bundle {
        session_id,
        exported_at,
        source_lsn: Lsn(source_lsn),
        events,
    })
}

/// The rules on a bundle's events: they concern `id` alone, start with its creation, obey
/// the command limits and replay onto an empty state.
fn check_events(id: &SessionId, events: &[Event]) -> Result<(), BundleError> {
    let Some(first) = events.first() else {
        return Err(malformed("it carries no events"));
    };
    if !first.body.creates(id) {
        return Err(malformed(format!(
            "the first event must create session {id}, but it is a {} event",
            first.body.type_name()
        )));
    }
    let mut scratch = State::new();
    for (i, e) in events.iter().enumerate() {
        if !e.body.touches(id) || e.body.sessions().len() != 1 {
            return Err(malformed(format!(
                "event {i} ({}) does not concern session {id} alone",
                e.body.type_name()
            )));
        }
        check_fields(&e.body).map_err(|err| malformed(format!("event {i}: {err}")))?;
        scratch
            .apply(Lsn(i as u64 + 1), e)
            .map_err(|err| malformed(format!("event {i} does not replay: {err}")))?;
    }
    Ok(())
}

fn check_config(c: &SessionConfig, timeout_secs: u64) -> Result<()> {
    if timeout_secs > MAX_TIMEOUT_SECS {
        return Err(Error::invalid("timeout", "is over the limit"));
    }
    validate_config(c)
}

/// The text and range limits commands enforce, applied to an event from outside.
fn check_fields(body: &EventBody) -> Result<()> {
    match body {
        EventBody::SessionCreated(c) => {
            short("name", &c.name)?;
            if let Some(a) = &c.agent {
                short("agent", a)?;
            }
            if let Some(w) = &c.working_dir {
                long("working directory", w)?;
            }
            check_config(&c.config, c.timeout_secs)?;
            for (k, _) in &c.metadata {
                short("metadata key", k)?;
            }
        }
        EventBody::ActivityRecorded { action, .. } => short("action", action)?,
        EventBody::MetadataSet { key, .. } | EventBody::MetadataRemoved { key, .. } => {
            short("metadata key", key)?
        }
        EventBody::CommandRecorded { command, error, .. } => {
            short("command", command)?;
            if let Some(e) = error {
                long("error", e)?;
            }
        }
        EventBody::CheckpointSaved { label: Some(l), .. } => short("label", l)?,
        EventBody::DecisionLogged {
            what,
            why,
            alternatives,
            ..
        } => {
            long("what", what)?;
            long("why", why)?;
            if let Some(a) = alternatives {
                long("alternatives", a)?;
            }
        }
        EventBody::SessionImported { events, .. } => {
            for e in events {
                check_fields(&e.body)?;
            }
        }
        EventBody::SessionCloned { data, .. } => check_session(data)?,
        EventBody::SessionsAdopted(a) => {
            long("source", &a.source)?;
            for s in &a.sessions {
                crate::command::check_adopted(s)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_session(s: &Session) -> Result<()> {
    short("name", &s.name)?;
    if let Some(a) = &s.agent {
        short("agent", a)?;
    }
    if let Some(w) = &s.working_dir {
        long("working directory", w)?;
    }
    check_config(&s.config, s.timeout_secs)?;
    let bodies = std::iter::once(&s.body).chain(s.checkpoints.iter().map(|c| &c.body));
    for b in bodies {
        for k in b.metadata.keys() {
            short("metadata key", k)?;
        }
        // The session value an event carries, read through the one history reader.
        let history = History::of_body(s.id.clone(), Lsn::ZERO, b);
        for a in history.activities() {
            short("action", &a?.value.action)?;
        }
        for c in history.commands() {
            let c = c?.value;
            short("command", &c.command)?;
            if let Some(e) = &c.error {
                long("error", e)?;
            }
        }
        for d in history.decisions() {
            let d = d?.value;
            long("what", &d.what)?;
            long("why", &d.why)?;
            if let Some(a) = &d.alternatives {
                long("alternatives", a)?;
            }
        }
    }
    for c in &s.checkpoints {
        if let Some(l) = &c.label {
            short("label", l)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
