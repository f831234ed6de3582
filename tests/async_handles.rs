//! The awaitable handles: `Pending` as a `Future` and `Subscription::poll_recv` /
//! `recv_async`, woken by the writer (no polling), on a tokio runtime and with a bare
//! counting waker.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::*;
use session_engine::storage::{Storage, StorageFile};
use session_engine::{Command, Engine, Error, Lsn, Subscription};

/// A storage whose `sync_data` waits while the gate is shut: the writer cannot answer.
#[derive(Debug, Clone)]
struct Gated(Arc<(Mutex<bool>, Condvar)>);

impl Gated {
    fn set_open(&self, open: bool) {
        let (m, cv) = &*self.0;
        *m.lock().unwrap() = open;
        cv.notify_all();
    }
}

#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn StorageFile>,
    gate: Gated,
}

impl StorageFile for GatedFile {
    fn write_at(&mut self, o: u64, b: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(o, b)
    }
    fn read_at(&mut self, o: u64, b: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(o, b)
    }
    fn len(&mut self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&mut self, l: u64) -> std::io::Result<()> {
        self.inner.set_len(l)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        let (m, cv) = &*self.gate.0;
        let mut open = m.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        drop(open);
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
}

impl Hooks for Gated {
    fn file(&self, inner: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        Box::new(GatedFile {
            inner,
            gate: self.clone(),
        })
    }
}

/// An engine on memory whose log syncs wait at a gate (open at first).
fn gated_engine() -> (Arc<Engine>, Gated, Arc<dyn Storage>) {
    let (_, inner) = mem();
    let gate = Gated(Arc::new((Mutex::new(true), Condvar::new())));
    let storage: Arc<dyn Storage> = Arc::new(Hooked {
        inner,
        hooks: gate.clone(),
    });
    let e = Arc::new(open(&storage, &clock()));
    (e, gate, storage)
}

fn new_session(name: &str) -> Command {
    Command::CreateSession(Box::new(session_engine::NewSession {
        id: Some(id(name)),
        ..Default::default()
    }))
}

fn activity_cmd(s: &str, action: &str) -> Command {
    Command::RecordActivity {
        session: id(s),
        action: action.into(),
        details: None,
    }
}

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count(AtomicUsize::new(0)));
    (Arc::clone(&c), Waker::from(c))
}

/// Polls `poll` to completion, polling again only after the waker was called: a handle
/// whose waker is never called fails the test instead of completing. Returns the output
/// and how many times it was polled.
fn drive_by_wakes<T>(mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> (T, usize) {
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut polls = 0;
    loop {
        let seen = count.0.load(Ordering::SeqCst);
        polls += 1;
        if let Poll::Ready(v) = poll(&mut cx) {
            return (v, polls);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while count.0.load(Ordering::SeqCst) == seen {
            assert!(Instant::now() < deadline, "pending and never woken");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn the_writer_calls_a_pending_futures_waker_when_the_command_is_durable() {
    let (e, gate, _) = gated_engine();
    create(&e, "s1");
    gate.set_open(false);
    let mut pending = e.submit(activity_cmd("s1", "a"));
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    // Its sync waits at the gate: no answer, no wake.
    assert!(std::pin::Pin::new(&mut pending).poll(&mut cx).is_pending());
    std::thread::sleep(Duration::from_millis(30));
    assert!(!pending.is_ready());
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
    gate.set_open(true);
    // The waker registered by that poll is called once the answer is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    while count.0.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "never woken");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    match std::pin::Pin::new(&mut pending).poll(&mut cx) {
        Poll::Ready(r) => assert_eq!(r.unwrap().lsn, Lsn(2)),
        Poll::Pending => panic!("woken but not ready"),
    }
}

#[test]
fn the_writer_calls_a_subscriptions_waker_for_new_events() {
    let (e, _gate, _) = gated_engine();
    create(&e, "s1");
    let mut sub = e.subscribe(Lsn(2));
    let (count, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(sub.poll_recv(&mut cx).is_pending());
    // Until the registration is answered and nothing more is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = count.0.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        if count.0.load(Ordering::SeqCst) == seen {
            break;
        }
        assert!(sub.poll_recv(&mut cx).is_pending());
        assert!(Instant::now() < deadline);
    }
    let writer = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            for i in 0..5 {
                activity(&e, "s1", &format!("a{i}"));
            }
        })
    };
    let mut lsns = Vec::new();
    while lsns.len() < 5 {
        let (ev, _) = drive_by_wakes(|cx| sub.poll_recv(cx));
        lsns.push(ev.unwrap().lsn);
    }
    writer.join().unwrap();
    assert_eq!(lsns, (2..=6).map(Lsn).collect::<Vec<_>>());
}

