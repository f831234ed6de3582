//! The supervisor through the binary: `exec`, `runs`, `cancel`, `logs`, and a SIGKILL of
//! the process that supervises a run.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(dir).args(args);
    c
}

use common::runs::group_left;
use session_engine_testkit as common;

fn run(dir: &Path, args: &[&str]) -> Output {
    common::runs::cli(BIN, dir, args)
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    common::runs::cli_setup(BIN)
}

fn run_json(dir: &Path, id: &str) -> serde_json::Value {
    let o = run(dir, &["runs", id]);
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn exec_streams_the_output_and_exits_with_the_programs_status() {
    let (_tmp, dir) = setup();
    let o = run(
        &dir,
        &[
            "exec",
            "s1",
            "--",
            "sh",
            "-c",
            "echo hi; echo err >&2; exit 7",
        ],
    );
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert_eq!(o.stdout, b"hi\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("err\n") && err.contains("run 1 failed"),
        "{err}"
    );
    let r = run_json(&dir, "1");
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 7);
    assert_eq!(r["output_kept"], 7);
    let logs = run(&dir, &["logs", "1"]);
    assert!(logs.status.success());
    let mut lines: Vec<&[u8]> = logs.stdout.split(|b| *b == b'\n').collect();
    lines.sort();
    assert_eq!(lines, vec![&b""[..], b"err", b"hi"]);
    let o = run(&dir, &["exec", "s1", "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    let o = run(&dir, &["runs", "--status", "completed", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], 2);
    let o = run(&dir, &["runs"]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("1\ts1\tfailed\t1\t7\tsh")
    );
    let o = run(&dir, &["stats"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["runs"], 2);
    assert_eq!(
        v["runs_by_status"],
        serde_json::json!({"completed": 1, "failed": 1})
    );
}

#[test]
fn exec_past_its_timeout_is_recorded_as_timeout() {
    let (_tmp, dir) = setup();
    let t = Instant::now();
    let o = run(
        &dir,
        &[
            "exec",
            "s1",
            "--timeout",
            "0.3",
            "--",
            "sh",
            "-c",
            "sleep 20",
        ],
    );
    assert!(t.elapsed() < Duration::from_secs(8));
    assert_eq!(o.status.code(), Some(128 + 15), "{o:?}");
    assert_eq!(run_json(&dir, "1")["status"], "timeout");
}

#[test]
fn cancel_from_another_process_and_logs_follow() {
    let (_tmp, dir) = setup();
    let mut exec = cmd(
        &dir,
        &[
            "exec",
            "s1",
            "--",
            "sh",
            "-c",
            "echo go; sleep 0.3; echo more; sleep 20",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(exec.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "go\n");
    let follow = cmd(&dir, &["logs", "1", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "more\n");
    let o = run(&dir, &["cancel", "1"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, b"cancelled\n");
    let status = exec.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    let followed = follow.wait_with_output().unwrap();
    assert_eq!(followed.stdout, b"go\nmore\n");
    let r = run_json(&dir, "1");
    assert_eq!(r["status"], "cancelled");
    assert_eq!(r["ended_by"], "cancel");
    assert!(!dir.join("runs/1.cancel").exists());
    // A finished run cannot be cancelled; an unknown one is not found.
    assert_eq!(run(&dir, &["cancel", "1"]).status.code(), Some(5));
    assert_eq!(run(&dir, &["cancel", "99"]).status.code(), Some(3));
}

#[test]
fn a_sigkilled_exec_leaves_a_run_that_the_next_open_kills_and_records_interrupted() {
    let (_tmp, dir) = setup();
    let mut exec = cmd(
        &dir,
        &["exec", "s1", "--", "sh", "-c", "echo $$; sleep 30 & wait"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(exec.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let leader: u32 = line.trim().parse().unwrap();
    // The started step is durable before the output reached us.
    exec.kill().unwrap();
    exec.wait().unwrap();
    assert!(
        !group_left(leader).is_empty(),
        "the run's processes died with the engine"
    );
    assert_eq!(run_json(&dir, "1")["status"], "running");
    // The next writable open reconciles it.
    let o = run(&dir, &["create", "--id", "s2"]);
    assert!(o.status.success(), "{o:?}");
    let r = run_json(&dir, "1");
    assert_eq!(r["status"], "interrupted", "{r}");
    assert!(r["error"].as_str().unwrap().contains("killed"), "{r}");
    let t = Instant::now();
    while !group_left(leader).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "processes left: {:?}",
            group_left(leader)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A run's processes hold no descriptor of the data directory (its writer lock, the
/// directory, the WAL, run logs): a run that outlives the engine that started it does not
/// keep the lock, so the next writer opens while the run's process still lives.
#[test]
fn a_run_that_outlives_its_engine_does_not_keep_the_data_directorys_lock() {
    let (tmp, dir) = setup();
    let pidfile = tmp.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
    let mut exec = cmd(
        &dir,
        &["exec", "s1", "--grace-ms", "200", "--", "sh", "-c", &script],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let pid = common::runs::read_pid(&pidfile);
    // `exec sleep` keeps the pid: wait for the exec, after which nothing of the shell
    // (nor of the fork before it) is left in the process.
    let t = Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|e| !e.to_string_lossy().contains("sleep"))
    {
        assert!(t.elapsed() < Duration::from_secs(30), "no exec of sleep");
        std::thread::sleep(Duration::from_millis(20));
    }
    let held = common::runs::fds_under(pid, &dir);
    assert!(
        held.is_empty(),
        "the run holds the engine's files: {held:?}"
    );
    exec.kill().unwrap();
    exec.wait().unwrap();
    assert!(common::runs::alive(pid), "the run died with its engine");
    // A second writer, in this process: not refused as locked.
    let m = session_engine::SessionManager::open(&dir, session_engine::ManagerOptions::default())
        .unwrap_or_else(|e| panic!("the second writer was refused while run {pid} lives: {e}"));
    // Its open reconciled the run: killed and recorded.
    assert_eq!(
        m.run("1".parse().unwrap()).unwrap().status,
        session_engine::run::RunStatus::Interrupted
    );
    assert!(
        common::runs::gone(pid),
        "process {pid} outlived the reconcile"
    );
}

#[test]
fn exec_says_which_resource_limit_ended_the_run() {
    let (_tmp, dir) = setup();
    let o = run(
        &dir,
        &[
            "exec",
            "s1",
            "--max-cpu",
            "1",
            "--",
            "sh",
            "-c",
            "while :; do :; done",
        ],
    );
    assert_ne!(o.status.code(), Some(0), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("run 1 failed (ended by its CPU limit)"),
        "{err}"
    );
    assert_eq!(run_json(&dir, "1")["ended_by"], "cpu");
    // A run no limit ended says nothing more.
    let o = run(&dir, &["exec", "s1", "--", "sh", "-c", "exit 3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run 2 failed\n"), "{err}");
}

#[test]
fn bad_input_is_refused_with_its_status() {
    let (_tmp, dir) = setup();
    let code = |args: &[&str]| run(&dir, args).status.code();
    assert_eq!(code(&["exec", "s1", "--", "/no/such/program"]), Some(3));
    assert_eq!(code(&["exec", "nobody", "--", "true"]), Some(3));
    assert_eq!(
        code(&["exec", "s1", "--max-memory", "0", "--", "true"]),
        Some(4)
    );
    assert_eq!(
        code(&["exec", "s1", "--timeout", "0", "--", "true"]),
        Some(4)
    );
    assert_eq!(code(&["runs", "99"]), Some(3));
    assert_eq!(code(&["runs", "x"]), Some(4));
    assert_eq!(code(&["logs", "7"]), Some(3));
    let o = run(&dir, &["runs", "--json"]);
    assert_eq!(o.stdout, b"[]\n");
}

/// Starts `exec s1 -- sh -c SCRIPT` in the background and returns it once its first
/// output line (read here) has come, so the run is recorded as started.
fn exec_in_background(dir: &Path, script: &str) -> (std::process::Child, String) {
    let mut exec = cmd(dir, &["exec", "s1", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(exec.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (exec, line)
}

#[test]
fn cancel_all_cancels_the_unfinished_runs_and_says_when_there_is_none() {
    let (_tmp, dir) = setup();
    assert_eq!(
        run(&dir, &["exec", "s1", "--", "true"]).status.code(),
        Some(0)
    );
    let (mut exec, line) = exec_in_background(&dir, "echo go; sleep 30");
    assert_eq!(line, "go\n");
    let o = run(&dir, &["cancel", "--all"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "2\tcancelled\n");
    assert_eq!(exec.wait().unwrap().code(), Some(128 + 15));
    assert_eq!(run_json(&dir, "1")["status"], "completed");
    assert_eq!(run_json(&dir, "2")["status"], "cancelled");
    assert!(group_left(run_json(&dir, "2")["pid"].as_u64().unwrap() as u32).is_empty());
    // Nothing unfinished: a success that says so.
    let o = run(&dir, &["cancel", "--all"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, b"no unfinished run to cancel\n");
    let o = run(&dir, &["--json", "cancel", "--all"]);
    assert_eq!(o.stdout, b"[]\n");
    // A run id and --all together, or neither, is a usage error.
    assert_eq!(run(&dir, &["cancel", "1", "--all"]).status.code(), Some(2));
    assert_eq!(run(&dir, &["cancel"]).status.code(), Some(2));
    assert_eq!(
        run(&dir, &["cancel", "--all", "--wait", "inf"])
            .status
            .code(),
        Some(4)
    );
}

#[test]
fn cancel_all_fails_honestly_when_no_process_supervises_the_run() {
    let (_tmp, dir) = setup();
    let (mut exec, line) = exec_in_background(&dir, "echo $$; sleep 30 & wait");
    let leader: u32 = line.trim().parse().unwrap();
    // The supervisor dies; its run stays recorded as running until a writable open.
    exec.kill().unwrap();
    exec.wait().unwrap();
    let o = run(&dir, &["cancel", "--all", "--wait", "0.2"]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1\trunning\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("run 1 is still running (is its supervisor running?)"),
        "{err}"
    );
    // The next writable open reconciles it (and kills what was left).
    assert!(run(&dir, &["create", "--id", "s2"]).status.success());
    assert_eq!(run_json(&dir, "1")["status"], "interrupted");
    let t = Instant::now();
    while !group_left(leader).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!dir.join("runs/1.cancel").exists());
}

#[test]
fn health_reports_by_status_and_a_silent_run_as_stale_after_the_threshold() {
    let (_tmp, dir) = setup();
    assert_eq!(
        run(&dir, &["exec", "s1", "--", "true"]).status.code(),
        Some(0)
    );
    let (mut exec, _) = exec_in_background(&dir, "echo go; sleep 30");
    let health = |stale_after: &str| {
        let o = run(&dir, &["--json", "health", "--stale-after", stale_after]);
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let h = health("300");
    assert_eq!(h["totalSessions"], 2);
    assert_eq!(h["healthySessions"], 1);
    assert_eq!(h["staleSessions"], 0);
    assert_eq!(h["sessionsByStatus"]["running"], 1);
    assert_eq!(h["sessionsByStatus"]["completed"], 1);
    assert!(h["averageMemoryUsage"].as_u64().unwrap() > 0, "{h}");
    // More than half a second without output: stale at 0.5 s.
    std::thread::sleep(Duration::from_millis(800));
    let h = health("0.5");
    assert_eq!(h["staleSessions"], 1, "{h}");
    assert_eq!(h["healthySessions"], 0, "{h}");
    assert_eq!(h["staleRuns"], serde_json::json!([2]));
    let o = run(&dir, &["health", "--stale-after", "0.5"]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("stale: 1 (runs 2)"), "{text}");
    assert!(text.contains("by status: completed 1, running 1"), "{text}");
    assert_eq!(
        run(&dir, &["health", "--stale-after", "nan"]).status.code(),
        Some(4)
    );
    assert!(run(&dir, &["cancel", "--all"]).status.success());
    exec.wait().unwrap();
    let h = health("0.5");
    assert_eq!(
        (h["staleSessions"].as_u64(), h["healthySessions"].as_u64()),
        (Some(0), Some(0))
    );
}

#[test]
fn apply_answers_the_run_ops_in_order() {
    use std::io::Write;
    let (_tmp, dir) = setup();
    assert_eq!(
        run(&dir, &["exec", "s1", "--", "true"]).status.code(),
        Some(0)
    );
    let mut apply = cmd(&dir, &["apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(
            concat!(
                r#"{"op":"runs"}"#,
                "\n",
                r#"{"op":"runs","run":1}"#,
                "\n",
                r#"{"op":"health","stale_after":300}"#,
                "\n",
                r#"{"op":"cancel","all":true}"#,
                "\n",
                r#"{"op":"cancel","run":1}"#,
                "\n",
                r#"{"op":"cancel"}"#,
                "\n",
                r#"{"op":"pause","id":"s1"}"#,
                "\n",
                r#"{"op":"runs","id":"s1","status":"failed"}"#,
                "\n",
            )
            .as_bytes(),
        )
        .unwrap();
    let o = apply.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let answers: Vec<serde_json::Value> = o
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 8, "{answers:?}");
    assert_eq!(answers[0]["runs"].as_array().unwrap().len(), 1);
    assert_eq!(answers[0]["runs"][0]["status"], "completed");
    assert_eq!(answers[1]["run"]["id"], 1);
    assert_eq!(answers[2]["health"]["totalSessions"], 1);
    assert_eq!(answers[2]["health"]["sessionsByStatus"]["completed"], 1);
    assert_eq!(answers[3], serde_json::json!({"ok": true, "cancelled": []}));
    assert_eq!(answers[4]["kind"], "invalid_state");
    assert_eq!(answers[5]["kind"], "invalid_input");
    assert_eq!(answers[6]["ok"], true);
    assert_eq!(answers[7], serde_json::json!({"ok": true, "runs": []}));
}

/// `exec` and `logs` as apply lines: each exec is answered once its run has ended, in
/// line order (the second program sees what the first wrote), with real `sh -c` programs.
#[test]
fn apply_execs_programs_in_line_order_and_answers_logs() {
    use std::io::Write;
    let (tmp, dir) = setup();
    let mark = tmp.path().join("mark");
    let lines = [
        serde_json::json!({"op": "exec", "id": "s1", "program": "sh",
            "args": ["-c", "echo first > \"$1\"; echo wrote", "sh", mark]}),
        serde_json::json!({"op": "exec", "id": "s1", "program": "sh",
            "args": ["-c", "cat \"$1\"; echo oops >&2; exit 4", "sh", mark]}),
        serde_json::json!({"op": "logs", "run": 2}),
        serde_json::json!({"op": "exec", "id": "s1", "program": "sh",
            "args": ["-c", "sleep 30"], "timeout_ms": 300, "grace_ms": 100}),
        serde_json::json!({"op": "exec", "id": "s1", "program": "sh", "timeout_ms": 0}),
        serde_json::json!({"op": "exec", "id": "nobody", "program": "true"}),
        serde_json::json!({"op": "exec", "id": "s1", "program": "sh", "shell": true}),
        serde_json::json!({"op": "logs", "run": 7}),
        serde_json::json!({"op": "runs"}),
    ];
    let mut apply = cmd(&dir, &["apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = apply.stdin.take().unwrap();
    for l in &lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let o = apply.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let answers: Vec<serde_json::Value> = o
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(answers.len(), lines.len(), "{answers:?}");
    let ran = |i: usize| &answers[i]["run"];
    assert_eq!(
        (&ran(0)["id"], &ran(0)["status"], &ran(0)["exit_code"]),
        (&1.into(), &"completed".into(), &0.into()),
        "{answers:?}"
    );
    assert_eq!(
        (&ran(1)["id"], &ran(1)["status"], &ran(1)["exit_code"]),
        (&2.into(), &"failed".into(), &4.into()),
        "{answers:?}"
    );
    // Run 2 ran after run 1 had ended: it read what run 1 wrote. Both streams are in the
    // log; stdout and stderr are two pipes, so which the supervisor reads first is a race.
    let out = answers[2]["output"].as_str().unwrap();
    let mut got: Vec<&str> = out.split_inclusive('\n').collect();
    got.sort_unstable();
    assert_eq!(got, ["first\n", "oops\n"], "{answers:?}");
    assert_eq!(answers[2]["complete"], true);
    assert_eq!(
        (&ran(3)["status"], &ran(3)["ended_by"]),
        (&"timeout".into(), &"timeout".into()),
        "{answers:?}"
    );
    let pid = ran(3)["pid"].as_u64().unwrap() as u32;
    assert!(
        group_left(pid).is_empty(),
        "the timed-out run left processes"
    );
    assert_eq!(answers[4]["kind"], "invalid_input", "{answers:?}");
    assert_eq!(answers[5]["kind"], "not_found", "{answers:?}");
    assert_eq!(answers[6]["kind"], "invalid_input", "{answers:?}");
    assert_eq!(answers[7]["kind"], "not_found", "{answers:?}");
    // The refused lines recorded no run.
    let ids: Vec<_> = answers[8]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    // The same as the command line's `logs`.
    let o = run(&dir, &["logs", "2"]);
    assert_eq!(o.stdout, out.as_bytes());
}

#[test]
fn logs_never_prints_a_log_through_a_link() {
    let (tmp, dir) = setup();
    assert!(
        run(&dir, &["exec", "s1", "--", "echo", "mine"])
            .status
            .success()
    );
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "not the run's\n").unwrap();
    let log = dir.join("runs").join("1.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    let o = run(&dir, &["logs", "1"]);
    assert!(!o.status.success(), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
}

/// `exec --safe-to-repeat --retries 1` of `script`, SIGKILLed once its first attempt has
/// printed its first line (its `started` step is durable by then).
fn safe_exec_killed(dir: &Path, script: &str) {
    let mut exec = cmd(
        dir,
        &[
            "exec",
            "s1",
            "--safe-to-repeat",
            "--retries",
            "1",
            "--retry-delay-ms",
            "10",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(exec.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    exec.kill().unwrap();
    exec.wait().unwrap();
}

#[test]
fn runs_resume_repeats_the_runs_safe_to_repeat_that_a_killed_exec_left_and_exits_by_their_ends() {
    let (tmp, dir) = setup();
    let marker = |n: &str| tmp.path().join(n).display().to_string();
    // The first attempt leaves a marker and sleeps; the repeated one sees it and ends.
    let script = |m: &str, code: u8| {
        format!(
            "if [ -e {m} ]; then echo second; exit {code}; fi; : > {m}; echo first; exec sleep 30"
        )
    };
    safe_exec_killed(&dir, &script(&marker("m1"), 0));
    assert_eq!(run_json(&dir, "1")["status"], "running");
    safe_exec_killed(&dir, &script(&marker("m2"), 3));
    // The second exec's open found run 1 and left it recovering.
    assert_eq!(run_json(&dir, "1")["status"], "recovering");
    // And an exec without the flag, killed too: never repeated.
    let mut plain = cmd(
        &dir,
        &[
            "exec",
            "s1",
            "--retries",
            "1",
            "--",
            "sh",
            "-c",
            "echo first; exec sleep 30",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(plain.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    plain.kill().unwrap();
    plain.wait().unwrap();
    let o = run(&dir, &["runs", "--resume"]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "1\tcompleted\n2\tfailed\n",
        "{o:?}"
    );
    let r = run_json(&dir, "1");
    assert_eq!(
        (&r["status"], &r["attempts"]),
        (&"completed".into(), &2.into()),
        "{r}"
    );
    let r = run_json(&dir, "2");
    assert_eq!(
        (&r["status"], &r["exit_code"]),
        (&"failed".into(), &3.into()),
        "{r}"
    );
    let r = run_json(&dir, "3");
    assert_eq!(
        (&r["status"], &r["attempts"]),
        (&"interrupted".into(), &1.into()),
        "{r}"
    );
    let o = run(&dir, &["logs", "1"]);
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(
        log.starts_with("first\n") && log.ends_with("second\n"),
        "{log:?}"
    );
    // Nothing is resumed twice: exit 0, no line.
    let o = run(&dir, &["runs", "--resume"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
    // Every resumed run completed: exit 0.
    safe_exec_killed(&dir, &script(&marker("m4"), 0));
    let o = run(&dir, &["runs", "--resume"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "4\tcompleted\n",
        "{o:?}"
    );
}

#[test]
fn serve_resumes_the_runs_a_restart_left_recovering_when_it_starts() {
    let (tmp, dir) = setup();
    let m = tmp.path().join("m").display().to_string();
    safe_exec_killed(
        &dir,
        &format!("if [ -e {m} ]; then echo second; exit 0; fi; : > {m}; echo first; exec sleep 30"),
    );
    let mut serve = cmd(&dir, &["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    let t = Instant::now();
    let r = loop {
        let r = run_json(&dir, "1");
        if r["status"] == "completed" || t.elapsed() > Duration::from_secs(30) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(serve.id().to_string())
        .status();
    assert!(serve.wait().unwrap().success());
    assert_eq!(
        (&r["status"], &r["attempts"]),
        (&"completed".into(), &2.into()),
        "{r}"
    );
}

/// The log's events of type `kind` for run `run`, as `replay` prints them.
fn run_events(dir: &Path, kind: &str, run_id: u64) -> Vec<serde_json::Value> {
    let o = run(dir, &["replay"]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == kind && e["run"] == run_id)
        .collect()
}

/// `apply` with `lines` on stdin: its answers.
fn apply_lines(dir: &Path, lines: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut apply = cmd(dir, &["apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let o = apply.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    o.stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn a_recovering_run_is_recorded_once_whatever_the_commands_and_apply_resumes_it_only_when_asked() {
    let (tmp, dir) = setup();
    let m = tmp.path().join("m").display().to_string();
    safe_exec_killed(
        &dir,
        &format!("if [ -e {m} ]; then echo second; exit 0; fi; : > {m}; echo first; exec sleep 30"),
    );
    // Writing commands, each a writable open: the first leaves run 1 recovering.
    for i in 0..3 {
        let o = run(&dir, &["create", "--id", &format!("x{i}")]);
        assert!(o.status.success(), "{o:?}");
    }
    // An apply without a `resume_runs` line starts nothing.
    let answers = apply_lines(&dir, "{\"op\":\"create\",\"id\":\"y\"}\n");
    assert_eq!(answers[0]["ok"], true, "{answers:?}");
    assert_eq!(run_json(&dir, "1")["status"], "recovering");
    assert_eq!(run_events(&dir, "run_recovering", 1).len(), 1);
    // With one, it resumes the run, and waits for it before it ends.
    let answers = apply_lines(&dir, "{\"op\":\"resume_runs\"}\n");
    assert_eq!(
        answers,
        vec![serde_json::json!({"ok": true, "resumed": [1]})]
    );
    let r = run_json(&dir, "1");
    assert_eq!(
        (&r["status"], &r["attempts"]),
        (&"completed".into(), &2.into()),
        "{r}"
    );
    assert_eq!(run_events(&dir, "run_recovering", 1).len(), 1);
}

#[test]
fn runs_resume_honours_exec_no_cgroup() {
    let (tmp, dir) = setup();
    let m = tmp.path().join("m").display().to_string();
    let script =
        format!("if [ -e {m} ]; then echo second; exit 0; fi; : > {m}; echo first; exec sleep 30");
    let mut exec = cmd(
        &dir,
        &[
            "exec",
            "s1",
            "--no-cgroup",
            "--safe-to-repeat",
            "--retries",
            "1",
            "--retry-delay-ms",
            "10",
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(exec.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "first\n");
    exec.kill().unwrap();
    exec.wait().unwrap();
    let o = run(&dir, &["runs", "--resume"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1\tcompleted\n");
    assert_eq!(run_json(&dir, "1")["attempts"], 2);
    // Neither attempt asked for a cgroup: no `run_contained` step.
    assert_eq!(
        run_events(&dir, "run_contained", 1),
        Vec::<serde_json::Value>::new()
    );
}
