//! The `amplihack` projection format: the files the real amplihack session toolkit
//! (`.claude/tools/amplihack/session/`: `SessionManager`, `ClaudeSession`,
//! `SessionToolkit`, `ToolkitLogger`) reads and writes, rendered from the engine's state.
//!
//! ```text
//! <root>/sessions/<id>.json                    a session (SessionManager._serialize_session)
//! <root>/sessions/registry.json                the registry (SessionManager._save_session_registry)
//! <root>/sessions/archive/<id>_<ts>.json       an archived session
//! <root>/logs/<id>.log                         its log (ToolkitLogger, see `logline`)
//! ```
//!
//! Every JSON file is written as amplihack's `safe_write_json` writes it:
//! `json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)`, no newline at the end
//! ([`super::super::pyjson`] reproduces it byte for byte, floats included). Every time is a
//! float of seconds since the Unix epoch (the engine's microseconds divided by 10^6).
//!
//! # `sessions/<id>.json`
//!
//! ```json
//! {
//!   "command_history": [
//!     {"command": "cargo test", "duration": 8.123, "error": "2 tests failed",
//!      "kwargs": {"args": ["--release"]}, "result": "error", "timestamp": 1762597810.0}
//!   ],
//!   "config": {"auto_save_interval": 60.0, "enable_logging": true, "heartbeat_interval": 30.0,
//!              "log_level": "INFO", "max_retries": 3, "retry_delay": 1.0,
//!              "session_id": "claude_session_1762597800_0a1b2c3d", "timeout": 300.0},
//!   "metadata": { ...the registry entry, below... },
//!   "saved_at": 1762597810.0,
//!   "session_id": "claude_session_1762597800_0a1b2c3d",
//!   "state": {"command_count": 1, "error_count": 1, "is_active": true,
//!             "last_activity": 1762597810.0, "last_error": "2 tests failed", "metadata": {},
//!             "session_id": "claude_session_1762597800_0a1b2c3d", "start_time": 1762597800.0},
//!   "statistics": {"checkpoints": 0, "command_count": 1, "error_count": 1, "error_rate": 1.0,
//!                  "is_active": true, "last_activity": 1762597810.0,
//!                  "session_id": "claude_session_1762597800_0a1b2c3d",
//!                  "time_since_activity": 0.0, "uptime": 10.0}
//! }
//! ```
//!
//! | field | type | from the engine's session |
//! | ----- | ---- | ------------------------- |
//! | `session_id` | string | the id (also the file name; amplihack's own ids look like `claude_session_<ts>_<8 hex>`) |
//! | `state.session_id` | string | the id |
//! | `state.start_time` | float | `created_at` |
//! | `state.last_activity` | float | `last_activity` (the last activity, command, decision, restore or resume) |
//! | `state.is_active` | bool | `status == active`: a paused, ended, timed-out or archived session is not active (seed 001's `is_active()`; a timeout counts once the watchdog has recorded it) |
//! | `state.command_count` | int | commands recorded |
//! | `state.error_count` | int | of them failed |
//! | `state.last_error` | string or null | `"Session timeout after <timeout_secs>s"` while timed out (amplihack's message, its seconds a float), else the error of the last failed command, else null |
//! | `state.metadata` | object | `{}` (amplihack's `SessionState.metadata`; the engine's metadata is the registry entry's) |
//! | `config` | object | exactly the 8 keys of amplihack's `SessionConfig`: `timeout` (float, the command timeout), `max_retries` (int), `retry_delay`, `heartbeat_interval` (floats), `enable_logging` (bool), `log_level` (`"DEBUG"`, `"INFO"`, `"WARNING"`, `"ERROR"`), `session_id` (the id), `auto_save_interval` (float) |
//! | `command_history` | array | the last 100 commands, oldest first: `command`, `timestamp` (float), `kwargs` (the arguments, `{}` when none were given), `result` (`"success"` or `"error"`), `duration` (float seconds), and `error` (the text, null when none was given) on failed ones only |
//! | `statistics` | object | `ClaudeSession.get_statistics()` at `saved_at`: `session_id`, `uptime` (`saved_at - start_time`), `command_count`, `error_count`, `error_rate` (`error_count / max(command_count, 1)`, a float), `is_active`, `checkpoints` (checkpoints saved), `last_activity`, `time_since_activity` (`saved_at - last_activity`) |
//! | `saved_at` | float | `last_activity`: the time is derived from the state, so a rebuild writes the same file |
//! | `metadata` | object | the session's registry entry (below), as `_serialize_session` writes it |
//!
//! Not written: activities and decisions (amplihack has no place for them; they are in the
//! log, in the seed format, and in `show`), the agent, the working directory and the
//! inactivity timeout (amplihack times a session out after `config.timeout` seconds).
//!
//! # `sessions/registry.json`
//!
//! ```json
//! {"sessions": {"<id>": {"config": {...}, "created_at": 1762597800.0,
//!                        "last_accessed": 1762597810.0, "last_saved": 1762597810.0,
//!                        "metadata": {"user": "alice"}, "name": "code analysis",
//!                        "status": "active"}},
//!  "updated_at": 1762597810.0}
//! ```
//!
//! | field | type | from the engine |
//! | ----- | ---- | --------------- |
//! | `sessions` | object | every session that is not archived (amplihack drops a session from its registry when it archives it), by id |
//! | `sessions.<id>.name` | string | the name (`SessionToolkit.session(name)` finds a session by it) |
//! | `sessions.<id>.created_at` | float | `created_at` |
//! | `sessions.<id>.last_accessed` | float | `last_activity` |
//! | `sessions.<id>.last_saved` | float | the file's `saved_at` |
//! | `sessions.<id>.status` | string | the engine's status: `active`, `paused`, `ended` or `timed_out` (amplihack's own words are `created`, `saved`, `resumed`; its `list_sessions` shows this value and `get_toolkit_stats` counts `active`) |
//! | `sessions.<id>.config` | object | as in the session file |
//! | `sessions.<id>.metadata` | object | the session's metadata, key to any JSON value |
//! | `updated_at` | float | the latest `last_activity` of any session (0.0 with none) |
//!
//! # `sessions/archive/<id>_<ts>.json`
//!
//! An archived session's file, as above. `<ts>` is the session's creation time in whole
//! seconds: amplihack writes the time it archived the file, which no reader parses; a
//! name fixed for the session's life lets the projector find the file again when the
//! session is resumed and its file moves back to `sessions/`.
//!
//! # Reserved ids
//!
//! A session whose id is `registry` has no file in this format (it would be the registry;
//! it is in the registry), and one whose id is `toolkit` no log (`logs/toolkit.log` is the
//! command line's own log).
//!
//! # Adopted sessions
//!
//! A session adopted from an amplihack directory (`import DIR`,
//! [`crate::state::Origin::Adopted`]) is written back exactly as it was read, as JSON
//! values (and byte for byte when amplihack wrote it), until an event changes it: its file
//! where it was (in the archive under its own `<ts>`), its registry entry if it had one
//! (and no file if it only had an entry), and `registry.json`'s `updated_at` and own keys
//! while every session is such an unchanged one. Once it changes it is written as above,
//! except that what the engine does not model is kept from the documents: every key
//! amplihack's format does not have (at the top, in `state`, `statistics`, `metadata` and
//! the registry entry), `config` as it was (the engine never changes a configuration),
//! `state.start_time`, `state.metadata`, `created_at`, `state.last_activity` and
//! `last_accessed` while the activity time has not moved, `state.last_error` until a
//! command fails or the session times out, the adopted entries of `command_history` as
//! they were, and `command_count`/`error_count` counting the commands the file counted
//! beyond its history.

