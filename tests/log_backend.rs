//! The log-backend seam: the engine runs unchanged on a second backend, `MemLog`, which
//! holds its records in memory. The workload of the crash sweep, with power cuts, runs on
//! it and every recovery is checked against the model; subscriptions, point-in-time reads,
//! export and the projector read through it; and nothing of the file log is written.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::workload::*;
use common::{clock, options};
use session_engine::backend::{LogBackend, MemLog};
use session_engine::storage::{CrashMode, MemStorage, Storage};
use session_engine::{Engine, Lsn, ManagerOptions, SessionManager};

fn on_mem_log(storage: &Arc<dyn Storage>, log: &MemLog) -> session_engine::Options {
    let mut o = options(Arc::clone(storage), &clock());
    o.log = Some(Arc::new(log.clone()) as Arc<dyn LogBackend>);
    o
}

#[test]
fn the_workload_runs_and_recovers_from_power_cuts_on_a_log_in_memory() {
    let mem = Arc::new(MemStorage::new());
    let log = MemLog::new();
    let mut r = Runner::with_log(
        mem.clone(),
        Some(mem.clone()),
        Settings::default(),
        Some(log),
    );
    let script = sequential_script();
    // The workload with a power cut every few steps: each recovery is checked against the
    // model (every acknowledged command is there) and the run goes on on the image.
    let mut steps = Vec::new();
    for (i, s) in script.into_iter().enumerate() {
        steps.push(s);
        if i % 7 == 6 {
            steps.push(Step::Crash(
                i as u64,
                CrashMode::ALL[i % CrashMode::ALL.len()],
            ));
        }
    }
    assert!(r.run(&steps), "the workload does not run: {:?}", r.failures);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(r.recoveries > 5, "{} recoveries", r.recoveries);
    r.next_writes_survive("mem-log");
    let log = r.log.clone().unwrap();
    assert_eq!(log.len() as u64, r.model.last_lsn);
    r.close();
    // The file log was never used: no `wal/` at all.
    assert!(!mem.exists(Path::new("data/wal")).unwrap());
}

#[test]
fn unsynced_records_of_a_buffered_engine_are_lost_in_a_crash_and_nothing_else() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let log = MemLog::new();
    let mut o = on_mem_log(&storage, &log);
    o.durability = session_engine::Durability::None;
    let e = Engine::open("data", o.clone()).unwrap();
    e.execute(create_cmd("s", 0)).unwrap();
    e.sync().unwrap();
    for i in 0..5 {
        e.execute(activity_cmd("s", &format!("a{i}"), 4)).unwrap();
    }
    assert_eq!(log.unsynced(), 5);
    let image = log.crash();
    drop(e);
    o.log = Some(Arc::new(image) as Arc<dyn LogBackend>);
    let e = Engine::open("data", o).unwrap();
    assert_eq!(e.last_lsn(), Lsn(1));
    assert_eq!(e.recovery_report().replayed, 1);
}

#[test]
fn readers_go_through_the_backend() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let log = MemLog::new();
    let m = SessionManager::open(
        "data",
        ManagerOptions {
            engine: on_mem_log(&storage, &log),
            projections: Some(common::fast_projections()),
        },
    )
    .unwrap();
    let s = m.create_session(Default::default()).unwrap();
    for i in 0..20 {
        s.record_activity(&format!("a{i}"), None).unwrap();
    }
    let last = m.engine().last_lsn();
    // A subscription from the start catches up from the log, then goes live.
    let mut sub = m.engine().subscribe(Lsn(1));
    for want in 1..=last.0 {
        assert_eq!(sub.recv().unwrap().lsn, Lsn(want));
    }
    // Point-in-time reads replay from the log.
    let at = m
        .session_at(s.session_id().as_str(), Lsn(5))
        .unwrap()
        .unwrap();
    assert_eq!(at.body.activity_log.len(), 4);
    // Export reads the session's events.
    let bundle = m.export_bundle(s.session_id().as_str()).unwrap();
    assert_eq!(bundle.events.len() as u64, last.0);
    // The projections (per-session logs are rebuilt from the log) are written.
    m.rebuild_projections().unwrap();
    m.close().unwrap();
    let id = s.session_id();
    assert!(
        storage
            .exists(Path::new(&format!("data/sessions/session_{id}.json")))
            .unwrap()
    );
    let text = storage
        .read(Path::new(&format!("data/logs/session_{id}.log")))
        .unwrap();
    assert_eq!(
        text.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64,
        last.0
    );
    // And the log's records are the engine's: a fresh engine on it rebuilds the state.
    let e = Engine::open_read_only("data", on_mem_log(&storage, &log)).unwrap();
    assert_eq!(e.state().session(id).unwrap().body.activity_log.len(), 20);
    // `read_log`, which the CLI's `replay` uses, reads the same backend.
    let mut n = 0;
    session_engine::read_log("data", &on_mem_log(&storage, &log), Lsn(1), last, |_, _| {
        n += 1;
        Ok(true)
    })
    .unwrap();
    assert_eq!(n, last.0);
}
