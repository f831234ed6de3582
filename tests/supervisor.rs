//! The process supervisor (issue 17) with real processes: `sh -c` scripts.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_engine::run::{EndedBy, ExitKind, RunId, RunStatus, Stream};
use session_engine::{Error, EventBody, ExecRequest, RunFilter, SessionId, SessionManager};

mod common;
use common::runs::{group_left, pgid_of, sh};

fn open(dir: &std::path::Path) -> SessionManager {
    common::runs::open_manager(dir, None)
}

fn setup() -> (tempfile::TempDir, SessionManager) {
    common::runs::setup_manager(None)
}

/// The run's events, in log order.
fn all_events(m: &SessionManager) -> Vec<EventBody> {
    let mut v = Vec::new();
    m.engine()
        .read_log(session_engine::Lsn(1), m.last_lsn(), |_, e| {
            v.push(e.body);
            Ok(true)
        })
        .unwrap();
    v
}

fn events(m: &SessionManager, id: RunId) -> Vec<EventBody> {
    all_events(m)
        .into_iter()
        .filter(|b| match b {
            EventBody::RunRequested { run, .. }
            | EventBody::RunOutput { run, .. }
            | EventBody::RunSpawnFailed { run, .. }
            | EventBody::RunInterrupted { run, .. } => *run == id,
            EventBody::RunStarted(s) => s.run == id,
            EventBody::RunExited(e) => e.run == id,
            _ => false,
        })
        .collect()
}

fn output(m: &SessionManager, id: RunId) -> Vec<(Stream, u64, Vec<u8>)> {
    events(m, id)
        .into_iter()
        .filter_map(|b| match b {
            EventBody::RunOutput {
                stream,
                offset,
                bytes,
                ..
            } => Some((stream, offset, bytes)),
            _ => None,
        })
        .collect()
}

fn exited(m: &SessionManager, id: RunId) -> session_engine::run::Exited {
    events(m, id)
        .into_iter()
        .rev()
        .find_map(|b| match b {
            EventBody::RunExited(e) => Some(*e),
            _ => None,
        })
        .expect("no exited event")
}

#[test]
fn a_run_that_succeeds_is_recorded_step_by_step_with_its_output() {
    let (dir, m) = setup();
    let mut req = sh("echo out; echo err >&2; exit 0");
    req.env = vec![
        ("API_TOKEN".into(), "hunter2".into()),
        ("PLAIN".into(), "v".into()),
    ];
    let run = m.exec(req).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.exit, Some(ExitKind::Code(0)));
    assert_eq!(run.attempts, 1);
    assert_eq!(run.output_kept, 8);
    assert_eq!(run.output_dropped, 0);
    assert_eq!(
        run.spec.env,
        vec![
            ("API_TOKEN".to_string(), "[redacted]".to_string()),
            ("PLAIN".to_string(), "v".to_string())
        ]
    );
    let ev = events(&m, run.id);
    assert!(matches!(ev[0], EventBody::RunRequested { .. }));
    assert!(
        matches!(&ev[1], EventBody::RunStarted(s) if s.pid > 0 && s.pgid == s.pid && s.start_time > 0 && !s.boot_id.is_empty())
    );
    assert!(matches!(ev.last(), Some(EventBody::RunExited(_))));
    let mut out = output(&m, run.id);
    out.sort_by_key(|o| o.1);
    let streams: Vec<(Stream, &[u8])> = out.iter().map(|(s, _, b)| (*s, &b[..])).collect();
    assert!(
        streams.contains(&(Stream::Stdout, &b"out\n"[..])),
        "{streams:?}"
    );
    assert!(
        streams.contains(&(Stream::Stderr, &b"err\n"[..])),
        "{streams:?}"
    );
    let log = std::fs::read(m.run_log_path(run.id)).unwrap();
    assert_eq!(log.len(), 8);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(m.run_log_path(run.id))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(group_left(pgid_of(&m, run.id)).is_empty());
    // The secret is nowhere in the log.
    let mut wal = Vec::new();
    for f in std::fs::read_dir(dir.path().join("wal")).unwrap().flatten() {
        wal.extend(std::fs::read(f.path()).unwrap());
    }
    assert!(!wal.windows(7).any(|w| w == b"hunter2"));
    // Reopened, the run is the same.
    m.close().unwrap();
    drop(m);
    let m = open(dir.path());
    assert_eq!(*m.run(run.id).unwrap(), *run);
}

#[test]
fn a_run_that_fails_is_failed_with_its_code_and_retries_are_each_a_step() {
    let (_dir, m) = setup();
    let run = m.exec(sh("exit 3")).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit, Some(ExitKind::Code(3)));
    let mut req = sh("echo try; exit 4");
    req.retry.max_retries = 2;
    req.retry.retry_delay_ms = 10;
    let run = m.exec(req).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.attempts, 3);
    let starts = events(&m, run.id)
        .iter()
        .filter(|b| matches!(b, EventBody::RunStarted(_)))
        .count();
    assert_eq!(starts, 3);
}

