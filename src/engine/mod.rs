//! The engine: the one stateful entry point.
//!
//! ```text
//! callers ──Request──▶ crossbeam channel ──▶ the writer (behind a mutex), run by the writer
//!                                             thread or by a caller of `execute` that finds it idle
//!                                             │ decide each command against a clone of the state
//!                                             │ encode its event into the batch's frames
//!                                             │ append the batch, fsync once (group commit)
//!                                             │ publish the new state, answer every caller
//!                                             ▼ send the batch to subscribers
//!                                           snapshot thread (serialises a state clone)
//! ```
//!
//! Architecture invariants:
//! * Only the holder of the writer mutex (the writer thread, or a caller of
//!   [`Engine::execute`] running a batch itself) takes requests from the channel, appends
//!   to the log or replaces the published state; requests are taken only under the mutex,
//!   so one thread's commands are applied in the order it sent them.
//! * A caller is answered only after its event is durable under the configured
//!   [`Durability`]; readers ([`Engine::state`]) only ever see published, and so durable,
//!   states.
//! * After a failed write or fsync the engine is poisoned: every later command is refused
//!   with [`Error::Poisoned`]. Reopening the directory recovers from the log. (A remote
//!   log's [`Error::LogConflict`] that stored nothing of its batch is not a failed write:
//!   the engine stays writable and [`Engine::catch_up`] takes in the other writer's
//!   records.)
//! * The writer lock (on the data directory and its `LOCK` file, see
//!   [`crate::storage::Storage::try_lock`]) is held from open to close; read-only engines take no lock and
//!   never write.

mod answer;
mod options;
mod pending;
mod read;
mod recover;
mod repair;
mod replay;
mod stats;
mod subscription;
mod verify;
mod wake;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError, bounded};

use answer::{Answer, Reply};
use pending::{WAIT_CHECK, wait_answer};
use wake::WakerSet;

use crate::backend::{FileLog, LogBackend};

use crate::command::{Command, Committed};
use crate::error::{Error, Result};
use crate::snapshot::{self};
use crate::state::State;
use crate::storage::{self, LockGuard};
use crate::types::Lsn;

pub use options::{
    DEFAULT_SEGMENT_BYTES, DEFAULT_SNAPSHOT_EVERY, Durability, MAX_BATCH, MAX_BATCH_BYTES,
    MAX_INTERVAL, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, Options, Paths, RecoveryReport,
};
pub use pending::Pending;
pub use read::read_log;
pub(crate) use recover::replay_record;
use recover::{apply_record, decode_record, recover_state};
pub use repair::{RepairReport, repair};
pub use stats::{APPEND_BOUNDS_US, BATCH_BOUNDS, EngineStats, Histogram};
pub use subscription::{CommittedEvent, Recv, SUBSCRIBER_CAPACITY, Subscription};
pub use verify::{Damage, SnapshotCheck, VerifyReport, verify};

pub(crate) enum Request {
    Command {
        cmd: Command,
        reply: Option<Reply<Result<Committed>>>,
        /// The thread that sent it (the writer's group commit waits for recent callers).
        caller: Option<std::thread::ThreadId>,
    },
    Sync(Reply<Result<()>>),
    Snapshot(Reply<Result<Lsn>>),
    Subscribe {
        live: subscription::LiveSender,
        reply: Reply<Lsn>,
    },
    Shutdown(Reply<Result<()>>),
    /// Take in the records other writers appended to the log after the published state
    /// ([`Engine::catch_up`]); answered with the LSN the state is at afterwards.
    CatchUp(Reply<Result<Lsn>>),
    /// Does nothing; wakes the writer thread so it sees that a caller ran the shutdown.
    Wake,
}

