//! The JSON files the projections write, documented field by field, and their rendering
//! from the state.
//!
//! The formats are seed 001's (`registry.json`, `session_<id>.json`) and seed 003's
//! (`<agent>_sessions.json`). Where this engine adds fields, it adds them only where a
//! reader of the seed's format does not break: new keys in objects that the seeds' readers
//! access by key. Seed 003's chain entries are read with `SessionInfo(**data)`, which fails
//! on an unknown key, so the engine adds none to them (a chain imported from a file that
//! had more keys keeps them, as read: see [`ChainFile`]).
//!
//! Rendering borrows from the state (no intermediate copies), so rewriting a session with
//! many activities costs one pass over them.
//!
//! This module documents the `seed` format, a data directory's default. The `amplihack`
//! format (the files of the real amplihack toolkit, chosen per directory: see
//! [`super::format`]) is documented field by field, with the engine's mapping onto it, in
//! [`amplihack`]; [`super::layout`] says which format writes which file.

pub mod amplihack;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::state::{
    Activity, Chain, ChainLink, Checkpoint, CommandRecord, Decision, Origin, Session,
    SessionConfig, State,
};
use crate::types::{AgentId, JsonText, SessionId, Timestamp};

/// Where the projections live under a data directory.
///
/// ```text
/// <root>/projections.json              the marker: LSN the files reflect (see `Marker`)
/// <root>/sessions/registry.json        RegistryFile
/// <root>/sessions/session_<id>.json    SessionFile, unarchived sessions
/// <root>/sessions/archive/session_<id>.json   SessionFile, archived sessions
/// <root>/logs/session_<id>.log         per-session log, JSON lines (see `logline`)
/// <root>/logs/archive/session_<id>.<n>.log    rotated per-session logs, oldest n = 1
/// <root>/chains/<agent>_sessions.json  ChainFile (seed 003)
/// <root>/projections.manifest          which of these files the engine wrote (ownership)
/// <root>/projections-attic/<time>/...  its own files it moved aside instead of deleting
/// ```
///
/// The manifest's format, the ownership rule and the attic are documented in
/// `worker/manifest.rs` and in `docs/format.md` (*Projection ownership*).
#[derive(Clone, Debug)]
pub struct ProjectionPaths {
    /// The data directory.
    pub root: PathBuf,
    /// `sessions/`.
    pub sessions: PathBuf,
    /// `sessions/archive/`.
    pub archive: PathBuf,
    /// `logs/`.
    pub logs: PathBuf,
    /// `logs/archive/`, where rotated per-session logs go.
    pub logs_archive: PathBuf,
    /// `chains/`, seed 003's persistence directory (its default is
    /// `~/.claude-agent/sessions`; here it lives in the data directory).
    pub chains: PathBuf,
    /// `sessions/registry.json`.
    pub registry: PathBuf,
    /// `projections.json`.
    pub marker: PathBuf,
}

impl ProjectionPaths {
    /// The layout under `root`.
    pub fn new(root: &Path) -> ProjectionPaths {
        let sessions = root.join("sessions");
        let logs = root.join("logs");
        ProjectionPaths {
            root: root.to_path_buf(),
            archive: sessions.join("archive"),
            registry: sessions.join("registry.json"),
            sessions,
            logs_archive: logs.join("archive"),
            logs,
            chains: root.join("chains"),
            marker: root.join("projections.json"),
        }
    }

    /// `sessions/session_<id>.json`.
    pub fn session_file(&self, id: &SessionId) -> PathBuf {
        self.sessions.join(format!("session_{id}.json"))
    }

    /// `sessions/archive/session_<id>.json`.
    pub fn archived_session_file(&self, id: &SessionId) -> PathBuf {
        self.archive.join(format!("session_{id}.json"))
    }

    /// `logs/session_<id>.log`.
    pub fn log_file(&self, id: &SessionId) -> PathBuf {
        self.logs.join(format!("session_{id}.log"))
    }

    /// `logs/archive/session_<id>.<n>.log`.
    pub fn rotated_log_file(&self, id: &SessionId, n: u64) -> PathBuf {
        self.logs_archive.join(format!("session_{id}.{n}.log"))
    }

    /// `chains/<agent>_sessions.json`.
    pub fn chain_file(&self, agent: &AgentId) -> PathBuf {
        self.chains.join(format!("{agent}_sessions.json"))
    }

    /// Every directory the projections write into.
    pub fn dirs(&self) -> [&Path; 5] {
        [
            &self.sessions,
            &self.archive,
            &self.logs,
            &self.logs_archive,
            &self.chains,
        ]
    }
}

