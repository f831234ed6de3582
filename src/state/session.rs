//! One session's state: settings, status, metadata, activity log, command history,
//! decisions and checkpoints.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ApplyError;
use crate::event::{AdoptedSession, SessionCreated};
use crate::types::{JsonText, Lsn, SessionId, Timestamp};

/// Lifecycle status. Seed 001's statuses plus `archived` and `timed_out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepting activity.
    Active,
    /// Paused by its user; `resume` makes it active again.
    Paused,
    /// Ended by its user.
    Ended,
    /// Moved to the archive.
    Archived,
    /// Inactive for longer than its timeout, as recorded by the watchdog.
    TimedOut,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 5] = [
        Status::Active,
        Status::Paused,
        Status::Ended,
        Status::Archived,
        Status::TimedOut,
    ];

    /// The name used in JSON files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Ended => "ended",
            Status::Archived => "archived",
            Status::TimedOut => "timed_out",
        }
    }

    /// Parses [`Status::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log level of a session's own logging (seed 000's `SessionConfig.log_level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Problems that did not stop the work.
    Warning,
    /// Failures.
    Error,
}

impl LogLevel {
    /// Parses `DEBUG`, `INFO`, `WARNING` (or `WARN`), `ERROR`, in any case.
    pub fn parse(s: &str) -> Option<LogLevel> {
        match s.to_ascii_uppercase().as_str() {
            "DEBUG" => Some(LogLevel::Debug),
            "INFO" => Some(LogLevel::Info),
            "WARNING" | "WARN" => Some(LogLevel::Warning),
            "ERROR" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// Seed 000's `SessionConfig`. Durations are in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// Command timeout.
    pub timeout: f64,
    /// Retry attempts for a failed command.
    pub max_retries: u32,
    /// Initial delay between retries.
    pub retry_delay: f64,
    /// Health check interval.
    pub heartbeat_interval: f64,
    /// Whether the session's own log is written.
    pub enable_logging: bool,
    /// Log level.
    pub log_level: LogLevel,
    /// Auto-save frequency.
    pub auto_save_interval: f64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            timeout: 300.0,
            max_retries: 3,
            retry_delay: 1.0,
            heartbeat_interval: 30.0,
            enable_logging: true,
            log_level: LogLevel::Info,
            auto_save_interval: 60.0,
        }
    }
}

/// One recorded activity (seed 001's `activity_log` entry).
///
/// In the state an activity keeps its action and time, and where its details are: in the
/// log ([`Details::InLog`], the activity recorded by an `activity_recorded` event) or, when
/// the state got them some other way, in memory ([`Details::Inline`]). An activity read
/// through [`crate::history::History`] always has its details resolved (never `InLog`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Activity type.
    #[serde(deserialize_with = "crate::intern::deserialize_arc_str")]
    pub action: Arc<str>,
    /// When it was recorded.
    pub timestamp: Timestamp,
    /// Its JSON details, or where they are.
    pub details: Details,
}

/// An activity's details: none, held in memory, or in the log (state schema 5).
///
/// Encoded (bincode) as `Option<JsonText>` is for `None` and `Inline` (variant 0 and 1,
/// one byte each, then the text), so a state without `InLog` details encodes as state
/// schemas 1 to 4 did, byte for byte, and their snapshots decode into `None` / `Inline`.
/// `InLog` is variant 2 and the LSN, which only state schema 5 (and event schema 7, a
/// clone's session) may hold. In JSON (human-readable forms) `None` is `null` and
/// `Inline` the value; `InLog` has no JSON form (serialising it is an error: resolve the
/// details first, e.g. through [`crate::history::History`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Details {
    /// No details were given.
    #[default]
    None,
    /// The details, in memory.
    Inline(JsonText),
    /// The details are those of the `activity_recorded` event at this LSN.
    InLog(Lsn),
}

impl Details {
    /// The details when they are in memory: `None` for no details and for details still
    /// in the log (see [`Details::is_in_log`]); an activity read through
    /// [`crate::history::History`] never has them in the log.
    pub fn text(&self) -> Option<&JsonText> {
        match self {
            Details::Inline(t) => Some(t),
            Details::None | Details::InLog(_) => None,
        }
    }

    /// Whether the details are still in the log.
    pub fn is_in_log(&self) -> bool {
        matches!(self, Details::InLog(_))
    }

    /// `None` or `Inline`, from an optional value.
    pub fn from_option(d: Option<JsonText>) -> Details {
        d.map_or(Details::None, Details::Inline)
    }
}

/// The binary form of [`Details`] (see there).
#[derive(Serialize, Deserialize)]
enum DetailsBin {
    None,
    Inline(JsonText),
    InLog(Lsn),
}

