//! Subscriptions: committed events from an LSN on, first read from the log (catch-up),
//! then pushed by the writer as they commit (live).
//!
//! The hand-over has no gap and no repeat: the writer registers the live channel and
//! answers with the LSN it has published so far, `H`; the subscription reads the log up to
//! `H` and takes everything after `H` from the channel. A subscriber that falls more than
//! [`SUBSCRIBER_CAPACITY`] batches behind is cut loose by the writer (which never waits
//! for it) and transparently catches up from the log again.
//!
//! Two ways to wait: [`Subscription::recv`] (and `recv_timeout`, `try_recv`, the
//! `Iterator`) block the calling thread; [`Subscription::poll_recv`] and
//! [`Subscription::recv_async`] never block on the writer: they leave the task's waker
//! with the live channel (the writer wakes it after each batch it sends, and when it lets
//! the channel go), with the pending registration, and with the writer-gone set, so no
//! runtime is needed and nothing polls. Catching up reads the log on the polling thread,
//! at most 4,096 events per read.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded};

use super::answer::{self, Answer, Waited};
use super::wake::{WakerSlot, Watch};
use super::{Request, Shared};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::types::Lsn;

/// Live batches a subscriber may have queued before the writer cuts it loose.
pub const SUBSCRIBER_CAPACITY: usize = 1024;
/// Events read from the log per catch-up step.
const CATCH_UP_CHUNK: u64 = 4096;

type Batch = Arc<Vec<CommittedEvent>>;

/// The writer's end of a subscriber's live channel: each batch sent wakes the subscriber's
/// task if it awaits, and so does letting the channel go (cut loose, or the writer stops).
pub(crate) struct LiveSender {
    tx: Option<Sender<Batch>>,
    waker: Arc<WakerSlot>,
    /// Set when the writer cuts the subscriber loose for lagging.
    lagged: Arc<AtomicBool>,
}

impl LiveSender {
    pub(crate) fn try_send(&self, batch: Batch) -> std::result::Result<(), TrySendError<Batch>> {
        match &self.tx {
            Some(tx) => tx.try_send(batch),
            None => Err(TrySendError::Disconnected(batch)),
        }
    }

    /// Wakes the subscriber's task, if one awaits.
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    /// Marks the subscriber as cut loose for lagging (before the writer drops this end).
    pub(crate) fn cut_loose(&self) {
        self.lagged.store(true, Ordering::SeqCst);
    }
}

impl Drop for LiveSender {
    fn drop(&mut self) {
        // Disconnect first, so that the woken task sees the channel closed.
        drop(self.tx.take());
        self.waker.wake();
    }
}

/// The subscriber's end of its live channel.
struct LiveReceiver {
    rx: Receiver<Batch>,
    waker: Arc<WakerSlot>,
    lagged: Arc<AtomicBool>,
}

/// A registration sent to the writer, not yet answered.
struct Registering {
    reply: Answer<Lsn>,
    live: LiveReceiver,
}

/// An event and the LSN it was committed at.
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedEvent {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The event.
    pub event: Arc<Event>,
}

/// A stream of committed events. See the module documentation.
pub struct Subscription {
    shared: Arc<Shared>,
    tx: Option<Sender<Request>>,
    next: Lsn,
    /// While catching up: the last LSN to read from the log.
    catch_up_to: Option<Lsn>,
    live: Option<LiveReceiver>,
    /// A registration the writer has not answered yet (left by an asynchronous receive).
    registering: Option<Registering>,
    /// This subscription's place in the writer-gone set, while it awaits.
    gone: Watch,
    /// Set when no live events can come (read-only or closed engine): the stream ends
    /// after this LSN.
    end: Option<Lsn>,
    buffer: VecDeque<CommittedEvent>,
    /// Times the writer cut this subscription loose for lagging.
    fallbacks: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("next", &self.next)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(shared: Arc<Shared>, tx: Option<Sender<Request>>, from: Lsn) -> Subscription {
        Subscription {
            gone: Watch::new(&shared.writer_gone),
            shared,
            tx,
            next: from.max(Lsn(1)),
            catch_up_to: None,
            live: None,
            registering: None,
            end: None,
            buffer: VecDeque::new(),
            fallbacks: 0,
        }
    }

