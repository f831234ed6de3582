//! Subscriptions: committed events from an LSN on, first read from the log (catch-up),
//! then pushed by the writer as they commit (live).
//!
//! The hand-over has no gap and no repeat: the writer registers the live channel and
//! answers with the LSN it has published so far, `H`; the subscription reads the log up to
//! `H` and takes everything after `H` from the channel. A subscriber that falls more than
//! [`SUBSCRIBER_CAPACITY`] batches behind is cut loose by the writer (which never waits
//! for it) and transparently catches up from the log again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded};

use super::{Request, Shared};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::types::Lsn;

/// Live batches a subscriber may have queued before the writer cuts it loose.
pub const SUBSCRIBER_CAPACITY: usize = 1024;
/// Events read from the log per catch-up step.
const CATCH_UP_CHUNK: u64 = 4096;

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
    live: Option<Receiver<Arc<Vec<CommittedEvent>>>>,
    /// Set when no live events can come (read-only or closed engine): the stream ends
    /// after this LSN.
    end: Option<Lsn>,
    buffer: VecDeque<CommittedEvent>,
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
            shared,
            tx,
            next: from.max(Lsn(1)),
            catch_up_to: None,
            live: None,
            end: None,
            buffer: VecDeque::new(),
        }
    }

    /// The LSN of the next event this subscription will deliver.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// Registers a live channel with the writer; falls back to "read the log to its end"
    /// when there is no writer.
    fn register(&mut self) {
        let closed = self.shared.closed.load(Ordering::SeqCst);
        if let (Some(tx), false) = (&self.tx, closed) {
            let (ltx, lrx) = bounded(SUBSCRIBER_CAPACITY);
            let (rtx, rrx) = bounded(1);
            if tx
                .send(Request::Subscribe {
                    live: ltx,
                    reply: rtx,
                })
                .is_ok()
            {
                // A request that reaches the queue after the writer took its last batch is
                // never answered (nor dropped: the engine's sender keeps the queue alive),
                // so wait only while the writer runs.
                loop {
                    match rrx.recv_timeout(Duration::from_millis(10)) {
                        Ok(h) => {
                            self.live = Some(lrx);
                            self.catch_up_to = Some(h);
                            return;
                        }
                        Err(RecvTimeoutError::Timeout)
                            if !self.shared.writer_done.load(Ordering::SeqCst) => {}
                        Err(_) => {
                            if let Ok(h) = rrx.try_recv() {
                                self.live = Some(lrx);
                                self.catch_up_to = Some(h);
                                return;
                            }
                            break;
                        }
                    }
                }
            }
        }
        // No live events will come. A closing writer may still publish the batch it is
        // finishing, so the end of the stream is read only once it is done.
        while !self.shared.writer_done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let last = self.shared.published().last_lsn;
        self.end = Some(last);
        self.catch_up_to = Some(last);
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
            if self.live.is_none() && self.end.is_none() {
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
                live.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                live.recv_deadline(deadline)
            };
            match received {
                Ok(batch) => {
                    for e in batch.iter() {
                        let expected = Lsn(self.next.0 + self.buffer.len() as u64);
                        if e.lsn < expected {
                            continue;
                        }
                        if e.lsn > expected {
                            // A gap (cannot happen while registered; defensive): catch up
                            // from the log instead.
                            self.live = None;
                            break;
                        }
                        self.buffer.push_back(e.clone());
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => {
                    // Cut loose for lagging, or the engine closed: read the rest from the
                    // log, then re-register (or end, if closed).
                    self.live = None;
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
