//! The supervisor's operations over many runs (issue 17): cancelling every unfinished
//! run, seed 004's health metrics with stale runs (on a manual clock), and a run that
//! prints 100 MB. Real processes (`sh -c` scripts).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_engine::run::{DEFAULT_STALE_AFTER_MS, RunId, RunStatus};
use session_engine::{
    CancelTarget, Error, EventBody, ExecRequest, ManagerOptions, ManualClock, NewSession,
    RunFilter, SessionId, SessionManager, Timestamp,
};

fn open_with(dir: &std::path::Path, clock: Option<&ManualClock>) -> SessionManager {
    let mut o = ManagerOptions::default();
    if let Some(c) = clock {
        o.engine.clock = Arc::new(c.clone());
    }
    SessionManager::open(dir, o).unwrap()
}

fn setup(clock: Option<&ManualClock>) -> (tempfile::TempDir, SessionManager) {
    let dir = tempfile::tempdir().unwrap();
    let m = open_with(dir.path(), clock);
    m.create_session(NewSession {
        id: Some(SessionId::new("s1").unwrap()),
        ..NewSession::default()
    })
    .unwrap();
    (dir, m)
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new("s1", "sh", &["-c", script])
}

/// Live processes of group `pgid`, from /proc.
fn group_left(pgid: u32) -> Vec<u32> {
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f[2].parse::<u32>().unwrap() == pgid && f[0] != "Z" {
            left.push(pid);
        }
    }
    left
}

fn pgid_of(m: &SessionManager, id: RunId) -> u32 {
    m.run(id).unwrap().process.as_ref().unwrap().pgid
}

/// Waits (at most 10 s) until run `id` satisfies `f`.
fn until(m: &SessionManager, id: RunId, f: impl Fn(&session_engine::run::Run) -> bool) {
    let t = Instant::now();
    while !f(&m.run(id).unwrap()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "run {id}: {:?}",
            m.run(id).unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cancel_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cancel"))
        .collect()
}

#[test]
fn cancel_all_cancels_every_unfinished_run_and_leaves_finished_ones() {
    let (dir, m) = setup(None);
    let done = m.exec(sh("echo done")).unwrap().wait().unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    let sleeper = m.exec(sh("echo go; sleep 30")).unwrap();
    let mut stubborn = sh("trap '' TERM; echo go; while :; do sleep 0.05; done");
    stubborn.limits.grace_ms = Some(300);
    let stubborn = m.exec(stubborn).unwrap();
    // Between attempts (recovering) when the cancel comes.
    let mut retrying = sh("exit 1");
    retrying.retry.max_retries = 5;
    retrying.retry.retry_delay_ms = 20_000;
    let retrying = m.exec(retrying).unwrap();
    let ids = [sleeper.id(), stubborn.id(), retrying.id()];
    until(&m, ids[0], |r| r.output_chunks > 0);
    until(&m, ids[1], |r| r.output_chunks > 0);
    until(&m, ids[2], |r| r.status == RunStatus::Recovering);

    let got = m
        .cancel_runs(CancelTarget::All, Duration::from_secs(10))
        .unwrap();
    let got: Vec<_> = got.iter().map(|c| (c.run, c.status)).collect();
    assert_eq!(
        got,
        ids.map(|id| (id, RunStatus::Cancelled)).to_vec(),
        "every unfinished run, and only those"
    );
    assert_eq!(m.run(done.id).unwrap().status, RunStatus::Completed);
    for h in [sleeper, stubborn, retrying] {
        assert_eq!(h.wait().unwrap().status, RunStatus::Cancelled);
    }
    for id in &ids[..2] {
        assert!(
            group_left(pgid_of(&m, *id)).is_empty(),
            "run {id} left processes"
        );
    }
    // The stubborn run ignored SIGTERM: SIGKILL after its grace period.
    assert_eq!(
        m.run(ids[1]).unwrap().exit,
        Some(session_engine::run::ExitKind::Signal(9))
    );
    assert_eq!(cancel_files(dir.path()), Vec::<String>::new());
    // Nothing left to cancel: an empty answer, nothing recorded.
    let before = m.last_lsn();
    assert_eq!(
        m.cancel_runs(CancelTarget::All, Duration::from_secs(1))
            .unwrap(),
        vec![]
    );
    assert!(matches!(
        m.cancel_runs(CancelTarget::Run(done.id), Duration::from_secs(1)),
        Err(Error::InvalidState { .. })
    ));
    assert!(matches!(
        m.cancel_runs(CancelTarget::Run(RunId(99)), Duration::from_secs(1)),
        Err(Error::NotFound { kind: "run", .. })
    ));
    assert_eq!(m.last_lsn(), before);
    assert_eq!(cancel_files(dir.path()), Vec::<String>::new());
}

#[test]
fn a_read_only_manager_cancels_a_run_another_manager_supervises() {
    let (dir, m) = setup(None);
    let h = m.exec(sh("echo go; sleep 30")).unwrap();
    until(&m, h.id(), |r| r.output_chunks > 0);
    let ro = SessionManager::open_read_only(dir.path(), Default::default()).unwrap();
    let got = ro
        .cancel_runs(CancelTarget::Run(h.id()), Duration::from_secs(10))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, RunStatus::Cancelled);
    assert_eq!(h.wait().unwrap().status, RunStatus::Cancelled);
}