#[test]
fn ten_mb_of_output_with_a_one_mb_cap_keeps_head_and_tail_and_counts_the_drop() {
    let (_dir, m) = setup();
    let mut req = sh("head -c 10485760 /dev/zero | tr '\\0' 'a'; printf END");
    req.limits.max_output_bytes = Some(1 << 20);
    let run = m.exec(req).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    let total = 10_485_760 + 3;
    let e = exited(&m, run.id);
    assert_eq!(e.output_bytes, total);
    assert_eq!(e.output_dropped, total - (1 << 20));
    assert_eq!(run.output_kept, 1 << 20);
    let out = output(&m, run.id);
    assert!(
        out.iter()
            .all(|o| o.2.len() <= session_engine::run::MAX_CHUNK)
    );
    let head: u64 = out
        .iter()
        .filter(|o| o.1 < 512 * 1024)
        .map(|o| o.2.len() as u64)
        .sum();
    assert_eq!(head, 512 * 1024);
    let last = out.last().unwrap();
    assert!(last.2.ends_with(b"END"));
    assert_eq!(last.1 + last.2.len() as u64, total);
    let log = std::fs::read(m.run_log_path(run.id)).unwrap();
    let marker = format!("\n[session-engine: {} bytes dropped]\n", total - (1 << 20));
    assert_eq!(log.len() as u64, (1 << 20) + marker.len() as u64);
    assert!(log.ends_with(b"END"));
}

#[test]
fn a_run_past_its_timeout_is_timeout_and_its_group_is_gone() {
    let (_dir, m) = setup();
    let mut req = sh("sleep 30");
    req.limits.timeout_ms = Some(300);
    let t = Instant::now();
    let run = m.exec(req).unwrap().wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(run.status, RunStatus::Timeout);
    assert_eq!(run.ended_by, Some(EndedBy::Timeout));
    assert_eq!(run.exit, Some(ExitKind::Signal(libc_sigterm())));
    assert!(group_left(pgid_of(&m, run.id)).is_empty());
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn a_run_ignoring_sigterm_is_killed_after_the_grace_period() {
    let (_dir, m) = setup();
    let mut req = sh("trap '' TERM; echo ready; while :; do sleep 0.05; done");
    req.limits.timeout_ms = Some(300);
    req.limits.grace_ms = Some(300);
    let run = m.exec(req).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Timeout);
    assert_eq!(run.exit, Some(ExitKind::Signal(9)));
    assert!(run.duration_ms >= 600, "{}", run.duration_ms);
    assert!(group_left(pgid_of(&m, run.id)).is_empty());
}

#[test]
fn a_grandchild_that_outlives_its_parent_is_killed_too() {
    let (_dir, m) = setup();
    let mut req = sh("(trap '' TERM; sleep 20) & echo $! ; exit 0");
    req.limits.grace_ms = Some(200);
    let h = m.exec(req).unwrap();
    let id = h.id();
    let run = h.wait().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    let out = output(&m, id);
    let gc: u32 = String::from_utf8(out[0].2.clone())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(group_left(pgid_of(&m, id)).is_empty());
    let gone = std::fs::read_to_string(format!("/proc/{gc}/stat")).map_or(true, |s| {
        s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z')
    });
    assert!(gone, "grandchild {gc} is still running");
}

#[test]
fn a_run_past_its_memory_limit_fails() {
    let (_dir, m) = setup();
    // The shell holds the whole output of the substitution in memory.
    let mut req = sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}");
    req.limits.max_memory_bytes = Some(64 << 20);
    let run = m.exec(req).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_ne!(run.exit, Some(ExitKind::Code(0)));
    // Which limit ended it: memory.max names itself (the OOM killer, counted in the
    // cgroup's memory.events); RLIMIT_AS makes an allocation fail, which is not.
    let memory_max = all_events(&m).into_iter().find_map(|b| match b {
        EventBody::RunContained {
            run: r,
            memory_max,
            fallback,
            ..
        } if r == run.id => Some((memory_max, fallback)),
        _ => None,
    });
    match memory_max {
        Some((true, _)) => {
            eprintln!("memory.max held the limit: the OOM kill is checked");
            assert_eq!(run.ended_by, Some(EndedBy::Memory), "{run:?}");
            assert_eq!(exited(&m, run.id).ended_by, Some(EndedBy::Memory));
        }
        other => {
            eprintln!(
                "SKIP the OOM kill half: RLIMIT_AS held the limit here ({other:?}); \
                 ended_by is not attributed"
            );
            assert_eq!(run.ended_by, None, "{run:?}");
        }
    }
    // The same without the limit succeeds.
    let run = m
        .exec(sh(
            "x=$(head -c 20000000 /dev/zero | tr '\\0' a); echo ${#x}",
        ))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(run.status, RunStatus::Completed);
}