    /// The LSN of the next event this subscription will deliver.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// How many times the writer cut this subscription loose for falling more than
    /// [`SUBSCRIBER_CAPACITY`] batches behind, after which it read what it missed from the
    /// log (counted when the subscription notices, on its next receive).
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    /// The live channel is gone: cut loose (counted) or the writer stopped.
    fn lose_live(&mut self) {
        if let Some(live) = self.live.take()
            && live.lagged.load(Ordering::SeqCst)
        {
            self.fallbacks += 1;
        }
    }

    /// Sends a registration to the writer (blocking only while its queue is full, when
    /// `block`). `Err(true)`: the queue is full (not blocking); `Err(false)`: there is no
    /// writer to register with.
    fn start_register(&mut self, block: bool) -> std::result::Result<(), bool> {
        if self.registering.is_some() {
            return Ok(());
        }
        let closed = self.shared.closed.load(Ordering::SeqCst);
        let (Some(tx), false) = (&self.tx, closed) else {
            return Err(false);
        };
        let (ltx, lrx) = bounded(SUBSCRIBER_CAPACITY);
        let waker = Arc::new(WakerSlot::default());
        let lagged = Arc::new(AtomicBool::new(false));
        let (rtx, rrx) = answer::channel();
        let req = Request::Subscribe {
            live: LiveSender {
                tx: Some(ltx),
                waker: Arc::clone(&waker),
                lagged: Arc::clone(&lagged),
            },
            reply: rtx,
        };
        let sent = if block {
            tx.send(req).map_err(|_| false)
        } else {
            tx.try_send(req)
                .map_err(|e| matches!(e, TrySendError::Full(_)))
        };
        sent?;
        self.registering = Some(Registering {
            reply: rrx,
            live: LiveReceiver {
                rx: lrx,
                waker,
                lagged,
            },
        });
        Ok(())
    }

    /// The writer answered the registration with the LSN it had published, `h`.
    fn go_live(&mut self, reg: Registering, h: Lsn) {
        self.live = Some(reg.live);
        self.catch_up_to = Some(h);
    }

    /// No live events will come: the stream ends at what was published last. (Only once
    /// the writer is done: a closing writer may still publish the batch it finishes.)
    fn set_end(&mut self) {
        let last = self.shared.published().last_lsn;
        self.end = Some(last);
        self.catch_up_to = Some(last);
    }

    /// Registers a live channel with the writer; falls back to "read the log to its end"
    /// when there is no writer.
    fn register(&mut self) {
        if self.start_register(true).is_ok()
            && let Some(reg) = self.registering.take()
        {
            // A request that reaches the queue after the writer took its last batch is
            // never answered (nor dropped: the engine's sender keeps the queue alive), so
            // wait only while the writer runs.
            loop {
                match reg.reply.wait_timeout(Duration::from_millis(10)) {
                    Waited::Ready(h) => return self.go_live(reg, h),
                    Waited::TimedOut if !self.shared.writer_done.load(Ordering::SeqCst) => {}
                    Waited::TimedOut => {
                        if let Some(Some(h)) = reg.reply.try_take() {
                            return self.go_live(reg, h);
                        }
                        break;
                    }
                    Waited::Dropped => break,
                }
            }
        }
        while !self.shared.writer_done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.set_end();
    }

