//! The session domain as the seeds name it: [`SessionManager`] (seed 000/001), the
//! [`ClaudeSession`] handle, and seed 003's [`SessionTracker`] for agent session chains.
//!
//! This layer is thin on purpose. Every operation is one [`Command`] through
//! [`Engine::execute`]; every read is a look at [`Engine::state`]. The manager adds what a
//! program embedding the engine (or the CLI) needs around that: opening a data directory
//! with its projections, typed handles, export/import of bundles, and a close that leaves
//! the projection files complete (or reports, apart from the close's result, that it
//! could not).
//!
//! Architecture invariants:
//! * Nothing here writes a file except through a command (the log) or the projector (the
//!   derived files); export writes the bundle file the caller asked for.
//! * Handles hold a session id, never a copy of the session: every read sees the latest
//!   durable state.
//! * After [`SessionManager::close`], every operation returns [`Error::Closed`] and the
//!   projection files reflect every event, unless writing them failed: that is no
//!   command's failure nor `close`'s (the log has every event), it is reported by
//!   [`SessionManager::projection_status`] and a warning, and the next open writes them.
//!
//! ```no_run
//! use session_engine::manager::{ManagerOptions, SessionManager};
//! use session_engine::NewSession;
//!
//! let manager = SessionManager::open(".claude/runtime", ManagerOptions::default())?;
//! let session = manager.create_session(NewSession::default())?;
//! session.record_activity("user_input", Some(serde_json::json!({"message": "Hello"})))?;
//! session.set_metadata("user", serde_json::json!("alice@example.com"))?;
//! assert!(session.is_active());
//! manager.close()?;
//! # Ok::<(), session_engine::Error>(())
//! ```

mod claude;
mod runs;
mod session;
mod tracker;
mod transfer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use claude::{
    CLAUDE_PROGRAM_ENV, ClaudeHandle, ClaudeRequest, ClaudeTurn, claude_args,
    default_claude_program,
};
pub use runs::{
    CancelTarget, Cancelled, DEFAULT_OUTPUT_READ, ExecRequest, MAX_OUTPUT_READ, RunFilter,
    RunHandle, RunOutput,
};
pub use session::{ClaudeSession, CommandRun};
pub use tracker::SessionTracker;

use crate::command::{Command, Committed, NewSession, Outcome};
use crate::engine::{Engine, Options};
use crate::error::{Error, Result};
use crate::history::History;
use crate::projection::{
    Layout, ProjectionFormat, ProjectionOptions, ProjectionPaths, ProjectionStatus, Projector,
    RebuildReport,
};
use crate::state::{Session, State, Status};
use crate::types::{AgentId, Lsn, SessionId, Timestamp};

/// The seeds' default data directory.
pub const DEFAULT_DATA_DIR: &str = ".claude/runtime";

/// How to open a data directory. The default is the engine's default options with the
/// default projections (seed 001's files, or the format the directory records), as the
/// tools it replaces expect to find them.
#[derive(Clone, Debug)]
pub struct ManagerOptions {
    /// The engine's options (durability, storage, clock, watchdog...).
    pub engine: Options,
    /// Projection settings; `None` writes no projection files.
    pub projections: Option<ProjectionOptions>,
}

impl Default for ManagerOptions {
    fn default() -> ManagerOptions {
        ManagerOptions::with_engine(Options::default())
    }
}

impl ManagerOptions {
    /// Engine `options` with the default projections.
    pub fn with_engine(engine: Options) -> ManagerOptions {
        ManagerOptions {
            engine,
            projections: Some(ProjectionOptions::default()),
        }
    }
}

/// What [`SessionManager::import_chains`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChainImport {
    /// The agents whose chains were imported, in file name order.
    pub imported: Vec<AgentId>,
    /// The agents whose files were already imported (equal, as JSON values, to this
    /// engine's chain file), left as they are.
    pub unchanged: Vec<AgentId>,
    /// The LSN of the import's record; `None` when there was nothing to import.
    pub lsn: Option<Lsn>,
}

/// Which sessions [`SessionManager::list_sessions`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only sessions with this status.
    pub status: Option<Status>,
    /// Only sessions that are active right now (active and not past their timeout).
    pub active_only: bool,
}

pub(crate) struct Inner {
    engine: Arc<Engine>,
    projector: Option<Projector>,
    closed: Mutex<bool>,
    /// The runs the open's reconcile left recovering that no supervisor has taken up
    /// yet (`SessionManager::resume_runs` takes them; a cancel ends them), in id order.
    waiting: Mutex<Vec<crate::run::RunId>>,
}

impl Inner {
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn execute(&self, cmd: Command) -> Result<Committed> {
        self.engine.execute(cmd)
    }

