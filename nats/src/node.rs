//! One engine node of several on one data set: a command that loses the race for the log
//! to another node is decided again against the state that includes the other node's
//! records, and a follower keeps the node's state current with what the others write.
//!
//! ```text
//! execute(cmd) ── engine.execute ── Ok ──────────────────────────────▶ answer
//!                        │
//!                        └─ LogConflict (another node appended first; nothing of this
//!                           command was stored) ── Engine::catch_up (the other nodes'
//!                           records taken in, in place) ── execute(cmd) again, decided
//!                           against the new state
//!                        │
//!                        └─ refused (not found, invalid state...) while the stream has
//!                           records this engine has not read ── catch up, decide again
//!
//! follower thread ── woken by each message on the data set's subjects (a core NATS
//!                    subscription), and every FOLLOW_CHECK in any case ── the stream's
//!                    last sequence past the node's? ── Engine::catch_up
//! ```
//!
//! A node runs one command at a time, so a conflict always concerns exactly the command
//! being executed: nothing is stored twice (the refused record is not in the stream; a
//! publish retried after a lost acknowledgement is recognised as stored by its message
//! id) and no acknowledged command is lost (every answer comes after the stream stored
//! the record). A catch-up happens in place: the engine stays open, its subscriptions go
//! on and receive the other nodes' records like its own. Only an engine that a failure
//! poisoned (the log unavailable, a conflict after part of a batch was stored) is
//! reopened, which reads the stream again and ends its subscriptions.
//!
//! Reads are served from the node's own state. Opened with [`Node::open_following`], it
//! is current within about [`FOLLOW_CHECK`] (usually far sooner: the subscription wakes
//! the follower at each message) plus the time a catch-up takes; opened with
//! [`Node::open`], as of its last write or [`Node::refresh`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::StreamExt;
use session_engine::{
    Command, Committed, Engine, Error, Lsn, Options, Result, State, Subscription,
};

use crate::NatsLog;

/// How many times one command is decided again before the conflict is returned.
pub const MAX_ATTEMPTS: u32 = 64;

/// The longest a following node waits before it looks at the stream's last sequence
/// again, when no message on the data set's subjects woke it.
pub const FOLLOW_CHECK: Duration = Duration::from_millis(500);

/// An engine on a data directory whose log is a stream other nodes write too.
pub struct Node {
    inner: Arc<Inner>,
    follower: Option<Follower>,
}

struct Inner {
    dir: PathBuf,
    options: Options,
    log: NatsLog,
    engine: Mutex<Option<Engine>>,
    conflicts: AtomicU64,
    catch_ups: AtomicU64,
    reopens: AtomicU64,
    /// The follower's last failure (cleared by its next success).
    follow_error: Mutex<Option<Error>>,
}

/// What wakes the follower thread.
enum Signal {
    /// A message on the data set's subjects (maybe another node's record).
    Wake,
    /// The node is dropped.
    Stop,
}

/// The follower: its thread, and the task that turns messages into wake-ups.
struct Follower {
    tx: mpsc::Sender<Signal>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    task: tokio::task::AbortHandle,
}

impl Node {
    /// Opens the engine in `dir` with `options` on `log` (which replaces `options.log`).
    /// The node catches up with the other nodes when a command needs it and on
    /// [`Node::refresh`]; [`Node::open_following`] also keeps it current.
    pub fn open(dir: impl AsRef<Path>, mut options: Options, log: &NatsLog) -> Result<Node> {
        let dir = dir.as_ref().to_path_buf();
        options.log = Some(Arc::new(log.clone()));
        let engine = Engine::open(&dir, options.clone())?;
        Ok(Node {
            inner: Arc::new(Inner {
                dir,
                options,
                log: log.clone(),
                engine: Mutex::new(Some(engine)),
                conflicts: AtomicU64::new(0),
                catch_ups: AtomicU64::new(0),
                reopens: AtomicU64::new(0),
                follow_error: Mutex::new(None),
            }),
            follower: None,
        })
    }

    /// [`Node::open`], with a follower thread that keeps the node's state current: woken
    /// by every message on the data set's subjects (a core NATS subscription, which may
    /// miss some) and every [`FOLLOW_CHECK`] in any case, it catches up in place whenever
    /// the stream's last sequence is past the node's. Stopped when the node is dropped.
    pub fn open_following(dir: impl AsRef<Path>, options: Options, log: &NatsLog) -> Result<Node> {
        let mut node = Node::open(dir, options, log)?;
        node.follower = Some(Follower::start(Arc::clone(&node.inner))?);
        Ok(node)
    }

    /// Executes `cmd`, deciding it again after each conflict with another node.
    pub fn execute(&self, cmd: Command) -> Result<Committed> {
        self.inner.execute(cmd)
    }

    /// Catches up with what the other nodes wrote (in place; a poisoned engine is
    /// reopened).
    pub fn refresh(&self) -> Result<()> {
        let mut slot = self.inner.lock();
        self.inner.catch_up(&mut slot)
    }

    /// The node's state (current within a bounded time when following, else as of its
    /// last write or refresh).
    pub fn state(&self) -> Result<Arc<State>> {
        self.inner
            .lock()
            .as_ref()
            .map(|e| e.state())
            .ok_or(Error::Closed)
    }

    /// The LSN the node's state is at.
    pub fn last_lsn(&self) -> Lsn {
        self.inner.last_lsn()
    }

