//! The writer: group commit, publication, subscriber fan-out, and the snapshot thread it
//! feeds. It sits behind a mutex; the writer thread runs it when requests are queued or a
//! timer is due, and a lone caller of `Engine::execute` runs its own (`lead_alone`).

mod snapshotter;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, TryRecvError, TrySendError};

use super::answer::Reply as AnswerTx;
use super::subscription::LiveSender;
use super::{CommittedEvent, Durability, Request, Shared};
use crate::backend::{FrameBuf, LogWriter};
use crate::codec;
use crate::command::{Command, Committed, decide};
use crate::error::{Error, Result};
use crate::event::{Event, EventBody};
use crate::history::History;
use crate::state::{Details, Session, SessionBody, State};
use crate::types::{JsonText, Lsn};
use crate::wal::MAX_PAYLOAD_LEN;
use snapshotter::{SnapJob, Snapshotter};

/// Records taken in per step of a catch-up (each step is published on its own).
const CATCH_UP_CHUNK: usize = 1024;

/// The writer, shared by the writer thread and callers of [`super::Engine::execute`]:
/// whoever holds the lock runs the next batch.
pub(crate) type Core = Arc<Mutex<Writer>>;

/// Locks the writer, ignoring poisoning: a panic in a batch is a bug, and the engine's
/// own poisoning (not the mutex's) refuses writes after a failed write.
pub(crate) fn lock(core: &Core) -> MutexGuard<'_, Writer> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a lone writer's request on the calling thread, in a batch of its own, instead of
/// through the queue: a caller that waits for its own answer anyway can as well write and
/// sync the batch itself. Queueing it would wake the writer thread (an idle vCPU here)
/// and the answer would wake the caller back, two thread wake-ups that cost tens of
/// microseconds each, a large share of a durable commit. Takes the request out
/// of `req` only when it leads: no batch is running, nothing is queued (so none of the
/// caller's own earlier submissions can come after it), and the last batch answered one
/// thread at most.
///
/// With several writers the writer thread runs every batch. Callers used to run a batch
/// whenever they found the writer idle; leaving it to the writer thread gave more durable
/// events per second with 2 to 64 writers (`docs/benchmarks.md`). A caller that leads cannot send its next command
/// until the whole batch is done, and the writer thread, woken by the queued commands,
/// then blocked on the lock the caller held.
pub(crate) fn lead_alone(core: &Core, req: &mut Option<Request>) {
    let mut w = match core.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return,
    };
    let queued = w.rx.as_ref().is_some_and(|rx| !rx.is_empty());
    if w.recent_callers.len() > 1 || queued {
        return;
    }
    w.step_with(req.take());
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    log: Box<dyn LogWriter>,
    rx: Receiver<Request>,
    replayed: u64,
) -> Result<(Core, JoinHandle<()>)> {
    let snapshots = Snapshotter::spawn(Arc::clone(&shared))?;
    let wake = rx.clone();
    let done_shared = Arc::clone(&shared);
    let writer = Writer {
        next_watchdog: shared.options.watchdog_interval.map(|d| Instant::now() + d),
        shared,
        log,
        rx: Some(rx),
        frames: FrameBuf::new(),
        subscribers: Vec::new(),
        since_snapshot: replayed,
        last_sync: Instant::now(),
        log_dirty: false,
        snapshots,
        recent_callers: Vec::new(),
        sync_cost: Duration::ZERO,
    };
    let core: Core = Arc::new(Mutex::new(writer));
    let c = Arc::clone(&core);
    let handle = std::thread::Builder::new()
        .name("session-engine-writer".into())
        .spawn(move || {
            let _done = DoneGuard(done_shared);
            run(&c, &wake)
        })
        .map_err(|e| Error::io("spawn writer thread", "", e))?;
    Ok((core, handle))
}