impl Serialize for Details {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return match self {
                Details::None => s.serialize_none(),
                Details::Inline(t) => s.serialize_some(t),
                Details::InLog(lsn) => Err(serde::ser::Error::custom(format!(
                    "the details of an activity are in the log (LSN {lsn}): resolve them first"
                ))),
            };
        }
        match self {
            Details::None => s.serialize_unit_variant("Details", 0, "None"),
            Details::Inline(t) => s.serialize_newtype_variant("Details", 1, "Inline", t),
            Details::InLog(l) => s.serialize_newtype_variant("Details", 2, "InLog", l),
        }
    }
}

thread_local! {
    /// Whether the binary decoding running on this thread is of a snapshot's state, the
    /// one place a log position ([`Details::InLog`]) may be (see [`decoding_state`]).
    static IN_LOG_ALLOWED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (the decoding of a snapshot's state) with [`Details::InLog`] accepted. Any
/// other binary decoding (an event, an event inside an imported bundle) refuses one: the
/// details an event carries are its own, never a pointer into some log.
pub(crate) fn decoding_state<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_LOG_ALLOWED.set(self.0);
        }
    }
    let _restore = Restore(IN_LOG_ALLOWED.replace(true));
    f()
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            return Ok(Details::from_option(Option::<JsonText>::deserialize(d)?));
        }
        Ok(match DetailsBin::deserialize(d)? {
            DetailsBin::None => Details::None,
            DetailsBin::Inline(t) => Details::Inline(t),
            DetailsBin::InLog(l) if IN_LOG_ALLOWED.get() => Details::InLog(l),
            DetailsBin::InLog(l) => {
                return Err(serde::de::Error::custom(format!(
                    "an activity's details given by log position (LSN {l}) outside a \
                     snapshot's state"
                )));
            }
        })
    }
}

/// One recorded command (seed 000's command history entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The command.
    #[serde(deserialize_with = "crate::intern::deserialize_arc_str")]
    pub command: Arc<str>,
    /// Its arguments.
    pub args: Option<JsonText>,
    /// When it was recorded.
    pub timestamp: Timestamp,
    /// Whether it succeeded.
    pub success: bool,
    /// Error text when it failed.
    pub error: Option<Arc<str>>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

/// One logged decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What was decided.
    pub what: Arc<str>,
    /// Why.
    pub why: Arc<str>,
    /// Alternatives considered.
    pub alternatives: Option<Arc<str>>,
    /// When.
    pub timestamp: Timestamp,
}

/// The part of a session a checkpoint saves and a restore brings back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionBody {
    /// Lifecycle status.
    pub status: Status,
    /// Custom metadata.
    #[serde(deserialize_with = "super::bounded::ord_map")]
    pub metadata: imbl::OrdMap<String, JsonText>,
    /// Recorded activities, oldest first.
    ///
    /// The entries of the three logs are reference-counted: `imbl::Vector` stores its
    /// elements in chunks of 64 slots, allocated whole once a vector outgrows its inline
    /// space, so with the 40-byte entries themselves in the slots a session of ten
    /// activities held a 2.5 KiB chunk, more than its log records. With 8-byte pointers the
    /// chunk is 512 bytes, a handful of entries fit inline with no chunk at all, and a
    /// writer batch that copies a shared chunk copies pointers. Serialised, an `Arc<T>` is
    /// its `T`, so snapshots are unchanged.
    #[serde(deserialize_with = "super::bounded::vector")]
    pub activity_log: imbl::Vector<Arc<Activity>>,
    /// Recorded commands, oldest first.
    #[serde(deserialize_with = "super::bounded::vector")]
    pub commands: imbl::Vector<Arc<CommandRecord>>,
    /// Logged decisions, oldest first.
    #[serde(deserialize_with = "super::bounded::vector")]
    pub decisions: imbl::Vector<Arc<Decision>>,
    /// Number of failed commands.
    pub command_errors: u64,
}

impl SessionBody {
    /// How many activities it holds. Counts stay in the state whatever holds the items
    /// themselves (read those through [`crate::history::History`]).
    pub fn activity_count(&self) -> usize {
        self.activity_log.len()
    }

    /// Whether an activity's details are in the log (state schema 5).
    pub fn has_details_in_log(&self) -> bool {
        self.activity_log.iter().any(|a| a.details.is_in_log())
    }

    /// How many commands it holds.
    pub fn command_count(&self) -> usize {
        self.commands.len()
    }

    /// How many decisions it holds.
    pub fn decision_count(&self) -> usize {
        self.decisions.len()
    }
}

/// A saved checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// 0-based index in the session's checkpoint list.
    pub index: u32,
    /// Optional label.
    pub label: Option<Arc<str>>,
    /// When it was saved.
    pub created_at: Timestamp,
    /// The saved state.
    pub body: SessionBody,
}