#[test]
fn a_cancelled_run_is_cancelled_not_failed() {
    let (_dir, m) = setup();
    let h = m.exec(sh("echo started; sleep 30")).unwrap();
    let id = h.id();
    let t = Instant::now();
    while m.run(id).unwrap().output_chunks == 0 {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.run(id).unwrap().status, RunStatus::Running);
    h.cancel();
    let run = h.wait().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.ended_by, Some(EndedBy::Cancel));
    assert!(group_left(pgid_of(&m, id)).is_empty());
    assert_eq!(
        m.runs(&RunFilter {
            status: Some(RunStatus::Cancelled),
            ..RunFilter::default()
        })
        .len(),
        1
    );
}

#[test]
fn bad_input_is_a_typed_error_that_records_nothing() {
    let (dir, m) = setup();
    let before = m.last_lsn();
    let e = m
        .exec(ExecRequest::new("s1", "no-such-program-xyz", &[]))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: "program",
                ..
            }
        ),
        "{e:?}"
    );
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, b"not a program").unwrap();
    let e = m
        .exec(ExecRequest::new("s1", plain.to_str().unwrap(), &[]))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidInput {
                field: "program",
                ..
            }
        ),
        "{e:?}"
    );
    let mut req = sh("true");
    req.cwd = Some(dir.path().join("missing"));
    assert!(matches!(m.exec(req).unwrap_err(), Error::NotFound { .. }));
    let mut req = sh("true");
    req.limits.timeout_ms = Some(0);
    assert!(matches!(
        m.exec(req).unwrap_err(),
        Error::InvalidInput { .. }
    ));
    let e = m.exec(ExecRequest::new("nobody", "sh", &[])).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: "session",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        m.run(RunId(99)).unwrap_err(),
        Error::NotFound { kind: "run", .. }
    ));
    assert_eq!(m.last_lsn(), before, "a refused exec recorded something");
    // A spawn that fails past the checks (exec of a file with no interpreter) is a
    // recorded step.
    let script = dir.path().join("noexec.sh");
    std::fs::write(&script, b"\x7fELFgarbage").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // No cgroup: its join is a `pre_exec` hook, which puts std on its fork + execvp
    // path, and glibc's execvp runs a file it cannot execute with /bin/sh, as POSIX
    // shells do (the same holds with a memory or CPU limit, whose rlimits are one too).
    let mut req = ExecRequest::new("s1", script.to_str().unwrap(), &[]);
    req.cgroup = false;
    let run = m.exec(req).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.is_some());
    assert!(matches!(
        events(&m, run.id).last(),
        Some(EventBody::RunSpawnFailed { .. })
    ));
    let mut req = ExecRequest::new("s1", script.to_str().unwrap(), &[]);
    req.limits.max_cpu_secs = Some(10);
    let run = m.exec(req).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.exit,
        Some(session_engine::run::ExitKind::Code(127)),
        "{run:?}"
    );
}