/// The writer thread: waits until a request is queued (without taking it, so that requests
/// are only ever taken under the lock, in order) or a timer is due, then runs a batch.
/// Once the writer has stopped it returns, dropping the last receiver of the request
/// channel: requests still queued are dropped (their callers see `Closed`) and later
/// sends fail at once.
fn run(core: &Core, rx: &Receiver<Request>) {
    loop {
        let timeout = lock(core).next_timeout();
        let mut sel = Select::new();
        sel.recv(rx);
        match timeout {
            Some(t) => {
                let _ = sel.ready_timeout(t);
            }
            None => {
                sel.ready();
            }
        }
        if !lock(core).step() {
            return;
        }
    }
}

/// Marks the writer as gone when its thread ends, by return or by panic.
struct DoneGuard(Arc<Shared>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.writer_done.store(true, Ordering::SeqCst);
        self.0.writer_gone.wake_all();
    }
}

type Reply = Option<AnswerTx<Result<Committed>>>;

fn answer(reply: Reply, r: Result<Committed>) {
    if let Some(tx) = reply {
        tx.send(r);
    }
}

/// Answers a request that arrived after the writer stopped.
fn refuse(r: Request) {
    match r {
        Request::Command { reply, .. } => answer(reply, Err(Error::Closed)),
        Request::Sync(t) | Request::Shutdown(t) => {
            t.send(Err(Error::Closed));
        }
        Request::Snapshot(t) | Request::CatchUp(t) => {
            t.send(Err(Error::Closed));
        }
        Request::Subscribe { .. } | Request::Wake => {}
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    log: Box<dyn LogWriter>,
    /// The request channel; `None` once stopped.
    rx: Option<Receiver<Request>>,
    frames: FrameBuf,
    subscribers: Vec<LiveSender>,
    since_snapshot: u64,
    last_sync: Instant,
    log_dirty: bool,
    snapshots: Snapshotter,
    next_watchdog: Option<Instant>,
    /// The threads whose commands the last durable batch answered.
    recent_callers: Vec<std::thread::ThreadId>,
    /// How long the last log sync took.
    sync_cost: Duration,
}

/// What one batch collected besides commands.
#[derive(Default)]
struct Extras {
    syncs: Vec<AnswerTx<Result<()>>>,
    snapshots: Vec<AnswerTx<Result<Lsn>>>,
    subscribes: Vec<(LiveSender, AnswerTx<Lsn>)>,
    /// Catch-up requests: a batch takes no more requests after one, so that what is
    /// queued after it is decided against the state with the other writers' records.
    catch_ups: Vec<AnswerTx<Result<Lsn>>>,
    shutdown: Option<AnswerTx<Result<()>>>,
}

/// One batch being run: the state it is validated on (its frames are in
/// `Writer::frames`), and what to answer once it is written.
struct Run {
    /// The batch's state, cloned from the published one at its first command.
    work: Option<State>,
    pending: Vec<(Reply, Committed)>,
    events: Vec<CommittedEvent>,
    extras: Extras,
    poisoned: Option<Error>,
    keep_events: bool,
    /// Requests taken.
    taken: usize,
    /// The threads with a command in the batch, each once (only the watchdog's command
    /// has no thread).
    callers: Vec<std::thread::ThreadId>,
    /// The details of the batch's activities, by LSN (ascending): a clone in the same
    /// batch carries them, and their records are not in the log yet.
    details: Vec<(Lsn, JsonText)>,
}

impl Writer {
    fn durability(&self) -> Durability {
        self.shared.options.durability
    }

    /// How long to wait for a request before a timer (interval sync, watchdog) is due.
    fn next_timeout(&self) -> Option<Duration> {
        let mut deadline = self.next_watchdog;
        if let Durability::Interval(d) = self.durability() {
            // Even with a clean log, wake up once per interval: a caller may run a batch
            // (`lead_alone`) after this deadline was computed, leaving the log dirty.
            let t = if self.log_dirty {
                self.last_sync + d
            } else {
                Instant::now() + d
            };
            deadline = Some(deadline.map_or(t, |w| w.min(t)));
        }
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Takes the queued requests (up to `max_batch`) and runs them as one batch, and runs
    /// the timers that are due. Returns `false` once the writer has stopped.
    pub(crate) fn step(&mut self) -> bool {
        self.step_with(None)
    }

    /// [`Writer::step`], with `own` (a caller's request that was not queued) after the
    /// queued ones.
    fn step_with(&mut self, own: Option<Request>) -> bool {
        let Some(rx) = self.rx.clone() else {
            if let Some(r) = own {
                refuse(r);
            }
            return false;
        };
        let max_batch = self.shared.options.max_batch;
        let mut run = self.begin();
        let mut disconnected = false;
        while run.taken + usize::from(own.is_some()) < max_batch
            && !self.batch_full()
            && run.extras.catch_ups.is_empty()
        {
            match rx.try_recv() {
                Ok(r) => self.take(&mut run, r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if let Some(r) = own {
            self.take(&mut run, r);
        }
        if !disconnected {
            disconnected = self.gather(&rx, &mut run, max_batch);
        }
        if let Some(t) = self.next_watchdog
            && Instant::now() >= t
        {
            self.take(
                &mut run,
                Request::Command {
                    cmd: Command::ExpireIdle,
                    reply: None,
                    caller: None,
                },
            );
            self.next_watchdog = self
                .shared
                .options
                .watchdog_interval
                .map(|d| Instant::now() + d);
        }
        let callers = std::mem::take(&mut run.callers);
        let shutdown = if run.taken == 0 {
            None
        } else {
            self.finish(run)
        };
        if !callers.is_empty() {
            self.shared
                .lone_writer
                .store(callers.len() == 1, Ordering::Relaxed);
            self.recent_callers = callers;
        }
        if let Durability::Interval(d) = self.durability()
            && self.log_dirty
            && self.last_sync.elapsed() >= d
            && let Err(e) = self.sync_log()
        {
            self.shared.poison(&e);
        }
        if let Some(reply) = shutdown {
            // A clean close seals the log: damage to it from now on is refused, never cut.
            let r = self.sync_log().and_then(|()| self.log.seal());
            self.stop();
            reply.send(r);
            return false;
        }
        if disconnected {
            // Every handle is gone without a shutdown request: still leave the log durable.
            if let Err(e) = self.sync_log().and_then(|()| self.log.seal()) {
                tracing::error!(error = %e, "final log sync failed");
            }
            self.stop();
            return false;
        }
        true
    }

    /// Group commit across threads: when the last durable batch answered other threads
    /// than those with a command in this one, they are most likely about to send their
    /// next command; wait for them (asleep on the queue, taking each command as it comes,
    /// at most as long as one log sync takes) so that one sync serves them too, instead of
    /// splitting the writers into two cohorts that alternate, each paying a sync. A lone
    /// writer never waits. Returns whether the channel was found disconnected.
    fn gather(&mut self, rx: &Receiver<Request>, run: &mut Run, max: usize) -> bool {
        if self.durability() != Durability::Always
            || self.recent_callers.len() < 2
            || run.callers.is_empty()
            || run.extras.shutdown.is_some()
        {
            return false;
        }
        let deadline = Instant::now() + self.sync_cost.min(Duration::from_micros(500));
        while run.taken < max
            && !self.batch_full()
            && run.extras.catch_ups.is_empty()
            && self.recent_callers.iter().any(|c| !run.callers.contains(c))
            && Instant::now() < deadline
        {
            match rx.recv_deadline(deadline) {
                Ok(r) => self.take(run, r),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
        false
    }

    /// Stops for good: later requests are refused, queued ones now and any that slip in
    /// later when the writer thread, holding the last receiver, returns.
    fn stop(&mut self) {
        self.snapshots.stop();
        // Subscribers learn of the end when their live channel disconnects.
        self.subscribers.clear();
        if let Some(rx) = self.rx.take() {
            while let Ok(r) = rx.try_recv() {
                refuse(r);
            }
        }
    }

    /// Whether the batch's frames have reached `max_batch_bytes`: it takes no more commands
    /// (so a torn write can cut at most that much plus one record).
    fn batch_full(&self) -> bool {
        self.frames.byte_len() >= self.shared.options.max_batch_bytes
    }

    fn sync_log(&mut self) -> Result<()> {
        if let Some(p) = self.shared.poisoned() {
            return Err(p);
        }
        if self.log_dirty {
            self.log.sync()?;
            self.shared.stats.synced();
            self.log_dirty = false;
            // A buffered mode's sync (the interval timer, an explicit sync) is followed by a
            // seal, so damage to what it made durable is refused, never cut; the seal is
            // synced with the next sync.
            if self.log.seal_after_sync()? {
                self.log_dirty = true;
            }
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Starts a batch: validated on a clone of the published state (made at its first
    /// command), framed into `self.frames`.
    fn begin(&mut self) -> Run {
        self.log.start_batch(&mut self.frames);
        Run {
            work: None,
            pending: Vec::new(),
            events: Vec::new(),
            extras: Extras::default(),
            poisoned: self.shared.poisoned(),
            keep_events: !self.subscribers.is_empty(),
            taken: 0,
            callers: Vec::new(),
            details: Vec::new(),
        }
    }

    /// Puts the details of `data`'s activities (a clone's session, its checkpoints
    /// included) into it: a clone's event carries them, so the log's format and a
    /// bundle's are as before, and the clone holds them in memory (like an import).
    /// Details of this batch's activities come from `batch`, the others are read from the
    /// log and checked, as a history read checks them.
    fn inline_details(&self, data: &mut Session, batch: &[(Lsn, JsonText)]) -> Result<()> {
        let as_of = self.log.last_lsn();
        let log = Arc::clone(&self.shared.log);
        let from_batch = |body: &mut SessionBody| {
            for a in body.activity_log.iter_mut() {
                if let Details::InLog(lsn) = a.details
                    && let Ok(i) = batch.binary_search_by_key(&lsn, |(l, _)| *l)
                {
                    Arc::make_mut(a).details = Details::Inline(batch[i].1.clone());
                }
            }
        };
        from_batch(&mut data.body);
        for cp in data.checkpoints.iter_mut() {
            from_batch(&mut cp.body);
        }
        let resolved = History::of_session(data, as_of, Arc::clone(&log)).resolved_body()?;
        let mut checkpoints = Vec::new();
        for cp in data.checkpoints.iter() {
            checkpoints.push(
                History::of_session_body(data, &cp.body, as_of, Arc::clone(&log))
                    .resolved_body()?,
            );
        }
        data.body = resolved;
        for (cp, body) in data.checkpoints.iter_mut().zip(checkpoints) {
            cp.body = body;
        }
        Ok(())
    }

    /// Adds one request to the batch: a command is decided, applied to the batch's state
    /// and framed at once (so the batch runner works while it waits for more).
    fn take(&mut self, run: &mut Run, req: Request) {
        run.taken += 1;
        if let Request::Command {
            caller: Some(c), ..
        } = &req
            && !run.callers.contains(c)
        {
            run.callers.push(*c);
        }
        match req {
            Request::Command { cmd, reply, .. } => {
                if let Some(p) = &run.poisoned {
                    answer(reply, Err(p.clone()));
                    return;
                }
                let state = run
                    .work
                    .get_or_insert_with(|| (*self.shared.published()).clone());
                let now = self.shared.options.clock.now();
                match decide(state, cmd, now) {
                    Err(e) => answer(reply, Err(e)),
                    Ok((None, outcome)) => run.pending.push((
                        reply,
                        Committed {
                            lsn: state.last_lsn,
                            appended: false,
                            outcome,
                        },
                    )),
                    Ok((Some(mut body), outcome)) => {
                        if let EventBody::SessionCloned { data, .. } = &mut body
                            && data.has_details_in_log()
                            && let Err(e) = self.inline_details(data, &run.details)
                        {
                            if matches!(e, Error::Io { .. }) {
                                // The log could not be read: treated as any I/O error of
                                // the writer's, the engine refuses writes until reopened
                                // (nothing of this batch is written).
                                self.shared.poison(&e);
                                let err = self.shared.poisoned().unwrap_or_else(|| e.clone());
                                for (r, _) in run.pending.drain(..) {
                                    answer(r, Err(err.clone()));
                                }
                                self.log.start_batch(&mut self.frames);
                                run.work = None;
                                run.events.clear();
                                run.details.clear();
                                run.poisoned = Some(err);
                            }
                            answer(reply, Err(e));
                            return;
                        }
                        let lsn = state.last_lsn.next();
                        let event = Event { at: now, body };
                        let buf = self.frames.begin(lsn);
                        if let Err(e) = codec::encode_event(&event, buf) {
                            self.frames.abandon();
                            answer(reply, Err(Error::invalid("event", e.to_string())));
                            return;
                        }
                        if let Err(len) = self.frames.finish() {
                            answer(
                                reply,
                                Err(Error::invalid(
                                    "event",
                                    format!(
                                        "encodes to {len} bytes, over the record limit \
                                         of {MAX_PAYLOAD_LEN}"
                                    ),
                                )),
                            );
                            return;
                        }
                        if let Err(e) = state.apply(lsn, &event) {
                            // `decide` promised this event applies. Writing a record the
                            // state cannot replay would break the log, so stop here.
                            let err = Error::Poisoned {
                                cause: format!(
                                    "internal error: accepted event does not apply: {e}"
                                ),
                            };
                            self.shared.poison(&err);
                            answer(reply, Err(err.clone()));
                            for (r, _) in run.pending.drain(..) {
                                answer(r, Err(err.clone()));
                            }
                            self.log.start_batch(&mut self.frames);
                            run.work = None;
                            run.events.clear();
                            run.poisoned = Some(err);
                            return;
                        }
                        if let EventBody::ActivityRecorded {
                            details: Some(d), ..
                        } = &event.body
                        {
                            run.details.push((lsn, d.clone()));
                        }
                        run.pending.push((
                            reply,
                            Committed {
                                lsn,
                                appended: true,
                                outcome,
                            },
                        ));
                        if run.keep_events {
                            run.events.push(CommittedEvent {
                                lsn,
                                event: Arc::new(event),
                            });
                        }
                    }
                }
            }
            Request::Sync(r) => run.extras.syncs.push(r),
            Request::Snapshot(r) => run.extras.snapshots.push(r),
            Request::Subscribe { live, reply } => run.extras.subscribes.push((live, reply)),
            Request::CatchUp(r) => run.extras.catch_ups.push(r),
            Request::Shutdown(r) => run.extras.shutdown = Some(r),
            Request::Wake => {}
        }
    }

    /// Writes the batch with one write, syncs it as the durability mode asks, publishes its
    /// state and answers. Returns the shutdown reply if the batch asked to stop.
    fn finish(&mut self, mut run: Run) -> Option<AnswerTx<Result<()>>> {
        if !self.frames.is_empty() {
            let n = u64::from(self.frames.len());
            let began = Instant::now();
            let written = self.log.append(&self.frames).and_then(|()| {
                self.log_dirty = true;
                if self.durability() == Durability::Always {
                    let t = Instant::now();
                    self.log.sync()?;
                    self.sync_cost = t.elapsed();
                    self.shared.stats.synced();
                    self.log_dirty = false;
                    self.last_sync = Instant::now();
                }
                Ok(())
            });
            if let Err(e) = written {
                // A conflict that stored nothing of the batch (the log's writer is back
                // before it) refuses the batch's commands and leaves the engine writable:
                // a catch-up takes in the other writer's records. Anything else may have
                // stored part of the batch, which the published state does not show.
                let clean = matches!(e, Error::LogConflict { .. })
                    && self.log.last_lsn() == self.shared.published().last_lsn;
                if clean {
                    self.shared.stats.conflicted();
                } else {
                    self.shared.poison(&e);
                }
                for (r, _) in run.pending.drain(..) {
                    answer(r, Err(e.clone()));
                }
                run.events.clear();
                run.work = None;
            } else {
                self.since_snapshot += n;
                self.shared.stats.appended(n, began.elapsed());
            }
            if let Some(state) = run.work.take() {
                self.shared.publish(state);
            }
        }
        for (r, c) in run.pending {
            answer(r, Ok(c));
        }
        self.fan_out(run.events);
        if !run.extras.catch_ups.is_empty() {
            let r = self.catch_up();
            for reply in run.extras.catch_ups {
                reply.send(r.clone());
            }
        }
        for r in run.extras.syncs {
            r.send(self.sync_log());
        }
        let published = self.shared.published().last_lsn;
        for (live, reply) in run.extras.subscribes {
            if reply.send(published) {
                self.subscribers.push(live);
            }
        }
        let auto = self.shared.options.snapshot_every > 0
            && self.since_snapshot >= self.shared.options.snapshot_every
            && !self.snapshots.busy();
        if (!run.extras.snapshots.is_empty() || auto) && run.extras.shutdown.is_none() {
            self.start_snapshot(run.extras.snapshots);
        } else {
            for r in run.extras.snapshots {
                r.send(Err(Error::Closed));
            }
        }
        run.extras.shutdown
    }

    /// Sends a batch of committed events to the subscribers.
    fn fan_out(&mut self, events: Vec<CommittedEvent>) {
        if events.is_empty() {
            return;
        }
        let batch = Arc::new(events);
        self.subscribers
            .retain(|s| match s.try_send(Arc::clone(&batch)) {
                Ok(()) => {
                    s.wake();
                    true
                }
                // A full subscriber is cut loose; it resumes from the log by itself.
                Err(TrySendError::Full(_)) => {
                    s.cut_loose();
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }

    /// [`super::Engine::catch_up`]: takes in the records other writers appended after the
    /// published state, [`CATCH_UP_CHUNK`] at a time, each chunk all or nothing: decoded
    /// and applied as recovery does, handed to the log's writer, published, and sent to
    /// subscribers. Returns the LSN the state is at.
    fn catch_up(&mut self) -> Result<Lsn> {
        // The engine's own records are stored before anything after them is read.
        if let Err(e) = self.sync_log() {
            self.shared.poison(&e);
            return Err(e);
        }
        loop {
            let published = self.shared.published();
            if self.log.last_lsn() != published.last_lsn {
                // Appended records the state does not show: only a poisoned engine has them.
                return Err(self.shared.poisoned().unwrap_or_else(|| Error::Poisoned {
                    cause: format!(
                        "internal error: the log's writer is at {} and the state at {}",
                        self.log.last_lsn(),
                        published.last_lsn
                    ),
                }));
            }
            let keep_events = !self.subscribers.is_empty();
            let mut state: Option<State> = None;
            let mut records: Vec<(Lsn, Vec<u8>)> = Vec::new();
            let mut events = Vec::new();
            let mut next = published.last_lsn.next();
            crate::intern::scope(|| {
                self.shared
                    .log()
                    .read(next, Lsn(u64::MAX), &mut |path, offset, lsn, payload| {
                        if lsn != next {
                            return Err(Error::corruption(
                                path,
                                offset,
                                format!("record {lsn} where record {next} should be"),
                            ));
                        }
                        let event = super::decode_record(path, offset, lsn, payload)?;
                        let st = state.get_or_insert_with(|| (*published).clone());
                        super::apply_record(st, path, offset, lsn, &event)?;
                        records.push((lsn, payload.to_vec()));
                        if keep_events {
                            events.push(CommittedEvent {
                                lsn,
                                event: Arc::new(event),
                            });
                        }
                        next = lsn.next();
                        Ok(records.len() < CATCH_UP_CHUNK)
                    })
            })?;
            let Some(state) = state else {
                return Ok(published.last_lsn);
            };
            let taken: Vec<(Lsn, &[u8])> = records.iter().map(|(l, p)| (*l, &p[..])).collect();
            self.log.caught_up(&taken)?;
            let n = records.len() as u64;
            let last = state.last_lsn;
            self.since_snapshot += n;
            self.shared.stats.caught_up(n);
            self.shared.publish(state);
            self.fan_out(events);
            if records.len() < CATCH_UP_CHUNK {
                return Ok(last);
            }
        }
    }

    fn start_snapshot(&mut self, replies: Vec<AnswerTx<Result<Lsn>>>) {
        // A snapshot must never describe records the log could still lose.
        if let Err(e) = self.sync_log() {
            self.shared.poison(&e);
            for r in replies {
                r.send(Err(e.clone()));
            }
            return;
        }
        self.since_snapshot = 0;
        self.snapshots.submit(SnapJob {
            state: self.shared.published(),
            position: self.log.position(),
            replies,
        });
    }
}