#[test]
fn dropping_a_polled_pending_future_does_not_lose_the_commit() {
    let (e, gate, storage) = gated_engine();
    create(&e, "s1");
    gate.set_open(false);
    let mut pending = e.submit(new_session("dropped"));
    let (_, waker) = counting_waker();
    assert!(
        std::pin::Pin::new(&mut pending)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    drop(pending);
    gate.set_open(true);
    e.sync().unwrap();
    assert!(e.state().session(&id("dropped")).is_some());
    assert_eq!(e.last_lsn(), Lsn(2));
    e.close().unwrap();
    drop(e);
    let e = open(&storage, &clock());
    assert!(e.state().session(&id("dropped")).is_some());
}

#[test]
fn closing_the_engine_wakes_an_awaiting_subscriber_with_closed() {
    let (e, _gate, _) = gated_engine();
    create(&e, "s1");
    let mut sub = e.subscribe(Lsn(1));
    let (first, _) = drive_by_wakes(|cx| sub.poll_recv(cx));
    assert_eq!(first.unwrap().lsn, Lsn(1));
    let closer = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            e.close().unwrap();
        })
    };
    let (end, _) = drive_by_wakes(|cx| sub.poll_recv(cx));
    closer.join().unwrap();
    assert!(matches!(end, Err(Error::Closed)), "{end:?}");
    // And it stays ended, for the blocking form too.
    assert!(matches!(sub.try_recv(), Err(Error::Closed)));
}

#[test]
fn a_subscription_of_a_read_only_engine_ends_at_the_log_end_when_polled() {
    let (_, s) = mem();
    let c = clock();
    let e = open(&s, &c);
    create(&e, "s1");
    activity(&e, "s1", "a");
    e.close().unwrap();
    drop(e);
    let ro = Engine::open_read_only("data", options(Arc::clone(&s), &c)).unwrap();
    let mut sub = ro.subscribe(Lsn(1));
    let mut lsns = Vec::new();
    loop {
        match drive_by_wakes(|cx| sub.poll_recv(cx)).0 {
            Ok(ev) => lsns.push(ev.lsn),
            Err(Error::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(lsns, [Lsn(1), Lsn(2)]);
    // A read-only engine's submit is refused at once, awaited too.
    let (r, _) = drive_by_wakes(|cx| std::pin::Pin::new(&mut ro.submit(new_session("x"))).poll(cx));
    assert!(matches!(r, Err(Error::ReadOnly)));
}

#[tokio::test(flavor = "current_thread")]
async fn awaiting_a_pending_on_tokio_does_not_block_the_runtime() {
    let (e, gate, _) = gated_engine();
    create(&e, "s1");
    gate.set_open(false);
    let mut pending = e.submit(activity_cmd("s1", "a"));
    // One thread runs the runtime: a `Pending` that blocked it would stop the timer too.
    let timed_out = tokio::time::timeout(Duration::from_millis(50), &mut pending).await;
    assert!(timed_out.is_err());
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            gate.set_open(true);
        })
    };
    assert_eq!(pending.await.unwrap().lsn, Lsn(2));
    opener.join().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn tasks_await_commands_while_another_thread_commits() {
    let (e, _gate, _) = gated_engine();
    create(&e, "s1");
    let other = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || {
            (0..50)
                .map(|i| activity(&e, "s1", &format!("t{i}")).lsn)
                .collect::<Vec<_>>()
        })
    };
    let mut tasks = Vec::new();
    for task in 0..4 {
        let e = Arc::clone(&e);
        tasks.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            for i in 0..25 {
                lsns.push(
                    e.submit(activity_cmd("s1", &format!("k{task}.{i}")))
                        .await
                        .unwrap()
                        .lsn,
                );
            }
            lsns
        }));
    }
    let mut all = other.join().unwrap();
    for t in tasks {
        let lsns = t.await.unwrap();
        assert!(
            lsns.windows(2).all(|w| w[0] < w[1]),
            "a task's commands in order"
        );
        all.extend(lsns);
    }
    all.sort();
    assert_eq!(all, (2..=151).map(Lsn).collect::<Vec<_>>());
    assert_eq!(e.last_lsn(), Lsn(151));
}

#[tokio::test(flavor = "current_thread")]
async fn a_subscription_awaited_on_tokio_sees_every_event_another_thread_commits() {
    let (e, _gate, _) = gated_engine();
    create(&e, "s1");
    let mut sub: Subscription = e.subscribe(Lsn(1));
    assert_eq!(sub.recv_async().await.unwrap().lsn, Lsn(1));
    // Nothing new: the await waits without blocking the runtime's one thread.
    let idle = tokio::time::timeout(Duration::from_millis(50), sub.recv_async()).await;
    assert!(idle.is_err());
    let writer = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || {
            for i in 0..200 {
                activity(&e, "s1", &format!("a{i}"));
            }
            e.close().unwrap();
        })
    };
    let mut lsns = Vec::new();
    let end = loop {
        match sub.recv_async().await {
            Ok(ev) => lsns.push(ev.lsn),
            Err(err) => break err,
        }
    };
    writer.join().unwrap();
    assert!(matches!(end, Error::Closed), "{end:?}");
    assert_eq!(lsns, (2..=201).map(Lsn).collect::<Vec<_>>());
}

#[tokio::test(flavor = "current_thread")]
async fn closing_the_engine_ends_an_awaiting_subscription_on_tokio() {
    let (e, _gate, _) = gated_engine();
    create(&e, "s1");
    let mut sub = e.subscribe(Lsn(2));
    let closer = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            e.close().unwrap();
        })
    };
    let r = tokio::time::timeout(Duration::from_secs(20), sub.recv_async())
        .await
        .expect("woken by the close");
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    closer.join().unwrap();
}
