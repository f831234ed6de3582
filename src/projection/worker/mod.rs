//! The projector thread. See the parent module for the invariants. By job:
//! * this file: the event loop (catch-up, absorbing events, deciding when to write,
//!   retries with backoff, progress);
//! * [`dirty`]: which files wait to be written, since which change (the watermark);
//! * [`files`]: writing the JSON files (sessions, chains, registry, marker), coalescing
//!   big ones by the cost of their last write, and the checkpoint;
//! * [`logs`]: the per-session logs (appends, torn tails, rotation, rebuilding them from
//!   the log);
//! * [`rebuild`]: full rebuilds and the check of the files at open;
//! * [`manifest`]: the ownership manifest of the files the projector created (the rule,
//!   its file format);
//! * [`ownership`]: the checks of the write and remove primitives against it, and the
//!   attic files are moved aside into.

mod dirty;
mod files;
mod logs;
pub(crate) mod manifest;
mod ownership;
mod rebuild;
mod step;

pub(crate) use rebuild::PrepareError;

use dirty::{Dirty, FileKey};
use logs::SessionLogs;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, never, select};

use super::format::ProjectionFormat;
use super::layout::Layout;
use super::logline::{self, LogLine};
use super::schema::{ChainFile, Marker, ProjectionPaths, agent_of_chain_file};
use super::{Ctl, Failure, ProjectionOptions, RebuildReport, Shared};
use crate::engine::{CommittedEvent, Engine, Subscription};
use crate::error::{Error, Result};
use crate::state::{Session, State};
use crate::storage::{
    OpenMode, Storage, write_atomic, write_atomic_unsynced, write_new_atomic,
    write_new_atomic_unsynced,
};
use crate::types::{AgentId, Lsn, SessionId};

/// Events the feeder hands over per message, at most.
const FEED_CHUNK: usize = 4096;
/// Longest the event loop absorbs queued events before it looks at the files again.
const DRAIN_BUDGET: Duration = Duration::from_millis(100);

/// Longest the feeder waits, after handing over events that ran the subscription dry,
/// before it takes more (see [`feed`]); a quarter of `flush_interval` when that is less.
const FEED_PACE: Duration = Duration::from_millis(5);
/// Longest delay between retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

enum Feed {
    Events(Vec<CommittedEvent>),
    Failed(Error),
}

fn failure(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Failure + use<> {
    let path = path.to_path_buf();
    move |e| Failure {
        op,
        path,
        kind: e.kind(),
        message: e.to_string(),
    }
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// The names in `dir`; an empty list when it does not exist.
fn list(storage: &dyn Storage, dir: &Path) -> std::result::Result<Vec<String>, Failure> {
    match storage.list_dir(dir) {
        Ok(v) => Ok(v),
        Err(e) if is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(failure("list projection directory", dir)(e)),
    }
}

pub(crate) fn spawn(projection: Projection, ctl: Receiver<Ctl>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("session-engine-projector".into())
        .spawn(move || {
            lower_priority();
            projection.run(ctl)
        })
        .map_err(|e| Error::io("spawn projector thread", PathBuf::new(), e))
}

/// How much nicer than the rest of the process the projector thread runs.
const PROJECTOR_NICENESS: i32 = 10;

/// Makes the calling thread (the projector) yield the CPU to the writer and the callers
/// that wait for acknowledgements: on a machine with few CPUs the projector's rendering
/// competes with them, and projections are allowed to lag (a waiter still gets them
/// written at once; with nothing else to run the projector gets the whole CPU anyway).
/// Linux only (a thread's niceness is per thread there); best effort.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now != -1 || *libc::__errno_location() == 0 {
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid, (now + PROJECTOR_NICENESS).min(19));
        }
    }
}