/// State shared by the engine handle, the writer thread and subscriptions.
pub(crate) struct Shared {
    pub(crate) paths: Paths,
    pub(crate) options: Options,
    pub(crate) state: RwLock<Arc<State>>,
    poisoned: Mutex<Option<String>>,
    pub(crate) closed: AtomicBool,
    /// Set when the writer thread has exited (after its last publication), so a request
    /// it will never answer is not waited for.
    pub(crate) writer_done: AtomicBool,
    /// The wakers of asynchronous waiters (`Pending` futures, `Subscription::poll_recv`)
    /// that must also be woken when the writer thread ends; woken after `writer_done` is
    /// set.
    pub(crate) writer_gone: Arc<WakerSet>,
    /// Whether the last batch with commands answered one thread only: set by the writer,
    /// read by `execute` to skip trying `writer::lead_alone` when several threads write.
    pub(crate) lone_writer: AtomicBool,
    /// The log backend.
    log: Arc<dyn LogBackend>,
    /// The writer's counters ([`Engine::stats`]).
    pub(crate) stats: stats::StatsCell,
}

impl Shared {
    pub(crate) fn published(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn publish(&self, state: State) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
    }

    pub(crate) fn poison(&self, cause: &Error) {
        let mut p = self.poisoned.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            tracing::error!(%cause, "engine poisoned: refusing further writes until reopened");
            *p = Some(cause.to_string());
        }
    }

    pub(crate) fn poisoned(&self) -> Option<Error> {
        self.poisoned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|cause| Error::Poisoned {
                cause: cause.clone(),
            })
    }

    pub(crate) fn log(&self) -> &dyn LogBackend {
        &*self.log
    }
}

/// A command from the calling thread, and where its answer will arrive.
fn command_request(cmd: Command) -> (Request, Answer<Result<Committed>>) {
    let (tx, rx) = answer::channel();
    let req = Request::Command {
        cmd,
        reply: Some(tx),
        caller: Some(std::thread::current().id()),
    };
    (req, rx)
}

/// Queues `req` for the writer. The queue is bounded, so a send can block while the
/// writer works through it; a writer thread that has stopped or died never will, and the
/// send then ends with [`Error::Closed`] instead of blocking forever.
fn send_request(tx: &Sender<Request>, req: Request, shared: &Shared) -> Result<()> {
    let mut req = match tx.try_send(req) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Disconnected(_)) => return Err(Error::Closed),
        Err(TrySendError::Full(r)) => r,
    };
    loop {
        match tx.send_timeout(req, WAIT_CHECK) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Disconnected(_)) => return Err(Error::Closed),
            Err(SendTimeoutError::Timeout(r)) => {
                if shared.writer_done.load(Ordering::SeqCst) {
                    return Err(Error::Closed);
                }
                req = r;
            }
        }
    }
}

/// An open data directory.
pub struct Engine {
    shared: Arc<Shared>,
    tx: Option<Sender<Request>>,
    core: Option<writer::Core>,
    writer: Mutex<Option<JoinHandle<()>>>,
    lock: Mutex<Option<Box<dyn LockGuard>>>,
    report: RecoveryReport,
    read_only: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("root", &self.shared.paths.root)
            .field("read_only", &self.read_only)
            .field("last_lsn", &self.last_lsn())
            .finish()
    }
}

