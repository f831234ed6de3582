//! Commands: what callers ask for, and their validation against the current state.
//!
//! [`decide`] is the only place that says yes or no. It reads the state and the time the
//! writer stamped, and returns the one event to append (or none, for a command with
//! nothing to do) plus what to answer. A refused command returns a typed error and changes
//! nothing. Every event `decide` returns is guaranteed to apply to the state it was
//! decided against; the writer asserts it.

mod agents;
mod chain;
mod claude;
mod history;
mod lifecycle;
mod runs;
mod transfer;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Event, EventBody, ImportedChain};
use crate::state::{Session, SessionConfig, State, Status};
use crate::types::{AgentId, JsonText, Lsn, SessionId, Timestamp, validate_text};

/// Longest name, action, label, key or command, in bytes.
pub const MAX_SHORT_TEXT: usize = 1024;
/// Longest free text (decision fields, error text, working directory), in bytes.
pub const MAX_LONG_TEXT: usize = 64 * 1024;
/// Most metadata keys given at creation.
pub const MAX_INITIAL_METADATA: usize = 1024;
/// Longest timeout, in seconds (100 years).
pub const MAX_TIMEOUT_SECS: u64 = 100 * 365 * 24 * 3600;
/// Most events one import may carry.
pub const MAX_IMPORT_EVENTS: usize = 1_000_000;

/// Settings of a new session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewSession {
    /// The id to use; a UUID v7 is generated when `None`.
    pub id: Option<SessionId>,
    /// Human-readable name (defaults to the id).
    pub name: Option<String>,
    /// Inactivity timeout in seconds (seed 001 default: 3600; 0 never times out).
    pub timeout_secs: u64,
    /// The agent the session belongs to.
    pub agent: Option<String>,
    /// The working directory.
    pub working_dir: Option<String>,
    /// Configuration.
    pub config: SessionConfig,
    /// Initial metadata.
    pub metadata: Vec<(String, JsonText)>,
}

impl Default for NewSession {
    fn default() -> Self {
        NewSession {
            id: None,
            name: None,
            timeout_secs: 3600,
            agent: None,
            working_dir: None,
            config: SessionConfig::default(),
            metadata: Vec::new(),
        }
    }
}

/// A request to change the state.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Create a session.
    CreateSession(Box<NewSession>),
    /// Record an activity in an active session.
    RecordActivity {
        /// The session.
        session: SessionId,
        /// Activity type.
        action: String,
        /// Optional JSON details.
        details: Option<JsonText>,
    },
    /// Set a metadata key.
    SetMetadata {
        /// The session.
        session: SessionId,
        /// The key.
        key: String,
        /// The value.
        value: JsonText,
    },
    /// Remove a metadata key.
    RemoveMetadata {
        /// The session.
        session: SessionId,
        /// The key.
        key: String,
    },
    /// Pause an active session.
    Pause(SessionId),
    /// Make a paused, ended, timed-out or archived session active again.
    Resume(SessionId),
    /// End a session.
    End(SessionId),
    /// Archive a session.
    Archive(SessionId),
    /// Archive every unarchived session whose last activity is older than the given age.
    CleanupOldSessions {
        /// Age in days.
        max_age_days: u32,
    },
    /// Record the expiry of every active session past its timeout (the watchdog's tick).
    ExpireIdle,
    /// Record a command the session ran.
    RecordCommand {
        /// The session.
        session: SessionId,
        /// The command.
        command: String,
        /// Its arguments.
        args: Option<JsonText>,
        /// Whether it succeeded.
        success: bool,
        /// Error text.
        error: Option<String>,
        /// Duration in milliseconds.
        duration_ms: u64,
    },
    /// Save a checkpoint.
    SaveCheckpoint {
        /// The session.
        session: SessionId,
        /// Optional label.
        label: Option<String>,
    },
    /// Restore a checkpoint (the last one when `index` is `None`).
    RestoreCheckpoint {
        /// The session.
        session: SessionId,
        /// Checkpoint index.
        index: Option<u32>,
    },
    /// Log a decision.
    LogDecision {
        /// The session.
        session: SessionId,
        /// What.
        what: String,
        /// Why.
        why: String,
        /// Alternatives.
        alternatives: Option<String>,
    },
    /// Add a link to an agent's chain.
    LinkChain {
        /// The agent.
        agent: AgentId,
        /// The new external session id.
        external_id: String,
        /// The prompt (truncated to 200 characters).
        prompt: String,
        /// The response (truncated to 200 characters).
        response: String,
        /// Optional metadata.
        metadata: Option<JsonText>,
    },
    /// Reset an agent's chain.
    ResetChain(AgentId),
    /// Import a session from exported events.
    Import {
        /// The id the session had where it was exported.
        original: SessionId,
        /// Its events, in order.
        events: Vec<Event>,
    },
    /// Clone a session.
    Clone {
        /// The session to copy.
        source: SessionId,
        /// The new id (generated when `None`).
        new_id: Option<SessionId>,
    },
    /// Import seed 003 tracker files: one chain per file, each for an agent that has no
    /// chain yet, all or none.
    ImportChains {
        /// The chains as read (see `crate::import::seed003`).
        chains: Vec<ImportedChain>,
    },
    /// Adopt the sessions of an amplihack runtime directory (as `import::amplihack` reads
    /// it); refused whole when any of their ids is taken.
    AdoptAmplihack(Box<crate::event::AmplihackAdoption>),
    /// Requests a supervised run for a session (recorded before its process exists; the
    /// spec's secrets are redacted in the event). Answers [`Outcome::Run`].
    RequestRun {
        /// The session.
        session: SessionId,
        /// What to run.
        spec: Box<crate::run::RunSpec>,
    },
    /// Records a later step of a run (started, output, exited, spawn failed,
    /// interrupted): refused unless it fits the run's status.
    RecordRunStep(Box<EventBody>),
    /// A step of importing a Claude Code transcript (see `claude::import`): open a
    /// transcript as a new session, or append its next piece, which must start where the
    /// transcript's imported bytes end.
    Claude(Box<crate::claude::events::ClaudeEvent>),
    /// Activate, deactivate or restart one of seed 002's agent types in a session (not
    /// ended, archived or timed out). Activating an active agent, or deactivating or
    /// restarting one that is not active, is refused. Answers [`Outcome::Session`].
    ChangeAgent {
        /// The session.
        session: SessionId,
        /// The agent type (any case; see [`crate::state::AGENT_TYPES`]).
        agent_type: String,
        /// What to do.
        action: crate::event::AgentAction,
        /// A configuration for an activation or a restart.
        config: Option<JsonText>,
    },
}

