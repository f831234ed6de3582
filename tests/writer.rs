//! The writer's scheduling: callers of `execute` run batches themselves when the writer is
//! idle, the writer thread serves everything else. These tests pin what must not change
//! because of who runs a batch.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use session_engine::storage::{CrashMode, Storage};
use session_engine::{Command, Durability, Engine, JsonText, Lsn};

fn act(s: &str, n: u32) -> Command {
    Command::RecordActivity {
        session: id(s),
        action: format!("a{n}"),
        details: Some(JsonText::parse(&format!("{{\"n\":{n}}}")).expect("valid JSON")),
    }
}

#[test]
fn submitted_commands_and_a_later_execute_apply_in_the_order_one_thread_sent_them() {
    let (_, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    // Pipelined commands are still queued (or being run by the writer thread) when the
    // same thread calls execute, which may run a batch itself: it must not jump ahead.
    let pending: Vec<_> = (0..200).map(|n| e.submit(act("s1", n))).collect();
    let last = e.execute(act("s1", 200)).unwrap();
    for p in pending {
        p.wait().unwrap();
    }
    assert_eq!(last.lsn, Lsn(202));
    let st = e.state();
    let log = &st.session(&id("s1")).unwrap().body.activity_log;
    let actions: Vec<String> = log.iter().map(|a| a.action.to_string()).collect();
    let expected: Vec<String> = (0..=200).map(|n| format!("a{n}")).collect();
    assert_eq!(actions, expected);
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
    // Poll the durable image (a simulated power cut) until the record is in it; the bound
    // is generous, it only turns a hang into a failure.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let crashed: Arc<dyn Storage> = Arc::new(m.crash(7, CrashMode::Whole));
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
