//! The event vocabulary: everything that can happen to the engine's state.
//!
//! One command appends at most one [`Event`]; one event is one log record, so a record is
//! the unit of atomicity and of LSN numbering. Events carry their own timestamp (`at`),
//! stamped by the writer from the injectable clock, so applying them never reads a clock.
//!
//! The binary encoding of these types is the log format (see `codec` and
//! `docs/format.md`): variants and fields are only ever *appended*; changing or removing one
//! requires a new schema version and a conversion in `codec`.

mod about;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::claude::events::ClaudeEvent;
use crate::run::{Exited, RunId, RunSpec, Started, Stream};
use crate::state::{AmplihackDocuments, CommandRecord, Session, SessionConfig, Status};
use crate::types::{AgentId, JsonText, SessionId, Timestamp};

/// The pattern of every run event (event schema 3, `RunContained` 4, `RunRecovering`
/// 6), for the matches
/// that treat them all alike.
macro_rules! run_event {
    () => {
        $crate::event::EventBody::RunRequested { .. }
            | $crate::event::EventBody::RunStarted(_)
            | $crate::event::EventBody::RunOutput { .. }
            | $crate::event::EventBody::RunExited(_)
            | $crate::event::EventBody::RunSpawnFailed { .. }
            | $crate::event::EventBody::RunInterrupted { .. }
            | $crate::event::EventBody::RunContained { .. }
            | $crate::event::EventBody::RunRecovering { .. }
    };
}
pub(crate) use run_event;

/// Most levels of imports one event may hold (an import of an exported import of ...).
/// Decoding refuses deeper nesting, so crafted input can neither exhaust the stack nor make
/// replay copy a large history once per level; the import command refuses to create it.
pub const MAX_IMPORT_DEPTH: usize = 8;

std::thread_local! {
    static IMPORT_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Decodes the events of a [`EventBody::SessionImported`], counting nesting levels.
fn deserialize_imported_events<'de, D>(d: D) -> Result<Vec<Event>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Level(usize);
    impl Drop for Level {
        fn drop(&mut self) {
            IMPORT_DEPTH.set(self.0);
        }
    }
    let depth = IMPORT_DEPTH.get();
    if depth >= MAX_IMPORT_DEPTH {
        return Err(serde::de::Error::custom(format!(
            "imports are nested more than {MAX_IMPORT_DEPTH} levels deep"
        )));
    }
    let _restore = Level(depth);
    IMPORT_DEPTH.set(depth + 1);
    Vec::<Event>::deserialize(d)
}

/// One state change, as stored in one log record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When the writer accepted the command that produced the event.
    pub at: Timestamp,
    /// What happened.
    pub body: EventBody,
}

/// A new session's initial settings, as recorded in [`EventBody::SessionCreated`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionCreated {
    /// The new session's id.
    pub session: SessionId,
    /// Human-readable name.
    pub name: String,
    /// The agent the session belongs to, if any.
    pub agent: Option<String>,
    /// The working directory the session runs in, if any.
    pub working_dir: Option<String>,
    /// Inactivity timeout in seconds.
    pub timeout_secs: u64,
    /// Session configuration (seed 000's `SessionConfig`).
    pub config: SessionConfig,
    /// Initial metadata.
    pub metadata: Vec<(String, JsonText)>,
}

/// Sessions adopted from an amplihack runtime directory, as recorded in
/// [`EventBody::SessionsAdopted`]: one event for the whole directory, so an import is all
/// or nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmplihackAdoption {
    /// The directory the files were read from (as the import was given it).
    pub source: String,
    /// The sessions, in id order.
    pub sessions: Vec<AdoptedSession>,
}

/// One adopted session: the engine's view of it and the documents it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdoptedSession {
    /// Its id (the file's name, amplihack's `session_id`).
    pub session: SessionId,
    /// Its name (the registry entry's `name`).
    pub name: String,
    /// When it was created (the registry's `created_at`).
    pub created_at: Timestamp,
    /// Its last activity (`state.last_activity`).
    pub last_activity: Timestamp,
    /// Its status (see `import::amplihack` for the mapping).
    pub status: Status,
    /// Inactivity timeout in seconds (0: never; see `import::amplihack` for why an
    /// adoption sets none).
    pub timeout_secs: u64,
    /// Its configuration.
    pub config: SessionConfig,
    /// Its metadata (the registry entry's `metadata`).
    pub metadata: Vec<(String, JsonText)>,
    /// Its command history, oldest first.
    pub commands: Vec<CommandRecord>,
    /// The documents as read.
    pub documents: AmplihackDocuments,
    /// `logs/<id>.log` as read, if there was one: the session's log starts with it.
    pub log: Option<String>,
}