use serde_json::{Map, Value, json};

use crate::projection::pyjson;
use crate::state::{Adoption, CommandRecord, Session, SessionConfig, State, Status};
use crate::types::{JsonText, SessionId, Timestamp};

/// Commands in a session file's `command_history` (`_serialize_session`'s `limit=100`).
pub const HISTORY_LIMIT: usize = 100;

/// How amplihack's `_handle_timeout` starts `last_error`: `Session timeout after 300.0s`.
pub const TIMEOUT_MESSAGE: &str = "Session timeout after";

/// The id whose session file would be the registry.
pub const RESERVED_FILE_ID: &str = "registry";
/// The id whose log would be the command line's `logs/toolkit.log`.
pub const RESERVED_LOG_ID: &str = "toolkit";

/// A time as amplihack writes it: float seconds since the epoch.
pub fn secs(t: Timestamp) -> f64 {
    t.micros() as f64 / 1_000_000.0
}

/// Whether session `id` has a file in this format (see *Reserved ids*).
pub fn writes_file(id: &SessionId) -> bool {
    id.as_str() != RESERVED_FILE_ID
}

/// Whether session `id` has a log in this format (see *Reserved ids*).
pub fn writes_log(id: &SessionId) -> bool {
    id.as_str() != RESERVED_LOG_ID
}