impl Command {
    /// The command's name, as in the JSON-lines protocol (`"create"`, `"activity"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateSession(_) => "create",
            Command::RecordActivity { .. } => "activity",
            Command::SetMetadata { .. } => "meta",
            Command::RemoveMetadata { .. } => "unmeta",
            Command::Pause(_) => "pause",
            Command::Resume(_) => "resume",
            Command::End(_) => "end",
            Command::Archive(_) => "archive",
            Command::CleanupOldSessions { .. } => "cleanup",
            Command::ExpireIdle => "expire",
            Command::RecordCommand { .. } => "command",
            Command::SaveCheckpoint { .. } => "checkpoint",
            Command::RestoreCheckpoint { .. } => "restore",
            Command::LogDecision { .. } => "decision",
            Command::LinkChain { .. } => "chain_link",
            Command::ResetChain(_) => "chain_reset",
            Command::Import { .. } => "import",
            Command::Clone { .. } => "clone",
            Command::ImportChains { .. } => "chain_import",
            Command::AdoptAmplihack(_) => "adopt",
            Command::RequestRun { .. } => "run",
            Command::RecordRunStep(_) => "run_step",
            Command::Claude(_) => "claude",
            Command::ChangeAgent { .. } => "agent",
        }
    }
}

/// What a command produced, beyond its LSN.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Nothing to report.
    Done,
    /// A session was created, imported or cloned under this id.
    Session(SessionId),
    /// A checkpoint was saved or restored at this index.
    Checkpoint(u32),
    /// These sessions were archived or expired.
    Sessions(Vec<SessionId>),
    /// These agents' chains were imported.
    Chains(Vec<AgentId>),
    /// A run was requested under this id.
    Run(crate::run::RunId),
}

/// The answer to an accepted command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// LSN of the command's event, or — for a command with nothing to do — the last LSN
    /// when it was decided.
    pub lsn: Lsn,
    /// Whether an event was appended.
    pub appended: bool,
    /// What the command produced.
    pub outcome: Outcome,
}

fn session<'a>(state: &'a State, id: &SessionId) -> Result<&'a Arc<Session>> {
    state
        .session(id)
        .ok_or_else(|| Error::not_found("session", id))
}

fn refuse(id: &SessionId, op: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidState {
        session: id.to_string(),
        op,
        reason: reason.into(),
    }
}

fn require_active(s: &Session, now: Timestamp, op: &'static str) -> Result<()> {
    if s.body.status != Status::Active {
        return Err(refuse(&s.id, op, format!("it is {}", s.body.status)));
    }
    if s.is_expired(now) {
        return Err(refuse(
            &s.id,
            op,
            format!(
                "it timed out (no activity for more than {} seconds)",
                s.timeout_secs
            ),
        ));
    }
    Ok(())
}

