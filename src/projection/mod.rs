//! Projections: the JSON files the seeds' tools read, materialised from the log off the
//! hot path.
//!
//! ```text
//! writer ──committed batches──▶ feeder thread (Engine::subscribe) ──▶ projector thread
//!                                                                      │ absorb: note touched sessions,
//!                                                                      │   chains, log lines
//!                                                                      │ flush (coalesced by time and cost): rewrite
//!                                                                      │   each touched file from Engine::state()
//!                                                                      ▼ checkpoint (1 s): sync_fs, marker at watermark
//! ```
//!
//! The files and their formats are in [`schema`] (`registry.json`, `session_<id>.json`,
//! chain files; [`schema::amplihack`] for the `amplihack` format) and [`logline`]
//! (per-session logs). A data directory's files are in one format ([`mod@format`]), and the
//! projector reaches them only through its [`Layout`], which names every path and renders
//! every file, so the projector's own code is the same for every format.
//!
//! Architecture invariants:
//! * Projections are derived. Nothing reads them back except the marker, the format record,
//!   the ownership manifest and the tail of a per-session log (to skip lines it already
//!   holds); a damaged or missing projection file never stops the engine from opening and
//!   is rewritten.
//! * The engine writes, replaces and removes only files it created, which the manifest
//!   `projections.manifest` records (see `worker/manifest.rs` for the rule, the format and
//!   the attic). A file it did not write at a path the state is about to be projected to
//!   stops [`Projector::start`] (and so `SessionManager::open`) with
//!   [`Error::ForeignFiles`]; one that appears there later is never replaced (the write
//!   fails, named, like any projection failure); its own file that another program
//!   changed is moved into the attic `projections-attic/` before it is written again; its
//!   own files it no longer wants are moved there too, never deleted. A new path is
//!   recorded durably before the file is created, so a crash never makes the engine's
//!   own file look foreign. Files the log says the engine took over (what an amplihack
//!   adoption read; a seed 003 chain file equal, as JSON, to what the engine writes for
//!   an imported chain) are recorded as its own.
//! * Commands never wait for projections, and a projection failure is never a command's
//!   failure (the event is committed). A projection I/O error is logged
//!   (`tracing::warn!`), retried with exponential backoff (the failed files stay dirty),
//!   and reported through [`Projector::status`] (`failures`, `last_error`,
//!   [`ProjectionStatus::is_behind`]) and [`Projector::wait_for`]; the engine keeps
//!   accepting commands. Files still unwritten when the engine closes are written by the
//!   next open, which re-projects everything after the marker.
//! * Only the projector thread writes projection files (an explicit rebuild runs on that
//!   thread too), so two writers never race on a temporary file.
//! * JSON files are replaced atomically, without syncs of their own
//!   (`storage::write_atomic_unsynced`: a fresh temporary file renamed over the old one),
//!   so a reader opening one always gets a whole document, the old or the new, never a
//!   torn one; logs are appended (unsynced too) and a torn last line is cut before the
//!   next append. Nothing on the path of a durable commit waits for a projection sync.
//! * Durability comes from checkpoints, at most every `checkpoint_interval` (1 s): one
//!   `Storage::sync_fs` of the data directory's file system makes every file written so
//!   far durable, and only then is the marker (`projections.json`) written, durably, at
//!   the *watermark* W: each file still to be written holds W below its oldest unwritten
//!   change (W = that LSN - 1), and with nothing to write W is the last event absorbed.
//!   So the marker says "every projection file reflects at least LSN W". A power cut can
//!   leave a file written after the last checkpoint stale, empty, torn or missing; every
//!   such file was written for a change after W, so at open the projector re-absorbs the
//!   events after the marker, which marks each of them dirty again and rewrites it. A new
//!   path is still recorded durably in the manifest before its file is created. A missing,
//!   unreadable or too-new marker (the log is shorter than it says) means a full rebuild.
//! * The lag is bounded: a touched file is rewritten at most `flush_interval` after the
//!   event arrives, unless its last write took long: a file is rewritten no sooner than
//!   `coalesce_factor` (10) times its last write's duration after that write started,
//!   so a file whose write takes `t` lags by at most about `flush_interval +
//!   coalesce_factor × t` plus one pass over the other due files (`t` grows with the
//!   file: about 1 s for a session of 1M activities); the registry waits at least
//!   `registry_interval` between rewrites, and the marker follows the watermark within
//!   `checkpoint_interval`. A waiter ([`Projector::wait_for`]) makes the projector write
//!   every file at once. After the engine closes, the projector drains every event and
//!   writes everything before [`Projector::join`] returns, so the files are complete (or
//!   `join` returns the failure that kept them from being, and the status says so).
//!   Passes over the dirty files are spaced the same way: a pass starts no sooner than
//!   `coalesce_factor` times what the last pass took after that pass started (when that
//!   is longer than `flush_interval`), so when thousands of small files change round
//!   after round each collects the changes of that time into one rewrite; with it the
//!   bound is about `flush_interval + coalesce_factor × p + p`, `p` the longest pass
//!   (which grows with the session files changed in it: a replace-by-rename costs
//!   about a millisecond on ext4, `docs/benchmarks.md`).
//! * Files are written one after the other on the projector thread: with no syncs to
//!   overlap, more threads only contend on the directory. The thread runs at nice +10
//!   (Linux), so on a machine with few CPUs its rendering yields to the writer and the
//!   callers waiting for acknowledgements.

