//! Per-session logs (`logs/session_<id>.log`): seed 001's `ToolkitLogger` output for one
//! session, as JSON Lines, derived from the events.
//!
//! # Format
//!
//! One JSON object per line, oldest first:
//!
//! ```json
//! {"timestamp":"2025-11-08T10:30:05.000000Z","level":"INFO","logger":"session_engine.session","session_id":"abc123","event":"activity_recorded","message":"activity user_input","lsn":12,"details":{"action":"user_input","details":{"message":"Hello"}}}
//! ```
//!
//! | field        | type    | meaning |
//! | ------------ | ------- | ------- |
//! | `timestamp`  | string  | ISO 8601 UTC with microseconds and `Z`: when the event happened |
//! | `level`      | string  | `INFO`; `WARNING` for a timeout; `ERROR` for a failed command |
//! | `logger`     | string  | always `session_engine.session` |
//! | `session_id` | string  | the session |
//! | `event`      | string  | the event type (`session_created`, `activity_recorded`, `metadata_set`, `metadata_removed`, `status_changed`, `sessions_expired`, `sessions_archived`, `command_recorded`, `checkpoint_saved`, `checkpoint_restored`, `decision_logged`, `session_imported`, `session_cloned`, `sessions_adopted`) |
//! | `message`    | string  | a one-line human-readable summary |
//! | `lsn`        | integer | the log record the line comes from |
//! | `sub`        | integer | present only on the lines of an import's carried events: 1-based position in the import |
//! | `details`    | object  | the event's fields, below |
//!
//! `details` per `event`:
//!
//! | `event`               | `details` |
//! | --------------------- | --------- |
//! | `session_created`     | `{name, timeout_seconds, agent, working_dir, metadata}` |
//! | `activity_recorded`   | `{action, details}` (`details` null when none was given) |
//! | `metadata_set`        | `{key, value}` |
//! | `metadata_removed`    | `{key}` |
//! | `status_changed`      | `{status}` |
//! | `sessions_expired`    | `{status: "timed_out"}` |
//! | `sessions_archived`   | `{status: "archived"}` |
//! | `command_recorded`    | `{command, args, success, error, duration_ms}` |
//! | `checkpoint_saved`    | `{label}` |
//! | `checkpoint_restored` | `{index}` |
//! | `decision_logged`     | `{what, why, alternatives}` |
//! | `session_imported`    | `{original, events}` (`events`: how many events the import carried; their lines follow, with `sub`) |
//! | `session_cloned`      | `{source}` |
//! | `sessions_adopted`    | `{from: "amplihack", source, status, commands}` (`source`: the directory read; `commands`: how many it brought) |
//! | `claude_opened`       | `{source, cwd, version, replaces, reason}`: a Claude Code transcript became the session |
//! | `claude_piece`        | `{offset, bytes, type, uuid, problem}` (at `DEBUG`: the next bytes of the transcript) |
//!
//! Seed 001's logger methods map onto lines: `log_session_event` is `activity_recorded`,
//! `log_error` is a `command_recorded` line at `ERROR` with the error text, and
//! `log_decision` is `decision_logged` with `what`, `why` and `alternatives`.
//!
//! A session whose `config.enable_logging` is false has no log file. Lines below the
//! session's `config.log_level` are left out, except the line that starts the log (the
//! creation, import or clone), which is always written.
//!
//! `(lsn, sub)` increases strictly from line to line; the projector uses the last line's
//! pair to skip lines a file already holds after a crash.
//!
//! # The `amplihack` format
//!
//! In a directory whose projections are in the `amplihack` format the log is
//! `logs/<id>.log` (what amplihack's `ToolkitLogger.get_session_logs` reads), one
//! `LogEntry` per line as amplihack's `StructuredFormatter` writes it (`json.dumps` of the
//! dataclass: its field order, `", "` and `": "`, non-ASCII escaped):
//!
//! ```json
//! {"timestamp": 1762597805.0, "level": "INFO", "message": "activity user_input", "session_id": "abc123", "component": "session_engine", "operation": "activity_recorded", "duration": null, "metadata": {"lsn": 12, "details": {"action": "user_input", "details": {"message": "Hello"}}}, "error": null, "traceback": null}
//! ```
//!
//! | field        | type           | meaning |
//! | ------------ | -------------- | ------- |
//! | `timestamp`  | float          | when the event happened, seconds since the epoch |
//! | `level`      | string         | as above |
//! | `message`    | string         | as above |
//! | `session_id` | string         | the session |
//! | `component`  | string         | always `session_engine` |
//! | `operation`  | string         | the event type, as `event` above |
//! | `duration`   | float or null  | a recorded command's duration in seconds; null otherwise |
//! | `metadata`   | object         | `{lsn, sub, details}`: the line's position (`sub` only on an import's carried events) and `details` as above |
//! | `error`      | string or null | a failed command's error text; null otherwise |
//! | `traceback`  | null           | always null |
//!
//! A session adopted from an amplihack directory (`sessions_adopted`) starts its log with
//! the `logs/<id>.log` it had, exactly as it was (whatever its logging settings); one that
//! had none gets no line for its adoption. The projector finds the last line's position in
//! `metadata` of a line whose `component` is `session_engine` (an adopted log's own lines
//! are not such lines, so the first append after an adoption rewrites the log from the
//! event log).