/// The session id in a `session_<id>.json` file name, if it is one.
pub(crate) fn session_id_of_file(name: &str) -> Option<SessionId> {
    let id = name.strip_prefix("session_")?.strip_suffix(".json")?;
    SessionId::new(id).ok()
}

/// The session id in a `session_<id>.log` file name, if it is one.
pub(crate) fn session_id_of_log(name: &str) -> Option<SessionId> {
    let id = name.strip_prefix("session_")?.strip_suffix(".log")?;
    SessionId::new(id).ok()
}

/// The session id and number in a rotated `session_<id>.<n>.log` name.
pub(crate) fn rotated_log_of(name: &str) -> Option<(SessionId, u64)> {
    let stem = name.strip_prefix("session_")?.strip_suffix(".log")?;
    let (id, n) = stem.rsplit_once('.')?;
    Some((SessionId::new(id).ok()?, n.parse().ok()?))
}

/// The agent id in a `<agent>_sessions.json` name.
pub(crate) fn agent_of_chain_file(name: &str) -> Option<AgentId> {
    AgentId::new(name.strip_suffix("_sessions.json")?).ok()
}

/// Seed 001's timestamp format: ISO 8601, UTC, whole seconds, `Z` suffix.
fn iso(t: Timestamp) -> String {
    t.to_iso8601()
}

/// Details or arguments as written: the JSON value given, `{}` when none was (the seeds'
/// readers index into `details` as a dict).
struct DetailsOut<'a>(Option<&'a JsonText>);

impl Serialize for DetailsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(j) => j.serialize(s),
            None => s.serialize_map(Some(0))?.end(),
        }
    }
}

struct MetadataOut<'a>(&'a imbl::OrdMap<String, JsonText>);

impl Serialize for MetadataOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

/// A log of entries rendered one by one with `F`.
type LogOut<'a, T, O> = SeqOut<'a, Arc<T>, fn(&'a Arc<T>) -> O>;

/// A sequence rendered item by item from an `imbl::Vector`.
struct SeqOut<'a, T: Clone, F>(&'a imbl::Vector<T>, F);

impl<'a, T: Clone, F, O> Serialize for SeqOut<'a, T, F>
where
    F: Fn(&'a T) -> O,
    O: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(&self.1))
    }
}

/// One `activity_log` entry of a [`SessionFile`]: seed 001's `{action, timestamp, details}`.
#[derive(Serialize)]
struct ActivityOut<'a> {
    action: &'a str,
    timestamp: String,
    details: DetailsOut<'a>,
}

fn activity(a: &Arc<Activity>) -> ActivityOut<'_> {
    ActivityOut {
        action: &a.action,
        timestamp: iso(a.timestamp),
        details: DetailsOut(a.details.text()),
    }
}

/// A session file's activities: resolved ones (read through [`crate::history::History`]),
/// or the state's own, which must all hold their details in memory.
enum ActivitiesOut<'a> {
    State(&'a imbl::Vector<Arc<Activity>>),
    Resolved(&'a [Arc<Activity>]),
}

impl Serialize for ActivitiesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let check = |a: &'_ Arc<Activity>| {
            if let crate::state::Details::InLog(lsn) = a.details {
                return Err(serde::ser::Error::custom(format!(
                    "the details of activity {:?} are in the log (LSN {lsn}): render the \
                     session file with its activities read through its history",
                    a.action
                )));
            }
            Ok(())
        };
        match self {
            ActivitiesOut::State(v) => {
                for a in v.iter() {
                    check(a)?;
                }
                s.collect_seq(v.iter().map(activity))
            }
            ActivitiesOut::Resolved(v) => {
                for a in v.iter() {
                    check(a)?;
                }
                s.collect_seq(v.iter().map(activity))
            }
        }
    }
}

#[derive(Serialize)]
struct CommandOut<'a> {
    command: &'a str,
    args: DetailsOut<'a>,
    timestamp: String,
    success: bool,
    error: Option<&'a str>,
    duration_ms: u64,
}

fn command(c: &Arc<CommandRecord>) -> CommandOut<'_> {
    CommandOut {
        command: &c.command,
        args: DetailsOut(c.args.as_ref()),
        timestamp: iso(c.timestamp),
        success: c.success,
        error: c.error.as_deref(),
        duration_ms: c.duration_ms,
    }
}

#[derive(Serialize)]
struct DecisionOut<'a> {
    what: &'a str,
    why: &'a str,
    alternatives: Option<&'a str>,
    timestamp: String,
}