/// What happened. Variant order is part of the log format: append only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventBody {
    /// A session was created.
    SessionCreated(Box<SessionCreated>),
    /// An activity was recorded in an active session.
    ActivityRecorded {
        /// The session.
        session: SessionId,
        /// Activity type (`"api_call"`, `"user_input"`, ...).
        #[serde(deserialize_with = "crate::intern::deserialize_arc_str")]
        action: Arc<str>,
        /// Optional JSON details.
        details: Option<JsonText>,
    },
    /// A metadata key was set.
    MetadataSet {
        /// The session.
        session: SessionId,
        /// The key.
        key: String,
        /// The JSON value.
        value: JsonText,
    },
    /// A metadata key was removed.
    MetadataRemoved {
        /// The session.
        session: SessionId,
        /// The key.
        key: String,
    },
    /// A session was paused, resumed or ended by its user.
    StatusChanged {
        /// The session.
        session: SessionId,
        /// The new status (`Active`, `Paused` or `Ended`).
        status: Status,
    },
    /// The watchdog found sessions inactive past their timeout.
    SessionsExpired {
        /// The sessions now timed out.
        sessions: Vec<SessionId>,
    },
    /// Sessions were archived (one by request, or many by cleanup).
    SessionsArchived {
        /// The sessions now archived.
        sessions: Vec<SessionId>,
    },
    /// A command the session ran was recorded.
    CommandRecorded {
        /// The session.
        session: SessionId,
        /// The command.
        #[serde(deserialize_with = "crate::intern::deserialize_arc_str")]
        command: Arc<str>,
        /// Its arguments (JSON).
        args: Option<JsonText>,
        /// Whether it succeeded.
        success: bool,
        /// Error text when it failed.
        error: Option<String>,
        /// How long it ran, in milliseconds.
        duration_ms: u64,
    },
    /// A checkpoint of the session's restorable state was saved.
    CheckpointSaved {
        /// The session.
        session: SessionId,
        /// Optional label.
        label: Option<String>,
    },
    /// The session was returned to a checkpoint.
    CheckpointRestored {
        /// The session.
        session: SessionId,
        /// Index of the checkpoint (0-based).
        index: u32,
    },
    /// A decision was logged for the audit trail (seed 001 `log_decision`).
    DecisionLogged {
        /// The session.
        session: SessionId,
        /// What was decided.
        what: String,
        /// Why.
        why: String,
        /// Alternatives considered.
        alternatives: Option<String>,
    },
    /// An agent's conversation moved to a new external session id (seed 003).
    ChainLinked {
        /// The agent.
        agent: AgentId,
        /// The external (Claude Code) session id.
        external_id: String,
        /// The prompt, truncated to 200 characters.
        prompt: String,
        /// The response, truncated to 200 characters.
        response: String,
        /// Optional metadata.
        metadata: Option<JsonText>,
    },
    /// An agent's chain was reset.
    ChainReset {
        /// The agent.
        agent: AgentId,
    },
    /// A session was imported from an export bundle: its events, replayed under `session`.
    SessionImported {
        /// The id the session has in this engine.
        session: SessionId,
        /// The id it had where it was exported.
        original: SessionId,
        /// The exported events, in order; all concern `original`. They may hold imports
        /// themselves, at most [`MAX_IMPORT_DEPTH`] levels in all.
        #[serde(deserialize_with = "deserialize_imported_events")]
        events: Vec<Event>,
    },
    /// A session was created as a copy of another one; the copy is carried inline so the
    /// event stands on its own (in exports, and when the source changes later).
    SessionCloned {
        /// The new session's id.
        session: SessionId,
        /// The session it was copied from.
        source: SessionId,
        /// The copied session (its id and creation time are replaced on apply).
        data: Box<Session>,
    },
    /// Seed 003 tracker files (`<agent>_sessions.json`) were imported: each chain exactly
    /// as its file held it. Event schema 2 (see `codec`).
    ChainsImported {
        /// The chains, one per file, each for an agent that had no chain.
        chains: Vec<ImportedChain>,
    },
    /// Sessions were adopted from an amplihack runtime directory (event schema 2).
    SessionsAdopted(Box<AmplihackAdoption>),
    /// A run was requested, before its process exists (event schema 3, like every run
    /// event).
    RunRequested {
        /// The new run's id.
        run: RunId,
        /// The session it runs for.
        session: SessionId,
        /// What it runs, secrets redacted.
        spec: Box<RunSpec>,
    },
    /// An attempt's process started.
    RunStarted(Box<Started>),
    /// A chunk of an attempt's output (at most `run::MAX_CHUNK` bytes).
    RunOutput {
        /// The run.
        run: RunId,
        /// The attempt.
        attempt: u32,
        /// Which stream.
        stream: Stream,
        /// Where the chunk starts in the attempt's output (both streams, in arrival order).
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// An attempt's process group ended and was reaped.
    RunExited(Box<Exited>),
    /// An attempt's process could not be started.
    RunSpawnFailed {
        /// The run.
        run: RunId,
        /// The attempt.
        attempt: u32,
        /// Why.
        error: String,
        /// Whether another attempt follows.
        retry: bool,
    },
    /// A run ended with no process of its own running: reconciled at a reopen (no
    /// supervisor finished it), or cancelled while it waited for its next attempt.
    RunInterrupted {
        /// The run.
        run: RunId,
        /// What was found (and done).
        reason: String,
        /// Whether a cancel request ended it (status `cancelled`, else `interrupted`).
        cancelled: bool,
    },
    /// How an attempt is contained, recorded after its process was spawned and before
    /// `RunStarted` when a cgroup was asked for (event schema 4): in a cgroup v2 of its
    /// own, or in its process group alone, and why.
    RunContained {
        /// The run.
        run: RunId,
        /// The attempt.
        attempt: u32,
        /// The attempt's cgroup directory, when it is in one.
        cgroup: Option<String>,
        /// Whether the memory limit is the cgroup's `memory.max` (else RLIMIT_AS).
        memory_max: bool,
        /// Why it is in no cgroup, or why `memory.max` is not used for its memory limit.
        fallback: Option<String>,
    },
    /// A step of importing a Claude Code transcript: the file becomes a session, or its
    /// next bytes (event schema 4; see `claude::events`).
    ClaudeTranscript(Box<ClaudeEvent>),
    /// One of seed 002's agent types was activated, deactivated or restarted in a session
    /// (event schema 4; see `state::agents`).
    AgentChanged {
        /// The session.
        session: SessionId,
        /// The agent type, one of [`crate::state::AGENT_TYPES`] (upper case).
        agent_type: String,
        /// What happened to it.
        action: AgentAction,
        /// The configuration given with an activation or a restart (JSON), if any.
        config: Option<JsonText>,
    },
    /// A run no supervisor finished, found at a writable open, that is safe to repeat
    /// (its policy says so, it has attempts left, its environment held no secret and no
    /// cancel was asked for it): it waits, `recovering`, for its next attempt, which
    /// `SessionManager::resume_runs` starts (event schema 6).
    RunRecovering {
        /// The run.
        run: RunId,
        /// What was found (and done), and that it will be repeated.
        reason: String,
    },
}

