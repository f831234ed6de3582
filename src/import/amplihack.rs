//! Reading an amplihack runtime directory into one adoption
//! ([`crate::Command::AdoptAmplihack`]), keeping every document exactly.
//!
//! What is read (every file must be a regular file, not a symbolic link):
//!
//! | path | becomes |
//! | ---- | ------- |
//! | `sessions/<id>.json` | a session (below) |
//! | `sessions/archive/<id>_<ts>.json` | an archived session |
//! | `sessions/registry.json` | each entry names a session (one with no file of its own too); the rest (`updated_at`, other keys) is kept |
//! | `logs/<id>.log` | the log of session `<id>`, kept as it is (it must end with a newline) |
//!
//! Other files are left alone: temporary files, amplihack's dated logs
//! (`logs/<id>_<YYYYMMDD>.log`, which its `FileRotatingHandler` writes but nothing reads),
//! anything else in the folders. amplihack keeps checkpoints in memory only
//! (`ClaudeSession._checkpoints`), so there are none on disk to adopt.
//!
//! How a session's documents map onto the engine's session (the file's fields first,
//! then its registry entry `E`, then the file's `metadata`, which is the entry as it was
//! when the file was saved):
//!
//! | engine field | from |
//! | ------------ | ---- |
//! | id | the file name (the document's `session_id`, if any, must agree) |
//! | name | `E.name`, else the id |
//! | created_at | `E.created_at`, else `state.start_time`, else `saved_at`, else 0 |
//! | last_activity | `state.last_activity`, else `E.last_accessed`, else created_at |
//! | status | `archived` for an archive file; else `E.status` when it names an engine status (`active`, `paused`, `ended`, `timed_out`: a directory the engine wrote); else, when `state.is_active` is false, `timed_out` if `state.last_error` says `Session timeout after ...` and `ended` otherwise; else `active` |
//! | config | `config` (else `E.config`): the 8 `SessionConfig` keys, defaults for missing ones; `log_level` `CRITICAL`/`FATAL` read as `ERROR`, `NOTSET` as `DEBUG` |
//! | timeout (inactivity) | none (0): amplihack times a session out only while it runs, counting from when it was resumed, so a session it saved as active stays active on disk; a timeout the engine recorded on its own would rewrite the files the import adopted |
//! | metadata | `E.metadata` |
//! | commands | `command_history`: `command`, `timestamp`, `kwargs` (the arguments), `result` (`"error"` is a failure), `duration` (seconds, kept as milliseconds), `error` |
//!
//! The documents themselves are kept whole (see [`crate::state::Origin::Adopted`]) and
//! written back unchanged by the `amplihack` projection. Integers must fit 64 bits and
//! times must be finite seconds since the epoch; anything else, malformed JSON, a
//! document that is not an object, a field of the wrong type, an id that is not a safe
//! file name or that appears twice, a symbolic link: the import is refused with
//! [`Error::InvalidImport`] naming the file, and nothing changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::invalid;
use crate::codec;
use crate::error::{Error, Result};
use crate::event::{AdoptedSession, AmplihackAdoption, Event, EventBody};
use crate::projection::schema::amplihack::archived_file_of;
use crate::state::{AmplihackDocuments, CommandRecord, LogLevel, SessionConfig, Status};
use crate::storage::{FileKind, Storage};
use crate::types::{
    JsonText, MAX_JSON_DEPTH, SessionId, Timestamp, json_input_error, parse_json_input,
};

/// An amplihack runtime directory, read.
#[derive(Clone, Debug)]
pub struct RuntimeDir {
    /// The adoption to commit.
    pub adoption: AmplihackAdoption,
    /// Every file it was read from.
    pub files: Vec<PathBuf>,
}

/// Largest seconds-since-the-epoch value accepted as a time (the year 5138).
const MAX_SECS: f64 = 1e11;

fn kind(storage: &dyn Storage, path: &Path) -> Result<Option<FileKind>> {
    storage
        .kind(path)
        .map_err(|e| Error::io("inspect a file to import", path, e))
}