#[test]
fn health_counts_runs_by_status_and_finds_the_stale_ones_by_the_clock() {
    let t0 = Timestamp::from_secs(1_790_000_000);
    let clock = ManualClock::new(t0);
    let (dir, m) = setup(Some(&clock));
    let empty = m.run_health(Duration::from_millis(DEFAULT_STALE_AFTER_MS));
    assert_eq!(empty.total_sessions, 0);
    assert_eq!(empty.average_memory_usage, 0);
    assert!(empty.sessions_by_status.values().all(|n| *n == 0));

    let done = m.exec(sh("echo done")).unwrap().wait().unwrap();
    let trigger = dir.path().join("trigger");
    // Prints at its start, and again once `trigger` exists.
    let talker = m
        .exec(sh(&format!(
            "echo started; while [ ! -e {} ]; do sleep 0.02; done; echo again; sleep 30",
            trigger.display()
        )))
        .unwrap();
    let silent = m.exec(sh("sleep 30")).unwrap();
    until(&m, talker.id(), |r| r.output_chunks == 1);
    until(&m, silent.id(), |r| r.status == RunStatus::Running);
    let five_min = Duration::from_secs(300);
    let h = m.run_health(five_min);
    assert_eq!(
        (h.total_sessions, h.healthy_sessions, h.stale_sessions),
        (3, 2, 0)
    );
    assert_eq!(h.sessions_by_status["running"], 2);
    assert_eq!(h.sessions_by_status["completed"], 1);
    assert_eq!(h.sessions_by_status.len(), 8, "every status is listed");
    assert!(done.usage.max_rss_kb > 0);
    assert_eq!(h.average_memory_usage, done.usage.max_rss_kb * 1024);

    // 200 s later the talker prints again; 200 s after that the silent run has shown
    // nothing for 400 s, the talker for 200 s.
    clock.advance_secs(200);
    std::fs::write(&trigger, b"").unwrap();
    until(&m, talker.id(), |r| r.output_chunks == 2);
    assert_eq!(
        m.run(talker.id()).unwrap().last_output_at,
        Some(Timestamp::from_secs(1_790_000_200))
    );
    clock.advance_secs(200);
    let h = m.run_health(five_min);
    assert_eq!((h.healthy_sessions, h.stale_sessions), (1, 1));
    assert_eq!(h.stale_runs, vec![silent.id().0]);
    // Exactly at the threshold is not stale yet; past it is.
    let h = m.run_health(Duration::from_secs(400));
    assert_eq!(h.stale_runs, Vec::<u64>::new());
    let h = m.run_health(Duration::from_secs(199));
    assert_eq!(h.stale_runs, vec![talker.id().0, silent.id().0]);
    assert_eq!(h.healthy_sessions, 0);
    // The seed's field names in JSON.
    let v = serde_json::to_value(m.run_health(five_min)).unwrap();
    for k in [
        "totalSessions",
        "healthySessions",
        "staleSessions",
        "averageMemoryUsage",
        "sessionsByStatus",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert_eq!(v["staleSessions"], 1);

    // Cancelled runs are neither healthy nor stale.
    let got = m
        .cancel_runs(CancelTarget::All, Duration::from_secs(10))
        .unwrap();
    assert!(
        got.iter().all(|c| c.status == RunStatus::Cancelled),
        "{got:?}"
    );
    talker.wait().unwrap();
    silent.wait().unwrap();
    let h = m.run_health(Duration::from_secs(1));
    assert_eq!((h.healthy_sessions, h.stale_sessions), (0, 0));
    assert_eq!(h.sessions_by_status["cancelled"], 2);
    // The last output times survive a reopen (replayed, or from a state schema 4
    // snapshot).
    let before = m.runs(&RunFilter::default());
    m.close().unwrap();
    drop(m);
    let m = open_with(dir.path(), Some(&clock));
    assert_eq!(m.runs(&RunFilter::default()), before);
}

/// Issue 17's "prints 100 MB": the head and the tail are kept (the default 8 MiB cap),
/// the bytes between are counted exactly, and nothing of the run is left running.
#[test]
fn a_run_printing_100_mb_keeps_head_and_tail_and_records_exactly_what_was_dropped() {
    let (_dir, m) = setup(None);
    let total: u64 = 100 << 20;
    let run = m
        .exec(sh(&format!(
            "printf BEGIN; head -c {} /dev/zero | tr '\\0' a; printf END",
            total - 8
        )))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let cap = session_engine::run::DEFAULT_MAX_OUTPUT;
    assert_eq!(run.output_kept, cap);
    assert_eq!(run.output_dropped, total - cap);
    let mut exited = None;
    let mut chunks = Vec::new();
    m.engine()
        .read_log(session_engine::Lsn(1), m.last_lsn(), |_, e| {
            match e.body {
                EventBody::RunExited(x) if x.run == run.id => exited = Some(*x),
                EventBody::RunOutput {
                    run: r,
                    offset,
                    bytes,
                    ..
                } if r == run.id => chunks.push((offset, bytes)),
                _ => {}
            }
            Ok(true)
        })
        .unwrap();
    let exited = exited.unwrap();
    assert_eq!(exited.output_bytes, total);
    assert_eq!(exited.output_dropped, total - cap);
    // The head: offsets 0 .. cap/2, contiguous; the tail: total - cap/2 .. total.
    let mut at = 0;
    let mut kept = Vec::new();
    for (offset, bytes) in &chunks {
        if *offset != at {
            assert_eq!((at, *offset), (cap / 2, total - cap / 2), "a gap elsewhere");
        }
        at = offset + bytes.len() as u64;
        kept.extend_from_slice(bytes);
    }
    assert_eq!(at, total);
    assert_eq!(kept.len() as u64, cap);
    assert!(kept.starts_with(b"BEGINaaa"));
    assert!(kept.ends_with(b"aaaEND"));
    assert!(kept[5..kept.len() - 3].iter().all(|b| *b == b'a'));
    let log = std::fs::read(m.run_log_path(run.id)).unwrap();
    let marker = format!("\n[session-engine: {} bytes dropped]\n", total - cap);
    assert_eq!(log.len() as u64, cap + marker.len() as u64);
    assert_eq!(
        &log[(cap / 2) as usize..][..marker.len()],
        marker.as_bytes()
    );
    assert!(log.ends_with(b"END"));
    assert!(group_left(pgid_of(&m, run.id)).is_empty());
}