/// The `<ts>` of the session's archive file name.
pub fn archive_ts(s: &Session) -> i64 {
    s.adoption()
        .and_then(|a| a.documents.archive_ts)
        .unwrap_or_else(|| s.created_at.micros().div_euclid(1_000_000))
}

/// Whether the session has a file at all: not when its id is reserved, nor while it is an
/// unchanged adopted session that had only a registry entry.
pub fn has_file(s: &Session) -> bool {
    writes_file(&s.id)
        && !s
            .adoption()
            .is_some_and(|a| a.pristine && a.documents.file.is_none())
}

fn object(j: &Option<JsonText>) -> Option<Map<String, Value>> {
    match j.as_ref()?.to_value() {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn child<'a>(m: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Map<String, Value>> {
    m?.get(key)?.as_object()
}

fn number(m: Option<&Map<String, Value>>, key: &str) -> Option<Value> {
    m?.get(key).filter(|v| v.is_number()).cloned()
}

fn as_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Adds the keys of `orig` that `out` does not have.
fn keep_unknown(out: &mut Map<String, Value>, orig: Option<&Map<String, Value>>) {
    for (k, v) in orig.into_iter().flatten() {
        if !out.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
}

/// amplihack's `asdict(SessionConfig)` of an engine configuration.
pub fn config_value(c: &SessionConfig, id: &SessionId) -> Value {
    json!({
        "timeout": c.timeout,
        "max_retries": c.max_retries,
        "retry_delay": c.retry_delay,
        "heartbeat_interval": c.heartbeat_interval,
        "enable_logging": c.enable_logging,
        "log_level": c.log_level,
        "session_id": id.as_str(),
        "auto_save_interval": c.auto_save_interval,
    })
}

fn command_value(c: &CommandRecord) -> Value {
    let mut m = Map::new();
    m.insert("command".into(), Value::String(c.command.to_string()));
    m.insert("timestamp".into(), json!(secs(c.timestamp)));
    m.insert(
        "kwargs".into(),
        c.args
            .as_ref()
            .map_or_else(|| json!({}), JsonText::to_value),
    );
    m.insert(
        "result".into(),
        Value::String(if c.success { "success" } else { "error" }.into()),
    );
    m.insert("duration".into(), json!(c.duration_ms as f64 / 1000.0));
    if !c.success {
        m.insert(
            "error".into(),
            c.error
                .as_deref()
                .map_or(Value::Null, |e| Value::String(e.into())),
        );
    }
    Value::Object(m)
}

/// What an adopted session keeps from its documents, parsed once per rendering.
struct Kept<'a> {
    a: &'a Adoption,
    file: Option<Map<String, Value>>,
    entry: Option<Map<String, Value>>,
}

impl<'a> Kept<'a> {
    fn of(s: &'a Session) -> Option<Kept<'a>> {
        let a = s.adoption()?;
        Some(Kept {
            a,
            file: object(&a.documents.file),
            entry: object(&a.documents.registry_entry),
        })
    }

    fn state(&self) -> Option<&Map<String, Value>> {
        child(self.file.as_ref(), "state")
    }

    fn config(&self) -> Option<Value> {
        self.file
            .as_ref()
            .and_then(|f| f.get("config"))
            .or_else(|| self.entry.as_ref().and_then(|e| e.get("config")))
            .cloned()
    }
}

/// The values a session's file and registry entry share.
struct Common {
    start_time: Value,
    last_activity: Value,
    saved_at: f64,
    config: Value,
}

fn common(s: &Session, kept: Option<&Kept>) -> Common {
    let unmoved = kept.is_some_and(|k| k.a.last_activity == s.last_activity);
    let start_time = kept
        .and_then(|k| number(k.state(), "start_time"))
        .unwrap_or_else(|| json!(secs(s.created_at)));
    let last_activity = kept
        .filter(|_| unmoved)
        .and_then(|k| number(k.state(), "last_activity"))
        .unwrap_or_else(|| json!(secs(s.last_activity)));
    Common {
        start_time,
        last_activity,
        saved_at: secs(s.last_activity),
        config: kept
            .and_then(Kept::config)
            .unwrap_or_else(|| config_value(&s.config, &s.id)),
    }
}

/// A registry entry: the engine's view, with what an adopted `orig` entry adds.
fn entry_value(
    s: &Session,
    c: &Common,
    kept: Option<&Kept>,
    orig: Option<&Map<String, Value>>,
) -> Value {
    let unmoved = kept.is_some_and(|k| k.a.last_activity == s.last_activity);
    let mut m = Map::new();
    m.insert("name".into(), Value::String(s.name.to_string()));
    m.insert(
        "created_at".into(),
        number(orig, "created_at").unwrap_or_else(|| json!(secs(s.created_at))),
    );
    m.insert(
        "last_accessed".into(),
        number(orig, "last_accessed")
            .filter(|_| unmoved)
            .unwrap_or_else(|| json!(secs(s.last_activity))),
    );
    m.insert("last_saved".into(), json!(c.saved_at));
    m.insert("status".into(), Value::String(s.status().as_str().into()));
    m.insert("config".into(), c.config.clone());
    m.insert(
        "metadata".into(),
        Value::Object(
            s.body
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.to_value()))
                .collect(),
        ),
    );
    keep_unknown(&mut m, orig);
    Value::Object(m)
}