/// Reads `path`, which must be a regular file (not a link).
fn read_file(storage: &dyn Storage, path: &Path) -> Result<String> {
    match kind(storage, path)? {
        Some(FileKind::File) => {}
        Some(FileKind::Symlink) => {
            return Err(invalid(
                path,
                "it is a symbolic link; only regular files are imported",
            ));
        }
        other => {
            return Err(invalid(
                path,
                format!(
                    "it is a {}, not a regular file",
                    other.map_or("nothing".into(), |k| k.to_string())
                ),
            ));
        }
    }
    let bytes = storage
        .read(path)
        .map_err(|e| Error::io("read a file to import", path, e))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|e| invalid(path, format!("it is not UTF-8 text: {e}")))
}

/// The first integer in `text` (outside strings) that does not fit 64 bits, which a JSON
/// value read here would keep only approximately.
fn inexact_integer(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
        } else if c == b'"' {
            in_string = true;
            i += 1;
        } else if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                i += 1;
            }
            let token = &text[start..i];
            let integer = !token.contains(['.', 'e', 'E']);
            if integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                return Some(token);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Parses a JSON object under the engine's input rules (no duplicate keys, at most
/// `MAX_JSON_DEPTH` levels), exactly.
fn parse_object(path: &Path, text: &str) -> Result<Map<String, Value>> {
    if text.len() > crate::wal::MAX_PAYLOAD_LEN {
        return Err(invalid(
            path,
            format!(
                "it is {} bytes, over the {} an import may hold",
                text.len(),
                crate::wal::MAX_PAYLOAD_LEN
            ),
        ));
    }
    if let Some(n) = inexact_integer(text) {
        return Err(invalid(
            path,
            format!("the integer {n} does not fit 64 bits, so it could not be kept exactly"),
        ));
    }
    match parse_json_input(text, MAX_JSON_DEPTH) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid(path, "the document is not a JSON object")),
        Err(e) => Err(match json_input_error(e) {
            Error::InvalidInput { reason, .. } => invalid(path, reason),
            other => other,
        }),
    }
}

/// A session document, parsed and kept (at most `MAX_JSON_LEN` bytes of compact text, the
/// limit of every JSON value the engine holds).
fn parse(path: &Path, text: &str) -> Result<(JsonText, Map<String, Value>)> {
    let m = parse_object(path, text)?;
    let json = JsonText::from_value(&Value::Object(m.clone())).map_err(|e| match e {
        Error::InvalidInput { reason, .. } => invalid(path, reason),
        other => other,
    })?;
    Ok((json, m))
}

/// Field access that names the file and the field in its errors.
struct Doc<'a> {
    path: &'a Path,
    what: String,
}

impl Doc<'_> {
    fn err(&self, key: &str, want: &str) -> Error {
        invalid(self.path, format!("{}{key} must be {want}", self.what))
    }

    fn object<'m>(
        &self,
        m: &'m Map<String, Value>,
        key: &str,
    ) -> Result<Option<&'m Map<String, Value>>> {
        match m.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(self.err(key, "an object")),
        }
    }

    fn number(&self, m: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
        match m.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(self.err(key, "a number")),
        }
    }

    fn time(&self, m: &Map<String, Value>, key: &str) -> Result<Option<Timestamp>> {
        match self.number(m, key)? {
            None => Ok(None),
            Some(x) if x.is_finite() && x.abs() <= MAX_SECS => {
                Ok(Some(Timestamp((x * 1_000_000.0).round() as i64)))
            }
            Some(_) => Err(self.err(key, "a time in seconds since the epoch")),
        }
    }

    fn string<'m>(&self, m: &'m Map<String, Value>, key: &str) -> Result<Option<&'m str>> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(key, "a string")),
        }
    }

    fn bool(&self, m: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
        match m.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(key, "true or false")),
        }
    }

    fn at(&self, what: &str) -> Doc<'_> {
        Doc {
            path: self.path,
            what: format!("{}{what}.", self.what),
        }
    }
}

