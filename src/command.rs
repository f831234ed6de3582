//! Commands: what callers ask for, and their validation against the current state.
//!
//! [`decide`] is the only place that says yes or no. It reads the state and the time the
//! writer stamped, and returns the one event to append (or none, for a command with
//! nothing to do) plus what to answer. A refused command returns a typed error and changes
//! nothing. Every event `decide` returns is guaranteed to apply to the state it was
//! decided against; the writer asserts it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{
    CHAIN_ENTRY_KEYS, CHAIN_FILE_KEYS, Event, EventBody, ImportedChain, SessionCreated,
};
use crate::state::{Session, SessionConfig, State, Status, chain::truncate_chain_text};
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

fn short(field: &'static str, s: &str) -> Result<()> {
    validate_text(field, s, MAX_SHORT_TEXT)
}

fn non_empty_short(field: &'static str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    short(field, s)
}

fn long(field: &'static str, s: &str) -> Result<()> {
    validate_text(field, s, MAX_LONG_TEXT)
}

fn validate_config(c: &SessionConfig) -> Result<()> {
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

/// The limits every session's fields obey, applied to an adopted one.
pub(crate) fn check_adopted(a: &crate::event::AdoptedSession) -> Result<()> {
    short("name", &a.name)?;
    if a.timeout_secs > MAX_TIMEOUT_SECS {
        return Err(Error::invalid(
            "timeout",
            format!(
                "{} seconds is over the limit of {MAX_TIMEOUT_SECS}",
                a.timeout_secs
            ),
        ));
    }
    validate_config(&a.config)?;
    if a.metadata.len() > MAX_INITIAL_METADATA {
        return Err(Error::invalid(
            "metadata",
            format!("more than {MAX_INITIAL_METADATA} keys"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in &a.metadata {
        non_empty_short("metadata key", k)?;
        if !seen.insert(k) {
            return Err(Error::invalid("metadata key", format!("{k:?} given twice")));
        }
    }
    if a.commands.len() > MAX_IMPORT_EVENTS {
        return Err(Error::invalid(
            "command history",
            format!("more than {MAX_IMPORT_EVENTS} commands"),
        ));
    }
    for c in &a.commands {
        short("command", &c.command)?;
        if let Some(e) = &c.error {
            long("error", e)?;
        }
    }
    if let Some(log) = &a.log
        && log.len() > crate::wal::MAX_PAYLOAD_LEN
    {
        return Err(Error::invalid("log", "is larger than a log record"));
    }
    Ok(())
}

/// Validates `cmd` against `state` at time `now`. Returns the event body to append (if any)
/// and the outcome to answer with.
pub fn decide(state: &State, cmd: Command, now: Timestamp) -> Result<(Option<EventBody>, Outcome)> {
    match cmd {
        Command::CreateSession(new) => {
            let NewSession {
                id,
                name,
                timeout_secs,
                agent,
                working_dir,
                config,
                metadata,
            } = *new;
            let id = match id {
                Some(id) => id,
                None => loop {
                    let id = SessionId::generate();
                    if state.session(&id).is_none() {
                        break id;
                    }
                },
            };
            if state.session(&id).is_some() {
                return Err(Error::AlreadyExists {
                    kind: "session",
                    id: id.to_string(),
                });
            }
            let name = name.unwrap_or_else(|| id.to_string());
            short("name", &name)?;
            if let Some(a) = &agent {
                short("agent", a)?;
            }
            if let Some(w) = &working_dir {
                long("working directory", w)?;
            }
            if timeout_secs > MAX_TIMEOUT_SECS {
                return Err(Error::invalid(
                    "timeout",
                    format!("{timeout_secs} seconds is over the limit of {MAX_TIMEOUT_SECS}"),
                ));
            }
            validate_config(&config)?;
            if metadata.len() > MAX_INITIAL_METADATA {
                return Err(Error::invalid(
                    "metadata",
                    format!("more than {MAX_INITIAL_METADATA} keys"),
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for (k, _) in &metadata {
                non_empty_short("metadata key", k)?;
                if !seen.insert(k) {
                    return Err(Error::invalid("metadata key", format!("{k:?} given twice")));
                }
            }
            let body = EventBody::SessionCreated(Box::new(SessionCreated {
                session: id.clone(),
                name,
                agent,
                working_dir,
                timeout_secs,
                config,
                metadata,
            }));
            Ok((Some(body), Outcome::Session(id)))
        }
        Command::RecordActivity {
            session: id,
            action,
            details,
        } => {
            non_empty_short("action", &action)?;
            require_active(session(state, &id)?, now, "record activity in")?;
            Ok((
                Some(EventBody::ActivityRecorded {
                    session: id,
                    action: action.into(),
                    details,
                }),
                Outcome::Done,
            ))
        }
        Command::SetMetadata {
            session: id,
            key,
            value,
        } => {
            non_empty_short("metadata key", &key)?;
            require_not_archived(session(state, &id)?, "set metadata of")?;
            Ok((
                Some(EventBody::MetadataSet {
                    session: id,
                    key,
                    value,
                }),
                Outcome::Done,
            ))
        }
        Command::RemoveMetadata { session: id, key } => {
            let s = session(state, &id)?;
            require_not_archived(s, "remove metadata of")?;
            if s.get_metadata(&key).is_none() {
                return Err(Error::not_found(
                    "metadata key",
                    format!("{key:?} in session {id}"),
                ));
            }
            Ok((
                Some(EventBody::MetadataRemoved { session: id, key }),
                Outcome::Done,
            ))
        }
        Command::Pause(id) => status_change(state, id, Status::Paused, "pause"),
        Command::Resume(id) => status_change(state, id, Status::Active, "resume"),
        Command::End(id) => status_change(state, id, Status::Ended, "end"),
        Command::Archive(id) => {
            require_not_archived(session(state, &id)?, "archive")?;
            Ok((
                Some(EventBody::SessionsArchived {
                    sessions: vec![id.clone()],
                }),
                Outcome::Sessions(vec![id]),
            ))
        }
        Command::CleanupOldSessions { max_age_days } => {
            let cutoff = Timestamp(
                now.0
                    .saturating_sub(i64::from(max_age_days).saturating_mul(86_400_000_000)),
            );
            let old: Vec<SessionId> = state
                .sessions
                .values()
                .filter(|s| s.body.status != Status::Archived && s.last_activity < cutoff)
                .map(|s| s.id.clone())
                .collect();
            if old.is_empty() {
                return Ok((None, Outcome::Sessions(old)));
            }
            Ok((
                Some(EventBody::SessionsArchived {
                    sessions: old.clone(),
                }),
                Outcome::Sessions(old),
            ))
        }
        Command::ExpireIdle => {
            let expired: Vec<SessionId> = state
                .sessions
                .values()
                .filter(|s| s.is_expired(now))
                .map(|s| s.id.clone())
                .collect();
            if expired.is_empty() {
                return Ok((None, Outcome::Sessions(expired)));
            }
            Ok((
                Some(EventBody::SessionsExpired {
                    sessions: expired.clone(),
                }),
                Outcome::Sessions(expired),
            ))
        }
        Command::RecordCommand {
            session: id,
            command,
            args,
            success,
            error,
            duration_ms,
        } => {
            non_empty_short("command", &command)?;
            if let Some(e) = &error {
                long("error", e)?;
            }
            require_active(session(state, &id)?, now, "record a command in")?;
            Ok((
                Some(EventBody::CommandRecorded {
                    session: id,
                    command: command.into(),
                    args,
                    success,
                    error,
                    duration_ms,
                }),
                Outcome::Done,
            ))
        }
        Command::SaveCheckpoint { session: id, label } => {
            if let Some(l) = &label {
                short("label", l)?;
            }
            let s = session(state, &id)?;
            require_not_archived(s, "save a checkpoint of")?;
            let index = u32::try_from(s.checkpoints.len())
                .map_err(|_| refuse(&id, "save a checkpoint of", "too many checkpoints"))?;
            Ok((
                Some(EventBody::CheckpointSaved { session: id, label }),
                Outcome::Checkpoint(index),
            ))
        }
        Command::RestoreCheckpoint { session: id, index } => {
            let s = session(state, &id)?;
            require_not_archived(s, "restore")?;
            let count = s.checkpoints.len();
            let index = match index {
                Some(i) => i,
                None => match count.checked_sub(1) {
                    Some(last) => last as u32,
                    None => return Err(refuse(&id, "restore", "it has no checkpoint")),
                },
            };
            if index as usize >= count {
                return Err(Error::not_found(
                    "checkpoint",
                    format!("{index} in session {id} (it has {count})"),
                ));
            }
            Ok((
                Some(EventBody::CheckpointRestored { session: id, index }),
                Outcome::Checkpoint(index),
            ))
        }
        Command::LogDecision {
            session: id,
            what,
            why,
            alternatives,
        } => {
            if what.trim().is_empty() {
                return Err(Error::invalid("what", "must not be empty"));
            }
            long("what", &what)?;
            long("why", &why)?;
            if let Some(a) = &alternatives {
                long("alternatives", a)?;
            }
            require_active(session(state, &id)?, now, "log a decision in")?;
            Ok((
                Some(EventBody::DecisionLogged {
                    session: id,
                    what,
                    why,
                    alternatives,
                }),
                Outcome::Done,
            ))
        }
        Command::LinkChain {
            agent,
            external_id,
            prompt,
            response,
            metadata,
        } => {
            non_empty_short("external session id", &external_id)?;
            if state
                .chain(&agent)
                .is_some_and(|c| c.interaction_count == u64::MAX)
            {
                return Err(Error::invalid(
                    "chain",
                    format!(
                        "the interaction count of chain {agent} is {}, which cannot go up",
                        u64::MAX
                    ),
                ));
            }
            let prompt = truncate_chain_text(&prompt);
            let response = truncate_chain_text(&response);
            long("prompt", &prompt)?;
            long("response", &response)?;
            Ok((
                Some(EventBody::ChainLinked {
                    agent,
                    external_id,
                    prompt,
                    response,
                    metadata,
                }),
                Outcome::Done,
            ))
        }
        Command::ResetChain(agent) => Ok((Some(EventBody::ChainReset { agent }), Outcome::Done)),
        Command::Import { original, events } => {
            if events.len() > MAX_IMPORT_EVENTS {
                return Err(Error::invalid(
                    "bundle",
                    format!("more than {MAX_IMPORT_EVENTS} events"),
                ));
            }
            let id = if state.session(&original).is_some() {
                loop {
                    let id = SessionId::generate();
                    if state.session(&id).is_none() {
                        break id;
                    }
                }
            } else {
                original.clone()
            };
            let body = EventBody::SessionImported {
                session: id.clone(),
                original,
                events,
            };
            if body.import_depth() > crate::event::MAX_IMPORT_DEPTH {
                return Err(Error::invalid(
                    "bundle",
                    format!(
                        "importing it would nest imports more than {} levels deep",
                        crate::event::MAX_IMPORT_DEPTH
                    ),
                ));
            }
            // The imported history must replay on its own; try it on a scratch state.
            let mut scratch = State::new();
            scratch
                .apply(
                    Lsn(1),
                    &Event {
                        at: now,
                        body: body.clone(),
                    },
                )
                .map_err(|e| Error::invalid("bundle", format!("its events do not replay: {e}")))?;
            Ok((Some(body), Outcome::Session(id)))
        }
        Command::AdoptAmplihack(adoption) => {
            if adoption.sessions.is_empty() {
                return Err(Error::invalid("adoption", "it holds no session"));
            }
            if adoption.sessions.len() > MAX_IMPORT_EVENTS {
                return Err(Error::invalid(
                    "adoption",
                    format!("more than {MAX_IMPORT_EVENTS} sessions"),
                ));
            }
            long("source", &adoption.source)?;
            let mut seen = std::collections::BTreeSet::new();
            for a in &adoption.sessions {
                if state.session(&a.session).is_some() {
                    return Err(Error::AlreadyExists {
                        kind: "session",
                        id: a.session.to_string(),
                    });
                }
                if !seen.insert(&a.session) {
                    return Err(Error::invalid(
                        "adoption",
                        format!("session {} is adopted twice", a.session),
                    ));
                }
                check_adopted(a)?;
            }
            let ids: Vec<SessionId> = adoption
                .sessions
                .iter()
                .map(|a| a.session.clone())
                .collect();
            Ok((
                Some(EventBody::SessionsAdopted(adoption)),
                Outcome::Sessions(ids),
            ))
        }
        Command::Clone { source, new_id } => {
            let s = session(state, &source)?;
            let id = match new_id {
                Some(id) => {
                    if state.session(&id).is_some() {
                        return Err(Error::AlreadyExists {
                            kind: "session",
                            id: id.to_string(),
                        });
                    }
                    id
                }
                None => loop {
                    let id = SessionId::generate();
                    if state.session(&id).is_none() {
                        break id;
                    }
                },
            };
            let mut data = (**s).clone();
            data.body.status = Status::Active;
            data.origin = None;
            Ok((
                Some(EventBody::SessionCloned {
                    session: id.clone(),
                    source,
                    data: Box::new(data),
                }),
                Outcome::Session(id),
            ))
        }
        Command::RequestRun { session: id, spec } => {
            let s = session(state, &id)?;
            if s.body.status == Status::Archived {
                return Err(refuse(&id, "run a program in", "the session is archived"));
            }
            crate::run::check_spec(&spec)?;
            let run = state.next_run_id();
            Ok((
                Some(EventBody::RunRequested {
                    run,
                    session: id,
                    spec: Box::new(spec.redacted()),
                }),
                Outcome::Run(run),
            ))
        }
        Command::RecordRunStep(body) => {
            crate::run::check_step(state, &body, now)?;
            Ok((Some(*body), Outcome::Done))
        }
        Command::ImportChains { chains } => {
            check_imported_chains(state, &chains)?;
            let agents = chains.iter().map(|c| c.agent.clone()).collect();
            Ok((
                Some(EventBody::ChainsImported { chains }),
                Outcome::Chains(agents),
            ))
        }
    }
}

/// The rules on imported chains: agents new to the engine and given once, each chain
/// within [`check_imported_chain`]'s limits.
fn check_imported_chains(state: &State, chains: &[ImportedChain]) -> Result<()> {
    if chains.is_empty() {
        return Err(Error::invalid("chain import", "it holds no chain"));
    }
    let mut agents = std::collections::BTreeSet::new();
    for c in chains {
        if state.chain(&c.agent).is_some() {
            return Err(Error::AlreadyExists {
                kind: "chain",
                id: c.agent.to_string(),
            });
        }
        if !agents.insert(&c.agent) {
            return Err(Error::invalid(
                "chain import",
                format!("chain {} is given twice", c.agent),
            ));
        }
        check_imported_chain(c).map_err(|e| match e {
            Error::InvalidInput { field, reason } => Error::InvalidInput {
                field,
                reason: format!("chain {}: {reason}", c.agent),
            },
            other => other,
        })?;
    }
    Ok(())
}

/// The limits on one imported chain, those `chain --link` applies: ids non-empty, at most
/// [`MAX_SHORT_TEXT`] bytes and without control characters; prompts and responses at
/// most [`MAX_LONG_TEXT`] bytes, keeping any character the file held (the JSON files
/// escape them); keys beyond seed 003's unique, at most [`MAX_SHORT_TEXT`] bytes, and
/// none of its own. The error's reason names the place (`sessions[3]: ...`).
pub(crate) fn check_imported_chain(c: &ImportedChain) -> Result<()> {
    let at = |place: &str, e: Error| match e {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field,
            reason: format!("{place}: {reason}"),
        },
        other => other,
    };
    if let Some(id) = &c.current_session_id {
        non_empty_short("current_session_id", id).map_err(|e| at("current_session_id", e))?;
    }
    check_extra_keys(&c.extra, &CHAIN_FILE_KEYS).map_err(|e| at("top level", e))?;
    for (i, l) in c.links.iter().enumerate() {
        let here = |e| at(&format!("sessions[{i}]"), e);
        non_empty_short("session_id", &l.session_id).map_err(here)?;
        if let Some(t) = &l.created_at_text {
            non_empty_short("created_at", t).map_err(here)?;
        }
        for (field, text) in [
            ("last_prompt", &l.last_prompt),
            ("last_response", &l.last_response),
        ] {
            if text.len() > MAX_LONG_TEXT {
                return Err(here(Error::invalid(
                    field,
                    format!("is {} bytes long; the limit is {MAX_LONG_TEXT}", text.len()),
                )));
            }
        }
        check_extra_keys(&l.extra, &CHAIN_ENTRY_KEYS).map_err(here)?;
    }
    Ok(())
}

fn check_extra_keys(extra: &[(String, JsonText)], known: &[&str]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in extra {
        if k.len() > MAX_SHORT_TEXT {
            return Err(Error::invalid(
                "key",
                format!("is {} bytes long; the limit is {MAX_SHORT_TEXT}", k.len()),
            ));
        }
        if known.contains(&k.as_str()) {
            return Err(Error::invalid(
                "key",
                format!("{k:?} is one of seed 003's own fields, not an extra one"),
            ));
        }
        if !seen.insert(k) {
            return Err(Error::invalid("key", format!("{k:?} is given twice")));
        }
    }
    Ok(())
}

fn status_change(
    state: &State,
    id: SessionId,
    to: Status,
    op: &'static str,
) -> Result<(Option<EventBody>, Outcome)> {
    let s = session(state, &id)?;
    s.check_transition(to).map_err(|why| refuse(&id, op, why))?;
    Ok((
        Some(EventBody::StatusChanged {
            session: id,
            status: to,
        }),
        Outcome::Done,
    ))
}