pub mod format;
pub mod layout;
pub mod logline;
pub mod pyjson;
pub mod schema;
mod worker;

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::types::Lsn;

pub use format::ProjectionFormat;
pub use layout::Layout;
pub use schema::{ChainFile, ProjectionPaths, RegistryFile, SessionFile};
pub use worker::manifest::OwnershipSummary;

/// What the ownership records of the data directory at `paths` say (how many files the
/// manifest `projections.manifest` holds as the engine's, how many folders the attic
/// `projections-attic/` has), read without changing anything.
pub fn ownership(
    storage: &dyn Storage,
    paths: &ProjectionPaths,
) -> std::io::Result<OwnershipSummary> {
    worker::manifest::summary(storage, &paths.root)
}

/// How the projector batches and retries.
#[derive(Clone, Debug)]
pub struct ProjectionOptions {
    /// How long touched files may wait to be rewritten, so that many events coalesce into
    /// one rewrite per file.
    pub flush_interval: Duration,
    /// Least time between two rewrites of `registry.json`.
    pub registry_interval: Duration,
    /// How often the marker may move: a checkpoint makes every file written so far
    /// durable (`Storage::sync_fs`, one call for all of them) and then writes the marker
    /// at the watermark (the files are written without syncs of their own).
    pub checkpoint_interval: Duration,
    /// A file whose last write took `t` is rewritten no sooner than `coalesce_factor × t`
    /// after that write started (a waiter or the close still writes it at once): big
    /// files coalesce more changes per rewrite, so the projector spends at most about
    /// `1 / coalesce_factor` of its time on any one of them and a growing session costs
    /// near-linear time in total. Small files keep `flush_interval`.
    pub coalesce_factor: u32,
    /// Most events absorbed before a flush is forced. Large by default: the files are
    /// written from the latest state, so absorbing more events first costs only the
    /// memory of their log lines and saves rewrites (10,000 sessions of 10 activities
    /// loaded at once took 100 s with 8,192, each forced flush rewriting nearly every
    /// session file).
    pub max_batch_events: usize,
    /// First delay before retrying a failed write; it doubles per failure, up to 5 s.
    pub retry_delay: Duration,
    /// Failed attempts in a row after which waiters get the error (the projector keeps
    /// retrying, at the longest delay).
    pub max_retries: u32,
    /// Rotate a per-session log to `logs/archive/session_<id>.<n>.log` before an append
    /// would take it past this size. A rebuild writes each log whole again (and removes
    /// its rotated parts); rotation resumes with the next append.
    pub log_max_bytes: Option<u64>,
    /// Log text held for appending, at most. Past it (a long write outage), the pending
    /// lines are dropped and those logs are rebuilt from the log once writing works again.
    pub max_pending_log_bytes: usize,
    /// The format to write the files in (see [`mod@format`]): `None` uses the one the data
    /// directory records (`seed` for a new one); another format than the recorded one
    /// makes [`Projector::start`] fail with [`Error::ProjectionFormatMismatch`]. The first
    /// writable open records it; only [`Projector::rebuild_as`] changes it.
    pub format: Option<ProjectionFormat>,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        ProjectionOptions {
            flush_interval: Duration::from_millis(20),
            registry_interval: Duration::from_millis(100),
            checkpoint_interval: Duration::from_secs(1),
            coalesce_factor: 10,
            max_batch_events: 1 << 20,
            retry_delay: Duration::from_millis(100),
            max_retries: 3,
            log_max_bytes: None,
            max_pending_log_bytes: 32 << 20,
            format: None,
        }
    }
}

/// What the projector has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    /// Every projection file reflects the state at least as of this LSN.
    pub projected: Lsn,
    /// The last event the projector has received.
    pub received: Lsn,
    /// The LSN the marker file records.
    pub marker: Lsn,
    /// Failed write attempts since start.
    pub failures: u64,
    /// Failed attempts in a row (0 after a success).
    pub consecutive_failures: u32,
    /// The last failure, while it is unresolved.
    pub last_error: Option<String>,
    /// Full rebuilds done since start (at open, or asked for).
    pub rebuilds: u64,
    /// Per-session logs rebuilt from the log because they were missing or damaged.
    pub logs_rebuilt: u64,
    /// Whether the projector thread is still running.
    pub running: bool,
    /// Whether the catch-up at open is done (the other fields mean little before).
    pub ready: bool,
    /// The format the files are written in.
    pub format: ProjectionFormat,
}