fn config(d: &Doc, c: Option<&Map<String, Value>>) -> Result<SessionConfig> {
    let mut config = SessionConfig::default();
    let Some(c) = c else {
        return Ok(config);
    };
    let d = d.at("config");
    for (key, slot) in [
        ("timeout", &mut config.timeout),
        ("retry_delay", &mut config.retry_delay),
        ("heartbeat_interval", &mut config.heartbeat_interval),
        ("auto_save_interval", &mut config.auto_save_interval),
    ] {
        if let Some(v) = d.number(c, key)? {
            *slot = v;
        }
    }
    if let Some(v) = c.get("max_retries") {
        config.max_retries = v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| d.err("max_retries", "a whole number"))?;
    }
    if let Some(b) = d.bool(c, "enable_logging")? {
        config.enable_logging = b;
    }
    if let Some(l) = d.string(c, "log_level")? {
        config.log_level = match l.to_ascii_uppercase().as_str() {
            "CRITICAL" | "FATAL" => LogLevel::Error,
            "NOTSET" => LogLevel::Debug,
            other => LogLevel::parse(other)
                .ok_or_else(|| d.err("log_level", "a logging level name (DEBUG, INFO, ...)"))?,
        };
    }
    Ok(config)
}

fn commands(
    d: &Doc,
    history: Option<&Value>,
    default_time: Timestamp,
) -> Result<Vec<CommandRecord>> {
    let Some(history) = history else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = history else {
        return Err(d.err("command_history", "an array"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let d = d.at(&format!("command_history[{i}]"));
        let Value::Object(c) = item else {
            return Err(invalid(
                d.path,
                format!("{}: an entry must be an object", d.what),
            ));
        };
        let command = d
            .string(c, "command")?
            .ok_or_else(|| d.err("command", "a string"))?;
        let error = d.string(c, "error")?;
        let success = match d.string(c, "result")? {
            Some(r) => r != "error",
            None => error.is_none(),
        };
        let duration = d.number(c, "duration")?.unwrap_or(0.0);
        if !duration.is_finite() {
            return Err(d.err("duration", "a number of seconds"));
        }
        out.push(CommandRecord {
            command: command.into(),
            args: c
                .get("kwargs")
                .map(JsonText::from_value)
                .transpose()
                .map_err(|e| invalid(d.path, format!("{}kwargs: {e}", d.what)))?,
            timestamp: d.time(c, "timestamp")?.unwrap_or(default_time),
            success,
            error: error.map(Into::into),
            duration_ms: (duration * 1000.0).round().clamp(0.0, u64::MAX as f64) as u64,
        });
    }
    Ok(out)
}

/// One session's documents as found.
#[derive(Default)]
struct Found {
    file: Option<(PathBuf, JsonText, Map<String, Value>)>,
    archive_ts: Option<i64>,
    entry: Option<(JsonText, Map<String, Value>)>,
    log: Option<String>,
}

fn session(
    id: &SessionId,
    found: Found,
    registry: &Option<(PathBuf, JsonText)>,
) -> Result<AdoptedSession> {
    let (path, file_json, file) = match &found.file {
        Some((p, j, m)) => (p.clone(), Some(j.clone()), Some(m)),
        None => (
            registry.as_ref().map_or_else(PathBuf::new, |r| r.0.clone()),
            None,
            None,
        ),
    };
    let d = Doc {
        path: &path,
        what: String::new(),
    };
    let empty = Map::new();
    let file_map = file.unwrap_or(&empty);
    if let Some(doc_id) = d.string(file_map, "session_id")?
        && doc_id != id.as_str()
    {
        return Err(invalid(
            &path,
            format!("its session_id is {doc_id:?}, but its file name says {id:?}"),
        ));
    }
    let state = d.object(file_map, "state")?.unwrap_or(&empty);
    let ds = d.at("state");
    let saved_meta = d.object(file_map, "metadata")?;
    let (entry, de) = match &found.entry {
        Some((_, e)) => (
            Some(e),
            Doc {
                path: registry.as_ref().map_or(&path, |r| &r.0),
                what: format!("sessions.{id}."),
            },
        ),
        None => (saved_meta, d.at("metadata")),
    };
    let entry = entry.unwrap_or(&empty);
    let name = de.string(entry, "name")?.unwrap_or(id.as_str()).to_string();
    let created_at = match de.time(entry, "created_at")? {
        Some(t) => t,
        None => ds
            .time(state, "start_time")?
            .or(d.time(file_map, "saved_at")?)
            .unwrap_or_default(),
    };
    let last_activity = match ds.time(state, "last_activity")? {
        Some(t) => t,
        None => de.time(entry, "last_accessed")?.unwrap_or(created_at),
    };
    let config = match d.object(file_map, "config")? {
        Some(c) => config(&d, Some(c))?,
        None => config(&de, de.object(entry, "config")?)?,
    };
    let status = if found.archive_ts.is_some() {
        Status::Archived
    } else if let Some(s) = de
        .string(entry, "status")?
        .and_then(Status::parse)
        .filter(|s| *s != Status::Archived)
    {
        s
    } else if ds.bool(state, "is_active")? == Some(false) {
        if ds
            .string(state, "last_error")?
            .is_some_and(|e| e.starts_with(crate::projection::schema::amplihack::TIMEOUT_MESSAGE))
        {
            Status::TimedOut
        } else {
            Status::Ended
        }
    } else {
        Status::Active
    };
    let mut metadata = Vec::new();
    for (k, v) in de.object(entry, "metadata")?.into_iter().flatten() {
        let v = JsonText::from_value(v)
            .map_err(|e| invalid(de.path, format!("{}metadata.{k}: {e}", de.what)))?;
        metadata.push((k.clone(), v));
    }
    let commands = commands(&d, file_map.get("command_history"), created_at)?;
    let adopted = AdoptedSession {
        session: id.clone(),
        name,
        created_at,
        last_activity,
        status,
        timeout_secs: 0,
        config,
        metadata,
        commands,
        documents: AmplihackDocuments {
            file: file_json,
            archive_ts: found.archive_ts,
            registry_entry: found.entry.map(|(j, _)| j),
            registry_rest: registry.as_ref().map(|r| r.1.clone()),
        },
        log: found.log,
    };
    crate::command::check_adopted(&adopted).map_err(|e| invalid(&path, e.to_string()))?;
    Ok(adopted)
}

/// Reads the amplihack runtime directory `dir` (see the module documentation). Refuses
/// the whole directory on any bad input, reading only.
pub fn read_runtime_dir(storage: &dyn Storage, dir: &Path) -> Result<RuntimeDir> {
    let sessions_dir = dir.join("sessions");
    match kind(storage, &sessions_dir)? {
        Some(FileKind::Dir) => {}
        Some(FileKind::Symlink) => {
            return Err(invalid(
                &sessions_dir,
                "it is a symbolic link; only a real folder is imported",
            ));
        }
        _ => {
            return Err(invalid(
                dir,
                "it has no sessions/ folder: not an amplihack runtime directory",
            ));
        }
    }
    let list = |d: &Path| {
        storage
            .list_dir(d)
            .map_err(|e| Error::io("list a directory to import", d, e))
    };
    let mut found: BTreeMap<SessionId, Found> = BTreeMap::new();
    let mut files = Vec::new();
    let id_of = |path: &Path, s: &str| {
        SessionId::new(s).map_err(|e| invalid(path, format!("its session id is not usable: {e}")))
    };
    let mut registry: Option<(PathBuf, JsonText)> = None;
    let mut entries: Vec<(SessionId, JsonText, Map<String, Value>)> = Vec::new();
    for name in list(&sessions_dir)? {
        let path = sessions_dir.join(&name);
        if name == "archive" {
            continue;
        }
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let text = read_file(storage, &path)?;
        files.push(path.clone());
        if name == "registry.json" {
            let map = parse_object(&path, &text)?;
            let d = Doc {
                path: &path,
                what: String::new(),
            };
            let sessions = d
                .object(&map, "sessions")?
                .ok_or_else(|| d.err("sessions", "an object"))?;
            for (k, v) in sessions {
                let id = id_of(&path, k)?;
                let Value::Object(e) = v else {
                    return Err(d.err(&format!("sessions.{k}"), "an object"));
                };
                let j = JsonText::from_value(v).map_err(|e| invalid(&path, e.to_string()))?;
                entries.push((id, j, e.clone()));
            }
            let mut rest = map.clone();
            rest.remove("sessions");
            let rest = JsonText::from_value(&Value::Object(rest))
                .map_err(|e| invalid(&path, e.to_string()))?;
            registry = Some((path, rest));
            continue;
        }
        let (json, map) = parse(&path, &text)?;
        let stem = &name[..name.len() - ".json".len()];
        let id = id_of(&path, stem)?;
        found.entry(id).or_default().file = Some((path, json, map));
    }
    let archive = sessions_dir.join("archive");
    match kind(storage, &archive)? {
        None => {}
        Some(FileKind::Dir) => {
            for name in list(&archive)? {
                if name.starts_with('.') || !name.ends_with(".json") {
                    continue;
                }
                let path = archive.join(&name);
                let Some((id, ts)) = archived_file_of(&name) else {
                    return Err(invalid(
                        &path,
                        "not an amplihack archive file name (<session id>_<unix time>.json)",
                    ));
                };
                let text = read_file(storage, &path)?;
                let (json, map) = parse(&path, &text)?;
                let f = found.entry(id.clone()).or_default();
                if let Some((other, ..)) = &f.file {
                    return Err(invalid(
                        &path,
                        format!("session {id} is also in {}", other.display()),
                    ));
                }
                f.file = Some((path.clone(), json, map));
                f.archive_ts = Some(ts);
                files.push(path);
            }
        }
        Some(_) => return Err(invalid(&archive, "it is not a folder")),
    }
    for (id, json, map) in entries {
        found.entry(id).or_default().entry = Some((json, map));
    }
    let logs = dir.join("logs");
    match kind(storage, &logs)? {
        Some(FileKind::Dir) => {
            for (id, f) in found.iter_mut() {
                let path = logs.join(format!("{id}.log"));
                if kind(storage, &path)?.is_none() {
                    continue;
                }
                let text = read_file(storage, &path)?;
                if !text.is_empty() && !text.ends_with('\n') {
                    return Err(invalid(
                        &path,
                        "its last line is incomplete (no newline at the end); finish or remove it",
                    ));
                }
                f.log = Some(text);
                files.push(path);
            }
        }
        Some(FileKind::Symlink) => {
            return Err(invalid(
                &logs,
                "it is a symbolic link; only a real folder is imported",
            ));
        }
        _ => {}
    }
    if found.is_empty() {
        return Err(invalid(dir, "it holds no session to import"));
    }
    let mut sessions = Vec::with_capacity(found.len());
    for (id, f) in found {
        sessions.push(session(&id, f, &registry)?);
    }
    let adoption = AmplihackAdoption {
        source: dir.display().to_string(),
        sessions,
    };
    let probe = Event {
        at: Timestamp(0),
        body: EventBody::SessionsAdopted(Box::new(adoption.clone())),
    };
    let size = codec::event_to_vec(&probe)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > crate::wal::MAX_PAYLOAD_LEN {
        return Err(invalid(
            dir,
            format!(
                "its sessions take {size} bytes as one log record, over the limit of {}; \
                 import it in parts (move some sessions aside first)",
                crate::wal::MAX_PAYLOAD_LEN
            ),
        ));
    }
    Ok(RuntimeDir { adoption, files })
}

#[cfg(test)]
mod tests;
