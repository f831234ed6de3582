//! Projections are derived: deleted, damaged or stale files are rebuilt, a crash at any
//! point leaves files that catch up to exactly what a full rebuild writes, they are
//! complete after close, and projection I/O errors are retried without touching commands
//! (seed 001's file-operation tests in this engine's terms).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use session_engine::storage::{CrashMode, MemStorage, Storage};
use session_engine::{
    CommandRun, Error, Lsn, ManualClock, NewSession, ProjectionOptions, SessionId, SessionManager,
};

fn named(id: &str, timeout_secs: u64) -> NewSession {
    NewSession {
        id: Some(SessionId::new(id).unwrap()),
        timeout_secs,
        ..NewSession::default()
    }
}

/// One step of a workload that touches every kind of projection file.
fn step(m: &SessionManager, clock: &ManualClock, i: usize) {
    let id = format!("s{i}");
    let s = m.create_session(named(&id, 100)).unwrap();
    s.record_activity("work", Some(json!({"i": i}))).unwrap();
    s.set_metadata("k", json!(i)).unwrap();
    if i.is_multiple_of(3) {
        s.record_command(CommandRun::failed(
            "cmd",
            "failed",
            Duration::from_millis(3),
        ))
        .unwrap();
    }
    if i % 4 == 1 {
        s.save_checkpoint(None).unwrap();
        s.record_activity("risky", None).unwrap();
        s.restore_checkpoint(None).unwrap();
    }
    if i % 5 == 2 {
        m.archive_session(&id).unwrap();
    }
    m.chain(&format!("agent{}", i % 2))
        .unwrap()
        .update_session(&format!("ext-{i}"), "prompt", "response", None)
        .unwrap();
    if i == 3 {
        let bundle = m.export_bundle("s0").unwrap();
        m.import_bundle(bundle).unwrap();
        m.clone_session("s1", Some("s1-clone")).unwrap();
    }
    clock.advance_secs(30);
    if i % 6 == 5 {
        m.expire_idle().unwrap();
    }
}

fn workload(m: &SessionManager, clock: &ManualClock, steps: usize) {
    for i in 0..steps {
        step(m, clock, i);
    }
    // Every timeout that has passed is recorded, as a running engine's watchdog would:
    // otherwise the next open records them, and its files differ from these.
    m.expire_idle().unwrap();
}

/// The files a full rebuild writes for the directory's state, closing the manager.
fn rebuilt(b: &Backend, m: SessionManager) -> BTreeMap<String, Vec<u8>> {
    m.rebuild_projections().unwrap();
    flush(&m);
    m.close().unwrap();
    projection_files(b)
}

#[test]
fn deleted_projections_are_rebuilt_on_open() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        workload(&m, &clock, 10);
        m.close().unwrap();
        let before = projection_files(&b);
        assert!(before.len() > 20, "{}: {:?}", b.name, before.keys());
        for dir in ["sessions", "logs", "chains"] {
            b.remove_tree(dir);
        }
        b.remove("projections.json");
        assert!(projection_files(&b).is_empty());
        let m = b.open(&clock);
        flush(&m);
        assert_eq!(m.projection_status().unwrap().rebuilds, 1);
        m.close().unwrap();
        assert_eq!(projection_files(&b), before, "{}", b.name);
    }
}

#[test]
fn some_deleted_files_are_restored_from_the_marker_without_a_full_rebuild() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        workload(&m, &clock, 10);
        m.close().unwrap();
        let before = projection_files(&b);
        for f in [
            "sessions/registry.json",
            "sessions/session_s1.json",
            "sessions/archive/session_s2.json",
            "logs/session_s3.log",
            "chains/agent1_sessions.json",
        ] {
            b.remove(f);
        }
        let m = b.open(&clock);
        flush(&m);
        let st = m.projection_status().unwrap();
        assert_eq!(st.rebuilds, 0, "{}", b.name);
        assert_eq!(st.logs_rebuilt, 1);
        m.close().unwrap();
        assert_eq!(projection_files(&b), before, "{}", b.name);
    }
}

#[test]
fn projections_are_complete_after_close() {
    for b in Backend::both() {
        let clock = clock();
        let slow = ProjectionOptions {
            flush_interval: Duration::from_secs(3600),
            registry_interval: Duration::from_secs(3600),
            ..fast_projections()
        };
        let m = b.open_with(&clock, slow.clone());
        m.wait_for_projections(Lsn::ZERO, None).unwrap();
        workload(&m, &clock, 8);
        // Nothing asked for the files and the intervals are long: they are not there yet.
        assert!(!b.exists("sessions/session_s0.json"), "{}", b.name);
        let last = m.last_lsn();
        m.close().unwrap();
        let after_close = projection_files(&b);
        assert!(after_close.contains_key("sessions/session_s0.json"));
        let marker: serde_json::Value = b.json("projections.json");
        assert_eq!(marker["lsn"], json!(last.get()));
        let m = b.open_with(&clock, slow);
        assert!(m.wait_for_projections(last, None).unwrap());
        let st = m.projection_status().unwrap();
        assert_eq!((st.projected, st.rebuilds, st.failures), (last, 0, 0));
        assert_eq!(rebuilt(&b, m), after_close, "{}", b.name);
    }
}

#[test]
fn waiting_for_projections_flushes_at_once_and_times_out_cleanly() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open_with(
        &clock,
        ProjectionOptions {
            flush_interval: Duration::from_secs(3600),
            registry_interval: Duration::from_secs(3600),
            ..fast_projections()
        },
    );
    let s = m.create_session(named("s", 0)).unwrap();
    let lsn = s.record_activity("a", None).unwrap();
    assert!(m.wait_for_projections(lsn, None).unwrap());
    assert!(b.exists("sessions/session_s.json"));
    assert_eq!(
        b.json("sessions/registry.json")["sessions"]["s"]["status"],
        json!("active")
    );
    let st = m.projection_status().unwrap();
    assert!(st.projected >= lsn && st.running);
    // An LSN that is not committed yet cannot be reached.
    assert!(
        !m.wait_for_projections(Lsn(lsn.get() + 5), Some(Duration::from_millis(20)))
            .unwrap()
    );
    m.close().unwrap();
    assert!(matches!(
        m.wait_for_projections(Lsn(lsn.get() + 5), None),
        Err(Error::Closed)
    ));
    assert!(!m.projection_status().unwrap().running);
}