/// `state.last_error`: see the table.
fn last_error(s: &Session, kept: Option<&Kept>) -> Value {
    let kept_error = kept.and_then(|k| k.state()?.get("last_error").cloned());
    if s.status() == Status::TimedOut {
        // An adopted session that amplihack timed out keeps its message (it names
        // amplihack's timeout, not the engine's).
        if let Some(Value::String(e)) = &kept_error
            && e.starts_with(TIMEOUT_MESSAGE)
        {
            return Value::String(e.clone());
        }
        return Value::String(format!(
            "{TIMEOUT_MESSAGE} {}s",
            pyjson::float_repr(s.timeout_secs as f64)
        ));
    }
    let from = kept.map_or(0, |k| k.a.commands as usize);
    let mut errors_after = s.body.command_errors;
    if let Some(k) = kept {
        errors_after = errors_after.saturating_sub(k.a.command_errors);
    }
    if errors_after > 0 {
        let n = s.body.commands.len();
        for i in (from.min(n)..n).rev() {
            if let Some(c) = s.body.commands.get(i)
                && !c.success
            {
                return c
                    .error
                    .as_deref()
                    .map_or(Value::Null, |e| Value::String(e.into()));
            }
        }
    }
    kept_error.unwrap_or(Value::Null)
}

/// The counts the document states: the engine's, plus what an adopted file counted beyond
/// its history.
fn counts(s: &Session, kept: Option<&Kept>) -> (i64, i64) {
    let commands = s.body.commands.len() as i64;
    let errors = s.body.command_errors as i64;
    let Some(k) = kept else {
        return (commands, errors);
    };
    let orig = |key: &str| k.state().and_then(|st| st.get(key)).and_then(Value::as_i64);
    let extra_commands = orig("command_count").map_or(0, |n| n - k.a.commands as i64);
    let extra_errors = orig("error_count").map_or(0, |n| n - k.a.command_errors as i64);
    (
        (commands + extra_commands).max(0),
        (errors + extra_errors).max(0),
    )
}

