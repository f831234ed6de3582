//! A cgroup v2 per run attempt, through the binary: what `run_contained` records, and
//! that a process which left the run's process group (`setsid`) is still ended with the
//! run when the run has a cgroup. Where this machine lets no cgroup be created, the
//! tests check the recorded fallback instead, and say so on stderr.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

use common::runs::{alive, gone, kill, read_pid};
use session_engine_testkit as common;

fn run(dir: &Path, args: &[&str]) -> Output {
    common::runs::cli(BIN, dir, args)
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    common::runs::cli_setup(BIN)
}

/// The `run_contained` events of the log.
fn contained(dir: &Path) -> Vec<Value> {
    let o = run(dir, &["replay"]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "run_contained")
        .collect()
}

/// Whether the run's attempt was in a cgroup (else the fallback's reason is recorded).
fn in_cgroup(e: &Value) -> bool {
    match &e["cgroup"] {
        Value::String(path) => {
            assert!(path.contains("/session-engine-"), "{e}");
            assert_eq!(e["fallback"], Value::Null, "{e}");
            assert!(
                !Path::new(path).exists(),
                "the run's cgroup is left behind: {e}"
            );
            true
        }
        Value::Null => {
            let why = e["fallback"].as_str().unwrap_or_default();
            assert!(!why.is_empty(), "a fallback without a reason: {e}");
            eprintln!("no cgroup on this machine, the fallback was tested: {why}");
            false
        }
        other => panic!("cgroup is {other}"),
    }
}

#[test]
fn a_process_that_left_the_group_ends_with_the_run_when_it_has_a_cgroup() {
    let (tmp, dir) = setup();
    let pidfile = tmp.path().join("escaped");
    // The leader exits only once the escapee has called setsid (it writes its pid after
    // that): under load a child that had not yet left the group was ended with the
    // group, which made the second half below fail and the first half prove nothing.
    let script = format!(
        "cat /proc/self/cgroup; rm -f {p}; setsid sh -c 'echo $$ > {p}.tmp && mv {p}.tmp {p}; \
         exec sleep 300' & while [ ! -s {p} ]; do sleep 0.01; done; exit 0",
        p = pidfile.display()
    );
    let o = run(&dir, &["exec", "s1", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let escaped = read_pid(&pidfile);
    let events = contained(&dir);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["run"], 1);
    assert_eq!(events[0]["attempt"], 1);
    if in_cgroup(&events[0]) {
        let name = Path::new(events[0]["cgroup"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&format!("/{name}\n")),
            "the program was not in its cgroup: {o:?}"
        );
        assert!(gone(escaped), "process {escaped} outlived its run");
    } else {
        kill(escaped);
    }

    // Without a cgroup (asked for), the same process escapes: what the cgroup adds.
    let o = run(
        &dir,
        &["exec", "s1", "--no-cgroup", "--", "sh", "-c", &script],
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let escaped = read_pid(&pidfile);
    assert!(alive(escaped), "setsid did not leave the process group");
    kill(escaped);
    assert_eq!(
        contained(&dir).len(),
        1,
        "--no-cgroup recorded a run_contained"
    );
}

#[test]
fn a_timeout_kills_what_ignores_sigterm_outside_the_group_through_the_cgroup() {
    let (tmp, dir) = setup();
    let pidfile = tmp.path().join("escaped");
    let script = format!(
        "setsid sh -c 'trap \"\" TERM; echo $$ > {}; while :; do sleep 1; done' & \
         while [ ! -s {} ]; do sleep 0.05; done; sleep 300",
        pidfile.display(),
        pidfile.display()
    );
    let o = run(
        &dir,
        &[
            "exec",
            "s1",
            "--timeout",
            "1",
            "--grace-ms",
            "200",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(o.status.code(), Some(128 + 15), "{o:?}");
    let escaped = read_pid(&pidfile);
    let o = run(&dir, &["runs", "1"]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["status"], "timeout", "{r}");
    if in_cgroup(&contained(&dir)[0]) {
        assert!(gone(escaped), "process {escaped} outlived its run");
    } else {
        kill(escaped);
    }
}

#[test]
fn a_memory_limit_records_whether_memory_max_or_rlimit_as_holds_it() {
    let (_tmp, dir) = setup();
    let o = run(
        &dir,
        &[
            "exec",
            "s1",
            "--max-memory",
            "256",
            "--",
            "sh",
            "-c",
            "exit 0",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let e = &contained(&dir)[0];
    match (&e["cgroup"], e["memory_max"].as_bool().unwrap()) {
        (Value::String(path), true) => {
            assert_eq!(e["fallback"], Value::Null, "{e}");
            eprintln!("memory.max held the limit in {path}");
        }
        (_, false) => {
            let why = e["fallback"].as_str().unwrap();
            assert!(
                why.contains("memory.max is not available") || e["cgroup"].is_null(),
                "{e}"
            );
            eprintln!("RLIMIT_AS held the limit: {why}");
        }
        (Value::Null, true) => panic!("memory.max without a cgroup: {e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn after_a_sigkill_of_the_supervisor_the_reopen_kills_what_is_left_in_the_runs_cgroup() {
    let (tmp, dir) = setup();
    let pidfile = tmp.path().join("escaped");
    let script = format!(
        "setsid sh -c 'trap \"\" TERM; echo $$ > {}; while :; do sleep 1; done' & sleep 300",
        pidfile.display()
    );
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .args(["exec", "s1", "--grace-ms", "200", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')) {
        assert!(Instant::now() < until, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let escaped = read_pid(&pidfile);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive(escaped));
    // Any writable open reconciles.
    let o = run(&dir, &["create", "--id", "s2"]);
    assert!(o.status.success(), "{o:?}");
    let o = run(&dir, &["runs", "1"]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["status"], "interrupted", "{r}");
    if in_cgroup(&contained(&dir)[0]) {
        assert!(gone(escaped), "process {escaped} outlived the reconcile");
        let why = r["error"].as_str().unwrap();
        assert!(
            why.contains("process(es) left in its cgroup were killed"),
            "{why}"
        );
    } else {
        kill(escaped);
    }
}