    /// The asynchronous [`Self::register`]: `Pending` with the task's waker left where the
    /// writer's answer, or its end, will wake it.
    fn poll_register(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.start_register(false) {
            Ok(()) => {}
            Err(true) => {
                // The request queue is full (the writer is busy with it): read what is
                // published meanwhile, and try again after.
                let published = self.shared.published().last_lsn;
                if self.next <= published {
                    self.catch_up_to = Some(published);
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Err(false) => return self.poll_end(cx),
        }
        let Some(reg) = self.registering.take() else {
            return self.poll_end(cx);
        };
        match reg.reply.poll(cx) {
            Poll::Ready(Some(h)) => {
                self.gone.clear();
                self.go_live(reg, h);
                return Poll::Ready(());
            }
            Poll::Ready(None) => return self.poll_end(cx),
            Poll::Pending => {}
        }
        self.gone.register(cx.waker());
        if !self.shared.writer_done.load(Ordering::SeqCst) {
            self.registering = Some(reg);
            return Poll::Pending;
        }
        match reg.reply.try_take() {
            Some(Some(h)) => {
                self.gone.clear();
                self.go_live(reg, h);
                Poll::Ready(())
            }
            _ => self.poll_end(cx),
        }
    }

    /// Ends the stream once the writer is done, or waits for that.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.gone.register(cx.waker());
        if !self.shared.writer_done.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        self.gone.clear();
        self.set_end();
        Poll::Ready(())
    }

    /// Takes a live batch's events after those already buffered.
    fn take_batch(&mut self, batch: &[CommittedEvent]) {
        for e in batch {
            let expected = Lsn(self.next.0 + self.buffer.len() as u64);
            if e.lsn < expected {
                continue;
            }
            if e.lsn > expected {
                // A gap (cannot happen while registered; defensive): catch up from the
                // log instead.
                self.live = None;
                break;
            }
            self.buffer.push_back(e.clone());
        }
    }

    fn read_chunk(&mut self, to: Lsn) -> Result<()> {
        let upto = Lsn(to.0.min(self.next.0.saturating_add(CATCH_UP_CHUNK - 1)));
        let buffer = &mut self.buffer;
        let wal = self.shared.paths.wal.clone();
        let before = buffer.len();
        crate::backend::read_events(self.shared.log(), self.next, upto, |lsn, event| {
            buffer.push_back(CommittedEvent {
                lsn,
                event: Arc::new(event),
            });
            Ok(true)
        })?;
        if buffer.len() == before {
            return Err(Error::corruption(
                &wal,
                0,
                format!("the log ends before LSN {}, which was committed", self.next),
            ));
        }
        Ok(())
    }

    /// Waits up to `timeout` for the next event. `Ok(None)` on timeout; `Err(Closed)` once
    /// the engine is closed (or, read-only, the log's end is reached) and every event was
    /// delivered.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<CommittedEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.next = e.lsn.next();
                return Ok(Some(e));
            }
            if self.live.is_none() && self.end.is_none() && self.catch_up_to.is_none() {
                self.register();
            }
            if let Some(to) = self.catch_up_to {
                if self.next <= to {
                    self.read_chunk(to)?;
                    continue;
                }
                self.catch_up_to = None;
            }
            if let Some(end) = self.end
                && self.next > end
            {
                return Err(Error::Closed);
            }
            let Some(live) = &self.live else {
                continue;
            };
            // crossbeam's blocking receive spins and calls `sched_yield` four times before
            // it looks at the deadline, even a deadline already past: a poll (`try_recv`,
            // as the projector's feeder calls after every batch) must not block at all.
            let received = if Instant::now() >= deadline {
                live.rx.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                live.rx.recv_deadline(deadline)
            };
            match received {
                Ok(batch) => self.take_batch(&batch),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => {
                    // Cut loose for lagging, or the engine closed: read the rest from the
                    // log, then re-register (or end, if closed).
                    self.lose_live();
                }
            }
        }
    }

    /// The next event without waiting.
    pub fn try_recv(&mut self) -> Result<Option<CommittedEvent>> {
        self.recv_timeout(Duration::ZERO)
    }

    /// Waits for the next event. `Err(Closed)` once the engine is closed and drained.
    pub fn recv(&mut self) -> Result<CommittedEvent> {
        loop {
            if let Some(e) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(e);
            }
        }
    }
}