impl ProjectionStatus {
    /// Whether some projection file does not reflect every event received yet. Normal for
    /// a moment while running (the files lag by up to `flush_interval`); once the
    /// projector stopped (`!running`, after the engine closed), it means writing them
    /// failed and the next open writes them (`last_error` says why).
    pub fn is_behind(&self) -> bool {
        self.projected < self.received
    }
}

/// The LSN the marker (`projections.json`) of the data directory at `paths` records:
/// every projection file reflects the log at least up to it. `None` when there is no
/// valid marker (never written, being rebuilt, or damaged).
pub fn marker_lsn(storage: &dyn Storage, paths: &ProjectionPaths) -> Option<Lsn> {
    let bytes = storage.read(&paths.marker).ok()?;
    schema::Marker::parse(&bytes).map(Lsn)
}

/// What a full rebuild wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// The LSN the rebuilt files reflect.
    pub lsn: Lsn,
    /// Session files written.
    pub sessions: u64,
    /// Chain files written.
    pub chains: u64,
    /// Per-session logs written.
    pub logs: u64,
    /// Files of the engine's own it no longer wants, moved into the attic
    /// (`projections-attic/`): projections of sessions or chains the state does not have,
    /// files in the wrong place, rotated logs, leftover temporary files. Files the engine
    /// did not write are never moved or removed.
    pub moved_aside: u64,
}

/// The projector's error, kept so every waiter can get a copy.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    op: &'static str,
    path: std::path::PathBuf,
    kind: std::io::ErrorKind,
    message: String,
}

impl Failure {
    fn to_error(&self) -> Error {
        if self.op == worker::manifest::FOREIGN_OP {
            return Error::ForeignFiles {
                files: vec![self.path.clone()],
            };
        }
        Error::io(
            self.op,
            self.path.clone(),
            std::io::Error::new(self.kind, self.message.clone()),
        )
    }
}