fn require_not_archived(s: &Session, op: &'static str) -> Result<()> {
    if s.body.status == Status::Archived {
        Err(refuse(&s.id, op, "it is archived"))
    } else {
        Ok(())
    }
}

pub(crate) fn short(field: &'static str, s: &str) -> Result<()> {
    validate_text(field, s, MAX_SHORT_TEXT)
}

fn non_empty_short(field: &'static str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    short(field, s)
}

pub(crate) fn long(field: &'static str, s: &str) -> Result<()> {
    validate_text(field, s, MAX_LONG_TEXT)
}

/// The limits on a session's config: every interval a number of seconds within
/// `MAX_TIMEOUT_SECS`, at most 1000 retries.
pub(crate) fn validate_config(c: &SessionConfig) -> Result<()> {
    for (field, v) in [
        ("config.timeout", c.timeout),
        ("config.retry_delay", c.retry_delay),
        ("config.heartbeat_interval", c.heartbeat_interval),
        ("config.auto_save_interval", c.auto_save_interval),
    ] {
        if !v.is_finite() || v < 0.0 || v > MAX_TIMEOUT_SECS as f64 {
            return Err(Error::invalid(
                field,
                format!("{v} is not a number of seconds between 0 and {MAX_TIMEOUT_SECS}"),
            ));
        }
    }
    if c.max_retries > 1000 {
        return Err(Error::invalid("config.max_retries", "must be at most 1000"));
    }
    Ok(())
}

/// What [`decide`] returns: the event body to append (if any) and the outcome.
pub type Decision = Result<(Option<EventBody>, Outcome)>;

pub(crate) use chain::check_imported_chain;
pub(crate) use transfer::check_adopted;

/// Validates `cmd` against `state` at time `now`. Returns the event body to append (if any)
/// and the outcome to answer with. Each command family decides in its own module:
/// `lifecycle` (sessions, metadata, status, archiving, expiry), `history` (commands run,
/// checkpoints, decisions), `chain` (agent chains and their import), `transfer` (bundles,
/// clones, amplihack adoption).
pub fn decide(state: &State, cmd: Command, now: Timestamp) -> Decision {
    match cmd {
        Command::CreateSession(new) => lifecycle::create(state, *new),
        Command::RecordActivity {
            session: id,
            action,
            details,
        } => lifecycle::record_activity(state, now, id, action, details),
        Command::SetMetadata {
            session: id,
            key,
            value,
        } => lifecycle::set_metadata(state, id, key, value),
        Command::RemoveMetadata { session: id, key } => lifecycle::remove_metadata(state, id, key),
        Command::Pause(id) => lifecycle::status_change(state, id, Status::Paused, "pause"),
        Command::Resume(id) => lifecycle::status_change(state, id, Status::Active, "resume"),
        Command::End(id) => lifecycle::status_change(state, id, Status::Ended, "end"),
        Command::Archive(id) => lifecycle::archive(state, id),
        Command::CleanupOldSessions { max_age_days } => {
            lifecycle::cleanup_old_sessions(state, now, max_age_days)
        }
        Command::ExpireIdle => lifecycle::expire_idle(state, now),
        Command::RecordCommand {
            session: id,
            command,
            args,
            success,
            error,
            duration_ms,
        } => history::record_command(state, now, id, command, args, success, error, duration_ms),
        Command::SaveCheckpoint { session: id, label } => {
            history::save_checkpoint(state, id, label)
        }
        Command::RestoreCheckpoint { session: id, index } => {
            history::restore_checkpoint(state, id, index)
        }
        Command::LogDecision {
            session: id,
            what,
            why,
            alternatives,
        } => history::log_decision(state, now, id, what, why, alternatives),
        Command::LinkChain {
            agent,
            external_id,
            prompt,
            response,
            metadata,
        } => chain::link(state, agent, external_id, prompt, response, metadata),
        Command::ResetChain(agent) => Ok((Some(EventBody::ChainReset { agent }), Outcome::Done)),
        Command::Import { original, events } => {
            transfer::import_bundle(state, now, original, events)
        }
        Command::AdoptAmplihack(adoption) => transfer::adopt_amplihack(state, adoption),
        Command::Clone { source, new_id } => transfer::clone_session(state, source, new_id),
        Command::ImportChains { chains } => chain::import(state, chains),
        Command::RequestRun { session, spec } => runs::request(state, session, spec),
        Command::RecordRunStep(body) => runs::record_step(state, body, now),
        Command::Claude(e) => claude::decide(state, e),
        Command::ChangeAgent {
            session,
            agent_type,
            action,
            config,
        } => agents::change(state, session, agent_type, action, config),
    }
}