impl Subscription {
    /// Polls for the next event without blocking: `Ready(Ok(event))`, `Ready(Err(Closed))`
    /// once the engine is closed (or, read-only, the log's end is reached) and every event
    /// was delivered, another `Ready(Err(_))` if the log cannot be read, or `Pending` with
    /// `cx`'s waker registered: the writer wakes it when it sends a batch of new events,
    /// when it cuts this subscriber loose or stops, and when its thread ends.
    ///
    /// This is the poll method of a stream; [`Subscription::recv_async`] is its future.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<CommittedEvent>> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.next = e.lsn.next();
                return Poll::Ready(Ok(e));
            }
            if self.live.is_none()
                && self.end.is_none()
                && self.catch_up_to.is_none()
                && self.poll_register(cx).is_pending()
            {
                return Poll::Pending;
            }
            if let Some(to) = self.catch_up_to {
                if self.next <= to {
                    if let Err(e) = self.read_chunk(to) {
                        return Poll::Ready(Err(e));
                    }
                    continue;
                }
                self.catch_up_to = None;
            }
            if let Some(end) = self.end
                && self.next > end
            {
                return Poll::Ready(Err(Error::Closed));
            }
            let Some(live) = &self.live else {
                continue;
            };
            let mut received = live.rx.try_recv();
            if matches!(received, Err(TryRecvError::Empty)) {
                // Register, then look again: a batch sent in between is seen now, and one
                // sent after wakes the waker.
                live.waker.register(cx.waker());
                received = live.rx.try_recv();
            }
            match received {
                Ok(batch) => self.take_batch(&batch),
                Err(TryRecvError::Empty) => return Poll::Pending,
                Err(TryRecvError::Disconnected) => self.lose_live(),
            }
        }
    }

    /// Waits for the next event without blocking the thread: the future of
    /// [`Subscription::poll_recv`], for async code on any runtime. `Err(Closed)` once the
    /// engine is closed and every event was delivered. Dropping the future loses nothing:
    /// an event it did not return is returned by the next receive.
    ///
    /// # Example
    ///
    /// A task awaits events that another thread commits. The executor here is a few lines
    /// of `std` that park the thread until the waker is called; any runtime will do.
    ///
    /// ```
    /// use std::future::Future;
    /// use std::sync::Arc;
    /// use std::task::{Context, Poll, Wake, Waker};
    /// use session_engine::{Command, Engine, Error, EventBody, Lsn, Options};
    ///
    /// struct Unpark(std::thread::Thread);
    /// impl Wake for Unpark {
    ///     fn wake(self: Arc<Self>) {
    ///         self.0.unpark();
    ///     }
    /// }
    ///
    /// fn block_on<F: Future>(f: F) -> F::Output {
    ///     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    ///     let mut cx = Context::from_waker(&waker);
    ///     let mut f = std::pin::pin!(f);
    ///     loop {
    ///         match f.as_mut().poll(&mut cx) {
    ///             Poll::Ready(v) => return v,
    ///             Poll::Pending => std::thread::park(),
    ///         }
    ///     }
    /// }
    ///
    /// # fn main() -> session_engine::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = Arc::new(Engine::open(dir.path().join("data"), Options::default())?);
    /// let mut sub = engine.subscribe(Lsn(1));
    /// let writer = {
    ///     let engine = Arc::clone(&engine);
    ///     std::thread::spawn(move || {
    ///         for _ in 0..3 {
    ///             engine.execute(Command::CreateSession(Box::default())).unwrap();
    ///         }
    ///         engine.close().unwrap();
    ///     })
    /// };
    /// let lsns = block_on(async {
    ///     let mut lsns = Vec::new();
    ///     loop {
    ///         match sub.recv_async().await {
    ///             Ok(e) => {
    ///                 assert!(matches!(e.event.body, EventBody::SessionCreated(_)));
    ///                 lsns.push(e.lsn);
    ///             }
    ///             // The engine closed and every event was delivered.
    ///             Err(Error::Closed) => return Ok::<_, Error>(lsns),
    ///             Err(e) => return Err(e),
    ///         }
    ///     }
    /// })?;
    /// writer.join().unwrap();
    /// assert_eq!(lsns, [Lsn(1), Lsn(2), Lsn(3)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv_async(&mut self) -> Recv<'_> {
        Recv(self)
    }
}

/// The future of [`Subscription::recv_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Recv<'a>(&'a mut Subscription);

impl Future for Recv<'_> {
    type Output = Result<CommittedEvent>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<CommittedEvent>> {
        self.get_mut().0.poll_recv(cx)
    }
}

impl Iterator for Subscription {
    type Item = Result<CommittedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.recv() {
            Ok(e) => Some(Ok(e)),
            Err(Error::Closed) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