#[derive(Debug, Default)]
pub(crate) struct Progress {
    status: ProjectionStatus,
    /// Set once failures reached `max_retries` and until a flush succeeds.
    failure: Option<Failure>,
    /// Counts the failed attempts made while `failure` is set, so that a waiter only
    /// reports a failure of an attempt made after it started waiting.
    failure_seq: u64,
    /// An error that stopped the feeder (a log that cannot be read).
    fatal: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

pub(crate) enum Ctl {
    /// A waiter wants everything up to this LSN written now.
    Flush(Lsn),
    /// Rebuild every file from the state (in another format, when one is given).
    Rebuild(Sender<Result<RebuildReport>>, Option<ProjectionFormat>),
}

/// The handle of a running projector.
#[derive(Debug)]
pub struct Projector {
    shared: Arc<Shared>,
    ctl: Sender<Ctl>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Projector {
    /// Starts projecting `engine`'s log into its data directory. Checks first, on the
    /// calling thread, that no path the current state is projected to holds a file the
    /// engine did not write ([`Error::ForeignFiles`] otherwise, naming them; nothing is
    /// changed), without reading the files. Then catches up in the background: from the
    /// marker if it is valid, with a full rebuild otherwise.
    pub fn start(engine: Arc<Engine>, options: ProjectionOptions) -> Result<Projector> {
        if engine.is_read_only() {
            return Err(Error::ReadOnly);
        }
        let root = engine.paths().root.clone();
        let storage = Arc::clone(&engine.options().storage);
        let (format, known) = format::decide(
            &*storage,
            &root,
            &ProjectionPaths::new(&root).marker,
            options.format,
        )?;
        let shared = Arc::new(Shared::default());
        let mut projection = worker::Projection::new(engine, options, format, Arc::clone(&shared));
        // The check at open: files another tool wrote where the projections of the
        // current state go stop the open; an I/O error is only a warning, and the
        // projector checks again before it writes anything.
        match projection.prepare() {
            Ok(()) => {}
            Err(worker::PrepareError::Refused(e)) => return Err(e),
            Err(worker::PrepareError::Io(f)) => tracing::warn!(
                error = %f.to_error(),
                "projections: cannot check the files at open; the projector checks again \
                 before it writes any"
            ),
        }
        // Recorded only once the open goes on: a refused open writes nothing.
        if !known {
            format::record(&*storage, &root, format)?;
        }
        shared.update(|p| {
            p.status.running = true;
            p.status.format = format;
        });
        let (ctl, ctl_rx) = bounded(64);
        let thread = worker::spawn(projection, ctl_rx)?;
        Ok(Projector {
            shared,
            ctl,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The format the projector writes.
    pub fn format(&self) -> ProjectionFormat {
        self.shared.lock().status.format
    }

    /// A copy of the projector's progress.
    pub fn status(&self) -> ProjectionStatus {
        self.shared.lock().status.clone()
    }

    /// Waits until the catch-up at open is done and every projection file reflects the
    /// state at least as of `lsn`, asking the projector to write at once. `Ok(true)` once
    /// they do, `Ok(false)` when `timeout` passed first. An error when an attempt made
    /// while waiting fails after `max_retries` failures in a row (the projector keeps
    /// retrying), or when the projector stopped short of `lsn`.
    pub fn wait_for(&self, lsn: Lsn, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut asked = false;
        let mut p = self.shared.lock();
        let seq = p.failure_seq;
        loop {
            if p.status.ready && p.status.projected >= lsn {
                return Ok(true);
            }
            if let Some(f) = &p.failure
                && p.failure_seq > seq
                && p.status.received >= lsn
            {
                return Err(f.to_error());
            }
            if !p.status.running {
                return Err(match &p.fatal {
                    Some(reason) => Error::Poisoned {
                        cause: format!("the projector stopped: {reason}"),
                    },
                    None => match &p.failure {
                        Some(f) => f.to_error(),
                        None => Error::Closed,
                    },
                });
            }
            if !asked {
                // Best effort: a full control queue already holds a flush request.
                let _ = self.ctl.try_send(Ctl::Flush(lsn));
                asked = true;
            }
            let wait = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    d - now
                }
                None => Duration::from_secs(3600),
            };
            p = self
                .shared
                .changed
                .wait_timeout(p, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Rewrites every projection file from the current state, moves its own stale ones
    /// into the attic (never touching a file it did not write), and waits until that is
    /// done.
    pub fn rebuild(&self) -> Result<RebuildReport> {
        let (tx, rx) = bounded(1);
        self.ctl
            .send(Ctl::Rebuild(tx, None))
            .map_err(|_| Error::Closed)?;
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Rewrites every projection file in `format`, which becomes the directory's format:
    /// the previous format's files are moved aside (`<name>.retired`), never deleted. The
    /// only way to change a directory's format.
    pub fn rebuild_as(&self, format: ProjectionFormat) -> Result<RebuildReport> {
        let (tx, rx) = bounded(1);
        self.ctl
            .send(Ctl::Rebuild(tx, Some(format)))
            .map_err(|_| Error::Closed)?;
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Waits for the projector thread to finish. It finishes once the engine is closed
    /// and every event has been projected (or writing failed `max_retries` times in a
    /// row, which is returned as the error). The error is the projector's only: every
    /// event it could not project is in the log, and [`Projector::status`] records it too
    /// (`last_error`, [`ProjectionStatus::is_behind`]).
    pub fn join(&self) -> Result<()> {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            let cause = "the projector thread panicked".to_string();
            self.shared.update(|p| {
                p.status.running = false;
                p.status.last_error = Some(cause.clone());
            });
            return Err(Error::Poisoned { cause });
        }
        let p = self.shared.lock();
        if let Some(reason) = &p.fatal {
            return Err(Error::Poisoned {
                cause: format!("the projector stopped: {reason}"),
            });
        }
        match &p.failure {
            Some(f) => Err(f.to_error()),
            None => Ok(()),
        }
    }
}

/// Rebuilds every projection of `engine` once, on the calling thread. For an engine that
/// has no running [`Projector`] (which would otherwise race with this on the same files).
/// `options.format` chooses the format as for [`Projector::start`].
pub fn rebuild(engine: &Arc<Engine>, options: &ProjectionOptions) -> Result<RebuildReport> {
    if engine.is_read_only() {
        return Err(Error::ReadOnly);
    }
    let format = resolve_format(engine, options.format)?;
    let shared = Arc::new(Shared::default());
    let mut p = worker::Projection::new(Arc::clone(engine), options.clone(), format, shared);
    match p.prepare() {
        Ok(()) => {}
        Err(worker::PrepareError::Refused(e)) => return Err(e),
        Err(worker::PrepareError::Io(f)) => return Err(f.to_error()),
    }
    p.rebuild()
}

/// The format of `engine`'s data directory for a writable open asking for `requested`,
/// recorded there if it was not yet (see [`format::resolve`]).
pub fn resolve_format(
    engine: &Engine,
    requested: Option<ProjectionFormat>,
) -> Result<ProjectionFormat> {
    let root = &engine.paths().root;
    let paths = ProjectionPaths::new(root);
    format::resolve(&*engine.options().storage, root, &paths.marker, requested)
}