#[test]
fn garbage_projection_files_never_break_opening() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        workload(&m, &clock, 8);
        m.close().unwrap();
        let before = projection_files(&b);
        let garbage: &[u8] = b"\x00\xffnot json at all{{{\n";
        // The engine's own files, damaged by another program.
        let own = [
            "projections.json",
            "sessions/registry.json",
            "sessions/session_s0.json",
            "sessions/archive/session_s2.json",
            "logs/session_s1.log",
            "chains/agent0_sessions.json",
        ];
        // Files it never wrote, at paths the state does not project to.
        let others = [
            "sessions/session_ghost.json",
            "logs/session_ghost.log",
            "chains/ghost_sessions.json",
            "sessions/session_s4.json.tmp",
        ];
        for f in own.iter().chain(&others) {
            b.write(f, garbage);
        }
        let m = b.open(&clock);
        flush(&m);
        assert_eq!(m.projection_status().unwrap().rebuilds, 1, "garbage marker");
        m.close().unwrap();
        // Its own files are written afresh, the others are left exactly as they are ...
        let mut expected = before.clone();
        for f in others {
            expected.insert(f.to_string(), garbage.to_vec());
        }
        assert_eq!(projection_files(&b), expected, "{}", b.name);
        // ... and what the other program wrote into its own files is in the attic.
        let attic = b.attic();
        for f in own {
            assert!(
                attic.iter().any(|(p, bytes)| p == f && bytes == garbage),
                "{}: {f} not moved aside: {:?}",
                b.name,
                attic.iter().map(|(p, _)| p).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn damaged_files_behind_a_valid_marker_are_repaired_when_touched_or_rebuilt() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    workload(&m, &clock, 8);
    m.close().unwrap();
    b.write("logs/session_s1.log", b"garbage\n");
    b.write("sessions/session_s1.json", b"garbage");
    b.write("sessions/session_s3.json", b"{\"truncated\": ");
    let m = b.open(&clock);
    flush(&m);
    // The engine never reads these files, so opening and commands are unaffected.
    let s1 = m.resume_session("s1").unwrap();
    s1.record_activity("after", None).unwrap();
    flush(&m);
    let f = b.json("sessions/session_s1.json");
    assert_eq!(
        f["activity_log"].as_array().unwrap().last().unwrap()["action"],
        json!("after")
    );
    let lines = b.log_lines("logs/session_s1.log");
    assert_eq!(
        lines[0]["event"],
        json!("session_created"),
        "rebuilt from the log"
    );
    assert_eq!(lines.last().unwrap()["details"]["action"], json!("after"));
    assert!(m.projection_status().unwrap().logs_rebuilt >= 1);
    // An explicit rebuild fixes the file nothing touched.
    let report = m.rebuild_projections().unwrap();
    assert_eq!(report.lsn, m.last_lsn());
    assert!(report.sessions >= 10);
    b.json("sessions/session_s3.json");
    m.close().unwrap();
}

#[test]
fn a_marker_ahead_of_the_log_means_a_full_rebuild() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        workload(&m, &clock, 6);
        m.close().unwrap();
        let before = projection_files(&b);
        b.write(
            "projections.json",
            br#"{"format":"session-engine-projections","version":1,"lsn":1000000}"#,
        );
        b.write("sessions/session_s0.json", b"stale");
        let m = b.open(&clock);
        flush(&m);
        assert_eq!(m.projection_status().unwrap().rebuilds, 1);
        m.close().unwrap();
        assert_eq!(projection_files(&b), before, "{}", b.name);
    }
}

#[test]
fn an_explicit_rebuild_moves_only_its_own_stale_files_aside_and_reports_them() {
    let b = Backend::file();
    let clock = clock();
    let m = b.open_with(
        &clock,
        ProjectionOptions {
            log_max_bytes: Some(300),
            ..fast_projections()
        },
    );
    workload(&m, &clock, 5);
    flush(&m);
    // Appends to logs already past the limit rotate them.
    for id in ["s0", "s1"] {
        m.resume_session(id)
            .unwrap()
            .record_activity("more", None)
            .unwrap();
        flush(&m);
    }
    // Rotated logs, which the rebuild replaces by whole logs: the engine's own.
    let rotated: Vec<(String, Vec<u8>)> = b
        .files_under("logs/archive")
        .into_iter()
        .map(|(n, bytes)| (format!("logs/archive/{n}"), bytes))
        .collect();
    assert!(rotated.len() >= 2, "{:?}", b.list("logs/archive"));
    // Files of other programs, at paths the state does not project to, and their
    // temporary files (an export being written into the data directory, say).
    let others = [
        "sessions/session_ghost.json",
        "sessions/archive/session_ghost2.json",
        "logs/session_ghost.log",
        "logs/archive/session_ghost.1.log",
        "chains/ghost_sessions.json",
        "sessions/notes.txt",
        "sessions/notes.tmp",
        "sessions/session_s1.json.tmp",
        "chains/ghost_sessions.json.0123456789abcdef.tmp",
        "s.bundle.tmp",
        "s.bundle.0123456789abcdef.tmp",
    ];
    for (i, f) in others.iter().enumerate() {
        b.write(f, format!("another program's file {i}").as_bytes());
    }
    // The engine's own temporary files, which a crash left (its temporary names carry
    // 16 random hex digits, see `storage::temp_name`).
    let own_temporaries = [
        "sessions/session_s1.json.0123456789abcdef.tmp",
        "projections.json.fedcba9876543210.tmp",
    ];
    for f in own_temporaries {
        b.write(f, b"{");
    }
    let r = m.rebuild_projections().unwrap();
    assert_eq!(
        r.moved_aside as usize,
        rotated.len() + own_temporaries.len()
    );
    for (i, f) in others.iter().enumerate() {
        assert_eq!(
            b.read(f),
            format!("another program's file {i}").as_bytes(),
            "{f} was touched"
        );
    }
    let attic = b.attic();
    for f in own_temporaries {
        assert!(!b.exists(f), "{f} left");
        assert!(
            attic.iter().any(|(p, bytes)| p == f && bytes == b"{"),
            "{f}"
        );
    }
    for (f, bytes) in &rotated {
        assert!(!b.exists(f), "{f} left");
        assert!(attic.iter().any(|(p, b)| p == f && b == bytes), "{f} lost");
    }
    assert_eq!(attic.len(), rotated.len() + own_temporaries.len());
    assert_eq!(r.sessions, m.state().sessions.len() as u64);
    assert_eq!(r.chains, 2);
    assert_eq!(r.logs, m.state().sessions.len() as u64);
    assert_eq!(r.lsn, m.last_lsn());
    m.close().unwrap();
}