/// Hands the subscription's events to the projector in chunks. Once a chunk has taken
/// every event committed so far, it waits up to `pace` (or until the projector `kick`s it
/// for a waiter) before it takes more: commits that come one at a time (a caller that
/// writes one durable event and waits for it) are then gathered into one hand-over per
/// `pace`, instead of waking this thread and the projector's once per commit, which on a
/// machine of two CPUs took CPU from the very commits being waited for (W10 in
/// `docs/benchmarks.md`, *Issue 13's targets*).
/// The files are written `flush_interval` after a change anyway.
fn feed(mut sub: Subscription, tx: Sender<Feed>, kick: Receiver<()>, pace: Duration) {
    loop {
        match sub.recv() {
            Ok(first) => {
                let mut events = vec![first];
                while events.len() < FEED_CHUNK {
                    match sub.try_recv() {
                        Ok(Some(e)) => events.push(e),
                        _ => break,
                    }
                }
                let dry = events.len() < FEED_CHUNK;
                if tx.send(Feed::Events(events)).is_err() {
                    return;
                }
                if dry && !pace.is_zero() {
                    let _ = kick.recv_timeout(pace);
                }
            }
            Err(Error::Closed) => return,
            Err(e) => {
                let _ = tx.send(Feed::Failed(e));
                return;
            }
        }
    }
}

pub(crate) struct Projection {
    engine: Arc<Engine>,
    storage: Arc<dyn Storage>,
    paths: ProjectionPaths,
    /// Where the directory's format puts each file, and how it renders them.
    layout: Layout,
    options: ProjectionOptions,
    shared: Arc<Shared>,
    /// The last event absorbed.
    received: Lsn,
    /// Every file reflects at least this LSN.
    projected: Lsn,
    /// What the marker file says.
    marker: Lsn,
    needs_rebuild: bool,
    /// JSON files to rewrite.
    dirty: Dirty,
    /// Per-session log lines to append, logs to rebuild, what each log ends with.
    logs: SessionLogs,
    dirty_since: Option<Instant>,
    absorbed_since_flush: usize,
    last_checkpoint: Instant,
    /// When each big file's last write started and how long it took (see
    /// [`Projection::gate`]); small files are not kept.
    costs: HashMap<FileKey, (Instant, Duration)>,
    /// The earliest a file held back by its cost may be written, when one is.
    gated_until: Option<Instant>,
    /// When the last pass over the dirty files started and how long it took (see
    /// [`Projection::pass_gate`]).
    last_pass: Option<(Instant, Duration)>,
    /// A waiter wants the files to reflect this LSN as soon as possible.
    urgent: Lsn,
    retry_at: Option<Instant>,
    consecutive_failures: u32,
    /// The last failure was a file another program wrote where a projection goes:
    /// retrying at once cannot help.
    blocked_by_foreign: bool,
    dirs_ready: bool,
    /// The ownership manifest, once the check at open succeeded (see [`manifest`]).
    manifest: std::sync::Mutex<Option<manifest::Manifest>>,
    /// The attic folder of this process, once something was moved aside.
    attic: std::sync::Mutex<Option<PathBuf>>,
}

impl Projection {
    pub(crate) fn new(
        engine: Arc<Engine>,
        options: ProjectionOptions,
        format: ProjectionFormat,
        shared: Arc<Shared>,
    ) -> Projection {
        let storage = Arc::clone(&engine.options().storage);
        let layout = Layout::new(&engine.paths().root, format);
        let paths = layout.paths().clone();
        Projection {
            engine,
            storage,
            paths,
            layout,
            options,
            shared,
            received: Lsn::ZERO,
            projected: Lsn::ZERO,
            marker: Lsn::ZERO,
            needs_rebuild: false,
            dirty: Dirty::default(),
            logs: SessionLogs::default(),
            dirty_since: None,
            absorbed_since_flush: 0,
            last_checkpoint: Instant::now(),
            costs: HashMap::new(),
            gated_until: None,
            last_pass: None,
            urgent: Lsn::ZERO,
            retry_at: None,
            consecutive_failures: 0,
            blocked_by_foreign: false,
            dirs_ready: false,
            manifest: std::sync::Mutex::new(None),
            attic: std::sync::Mutex::new(None),
        }
    }

