//! The supervisor's operations over many runs (issue 17): cancelling every unfinished
//! run, seed 004's health metrics with stale runs (on a manual clock), and a run that
//! prints 100 MB. Real processes (`sh -c` scripts).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use session_engine::run::{DEFAULT_STALE_AFTER_MS, RunId, RunStatus};
use session_engine::{
    CancelTarget, Error, EventBody, ManualClock, RunFilter, SessionManager, Timestamp,
};

mod common;
use common::runs::{
    group_left, open_manager as open_with, pgid_of, setup_manager as setup, sh, until,
};

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

/// The protocol's `exec` and `logs` lines (issue 17: the CLI's commands as protocol ops).
#[test]
fn exec_and_logs_lines_parse_into_the_librarys_requests_and_bad_ones_are_refused() {
    use session_engine::protocol::{Request, parse_line, parse_request};
    let r = parse_request(
        r#"{"op":"exec","id":"s1","program":"sh","args":["-c","echo hi"],"cwd":"/tmp",
            "env":{"A":"1","TOKEN":"x"},"timeout_ms":1500,"retries":2,"retry_delay_ms":10,
            "max_memory_mb":64,"max_cpu_secs":3,"max_output_bytes":4096,"grace_ms":100,
            "safe_to_repeat":true,"cgroup":false}"#,
    )
    .unwrap();
    let Request::Exec(x) = r else { panic!("{r:?}") };
    assert_eq!(
        (x.session.as_str(), x.program.as_str(), x.args.clone()),
        ("s1", "sh", vec!["-c".to_string(), "echo hi".to_string()])
    );
    assert_eq!(x.cwd.as_deref(), Some(std::path::Path::new("/tmp")));
    assert_eq!(
        x.env,
        vec![("A".into(), "1".into()), ("TOKEN".into(), "x".into())]
    );
    assert_eq!(
        x.limits,
        session_engine::run::Limits {
            timeout_ms: Some(1500),
            max_memory_bytes: Some(64 << 20),
            max_cpu_secs: Some(3),
            max_output_bytes: Some(4096),
            grace_ms: Some(100),
        }
    );
    assert_eq!(
        (
            x.retry.max_retries,
            x.retry.retry_delay_ms,
            x.retry.safe_to_repeat
        ),
        (2, 10, true)
    );
    assert!(!x.cgroup && x.on_output.is_none());
    // The defaults: the command line's.
    let Request::Exec(x) =
        parse_request(r#"{"op":"exec","session_id":"s1","program":"true"}"#).unwrap()
    else {
        panic!()
    };
    assert!(x.args.is_empty() && x.cwd.is_none() && x.env.is_empty() && x.cgroup);
    assert_eq!(x.limits, Default::default());
    assert_eq!((x.retry.max_retries, x.retry.retry_delay_ms), (0, 1000));

    let r = parse_request(r#"{"op":"logs","run":4}"#).unwrap();
    assert!(
        matches!(
            r,
            Request::Logs {
                run: RunId(4),
                offset: 0,
                limit: 65536
            }
        ),
        "{r:?}"
    );
    let r = parse_request(r#"{"op":"logs","run":4,"offset":10,"limit":5}"#).unwrap();
    assert!(
        matches!(
            r,
            Request::Logs {
                run: RunId(4),
                offset: 10,
                limit: 5
            }
        ),
        "{r:?}"
    );

    for (line, needle) in [
        (r#"{"op":"exec","id":"s1"}"#, "program: missing"),
        (r#"{"op":"exec","program":"true"}"#, "session id"),
        (
            r#"{"op":"exec","id":"s1","program":""}"#,
            "must not be empty",
        ),
        (r#"{"op":"exec","id":"s1","program":7}"#, "must be a string"),
        (
            r#"{"op":"exec","id":"s1","program":"sh","args":"-c"}"#,
            "array of strings",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","args":["-c",1]}"#,
            "item 1 must be a string",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","args":["a\u0000b"]}"#,
            "NUL",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","env":{"A=B":"1"}}"#,
            "no variable name",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","env":{"A":1}}"#,
            "must be a string",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","timeout_ms":0}"#,
            "timeout (ms) must be from 1",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","timeout_ms":-5}"#,
            "non-negative",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","max_cpu_secs":0}"#,
            "CPU limit",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","max_memory_mb":18446744073709551615}"#,
            "too large",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","max_memory_mb":1073741825}"#,
            "memory limit",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","retries":4294967296}"#,
            "retries: is too large",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"sh","shell":true}"#,
            "unknown field \"shell\"",
        ),
        (r#"{"op":"logs"}"#, "run: missing"),
        (r#"{"op":"logs","run":0}"#, "start at 1"),
        (r#"{"op":"logs","run":1,"follow":true}"#, "unknown field"),
    ] {
        let e = parse_request(line).unwrap_err();
        assert!(e.is_refusal(), "{line}: {e:?}");
        assert!(e.to_string().contains(needle), "{line}: {e}");
    }
    for line in [
        r#"{"op":"exec","id":"s1","program":"true"}"#,
        r#"{"op":"logs","run":1}"#,
    ] {
        let e = parse_line(line).unwrap_err();
        assert!(
            e.to_string().contains("not an engine command"),
            "{line}: {e}"
        );
    }
}

fn op(m: &SessionManager, line: &str) -> serde_json::Value {
    let req = session_engine::protocol::parse_request(line).unwrap();
    session_engine::protocol::answer_run_op(m, &req)
}

#[test]
fn exec_and_logs_ops_run_through_the_manager_and_bad_ones_record_nothing() {
    let (dir, m) = setup(None);
    let a = op(
        &m,
        r#"{"op":"exec","id":"s1","program":"sh","args":["-c","printf 'hello\nworld\n'; exit 3"]}"#,
    );
    assert_eq!(a["ok"], true, "{a}");
    // Answered once the run has ended: its final status and exit code.
    assert_eq!(
        (&a["run"]["id"], &a["run"]["status"], &a["run"]["exit_code"]),
        (&1.into(), &"failed".into(), &3.into()),
        "{a}"
    );
    assert_eq!(m.run(RunId(1)).unwrap().status, RunStatus::Failed);
    let l = op(&m, r#"{"op":"logs","run":1}"#);
    assert_eq!(
        l,
        serde_json::json!({"ok": true, "run": 1, "offset": 0, "length": 12, "next_offset": 12,
            "total_bytes": 12, "complete": true, "encoding": "utf-8", "output": "hello\nworld\n"})
    );
    let l = op(&m, r#"{"op":"logs","run":1,"offset":6,"limit":3}"#);
    assert_eq!(
        (&l["output"], &l["next_offset"], &l["complete"]),
        (&"wor".into(), &9.into(), &false.into()),
        "{l}"
    );
    let l = op(&m, r#"{"op":"logs","run":1,"offset":12}"#);
    assert_eq!((&l["output"], &l["complete"]), (&"".into(), &true.into()));
    let l = op(&m, r#"{"op":"logs","run":1,"offset":13}"#);
    assert_eq!(l["kind"], "invalid_input", "{l}");
    assert!(l["error"].as_str().unwrap().contains("past the end"), "{l}");
    assert_eq!(
        op(&m, r#"{"op":"logs","run":1,"limit":0}"#)["kind"],
        "invalid_input"
    );
    assert_eq!(op(&m, r#"{"op":"logs","run":9}"#)["kind"], "not_found");

    // Output that is not UTF-8 comes as base64; a timeout, the environment and cwd.
    let a = op(
        &m,
        r#"{"op":"exec","id":"s1","program":"sh","args":["-c","printf '\\377\\376'"]}"#,
    );
    assert_eq!(a["run"]["status"], "completed", "{a}");
    let l = op(&m, r#"{"op":"logs","run":2}"#);
    assert_eq!(
        (&l["encoding"], &l["output"]),
        (&"base64".into(), &"//4=".into())
    );
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let line = serde_json::json!({"op": "exec", "id": "s1", "program": "sh",
        "args": ["-c", "echo \"$GREETING\"; pwd"], "cwd": sub, "env": {"GREETING": "hej"}});
    assert_eq!(op(&m, &line.to_string())["run"]["status"], "completed");
    let l = op(&m, r#"{"op":"logs","run":3}"#);
    assert_eq!(
        l["output"],
        format!("hej\n{}\n", sub.canonicalize().unwrap().display())
    );
    let a = op(
        &m,
        r#"{"op":"exec","id":"s1","program":"sh","args":["-c","sleep 30"],"timeout_ms":200}"#,
    );
    assert_eq!(
        (&a["run"]["status"], &a["run"]["ended_by"]),
        (&"timeout".into(), &"timeout".into()),
        "{a}"
    );
    assert!(group_left(pgid_of(&m, RunId(4))).is_empty());

    // Refused with nothing recorded: unknown session, missing program or directory.
    let before = (m.last_lsn(), m.runs(&RunFilter::default()).len());
    for (line, kind) in [
        (
            r#"{"op":"exec","id":"nobody","program":"true"}"#,
            "not_found",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"/no/such/program"}"#,
            "not_found",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"no-such-program-h17c"}"#,
            "not_found",
        ),
        (
            r#"{"op":"exec","id":"s1","program":"true","cwd":"/no/such/dir"}"#,
            "not_found",
        ),
    ] {
        let a = op(&m, line);
        assert_eq!(
            (&a["ok"], &a["kind"]),
            (&false.into(), &kind.into()),
            "{line}: {a}"
        );
    }
    assert_eq!((m.last_lsn(), m.runs(&RunFilter::default()).len()), before);
}

#[test]
fn logs_never_reads_a_log_through_a_link() {
    let (dir, m) = setup(None);
    let a = op(
        &m,
        r#"{"op":"exec","id":"s1","program":"sh","args":["-c","echo mine"]}"#,
    );
    assert_eq!(a["run"]["status"], "completed", "{a}");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "not the run's\n").unwrap();
    let log = dir.path().join("runs").join("1.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    let l = op(&m, r#"{"op":"logs","run":1}"#);
    assert_eq!((&l["ok"], &l["kind"]), (&false.into(), &"io".into()), "{l}");
    assert!(matches!(
        m.run_output(RunId(1), 0, 10),
        Err(Error::Io { .. })
    ));
}

#[test]
fn the_resume_runs_op_answers_the_runs_it_started_again_once() {
    use session_engine::Command;
    use session_engine::run::{RetryPolicy, RunSpec};
    let (dir, m) = setup(None);
    let spec = |safe_to_repeat| RunSpec {
        program: "sh".into(),
        args: vec!["-c".into(), "echo resumed".into()],
        cwd: None,
        env: vec![],
        limits: Default::default(),
        retry: RetryPolicy {
            max_retries: 0,
            retry_delay_ms: 10,
            safe_to_repeat,
        },
    };
    // Requested by a manager dropped before it supervised them: one safe, one not.
    for safe in [true, false] {
        m.engine()
            .execute(Command::RequestRun {
                session: session_engine::SessionId::new("s1").unwrap(),
                spec: Box::new(spec(safe)),
            })
            .unwrap();
    }
    m.close().unwrap();
    drop(m);
    let m = open_with(dir.path(), None);
    assert_eq!(m.run(RunId(1)).unwrap().status, RunStatus::Recovering);
    assert_eq!(m.run(RunId(2)).unwrap().status, RunStatus::Interrupted);
    let a = op(&m, r#"{"op":"resume_runs"}"#);
    assert_eq!(a, serde_json::json!({"ok": true, "resumed": [1]}));
    until(&m, RunId(1), |r| r.status.is_final());
    assert_eq!(m.run(RunId(1)).unwrap().status, RunStatus::Completed);
    let log = std::fs::read(m.run_log_path(RunId(1))).unwrap();
    assert_eq!(log, b"resumed\n");
    let a = op(&m, r#"{"op":"resume_runs"}"#);
    assert_eq!(a, serde_json::json!({"ok": true, "resumed": []}));
    let e =
        session_engine::protocol::parse_request(r#"{"op":"resume_runs","all":true}"#).unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
}
