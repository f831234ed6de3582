//! The projector thread: catch-up, absorbing events, coalesced flushes, checkpoints,
//! retries, rebuilds. See the parent module for the invariants.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, never, select};

use super::logline::{self, LogLine};
use super::schema::{
    ChainFile, Marker, ProjectionPaths, RegistryFile, SessionFile, agent_of_chain_file,
    rotated_log_of, session_id_of_file, session_id_of_log,
};
use super::{Ctl, Failure, ProjectionOptions, RebuildReport, Shared};
use crate::engine::{CommittedEvent, Durability, Engine, Subscription};
use crate::error::{Error, Result};
use crate::state::{State, Status};
use crate::storage::{OpenMode, Storage, write_atomic};
use crate::types::{AgentId, Lsn, SessionId};

/// Events the feeder hands over per message, at most.
const FEED_CHUNK: usize = 4096;
/// Log text a rebuild buffers before appending it to the files.
const REBUILD_BUFFER_BYTES: usize = 8 << 20;
/// Longest delay between retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

enum Feed {
    Events(Vec<CommittedEvent>),
    Failed(Error),
}

/// What the last line of a per-session log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tail {
    /// The file (or its newest rotated part) ends with the line at this key.
    Key((Lsn, u32)),
    /// There is no log for the session yet.
    Missing,
    /// The last line is not one of ours.
    Damaged,
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

pub(crate) fn spawn(
    engine: Arc<Engine>,
    options: ProjectionOptions,
    shared: Arc<Shared>,
    ctl: Receiver<Ctl>,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("session-engine-projector".into())
        .spawn(move || Projection::new(engine, options, shared).run(ctl))
        .map_err(|e| Error::Io {
            op: "spawn projector thread",
            path: PathBuf::new(),
            source: e,
        })
}

fn feed(mut sub: Subscription, tx: Sender<Feed>) {
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
                if tx.send(Feed::Events(events)).is_err() {
                    return;
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

/// Most threads projection files are written on at once.
const WRITE_THREADS: usize = 16;

/// Fewest files worth a thread of their own.
const FILES_PER_THREAD: usize = 32;

/// Runs `write` for every item, on several threads when there are many, and returns the
/// first failure in item order. Each write of a projection file ends in syncs, and a sync
/// waits for the disk (and the file system's journal); run side by side, they overlap and
/// share journal commits. A thread stops at its own first failure.
fn in_parallel<T: Sync>(
    items: &[T],
    write: impl Fn(&T) -> Result<(), Failure> + Sync,
) -> Result<(), Failure> {
    let threads = WRITE_THREADS.min(items.len() / FILES_PER_THREAD).max(1);
    if threads == 1 {
        return items.iter().try_for_each(write);
    }
    let write = &write;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().try_for_each(write)))
            .collect();
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        results.into_iter().collect()
    })
}

pub(crate) struct Projection {
    engine: Arc<Engine>,
    storage: Arc<dyn Storage>,
    paths: ProjectionPaths,
    options: ProjectionOptions,
    shared: Arc<Shared>,
    /// The last event absorbed.
    received: Lsn,
    /// Every file reflects at least this LSN.
    projected: Lsn,
    /// What the marker file says.
    marker: Lsn,
    needs_rebuild: bool,
    dirty_sessions: BTreeSet<SessionId>,
    dirty_chains: BTreeSet<AgentId>,
    registry_dirty: bool,
    lines: BTreeMap<SessionId, Vec<LogLine>>,
    /// Bytes of text in `lines`.
    pending_bytes: usize,
    rebuild_logs: BTreeSet<SessionId>,
    tails: HashMap<SessionId, Tail>,
    dirty_since: Option<Instant>,
    absorbed_since_flush: usize,
    last_checkpoint: Instant,
    /// A waiter wants the files to reflect this LSN as soon as possible.
    urgent: Lsn,
    retry_at: Option<Instant>,
    consecutive_failures: u32,
    dirs_ready: bool,
}