#[test]
fn a_torn_log_line_is_cut_and_no_line_is_written_twice() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        workload(&m, &clock, 6);
        m.close().unwrap();
        let before = projection_files(&b);
        // A crash after some lines were appended but before the marker moved: the marker
        // is behind, and the last line is half written.
        let mut log = b.read("logs/session_s4.log");
        log.extend_from_slice(b"{\"timestamp\":\"2025-11-08T1");
        b.write("logs/session_s4.log", &log);
        b.write(
            "projections.json",
            br#"{"format":"session-engine-projections","version":1,"lsn":3}"#,
        );
        let m = b.open(&clock);
        flush(&m);
        assert_eq!(m.projection_status().unwrap().rebuilds, 0);
        m.close().unwrap();
        assert_eq!(projection_files(&b), before, "{}", b.name);
    }
}

#[test]
fn after_a_crash_at_any_point_projections_catch_up_to_a_full_rebuild() {
    let mut repaired = 0;
    for seed in 0..48u64 {
        let mode = CrashMode::ALL[(seed % 4) as usize];
        let m_storage = Arc::new(MemStorage::new());
        let storage: Arc<dyn Storage> = m_storage.clone();
        let clock = clock();
        let mut o = manager_options(&storage, &clock);
        // In the buffered modes a crash takes back acknowledged events: the files must
        // not have shown them either.
        if seed % 2 == 1 {
            o.engine.durability = session_engine::Durability::None;
        }
        let m = SessionManager::open("data", o).unwrap();
        let crash_after = (seed as usize * 7) % 40;
        let mut image = None;
        let mut ops = 0;
        'work: for i in 0..8 {
            step(&m, &clock, i);
            // Crash at a point that varies with the seed, sometimes while files are written.
            for _ in 0..3 {
                ops += 1;
                if ops == crash_after {
                    image = Some(m_storage.crash(seed, mode));
                    break 'work;
                }
                if ops % 5 == 0 {
                    flush(&m);
                }
            }
        }
        let image = image.unwrap_or_else(|| m_storage.crash(seed, mode));
        m.close().unwrap();

        let b = backend_on(Arc::new(image));
        let m = open_repairing(&b, &clock, seed % 2 == 1, &mut repaired);
        flush(&m);
        let caught_up = projection_files(&b);
        let state = m.state();
        for s in state.sessions.values() {
            assert!(
                caught_up.contains_key(&format!("sessions/session_{}.json", s.id))
                    || caught_up.contains_key(&format!("sessions/archive/session_{}.json", s.id)),
                "seed {seed}: {} has no file",
                s.id
            );
        }
        assert_eq!(rebuilt(&b, m), caught_up, "seed {seed} {mode:?}");
    }
    println!("{repaired} of 48 crash images needed a repair first");
}

/// Opens a crash image. Without fsyncs (`buffered`) a crash may keep a later write and
/// garble an earlier one: the engine refuses such a log, and the user repairs it (which
/// moves the damage aside) and opens again; projections must then match the repaired log.
/// With fsyncs every image must open as it is.
fn open_repairing(
    b: &Backend,
    clock: &ManualClock,
    buffered: bool,
    repaired: &mut usize,
) -> SessionManager {
    match SessionManager::open(&b.dir, manager_options(&b.storage, clock)) {
        Ok(m) => m,
        Err(Error::Corruption { .. }) if buffered => {
            session_engine::repair(&b.dir, Arc::clone(&b.storage)).unwrap();
            *repaired += 1;
            SessionManager::open(&b.dir, manager_options(&b.storage, clock)).unwrap()
        }
        Err(e) => panic!("{e}"),
    }
}

fn backend_on(storage: Arc<MemStorage>) -> Backend {
    let mut b = Backend::mem();
    b.storage = storage.clone();
    b.mem = Some(storage);
    b
}

// ---- Projection I/O errors (seed 001's file-operation tests) ----

fn faulty(needle: &str) -> (Backend, Arc<Hooked<PathFaults>>) {
    let mut b = Backend::mem();
    let faults = PathFaults::new(Arc::clone(&b.storage), needle);
    b.storage = faults.clone();
    (b, faults)
}

#[test]
fn a_projection_write_that_succeeds_at_once_is_not_retried() {
    let (b, faults) = faulty("sessions");
    let clock = clock();
    let m = b.open(&clock);
    workload(&m, &clock, 3);
    flush(&m);
    let st = m.projection_status().unwrap();
    assert_eq!((st.failures, st.consecutive_failures), (0, 0));
    assert_eq!(st.last_error, None);
    assert_eq!(faults.injected.load(std::sync::atomic::Ordering::SeqCst), 0);
    m.close().unwrap();
}