impl Engine {
    /// Opens (creating if needed) the data directory `dir` for writing: takes the writer
    /// lock, loads the newest valid snapshot, replays the log after it, cuts a torn tail,
    /// and starts the writer.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        Engine::open_mode(dir.as_ref(), options, false)
    }

    /// Opens `dir` read-only: no lock, no writes, works while another process writes.
    pub fn open_read_only(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        Engine::open_mode(dir.as_ref(), options, true)
    }

    fn open_mode(dir: &Path, options: Options, read_only: bool) -> Result<Engine> {
        let began = std::time::Instant::now();
        options.validate()?;
        let storage = Arc::clone(&options.storage);
        let paths = Paths::new(dir);
        let lock = if read_only {
            paths.check_exists(&*storage)?;
            None
        } else {
            storage::create_root_durable(&*storage, &paths.root)
                .map_err(|e| Error::io("create data directory", &paths.root, e))?;
            let guard = storage
                .try_lock(&paths.lock)
                .map_err(|e| Error::io("lock data directory", &paths.lock, e))?;
            match guard {
                Some(g) => Some(g),
                None => return Err(Error::Locked { path: paths.lock }),
            }
        };
        if !read_only {
            // The file log lives in `wal/`; another backend keeps its records elsewhere.
            let wal = options.log.is_none().then_some(&paths.wal);
            for dir in wal.into_iter().chain([&paths.snapshots]) {
                storage::create_dir_durable(&*storage, dir)
                    .map_err(|e| Error::io("create directory", dir, e))?;
            }
            snapshot::remove_temporaries(&*storage, &paths.snapshots)?;
        }
        let log: Arc<dyn LogBackend> = match &options.log {
            Some(log) => Arc::clone(log),
            None => Arc::new(FileLog::new(
                Arc::clone(&storage),
                &paths.wal,
                &paths.quarantine,
                options.segment_bytes,
            )),
        };
        let (state, report, log_writer) =
            crate::intern::scope(|| recover_state(&*storage, &*log, &paths, read_only))?;
        if let Some(t) = &report.torn_tail {
            tracing::warn!(
                file = %t.file.display(),
                offset = t.offset,
                bytes = t.bytes,
                lsn = %t.lsn,
                reason = %t.reason,
                saved_to = ?t.saved_to,
                "cut a torn write at the end of the log"
            );
        }
        let shared = Arc::new(Shared {
            paths,
            options,
            state: RwLock::new(Arc::new(state)),
            poisoned: Mutex::new(None),
            closed: AtomicBool::new(false),
            writer_done: AtomicBool::new(read_only),
            writer_gone: Arc::new(WakerSet::default()),
            lone_writer: AtomicBool::new(true),
            log,
            stats: stats::StatsCell::new(),
        });
        shared.stats.opened(began.elapsed(), report.replayed);
        let (tx, core, writer) = match log_writer {
            None => (None, None, None),
            Some(log_writer) => {
                let capacity = shared.options.max_batch * 4;
                let (tx, rx) = bounded(capacity);
                let (core, handle) =
                    writer::spawn(Arc::clone(&shared), log_writer, rx, report.replayed)?;
                (Some(tx), Some(core), Some(handle))
            }
        };
        Ok(Engine {
            shared,
            tx,
            core,
            writer: Mutex::new(writer),
            lock: Mutex::new(lock),
            report,
            read_only,
        })
    }

    /// What opening the directory found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory layout.
    pub fn paths(&self) -> &Paths {
        &self.shared.paths
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// Whether the engine was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The current time on the engine's clock.
    pub fn now(&self) -> crate::types::Timestamp {
        self.shared.options.clock.now()
    }

    /// The latest published (durable) state. Cheap: a reference-counted handle.
    pub fn state(&self) -> Arc<State> {
        self.shared.published()
    }

    /// LSN of the last published record.
    pub fn last_lsn(&self) -> Lsn {
        self.shared.published().last_lsn
    }

    /// The writer's counters since this engine opened: records, appends (group commits),
    /// log syncs, the group-commit size, each append's time until durable, the open's time.
    pub fn stats(&self) -> EngineStats {
        self.shared.stats.read()
    }

    /// The error that poisoned the engine, if it is poisoned.
    pub fn poisoned(&self) -> Option<Error> {
        self.shared.poisoned()
    }

    fn send(&self, req: Request) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(Error::ReadOnly)?;
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        send_request(tx, req, &self.shared)
    }

    /// Queues a command and returns at once; [`Pending::wait`] returns once it is durable.
    /// Commands from one thread are applied in the order they were submitted.
    ///
    /// Many commands in flight share one sync (group commit). A [`Pending`] is also a
    /// [`Future`], for an async caller that must not block its
    /// thread; here it is waited on.
    ///
    /// ```
    /// use session_engine::{Command, Engine, NewSession, Options, SessionId};
    ///
    /// # fn main() -> session_engine::Result<()> {
    /// let dir = tempfile::tempdir().expect("a temporary directory");
    /// let engine = Engine::open(dir.path(), Options::default())?;
    /// let id = SessionId::new("s1")?;
    /// let new = NewSession { id: Some(id.clone()), ..NewSession::default() };
    /// engine.execute(Command::CreateSession(Box::new(new)))?;
    /// let pending: Vec<_> = (0..10)
    ///     .map(|i| {
    ///         engine.submit(Command::RecordActivity {
    ///             session: id.clone(),
    ///             action: format!("step {i}"),
    ///             details: None,
    ///         })
    ///     })
    ///     .collect();
    /// let lsns: Vec<u64> = pending
    ///     .into_iter()
    ///     .map(|p| p.wait().map(|c| c.lsn.0))
    ///     .collect::<session_engine::Result<_>>()?;
    /// assert_eq!(lsns, (2..=11).collect::<Vec<_>>()); // in submission order
    /// assert_eq!(engine.state().session(&id).unwrap().body.activity_log.len(), 10);
    /// engine.close()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn submit(&self, cmd: Command) -> Pending {
        if self.read_only {
            return Pending::ready(Err(Error::ReadOnly));
        }
        let (req, rx) = command_request(cmd);
        match self.send(req) {
            Ok(()) => Pending::waiting(rx, &self.shared),
            Err(e) => Pending::ready(Err(e)),
        }
    }

    /// Runs a command and waits until it is durable.
    ///
    /// A command that fails validation appends nothing and returns a typed error.
    ///
    /// ```
    /// use session_engine::{Command, Engine, Error, JsonText, NewSession, Options, Outcome};
    ///
    /// # fn main() -> session_engine::Result<()> {
    /// let dir = tempfile::tempdir().expect("a temporary directory");
    /// let engine = Engine::open(dir.path(), Options::default())?;
    /// let created = engine.execute(Command::CreateSession(Box::new(NewSession::default())))?;
    /// let Outcome::Session(id) = created.outcome else { panic!("a new session") };
    /// let done = engine.execute(Command::RecordActivity {
    ///     session: id.clone(),
    ///     action: "user_input".into(),
    ///     details: Some(JsonText::parse(r#"{"message":"Hello"}"#)?),
    /// })?;
    /// assert!(done.appended);
    /// assert_eq!(engine.last_lsn(), done.lsn);
    ///
    /// // Refused: the session is ended, so no activity is recorded and nothing is appended.
    /// engine.execute(Command::End(id.clone()))?;
    /// let before = engine.last_lsn();
    /// let refused = engine.execute(Command::RecordActivity {
    ///     session: id.clone(),
    ///     action: "late".into(),
    ///     details: None,
    /// });
    /// assert!(matches!(refused, Err(Error::InvalidState { .. })));
    /// assert_eq!(engine.last_lsn(), before);
    /// engine.close()?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A lone writer's command does not pass through the queue: the calling thread runs
    /// its batch itself (`writer::lead_alone`). With several writers, the writer thread
    /// runs the batches, and one sync serves them all.
    pub fn execute(&self, cmd: Command) -> Result<Committed> {
        let Some(core) = &self.core else {
            return self.submit(cmd).wait();
        };
        if !self.shared.lone_writer.load(Ordering::Relaxed) {
            return self.submit(cmd).wait();
        }
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let (req, rx) = command_request(cmd);
        let mut req = Some(req);
        writer::lead_alone(core, &mut req);
        if let Some(req) = req {
            self.send(req)?;
        }
        Pending::waiting(rx, &self.shared).wait()
    }

    /// Makes everything accepted so far durable, whatever the durability mode.
    pub fn sync(&self) -> Result<()> {
        let (tx, rx) = answer::channel();
        self.send(Request::Sync(tx))?;
        wait_answer(&rx, &self.shared)
    }

    /// Takes a snapshot now and waits until it is on disk. Returns its LSN.
    pub fn snapshot(&self) -> Result<Lsn> {
        let (tx, rx) = answer::channel();
        self.send(Request::Snapshot(tx))?;
        wait_answer(&rx, &self.shared)
    }

    /// Takes in the records other writers appended to the log after this engine's last
    /// LSN, in place: for a log several engines write (a remote log, such as the NATS
    /// backend's stream), where a writer that is behind would otherwise have its next
    /// append refused. Returns the LSN the engine's state is at afterwards.
    ///
    /// The writer thread does it between two batches (commands already queued before it
    /// are decided first, those queued after it against the new state): it reads the
    /// records after the published state through [`LogBackend::read`], decodes and applies
    /// each exactly as recovery does (a record that does not decode or apply is
    /// [`Error::Corruption`] at its place, and nothing is taken in), tells the log's writer
    /// where the log now ends ([`crate::backend::LogWriter::caught_up`]), publishes the new
    /// state and sends the records to subscribers like the engine's own commits, so
    /// subscriptions and projections see them. A log with one writer (the file log, whose
    /// lock keeps other writers out) never has such records: there it returns the last LSN;
    /// a log writer that cannot take records in refuses, and nothing changes.
    ///
    /// A read-only engine has no writer: [`Error::ReadOnly`].
    pub fn catch_up(&self) -> Result<Lsn> {
        let (tx, rx) = answer::channel();
        self.send(Request::CatchUp(tx))?;
        wait_answer(&rx, &self.shared)
    }

    /// Committed events from `from` on: first those already in the log (catch-up), then
    /// new ones as they commit (live). A read-only engine's subscription ends at the end
    /// of the log.
    ///
    /// Every committed event comes once, in LSN order, with no gap; [`Subscription::recv`]
    /// blocks, [`Subscription::recv_timeout`] and [`Subscription::try_recv`] do not, and
    /// [`Subscription::recv_async`] is a future for an async caller.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_engine::{Command, Engine, EventBody, Lsn, NewSession, Options};
    ///
    /// # fn main() -> session_engine::Result<()> {
    /// let dir = tempfile::tempdir().expect("a temporary directory");
    /// let engine = Engine::open(dir.path(), Options::default())?;
    /// engine.execute(Command::CreateSession(Box::new(NewSession::default())))?;
    /// let mut events = engine.subscribe(Lsn(1)); // from the start: the catch-up comes first
    /// engine.execute(Command::CreateSession(Box::new(NewSession::default())))?;
    /// for lsn in 1..=2 {
    ///     let e = events.recv_timeout(Duration::from_secs(60))?.expect("an event");
    ///     assert_eq!(e.lsn, Lsn(lsn));
    ///     assert!(matches!(e.event.body, EventBody::SessionCreated { .. }));
    /// }
    /// assert!(events.try_recv()?.is_none()); // nothing more yet
    /// engine.close()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(&self, from: Lsn) -> Subscription {
        Subscription::new(Arc::clone(&self.shared), self.tx.clone(), from)
    }

    /// Stops the writer after the commands already queued, syncs the log and releases the
    /// lock. Idempotent; also done on drop (errors are then only logged).
    pub fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut result = Ok(());
        if let Some(tx) = &self.tx {
            let (rtx, rrx) = answer::channel();
            if send_request(tx, Request::Shutdown(rtx), &self.shared).is_ok() {
                result = match wait_answer(&rrx, &self.shared) {
                    Err(Error::Closed) => Ok(()),
                    other => other,
                };
            }
            // A caller may have run the shutdown batch; the writer thread then still waits
            // for a request before it can see that and exit. The send fails when the thread
            // is already gone (at once when no receiver is left, or once it finds the queue
            // full and the writer done), and cannot be lost otherwise.
            let _ = send_request(tx, Request::Wake, &self.shared);
        }
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take()
            && h.join().is_err()
        {
            result = Err(Error::Poisoned {
                cause: "the writer thread panicked".into(),
            });
        }
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        result
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the engine failed");
        }
    }
}
