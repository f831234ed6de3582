//! The one-shot channel that carries the writer's answer to a waiting caller.
//!
//! A caller waits for its answer by sleeping on a condition variable: no spinning, no
//! `sched_yield`. On a machine with two vCPUs, callers that polled (yielding) for their
//! answer took CPU time the writer, the projector and the other callers needed. The writer
//! wakes a caller only if it is asleep: an answer that arrives before the caller waits (a
//! lone writer runs its own batch, `writer::lead_alone`) costs no system call.
//!
//! An asynchronous waiter ([`Answer::poll`], behind `Pending`'s `Future`) leaves a
//! [`Waker`] in the slot instead of sleeping; the reply wakes it the same way.
//!
//! Dropping the [`Reply`] without sending wakes the waiter too: a request dropped unanswered
//! (the writer stopped, or its thread died while the request was in a batch) is never
//! waited for.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

struct Slot<T> {
    /// The answer, until the waiter takes it.
    value: Option<T>,
    /// Set when the reply was sent or dropped: nothing more will come.
    settled: bool,
    /// Whether the waiter is asleep on the condition variable (only then does the reply
    /// need to notify it).
    sleeping: bool,
    /// The waker of an asynchronous waiter, woken when the slot settles.
    waker: Option<Waker>,
}

struct Inner<T> {
    slot: Mutex<Slot<T>>,
    settled: Condvar,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, value: Option<T>) {
        let mut s = self.lock();
        s.value = value;
        s.settled = true;
        let sleeping = s.sleeping;
        let waker = s.waker.take();
        drop(s);
        if sleeping {
            self.settled.notify_one();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The writer's end: send the answer once, or drop it to say none will come.
pub(crate) struct Reply<T>(Option<Arc<Inner<T>>>);

/// The caller's end.
pub(crate) struct Answer<T>(Arc<Inner<T>>);

/// What [`Answer::wait_timeout`] found.
pub(crate) enum Waited<T> {
    /// The answer.
    Ready(T),
    /// The reply was dropped without an answer.
    Dropped,
    /// Nothing yet.
    TimedOut,
}

/// A new one-shot channel.
pub(crate) fn channel<T>() -> (Reply<T>, Answer<T>) {
    let inner = Arc::new(Inner {
        slot: Mutex::new(Slot {
            value: None,
            settled: false,
            sleeping: false,
            waker: None,
        }),
        settled: Condvar::new(),
    });
    (Reply(Some(Arc::clone(&inner))), Answer(inner))
}

impl<T> Reply<T> {
    /// Sends the answer, waking the waiter if it sleeps or awaits. A waiter that has gone
    /// is no concern of the writer's; returns whether it was still there.
    pub(crate) fn send(mut self, value: T) -> bool {
        match self.0.take() {
            Some(inner) => {
                let waiting = Arc::strong_count(&inner) > 1;
                inner.settle(Some(value));
                waiting
            }
            None => false,
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.settle(None);
        }
    }
}

impl<T> Answer<T> {
    /// Whether the reply was sent or dropped (so a wait will not block).
    pub(crate) fn is_settled(&self) -> bool {
        self.0.lock().settled
    }

    /// The answer if the slot has settled (`Some(None)`: the reply was dropped); otherwise
    /// leaves `cx`'s waker to be woken when it settles.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.0.lock();
        if s.settled {
            return Poll::Ready(s.value.take());
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The answer if the slot has settled, without waiting or registering anything.
    pub(crate) fn try_take(&self) -> Option<Option<T>> {
        let mut s = self.0.lock();
        s.settled.then(|| s.value.take())
    }

    /// Waits up to `timeout` for the answer.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> Waited<T> {
        let deadline = Instant::now() + timeout;
        let mut s = self.0.lock();
        loop {
            if s.settled {
                return s.value.take().map_or(Waited::Dropped, Waited::Ready);
            }
            let now = Instant::now();
            if now >= deadline {
                return Waited::TimedOut;
            }
            s.sleeping = true;
            s = self
                .0
                .settled
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            s.sleeping = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_sent_before_the_wait_is_there_at_once() {
        let (tx, rx) = channel();
        tx.send(7);
        assert!(rx.is_settled());
        assert!(matches!(rx.wait_timeout(Duration::ZERO), Waited::Ready(7)));
    }

    #[test]
    fn a_dropped_reply_ends_the_wait() {
        let (tx, rx) = channel::<u32>();
        let h = std::thread::spawn(move || rx.wait_timeout(Duration::from_secs(60)));
        drop(tx);
        assert!(matches!(h.join().unwrap(), Waited::Dropped));
    }

    #[test]
    fn a_sleeping_waiter_is_woken_by_the_answer() {
        let (tx, rx) = channel();
        let h = std::thread::spawn(move || rx.wait_timeout(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(10));
        tx.send("done");
        assert!(matches!(h.join().unwrap(), Waited::Ready("done")));
    }

    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }

    #[test]
    fn a_polled_answer_wakes_its_waker_when_sent_and_not_before() {
        let (tx, rx) = channel();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll(&mut cx).is_pending());
        assert!(rx.poll(&mut cx).is_pending());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(tx.send(5));
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(rx.poll(&mut cx), Poll::Ready(Some(5)));
    }

    #[test]
    fn a_dropped_reply_wakes_a_polled_answer_with_nothing() {
        let (tx, rx) = channel::<u32>();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll(&mut cx).is_pending());
        drop(tx);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(rx.poll(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn sending_to_a_dropped_answer_says_nobody_waits() {
        let (tx, rx) = channel::<u32>();
        drop(rx);
        assert!(!tx.send(1));
    }

    #[test]
    fn nothing_sent_times_out() {
        let (_tx, rx) = channel::<u32>();
        assert!(matches!(
            rx.wait_timeout(Duration::from_millis(1)),
            Waited::TimedOut
        ));
        assert!(!rx.is_settled());
    }
}