use serde::Serialize;
use serde_json::{Value, json};

use super::format::ProjectionFormat;
use super::pyjson;
use crate::claude::events::ClaudeEvent;
use crate::event::{Event, EventBody, run_event};
use crate::state::{LogLevel, State, Status};
use crate::types::{Lsn, SessionId, Timestamp};

/// The `component` of every line in the `amplihack` format.
pub const AMPLIHACK_COMPONENT: &str = "session_engine";

/// The `logger` field of every line.
pub const LOGGER_NAME: &str = "session_engine.session";

/// One rendered line and where it sits.
#[derive(Clone, Debug)]
pub(crate) struct LogLine {
    /// `(lsn, sub)`: the line's position, strictly increasing within a file.
    pub key: (Lsn, u32),
    /// Whether this line starts a session's log (creation, import or clone).
    pub starts: bool,
    /// The JSON text, newline-terminated.
    pub text: String,
}

fn rank(l: LogLevel) -> u8 {
    match l {
        LogLevel::Debug => 0,
        LogLevel::Info => 1,
        LogLevel::Warning => 2,
        LogLevel::Error => 3,
    }
}

fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warning => "WARNING",
        LogLevel::Error => "ERROR",
    }
}

#[derive(Serialize)]
struct LineOut<'a, D: Serialize = Value> {
    timestamp: String,
    level: &'static str,
    logger: &'static str,
    session_id: &'a str,
    event: &'static str,
    message: String,
    lsn: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<u32>,
    details: D,
}

/// An activity's `details` in the seed format, its JSON kept as the compact text the
/// event holds: the same bytes as parsing it into a `Value` and serialising that again
/// (the text was made that way, keys in their order), without building the tree. The
/// activity is the one event written at bulk rates.
#[derive(Serialize)]
struct ActivityDetails<'a> {
    action: &'a str,
    details: Option<Box<serde_json::value::RawValue>>,
}

/// The seed-format line of an activity, when its details are well-formed JSON text (they
/// always are when they come from the log; otherwise the general path renders them).
fn seed_activity_line(
    id: &SessionId,
    at: Timestamp,
    body: &EventBody,
    key: (Lsn, u32),
) -> Option<String> {
    let EventBody::ActivityRecorded {
        action, details, ..
    } = body
    else {
        return None;
    };
    let raw = match details {
        Some(j) => Some(serde_json::value::RawValue::from_string(j.as_str().to_owned()).ok()?),
        None => None,
    };
    serde_json::to_string(&LineOut {
        timestamp: at.to_iso8601_micros(),
        level: level_name(LogLevel::Info),
        logger: LOGGER_NAME,
        session_id: id.as_str(),
        event: body.type_name(),
        message: format!("activity {action}"),
        lsn: key.0.get(),
        sub: (key.1 > 0).then_some(key.1),
        details: ActivityDetails {
            action,
            details: raw,
        },
    })
    .ok()
}

fn json_or_null(j: &Option<crate::types::JsonText>) -> Value {
    j.as_ref().map_or(Value::Null, |j| j.to_value())
}

