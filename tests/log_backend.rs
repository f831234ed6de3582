//! The log-backend seam: the engine runs unchanged on a second backend, `MemLog`, which
//! holds its records in memory. The workload of the crash sweep, with power cuts, runs on
//! it and every recovery is checked against the model; subscriptions, point-in-time reads,
//! export and the projector read through it; and nothing of the file log is written.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use common::workload::*;
use common::{clock, options};
use session_engine::backend::{
    FrameBuf, LogBackend, LogWriter, MemLog, Opened, ReadFn, RecordSink, StartPoint,
};
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

/// A backend (a `MemLog` underneath) whose syncs wait while its gate is shut, and fail,
/// from a chosen sync on, with an error of the backend's own (not an I/O error).
#[derive(Clone, Debug)]
struct LeaseLog {
    inner: MemLog,
    ctl: Arc<LeaseCtl>,
}

#[derive(Debug, Default)]
struct LeaseCtl {
    /// (gate shut, syncs entered, fail syncs numbered above this)
    state: Mutex<(bool, u64, u64)>,
    cv: Condvar,
}

struct LeaseWriter {
    inner: Box<dyn LogWriter>,
    ctl: Arc<LeaseCtl>,
}

impl LogBackend for LeaseLog {
    fn open(
        &self,
        start: StartPoint,
        writable: bool,
        sink: &mut dyn RecordSink,
    ) -> session_engine::Result<Opened> {
        let mut opened = self.inner.open(start, writable, sink)?;
        opened.writer = opened.writer.map(|inner| {
            Box::new(LeaseWriter {
                inner,
                ctl: Arc::clone(&self.ctl),
            }) as Box<dyn LogWriter>
        });
        Ok(opened)
    }

    fn read(&self, from: Lsn, to: Lsn, f: &mut ReadFn<'_>) -> session_engine::Result<()> {
        self.inner.read(from, to, f)
    }
}

impl LogWriter for LeaseWriter {
    fn start_batch(&mut self, batch: &mut FrameBuf) {
        self.inner.start_batch(batch)
    }
    fn append(&mut self, batch: &FrameBuf) -> session_engine::Result<()> {
        self.inner.append(batch)
    }
    fn sync(&mut self) -> session_engine::Result<()> {
        let mut s = self.ctl.state.lock().unwrap();
        s.1 += 1;
        let n = s.1;
        self.ctl.cv.notify_all();
        while s.0 {
            s = self.ctl.cv.wait(s).unwrap();
        }
        if n > s.2 {
            return Err(session_engine::Error::Locked {
                path: "nats://stream/lease".into(),
            });
        }
        drop(s);
        self.inner.sync()
    }
    fn seal(&mut self) -> session_engine::Result<()> {
        self.inner.seal()
    }
    fn seal_after_sync(&mut self) -> session_engine::Result<bool> {
        self.inner.seal_after_sync()
    }
    fn last_lsn(&self) -> Lsn {
        self.inner.last_lsn()
    }
    fn position(&self) -> session_engine::backend::LogPosition {
        self.inner.position()
    }
}

#[test]
fn every_command_of_a_batch_whose_sync_fails_gets_the_backends_own_error() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let ctl = Arc::new(LeaseCtl {
        state: Mutex::new((false, 0, u64::MAX)),
        cv: Condvar::new(),
    });
    let log = LeaseLog {
        inner: MemLog::new(),
        ctl: Arc::clone(&ctl),
    };
    let mut o = options(Arc::clone(&storage), &clock());
    o.log = Some(Arc::new(log) as Arc<dyn LogBackend>);
    let e = Arc::new(Engine::open("data", o).unwrap());
    e.execute(create_cmd("s", 0)).unwrap();
    // The next sync waits at the gate, with one command in its batch...
    let entered = {
        let mut s = ctl.state.lock().unwrap();
        s.0 = true;
        s.1
    };
    let first = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || e.execute(activity_cmd("s", "first", 1)))
    };
    {
        let mut s = ctl.state.lock().unwrap();
        while s.1 == entered {
            s = ctl.cv.wait(s).unwrap();
        }
        // ...and succeeds; the one after it fails.
        s.2 = s.1;
    }
    // Four commands queue behind it: the next batch.
    let pending: Vec<_> = (0..4)
        .map(|i| e.submit(activity_cmd("s", &format!("w{i}"), 1)))
        .collect();
    {
        let mut s = ctl.state.lock().unwrap();
        s.0 = false;
        ctl.cv.notify_all();
    }
    assert!(first.join().unwrap().is_ok());
    let answers: Vec<String> = pending
        .into_iter()
        .map(|p| match p.wait() {
            Err(err @ session_engine::Error::Locked { .. }) => err.to_string(),
            other => panic!("not the backend's error: {other:?}"),
        })
        .collect();
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert!(answers[0].contains("nats://stream/lease"), "{answers:?}");
    // The engine is poisoned by it: later commands are refused as such.
    let later = e.execute(activity_cmd("s", "later", 1)).unwrap_err();
    assert!(
        matches!(later, session_engine::Error::Poisoned { .. }),
        "{later}"
    );
    assert!(matches!(
        e.poisoned(),
        Some(session_engine::Error::Poisoned { .. })
    ));
}