    /// The node's committed events from `from` on ([`Engine::subscribe`]): its own and,
    /// as it catches up, the other nodes'. It lasts as long as the node's engine: a reopen
    /// (after a failure poisoned the engine, see [`Node::reopens`]) ends it, and the
    /// caller subscribes again from the LSN after its last event.
    pub fn subscribe(&self, from: Lsn) -> Result<Subscription> {
        self.inner
            .lock()
            .as_ref()
            .map(|e| e.subscribe(from))
            .ok_or(Error::Closed)
    }

    /// Commands decided again after a conflict, so far.
    pub fn conflicts(&self) -> u64 {
        self.inner.conflicts.load(Ordering::Relaxed)
    }

    /// In-place catch-ups that took in other nodes' records, so far (after conflicts,
    /// refusals, refreshes and by the follower).
    pub fn catch_ups(&self) -> u64 {
        self.inner.catch_ups.load(Ordering::Relaxed)
    }

    /// Times the engine was reopened (only after a failure poisoned it), so far.
    pub fn reopens(&self) -> u64 {
        self.inner.reopens.load(Ordering::Relaxed)
    }

    /// The follower's last failure, if its last attempt failed (it tries again at the next
    /// wake-up).
    pub fn follow_error(&self) -> Option<Error> {
        self.inner
            .follow_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(f) = self.follower.take() {
            f.stop();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Option<Engine>> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn last_lsn(&self) -> Lsn {
        self.lock().as_ref().map_or(Lsn::ZERO, |e| e.last_lsn())
    }

    /// Replaces the engine with a new one that has read the stream to its end.
    fn reopen(&self, slot: &mut Option<Engine>) -> Result<()> {
        self.reopens.fetch_add(1, Ordering::Relaxed);
        // The old engine (poisoned) lets go of the directory first.
        drop(slot.take());
        *slot = Some(Engine::open(&self.dir, self.options.clone())?);
        Ok(())
    }

    /// Takes in what the other nodes wrote: in place, or by a reopen when the engine is
    /// poisoned (or a reopen failed before).
    fn catch_up(&self, slot: &mut Option<Engine>) -> Result<()> {
        match &*slot {
            Some(e) if e.poisoned().is_none() => {
                let before = e.last_lsn();
                let after = e.catch_up()?;
                if after > before {
                    self.catch_ups.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            _ => self.reopen(slot),
        }
    }

    fn execute(&self, cmd: Command) -> Result<Committed> {
        let mut slot = self.lock();
        let mut attempts = 0;
        loop {
            let engine = match &*slot {
                Some(e) if e.poisoned().is_none() => e,
                // A previous failure (the log unavailable) left the engine poisoned, or its
                // reopen failed: read the stream again.
                _ => {
                    self.reopen(&mut slot)?;
                    slot.as_ref().ok_or(Error::Closed)?
                }
            };
            match engine.execute(cmd.clone()) {
                Err(Error::LogConflict { .. }) if attempts + 1 < MAX_ATTEMPTS => {
                    attempts += 1;
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    self.catch_up(&mut slot)?;
                }
                // A refusal decided against a state the stream has moved past may not
                // hold against the records this node has not read.
                Err(e)
                    if e.is_refusal()
                        && attempts + 1 < MAX_ATTEMPTS
                        && self.log.last_sequence()? > engine.last_lsn().0 =>
                {
                    attempts += 1;
                    self.catch_up(&mut slot)?;
                }
                other => return other,
            }
        }
    }

    /// One look of the follower: catches up when the stream is past the node.
    fn follow_once(&self) -> Result<()> {
        if self.log.last_sequence()? <= self.last_lsn().0 {
            return Ok(());
        }
        let mut slot = self.lock();
        self.catch_up(&mut slot)
    }
}

impl Follower {
    fn start(inner: Arc<Inner>) -> Result<Follower> {
        let (tx, rx) = mpsc::channel();
        let log = inner.log.clone();
        let js = log.context()?;
        let subject = format!("{}.>", log.options().subject_prefix());
        let mut messages = log
            .block_on(js.client().subscribe(subject))
            .map_err(|e| log.unavailable(format!("cannot follow the stream: {e}")))?;
        let wake = tx.clone();
        let task = log
            .runtime()
            .spawn(async move {
                while messages.next().await.is_some() {
                    if wake.send(Signal::Wake).is_err() {
                        return;
                    }
                }
            })
            .abort_handle();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("session-engine-nats-follower".into())
            .spawn(move || follow(&inner, &rx, &stopped))
            .map_err(|e| Error::LogUnavailable {
                log: log.place().display().to_string(),
                reason: format!("cannot start the follower thread: {e}"),
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                task.abort();
                return Err(e);
            }
        };
        Ok(Follower {
            tx,
            stop,
            thread: Some(thread),
            task,
        })
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
        let _ = self.tx.send(Signal::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The follower thread: waits for a wake-up (or [`FOLLOW_CHECK`]), takes every wake-up
/// queued meanwhile, and catches up.
fn follow(inner: &Inner, rx: &mpsc::Receiver<Signal>, stop: &AtomicBool) {
    loop {
        match rx.recv_timeout(FOLLOW_CHECK) {
            Ok(Signal::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Signal::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        loop {
            match rx.try_recv() {
                Ok(Signal::Wake) => {}
                Ok(Signal::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let r = inner.follow_once();
        *inner.follow_error.lock().unwrap_or_else(|e| e.into_inner()) = r.err();
    }
}