#[test]
fn a_failed_projection_write_is_retried_until_it_succeeds() {
    let (b, faults) = faulty("sessions/session_s");
    let clock = clock();
    let m = b.open(&clock);
    faults.fail_next(2);
    workload(&m, &clock, 3);
    flush(&m);
    let st = m.projection_status().unwrap();
    // Both injected failures were hit and retried past. How many passes they failed is
    // timing: one pass that writes two session files can meet both.
    assert_eq!(faults.injected.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!((1..=2).contains(&st.failures), "{st:?}");
    assert_eq!(st.consecutive_failures, 0);
    assert_eq!(st.last_error, None);
    m.close().unwrap();
    let files = projection_files(&b);
    let m = b.open(&clock);
    assert_eq!(rebuilt(&b, m), files);
}

/// Hundreds of session files are written (one after the other): the files are the same,
/// and a failure on any of them fails the rebuild, which the next one completes.
#[test]
fn a_rebuild_of_many_sessions_writes_every_file_and_reports_a_failure_on_any_thread() {
    let (b, faults) = faulty("session_s1");
    let clock = clock();
    let m = b.open(&clock);
    for i in 0..300 {
        let s = m.create_session(named(&format!("s{i}"), 0)).unwrap();
        s.record_activity("work", Some(json!({"i": i}))).unwrap();
        if i % 7 == 0 {
            m.archive_session(&format!("s{i}")).unwrap();
        }
    }
    flush(&m);
    let before = projection_files(&b);
    assert!(before.len() > 600, "{}", before.len());
    for dir in ["sessions", "logs"] {
        b.remove_tree(dir);
    }
    // Session s1's files, and s10..s19's and s100..s199's, spread over the threads.
    faults.fail_next(5);
    let err = m.rebuild_projections().unwrap_err();
    assert!(
        err.to_string().contains("session_s1"),
        "the failure names the file: {err}"
    );
    assert!(faults.injected.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    faults.heal();
    let r = m.rebuild_projections().unwrap();
    assert_eq!(r.sessions, 300);
    assert_eq!(r.logs, 300);
    flush(&m);
    m.close().unwrap();
    assert_eq!(projection_files(&b), before);
}

/// The full rebuild an open without a marker owes is owed until it is done: when the
/// first step of it fails (the manifest cannot be created, at the open's check and again
/// in the projector), the retries write every file.
#[test]
fn a_rebuild_that_fails_at_its_first_step_is_retried_until_it_is_done() {
    let (b, faults) = faulty("projections.manifest");
    let clock = clock();
    let m = b.open(&clock);
    workload(&m, &clock, 6);
    m.close().unwrap();
    let before = projection_files(&b);
    assert!(before.len() > 10, "{:?}", before.keys());
    for dir in ["sessions", "logs", "chains"] {
        b.remove_tree(dir);
    }
    b.remove("projections.json");
    b.remove("projections.manifest");
    faults.fail_next(2);
    let m = b.open(&clock);
    flush(&m);
    assert_eq!(faults.injected.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(m.projection_status().unwrap().last_error, None);
    m.close().unwrap();
    assert_eq!(projection_files(&b), before);
}

/// A format switch whose record cannot be written keeps the old format, and the files
/// of it that the switch had moved aside already are written again; the close returns.
#[test]
fn a_format_switch_that_fails_leaves_the_old_format_whole() {
    let (b, faults) = faulty("projection-format.json");
    let clock = clock();
    let m = b.open(&clock);
    workload(&m, &clock, 4);
    flush(&m);
    let before = projection_files(&b);
    faults.fail_next(1);
    m.rebuild_projections_as(session_engine::projection::ProjectionFormat::Amplihack)
        .unwrap_err();
    flush(&m);
    assert_eq!(projection_files(&b), before);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(m.close()));
    // Generous: this close takes milliseconds.
    let closed = rx.recv_timeout(Duration::from_secs(60));
    assert!(matches!(closed, Ok(Ok(()))), "{closed:?}");
    assert_eq!(projection_files(&b), before);
}

#[test]
fn persistent_projection_failures_are_reported_and_commands_go_on() {
    let (b, faults) = faulty("logs");
    let clock = clock();
    let m = b.open(&clock);
    flush(&m);
    faults.fail_next(u64::MAX);
    let s = m.create_session(named("s", 0)).unwrap();
    // Commands never wait for projections: they keep succeeding.
    for i in 0..20 {
        s.record_activity("work", Some(json!({"i": i}))).unwrap();
    }
    let err = m.flush_projections().unwrap_err();
    match &err {
        Error::Io { op, path, .. } => {
            assert!(op.contains("log"), "{op}");
            assert!(
                path.to_string_lossy().contains("logs"),
                "{}",
                path.display()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let st = m.projection_status().unwrap();
    assert!(st.consecutive_failures >= 3, "{st:?}");
    assert!(st.last_error.is_some());
    assert!(st.projected < m.last_lsn());
    // Once the disk recovers, the projector catches up by itself.
    faults.heal();
    flush(&m);
    let st = m.projection_status().unwrap();
    assert_eq!(st.last_error, None);
    assert_eq!(st.projected, m.last_lsn());
    assert_eq!(b.log_lines("logs/session_s.log").len(), 21);
    m.close().unwrap();
}

#[test]
fn close_reports_projection_files_it_could_not_write() {
    let (b, faults) = faulty("chains");
    let clock = clock();
    let m = b.open(&clock);
    flush(&m);
    faults.fail_next(u64::MAX);
    m.chain("a")
        .unwrap()
        .update_session("x", "p", "r", None)
        .unwrap();
    // The log closed cleanly, so `close` is Ok; the status reports the files it left.
    m.close().unwrap();
    let st = m.projection_status().unwrap();
    assert!(st.is_behind() && !st.running, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("chains")),
        "{st:?}"
    );
    // The log has everything: the next open writes what was missing.
    faults.heal();
    let m = b.open(&clock);
    flush(&m);
    assert_eq!(
        b.json("chains/a_sessions.json")["current_session_id"],
        json!("x")
    );
    m.close().unwrap();
}

#[test]
fn concurrent_writers_leave_consistent_projection_files() {
    let b = Backend::file();
    let clock = clock();
    let m = b.open(&clock);
    let sessions: Vec<_> = (0..6)
        .map(|i| m.create_session(named(&format!("c{i}"), 0)).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for (i, s) in sessions.iter().enumerate() {
            let m = &m;
            scope.spawn(move || {
                for n in 0..60 {
                    s.record_activity("w", Some(json!({"n": n}))).unwrap();
                    if n % 20 == 0 {
                        s.set_metadata("n", json!(n)).unwrap();
                        m.chain(&format!("agent{i}"))
                            .unwrap()
                            .update_session(&format!("x{n}"), "p", "r", None)
                            .unwrap();
                    }
                }
            });
        }
        // Readers of the files meanwhile always see whole JSON documents.
        scope.spawn(|| {
            for _ in 0..50 {
                for i in 0..6 {
                    if let Ok(bytes) = b
                        .storage
                        .read(&b.path(&format!("sessions/session_c{i}.json")))
                    {
                        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    });
    flush(&m);
    for i in 0..6 {
        let f = b.json(&format!("sessions/session_c{i}.json"));
        let ns: Vec<u64> = f["activity_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["details"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (0..60).collect::<Vec<_>>());
        assert_eq!(
            b.log_lines(&format!("logs/session_c{i}.log")).len(),
            1 + 60 + 3
        );
    }
    let files = projection_files(&b);
    m.close().unwrap();
    let m = b.open(&clock);
    assert_eq!(rebuilt(&b, m), files);
}

#[test]
fn closing_while_the_projector_subscribes_never_hangs_and_loses_nothing() {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        for i in 0..200 {
            let b = Backend::mem();
            let clock = clock();
            let m = b.open(&clock);
            for n in 0..i % 4 {
                m.create_session(named(&format!("s{n}"), 0)).unwrap();
            }
            // The projector's feeder may still be registering with the writer here.
            m.close().unwrap();
            for n in 0..i % 4 {
                assert!(
                    b.exists(&format!("sessions/session_s{n}.json")),
                    "round {i}"
                );
            }
        }
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("closing a manager hung");
    worker.join().unwrap();
}

/// The projector subscribes from its own thread; a subscription that registers while the
/// engine closes must end (with every event) instead of waiting for an answer forever.
#[test]
fn a_subscription_registering_during_close_ends_instead_of_hanging() {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        for round in 0..100 {
            let (_, s) = mem();
            let clock = clock();
            let e = Arc::new(open(&s, &clock));
            create(&e, "s");
            let last = e.last_lsn();
            let subscriber = {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    // Fresh subscriptions register with the writer over and over, until
                    // one finds the engine closed and reads the log to its end.
                    loop {
                        let mut sub = e.subscribe(Lsn(1));
                        let mut seen = Vec::new();
                        loop {
                            match sub.try_recv() {
                                Ok(Some(ev)) => seen.push(ev.lsn),
                                Ok(None) => break,
                                Err(Error::Closed) => return seen,
                                Err(other) => panic!("{other}"),
                            }
                        }
                    }
                })
            };
            std::thread::sleep(Duration::from_micros(50 * (round % 20)));
            e.close().unwrap();
            let seen = subscriber.join().unwrap();
            assert_eq!(seen, (1..=last.get()).map(Lsn).collect::<Vec<_>>());
        }
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("a subscription hung while the engine closed");
    worker.join().unwrap();
}

#[test]
fn log_lines_held_during_an_outage_are_bounded_and_rebuilt_from_the_log() {
    let (b, faults) = faulty("logs");
    let clock = clock();
    let m = b.open_with(
        &clock,
        ProjectionOptions {
            max_pending_log_bytes: 2048,
            ..fast_projections()
        },
    );
    flush(&m);
    faults.fail_next(u64::MAX);
    let s = m.create_session(named("s", 0)).unwrap();
    for i in 0..100 {
        s.record_activity("work", Some(json!({"i": i}))).unwrap();
    }
    assert!(m.flush_projections().is_err());
    faults.heal();
    flush(&m);
    let lines = b.log_lines("logs/session_s.log");
    let lsns: Vec<u64> = lines.iter().map(|l| l["lsn"].as_u64().unwrap()).collect();
    assert_eq!(lsns, (1..=101).collect::<Vec<_>>());
    assert!(m.projection_status().unwrap().logs_rebuilt >= 1);
    m.close().unwrap();
}

#[test]
fn in_buffered_durability_modes_projections_never_show_events_a_crash_takes_back() {
    let mut lost_unsynced = 0;
    for seed in 0..16u64 {
        let b = Backend::mem();
        let clock = clock();
        let mut o = manager_options(&b.storage, &clock);
        o.engine.durability = session_engine::Durability::None;
        // Session files are written at once, the marker only when asked.
        o.projections = Some(ProjectionOptions {
            registry_interval: Duration::from_secs(3600),
            ..fast_projections()
        });
        let m = SessionManager::open(&b.dir, o).unwrap();
        let s = m.create_session(named("s", 0)).unwrap();
        for i in 0..3 {
            s.record_activity("before", Some(json!({"i": i}))).unwrap();
        }
        flush(&m);
        // The log and the marker agree up to here; what follows is only in the OS cache.
        m.engine().sync().unwrap();
        for i in 0..5 {
            s.record_activity("after", Some(json!({"i": i}))).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while b.json("sessions/session_s.json")["activity_log"]
            .as_array()
            .unwrap()
            .len()
            < 8
        {
            assert!(std::time::Instant::now() < deadline, "never projected");
            std::thread::sleep(Duration::from_millis(1));
        }
        let image = b.mem.as_ref().unwrap().crash(seed, CrashMode::Whole);
        m.close().unwrap();
        let c = backend_on(Arc::new(image));
        // The projector synced the log before it wrote the files: the image opens as it is.
        let m = open_repairing(&c, &clock, false, &mut 0);
        flush(&m);
        let shown = if c.exists("sessions/session_s.json") {
            c.json("sessions/session_s.json")["activity_log"]
                .as_array()
                .unwrap()
                .len()
        } else {
            0
        };
        let kept = m
            .get_session("s")
            .map_or(0, |s| s.snapshot().unwrap().body.activity_log.len());
        assert_eq!(
            shown, kept,
            "seed {seed}: the file shows events the log lost"
        );
        lost_unsynced += usize::from(kept < 8);
        let files = projection_files(&c);
        assert_eq!(rebuilt(&c, m), files, "seed {seed}");
    }
    // The projector synced the log before writing the files, so nothing it showed was lost.
    assert_eq!(lost_unsynced, 0);
}

#[test]
fn log_lines_for_records_the_log_does_not_have_are_dropped() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m.create_session(named("s", 0)).unwrap();
        s.record_activity("kept", None).unwrap();
        m.close().unwrap();
        let before = projection_files(&b);
        // A log that runs ahead of the records (as after a repair moved some aside).
        let mut log = b.read("logs/session_s.log");
        let mut ghost: serde_json::Value = serde_json::from_str(
            String::from_utf8(log.clone())
                .unwrap()
                .lines()
                .last()
                .unwrap(),
        )
        .unwrap();
        ghost["lsn"] = json!(99);
        log.extend_from_slice(format!("{ghost}\n").as_bytes());
        b.write("logs/session_s.log", &log);
        b.write(
            "projections.json",
            br#"{"format":"session-engine-projections","version":1,"lsn":1}"#,
        );
        let m = b.open(&clock);
        flush(&m);
        m.close().unwrap();
        assert_eq!(projection_files(&b), before, "{}", b.name);
    }
}

#[test]
fn a_damaged_line_after_the_marker_is_found_even_when_the_last_line_is_whole() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m.create_session(named("s", 0)).unwrap();
        for i in 0..4 {
            s.record_activity("work", Some(json!({"i": i}))).unwrap();
        }
        m.close().unwrap();
        let before = projection_files(&b);
        // What a crash can leave of appends that were not synced: a later piece kept, an
        // earlier one zeroed. The marker says only the first line was synced.
        let text = String::from_utf8(b.read("logs/session_s.log")).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[2] = "\0".repeat(lines[2].len());
        b.write("logs/session_s.log", (lines.join("\n") + "\n").as_bytes());
        b.write(
            "projections.json",
            br#"{"format":"session-engine-projections","version":1,"lsn":1}"#,
        );
        let m = b.open(&clock);
        flush(&m);
        m.close().unwrap();
        assert_eq!(projection_files(&b), before, "{}", b.name);
    }
}

#[test]
fn under_a_steady_writer_the_marker_keeps_moving_with_the_watermark() {
    let b = Backend::mem();
    let clock = clock();
    // Some file is always dirty while the writer runs: the marker moves anyway, to the
    // watermark below the oldest unwritten change, and each checkpoint's files reflect it.
    let m = b.open_with(
        &clock,
        ProjectionOptions {
            flush_interval: Duration::from_millis(3),
            checkpoint_interval: Duration::from_millis(5),
            ..fast_projections()
        },
    );
    let s = m.create_session(named("s", 0)).unwrap();
    let first = s.record_activity("a", None).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut markers = std::collections::BTreeSet::new();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let until = std::time::Instant::now() + Duration::from_millis(400);
            while std::time::Instant::now() < until {
                s.record_activity("a", None).unwrap();
                std::thread::sleep(Duration::from_micros(300));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let st = m.projection_status().unwrap();
            if st.marker >= first {
                markers.insert(st.marker);
                // The durable marker never vouches for more than the file shows.
                let shown = b.json("sessions/session_s.json")["activity_log"]
                    .as_array()
                    .map_or(0, Vec::len) as u64;
                assert!(shown + first.get() > st.marker.get(), "{st:?}: {shown}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    assert!(
        markers.len() >= 3,
        "the marker moved only to {markers:?}: {:?}, last {}",
        m.projection_status(),
        m.last_lsn()
    );
    // Once the writer stops, the marker reaches the end of the log: at the latest at the
    // close, which checkpoints (a flush only waits for the files, not for the marker).
    flush(&m);
    let last = m.last_lsn();
    m.close().unwrap();
    assert_eq!(b.json("projections.json")["lsn"], json!(last.get()));
}

/// A storage that, once armed, commits `action` through the manager right after a file
/// whose path contains `needle` is renamed into place: a command that lands (written, not
/// yet synced) while the projector is between its log sync and its next file.
struct CommitDuringRename {
    needle: &'static str,
    armed: std::sync::atomic::AtomicBool,
    manager: std::sync::Mutex<std::sync::Weak<SessionManager>>,
    action: fn(&SessionManager),
    /// The power cut right after the action: before the projector's next checkpoint,
    /// whose `sync_fs` would make the log durable too.
    mem: Arc<MemStorage>,
    image: std::sync::Mutex<Option<MemStorage>>,
}

impl std::fmt::Debug for CommitDuringRename {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitDuringRename")
    }
}

impl Hooks for CommitDuringRename {
    fn renamed(&self, _from: &std::path::Path, to: &std::path::Path) {
        if to.to_string_lossy().contains(self.needle)
            && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst)
            && let Some(m) = self.manager.lock().unwrap().upgrade()
        {
            (self.action)(&m);
            *self.image.lock().unwrap() = Some(self.mem.crash(0, CrashMode::DurableOnly));
        }
    }
}

fn interval_options(
    storage: &Arc<dyn Storage>,
    clock: &ManualClock,
) -> session_engine::ManagerOptions {
    let mut o = manager_options(storage, clock);
    o.engine.durability = session_engine::Durability::Interval(Duration::from_secs(3600));
    o
}

/// Runs one "commit during the projector's write" scenario and returns, after a power cut
/// that loses everything unsynced right after the command (before the projector's next
/// checkpoint, whose `sync_fs` would make it durable) and a reopen, the registry and `session_s1.json`.
fn commit_during_projection(
    needle: &'static str,
    action: fn(&SessionManager),
) -> (SessionManager, Backend) {
    let clock = clock();
    let mem = Arc::new(MemStorage::new());
    let hook = Arc::new(Hooked {
        inner: Arc::clone(&mem) as Arc<dyn Storage>,
        hooks: CommitDuringRename {
            needle,
            armed: false.into(),
            manager: std::sync::Mutex::new(std::sync::Weak::new()),
            action,
            mem: Arc::clone(&mem),
            image: std::sync::Mutex::new(None),
        },
    });
    let storage: Arc<dyn Storage> = hook.clone();
    let m = Arc::new(SessionManager::open("data", interval_options(&storage, &clock)).unwrap());
    *hook.manager.lock().unwrap() = Arc::downgrade(&m);
    m.create_session(named("s1", 0)).unwrap();
    flush(&m);
    hook.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    m.create_session(named("a0", 0)).unwrap();
    m.get_session("s1")
        .unwrap()
        .record_activity("kept", None)
        .unwrap();
    flush(&m);
    assert!(
        !hook.armed.load(std::sync::atomic::Ordering::SeqCst),
        "the hook never fired"
    );
    let image = hook.image.lock().unwrap().take().unwrap();
    m.close().unwrap();
    let b = backend_on(Arc::new(image));
    let m = SessionManager::open(&b.dir, interval_options(&b.storage, &clock)).unwrap();
    flush(&m);
    (m, b)
}

#[test]
fn a_session_created_while_the_projector_writes_is_not_shown_if_a_crash_takes_it_back() {
    // The projector syncs the log, then writes files from the state it synced; a session
    // committed in between (unsynced in Interval mode) must not reach registry.json.
    let (m, b) = commit_during_projection("session_a0.json", |m| {
        m.create_session(named("ghost", 0)).unwrap();
    });
    assert!(
        m.state().session(&id("ghost")).is_none(),
        "the ghost was synced"
    );
    assert!(
        b.json("sessions/registry.json")["sessions"]
            .get("ghost")
            .is_none()
    );
    assert!(!b.exists("sessions/session_ghost.json"));
    let files = projection_files(&b);
    assert_eq!(rebuilt(&b, m), files);
}

#[test]
fn an_activity_recorded_while_the_projector_writes_is_not_shown_if_a_crash_takes_it_back() {
    let (m, b) = commit_during_projection("session_a0.json", |m| {
        m.get_session("s1")
            .unwrap()
            .record_activity("lost", None)
            .unwrap();
    });
    let in_log: Vec<String> = m
        .state()
        .session(&id("s1"))
        .unwrap()
        .body
        .activity_log
        .iter()
        .map(|a| a.action.to_string())
        .collect();
    assert_eq!(in_log, ["kept"]);
    let shown: Vec<String> = b.json("sessions/session_s1.json")["activity_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shown, in_log);
    let files = projection_files(&b);
    assert_eq!(rebuilt(&b, m), files);
}

#[test]
fn a_rebuild_in_interval_mode_writes_only_synced_state() {
    let clock = clock();
    for seed in 0..6u64 {
        let b = Backend::mem();
        let m = SessionManager::open(&b.dir, interval_options(&b.storage, &clock)).unwrap();
        flush(&m);
        for i in 0..3 {
            m.create_session(named(&format!("s{i}"), 0)).unwrap();
        }
        m.rebuild_projections().unwrap();
        let image = b.mem.as_ref().unwrap().crash(seed, CrashMode::DurableOnly);
        m.close().unwrap();
        let c = backend_on(Arc::new(image));
        let m = SessionManager::open(&c.dir, interval_options(&c.storage, &clock)).unwrap();
        // The rebuild synced the log first: all three sessions are durable.
        assert_eq!(m.state().sessions.len(), 3, "seed {seed}");
        flush(&m);
        let files = projection_files(&c);
        assert_eq!(rebuilt(&c, m), files, "seed {seed}");
    }
}

#[test]
fn a_power_cut_while_sessions_are_created_leaves_no_files_for_sessions_the_log_lost() {
    // Interval mode with a sync that never comes due on its own: only the projector's own
    // log syncs make anything durable, so every file it shows must be backed by them.
    let clock = clock();
    for seed in 0..8u64 {
        let b = Backend::mem();
        let m =
            Arc::new(SessionManager::open(&b.dir, interval_options(&b.storage, &clock)).unwrap());
        flush(&m);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 3000 {
                    m.create_session(named(&format!("s{i}"), 0)).unwrap();
                    i += 1;
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let image = b
            .mem
            .as_ref()
            .unwrap()
            .crash(seed, CrashMode::ALL[(seed % 4) as usize]);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap();
        Arc::into_inner(m).unwrap().close().unwrap();

        let c = backend_on(Arc::new(image));
        let mut repaired = 0;
        let m = open_repairing(&c, &clock, true, &mut repaired);
        let state = m.state();
        let orphans: Vec<String> = c
            .storage
            .list_dir(&c.path("sessions"))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| {
                n.strip_prefix("session_")
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .filter(|n| state.session(&id(n)).is_none())
            .collect();
        assert!(
            orphans.is_empty(),
            "seed {seed}: files for lost sessions: {orphans:?}"
        );
        // Files are written without syncs of their own: one written after the last
        // checkpoint may be torn by the cut (the open rewrites it), but none shows a
        // session the log lost, before the repair or after.
        let registry_ok = |c: &Backend, state: &session_engine::State| {
            let Ok(bytes) = c.storage.read(&c.path("sessions/registry.json")) else {
                return;
            };
            let Ok(reg) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                return;
            };
            for k in reg["sessions"].as_object().unwrap().keys() {
                assert!(
                    state.session(&id(k)).is_some(),
                    "seed {seed}: registry shows {k}"
                );
            }
        };
        registry_ok(&c, &state);
        flush(&m);
        assert!(c.exists("sessions/registry.json"));
        c.json("sessions/registry.json");
        registry_ok(&c, &state);
        let files = projection_files(&c);
        let again = rebuilt(&c, m);
        let differ: Vec<String> = files
            .keys()
            .chain(again.keys())
            .filter(|k| files.get(*k) != again.get(*k))
            .map(|k| {
                let show = |v: Option<&Vec<u8>>| {
                    v.map(|v| String::from_utf8_lossy(&v[..v.len().min(300)]).into_owned())
                };
                format!("{k}: {:?} / {:?}", show(files.get(k)), show(again.get(k)))
            })
            .take(4)
            .collect();
        assert!(differ.is_empty(), "seed {seed}: {differ:#?}");
    }
}

/// Issue 12, defect 5, in the library: an activity committed while its session file
/// cannot be written is `Ok`, and so is `close()` (the log closed cleanly); the failure is
/// in `projection_status()`, the marker does not claim the event, and the next open writes
/// the file.
#[test]
fn a_committed_command_is_ok_and_close_succeeds_when_its_projection_cannot_be_written() {
    let (b, faults) = faulty("sessions/session_s");
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s", 0)).unwrap();
    flush(&m);
    let marker_before = b.json("projections.json")["lsn"].as_u64().unwrap();
    faults.fail_next(u64::MAX);
    s.record_activity("work", Some(json!({"i": 1}))).unwrap();
    let last = m.last_lsn();
    m.close().unwrap();
    let st = m.projection_status().unwrap();
    assert!(st.failures >= 1, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("session_s")),
        "{st:?}"
    );
    assert!(st.projected < last, "{st:?}");
    assert!(!st.running);
    // The marker never claims an LSN whose files were not written.
    let marker = b.json("projections.json")["lsn"].as_u64().unwrap();
    assert!(marker < last.get(), "marker {marker}, last {last}");
    assert!(marker >= marker_before);
    assert_eq!(
        b.json("sessions/session_s.json")["activity_log"],
        json!([]),
        "the file still shows the state before the activity"
    );
    // The next open retries and writes it.
    faults.heal();
    let m = b.open(&clock);
    flush(&m);
    let st = m.projection_status().unwrap();
    assert_eq!(st.last_error, None);
    assert_eq!(st.projected, last);
    assert_eq!(
        b.json("sessions/session_s.json")["activity_log"][0]["action"],
        json!("work")
    );
    m.close().unwrap();
    assert_eq!(b.json("projections.json")["lsn"], json!(last.get()));
}

// ---- The watermark and power cuts while files are written without syncs ----

/// The marker moves to the watermark: a file still dirty at a checkpoint (its writes
/// fail) keeps the marker just below its change, while the files written after it move
/// the marker up to there and no further.
#[test]
fn a_file_still_dirty_at_a_checkpoint_keeps_the_marker_below_its_change() {
    let (b, faults) = faulty("sessions/session_a.json");
    let clock = clock();
    let m = b.open(&clock);
    m.create_session(named("a", 0)).unwrap();
    let sb = m.create_session(named("b", 0)).unwrap();
    let before = flush_and_checkpoint(&m);
    assert_eq!(before, m.last_lsn());
    faults.fail_next(u64::MAX);
    let b1 = sb.record_activity("b1", None).unwrap();
    let a1 = m
        .get_session("a")
        .unwrap()
        .record_activity("a1", None)
        .unwrap();
    assert_eq!(a1, b1.next());
    for i in 0..5 {
        sb.record_activity(&format!("b{}", i + 2), None).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while m.projection_status().unwrap().marker < b1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let st = m.projection_status().unwrap();
    assert_eq!(st.marker, b1, "{st:?}");
    assert_eq!(st.projected, b1, "{st:?}");
    assert_eq!(
        session_engine::projection::marker_lsn(&*b.storage, &m.projection_paths()),
        Some(b1)
    );
    // b's file shows every activity although a's is behind.
    let shown = b.json("sessions/session_b.json")["activity_log"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(shown, 6);
    faults.heal();
    flush_and_checkpoint(&m);
    let st = m.projection_status().unwrap();
    assert_eq!((st.marker, st.projected), (m.last_lsn(), m.last_lsn()));
    m.close().unwrap();
}

/// Flushes the projections, then waits (20 s at most) for the next checkpoint to bring
/// the marker to the end of the log: a flush waits for the files only, and when they were
/// already written its request does not hurry the checkpoint. Returns the marker.
fn flush_and_checkpoint(m: &SessionManager) -> Lsn {
    flush(m);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let marker = m.projection_status().unwrap().marker;
        if marker >= m.last_lsn() || std::time::Instant::now() > deadline {
            return marker;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Power cuts taken at many moments while the projector writes (files renamed into place
/// without syncs, logs appended without syncs, checkpoints in between): after a reopen
/// every projection file equals what a full rebuild from the log writes.
#[test]
fn a_power_cut_while_projection_files_are_written_is_repaired_at_open() {
    let mut images = Vec::new();
    for run in 0..4u64 {
        let m_storage = Arc::new(MemStorage::new());
        let storage: Arc<dyn Storage> = m_storage.clone();
        let clock = clock();
        let mut o = manager_options(&storage, &clock);
        let p = o.projections.as_mut().unwrap();
        // Many files written and not yet vouched for by a checkpoint at each cut.
        p.checkpoint_interval = Duration::from_millis(3 + run * 10);
        p.flush_interval = Duration::from_micros(300);
        let m = SessionManager::open("data", o).unwrap();
        for h in 0..3 {
            m.create_session(named(&format!("hot{h}"), 0)).unwrap();
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        let cut = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // At least 12 steps, and on until the cuts are taken (a fast build would
                // otherwise finish before the cutter took its images).
                for i in 0..400 {
                    if i >= 12 && cut.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    step(&m, &clock, i);
                    for k in 0..20 {
                        m.get_session(&format!("hot{}", k % 3))
                            .unwrap()
                            .record_activity("more", Some(json!({"k": k})))
                            .unwrap();
                    }
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let mut n = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) && n < 8 {
                std::thread::sleep(Duration::from_micros(2000 + 700 * (n % 5)));
                let seed = run * 1000 + n;
                images.push((
                    seed,
                    m_storage.crash(seed, CrashMode::ALL[(n % 4) as usize]),
                ));
                n += 1;
            }
            cut.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        m.close().unwrap();
    }
    assert!(images.len() >= 8, "only {} cuts", images.len());
    let clock = clock();
    for (seed, image) in images {
        let b = backend_on(Arc::new(image));
        let m = SessionManager::open(&b.dir, manager_options(&b.storage, &clock)).unwrap();
        flush(&m);
        let caught_up = projection_files(&b);
        for f in caught_up.keys().filter(|f| f.ends_with(".json")) {
            let v: Result<serde_json::Value, _> = serde_json::from_slice(&caught_up[f]);
            assert!(v.is_ok(), "seed {seed}: {f} is not JSON after the repair");
        }
        assert_eq!(rebuilt(&b, m), caught_up, "seed {seed}");
    }
}
