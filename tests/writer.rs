//! The writer's scheduling: callers of `execute` run batches themselves when the writer is
//! idle, the writer thread serves everything else. These tests pin what must not change
//! because of who runs a batch.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use session_engine::storage::{CrashMode, Storage};
use session_engine::{
    Clock, Command, Durability, Engine, Error, JsonText, Lsn, ManualClock, Timestamp,
};

fn act(s: &str, n: u32) -> Command {
    Command::RecordActivity {
        session: id(s),
        action: format!("a{n}"),
        details: Some(JsonText::parse(&format!("{{\"n\":{n}}}")).expect("valid JSON")),
    }
}

#[test]
fn submitted_commands_and_a_later_execute_apply_in_the_order_one_thread_sent_them() {
    // Pipelined commands are still queued (or being run by the writer thread) when the
    // same thread calls execute, which may run a batch itself, or hand its command straight
    // to the batch it runs: it must not jump ahead. Who wins the race differs from round to
    // round, so the scenario runs many times.
    for round in 0..100 {
        let (_, s) = mem();
        let clock = clock();
        let e = open(&s, &clock);
        create(&e, "s1");
        let pending: Vec<_> = (0..200).map(|n| e.submit(act("s1", n))).collect();
        let last = e.execute(act("s1", 200)).unwrap();
        for p in pending {
            p.wait().unwrap();
        }
        assert_eq!(last.lsn, Lsn(202), "round {round}");
        let st = e.state();
        let log = &st.session(&id("s1")).unwrap().body.activity_log;
        let actions: Vec<String> = log.iter().map(|a| a.action.to_string()).collect();
        let expected: Vec<String> = (0..=200).map(|n| format!("a{n}")).collect();
        assert_eq!(actions, expected, "round {round}");
    }
}

#[test]
fn commands_from_many_threads_each_stay_in_their_thread_order() {
    let (_, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    for t in 0..8 {
        create(&e, &format!("s{t}"));
    }
    std::thread::scope(|scope| {
        for t in 0..8 {
            let e = &e;
            scope.spawn(move || {
                for n in 0..50 {
                    e.execute(act(&format!("s{t}"), n)).unwrap();
                }
            });
        }
    });
    let st = e.state();
    assert_eq!(st.last_lsn, Lsn(8 + 8 * 50));
    for t in 0..8 {
        let log = &st.session(&id(&format!("s{t}"))).unwrap().body.activity_log;
        let actions: Vec<String> = log.iter().map(|a| a.action.to_string()).collect();
        let expected: Vec<String> = (0..50).map(|n| format!("a{n}")).collect();
        assert_eq!(actions, expected, "session s{t}");
    }
}

#[test]
fn an_interval_batch_run_by_a_caller_is_synced_without_further_requests() {
    // The caller runs its batch and leaves the log dirty; nothing else is sent. The writer
    // thread must still sync it within the interval.
    let (m, s) = mem();
    let clock = clock();
    let mut o = options(Arc::clone(&s), &clock);
    o.durability = Durability::Interval(Duration::from_millis(20));
    let e = Engine::open("data", o).unwrap();
    create(&e, "s1");
    e.execute(act("s1", 0)).unwrap();
    // Poll the durable image (a power cut that loses every unsynced byte) until the record
    // is in it; the bound is generous, it only turns a hang into a failure. The control
    // below shows the image does not hold unsynced records.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let crashed: Arc<dyn Storage> = Arc::new(m.crash(0, CrashMode::DurableOnly));
        let lsn = open(&crashed, &clock).last_lsn();
        if lsn == Lsn(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the interval sync never made LSN 2 durable (durable up to {lsn})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    e.close().unwrap();
}

#[test]
fn an_interval_that_has_not_come_due_leaves_the_record_out_of_the_durable_image() {
    // The control for the test above: without a sync the record is not durable.
    let (m, s) = mem();
    let clock = clock();
    let mut o = options(Arc::clone(&s), &clock);
    o.durability = Durability::Interval(Duration::from_secs(3600));
    let e = Engine::open("data", o).unwrap();
    create(&e, "s1");
    e.execute(act("s1", 0)).unwrap();
    let crashed: Arc<dyn Storage> = Arc::new(m.crash(0, CrashMode::DurableOnly));
    assert!(open(&crashed, &clock).last_lsn() < Lsn(2));
    e.sync().unwrap();
    let crashed: Arc<dyn Storage> = Arc::new(m.crash(0, CrashMode::DurableOnly));
    assert_eq!(open(&crashed, &clock).last_lsn(), Lsn(2));
    e.close().unwrap();
}

#[test]
fn close_returns_when_a_caller_ran_the_last_batch() {
    // After a caller-run batch the writer thread is parked; close must still stop it.
    for _ in 0..20 {
        let (_, s) = mem();
        let clock = clock();
        let e = open(&s, &clock);
        create(&e, "s1");
        e.execute(act("s1", 0)).unwrap();
        e.close().unwrap();
        assert!(e.execute(act("s1", 1)).is_err());
    }
}

/// Waits for `h` up to `limit`; a thread still blocked then is a hang (reported, not
/// joined, so the test fails instead of hanging).
fn finished_within<T>(h: &std::thread::JoinHandle<T>, limit: Duration) -> bool {
    let start = Instant::now();
    while !h.is_finished() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(1));
    }
    h.is_finished()
}