fn decision(d: &Arc<Decision>) -> DecisionOut<'_> {
    DecisionOut {
        what: &d.what,
        why: &d.why,
        alternatives: d.alternatives.as_deref(),
        timestamp: iso(d.timestamp),
    }
}

#[derive(Serialize)]
struct CheckpointOut<'a> {
    index: u32,
    label: Option<&'a str>,
    created_at: String,
}

fn checkpoint(c: &Checkpoint) -> CheckpointOut<'_> {
    CheckpointOut {
        index: c.index,
        label: c.label.as_deref(),
        created_at: iso(c.created_at),
    }
}

/// `sessions/session_<id>.json` (and `sessions/archive/session_<id>.json`): one session,
/// seed 001's format.
///
/// ```json
/// {
///   "session_id": "abc123",
///   "created_at": "2025-11-08T10:30:00Z",
///   "last_activity": "2025-11-08T10:35:15Z",
///   "status": "active",
///   "timeout_seconds": 3600,
///   "metadata": { "user": "alice@example.com", "branch": "main" },
///   "activity_log": [
///     { "action": "user_input", "timestamp": "2025-11-08T10:30:05Z",
///       "details": { "message": "Hello" } }
///   ],
///   "name": "abc123", "agent": null, "working_dir": null,
///   "config": { "timeout": 300.0, "max_retries": 3, "retry_delay": 1.0,
///               "heartbeat_interval": 30.0, "enable_logging": true,
///               "log_level": "INFO", "auto_save_interval": 60.0 },
///   "command_history": [], "decisions": [], "checkpoints": []
/// }
/// ```
///
/// Seed 001's fields:
///
/// | field             | type    | meaning |
/// | ----------------- | ------- | ------- |
/// | `session_id`      | string  | the id (also in the file name) |
/// | `created_at`      | string  | ISO 8601 UTC, seconds, `Z` |
/// | `last_activity`   | string  | same format: the last activity, command, decision, restore or resume |
/// | `status`          | string  | `active`, `paused`, `ended`, `archived`, or `timed_out` (recorded by the watchdog) |
/// | `timeout_seconds` | integer | inactivity timeout; 0 never times out |
/// | `metadata`        | object  | key to any JSON value |
/// | `activity_log`    | array   | `{action: string, timestamp: string, details: any}`, oldest first; `details` is `{}` when none was given |
///
/// Fields this engine adds (a reader of seed 001's format ignores them):
///
/// | field             | type           | meaning |
/// | ----------------- | -------------- | ------- |
/// | `name`            | string         | human-readable name |
/// | `agent`           | string or null | the agent the session belongs to |
/// | `working_dir`     | string or null | its working directory |
/// | `config`          | object         | seed 000's `SessionConfig` (seconds as numbers, `log_level` upper case) |
/// | `command_history` | array          | `{command, args, timestamp, success, error, duration_ms}`, oldest first |
/// | `decisions`       | array          | `{what, why, alternatives, timestamp}`, oldest first |
/// | `checkpoints`     | array          | `{index, label, created_at}` |
/// | `origin`          | object         | present only for imported (`{"imported":{"original":id}}`), cloned (`{"cloned":{"source":id}}`) or adopted (`{"adopted":{"from":"amplihack"}}`) sessions |
#[derive(Serialize)]
pub struct SessionFile<'a> {
    session_id: &'a str,
    created_at: String,
    last_activity: String,
    status: &'static str,
    timeout_seconds: u64,
    metadata: MetadataOut<'a>,
    activity_log: ActivitiesOut<'a>,
    name: &'a str,
    agent: Option<&'a str>,
    working_dir: Option<&'a str>,
    config: &'a SessionConfig,
    command_history: LogOut<'a, CommandRecord, CommandOut<'a>>,
    decisions: LogOut<'a, Decision, DecisionOut<'a>>,
    checkpoints: SeqOut<'a, Checkpoint, fn(&'a Checkpoint) -> CheckpointOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<OriginOut<'a>>,
}

/// A session's `origin`: an adoption shows where it came from, not its documents.
struct OriginOut<'a>(&'a Origin);

impl Serialize for OriginOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Origin::Adopted(_) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("adopted", &serde_json::json!({"from": "amplihack"}))?;
                m.end()
            }
            other => other.serialize(s),
        }
    }
}