/// The session's file as a JSON value.
pub fn session_value(s: &Session) -> Value {
    let kept = Kept::of(s);
    if let Some(k) = &kept
        && k.a.pristine
        && let Some(file) = &k.a.documents.file
    {
        return file.to_value();
    }
    let kept = kept.as_ref();
    let c = common(s, kept);
    let id = Value::String(s.id.to_string());
    let is_active = s.status() == Status::Active;
    let (command_count, error_count) = counts(s, kept);

    let mut state = Map::new();
    state.insert("session_id".into(), id.clone());
    state.insert("start_time".into(), c.start_time.clone());
    state.insert("last_activity".into(), c.last_activity.clone());
    state.insert("is_active".into(), Value::Bool(is_active));
    state.insert("command_count".into(), json!(command_count));
    state.insert("error_count".into(), json!(error_count));
    state.insert("last_error".into(), last_error(s, kept));
    state.insert(
        "metadata".into(),
        kept.and_then(|k| k.state()?.get("metadata").cloned())
            .unwrap_or_else(|| json!({})),
    );
    keep_unknown(&mut state, kept.and_then(Kept::state));

    let orig_history = kept
        .and_then(|k| k.file.as_ref()?.get("command_history")?.as_array())
        .map_or(&[][..], Vec::as_slice);
    let adopted = kept.map_or(0, |k| k.a.commands as usize);
    let n = s.body.commands.len();
    let history: Vec<Value> = (n.saturating_sub(HISTORY_LIMIT)..n)
        .filter_map(|i| {
            let c = s.body.commands.get(i)?;
            Some(match orig_history.get(i).filter(|_| i < adopted) {
                Some(orig) => orig.clone(),
                None => command_value(c),
            })
        })
        .collect();

    let mut statistics = Map::new();
    statistics.insert("session_id".into(), id.clone());
    statistics.insert("uptime".into(), json!(c.saved_at - as_f64(&c.start_time)));
    statistics.insert("command_count".into(), json!(command_count));
    statistics.insert("error_count".into(), json!(error_count));
    statistics.insert(
        "error_rate".into(),
        json!(error_count as f64 / command_count.max(1) as f64),
    );
    statistics.insert("is_active".into(), Value::Bool(is_active));
    statistics.insert("checkpoints".into(), json!(s.checkpoints.len()));
    statistics.insert("last_activity".into(), c.last_activity.clone());
    statistics.insert(
        "time_since_activity".into(),
        json!(c.saved_at - as_f64(&c.last_activity)),
    );
    keep_unknown(
        &mut statistics,
        kept.and_then(|k| child(k.file.as_ref(), "statistics")),
    );

    let mut doc = Map::new();
    doc.insert("session_id".into(), id);
    doc.insert("state".into(), Value::Object(state));
    doc.insert("config".into(), c.config.clone());
    doc.insert("command_history".into(), Value::Array(history));
    doc.insert("statistics".into(), Value::Object(statistics));
    doc.insert("saved_at".into(), json!(c.saved_at));
    doc.insert(
        "metadata".into(),
        entry_value(
            s,
            &c,
            kept,
            kept.and_then(|k| child(k.file.as_ref(), "metadata")),
        ),
    );
    keep_unknown(&mut doc, kept.and_then(|k| k.file.as_ref()));
    Value::Object(doc)
}

/// The session's registry entry, `None` when the registry leaves it out (archived, or an
/// unchanged adopted session that had none).
pub fn registry_entry(s: &Session) -> Option<Value> {
    let kept = Kept::of(s);
    if let Some(k) = &kept
        && k.a.pristine
    {
        return k
            .a
            .documents
            .registry_entry
            .as_ref()
            .map(JsonText::to_value);
    }
    if s.status() == Status::Archived {
        return None;
    }
    let kept = kept.as_ref();
    let c = common(s, kept);
    Some(entry_value(
        s,
        &c,
        kept,
        kept.and_then(|k| k.entry.as_ref()),
    ))
}