/// The level, message and `details` of an event's line for session `id`.
pub(crate) fn details(id: &SessionId, body: &EventBody) -> (LogLevel, String, Value) {
    match body {
        EventBody::SessionCreated(c) => (
            LogLevel::Info,
            format!("session created: {}", c.name),
            json!({
                "name": c.name,
                "timeout_seconds": c.timeout_secs,
                "agent": c.agent,
                "working_dir": c.working_dir,
                "metadata": c.metadata.iter().map(|(k, v)| (k.clone(), v.to_value()))
                    .collect::<serde_json::Map<_, _>>(),
            }),
        ),
        EventBody::ActivityRecorded {
            action, details, ..
        } => (
            LogLevel::Info,
            format!("activity {action}"),
            json!({ "action": action, "details": json_or_null(details) }),
        ),
        EventBody::MetadataSet { key, value, .. } => (
            LogLevel::Info,
            format!("metadata {key} set"),
            json!({ "key": key, "value": value.to_value() }),
        ),
        EventBody::MetadataRemoved { key, .. } => (
            LogLevel::Info,
            format!("metadata {key} removed"),
            json!({ "key": key }),
        ),
        EventBody::StatusChanged { status, .. } => (
            LogLevel::Info,
            format!("session {status}"),
            json!({ "status": status.as_str() }),
        ),
        EventBody::SessionsExpired { .. } => (
            LogLevel::Warning,
            "session timed out".into(),
            json!({ "status": Status::TimedOut.as_str() }),
        ),
        EventBody::SessionsArchived { .. } => (
            LogLevel::Info,
            "session archived".into(),
            json!({ "status": Status::Archived.as_str() }),
        ),
        EventBody::CommandRecorded {
            command,
            args,
            success,
            error,
            duration_ms,
            ..
        } => (
            if *success {
                LogLevel::Info
            } else {
                LogLevel::Error
            },
            match error {
                Some(e) if !success => format!("command {command} failed: {e}"),
                _ if !success => format!("command {command} failed"),
                _ => format!("command {command} succeeded"),
            },
            json!({
                "command": command,
                "args": json_or_null(args),
                "success": success,
                "error": error,
                "duration_ms": duration_ms,
            }),
        ),
        EventBody::CheckpointSaved { label, .. } => (
            LogLevel::Info,
            match label {
                Some(l) => format!("checkpoint saved: {l}"),
                None => "checkpoint saved".into(),
            },
            json!({ "label": label }),
        ),
        EventBody::CheckpointRestored { index, .. } => (
            LogLevel::Info,
            format!("checkpoint {index} restored"),
            json!({ "index": index }),
        ),
        EventBody::DecisionLogged {
            what,
            why,
            alternatives,
            ..
        } => (
            LogLevel::Info,
            format!("decision: {what}"),
            json!({ "what": what, "why": why, "alternatives": alternatives }),
        ),
        EventBody::SessionImported {
            original, events, ..
        } => (
            LogLevel::Info,
            format!("session imported (was {original})"),
            json!({ "original": original.as_str(), "events": events.len() }),
        ),
        EventBody::SessionCloned { source, .. } => (
            LogLevel::Info,
            format!("session cloned from {source}"),
            json!({ "source": source.as_str() }),
        ),
        EventBody::SessionsAdopted(a) => {
            let one = a.sessions.iter().find(|s| s.session == *id);
            (
                LogLevel::Info,
                format!("session adopted from amplihack ({})", a.source),
                json!({
                    "from": "amplihack",
                    "source": a.source,
                    "status": one.map(|s| s.status.as_str()),
                    "commands": one.map_or(0, |s| s.commands.len()),
                }),
            )
        }
        EventBody::ChainLinked { .. }
        | EventBody::ChainReset { .. }
        | EventBody::ChainsImported { .. } => (
            LogLevel::Debug,
            format!("chain event in session {id}"),
            Value::Null,
        ),
        run_event!() => (
            LogLevel::Debug,
            format!("run event in session {id}"),
            Value::Null,
        ),
        EventBody::ClaudeTranscript(e) => match &**e {
            ClaudeEvent::Opened(o) => (
                LogLevel::Info,
                format!("Claude Code transcript opened: {}", o.source),
                json!({
                    "source": o.source,
                    "cwd": o.cwd,
                    "version": o.version,
                    "replaces": o.replaces.as_ref().map(|r| r.as_str()),
                    "reason": o.reason,
                }),
            ),
            ClaudeEvent::Piece(p) => (
                LogLevel::Debug,
                format!("transcript bytes at offset {}", p.offset),
                json!({
                    "offset": p.offset,
                    "bytes": p.bytes.len(),
                    "type": p.refs.as_ref().and_then(|r| r.kind.as_deref()),
                    "uuid": p.refs.as_ref().and_then(|r| r.uuid.as_deref()),
                    "problem": p.problem,
                }),
            ),
        },
        EventBody::AgentChanged {
            agent_type,
            action,
            config,
            ..
        } => (
            LogLevel::Info,
            format!("agent {agent_type} {}", action.name()),
            json!({
                "agent_type": agent_type,
                "action": action.name(),
                "config": json_or_null(config),
            }),
        ),
    }
}

