//! [`ClaudeSession`]: a handle on one session, with seed 000's and seed 001's methods.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Inner;
use crate::command::{Command, Outcome};
use crate::error::{Error, Result};
use crate::event::AgentAction;
use crate::history::History;
use crate::state::{Agent, CommandRecord, Session, Statistics, Status};
use crate::types::{JsonText, Lsn, SessionId, Timestamp};

/// A command the caller ran, to record in a session's history (seed 000's
/// `execute_command` minus the execution, which belongs to the supervisor).
#[derive(Clone, Debug, PartialEq)]
pub struct CommandRun {
    /// The command.
    pub command: String,
    /// Its arguments (seed 000's `**kwargs`).
    pub args: Option<Value>,
    /// `Ok(())` when it succeeded, the error text when it failed.
    pub result: std::result::Result<(), String>,
    /// How long it ran.
    pub duration: Duration,
}

impl CommandRun {
    /// A successful run of `command` without arguments that took `duration`.
    pub fn succeeded(command: impl Into<String>, duration: Duration) -> CommandRun {
        CommandRun {
            command: command.into(),
            args: None,
            result: Ok(()),
            duration,
        }
    }

    /// A failed run of `command` with error text `error`.
    pub fn failed(
        command: impl Into<String>,
        error: impl Into<String>,
        duration: Duration,
    ) -> CommandRun {
        CommandRun {
            command: command.into(),
            args: None,
            result: Err(error.into()),
            duration,
        }
    }

    /// The same run with arguments.
    pub fn with_args(mut self, args: Value) -> CommandRun {
        self.args = Some(args);
        self
    }
}

fn json(v: &Value) -> Result<JsonText> {
    JsonText::from_value(v)
}

/// A handle on one session (seed 001's `ClaudeSession`). Holds only the id: every read
/// sees the latest durable state, every change is a durable command. Cheap to clone.
#[derive(Clone)]
pub struct ClaudeSession {
    inner: Arc<Inner>,
    id: SessionId,
}

impl std::fmt::Debug for ClaudeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaudeSession")
            .field("session_id", &self.id)
            .finish()
    }
}

impl ClaudeSession {
    pub(super) fn new(inner: Arc<Inner>, id: SessionId) -> ClaudeSession {
        ClaudeSession { inner, id }
    }

    /// The session's id.
    pub fn session_id(&self) -> &SessionId {
        &self.id
    }