/// `sessions/registry.json` as a JSON value; `None` while every session is an unchanged
/// adopted one from a directory that had no registry (there was none to write back).
pub fn registry_value(state: &State) -> Option<Value> {
    let mut sessions = Map::new();
    let mut all_pristine = !state.sessions.is_empty();
    let mut rest: Option<Map<String, Value>> = None;
    let mut updated_at = 0.0f64;
    for s in state.sessions.values() {
        if let Some(e) = registry_entry(s) {
            sessions.insert(s.id.to_string(), e);
        }
        updated_at = updated_at.max(secs(s.last_activity));
        match s.adoption() {
            Some(a) => {
                all_pristine &= a.pristine;
                if rest.is_none() {
                    rest = object(&a.documents.registry_rest);
                }
            }
            None => all_pristine = false,
        }
    }
    if all_pristine && rest.is_none() {
        return None;
    }
    let mut m = Map::new();
    m.insert("sessions".into(), Value::Object(sessions));
    match rest.as_ref().and_then(|r| r.get("updated_at")) {
        Some(orig) if all_pristine => m.insert("updated_at".into(), orig.clone()),
        _ => m.insert("updated_at".into(), json!(updated_at)),
    };
    keep_unknown(&mut m, rest.as_ref());
    Some(Value::Object(m))
}

/// The bytes of the session's file.
pub fn session_bytes(s: &Session) -> serde_json::Result<Vec<u8>> {
    pyjson::to_pretty_sorted(&session_value(s))
}

/// The bytes of `sessions/registry.json` (see [`registry_value`]).
pub fn registry_bytes(state: &State) -> serde_json::Result<Option<Vec<u8>>> {
    registry_value(state)
        .map(|v| pyjson::to_pretty_sorted(&v))
        .transpose()
}

/// The session id in a file name of `sessions/` in this format (`<id>.json`).
pub fn session_id_of_file(name: &str) -> Option<SessionId> {
    let id = name.strip_suffix(".json")?;
    (id != RESERVED_FILE_ID).then(|| SessionId::new(id).ok())?
}

/// The session id and `<ts>` in an archive file name (`<id>_<ts>.json`).
pub fn archived_file_of(name: &str) -> Option<(SessionId, i64)> {
    let (id, ts) = name.strip_suffix(".json")?.rsplit_once('_')?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((SessionId::new(id).ok()?, ts.parse().ok()?))
}

/// The session id in a log name of `logs/` (`<id>.log`).
pub fn session_id_of_log(name: &str) -> Option<SessionId> {
    let id = SessionId::new(name.strip_suffix(".log")?).ok()?;
    writes_log(&id).then_some(id)
}

/// The session id and part number in a rotated log name (`<id>.<n>.log`).
pub fn rotated_log_of(name: &str) -> Option<(SessionId, u64)> {
    let (id, n) = name.strip_suffix(".log")?.rsplit_once('.')?;
    Some((SessionId::new(id).ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amplihack_file_names_parse_back_with_amplihack_ids() {
        let id = SessionId::new("claude_session_1762597800_0a1b2c3d").unwrap();
        assert_eq!(
            archived_file_of("claude_session_1762597800_0a1b2c3d_1762600000.json"),
            Some((id.clone(), 1_762_600_000))
        );
        assert_eq!(
            session_id_of_file("claude_session_1762597800_0a1b2c3d.json"),
            Some(id.clone())
        );
        assert_eq!(session_id_of_file("registry.json"), None);
        assert_eq!(archived_file_of("nots.json"), None);
        assert_eq!(archived_file_of("a_12x.json"), None);
        assert_eq!(session_id_of_log("toolkit.log"), None);
        assert_eq!(
            rotated_log_of("a.b.3.log"),
            Some((SessionId::new("a.b").unwrap(), 3))
        );
    }
}