/// Where a session came from when it was not created directly. Variant order is part of
/// the snapshot format: append only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Imported from an export bundle.
    Imported {
        /// Its id in the engine it was exported from.
        original: SessionId,
    },
    /// Cloned from another session.
    Cloned {
        /// The session it was copied from.
        source: SessionId,
    },
    /// Adopted from an amplihack runtime directory (`import` of the directory): the
    /// documents as they were read, so that the `amplihack` projection writes them back
    /// unchanged until the session changes, and keeps what the engine does not model
    /// (unknown keys, exact floats) after. Added in state schema 2.
    Adopted(Box<Adoption>),
}

/// The files an amplihack session was adopted from, as read (compact JSON text keeps
/// every key and every number exactly: Python's floats are `f64`s, and integers past 64
/// bits are refused at import).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmplihackDocuments {
    /// `sessions/<id>.json` (or the archive file), `None` when only the registry named
    /// the session.
    pub file: Option<JsonText>,
    /// The `<ts>` of `sessions/archive/<id>_<ts>.json` when the file was in the archive.
    pub archive_ts: Option<i64>,
    /// The session's entry in `sessions/registry.json`, if it had one.
    pub registry_entry: Option<JsonText>,
    /// `sessions/registry.json` without its `sessions` (its `updated_at` and any keys
    /// amplihack does not write), if there was a registry.
    pub registry_rest: Option<JsonText>,
}

/// What an adopted session keeps of its origin (see [`Origin::Adopted`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    /// The documents as read.
    pub documents: AmplihackDocuments,
    /// The session's `last_activity` when it was adopted (the document's exact float is
    /// written back while it has not moved).
    pub last_activity: Timestamp,
    /// How many commands the adoption brought (the entries of the document's
    /// `command_history`, written back as they were).
    pub commands: u64,
    /// How many of them had failed.
    pub command_errors: u64,
    /// Whether its log (`logs/<id>.log`) was adopted too.
    pub log: bool,
    /// No event has changed the session since it was adopted: its documents are written
    /// back exactly as read.
    pub pristine: bool,
}

/// A session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Unique id.
    pub id: SessionId,
    /// Human-readable name.
    pub name: Arc<str>,
    /// The agent it belongs to.
    pub agent: Option<Arc<str>>,
    /// Its working directory.
    pub working_dir: Option<Arc<str>>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last activity, command, decision, restore or resume.
    pub last_activity: Timestamp,
    /// Inactivity timeout in seconds (0: never times out).
    pub timeout_secs: u64,
    /// Configuration.
    pub config: SessionConfig,
    /// Status, metadata, logs and counters.
    pub body: SessionBody,
    /// Saved checkpoints.
    #[serde(deserialize_with = "super::bounded::vector")]
    pub checkpoints: imbl::Vector<Checkpoint>,
    /// Import or clone origin.
    pub origin: Option<Origin>,
}

/// Seed 000's `get_statistics()`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Statistics {
    /// Seconds since creation.
    pub uptime_secs: f64,
    /// Activities recorded.
    pub activity_count: u64,
    /// Commands recorded.
    pub command_count: u64,
    /// Failed commands.
    pub error_count: u64,
    /// Failed commands / commands (0 when no command ran).
    pub error_rate: f64,
    /// Decisions logged.
    pub decision_count: u64,
    /// Checkpoints saved.
    pub checkpoint_count: u64,
    /// Metadata keys.
    pub metadata_count: u64,
    /// Seconds since the last activity.
    pub secs_since_activity: f64,
    /// Current status.
    pub status: Status,
    /// Whether the session is active right now.
    pub is_active: bool,
}

impl Session {
    pub(super) fn created(c: &SessionCreated, at: Timestamp) -> Session {
        Session {
            id: c.session.clone(),
            name: Arc::from(c.name.as_str()),
            agent: c.agent.as_deref().map(Arc::from),
            working_dir: c.working_dir.as_deref().map(Arc::from),
            created_at: at,
            last_activity: at,
            timeout_secs: c.timeout_secs,
            config: c.config.clone(),
            body: SessionBody {
                status: Status::Active,
                metadata: c.metadata.iter().cloned().collect(),
                activity_log: imbl::Vector::new(),
                commands: imbl::Vector::new(),
                decisions: imbl::Vector::new(),
                command_errors: 0,
            },
            checkpoints: imbl::Vector::new(),
            origin: None,
        }
    }