    /// The session as the latest durable state holds it, read nothing from the log: its
    /// status, metadata, counters and checkpoints, its activities' details only as their
    /// positions (`Details::InLog`; read them through [`ClaudeSession::history`], or take
    /// a whole copy with [`ClaudeSession::snapshot`]). For summaries.
    pub fn state(&self) -> Result<Arc<Session>> {
        self.inner
            .state()
            .session(&self.id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "session",
                id: self.id.to_string(),
            })
    }

    /// The session as of the latest durable state, whole: its activities' details are
    /// read from the log into the copy returned (the state keeps only their positions;
    /// [`ClaudeSession::history`] reads them on demand instead). Damage in the log is
    /// [`Error::Corruption`] naming its place.
    pub fn snapshot(&self) -> Result<Arc<Session>> {
        let state = self.inner.state();
        let s = state.session(&self.id).ok_or_else(|| Error::NotFound {
            kind: "session",
            id: self.id.to_string(),
        })?;
        if !s.has_details_in_log() {
            return Ok(Arc::clone(s));
        }
        Ok(Arc::new(
            self.inner
                .engine()
                .session_with_details(s, state.last_lsn)?,
        ))
    }

    fn run(&self, cmd: Command) -> Result<Lsn> {
        Ok(self.inner.execute(cmd)?.lsn)
    }

    /// When it was created.
    pub fn created_at(&self) -> Result<Timestamp> {
        Ok(self.snapshot()?.created_at)
    }

    /// Its last activity (activity, command, decision, restore or resume).
    pub fn last_activity(&self) -> Result<Timestamp> {
        Ok(self.snapshot()?.last_activity)
    }

    /// Its recorded status. A session past its timeout stays `Active` here until the
    /// watchdog records the expiry; [`ClaudeSession::is_active`] is right either way.
    pub fn status(&self) -> Result<Status> {
        Ok(self.snapshot()?.status())
    }

    /// Seed 001 `is_active()`: active and not past its inactivity timeout, now (on the
    /// engine's clock, so it is right between watchdog ticks).
    pub fn is_active(&self) -> bool {
        let now = self.inner.engine().now();
        self.snapshot().is_ok_and(|s| s.is_active(now))
    }

    /// Seed 002's agents of the session, by agent type: those activated at least once
    /// (active or not). Empty when none was.
    pub fn agents(&self) -> Result<Vec<(String, Agent)>> {
        self.snapshot()?;
        Ok(self
            .inner
            .state()
            .agents_of(&self.id)
            .map(|a| a.iter().map(|(t, a)| (t.clone(), a.clone())).collect())
            .unwrap_or_default())
    }

    fn change_agent(
        &self,
        agent_type: &str,
        action: AgentAction,
        config: Option<&Value>,
    ) -> Result<Lsn> {
        let config = config.map(json).transpose()?;
        self.run(Command::ChangeAgent {
            session: self.id.clone(),
            agent_type: agent_type.to_owned(),
            action,
            config,
        })
    }

    /// Activates one of seed 002's agent types (any case) in the session, with an optional
    /// configuration: [`Error::NotFound`] for an unknown type, [`Error::InvalidState`] when
    /// it is active already or the session is ended, archived or timed out.
    pub fn activate_agent(&self, agent_type: &str, config: Option<&Value>) -> Result<Lsn> {
        self.change_agent(agent_type, AgentAction::Activated, config)
    }

    /// Deactivates an active agent ([`Error::InvalidState`] when it is not active).
    pub fn deactivate_agent(&self, agent_type: &str) -> Result<Lsn> {
        self.change_agent(agent_type, AgentAction::Deactivated, None)
    }

    /// Restarts an active agent, with a new configuration if given
    /// ([`Error::InvalidState`] when it is not active).
    pub fn restart_agent(&self, agent_type: &str, config: Option<&Value>) -> Result<Lsn> {
        self.change_agent(agent_type, AgentAction::Restarted, config)
    }

    /// Seed 001 `record_activity(action, details)`: refused with [`Error::InvalidState`]
    /// when the session is not active (paused, ended, archived or timed out).
    pub fn record_activity(&self, action: &str, details: Option<Value>) -> Result<Lsn> {
        let details = details.as_ref().map(json).transpose()?;
        self.run(Command::RecordActivity {
            session: self.id.clone(),
            action: action.to_owned(),
            details,
        })
    }

    /// Seed 001 `get_metadata(key)`: the value, or `None`.
    pub fn get_metadata(&self, key: &str) -> Result<Option<Value>> {
        Ok(self.snapshot()?.get_metadata(key).map(JsonText::to_value))
    }

    /// Seed 001 `get_metadata(key, default)`.
    pub fn get_metadata_or(&self, key: &str, default: Value) -> Result<Value> {
        Ok(self.get_metadata(key)?.unwrap_or(default))
    }

    /// Every metadata key and value.
    pub fn metadata(&self) -> Result<Vec<(String, Value)>> {
        Ok(self
            .snapshot()?
            .body
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.to_value()))
            .collect())
    }

    /// Seed 001 `set_metadata(key, value)`.
    pub fn set_metadata(&self, key: &str, value: Value) -> Result<Lsn> {
        self.run(Command::SetMetadata {
            session: self.id.clone(),
            key: key.to_owned(),
            value: json(&value)?,
        })
    }

    /// Removes a metadata key ([`Error::NotFound`] if it is not set).
    pub fn remove_metadata(&self, key: &str) -> Result<Lsn> {
        self.run(Command::RemoveMetadata {
            session: self.id.clone(),
            key: key.to_owned(),
        })
    }

    /// Pauses an active session.
    pub fn pause(&self) -> Result<Lsn> {
        self.run(Command::Pause(self.id.clone()))
    }

    /// Makes a paused, ended, timed-out or archived session active again.
    pub fn resume(&self) -> Result<Lsn> {
        self.run(Command::Resume(self.id.clone()))
    }

    /// Ends the session (seed 000 `stop`).
    pub fn end(&self) -> Result<Lsn> {
        self.run(Command::End(self.id.clone()))
    }

    /// Archives the session.
    pub fn archive(&self) -> Result<Lsn> {
        self.run(Command::Archive(self.id.clone()))
    }

    /// Records a command the caller ran (seed 000 `execute_command`, as a record).
    /// Refused when the session is not active.
    pub fn record_command(&self, run: CommandRun) -> Result<Lsn> {
        let args = run.args.as_ref().map(json).transpose()?;
        let (success, error) = match run.result {
            Ok(()) => (true, None),
            Err(e) => (false, Some(e)),
        };
        self.run(Command::RecordCommand {
            session: self.id.clone(),
            command: run.command,
            args,
            success,
            error,
            duration_ms: u64::try_from(run.duration.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Seed 000 `get_command_history(limit)`: the last `limit` commands, oldest first.
    pub fn get_command_history(&self, limit: usize) -> Result<Vec<CommandRecord>> {
        Ok(self.snapshot()?.command_history(limit))
    }

    /// Seed 000 `get_statistics()`, as of now.
    pub fn get_statistics(&self) -> Result<Statistics> {
        let now = self.inner.engine().now();
        Ok(self.snapshot()?.statistics(now))
    }

    /// Seed 000 `save_checkpoint()`: saves the session's metadata, status, logs and
    /// counters. Returns the checkpoint's index.
    pub fn save_checkpoint(&self, label: Option<&str>) -> Result<u32> {
        let c = self.inner.execute(Command::SaveCheckpoint {
            session: self.id.clone(),
            label: label.map(str::to_owned),
        })?;
        checkpoint_of(c.outcome)
    }

    /// Seed 000 `restore_checkpoint(index=-1)`: returns the session to checkpoint `index`
    /// (the last one when `None`). The log keeps everything, the restore included.
    /// Returns the index restored.
    pub fn restore_checkpoint(&self, index: Option<u32>) -> Result<u32> {
        let c = self.inner.execute(Command::RestoreCheckpoint {
            session: self.id.clone(),
            index,
        })?;
        checkpoint_of(c.outcome)
    }

    /// Seed 001 `log_decision(what, why, alternatives)`, in this session's audit trail.
    pub fn log_decision(&self, what: &str, why: &str, alternatives: Option<&str>) -> Result<Lsn> {
        self.run(Command::LogDecision {
            session: self.id.clone(),
            what: what.to_owned(),
            why: why.to_owned(),
            alternatives: alternatives.map(str::to_owned),
        })
    }

    /// The session's history (activities, commands, decisions) as of the latest durable
    /// state ([`crate::history`]).
    pub fn history(&self) -> Result<History> {
        self.inner.engine().history(&self.id)
    }

    /// The session as it was right after record `lsn`.
    pub fn at(&self, lsn: Lsn) -> Result<Option<Session>> {
        let engine = self.inner.engine();
        engine
            .session_at(&self.id, lsn)?
            .map(|s| engine.session_with_details(&s, lsn))
            .transpose()
    }
}

fn checkpoint_of(o: Outcome) -> Result<u32> {
    match o {
        Outcome::Checkpoint(i) => Ok(i),
        other => Err(Error::Poisoned {
            cause: format!("internal error: unexpected command outcome {other:?}"),
        }),
    }
}