impl<'a> SessionFile<'a> {
    /// The file's content for session `s`, its activities as the state holds them:
    /// serialising it fails if an activity's details are in the log (state schema 5;
    /// use [`SessionFile::with_activities`]).
    pub fn of(s: &'a Session) -> SessionFile<'a> {
        let mut f = SessionFile::with_activities(s, &[]);
        f.activity_log = ActivitiesOut::State(&s.body.activity_log);
        f
    }

    /// The file's content for session `s` with `activities`, its activities read through
    /// its history (details resolved), oldest first.
    pub fn with_activities(s: &'a Session, activities: &'a [Arc<Activity>]) -> SessionFile<'a> {
        SessionFile {
            session_id: s.id.as_str(),
            created_at: iso(s.created_at),
            last_activity: iso(s.last_activity),
            status: s.status().as_str(),
            timeout_seconds: s.timeout_secs,
            metadata: MetadataOut(&s.body.metadata),
            activity_log: ActivitiesOut::Resolved(activities),
            name: &s.name,
            agent: s.agent.as_deref(),
            working_dir: s.working_dir.as_deref(),
            config: &s.config,
            command_history: SeqOut(&s.body.commands, command),
            decisions: SeqOut(&s.body.decisions, decision),
            checkpoints: SeqOut(&s.checkpoints, checkpoint),
            origin: s.origin.as_ref().map(OriginOut),
        }
    }

    /// Pretty-printed JSON bytes, newline-terminated.
    pub fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        pretty(self)
    }
}

/// One entry of a [`RegistryFile`].
#[derive(Serialize)]
struct RegistryEntryOut<'a> {
    created_at: String,
    status: &'static str,
    timeout_seconds: u64,
    name: &'a str,
    last_activity: String,
}

/// `sessions/registry.json`: every session, archived ones included, seed 001's format.
///
/// ```json
/// {
///   "sessions": {
///     "abc123": { "created_at": "2025-11-08T10:30:00Z", "status": "active",
///                 "timeout_seconds": 3600, "name": "abc123",
///                 "last_activity": "2025-11-08T10:35:15Z" }
///   }
/// }
/// ```
///
/// | field                           | type    | meaning |
/// | ------------------------------- | ------- | ------- |
/// | `sessions`                      | object  | session id to entry, in id order |
/// | `sessions.<id>.created_at`      | string  | ISO 8601 UTC, seconds, `Z` |
/// | `sessions.<id>.status`          | string  | as in [`SessionFile`] |
/// | `sessions.<id>.timeout_seconds` | integer | inactivity timeout |
/// | `sessions.<id>.name`            | string  | added by this engine |
/// | `sessions.<id>.last_activity`   | string  | added by this engine; same format as `created_at` |
pub struct RegistryFile<'a>(&'a State);

impl<'a> RegistryFile<'a> {
    /// The registry of `state`.
    pub fn of(state: &'a State) -> RegistryFile<'a> {
        RegistryFile(state)
    }

    /// Pretty-printed JSON bytes, newline-terminated.
    pub fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        pretty(self)
    }
}

struct RegistrySessions<'a>(&'a State);

impl Serialize for RegistrySessions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.sessions.iter().map(|(id, sess)| {
            (
                id.as_str(),
                RegistryEntryOut {
                    created_at: iso(sess.created_at),
                    status: sess.status().as_str(),
                    timeout_seconds: sess.timeout_secs,
                    name: &sess.name,
                    last_activity: iso(sess.last_activity),
                },
            )
        }))
    }
}

impl Serialize for RegistryFile<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("sessions", &RegistrySessions(self.0))?;
        m.end()
    }
}

/// Seed 003's timestamp format for chain entries: `datetime.isoformat()` of a naive
/// datetime, `2025-11-08T10:30:00.000000`. The value is UTC. It carries no offset because
/// seed 003's reader compares it with a naive `datetime.now()`, which raises `TypeError`
/// for an offset-aware value; `datetime.fromisoformat` parses it on every Python version.
pub fn chain_timestamp(t: Timestamp) -> String {
    crate::isotime::iso(t, true, false)
}

/// One `sessions` entry: seed 003's six fields, `created_at` as an imported file wrote it
/// when the engine's rendering would differ, then the entry's other keys as read.
struct ChainEntryOut<'a>(&'a ChainLink);

fn chain_entry(l: &ChainLink) -> ChainEntryOut<'_> {
    ChainEntryOut(l)
}