    fn run(mut self, ctl: Receiver<Ctl>) {
        let from = self.catch_up();
        let (tx, data) = bounded::<Feed>(16);
        let (kick_tx, kick) = bounded::<()>(1);
        let pace = FEED_PACE.min(self.options.flush_interval / 4);
        let sub = self.engine.subscribe(from);
        let feeder = std::thread::Builder::new()
            .name("session-engine-projector-feed".into())
            .spawn(move || feed(sub, tx, kick, pace));
        let feeder = match feeder {
            Ok(h) => h,
            Err(e) => {
                self.shared.update(|p| {
                    p.fatal = Some(format!("cannot spawn the feeder thread: {e}"));
                    p.status.running = false;
                });
                return;
            }
        };
        let never_ctl = never();
        let mut ctl = Some(ctl);
        self.publish();
        self.shared.update(|p| p.status.ready = true);
        loop {
            let timeout = self.next_wake().map_or(Duration::from_secs(3600), |t| {
                t.saturating_duration_since(Instant::now())
            });
            let ctl_rx = ctl.as_ref().unwrap_or(&never_ctl);
            let mut disconnected = false;
            select! {
                recv(data) -> msg => match msg {
                    Ok(Feed::Events(v)) => self.absorb(&v),
                    Ok(Feed::Failed(e)) => self.fatal(&e),
                    Err(_) => disconnected = true,
                },
                recv(ctl_rx) -> msg => match msg {
                    Ok(Ctl::Flush(lsn)) => {
                        // A waiter for an LSN not committed yet must not turn batching off
                        // until it is.
                        self.urgent = self.urgent.max(lsn.min(self.engine.last_lsn()));
                        // Its events are handed over now, not after the feeder's pause.
                        let _ = kick_tx.try_send(());
                        // A waiter gets a fresh attempt rather than the end of a backoff.
                        if self.retry_at.is_some() {
                            self.retry_at = Some(Instant::now());
                        }
                    }
                    Ok(Ctl::Rebuild(reply, format)) => {
                        let r = match format {
                            Some(f) if f != self.layout.format() => self.rebuild_as(f),
                            _ => self.rebuild(),
                        };
                        let _ = reply.send(r);
                    }
                    Err(_) => ctl = None,
                },
                default(timeout) => {}
            }
            // Everything already committed is absorbed before files are written (within a
            // time budget): files are written from the latest state anyway, so each
            // absorbed event is one rewrite fewer of the files it touches.
            let drain_until = Instant::now() + DRAIN_BUDGET;
            while !disconnected
                && self.absorbed_since_flush < self.options.max_batch_events
                && Instant::now() < drain_until
            {
                match data.try_recv() {
                    Ok(Feed::Events(v)) => self.absorb(&v),
                    Ok(Feed::Failed(e)) => self.fatal(&e),
                    Err(_) => break,
                }
            }
            if disconnected {
                self.finish();
                let _ = feeder.join();
                return;
            }
            self.step(false);
            self.publish();
        }
    }

    pub(super) fn fatal(&mut self, e: &Error) {
        tracing::error!(error = %e, "projections stopped: the log cannot be read");
        let reason = e.to_string();
        self.shared.update(|p| {
            p.status.last_error = Some(format!("projections stopped: {reason}"));
            p.fatal = Some(reason);
        });
    }

    /// Decides where to start: after a valid marker (re-projecting missing files), or
    /// after a full rebuild. Returns the first LSN to subscribe from.
    pub(super) fn catch_up(&mut self) -> Lsn {
        let last = self.engine.last_lsn();
        // Files an adoption took over while no projector ran (an import in place) are the
        // engine's before anything here looks at or writes them.
        for s in self.engine.state().sessions.values() {
            if s.adoption().is_some_and(|a| a.pristine)
                && let Err(f) = self.adopt_files(s)
            {
                tracing::warn!(error = %f.to_error(), "projections: cannot adopt files");
            }
        }
        let marker = match self.storage.read(&self.paths.marker) {
            Ok(bytes) => Marker::parse(&bytes).map(Lsn),
            Err(_) => None,
        };
        match marker {
            Some(m) if m <= last => {
                self.received = m;
                self.marker = m;
                let state = self.engine.state();
                if let Err(f) = self.check_missing(&state) {
                    tracing::warn!(error = %f.to_error(), "projections: cannot check files");
                    self.needs_rebuild = true;
                    self.received = state.last_lsn;
                }
                if self.has_file_work() {
                    self.dirty_since = Some(Instant::now());
                }
                if self.needs_rebuild {
                    self.received.next()
                } else {
                    m.next()
                }
            }
            found => {
                if let Some(m) = found {
                    tracing::warn!(
                        marker = %m,
                        last = %last,
                        "projection marker is ahead of the log; rebuilding projections"
                    );
                }
                match self.rebuild() {
                    Ok(r) => r.lsn.next(),
                    Err(_) => {
                        // Retried from `step`; the rebuild covers at least this state, so
                        // the events up to it need not be absorbed one by one.
                        self.received = self.engine.last_lsn();
                        self.received.next()
                    }
                }
            }
        }
    }