/// What an [`EventBody::AgentChanged`] did to a session's agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentAction {
    /// It became active.
    Activated,
    /// It became inactive.
    Deactivated,
    /// An active agent was restarted (it stays active).
    Restarted,
}

impl AgentAction {
    /// The action's name (`"activated"`, `"deactivated"`, `"restarted"`).
    pub fn name(self) -> &'static str {
        match self {
            AgentAction::Activated => "activated",
            AgentAction::Deactivated => "deactivated",
            AgentAction::Restarted => "restarted",
        }
    }
}

/// The top-level keys seed 003's `_save_sessions` writes, in its order.
pub const CHAIN_FILE_KEYS: [&str; 4] = [
    "agent_id",
    "current_session_id",
    "interaction_count",
    "sessions",
];

/// The keys of one `sessions` entry (`SessionInfo.to_dict()`), in seed 003's order.
pub const CHAIN_ENTRY_KEYS: [&str; 6] = [
    "session_id",
    "created_at",
    "interaction_count",
    "last_prompt",
    "last_response",
    "metadata",
];

/// One imported seed 003 tracker file, as read: every field the file held, including
/// keys seed 003 does not write, so that the chain file the engine renders is equal, as a
/// JSON value, to the file that was read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportedChain {
    /// `agent_id` (also the file's name, `<agent>_sessions.json`).
    pub agent: AgentId,
    /// `current_session_id`: kept as read, even when it is not the newest link's id.
    pub current_session_id: Option<String>,
    /// `interaction_count`: kept as read, even when it is not the newest link's count.
    pub interaction_count: u64,
    /// `sessions`, oldest first.
    pub links: Vec<ImportedLink>,
    /// The file's top-level keys beyond seed 003's four, in file order.
    pub extra: Vec<(String, JsonText)>,
}

/// One entry of an imported chain's `sessions` (seed 003 `SessionInfo`), as read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportedLink {
    /// `session_id`.
    pub session_id: String,
    /// `created_at`, parsed (a time without an offset is taken as UTC, as the engine
    /// writes them).
    pub created_at: Timestamp,
    /// `created_at` exactly as the file wrote it, when the engine's rendering of
    /// `created_at` would differ (`datetime.isoformat()` leaves out zero microseconds).
    pub created_at_text: Option<String>,
    /// `interaction_count`.
    pub interaction_count: u64,
    /// `last_prompt`, as read (not truncated again).
    pub last_prompt: String,
    /// `last_response`, as read.
    pub last_response: String,
    /// `metadata`; `None` for `null`.
    pub metadata: Option<JsonText>,
    /// The entry's keys beyond seed 003's six, in file order.
    pub extra: Vec<(String, JsonText)>,
}