impl Projection {
    pub(crate) fn new(
        engine: Arc<Engine>,
        options: ProjectionOptions,
        shared: Arc<Shared>,
    ) -> Projection {
        let storage = Arc::clone(&engine.options().storage);
        let paths = ProjectionPaths::new(&engine.paths().root);
        Projection {
            engine,
            storage,
            paths,
            options,
            shared,
            received: Lsn::ZERO,
            projected: Lsn::ZERO,
            marker: Lsn::ZERO,
            needs_rebuild: false,
            dirty_sessions: BTreeSet::new(),
            dirty_chains: BTreeSet::new(),
            registry_dirty: false,
            lines: BTreeMap::new(),
            pending_bytes: 0,
            rebuild_logs: BTreeSet::new(),
            tails: HashMap::new(),
            dirty_since: None,
            absorbed_since_flush: 0,
            last_checkpoint: Instant::now(),
            urgent: Lsn::ZERO,
            retry_at: None,
            consecutive_failures: 0,
            dirs_ready: false,
        }
    }

    fn run(mut self, ctl: Receiver<Ctl>) {
        let from = self.catch_up();
        let (tx, data) = bounded::<Feed>(16);
        let sub = self.engine.subscribe(from);
        let feeder = std::thread::Builder::new()
            .name("session-engine-projector-feed".into())
            .spawn(move || feed(sub, tx));
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
                        // A waiter gets a fresh attempt rather than the end of a backoff.
                        if self.retry_at.is_some() {
                            self.retry_at = Some(Instant::now());
                        }
                    }
                    Ok(Ctl::Rebuild(reply)) => {
                        let r = self.rebuild();
                        let _ = reply.send(r);
                    }
                    Err(_) => ctl = None,
                },
                default(timeout) => {}
            }
            while !disconnected && self.absorbed_since_flush < self.options.max_batch_events {
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

    fn fatal(&mut self, e: &Error) {
        tracing::error!(error = %e, "projections stopped: the log cannot be read");
        let reason = e.to_string();
        self.shared.update(|p| {
            p.status.last_error = Some(format!("projections stopped: {reason}"));
            p.fatal = Some(reason);
        });
    }

    /// Decides where to start: after a valid marker (re-projecting missing files), or
    /// after a full rebuild. Returns the first LSN to subscribe from.
    fn catch_up(&mut self) -> Lsn {
        let last = self.engine.last_lsn();
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

    /// Removes the temporary files of the projector's own files among `names` (in `dir`):
    /// a crash leaves them behind, and their names are unpredictable, so no later write
    /// reuses them. Only this writer's projector writes here (the writer lock), so none is
    /// in use.
    fn remove_own_temporaries(&self, dir: &Path, names: &[String]) -> Result<(), Failure> {
        for name in names {
            if crate::storage::temp_target(name)
                .is_some_and(|base| self.is_projection_file(dir, base))
            {
                self.remove_if_exists(&dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Marks for rewriting every file of `state` that is missing or in the wrong place, and
    /// removes the temporary files a crash left.
    fn check_missing(&mut self, state: &State) -> std::result::Result<(), Failure> {
        let storage = &*self.storage;
        let listed = |dir: &Path| -> Result<HashSet<String>, Failure> {
            let names = list(storage, dir)?;
            self.remove_own_temporaries(dir, &names)?;
            Ok(names.into_iter().collect())
        };
        listed(&self.paths.root)?;
        let sessions = listed(&self.paths.sessions)?;
        let archive = listed(&self.paths.archive)?;
        let logs = listed(&self.paths.logs)?;
        let rotated: HashSet<SessionId> = list(storage, &self.paths.logs_archive)?
            .iter()
            .filter_map(|n| rotated_log_of(n).map(|(id, _)| id))
            .collect();
        let chains = listed(&self.paths.chains)?;
        if !sessions.contains("registry.json") {
            self.registry_dirty = true;
        }
        for s in state.sessions.values() {
            let name = format!("session_{}.json", s.id);
            let (here, there) = if s.status() == Status::Archived {
                (&archive, &sessions)
            } else {
                (&sessions, &archive)
            };
            if !here.contains(&name) || there.contains(&name) {
                self.dirty_sessions.insert(s.id.clone());
                self.registry_dirty = true;
            }
            if s.config.enable_logging
                && !logs.contains(&format!("session_{}.log", s.id))
                && !rotated.contains(&s.id)
            {
                self.rebuild_logs.insert(s.id.clone());
            }
        }
        for c in state.chains.values() {
            if !chains.contains(&format!("{}_sessions.json", c.agent_id)) {
                self.dirty_chains.insert(c.agent_id.clone());
            }
        }
        Ok(())
    }

    fn has_file_work(&self) -> bool {
        self.needs_rebuild
            || !self.dirty_sessions.is_empty()
            || !self.dirty_chains.is_empty()
            || !self.lines.is_empty()
            || !self.rebuild_logs.is_empty()
    }

    fn is_clean(&self) -> bool {
        !self.has_file_work() && !self.registry_dirty
    }

    fn absorb(&mut self, batch: &[CommittedEvent]) {
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
            if let Some(agent) = body.agent() {
                self.dirty_chains.insert(agent.clone());
            }
            for id in body.sessions() {
                self.registry_dirty = true;
                self.dirty_sessions.insert(id.clone());
            }
            out.clear();
            logline::lines_for(ce.lsn, &ce.event, &state, &mut out);
            for (id, line) in out.drain(..) {
                if !self.rebuild_logs.contains(&id) {
                    self.pending_bytes += line.text.len();
                    self.lines.entry(id).or_default().push(line);
                }
            }
            if self.pending_bytes > self.options.max_pending_log_bytes {
                for (id, _) in std::mem::take(&mut self.lines) {
                    self.rebuild_logs.insert(id);
                }
                self.pending_bytes = 0;
            }
        }
        if self.dirty_since.is_none() && self.has_file_work() {
            self.dirty_since = Some(Instant::now());
        }
    }

    fn urgent(&self) -> bool {
        self.urgent > self.projected
    }

    fn checkpoint_wanted(&self) -> bool {
        self.registry_dirty || self.marker < self.received
    }

    fn next_wake(&self) -> Option<Instant> {
        if let Some(t) = self.retry_at {
            return Some(t);
        }
        if self.urgent() && (self.has_file_work() || self.checkpoint_wanted()) {
            return Some(Instant::now());
        }
        let files = self
            .has_file_work()
            .then(|| self.dirty_since.unwrap_or_else(Instant::now) + self.options.flush_interval);
        let checkpoint = self
            .checkpoint_wanted()
            .then(|| self.last_checkpoint + self.options.registry_interval);
        match (files, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes whatever is due (everything when `finishing` or a waiter asked).
    fn step(&mut self, finishing: bool) {
        let now = Instant::now();
        if !finishing && self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let urgent = finishing || self.urgent();
        let checkpoint_due = self.checkpoint_wanted()
            && (urgent || now >= self.last_checkpoint + self.options.registry_interval);
        // A checkpoint flushes the files too: under steady load they are never all clean
        // otherwise, and `projected` (and the marker) would not move.
        let files_due = self.has_file_work()
            && (urgent
                || checkpoint_due
                || self.retry_at.is_some()
                || self.absorbed_since_flush >= self.options.max_batch_events
                || self
                    .dirty_since
                    .is_some_and(|t| now >= t + self.options.flush_interval));
        if !files_due && !checkpoint_due {
            return;
        }
        // The state is taken before the log is synced: the sync then makes everything it
        // shows durable, while commands that commit meanwhile wait for the next step.
        let state = self.engine.state();
        let mut result = self.sync_log();
        if result.is_ok() && files_due {
            result = self.flush_files(&state);
        }
        if result.is_ok() && checkpoint_due {
            result = self.checkpoint(&state);
        }
        match result {
            Ok(()) => self.succeeded(),
            Err(f) => self.failed(f),
        }
    }

    /// In the buffered durability modes the published state may hold events that are not
    /// durable yet; the log is synced first so that projection files (and the marker) never
    /// reflect events a crash could still take back.
    fn sync_log(&self) -> Result<(), Failure> {
        if self.engine.options().durability == Durability::Always {
            return Ok(());
        }
        match self.engine.sync() {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(Failure {
                op: "sync the log before projecting",
                path: self.engine.paths().wal.clone(),
                kind: io::ErrorKind::Other,
                message: e.to_string(),
            }),
        }
    }

    fn succeeded(&mut self) {
        self.retry_at = None;
        if self.consecutive_failures > 0 {
            self.consecutive_failures = 0;
            self.shared.update(|p| {
                p.failure = None;
                p.status.consecutive_failures = 0;
                p.status.last_error = None;
            });
        }
    }

    fn failed(&mut self, f: Failure) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.dirs_ready = false;
        let shift = self.consecutive_failures.saturating_sub(1).min(16);
        let delay = self
            .options
            .retry_delay
            .saturating_mul(1 << shift)
            .min(MAX_RETRY_DELAY);
        self.retry_at = Some(Instant::now() + delay);
        let err = f.to_error();
        tracing::warn!(
            error = %err,
            attempt = self.consecutive_failures,
            retry_in_ms = delay.as_millis() as u64,
            "projection write failed; will retry"
        );
        let give_up = self.consecutive_failures >= self.options.max_retries.max(1);
        let n = self.consecutive_failures;
        self.shared.update(|p| {
            p.status.failures += 1;
            p.status.consecutive_failures = n;
            p.status.last_error = Some(err.to_string());
            if give_up {
                p.failure = Some(f);
                p.failure_seq += 1;
            }
        });
    }

    fn publish(&mut self) {
        if self.is_clean() {
            self.projected = self.projected.max(self.received);
        }
        let (projected, received, marker) = (self.projected, self.received, self.marker);
        self.shared.update(|p| {
            p.status.projected = projected;
            p.status.received = received;
            p.status.marker = marker;
        });
    }

    /// Drains and flushes after the engine closed; retries up to `max_retries` times.
    fn finish(&mut self) {
        loop {
            self.step(true);
            if self.consecutive_failures == 0 && self.is_clean() && self.marker >= self.received {
                break;
            }
            if self.consecutive_failures >= self.options.max_retries.max(1) {
                break;
            }
            let wait = self.retry_at.map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(Instant::now())
            });
            std::thread::sleep(wait);
        }
        self.publish();
        self.shared.update(|p| p.status.running = false);
    }

    fn ensure_dirs(&mut self) -> std::result::Result<(), Failure> {
        if !self.dirs_ready {
            for d in self.paths.dirs() {
                self.storage
                    .create_dir_all(d)
                    .map_err(failure("create projection directory", d))?;
            }
            self.dirs_ready = true;
        }
        Ok(())
    }

    /// Replaces `path` atomically, re-creating its directory if it was deleted.
    fn write_file(&self, op: &'static str, path: &Path, bytes: &[u8]) -> Result<(), Failure> {
        match write_atomic(&*self.storage, path, bytes) {
            Err(e) if is_not_found(&e) => {
                if let Some(dir) = path.parent() {
                    self.storage
                        .create_dir_all(dir)
                        .map_err(failure("create projection directory", dir))?;
                }
                write_atomic(&*self.storage, path, bytes).map_err(failure(op, path))
            }
            r => r.map_err(failure(op, path)),
        }
    }

    fn remove_if_exists(&self, path: &Path) -> Result<bool, Failure> {
        match self.storage.remove_file(path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    self.storage
                        .sync_dir(dir)
                        .map_err(failure("sync projection directory", dir))?;
                }
                Ok(true)
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(failure("remove projection file", path)(e)),
        }
    }

    fn write_session(&self, state: &State, id: &SessionId) -> Result<(), Failure> {
        let Some(s) = state.session(id) else {
            return Ok(());
        };
        let (target, other) = if s.status() == Status::Archived {
            (
                self.paths.archived_session_file(id),
                self.paths.session_file(id),
            )
        } else {
            (
                self.paths.session_file(id),
                self.paths.archived_session_file(id),
            )
        };
        let bytes = SessionFile::of(s)
            .to_bytes()
            .map_err(|e| failure("render session file", &target)(io::Error::other(e)))?;
        self.write_file("write session file", &target, &bytes)?;
        // The new location is durable before the old one goes, so a crash in between
        // leaves the session in both places (fixed by the next write), never in neither.
        self.remove_if_exists(&other)?;
        Ok(())
    }

    fn write_chain(&self, state: &State, agent: &AgentId) -> Result<(), Failure> {
        let path = self.paths.chain_file(agent);
        let Some(c) = state.chain(agent) else {
            return Ok(());
        };
        let bytes = ChainFile::of(c)
            .to_bytes()
            .map_err(|e| failure("render chain file", &path)(io::Error::other(e)))?;
        self.write_file("write chain file", &path, &bytes)
    }

    fn write_registry(&self, state: &State) -> Result<(), Failure> {
        let path = &self.paths.registry;
        let bytes = RegistryFile::of(state)
            .to_bytes()
            .map_err(|e| failure("render registry", path)(io::Error::other(e)))?;
        self.write_file("write registry", path, &bytes)
    }

    fn write_marker(&mut self, lsn: Lsn) -> Result<(), Failure> {
        let path = self.paths.marker.clone();
        let bytes = serde_json::to_vec(&Marker::new(lsn.get()))
            .map_err(|e| failure("render projection marker", &path)(io::Error::other(e)))?;
        self.write_file("write projection marker", &path, &bytes)?;
        self.marker = lsn;
        Ok(())
    }

    /// Writes every dirty file from `state`, which must be durable.
    fn flush_files(&mut self, state: &Arc<State>) -> Result<(), Failure> {
        self.ensure_dirs()?;
        if self.needs_rebuild {
            self.rebuild_from(state)?;
        }
        let state = Arc::clone(state);
        // On a failure every session stays dirty: rewriting a file that was written is
        // harmless.
        let ids: Vec<&SessionId> = self.dirty_sessions.iter().collect();
        in_parallel(&ids, |id| self.write_session(&state, id))?;
        self.dirty_sessions.clear();
        while let Some(agent) = self.dirty_chains.first().cloned() {
            self.write_chain(&state, &agent)?;
            self.dirty_chains.remove(&agent);
        }
        while let Some((id, lines)) = self.lines.pop_first() {
            self.pending_bytes = self
                .pending_bytes
                .saturating_sub(lines.iter().map(|l| l.text.len()).sum());
            if let Err(f) = self.append_log(&id, &lines) {
                self.pending_bytes += lines.iter().map(|l| l.text.len()).sum::<usize>();
                // The file may have changed under us; read its tail again next time.
                self.tails.remove(&id);
                self.lines.insert(id, lines);
                return Err(f);
            }
        }
        if !self.rebuild_logs.is_empty() {
            let which = std::mem::take(&mut self.rebuild_logs);
            match self.rebuild_logs_from_wal(Some(&which), self.received, &state) {
                Ok(n) => self.shared.update(|p| p.status.logs_rebuilt += n),
                Err(f) => {
                    self.rebuild_logs = which;
                    return Err(f);
                }
            }
        }
        self.dirty_since = None;
        self.absorbed_since_flush = 0;
        Ok(())
    }

    /// Writes the registry from `state`, which must be durable, and the marker.
    fn checkpoint(&mut self, state: &Arc<State>) -> Result<(), Failure> {
        self.last_checkpoint = Instant::now();
        if self.registry_dirty {
            self.ensure_dirs()?;
            self.write_registry(state)?;
            self.registry_dirty = false;
        }
        if !self.has_file_work() && self.marker < self.received {
            self.write_marker(self.received)?;
        }
        Ok(())
    }

    /// Reads what the per-session log of `id` ends with, cutting a torn last line.
    fn load_tail(&self, id: &SessionId) -> Result<Tail, Failure> {
        let path = self.paths.log_file(id);
        let bytes = match self.storage.read(&path) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return self.rotated_tail(id),
            Err(e) => return Err(failure("read session log", &path)(e)),
        };
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        let torn = complete < bytes.len();
        // Lines after the marker's LSN may have been appended without reaching the disk
        // whole before a crash (garbage or zeros in the middle, a valid line after them),
        // so each of them is checked, walking back from the end; the lines the marker
        // vouches for were synced before it was written.
        let mut key = None;
        let mut end = complete;
        let mut later: Option<(Lsn, u32)> = None;
        while end > 0 {
            let body = &bytes[..end - 1];
            let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            match logline::parse_key(&body[start..]) {
                Some(k) if later.is_none_or(|l| k < l) => {
                    key.get_or_insert(Some(k));
                    if k.0 <= self.marker {
                        break;
                    }
                    later = Some(k);
                    end = start;
                }
                _ => {
                    key = Some(None);
                    break;
                }
            }
        }
        // Release the (possibly mapped) content before the file is shortened.
        drop(bytes);
        if torn {
            let mut f = self
                .storage
                .open(&path, OpenMode::ReadWrite)
                .map_err(failure("open session log", &path))?;
            f.set_len(complete as u64)
                .and_then(|()| f.sync_all())
                .map_err(failure("cut torn session log line", &path))?;
        }
        match key {
            None => self.rotated_tail(id),
            // Lines for records the log does not have (it was repaired, say) are not ours
            // to keep.
            Some(Some(k)) if k.0 > self.engine.last_lsn() => Ok(Tail::Damaged),
            Some(Some(k)) => Ok(Tail::Key(k)),
            Some(None) => Ok(Tail::Damaged),
        }
    }

    /// The newest rotated part of `id`'s log, if any.
    fn rotated_parts(&self, id: &SessionId) -> Result<Vec<u64>, Failure> {
        let mut parts: Vec<u64> = list(&*self.storage, &self.paths.logs_archive)?
            .iter()
            .filter_map(|n| rotated_log_of(n).filter(|(i, _)| i == id).map(|(_, n)| n))
            .collect();
        parts.sort_unstable();
        Ok(parts)
    }

    fn rotated_tail(&self, id: &SessionId) -> Result<Tail, Failure> {
        let Some(&n) = self.rotated_parts(id)?.last() else {
            return Ok(Tail::Missing);
        };
        let path = self.paths.rotated_log_file(id, n);
        let bytes = self
            .storage
            .read(&path)
            .map_err(failure("read rotated session log", &path))?;
        let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let start = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Ok(logline::parse_key(&text[start..]).map_or(Tail::Damaged, Tail::Key))
    }

    fn append_log(&mut self, id: &SessionId, lines: &[LogLine]) -> Result<(), Failure> {
        let path = self.paths.log_file(id);
        let mut file = match self.storage.open(&path, OpenMode::ReadWrite) {
            Ok(f) => Some(f),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(failure("open session log", &path)(e)),
        };
        // A file that vanished since its tail was cached was rotated or deleted; only the
        // rotated parts can say which.
        let tail = match (self.tails.get(id), &file) {
            (Some(t), Some(_)) => *t,
            _ => self.load_tail(id)?,
        };
        let fresh: &[LogLine] = match tail {
            Tail::Damaged => {
                self.rebuild_logs.insert(id.clone());
                return Ok(());
            }
            Tail::Missing => {
                if !lines.first().is_some_and(|l| l.starts) {
                    // The file's history is gone: rebuild it from the log.
                    self.rebuild_logs.insert(id.clone());
                    return Ok(());
                }
                lines
            }
            Tail::Key(k) => {
                let skip = lines.iter().take_while(|l| l.key <= k).count();
                &lines[skip..]
            }
        };
        let Some(last) = fresh.last() else {
            self.tails.insert(id.clone(), tail);
            return Ok(());
        };
        let text: String = fresh.iter().map(|l| l.text.as_str()).collect();
        if let (Some(max), Some(f)) = (self.options.log_max_bytes, file.as_mut()) {
            let len = f.len().map_err(failure("stat session log", &path))?;
            if len > 0 && len + text.len() as u64 > max {
                drop(file.take());
                self.rotate(id)?;
            }
        }
        let mut f = match file {
            Some(f) => f,
            None => {
                let f = self
                    .storage
                    .open(&path, OpenMode::CreateTruncate)
                    .map_err(failure("create session log", &path))?;
                self.storage
                    .sync_dir(&self.paths.logs)
                    .map_err(failure("sync log directory", &self.paths.logs))?;
                f
            }
        };
        let len = f.len().map_err(failure("stat session log", &path))?;
        f.write_at(len, text.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(failure("append to session log", &path))?;
        self.tails.insert(id.clone(), Tail::Key(last.key));
        Ok(())
    }

    fn rotate(&self, id: &SessionId) -> Result<(), Failure> {
        let n = self.rotated_parts(id)?.last().map_or(1, |n| n + 1);
        let from = self.paths.log_file(id);
        let to = self.paths.rotated_log_file(id, n);
        self.storage
            .rename(&from, &to)
            .map_err(failure("rotate session log", &from))?;
        for dir in [&self.paths.logs_archive, &self.paths.logs] {
            self.storage
                .sync_dir(dir)
                .map_err(failure("sync log directory", dir))?;
        }
        Ok(())
    }

    /// Writes the per-session logs of `which` (every session when `None`) afresh from
    /// records `1..=upto`. Returns how many files were written.
    fn rebuild_logs_from_wal(
        &mut self,
        which: Option<&BTreeSet<SessionId>>,
        upto: Lsn,
        state: &State,
    ) -> Result<u64, Failure> {
        // A rebuilt log holds the whole history, so rotated parts would repeat it.
        for name in list(&*self.storage, &self.paths.logs_archive)? {
            if let Some((id, _)) = rotated_log_of(&name)
                && which.is_none_or(|w| w.contains(&id))
            {
                self.remove_if_exists(&self.paths.logs_archive.join(&name))?;
            }
        }
        let mut bufs: BTreeMap<SessionId, (String, (Lsn, u32))> = BTreeMap::new();
        let mut started: HashSet<SessionId> = HashSet::new();
        let mut buffered = 0usize;
        let mut out = Vec::new();
        let mut io_failure: Option<Failure> = None;
        let mut tails: Vec<(SessionId, (Lsn, u32))> = Vec::new();
        let scan = self.engine.read_log(Lsn(1), upto, |lsn, event| {
            out.clear();
            logline::lines_for(lsn, &event, state, &mut out);
            for (id, line) in out.drain(..) {
                if which.is_some_and(|w| !w.contains(&id)) {
                    continue;
                }
                buffered += line.text.len();
                let b = bufs.entry(id).or_insert_with(|| (String::new(), line.key));
                b.0.push_str(&line.text);
                b.1 = line.key;
            }
            if buffered >= REBUILD_BUFFER_BYTES {
                if let Err(f) = self.append_buffers(&mut bufs, &mut started, &mut tails) {
                    io_failure = Some(f);
                    return Ok(false);
                }
                buffered = 0;
            }
            Ok(true)
        });
        if let Some(f) = io_failure {
            return Err(f);
        }
        if let Err(e) = scan {
            return Err(Failure {
                op: "read the log to rebuild session logs",
                path: self.engine.paths().wal.clone(),
                kind: io::ErrorKind::InvalidData,
                message: e.to_string(),
            });
        }
        self.append_buffers(&mut bufs, &mut started, &mut tails)?;
        // A session that produced no line (logging turned off) has no log file.
        let targets: Vec<SessionId> = match which {
            Some(w) => w.iter().cloned().collect(),
            None => state.sessions.keys().cloned().collect(),
        };
        for id in &targets {
            if !started.contains(id) {
                self.remove_if_exists(&self.paths.log_file(id))?;
                self.tails.insert(id.clone(), Tail::Missing);
            }
        }
        for (id, key) in tails {
            self.tails.insert(id, Tail::Key(key));
        }
        if !started.is_empty() {
            self.storage
                .sync_dir(&self.paths.logs)
                .map_err(failure("sync log directory", &self.paths.logs))?;
        }
        Ok(started.len() as u64)
    }

    fn append_buffers(
        &self,
        bufs: &mut BTreeMap<SessionId, (String, (Lsn, u32))>,
        started: &mut HashSet<SessionId>,
        tails: &mut Vec<(SessionId, (Lsn, u32))>,
    ) -> Result<(), Failure> {
        let appends: Vec<_> = std::mem::take(bufs)
            .into_iter()
            .map(|(id, (text, key))| (started.contains(&id), id, text, key))
            .collect();
        in_parallel(&appends, |(append, id, text, _)| {
            let path = self.paths.log_file(id);
            let mode = if *append {
                OpenMode::ReadWrite
            } else {
                OpenMode::CreateTruncate
            };
            let mut f = self
                .storage
                .open(&path, mode)
                .map_err(failure("write session log", &path))?;
            let len = f.len().map_err(failure("stat session log", &path))?;
            f.write_at(len, text.as_bytes())
                .and_then(|()| f.sync_data())
                .map_err(failure("write session log", &path))
        })?;
        for (_, id, _, key) in appends {
            started.insert(id.clone());
            tails.push((id, key));
        }
        Ok(())
    }

    /// A full rebuild, recorded in the status either way.
    pub(crate) fn rebuild(&mut self) -> Result<RebuildReport> {
        let started = Instant::now();
        match self.rebuild_inner() {
            Ok(r) => {
                self.succeeded();
                self.publish();
                tracing::info!(
                    lsn = %r.lsn,
                    sessions = r.sessions,
                    logs = r.logs,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "projections rebuilt"
                );
                Ok(r)
            }
            Err(f) => {
                let err = f.to_error();
                self.failed(f);
                self.publish();
                Err(err)
            }
        }
    }

    /// A full rebuild from the current state, made durable first.
    fn rebuild_inner(&mut self) -> Result<RebuildReport, Failure> {
        let state = self.engine.state();
        self.sync_log()?;
        self.rebuild_from(&state)
    }

    /// Whether `name` in `dir` is a file the projector writes.
    fn is_projection_file(&self, dir: &Path, name: &str) -> bool {
        let p = &self.paths;
        let is =
            |file: &Path| file.parent() == Some(dir) && file.file_name() == Some(name.as_ref());
        if is(&p.marker) || is(&p.registry) {
            true
        } else if dir == p.sessions || dir == p.archive {
            session_id_of_file(name).is_some()
        } else if dir == p.logs {
            session_id_of_log(name).is_some()
        } else if dir == p.chains {
            agent_of_chain_file(name).is_some()
        } else {
            false
        }
    }

    /// A full rebuild from `state`, which must be durable.
    fn rebuild_from(&mut self, state: &Arc<State>) -> Result<RebuildReport, Failure> {
        self.needs_rebuild = true;
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        // Without a marker a crash during the rebuild leads to another full rebuild.
        let marker = self.paths.marker.clone();
        self.remove_if_exists(&marker)?;
        self.marker = Lsn::ZERO;
        self.dirs_ready = false;
        self.ensure_dirs()?;
        let state = Arc::clone(state);
        let mut report = RebuildReport {
            lsn: state.last_lsn,
            ..RebuildReport::default()
        };
        let root = self.paths.root.clone();
        for dir in [&root, &self.paths.sessions, &self.paths.archive]
            .into_iter()
            .chain([&self.paths.logs, &self.paths.chains])
        {
            for name in list(&*self.storage, dir)? {
                let path = dir.join(&name);
                // Only the projector's own files: others (a bundle being exported into the
                // data directory, say) are not its to remove.
                let stale = if let Some(base) = crate::storage::temp_target(&name) {
                    self.is_projection_file(dir, base)
                } else if *dir == self.paths.sessions || *dir == self.paths.archive {
                    session_id_of_file(&name).is_some_and(|id| state.session(&id).is_none())
                } else if *dir == self.paths.logs {
                    session_id_of_log(&name).is_some_and(|id| state.session(&id).is_none())
                } else if *dir == self.paths.chains {
                    agent_of_chain_file(&name).is_some_and(|a| state.chain(&a).is_none())
                } else {
                    false
                };
                if stale && self.remove_if_exists(&path)? {
                    report.removed += 1;
                }
            }
        }
        let ids: Vec<&SessionId> = state.sessions.keys().collect();
        in_parallel(&ids, |id| self.write_session(&state, id))?;
        report.sessions += ids.len() as u64;
        for agent in state.chains.keys() {
            self.write_chain(&state, agent)?;
            report.chains += 1;
        }
        self.write_registry(&state)?;
        self.tails.clear();
        report.logs = self.rebuild_logs_from_wal(None, state.last_lsn, &state)?;
        self.received = self.received.max(state.last_lsn);
        self.dirty_sessions.clear();
        self.dirty_chains.clear();
        self.lines.clear();
        self.pending_bytes = 0;
        self.rebuild_logs.clear();
        self.registry_dirty = false;
        self.needs_rebuild = false;
        self.dirty_since = None;
        self.absorbed_since_flush = 0;
        if self.received == state.last_lsn {
            self.write_marker(state.last_lsn)?;
        }
        self.last_checkpoint = Instant::now();
        self.shared.update(|p| p.status.rebuilds += 1);
        Ok(report)
    }
}
