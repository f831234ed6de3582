//! One engine node of several on one data set: a command that loses the race for the log
//! to another node is decided again against the state that includes the other node's
//! records.
//!
//! ```text
//! execute(cmd) ── engine.execute ── Ok ──────────────────────────────▶ answer
//!                        │
//!                        └─ LogConflict (another node appended first; nothing of this
//!                           command was stored) ── reopen the engine (catch up from the
//!                           stream) ── execute(cmd) again, decided against the new state
//!                        │
//!                        └─ refused (not found, invalid state...) while the stream has
//!                           records this engine has not read ── catch up, decide again
//! ```
//!
//! A node runs one command at a time, so a conflict always concerns exactly the command
//! being executed: nothing is stored twice (the refused record is not in the stream; a
//! publish retried after a lost acknowledgement is recognised as stored by its message
//! id) and no acknowledged command is lost (every answer comes after the stream stored
//! the record). Reads are served from the node's own state, which is current as of its
//! last write or [`Node::refresh`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use session_engine::{Command, Committed, Engine, Error, Lsn, Options, Result, State};

use crate::NatsLog;

/// How many times one command is decided again before the conflict is returned.
pub const MAX_ATTEMPTS: u32 = 64;

/// An engine on a data directory whose log is a stream other nodes write too.
pub struct Node {
    dir: PathBuf,
    options: Options,
    log: NatsLog,
    engine: Mutex<Option<Engine>>,
    conflicts: AtomicU64,
}

impl Node {
    /// Opens the engine in `dir` with `options` on `log` (which replaces `options.log`).
    pub fn open(dir: impl AsRef<Path>, mut options: Options, log: &NatsLog) -> Result<Node> {
        let dir = dir.as_ref().to_path_buf();
        options.log = Some(Arc::new(log.clone()));
        let engine = Engine::open(&dir, options.clone())?;
        Ok(Node {
            dir,
            options,
            log: log.clone(),
            engine: Mutex::new(Some(engine)),
            conflicts: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Engine>> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the engine with a new one that has read the stream to its end.
    fn reopen(&self, slot: &mut Option<Engine>) -> Result<()> {
        // The old engine (poisoned by the conflict) lets go of the directory first.
        drop(slot.take());
        *slot = Some(Engine::open(&self.dir, self.options.clone())?);
        Ok(())
    }

    /// Executes `cmd`, deciding it again after each conflict with another node.
    pub fn execute(&self, cmd: Command) -> Result<Committed> {
        let mut slot = self.lock();
        let mut attempts = 0;
        loop {
            let engine = match &*slot {
                Some(e) if e.poisoned().is_none() => e,
                // A previous failure (a conflict, the log unavailable) left the engine
                // poisoned, or its reopen failed: read the stream again.
                _ => {
                    self.reopen(&mut slot)?;
                    slot.as_ref().ok_or(Error::Closed)?
                }
            };
            match engine.execute(cmd.clone()) {
                Err(Error::LogConflict { .. }) if attempts + 1 < MAX_ATTEMPTS => {
                    attempts += 1;
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    self.reopen(&mut slot)?;
                }
                // A refusal decided against a state the stream has moved past may not
                // hold against the records this node has not read.
                Err(e)
                    if e.is_refusal()
                        && attempts + 1 < MAX_ATTEMPTS
                        && self.log.last_sequence()? > engine.last_lsn().0 =>
                {
                    attempts += 1;
                    self.reopen(&mut slot)?;
                }
                other => return other,
            }
        }
    }

    /// Catches up with what the other nodes wrote.
    pub fn refresh(&self) -> Result<()> {
        let mut slot = self.lock();
        self.reopen(&mut slot)
    }

    /// The node's state (as of its last write or refresh).
    pub fn state(&self) -> Result<Arc<State>> {
        self.lock().as_ref().map(|e| e.state()).ok_or(Error::Closed)
    }

    /// The LSN the node's state is at.
    pub fn last_lsn(&self) -> Lsn {
        self.lock().as_ref().map_or(Lsn::ZERO, |e| e.last_lsn())
    }

    /// Commands decided again after a conflict, so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }
}