#[test]
fn sync_submit_and_execute_racing_close_all_return() {
    // Requests sent while close drains the queue, or after it, must each get an answer
    // (an error once closed); none may wait forever. A queue of 4 (max_batch 1) makes
    // senders block in `send` while close runs.
    let clock = clock();
    for round in 0..400u32 {
        let (_m, s) = mem();
        let mut o = options(Arc::clone(&s), &clock);
        o.max_batch = 1 + (round % 2) as usize * 63;
        let e = Arc::new(Engine::open("data", o).unwrap());
        let go = Arc::new(std::sync::Barrier::new(7));
        let mut hs = Vec::new();
        for t in 0..6u32 {
            let (e, go) = (Arc::clone(&e), Arc::clone(&go));
            hs.push(std::thread::spawn(move || {
                go.wait();
                loop {
                    let r = match t % 3 {
                        0 => e.sync(),
                        1 => e.submit(Command::ExpireIdle).wait().map(|_| ()),
                        _ => e.execute(Command::ExpireIdle).map(|_| ()),
                    };
                    if r.is_err() {
                        return;
                    }
                }
            }));
        }
        go.wait();
        if round % 3 == 0 {
            std::thread::yield_now();
        }
        let closer = {
            let e = Arc::clone(&e);
            std::thread::spawn(move || e.close())
        };
        assert!(
            finished_within(&closer, Duration::from_secs(10)),
            "round {round}: close() did not return"
        );
        closer.join().unwrap().unwrap();
        for (t, h) in hs.into_iter().enumerate() {
            assert!(
                finished_within(&h, Duration::from_secs(10)),
                "round {round}: caller {t} still blocked after close returned"
            );
            h.join().unwrap();
        }
        assert!(matches!(e.sync(), Err(session_engine::Error::Closed)));
    }
}

/// A clock that panics once armed: the writer thread, which reads it for every command it
/// takes, dies in the middle of a batch.
#[derive(Debug)]
struct DeadlyClock {
    inner: ManualClock,
    armed: AtomicBool,
}

impl Clock for DeadlyClock {
    fn now(&self) -> Timestamp {
        assert!(
            !self.armed.load(Ordering::SeqCst),
            "the test's clock kills the writer thread here"
        );
        self.inner.now()
    }
}

#[test]
fn callers_of_a_writer_thread_that_died_get_an_error_instead_of_waiting_forever() {
    // Commands queued behind the one the writer thread died on are never answered, and
    // the queue (4 requests with max_batch 1) fills up; neither waiting for an answer nor
    // sending into the full queue may block for ever.
    let (_m, s) = mem();
    let deadly = Arc::new(DeadlyClock {
        inner: clock(),
        armed: AtomicBool::new(false),
    });
    let mut o = options(s, &deadly.inner);
    o.clock = deadly.clone();
    o.max_batch = 1;
    let e = Arc::new(Engine::open("data", o).unwrap());
    create(&e, "s1");
    deadly.armed.store(true, Ordering::SeqCst);
    let caller = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || {
            // `submit` never runs a batch itself: every command goes to the writer thread.
            let pending: Vec<_> = (0..12).map(|n| e.submit(act("s1", n))).collect();
            let answers: Vec<_> = pending.into_iter().map(|p| p.wait()).collect();
            (answers, e.sync(), e.snapshot().map(|_| ()))
        })
    };
    assert!(
        finished_within(&caller, Duration::from_secs(20)),
        "a caller still waits for a writer thread that died"
    );
    let (answers, sync, snapshot) = caller.join().unwrap();
    for (n, a) in answers.iter().enumerate() {
        assert!(matches!(a, Err(Error::Closed)), "command {n}: {a:?}");
    }
    assert!(matches!(sync, Err(Error::Closed)), "{sync:?}");
    assert!(matches!(snapshot, Err(Error::Closed)), "{snapshot:?}");
    let closer = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || e.close())
    };
    assert!(
        finished_within(&closer, Duration::from_secs(20)),
        "close() waits for a writer thread that died"
    );
    let closed = closer.join().unwrap();
    assert!(matches!(closed, Err(Error::Poisoned { .. })), "{closed:?}");
}

type SetOption = Box<dyn Fn(&mut session_engine::Options)>;

#[test]
fn out_of_range_options_are_refused_at_open() {
    let clock = clock();
    let cases: Vec<(&str, SetOption)> = vec![
        (
            "durability interval",
            Box::new(|o| o.durability = Durability::Interval(Duration::MAX)),
        ),
        (
            "durability interval",
            Box::new(|o| o.durability = Durability::Interval(Duration::ZERO)),
        ),
        (
            "watchdog interval",
            Box::new(|o| o.watchdog_interval = Some(Duration::MAX)),
        ),
        ("segment size", Box::new(|o| o.segment_bytes = u64::MAX)),
        ("segment size", Box::new(|o| o.segment_bytes = 100)),
        ("batch size", Box::new(|o| o.max_batch = 0)),
        ("batch size", Box::new(|o| o.max_batch = usize::MAX)),
    ];
    for (field, set) in cases {
        let (m, s) = mem();
        let mut o = options(Arc::clone(&s), &clock);
        set(&mut o);
        match Engine::open("data", o) {
            Err(session_engine::Error::InvalidInput { field: f, .. }) => assert_eq!(f, field),
            other => panic!(
                "{field}: expected InvalidInput, got {:?}",
                other.map(|_| ())
            ),
        }
        // Nothing was created.
        assert!(m.list_dir(std::path::Path::new("data")).is_err());
    }
}