impl Serialize for ChainEntryOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = self.0;
        let as_read = l.as_read.as_deref();
        let extra = as_read.map_or(&[][..], |a| &a.extra[..]);
        let mut m = s.serialize_map(Some(6 + extra.len()))?;
        m.serialize_entry("session_id", &*l.session_id)?;
        match as_read.and_then(|a| a.created_at.as_deref()) {
            Some(text) => m.serialize_entry("created_at", text)?,
            None => m.serialize_entry("created_at", &chain_timestamp(l.created_at))?,
        }
        m.serialize_entry("interaction_count", &l.interaction_count)?;
        m.serialize_entry("last_prompt", &*l.last_prompt)?;
        m.serialize_entry("last_response", &*l.last_response)?;
        m.serialize_entry("metadata", &l.metadata)?;
        for (k, v) in extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// `chains/<agent>_sessions.json`: one agent's session chain, seed 003's
/// `SessionTracker._save_sessions` format.
///
/// ```json
/// {
///   "agent_id": "test-agent",
///   "current_session_id": "s2",
///   "interaction_count": 2,
///   "sessions": [
///     { "session_id": "s1", "created_at": "2025-11-08T10:30:00.000000",
///       "interaction_count": 1, "last_prompt": "P1", "last_response": "R1",
///       "metadata": null }
///   ]
/// }
/// ```
///
/// | field                | type           | meaning |
/// | -------------------- | -------------- | ------- |
/// | `agent_id`           | string         | the agent |
/// | `current_session_id` | string or null | the newest external session id; null when empty or reset |
/// | `interaction_count`  | integer        | interactions since the last reset |
/// | `sessions`           | array          | the links, oldest first, each with exactly the six fields below |
/// | `sessions[].session_id`        | string  | the external (Claude Code) session id |
/// | `sessions[].created_at`        | string  | see [`chain_timestamp`] |
/// | `sessions[].interaction_count` | integer | the chain's count after this link |
/// | `sessions[].last_prompt`       | string  | the prompt, truncated to 200 characters |
/// | `sessions[].last_response`     | string  | the response, truncated to 200 characters |
/// | `sessions[].metadata`          | any     | the link's metadata, null when none |
///
/// The engine adds no field. A chain imported from a seed 003 tracker file
/// (`session-engine import`, `crate::import::seed003`) is written back as it was read, as
/// a JSON value: `current_session_id` and the counts as the file had them (even where
/// they disagree with the links), each `created_at` in the file's own text when it
/// differs from the format above (seed 003's `datetime.isoformat()` leaves out zero
/// microseconds), prompts and responses as read (even past 200 characters), and keys
/// the tracker does not write after the known ones, at the top level and in entries, in
/// the file's order. Links added after the import are rendered as above.
pub struct ChainFile<'a>(&'a Chain);

impl<'a> ChainFile<'a> {
    /// The file's content for `chain`.
    pub fn of(chain: &'a Chain) -> ChainFile<'a> {
        ChainFile(chain)
    }

    /// Pretty-printed JSON bytes, newline-terminated.
    pub fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        pretty(self)
    }
}

impl Serialize for ChainFile<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut m = s.serialize_map(Some(4 + c.extra.len()))?;
        m.serialize_entry("agent_id", c.agent_id.as_str())?;
        m.serialize_entry("current_session_id", &c.current_session_id.as_deref())?;
        m.serialize_entry("interaction_count", &c.interaction_count)?;
        m.serialize_entry("sessions", &SeqOut(&c.sessions, chain_entry))?;
        for (k, v) in &c.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn pretty(v: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(v)?;
    out.push(b'\n');
    Ok(out)
}

/// Marker format (`projections.json`): which format wrote the files and an LSN every one
/// of them reflects at least (the watermark of the last checkpoint, written after a
/// `sync_fs` made the files durable; files may reflect later events too). Missing,
/// unreadable, foreign or ahead of the log means "rebuild everything".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct Marker {
    pub format: String,
    pub version: u32,
    pub lsn: u64,
}

pub(crate) const MARKER_FORMAT: &str = "session-engine-projections";
pub(crate) const MARKER_VERSION: u32 = 1;

impl Marker {
    pub(crate) fn new(lsn: u64) -> Marker {
        Marker {
            format: MARKER_FORMAT.into(),
            version: MARKER_VERSION,
            lsn,
        }
    }

    /// The LSN a marker file records, or `None` when it is not a valid marker.
    pub(crate) fn parse(bytes: &[u8]) -> Option<u64> {
        let m: Marker = serde_json::from_slice(bytes).ok()?;
        (m.format == MARKER_FORMAT && m.version == MARKER_VERSION).then_some(m.lsn)
    }
}

#[cfg(test)]
mod tests;