    pub(crate) fn state(&self) -> Arc<State> {
        self.engine.state()
    }

    fn close(&self) -> Result<()> {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return Ok(());
        }
        *closed = true;
        let engine = self.engine.close();
        // Projection files left unwritten are the projector's failure, not the close's:
        // the log has every event and the next open writes them. The status keeps it.
        if let Some(p) = &self.projector
            && let Err(e) = p.join()
        {
            tracing::warn!(
                error = %e,
                "the projection files are behind the log; the next open writes them"
            );
        }
        engine
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the session manager failed");
        }
    }
}

/// A data directory's sessions, chains and projections. Cheap to share across threads
/// (`&SessionManager` is enough; every method takes `&self`).
pub struct SessionManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("engine", &self.inner.engine)
            .finish()
    }
}

fn session_id(id: &str) -> Result<SessionId> {
    SessionId::new(id)
}

impl SessionManager {
    /// Opens (creating if needed) the data directory `dir` for writing, recovers its state,
    /// and starts the projector, which catches the projection files up in the background
    /// (see [`SessionManager::flush_projections`]).
    pub fn open(dir: impl AsRef<Path>, options: ManagerOptions) -> Result<SessionManager> {
        let engine = Arc::new(Engine::open(dir, options.engine)?);
        // Timeouts that passed while no writer had the directory open (a command-line
        // process runs no watchdog) are recorded first, so every projection and every
        // command sees the sessions' real status: a timed-out session is never shown, or
        // decided on, as active.
        let now = engine.now();
        if engine.state().sessions.values().any(|s| s.is_expired(now))
            && let Err(e) = engine.execute(Command::ExpireIdle)
        {
            let _ = engine.close();
            return Err(e);
        }
        // Runs a previous process left unfinished: none stays `running` past an open;
        // those safe to repeat wait, `recovering`, for `resume_runs`.
        let waiting = match crate::supervisor::reconcile(&engine) {
            Ok(w) => w,
            Err(e) => {
                let _ = engine.close();
                return Err(e);
            }
        };
        let projector = match options.projections {
            Some(p) => match Projector::start(Arc::clone(&engine), p) {
                Ok(p) => Some(p),
                Err(e) => {
                    let _ = engine.close();
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(SessionManager {
            inner: Arc::new(Inner {
                engine,
                projector,
                closed: Mutex::new(false),
                waiting: Mutex::new(waiting),
            }),
        })
    }

    /// Opens `dir` read-only: reads, point-in-time and export work while another process
    /// writes; every write returns [`Error::ReadOnly`]. No projections are written.
    pub fn open_read_only(dir: impl AsRef<Path>, engine: Options) -> Result<SessionManager> {
        let engine = Arc::new(Engine::open_read_only(dir, engine)?);
        Ok(SessionManager {
            inner: Arc::new(Inner {
                engine,
                projector: None,
                closed: Mutex::new(false),
                waiting: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Closes the directory: the engine stops after the commands already queued, then the
    /// projector writes every remaining change. Idempotent; also done when the manager
    /// and every handle are dropped.
    ///
    /// An error means the log could not be closed cleanly (its final sync failed, say):
    /// in the buffered durability modes, events answered since the last sync may then be
    /// lost. Projection files that could not be written are not an error of `close`
    /// (every event is in the log, and the next open writes them): they are logged with
    /// `tracing::warn!` and [`SessionManager::projection_status`], which still answers
    /// after the close, says so (`last_error`, [`ProjectionStatus::is_behind`]).
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }

    /// The engine underneath, for what this layer does not wrap (verify, snapshots,
    /// subscriptions, raw commands).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.engine.paths().root
    }

    /// Where the projection files are.
    pub fn projection_paths(&self) -> ProjectionPaths {
        ProjectionPaths::new(self.data_dir())
    }

    /// The current (durable) state.
    pub fn state(&self) -> Arc<State> {
        self.inner.state()
    }

    /// LSN of the last durable event.
    pub fn last_lsn(&self) -> Lsn {
        self.inner.engine.last_lsn()
    }

    /// The engine clock's current time.
    pub fn now(&self) -> Timestamp {
        self.inner.engine.now()
    }

    fn handle(&self, id: SessionId) -> ClaudeSession {
        ClaudeSession::new(Arc::clone(&self.inner), id)
    }

    /// Creates a session (seed 001 `create_session`; seed 000's `name` and `config` are
    /// fields of `new`). Returns its handle.
    pub fn create_session(&self, new: NewSession) -> Result<ClaudeSession> {
        let c = self.inner.execute(Command::CreateSession(Box::new(new)))?;
        match c.outcome {
            Outcome::Session(id) => Ok(self.handle(id)),
            other => Err(unexpected(other)),
        }
    }

    /// A handle on an existing session (archived ones included). An id that is not a safe
    /// file name is [`Error::InvalidInput`]; an unknown one is [`Error::NotFound`].
    pub fn get_session(&self, id: &str) -> Result<ClaudeSession> {
        let id = session_id(id)?;
        if self.inner.state().session(&id).is_none() {
            return Err(Error::NotFound {
                kind: "session",
                id: id.to_string(),
            });
        }
        Ok(self.handle(id))
    }

    /// Makes a paused, ended, timed-out or archived session active again (seed 000
    /// `resume_session`); an active session is returned as it is. A session past its
    /// timeout whose expiry the watchdog has not recorded yet is expired first, then
    /// resumed.
    pub fn resume_session(&self, id: &str) -> Result<ClaudeSession> {
        let session = self.get_session(id)?;
        let s = session.snapshot()?;
        if s.status() == Status::Active && s.is_expired(self.now()) {
            self.expire_idle()?;
        }
        let s = session.snapshot()?;
        if s.status() != Status::Active {
            self.inner.execute(Command::Resume(s.id.clone()))?;
        }
        Ok(session)
    }

    /// Sessions matching `filter`, in id order (UUID v7 ids sort by creation time).
    pub fn list_sessions(&self, filter: ListFilter) -> Vec<Arc<Session>> {
        let state = self.inner.state();
        let now = self.now();
        state
            .list(filter.status)
            .filter(|s| !filter.active_only || s.is_active(now))
            .cloned()
            .collect()
    }

    /// Archives a session (seed 001 `archive_session`): its file moves to
    /// `sessions/archive/`.
    pub fn archive_session(&self, id: &str) -> Result<()> {
        self.inner.execute(Command::Archive(session_id(id)?))?;
        Ok(())
    }

    /// Archives every unarchived session whose last activity is more than `max_age_days`
    /// days old (seed 000 `cleanup_old_sessions`). Returns the archived ids.
    pub fn cleanup_old_sessions(&self, max_age_days: u32) -> Result<Vec<SessionId>> {
        sessions_of(
            self.inner
                .execute(Command::CleanupOldSessions { max_age_days })?,
        )
    }

    /// Records the expiry of every active session past its timeout now (what the
    /// watchdog does on each tick). Returns the expired ids.
    pub fn expire_idle(&self) -> Result<Vec<SessionId>> {
        sessions_of(self.inner.execute(Command::ExpireIdle)?)
    }

    /// The session as it was right after record `lsn` (`None` if it did not exist yet),
    /// whole: its activities' details read from the log into the copy returned.
    pub fn session_at(&self, id: &str, lsn: Lsn) -> Result<Option<Session>> {
        let engine = &self.inner.engine;
        engine
            .session_at(&session_id(id)?, lsn)?
            .map(|s| engine.session_with_details(&s, lsn))
            .transpose()
    }

    /// Session `id`'s history (activities, commands, decisions) as of the latest durable
    /// state, read on demand ([`Engine::history`]; see [`crate::history`] for what a caller
    /// may rely on). An id that is not a safe file name is [`Error::InvalidInput`]; an
    /// unknown one is [`Error::NotFound`].
    pub fn history(&self, id: &str) -> Result<History> {
        self.inner.engine.history(&session_id(id)?)
    }

    /// Session `id`'s history as it was right after record `lsn` ([`Engine::history_at`]):
    /// [`Error::LsnOutOfRange`] past the log's end, [`Error::NotFound`] when the session did
    /// not exist yet.
    pub fn history_at(&self, id: &str, lsn: Lsn) -> Result<History> {
        self.inner.engine.history_at(&session_id(id)?, lsn)
    }

    /// The session chain tracker of `agent` (seed 003 `SessionTracker`); an agent without
    /// links yet has an empty chain.
    pub fn chain(&self, agent: &str) -> Result<SessionTracker> {
        Ok(SessionTracker::new(
            Arc::clone(&self.inner),
            AgentId::new(agent)?,
        ))
    }

    /// Every agent that has a chain, in id order.
    pub fn agents(&self) -> Vec<AgentId> {
        self.inner.state().chains.keys().cloned().collect()
    }

    /// Seed 001 `save_session`: every change is durable when its call returns, so this
    /// only waits until the projection files reflect the session (and everything before).
    /// An error is the projections' (see [`SessionManager::flush_projections`]): the
    /// session's changes are committed all the same.
    pub fn save_session(&self, session: &ClaudeSession) -> Result<()> {
        session.snapshot()?;
        self.flush_projections()
    }

    /// The projector's progress, `None` when projections are off: how far the files are,
    /// the failed write attempts (`failures`), the unresolved failure (`last_error`), and
    /// whether the files are behind the log ([`ProjectionStatus::is_behind`]). Still
    /// answers after [`SessionManager::close`], with what the projector left.
    pub fn projection_status(&self) -> Option<ProjectionStatus> {
        self.inner.projector.as_ref().map(Projector::status)
    }

    /// Waits until the projection files reflect the state at least as of `lsn`:
    /// `Ok(true)` once they do, `Ok(false)` after `timeout`. With projections off it
    /// returns `Ok(true)` at once.
    pub fn wait_for_projections(&self, lsn: Lsn, timeout: Option<Duration>) -> Result<bool> {
        match &self.inner.projector {
            Some(p) => p.wait_for(lsn, timeout),
            None => Ok(true),
        }
    }

    /// Waits until the projection files reflect every durable event. An error says the
    /// files could not be written (after `max_retries` attempts; the projector keeps
    /// retrying), never that a command failed: every event is in the log.
    pub fn flush_projections(&self) -> Result<()> {
        self.wait_for_projections(self.last_lsn(), None).map(|_| ())
    }

    /// Rewrites every projection file from the state and removes stale ones (the CLI's
    /// `rebuild-projections`). Runs on the projector thread; with projections off it runs
    /// here with the default options.
    pub fn rebuild_projections(&self) -> Result<RebuildReport> {
        match &self.inner.projector {
            Some(p) => p.rebuild(),
            None => crate::projection::rebuild(&self.inner.engine, &ProjectionOptions::default()),
        }
    }

    /// Rewrites every projection file in `format`, which becomes the directory's format
    /// (the CLI's `rebuild-projections --projections F`): the previous format's files are
    /// moved aside, not deleted (see [`Projector::rebuild_as`]). Needs projections on.
    pub fn rebuild_projections_as(&self, format: ProjectionFormat) -> Result<RebuildReport> {
        match &self.inner.projector {
            Some(p) => p.rebuild_as(format),
            None => Err(Error::InvalidInput {
                field: "projections",
                reason: "projections are off for this manager".into(),
            }),
        }
    }

    /// The format the projection files are written in, `None` when projections are off.
    pub fn projection_format(&self) -> Option<ProjectionFormat> {
        self.inner.projector.as_ref().map(Projector::format)
    }

    /// Adopts the sessions of the amplihack runtime directory `dir` (`sessions/`, its
    /// registry and archive, `logs/<id>.log`; see [`crate::import::amplihack`]) in one
    /// event, keeping their documents exactly, so that the `amplihack` projection writes
    /// them back unchanged. Refused whole, changing nothing, on bad input
    /// ([`Error::InvalidImport`]) or an id this engine already has
    /// ([`Error::AlreadyExists`]). Returns the adopted ids.
    ///
    /// To adopt the directory the engine itself lives in, open it without projections
    /// for the import (a projector starting there first would find amplihack's files in
    /// its paths): the command line's `import DIR` does that.
    pub fn import_amplihack(&self, dir: impl AsRef<Path>) -> Result<Vec<SessionId>> {
        let read = crate::import::amplihack::read_runtime_dir(
            &*self.inner.engine.options().storage,
            dir.as_ref(),
        )?;
        sessions_of(
            self.inner
                .execute(Command::AdoptAmplihack(Box::new(read.adoption)))?,
        )
    }

    /// The path of a session's projection file, wherever its status (and the directory's
    /// format) puts it. [`Error::NotFound`] also when the format writes no file for it (an
    /// amplihack session with a reserved id, or adopted with only a registry entry).
    pub fn session_file(&self, id: &str) -> Result<PathBuf> {
        let id = session_id(id)?;
        let state = self.inner.state();
        let s = state.session(&id).ok_or_else(|| Error::NotFound {
            kind: "session",
            id: id.to_string(),
        })?;
        let format = self.projection_format().unwrap_or_default();
        Layout::new(self.data_dir(), format)
            .session_file(s)
            .ok_or_else(|| Error::NotFound {
                kind: "session file",
                id: format!("{id} (the {format} format writes none for it)"),
            })
    }
}

fn sessions_of(c: Committed) -> Result<Vec<SessionId>> {
    match c.outcome {
        Outcome::Sessions(v) => Ok(v),
        other => Err(unexpected(other)),
    }
}

/// An outcome a command cannot produce; kept as an error rather than a panic.
fn unexpected(o: Outcome) -> Error {
    Error::Poisoned {
        cause: format!("internal error: unexpected command outcome {o:?}"),
    }
}