/// A line as amplihack's `LogEntry` (see the module documentation).
#[derive(Serialize)]
struct EntryOut<'a, D: Serialize> {
    timestamp: f64,
    level: &'static str,
    message: String,
    session_id: &'a str,
    component: &'static str,
    operation: &'static str,
    duration: Option<f64>,
    metadata: EntryMetadata<D>,
    error: Option<&'a str>,
    traceback: Option<()>,
}

#[derive(Serialize)]
struct EntryMetadata<D: Serialize> {
    lsn: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<u32>,
    details: D,
}

/// An activity's `details` in the amplihack format: the compact JSON text the event holds,
/// streamed from its parser into Python's `json.dumps` form (`pyjson`'s formatter) without
/// building a `Value` tree: the same calls on the serializer as parsing it into a `Value`
/// and serialising that (document order, the same number kinds), so the same bytes.
#[derive(Serialize)]
struct AmplihackActivity<'a> {
    action: &'a str,
    details: Option<PyText<'a>>,
}

/// JSON text serialised by transcoding it (`serde_transcode`).
struct PyText<'a>(&'a str);

impl Serialize for PyText<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0);
        serde_transcode::transcode(&mut de, s)
    }
}

/// The amplihack-format line of an activity (the one event written at bulk rates), or
/// `None` for any other event.
fn amplihack_activity_line(
    id: &SessionId,
    at: Timestamp,
    body: &EventBody,
    key: (Lsn, u32),
) -> Option<String> {
    let EventBody::ActivityRecorded {
        action, details, ..
    } = body
    else {
        return None;
    };
    pyjson::to_line(&EntryOut {
        timestamp: super::schema::amplihack::secs(at),
        level: level_name(LogLevel::Info),
        message: format!("activity {action}"),
        session_id: id.as_str(),
        component: AMPLIHACK_COMPONENT,
        operation: body.type_name(),
        duration: None,
        metadata: EntryMetadata {
            lsn: key.0.get(),
            sub: (key.1 > 0).then_some(key.1),
            details: AmplihackActivity {
                action,
                details: details.as_ref().map(|j| PyText(j.as_str())),
            },
        },
        error: None,
        traceback: None,
    })
    .ok()
}

fn starts_log(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::SessionCreated(_)
            | EventBody::SessionImported { .. }
            | EventBody::SessionCloned { .. }
            | EventBody::SessionsAdopted(_)
    ) || matches!(body, EventBody::ClaudeTranscript(e) if matches!(**e, ClaudeEvent::Opened(_)))
}

/// The seed line of `body` in session `id`, from its level, message and details (the
/// general path, the details as a `Value` tree), without the newline.
fn seed_line(
    id: &SessionId,
    at: Timestamp,
    body: &EventBody,
    key: (Lsn, u32),
    (level, message, details): (LogLevel, String, Value),
) -> serde_json::Result<String> {
    serde_json::to_string(&LineOut {
        timestamp: at.to_iso8601_micros(),
        level: level_name(level),
        logger: LOGGER_NAME,
        session_id: id.as_str(),
        event: body.type_name(),
        message,
        lsn: key.0.get(),
        sub: (key.1 > 0).then_some(key.1),
        details,
    })
}

#[allow(clippy::too_many_arguments)]
fn render(
    format: ProjectionFormat,
    id: &SessionId,
    at: Timestamp,
    body: &EventBody,
    key: (Lsn, u32),
    threshold: LogLevel,
    out: &mut Vec<(SessionId, LogLine)>,
) {
    let fast = match format {
        ProjectionFormat::Seed => seed_activity_line,
        ProjectionFormat::Amplihack => amplihack_activity_line,
    };
    if rank(LogLevel::Info) >= rank(threshold)
        && let Some(mut text) = fast(id, at, body, key)
    {
        text.push('\n');
        let starts = key.1 == 0 && starts_log(body);
        out.push((id.clone(), LogLine { key, starts, text }));
        return;
    }
    let (level, message, details) = details(id, body);
    let starts = key.1 == 0 && starts_log(body);
    if !starts && rank(level) < rank(threshold) {
        return;
    }
    // Serialising a tree of plain JSON values and strings cannot fail.
    let mut text = match format {
        ProjectionFormat::Seed => seed_line(id, at, body, key, (level, message, details)),
        ProjectionFormat::Amplihack => amplihack_line(id, at, body, key, (level, message, details)),
    }
    .unwrap_or_default();
    text.push('\n');
    out.push((id.clone(), LogLine { key, starts, text }));
}