/// Two engines on one `MemLog` (two writers of one log, as two nodes on a remote log):
/// an append after the other's is a conflict that stores nothing and leaves the engine
/// writable, and `catch_up` takes the other's records in place, applied as a replay
/// applies them and sent to subscribers.
#[test]
fn an_engine_catches_up_in_place_with_another_writer_of_its_log() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let log = MemLog::new();
    let a = Engine::open("a", on_mem_log(&storage, &log)).unwrap();
    let b = Engine::open("b", on_mem_log(&storage, &log)).unwrap();
    let mut sub = b.subscribe(Lsn(1));
    a.execute(create_cmd("s", 0)).unwrap();
    a.execute(activity_cmd("s", "from-a", 4)).unwrap();
    // B's state has no session `s`: its own creation is accepted, and refused by the log.
    let err = b.execute(create_cmd("t", 0)).unwrap_err();
    assert!(
        matches!(err, session_engine::Error::LogConflict { .. }),
        "{err:?}"
    );
    assert!(b.poisoned().is_none());
    assert_eq!(log.len(), 2);
    assert_eq!(b.stats().conflicts, 1);
    assert_eq!(b.catch_up().unwrap(), Lsn(2));
    assert_eq!(*b.state(), *a.state());
    assert_eq!(b.stats().caught_up, 2);
    for lsn in 1..=2 {
        assert_eq!(sub.recv().unwrap().lsn, Lsn(lsn));
    }
    b.execute(activity_cmd("s", "from-b", 4)).unwrap();
    assert_eq!(sub.recv().unwrap().lsn, Lsn(3));
    assert_eq!(a.catch_up().unwrap(), Lsn(3));
    assert_eq!(*a.state(), *b.state());
    let fresh = Engine::open_read_only("a", on_mem_log(&storage, &log)).unwrap();
    assert_eq!(*fresh.state(), *a.state());
    // A read-only engine has no writer to catch up.
    assert!(matches!(
        fresh.catch_up(),
        Err(session_engine::Error::ReadOnly)
    ));
}

/// Catch-ups run by the writer thread while the engine's own callers write: two engines
/// on one log, each with a writer thread that retries after a conflict (catching up) and
/// another thread catching up all the time. Every acknowledged command is in the log once,
/// in its writer's order, and both states are a fresh replay's.
#[test]
fn catch_ups_while_the_engine_writes_lose_nothing_and_apply_nothing_twice() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let log = MemLog::new();
    let engines: Vec<Arc<Engine>> = ["a", "b"]
        .iter()
        .map(|d| Arc::new(Engine::open(*d, on_mem_log(&storage, &log)).unwrap()))
        .collect();
    engines[0].execute(create_cmd("s", 0)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut catchers = Vec::new();
    for e in &engines {
        let (e, stop) = (Arc::clone(e), Arc::clone(&stop));
        catchers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                e.catch_up().unwrap();
                n += 1;
            }
            n
        }));
    }
    let writers: Vec<_> = engines
        .iter()
        .enumerate()
        .map(|(w, e)| {
            let e = Arc::clone(e);
            std::thread::spawn(move || {
                let mut conflicts = 0;
                for i in 0..100 {
                    let cmd = activity_cmd("s", &format!("w{w}-{i}"), 4);
                    loop {
                        match e.execute(cmd.clone()) {
                            Ok(_) => break,
                            // Not created yet as far as this engine knows.
                            Err(session_engine::Error::NotFound { .. }) => {
                                e.catch_up().unwrap();
                            }
                            Err(session_engine::Error::LogConflict { .. }) => {
                                conflicts += 1;
                                e.catch_up().unwrap();
                            }
                            Err(err) => panic!("{err}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: Vec<u64> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds: Vec<u64> = catchers.into_iter().map(|t| t.join().unwrap()).collect();
    eprintln!("conflicts {conflicts:?}, catch-up rounds {rounds:?}");
    assert_eq!(log.len(), 201);
    for e in &engines {
        e.catch_up().unwrap();
        assert!(e.poisoned().is_none());
    }
    let fresh = Engine::open_read_only("a", on_mem_log(&storage, &log)).unwrap();
    let state = fresh.state();
    assert_eq!(*engines[0].state(), *state);
    assert_eq!(*engines[1].state(), *state);
    let acts: Vec<String> = state
        .session(&sid("s"))
        .unwrap()
        .body
        .activity_log
        .iter()
        .map(|a| a.action.to_string())
        .collect();
    for w in 0..2 {
        let mine: Vec<&String> = acts
            .iter()
            .filter(|a| a.starts_with(&format!("w{w}-")))
            .collect();
        let want: Vec<String> = (0..100).map(|i| format!("w{w}-{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "writer {w}");
    }
}