    /// A session adopted from another tool's files (see [`Origin::Adopted`]). Its history
    /// starts at the adoption: what the files say happened before is its state, not
    /// events of its own.
    pub(super) fn adopted(a: &AdoptedSession, _at: Timestamp) -> Session {
        let commands: imbl::Vector<Arc<CommandRecord>> =
            a.commands.iter().cloned().map(Arc::new).collect();
        let command_errors = a.commands.iter().filter(|c| !c.success).count() as u64;
        Session {
            id: a.session.clone(),
            name: Arc::from(a.name.as_str()),
            agent: None,
            working_dir: None,
            created_at: a.created_at,
            last_activity: a.last_activity,
            timeout_secs: a.timeout_secs,
            config: a.config.clone(),
            body: SessionBody {
                status: a.status,
                metadata: a.metadata.iter().cloned().collect(),
                activity_log: imbl::Vector::new(),
                commands,
                decisions: imbl::Vector::new(),
                command_errors,
            },
            checkpoints: imbl::Vector::new(),
            origin: Some(Origin::Adopted(Box::new(Adoption {
                documents: a.documents.clone(),
                last_activity: a.last_activity,
                commands: a.commands.len() as u64,
                command_errors,
                log: a.log.is_some(),
                pristine: true,
            }))),
        }
    }

    /// Whether an activity's details, in its body or a checkpoint's, are in the log.
    pub fn has_details_in_log(&self) -> bool {
        self.body.has_details_in_log()
            || self.checkpoints.iter().any(|c| c.body.has_details_in_log())
    }

    /// The adoption the session came from, if it was adopted.
    pub fn adoption(&self) -> Option<&Adoption> {
        match &self.origin {
            Some(Origin::Adopted(a)) => Some(a),
            _ => None,
        }
    }

    /// The session's status.
    pub fn status(&self) -> Status {
        self.body.status
    }

    /// When an active session times out, if it can.
    pub fn expires_at(&self) -> Option<Timestamp> {
        (self.timeout_secs > 0).then(|| self.last_activity.plus_secs(self.timeout_secs))
    }

    /// Whether the session's inactivity timeout has passed at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.body.status == Status::Active && self.expires_at().is_some_and(|t| now >= t)
    }

    /// Seed 001's `is_active()`: active and not timed out at `now`. Right even between
    /// watchdog ticks, because it compares with the clock rather than waiting for the
    /// expiry event.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.body.status == Status::Active && !self.is_expired(now)
    }

    /// A metadata value.
    pub fn get_metadata(&self, key: &str) -> Option<&JsonText> {
        self.body.metadata.get(key)
    }

    /// The last `limit` commands, oldest first (seed 000's `get_command_history`).
    pub fn command_history(&self, limit: usize) -> Vec<CommandRecord> {
        let n = self.body.commands.len();
        self.body
            .commands
            .iter()
            .skip(n.saturating_sub(limit))
            .map(|c| CommandRecord::clone(c))
            .collect()
    }

    /// Seed 000's `get_statistics()` at `now`.
    pub fn statistics(&self, now: Timestamp) -> Statistics {
        let commands = self.body.commands.len() as u64;
        Statistics {
            uptime_secs: now.secs_since(self.created_at).max(0.0),
            activity_count: self.body.activity_log.len() as u64,
            command_count: commands,
            error_count: self.body.command_errors,
            error_rate: if commands == 0 {
                0.0
            } else {
                self.body.command_errors as f64 / commands as f64
            },
            decision_count: self.body.decisions.len() as u64,
            checkpoint_count: self.checkpoints.len() as u64,
            metadata_count: self.body.metadata.len() as u64,
            secs_since_activity: now.secs_since(self.last_activity).max(0.0),
            status: self.body.status,
            is_active: self.is_active(now),
        }
    }

    pub(super) fn require_status(&self, allowed: &[Status], op: &str) -> Result<(), ApplyError> {
        if allowed.contains(&self.body.status) {
            Ok(())
        } else {
            Err(ApplyError(format!(
                "cannot {op} session {}: it is {}",
                self.id, self.body.status
            )))
        }
    }

    pub(super) fn require_not_archived(&self, op: &str) -> Result<(), ApplyError> {
        if self.body.status == Status::Archived {
            Err(ApplyError(format!(
                "cannot {op} session {}: it is archived",
                self.id
            )))
        } else {
            Ok(())
        }
    }

    /// The status transitions a user may ask for: pause an active session; resume a
    /// paused, ended, timed-out or archived one; end one that is active, paused or timed out.
    pub fn check_transition(&self, to: Status) -> Result<(), String> {
        let from = self.body.status;
        let ok = match to {
            Status::Paused => from == Status::Active,
            Status::Active => from != Status::Active,
            Status::Ended => matches!(from, Status::Active | Status::Paused | Status::TimedOut),
            Status::Archived | Status::TimedOut => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("it is {from}"))
        }
    }

    pub(super) fn change_status(&mut self, to: Status, at: Timestamp) -> Result<(), ApplyError> {
        self.check_transition(to)
            .map_err(|why| ApplyError(format!("cannot make session {} {to}: {why}", self.id)))?;
        self.body.status = to;
        if to == Status::Active {
            // Resuming is activity: without this a timed-out session would expire again at once.
            self.last_activity = at;
        }
        Ok(())
    }
}