#[test]
fn a_run_left_running_by_a_dead_supervisor_is_killed_and_interrupted_at_reopen() {
    use session_engine::Command;
    use session_engine::run::Started;
    let (dir, m) = setup();
    // What a killed supervisor leaves: requested and started, a live process, no exit.
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sh")
        .args(["-c", "sleep 30"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let start_time: u64 = rest.split_whitespace().nth(19).unwrap().parse().unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let spec = session_engine::run::RunSpec {
        program: "sh".into(),
        args: vec!["-c".into(), "sleep 30".into()],
        cwd: None,
        env: vec![],
        limits: Default::default(),
        retry: Default::default(),
    };
    m.engine()
        .execute(Command::RequestRun {
            session: SessionId::new("s1").unwrap(),
            spec: Box::new(spec.clone()),
        })
        .unwrap();
    m.engine()
        .execute(Command::RecordRunStep(Box::new(EventBody::RunStarted(
            Box::new(Started {
                run: RunId(1),
                attempt: 1,
                pid,
                pgid: pid,
                start_time,
                boot_id: boot.trim().into(),
            }),
        ))))
        .unwrap();
    // A run whose process is gone, and one that never started.
    m.engine()
        .execute(Command::RequestRun {
            session: SessionId::new("s1").unwrap(),
            spec: Box::new(spec.clone()),
        })
        .unwrap();
    m.engine()
        .execute(Command::RecordRunStep(Box::new(EventBody::RunStarted(
            Box::new(Started {
                run: RunId(2),
                attempt: 1,
                pid,
                pgid: pid,
                start_time: start_time + 1,
                boot_id: boot.trim().into(),
            }),
        ))))
        .unwrap();
    m.engine()
        .execute(Command::RequestRun {
            session: SessionId::new("s1").unwrap(),
            spec: Box::new(spec),
        })
        .unwrap();
    m.close().unwrap();
    drop(m);
    let m = open(dir.path());
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(15),
        "the live run's process was not killed"
    );
    for id in 1..=3 {
        let r = m.run(RunId(id)).unwrap();
        assert_eq!(r.status, RunStatus::Interrupted, "run {id}");
    }
    assert!(
        m.run(RunId(1))
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .contains("killed")
    );
    assert!(
        m.run(RunId(2))
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .contains("gone")
    );
    assert!(group_left(pid).is_empty());
    assert_eq!(m.state().unfinished_runs().count(), 0);
}

/// Issue 17: a burst of 200 short runs, requested from 8 threads at once (so requests
/// share group commits and the runs overlap), each recorded exactly once: one request,
/// one start, its output once, one exit, completed in one attempt, no process left.
/// The 50-run version of this failed once under CI load with a run not completed: a
/// spawn (or a supervising thread) refused with EAGAIN for a moment by the process
/// limit was recorded as a failed start (or panicked the supervisor); such refusals are
/// now tried again (`supervisor::retry_transient`).
#[test]
fn two_hundred_concurrent_short_runs_are_each_recorded_exactly_once() {
    const RUNS: usize = 200;
    const THREADS: usize = 8;
    let (dir, m) = setup();
    let m = Arc::new(m);
    let requesters: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                (0..RUNS / THREADS)
                    .map(|i| {
                        let n = t * (RUNS / THREADS) + i;
                        (n, m.exec(sh(&format!("echo run-{n}"))).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let handles: Vec<_> = requesters
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let mut by_id = std::collections::BTreeMap::new();
    for (n, h) in handles {
        let run = h.wait().unwrap();
        assert!(by_id.insert(run.id, n).is_none(), "run {} twice", run.id);
    }
    assert_eq!(by_id.len(), RUNS);
    let runs = m.runs(&RunFilter::default());
    assert_eq!(runs.len(), RUNS);
    let odd: Vec<_> = runs
        .iter()
        .filter(|r| r.status != RunStatus::Completed || r.attempts != 1)
        .collect();
    assert!(
        odd.is_empty(),
        "runs not completed in one attempt: {odd:#?}"
    );
    let log = all_events(&m);
    let mut requested = std::collections::BTreeMap::new();
    let mut started = std::collections::BTreeMap::new();
    let mut exits = std::collections::BTreeMap::new();
    let mut out: std::collections::BTreeMap<RunId, Vec<u8>> = Default::default();
    for e in &log {
        match e {
            EventBody::RunRequested { run, .. } => *requested.entry(*run).or_insert(0) += 1,
            EventBody::RunStarted(s) => *started.entry(s.run).or_insert(0) += 1,
            EventBody::RunExited(x) => *exits.entry(x.run).or_insert(0) += 1,
            EventBody::RunOutput { run, bytes, .. } => {
                out.entry(*run).or_default().extend_from_slice(bytes)
            }
            _ => {}
        }
    }
    for (id, n) in &by_id {
        assert_eq!(requested.get(id), Some(&1), "run {id} requested");
        assert_eq!(started.get(id), Some(&1), "run {id} started");
        assert_eq!(exits.get(id), Some(&1), "run {id} exited");
        assert_eq!(
            out.get(id).map(|b| &b[..]),
            Some(format!("run-{n}\n").as_bytes()),
            "run {id}'s output"
        );
        assert!(
            group_left(pgid_of(&m, *id)).is_empty(),
            "run {id} left processes"
        );
    }
    // Durable: a reopen finds the same runs, none unfinished.
    let before: Vec<_> = runs.iter().map(|r| (**r).clone()).collect();
    let m = Arc::into_inner(m).unwrap();
    m.close().unwrap();
    drop(m);
    let m = open(dir.path());
    let after: Vec<_> = m
        .runs(&RunFilter::default())
        .iter()
        .map(|r| (**r).clone())
        .collect();
    assert_eq!(after, before);
}

#[test]
fn a_run_past_its_cpu_limit_is_ended_by_it() {
    let (_dir, m) = setup();
    let mut req = sh("while :; do :; done");
    req.limits.max_cpu_secs = Some(1);
    // Only a safety net: the loop needs one second of CPU, and on a loaded 2-vCPU machine
    // (another build beside the suite) it once got 0.8 s of CPU in 8 s of wall time.
    req.limits.timeout_ms = Some(60_000);
    let run = m.exec(req).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.ended_by, Some(EndedBy::Cpu), "{run:?}");
    assert!(
        matches!(run.exit, Some(ExitKind::Signal(24 | 9))),
        "{run:?}"
    );
    assert!(
        run.usage.user_us + run.usage.sys_us >= 500_000,
        "{:?}",
        run.usage
    );
    assert!(group_left(pgid_of(&m, run.id)).is_empty());
}

#[test]
fn a_run_log_is_never_written_through_a_link_or_over_a_file_the_engine_did_not_create() {
    let (dir, m) = setup();
    // Run 1's log path holds another program's file: the run fails to start, recorded,
    // and the file is untouched.
    std::fs::create_dir(dir.path().join("runs")).unwrap();
    std::fs::write(dir.path().join("runs/1.log"), b"theirs").unwrap();
    let run = m.exec(sh("echo mine")).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(matches!(
        events(&m, run.id).last(),
        Some(EventBody::RunSpawnFailed { .. })
    ));
    assert_eq!(
        std::fs::read(dir.path().join("runs/1.log")).unwrap(),
        b"theirs"
    );
    // `runs/` a link to another folder: nothing is written there.
    std::fs::remove_file(dir.path().join("runs/1.log")).unwrap();
    std::fs::remove_dir(dir.path().join("runs")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("runs")).unwrap();
    let run = m.exec(sh("echo mine")).unwrap().wait().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error.as_deref().unwrap().contains("not a folder"),
        "{run:?}"
    );
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

/// A run's process inherits none of the engine's descriptors (its writer lock and the
/// directory's, WAL segments, another run's log that is open at the fork): they are all
/// close-on-exec.
#[test]
fn a_runs_process_holds_no_descriptor_of_the_data_directory() {
    let (dir, m) = setup();
    let first = m.exec(sh("sleep 300")).unwrap();
    common::runs::until(&m, first.id(), |r| r.status == RunStatus::Running);
    let pidfile = dir.path().join("pid");
    let second = m
        .exec(sh(&format!(
            "echo $$ > {}; exec sleep 300",
            pidfile.display()
        )))
        .unwrap();
    let pid = common::runs::read_pid(&pidfile);
    let t = Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|e| !e.to_string_lossy().contains("sleep"))
    {
        assert!(t.elapsed() < Duration::from_secs(30), "no exec of sleep");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The engine (this process) holds them: the lock file among them.
    let ours = common::runs::fds_under(std::process::id(), dir.path());
    let lock = dir.path().canonicalize().unwrap().join("LOCK");
    assert!(ours.contains(&lock), "{ours:?}");
    let held = common::runs::fds_under(pid, dir.path());
    assert!(
        held.is_empty(),
        "the run holds the engine's files: {held:?}"
    );
    first.cancel();
    second.cancel();
    assert_eq!(first.wait().unwrap().status, RunStatus::Cancelled);
    assert_eq!(second.wait().unwrap().status, RunStatus::Cancelled);
}

/// A run spec of `sh -c script`, safe to repeat with `retries` retries.
fn safe_spec(script: &str, retries: u32) -> session_engine::run::RunSpec {
    session_engine::run::RunSpec {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        cwd: None,
        env: vec![],
        limits: Default::default(),
        retry: session_engine::run::RetryPolicy {
            max_retries: retries,
            retry_delay_ms: 10,
            safe_to_repeat: true,
        },
    }
}

/// Records the request of `spec` for session `s1`, as a supervisor would before it died.
fn request_only(m: &SessionManager, spec: session_engine::run::RunSpec) -> RunId {
    use session_engine::Command;
    let c = m
        .engine()
        .execute(Command::RequestRun {
            session: SessionId::new("s1").unwrap(),
            spec: Box::new(spec),
        })
        .unwrap();
    match c.outcome {
        session_engine::Outcome::Run(id) => id,
        o => panic!("{o:?}"),
    }
}

/// What a killed supervisor leaves: `spec` requested and attempt 1 started with a live
/// process of its own group (`sleep 30`), no exit.
fn left_running(
    m: &SessionManager,
    spec: session_engine::run::RunSpec,
) -> (RunId, std::process::Child) {
    use session_engine::Command;
    use session_engine::run::Started;
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let start_time: u64 = rest.split_whitespace().nth(19).unwrap().parse().unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let id = request_only(m, spec);
    m.engine()
        .execute(Command::RecordRunStep(Box::new(EventBody::RunStarted(
            Box::new(Started {
                run: id,
                attempt: 1,
                pid,
                pgid: pid,
                start_time,
                boot_id: boot.trim().into(),
            }),
        ))))
        .unwrap();
    (id, child)
}

fn reopen(dir: &std::path::Path, m: SessionManager) -> SessionManager {
    m.close().unwrap();
    drop(m);
    open(dir)
}

fn started_attempts(m: &SessionManager, id: RunId) -> Vec<u32> {
    events(m, id)
        .into_iter()
        .filter_map(|b| match b {
            EventBody::RunStarted(s) => Some(s.attempt),
            _ => None,
        })
        .collect()
}

fn recovering_events(m: &SessionManager, id: RunId) -> usize {
    all_events(m)
        .into_iter()
        .filter(|b| matches!(b, EventBody::RunRecovering { run, .. } if *run == id))
        .count()
}

#[test]
fn a_run_safe_to_repeat_left_unfinished_is_recovering_at_reopen_and_resumed_once() {
    let (dir, m) = setup();
    // Killed in its first attempt (its process still running), and requested by a
    // manager dropped before it supervised it.
    let (killed, mut child) = left_running(&m, safe_spec("echo repeated", 1));
    let pending = request_only(&m, safe_spec("echo first time", 0));
    let m = reopen(dir.path(), m);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(15), "not killed");
    let r = m.run(killed).unwrap();
    assert_eq!((r.status, r.attempts), (RunStatus::Recovering, 1), "{r:?}");
    let why = r.error.as_deref().unwrap();
    assert!(why.contains("killed") && why.contains("attempt 2"), "{why}");
    let r = m.run(pending).unwrap();
    assert_eq!((r.status, r.attempts), (RunStatus::Recovering, 0), "{r:?}");
    assert_eq!(recovering_events(&m, killed), 1);
    // Replaying the log reproduces it: read-only (no reconcile), then writable again.
    m.close().unwrap();
    drop(m);
    let ro = SessionManager::open_read_only(dir.path(), Default::default()).unwrap();
    assert_eq!(ro.run(killed).unwrap().status, RunStatus::Recovering);
    assert_eq!(ro.run(pending).unwrap().status, RunStatus::Recovering);
    assert!(matches!(ro.resume_runs(), Err(Error::ReadOnly)));
    drop(ro);
    let m = open(dir.path());
    assert_eq!(m.run(killed).unwrap().status, RunStatus::Recovering);
    assert_eq!(m.run(killed).unwrap().attempts, 1);
    assert_eq!(m.run(pending).unwrap().status, RunStatus::Recovering);
    // Resumed: the next attempt of each, through the supervisor, to its end.
    let handles = m.resume_runs_with_handles().unwrap();
    let ids: Vec<RunId> = handles.iter().map(|h| h.id()).collect();
    assert_eq!(ids, vec![killed, pending]);
    // At once, while they are being started: nothing is started twice.
    assert_eq!(
        m.resume_runs().unwrap(),
        Vec::<RunId>::new(),
        "resumed twice"
    );
    for h in handles {
        let r = h.wait().unwrap();
        assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    }
    assert_eq!(
        m.resume_runs().unwrap(),
        Vec::<RunId>::new(),
        "resumed twice"
    );
    assert_eq!(m.run(killed).unwrap().attempts, 2);
    assert_eq!(started_attempts(&m, killed), vec![1, 2]);
    assert_eq!(started_attempts(&m, pending), vec![1]);
    let out: Vec<Vec<u8>> = output(&m, killed).into_iter().map(|o| o.2).collect();
    assert_eq!(out, vec![b"repeated\n".to_vec()]);
    let e = exited(&m, killed);
    assert_eq!((e.attempt, e.exit), (2, ExitKind::Code(0)));
    // Its first attempt (this test's own process) left no log: the second one's alone.
    let log = std::fs::read(m.run_log_path(killed)).unwrap();
    assert_eq!(log, b"repeated\n");
    let log = std::fs::read(m.run_log_path(pending)).unwrap();
    assert_eq!(log, b"first time\n");
    // Durable: a reopen finds both completed, nothing to resume.
    let m = reopen(dir.path(), m);
    assert_eq!(m.run(killed).unwrap().status, RunStatus::Completed);
    assert_eq!(m.run(pending).unwrap().status, RunStatus::Completed);
    assert!(m.resume_runs().unwrap().is_empty());
    assert_eq!(started_attempts(&m, killed), vec![1, 2]);
}

/// Records `step` for a run, as its supervisor would have.
fn step(m: &SessionManager, body: EventBody) {
    m.engine()
        .execute(session_engine::Command::RecordRunStep(Box::new(body)))
        .unwrap();
}

/// What a supervisor killed in a retry's backoff leaves: attempt 1 exited (a failure),
/// another attempt to follow.
fn left_in_backoff(m: &SessionManager, spec: session_engine::run::RunSpec) -> RunId {
    let (id, mut child) = left_running(m, spec);
    child.kill().unwrap();
    child.wait().unwrap();
    step(
        m,
        EventBody::RunExited(Box::new(session_engine::run::Exited {
            run: id,
            attempt: 1,
            exit: ExitKind::Code(1),
            ended_by: None,
            duration_ms: 1,
            usage: Default::default(),
            output_bytes: 0,
            output_dropped: 0,
            retry: true,
        })),
    );
    id
}

#[test]
fn a_run_left_recovering_is_recorded_recovering_once_however_often_it_is_reopened() {
    let (dir, m) = setup();
    // Killed while it ran; requested and never started; killed in the backoff after a
    // failed attempt; killed in the backoff after a failed start.
    let (killed, mut child) = left_running(&m, safe_spec("echo a", 2));
    let pending = request_only(&m, safe_spec("echo b", 2));
    let backoff = left_in_backoff(&m, safe_spec("echo c", 2));
    let spawn_failed = request_only(&m, safe_spec("echo d", 2));
    step(
        &m,
        EventBody::RunSpawnFailed {
            run: spawn_failed,
            attempt: 1,
            error: "No such file or directory (os error 2)".into(),
            retry: true,
        },
    );
    for id in [backoff, spawn_failed] {
        // Recovering already (between attempts), but not reconciled yet.
        assert_eq!(m.run(id).unwrap().status, RunStatus::Recovering);
        assert_eq!(recovering_events(&m, id), 0);
    }
    let all = [killed, pending, backoff, spawn_failed];
    let mut m = reopen(dir.path(), m);
    child.wait().unwrap();
    let first_reasons: Vec<String> = all
        .iter()
        .map(|id| m.run(*id).unwrap().error.clone().unwrap())
        .collect();
    assert!(
        first_reasons[2].contains("before the next attempt started"),
        "{first_reasons:?}"
    );
    assert!(first_reasons[3].contains("attempt 2"), "{first_reasons:?}");
    // Every CLI command is a writable open: none records the runs again.
    for _ in 0..3 {
        m = reopen(dir.path(), m);
        for (i, id) in all.iter().enumerate() {
            assert_eq!(recovering_events(&m, *id), 1, "run {id}");
            let r = m.run(*id).unwrap();
            assert_eq!(r.status, RunStatus::Recovering, "run {id}");
            assert_eq!(r.error.as_deref(), Some(first_reasons[i].as_str()));
        }
    }
    // Still waiting to be resumed, each once.
    let handles = m.resume_runs_with_handles().unwrap();
    assert_eq!(handles.iter().map(|h| h.id()).collect::<Vec<_>>(), all);
    for h in handles {
        assert_eq!(h.wait().unwrap().status, RunStatus::Completed);
    }
    assert_eq!(started_attempts(&m, killed), vec![1, 2]);
    assert_eq!(started_attempts(&m, pending), vec![1]);
    assert_eq!(started_attempts(&m, backoff), vec![1, 2]);
    assert_eq!(started_attempts(&m, spawn_failed), vec![2]);
    // A cancel asked for a run an earlier open left recovering still ends it at an open.
    let again = request_only(&m, safe_spec("echo e", 1));
    let m = reopen(dir.path(), m);
    let m = reopen(dir.path(), m);
    session_engine::supervisor::request_cancel(dir.path(), again).unwrap();
    let m = reopen(dir.path(), m);
    assert_eq!(m.run(again).unwrap().status, RunStatus::Cancelled);
    assert_eq!(recovering_events(&m, again), 1);
    assert!(m.resume_runs().unwrap().is_empty());
}

/// The attempts of run `id` with a `run_contained` step (those that asked for a cgroup).
fn contained_attempts(m: &SessionManager, id: RunId) -> Vec<u32> {
    all_events(m)
        .into_iter()
        .filter_map(|b| match b {
            EventBody::RunContained { run, attempt, .. } if run == id => Some(attempt),
            _ => None,
        })
        .collect()
}

#[test]
fn a_resumed_run_is_contained_as_its_exec_asked() {
    let (dir, m) = setup();
    // Attempt 1 of each started, one with a cgroup asked for (its `run_contained`
    // recorded: here a fallback, so the test does not need cgroups), one without
    // (`--no-cgroup`: no `run_contained`); a third never started.
    let without = left_running(&m, safe_spec("echo without", 1));
    let with_id = request_only(&m, safe_spec("echo with", 1));
    step(
        &m,
        EventBody::RunContained {
            run: with_id,
            attempt: 1,
            cgroup: None,
            memory_max: false,
            fallback: Some("a test".into()),
        },
    );
    let mut with_child = std::process::Command::new("true").spawn().unwrap();
    with_child.wait().unwrap();
    step(
        &m,
        EventBody::RunStarted(Box::new(session_engine::run::Started {
            run: with_id,
            attempt: 1,
            pid: with_child.id(),
            pgid: with_child.id(),
            start_time: 0,
            boot_id: "another boot".into(),
        })),
    );
    let never = request_only(&m, safe_spec("echo never", 1));
    let (without, mut child) = without;
    let m = reopen(dir.path(), m);
    child.wait().unwrap();
    let handles = m.resume_runs_with_handles().unwrap();
    assert_eq!(handles.len(), 3);
    for h in handles {
        assert_eq!(h.wait().unwrap().status, RunStatus::Completed);
    }
    assert_eq!(started_attempts(&m, without), vec![1, 2]);
    assert_eq!(contained_attempts(&m, without), Vec::<u32>::new());
    assert_eq!(contained_attempts(&m, with_id), vec![1, 2]);
    assert_eq!(
        contained_attempts(&m, never),
        vec![1],
        "the default: a cgroup"
    );
}

#[test]
fn runs_that_may_not_be_repeated_are_interrupted_or_cancelled_at_reopen_never_repeated() {
    let (dir, m) = setup();
    let mut unsafe_spec = safe_spec("echo no", 3);
    unsafe_spec.retry.safe_to_repeat = false;
    let (not_safe, mut c1) = left_running(&m, unsafe_spec);
    let (no_attempt_left, mut c2) = left_running(&m, safe_spec("echo no", 0));
    let mut secret = safe_spec("echo no", 3);
    secret.env = vec![("API_TOKEN".into(), "hunter2".into())];
    let with_secret = request_only(&m, secret);
    let cancel_asked = request_only(&m, safe_spec("echo no", 3));
    session_engine::supervisor::request_cancel(dir.path(), cancel_asked).unwrap();
    let m = reopen(dir.path(), m);
    c1.wait().unwrap();
    c2.wait().unwrap();
    for (id, status, why) in [
        (not_safe, RunStatus::Interrupted, "not safe to repeat"),
        (no_attempt_left, RunStatus::Interrupted, "no attempt left"),
        (with_secret, RunStatus::Interrupted, "secret"),
        (cancel_asked, RunStatus::Cancelled, "cancel was asked"),
    ] {
        let r = m.run(id).unwrap();
        assert_eq!(r.status, status, "run {id}: {r:?}");
        assert!(r.error.as_deref().unwrap().contains(why), "run {id}: {r:?}");
        assert_eq!(recovering_events(&m, id), 0, "run {id}");
    }
    assert!(!session_engine::supervisor::cancel_path(dir.path(), cancel_asked).exists());
    assert!(m.resume_runs().unwrap().is_empty());
    let m = reopen(dir.path(), m);
    assert!(m.resume_runs().unwrap().is_empty());
    for id in [not_safe, no_attempt_left] {
        assert_eq!(started_attempts(&m, id), vec![1], "run {id} repeated");
    }
    for id in [with_secret, cancel_asked] {
        assert!(started_attempts(&m, id).is_empty(), "run {id} started");
    }
    assert_eq!(m.state().unfinished_runs().count(), 0);
}

#[test]
fn a_cancel_of_a_run_waiting_to_be_resumed_ends_it_cancelled() {
    let (dir, m) = setup();
    let here = request_only(&m, safe_spec("echo no", 1));
    let by_file = request_only(&m, safe_spec("echo no", 1));
    let resumed = request_only(&m, safe_spec("echo yes", 1));
    let m = reopen(dir.path(), m);
    for id in [here, by_file, resumed] {
        assert_eq!(m.run(id).unwrap().status, RunStatus::Recovering);
    }
    // This manager's own cancel: no supervisor to wait for.
    let got = m
        .cancel_runs(session_engine::CancelTarget::Run(here), Duration::ZERO)
        .unwrap();
    assert_eq!(got[0].status, RunStatus::Cancelled, "{got:?}");
    // Another process's request, left before the runs are resumed.
    session_engine::supervisor::request_cancel(dir.path(), by_file).unwrap();
    let handles = m.resume_runs_with_handles().unwrap();
    assert_eq!(
        handles.iter().map(|h| h.id()).collect::<Vec<_>>(),
        vec![resumed]
    );
    for h in handles {
        assert_eq!(h.wait().unwrap().status, RunStatus::Completed);
    }
    let r = m.run(by_file).unwrap();
    assert_eq!(r.status, RunStatus::Cancelled, "{r:?}");
    assert!(!session_engine::supervisor::cancel_path(dir.path(), by_file).exists());
    for id in [here, by_file] {
        assert!(started_attempts(&m, id).is_empty(), "run {id} started");
    }
    let m = reopen(dir.path(), m);
    assert_eq!(m.run(here).unwrap().status, RunStatus::Cancelled);
    assert!(m.resume_runs().unwrap().is_empty());
}
