//! Wakers for the awaitable handles ([`super::Pending`] as a `Future`,
//! [`super::Subscription::poll_recv`]): no runtime, no polling, only `std::task`.
//!
//! * [`WakerSlot`]: one waker, for one waiter (an answer slot, a subscriber's live
//!   channel). Whoever makes progress possible (the writer sending an answer or a batch,
//!   or dropping its end) calls [`WakerSlot::wake`].
//! * [`WakerSet`]: every waiter that must also hear that the writer thread has ended
//!   (`Shared::writer_gone`): a request that reached the queue after the writer's last
//!   batch is never answered, and a subscription of a closed engine ends only once the
//!   writer is done. Each waiter holds a key ([`Watch`]) and removes its waker when it no
//!   longer waits, so the set holds only the waiters of the moment.
//!
//! The waiter's side is always: register the waker, then check the condition again; the
//! waker's side: make the condition true, then wake. Either the waiter sees the condition
//! or the waker sees the registration, so no wake-up is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

/// One waiter's waker.
#[derive(Default)]
pub(crate) struct WakerSlot(Mutex<Option<Waker>>);

impl WakerSlot {
    fn lock(&self) -> MutexGuard<'_, Option<Waker>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `waker` (keeping the one there if it would wake the same task).
    pub(crate) fn register(&self, waker: &Waker) {
        let mut w = self.lock();
        match &*w {
            Some(old) if old.will_wake(waker) => {}
            _ => *w = Some(waker.clone()),
        }
    }

    /// Wakes the registered waker, if any (once: it is taken).
    pub(crate) fn wake(&self) {
        let w = self.lock().take();
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// Wakers of many waiters, each under its own key.
#[derive(Default)]
pub(crate) struct WakerSet(Mutex<Wakers>);

#[derive(Default)]
struct Wakers {
    next_key: u64,
    wakers: HashMap<u64, Waker>,
}

impl WakerSet {
    fn lock(&self) -> MutexGuard<'_, Wakers> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, key: &mut Option<u64>, waker: &Waker) {
        let mut s = self.lock();
        let k = match *key {
            Some(k) => k,
            None => {
                let k = s.next_key;
                s.next_key += 1;
                *key = Some(k);
                k
            }
        };
        match s.wakers.get(&k) {
            Some(old) if old.will_wake(waker) => {}
            _ => {
                s.wakers.insert(k, waker.clone());
            }
        }
    }

    fn remove(&self, key: &mut Option<u64>) {
        if let Some(k) = key.take() {
            self.lock().wakers.remove(&k);
        }
    }

    /// Wakes (and forgets) every registered waker.
    pub(crate) fn wake_all(&self) {
        let wakers = std::mem::take(&mut self.lock().wakers);
        for (_, w) in wakers {
            w.wake();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().wakers.len()
    }
}

/// One waiter's registration in a [`WakerSet`], removed when it is dropped or cleared.
pub(crate) struct Watch {
    set: Arc<WakerSet>,
    key: Option<u64>,
}

impl Watch {
    pub(crate) fn new(set: &Arc<WakerSet>) -> Watch {
        let set = Arc::clone(set);
        Watch { set, key: None }
    }

    /// Registers (or updates) this waiter's waker.
    pub(crate) fn register(&mut self, waker: &Waker) {
        self.set.register(&mut self.key, waker);
    }

    /// Removes this waiter's waker.
    pub(crate) fn clear(&mut self) {
        self.set.remove(&mut self.key);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_slot_wakes_its_waker_once() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let slot = WakerSlot::default();
        slot.wake();
        slot.register(&waker);
        slot.register(&waker);
        slot.wake();
        slot.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_set_wakes_every_registered_waiter_and_forgets_dropped_ones() {
        let set = Arc::new(WakerSet::default());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut a = Watch::new(&set);
        let mut b = Watch::new(&set);
        let mut c = Watch::new(&set);
        a.register(&waker);
        a.register(&waker);
        b.register(&waker);
        c.register(&waker);
        assert_eq!(set.len(), 3);
        drop(b);
        c.clear();
        assert_eq!(set.len(), 1);
        set.wake_all();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(set.len(), 0);
    }
}