/// The amplihack-format line of any event, from its level, message and `details`.
fn amplihack_line(
    id: &SessionId,
    at: Timestamp,
    body: &EventBody,
    key: (Lsn, u32),
    (level, message, details): (LogLevel, String, Value),
) -> serde_json::Result<String> {
    let (duration, error) = match body {
        EventBody::CommandRecorded {
            duration_ms,
            success,
            error,
            ..
        } => (
            Some(*duration_ms as f64 / 1000.0),
            error.as_deref().filter(|_| !success),
        ),
        _ => (None, None),
    };
    pyjson::to_line(&EntryOut {
        timestamp: super::schema::amplihack::secs(at),
        level: level_name(level),
        message,
        session_id: id.as_str(),
        component: AMPLIHACK_COMPONENT,
        operation: body.type_name(),
        duration,
        metadata: EntryMetadata {
            lsn: key.0.get(),
            sub: (key.1 > 0).then_some(key.1),
            details,
        },
        error,
        traceback: None,
    })
}

/// Appends to `out` the log lines event `lsn` produces in `format`, per session, following
/// each session's logging settings in `state` (which must hold every session the event
/// names).
pub(crate) fn lines_for(
    format: ProjectionFormat,
    lsn: Lsn,
    event: &Event,
    state: &State,
    out: &mut Vec<(SessionId, LogLine)>,
) {
    for id in event.body.sessions() {
        let Some(s) = state.session(id) else { continue };
        if format == ProjectionFormat::Amplihack {
            if !super::schema::amplihack::writes_log(id) {
                continue;
            }
            if let EventBody::SessionsAdopted(a) = &event.body {
                // The log it had, as it was, whatever its settings say now.
                if let Some(text) = a
                    .sessions
                    .iter()
                    .find(|a| a.session == *id)
                    .and_then(|a| a.log.clone())
                {
                    let line = LogLine {
                        key: (lsn, 0),
                        starts: true,
                        text,
                    };
                    out.push((id.clone(), line));
                }
                continue;
            }
        }
        if !s.config.enable_logging {
            continue;
        }
        let threshold = s.config.log_level;
        let body = event
            .body
            .narrowed_to(id)
            .unwrap_or_else(|| event.body.clone());
        render(format, id, event.at, &body, (lsn, 0), threshold, out);
        if let EventBody::SessionImported {
            original, events, ..
        } = &event.body
        {
            for (i, e) in events.iter().enumerate() {
                let sub = u32::try_from(i + 1).unwrap_or(u32::MAX);
                let nested = e.body.readdressed(original, id);
                render(format, id, e.at, &nested, (lsn, sub), threshold, out);
            }
        }
    }
}

/// The `(lsn, sub)` of a log line, if it is one of ours: at the top level (the `seed`
/// format) or, on a line whose `component` is the engine's, in `metadata` (the
/// `amplihack` format; an adopted line's metadata is amplihack's, whatever it holds).
pub(crate) fn parse_key(line: &[u8]) -> Option<(Lsn, u32)> {
    #[derive(serde::Deserialize)]
    struct Position {
        lsn: Option<u64>,
        #[serde(default)]
        sub: u32,
    }
    #[derive(serde::Deserialize)]
    struct Key {
        lsn: Option<u64>,
        #[serde(default)]
        sub: u32,
        component: Option<serde_json::Value>,
        metadata: Option<serde_json::Value>,
    }
    let k: Key = serde_json::from_slice(line).ok()?;
    if let Some(lsn) = k.lsn {
        return Some((Lsn(lsn), k.sub));
    }
    if k.component.as_ref().and_then(Value::as_str) != Some(AMPLIHACK_COMPONENT) {
        return None;
    }
    let p: Position = serde_json::from_value(k.metadata?).ok()?;
    Some((Lsn(p.lsn?), p.sub))
}

#[cfg(test)]
mod tests;