    pub(super) fn has_file_work(&self) -> bool {
        self.needs_rebuild
            || !self.dirty.sessions.is_empty()
            || !self.dirty.chains.is_empty()
            || self.dirty.registry.is_some()
            || !self.logs.lines.is_empty()
            || !self.logs.rebuild.is_empty()
    }

    pub(super) fn is_clean(&self) -> bool {
        !self.has_file_work()
    }

    /// The watermark: every projection file reflects at least this LSN. Each file still
    /// to be written holds it below its oldest unwritten change; with nothing to write it
    /// is the last event absorbed. A full rebuild or a log rebuild still to do holds it
    /// at the marker (what they repair is not tracked per change).
    pub(super) fn watermark(&self) -> Lsn {
        if self.needs_rebuild || !self.logs.rebuild.is_empty() {
            return self.marker.min(self.received);
        }
        let mut oldest = self.dirty.oldest();
        for lines in self.logs.lines.values() {
            if let Some(l) = lines.first() {
                oldest = Some(oldest.map_or(l.key.0, |o| o.min(l.key.0)));
            }
        }
        match oldest {
            Some(o) => Lsn(o.get().saturating_sub(1)).min(self.received),
            None => self.received,
        }
    }

    pub(super) fn absorb(&mut self, batch: &[CommittedEvent]) {
        let state = self.engine.state();
        let mut out = Vec::new();
        for ce in batch {
            // Events a rebuild already covered come again from the feeder.
            if ce.lsn <= self.received {
                continue;
            }
            self.received = ce.lsn;
            self.absorbed_since_flush += 1;
            let body = &ce.event.body;
            for agent in body.agents() {
                self.dirty.chain(agent, ce.lsn);
            }
            for id in body.sessions() {
                self.dirty.registry(ce.lsn);
                self.dirty.session(id, ce.lsn);
            }
            out.clear();
            // Files the event says the engine took over become its own before they are
            // written: what an amplihack adoption read; a chain file that holds exactly
            // what the engine writes for an imported chain.
            let adopted = match &ce.event.body {
                crate::event::EventBody::SessionsAdopted(a) => a
                    .sessions
                    .iter()
                    .filter_map(|a| state.session(&a.session))
                    .try_for_each(|s| self.adopt_files(s)),
                crate::event::EventBody::ChainsImported { chains } => {
                    let paths: Vec<PathBuf> = chains
                        .iter()
                        .map(|c| self.paths.chain_file(&c.agent))
                        .filter(|p| self.is_imported_chain_file(&state, p))
                        .collect();
                    self.adopt_paths(&paths)
                }
                _ => Ok(()),
            };
            if let Err(f) = adopted {
                tracing::warn!(error = %f.to_error(), "projections: cannot adopt files");
            }
            self.layout.log_lines(ce.lsn, &ce.event, &state, &mut out);
            for (id, line) in out.drain(..) {
                if !self.logs.rebuild.contains(&id) {
                    self.logs.pending_bytes += line.text.len();
                    self.logs.lines.entry(id).or_default().push(line);
                }
            }
            if self.logs.pending_bytes > self.options.max_pending_log_bytes {
                for (id, _) in std::mem::take(&mut self.logs.lines) {
                    self.logs.rebuild.insert(id);
                }
                self.logs.pending_bytes = 0;
            }
        }
        if self.dirty_since.is_none() && self.has_file_work() {
            self.dirty_since = Some(Instant::now());
        }
    }
}
