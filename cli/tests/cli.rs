//! The real `session-engine` binary: every command, its output contract, and its exact
//! exit status and message on bad input.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

struct Dir {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = root.join("data");
    Dir {
        _tmp: tmp,
        root,
        data,
    }
}

impl Dir {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(&self.root)
            .env_remove("SESSION_ENGINE_DIR")
            .env_remove("SESSION_ENGINE_PROJECTIONS")
            .env_remove("RUST_LOG")
            .arg("--data-dir")
            .arg(&self.data)
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed with {:?}: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs a command that must fail with `code` and a stderr containing `needle`.
    fn fails(&self, args: &[&str], code: i32, needle: &str) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(code), "{args:?}: stderr {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        err
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn segment(&self) -> PathBuf {
        let wal = self.data.join("wal");
        let mut names: Vec<_> = std::fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        names.sort();
        names.remove(0)
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn create_prints_a_uuid_v7_or_the_given_id_and_refuses_unsafe_or_taken_ids() {
    let d = dir();
    let id = d.ok(&["create", "--name", "demo"]);
    let id = id.trim();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "7", "not a UUID v7: {id}");
    assert_eq!(d.ok(&["create", "--id", "my-session"]).trim(), "my-session");
    d.fails(
        &["create", "--id", "my-session"],
        5,
        "session already exists: my-session",
    );
    d.fails(&["create", "--id", "../etc"], 4, "invalid session id");
    d.fails(&["create", "--id", "a/b"], 4, "invalid session id");
    d.fails(&["create", "--id", &"x".repeat(200)], 4, "the limit is 128");
    d.fails(&["create", "--meta", "novalue"], 4, "is not KEY=VALUE");
    d.fails(&["create", "--timeout", "soon"], 2, "invalid value");
    d.fails(&["create", "--timeout", "-1"], 2, "unexpected argument");
    let ids = d.ok(&["list"]);
    assert_eq!(lines(&ids).len(), 2);
}

#[test]
fn activity_meta_and_status_commands_follow_the_seed_rules() {
    let d = dir();
    d.ok(&[
        "create",
        "--id",
        "s1",
        "--meta",
        "user=alice",
        "--meta",
        "n=3",
    ]);
    d.ok(&[
        "activity",
        "s1",
        "user_input",
        "--details",
        r#"{"message":"Hello"}"#,
    ]);
    d.fails(&["activity", "nope", "x"], 3, "session not found: nope");
    d.fails(
        &["activity", "s1", "x", "--details", "{oops"],
        4,
        "invalid details: malformed JSON",
    );
    d.fails(&["activity", "bad id", "x"], 4, "invalid session id");
    assert_eq!(d.ok(&["meta", "s1", "user"]).trim(), r#""alice""#);
    assert_eq!(d.ok(&["meta", "s1", "n"]).trim(), "3");
    d.ok(&["meta", "s1", "branch", "main"]);
    d.ok(&["meta", "s1", "obj", r#"{"a":[1,2]}"#]);
    assert_eq!(d.ok(&["meta", "s1", "branch"]).trim(), r#""main""#);
    assert_eq!(d.ok(&["meta", "s1", "obj"]).trim(), r#"{"a":[1,2]}"#);
    d.fails(&["meta", "s1", "missing"], 3, "metadata key not found");
    d.ok(&["meta", "s1", "branch", "--remove"]);
    d.fails(&["meta", "s1", "branch"], 3, "metadata key not found");
    d.fails(
        &["meta", "s1", "branch", "--remove"],
        3,
        "metadata key not found",
    );

    d.ok(&["pause", "s1"]);
    d.fails(&["pause", "s1"], 5, "cannot pause session s1: it is paused");
    d.fails(
        &["activity", "s1", "x"],
        5,
        "cannot record activity in session s1: it is paused",
    );
    d.ok(&["resume", "s1"]);
    d.fails(&["resume", "s1"], 5, "it is active");
    d.ok(&["end", "s1"]);
    d.fails(&["end", "s1"], 5, "it is ended");
    let s = d.json(&["show", "s1"]);
    assert_eq!(s["status"], "ended");
    assert_eq!(s["activity_log"][0]["action"], "user_input");
    assert_eq!(s["activity_log"][0]["details"]["message"], "Hello");
    d.fails(&["pause", "nope"], 3, "session not found");
}

#[test]
fn checkpoints_print_their_index_and_restore_defaults_to_the_last() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.ok(&["activity", "s1", "one"]);
    assert_eq!(d.ok(&["checkpoint", "s1", "--label", "first"]).trim(), "0");
    d.ok(&["activity", "s1", "two"]);
    assert_eq!(d.ok(&["checkpoint", "s1"]).trim(), "1");
    d.ok(&["activity", "s1", "three"]);
    d.ok(&["restore", "s1"]);
    assert_eq!(
        d.json(&["show", "s1"])["activity_log"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    d.ok(&["restore", "s1", "0"]);
    let s = d.json(&["show", "s1"]);
    assert_eq!(s["activity_log"].as_array().unwrap().len(), 1);
    assert_eq!(s["checkpoints"][0]["label"], "first");
    d.fails(
        &["restore", "s1", "9"],
        3,
        "checkpoint not found: 9 in session s1",
    );
    d.fails(&["restore", "s1", "x"], 2, "invalid value");
    d.ok(&["create", "--id", "empty"]);
    d.fails(&["restore", "empty"], 5, "it has no checkpoint");
}

#[test]
fn decisions_commands_and_chains() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.ok(&[
        "decision",
        "s1",
        "--what",
        "archive",
        "--why",
        "timeout",
        "--alternatives",
        "extend",
    ]);
    d.fails(&["decision", "s1", "--what", "x"], 2, "--why");
    d.ok(&["command", "s1", "cargo test", "--duration-ms", "1200"]);
    d.ok(&["command", "s1", "cargo build", "--error", "exit 101"]);
    let s = d.json(&["show", "s1"]);
    assert_eq!(s["decisions"][0]["why"], "timeout");
    let history = s["command_history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["duration_ms"], 1200);
    assert_eq!(history[1]["success"], false);
    assert_eq!(history[1]["error"], "exit 101");

    let empty = d.json(&["chain", "agent-1"]);
    assert_eq!(empty["sessions"].as_array().unwrap().len(), 0);
    assert!(empty["current_session_id"].is_null());
    d.ok(&[
        "chain",
        "agent-1",
        "--link",
        "ext-1",
        "--prompt",
        &"p".repeat(300),
        "--response",
        "r1",
    ]);
    d.ok(&[
        "chain",
        "agent-1",
        "--link",
        "ext-2",
        "--prompt",
        "p2",
        "--response",
        "r2",
    ]);
    let c = d.json(&["chain", "agent-1"]);
    assert_eq!(c["current_session_id"], "ext-2");
    assert_eq!(c["interaction_count"], 2);
    assert_eq!(c["sessions"][0]["last_prompt"].as_str().unwrap().len(), 200);
    d.fails(&["chain", "agent-1", "--link", "ext-3"], 2, "--prompt");
    d.fails(&["chain", "../agent"], 4, "invalid agent id");
    d.ok(&["chain", "agent-1", "--reset"]);
    assert_eq!(d.json(&["chain", "agent-1"])["interaction_count"], 0);
}

#[test]
fn show_prints_the_documented_fields_and_point_in_time_state() {
    let d = dir();
    d.ok(&["create", "--id", "s1", "--timeout", "60"]);
    d.ok(&["activity", "s1", "a"]);
    d.ok(&["meta", "s1", "k", "v"]);
    let s = d.json(&["show", "s1"]);
    for field in [
        "session_id",
        "status",
        "created_at",
        "last_activity",
        "timeout_seconds",
        "metadata",
        "activity_log",
        "checkpoints",
    ] {
        assert!(s.get(field).is_some(), "missing {field}");
    }
    assert_eq!(s["session_id"], "s1");
    assert_eq!(s["timeout_seconds"], 60);
    let created = s["created_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
    assert!(created.ends_with('Z'));
    let at1 = d.json(&["show", "s1", "--at", "1"]);
    assert_eq!(at1["activity_log"].as_array().unwrap().len(), 0);
    assert_eq!(at1["metadata"], serde_json::json!({}));
    let at2 = d.json(&["show", "s1", "--at", "2"]);
    assert_eq!(at2["activity_log"].as_array().unwrap().len(), 1);
    d.fails(
        &["show", "s1", "--at", "99"],
        5,
        "beyond the end of the log",
    );
    d.fails(&["show", "nope"], 3, "session not found: nope");
    d.fails(
        &["show", "s1", "--at", "0"],
        3,
        "session not found: s1 at LSN 0",
    );
}

#[test]
fn a_timed_out_session_shows_its_status_in_list_and_in_the_files() {
    let d = dir();
    d.ok(&["create", "--id", "idle", "--timeout", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The next writing command records the expiry first, then refuses the activity.
    d.fails(&["activity", "idle", "x"], 5, "it is timed_out");
    let listed = d.json(&["list", "--json"]);
    assert_eq!(listed[0]["status"], "timed_out");
    assert_eq!(listed[0]["is_active"], false);
    let read = |rel: &str| -> Value {
        serde_json::from_slice(&std::fs::read(d.data.join(rel)).unwrap()).unwrap()
    };
    assert_eq!(read("sessions/session_idle.json")["status"], "timed_out");
    assert_eq!(
        read("sessions/registry.json")["sessions"]["idle"]["status"],
        "timed_out"
    );
}

#[test]
fn list_filters_by_status_and_prints_json() {
    let d = dir();
    assert_eq!(d.ok(&["list"]), "", "a missing directory lists nothing");
    d.ok(&["create", "--id", "a"]);
    d.ok(&["create", "--id", "b"]);
    d.ok(&["create", "--id", "c"]);
    d.ok(&["pause", "b"]);
    d.ok(&["archive", "c"]);
    assert_eq!(lines(&d.ok(&["list"])), ["a", "b", "c"]);
    assert_eq!(lines(&d.ok(&["list", "--status", "paused"])), ["b"]);
    assert_eq!(lines(&d.ok(&["list", "--status", "archived"])), ["c"]);
    d.fails(&["list", "--status", "sleeping"], 2, "invalid value");
    let v = d.json(&["--json", "list", "--status", "active"]);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["session_id"], "a");
    assert_eq!(v[0]["status"], "active");
    d.fails(&["archive", "c"], 5, "it is archived");
}

#[test]
fn cleanup_prints_how_many_it_archived_and_clone_prints_the_new_id() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.ok(&["activity", "s1", "a"]);
    assert_eq!(d.ok(&["cleanup", "--max-age-days", "30"]).trim(), "0");
    assert_eq!(d.ok(&["cleanup", "--max-age-days", "0"]).trim(), "1");
    assert_eq!(lines(&d.ok(&["list", "--status", "archived"])), ["s1"]);
    d.fails(&["cleanup"], 2, "--max-age-days");
    d.ok(&["resume", "s1"]);
    let c = d.ok(&["clone", "s1"]);
    let c = c.trim();
    assert_ne!(c, "s1");
    let s = d.json(&["show", c]);
    assert_eq!(s["activity_log"].as_array().unwrap().len(), 1);
    assert_eq!(d.ok(&["clone", "s1", "--new-id", "copy"]).trim(), "copy");
    d.fails(&["clone", "s1", "--new-id", "copy"], 5, "already exists");
    d.fails(&["clone", "nope"], 3, "session not found");
}

#[test]
fn apply_answers_every_line_in_order_and_goes_on_after_bad_lines() {
    let d = dir();
    let input = [
        r#"{"op":"create","id":"s1"}"#,
        r#"{"op":"activity","id":"s1","action":"a","details":{"k":1}}"#,
        "not json",
        r#"{"op":"activity","session_id":"nope","action":"a"}"#,
        r#"{"op":"meta","id":"s1","key":"k","value":[1,2]}"#,
        r#"{"op":"checkpoint","id":"s1","label":"l"}"#,
        r#"{"op":"restore","id":"s1"}"#,
        r#"{"op":"decision","id":"s1","what":"w","why":"y"}"#,
        r#"{"op":"chain_link","agent":"ag","external_id":"e1","prompt":"p","response":"r"}"#,
        r#"{"op":"pause","id":"s1"}"#,
        r#"{"op":"resume","id":"s1"}"#,
        r#"{"op":"fly","id":"s1"}"#,
        r#"{"op":"end","id":"s1"}"#,
        r#"{"op":"archive","id":"s1"}"#,
        r#"{"op":"create"}"#,
    ]
    .join("\n");
    let o = d.run_stdin(&["apply"], &input);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 15);
    let oks: Vec<bool> = answers.iter().map(|a| a["ok"].as_bool().unwrap()).collect();
    assert_eq!(
        oks,
        [
            true, true, false, false, true, true, true, true, true, true, true, false, true, true,
            true
        ]
    );
    assert_eq!(answers[0]["id"], "s1");
    assert_eq!(answers[0]["lsn"], 1);
    assert_eq!(answers[1]["lsn"], 2);
    assert_eq!(answers[4]["lsn"], 3, "refused lines use no LSN");
    assert_eq!(answers[5]["index"], 0);
    assert_eq!(answers[2]["kind"], "invalid_input");
    assert!(
        answers[2]["error"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    assert_eq!(answers[3]["error"], "session not found: nope");
    assert!(
        answers[11]["error"]
            .as_str()
            .unwrap()
            .contains("unknown op \"fly\"")
    );
    assert_eq!(answers[14]["id"].as_str().unwrap().len(), 36);
    assert_eq!(lines(&d.ok(&["list", "--status", "archived"])), ["s1"]);
}

#[test]
fn apply_answers_each_line_before_the_next_is_sent() {
    let d = dir();
    let mut child = d
        .cmd(&["apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, r#"{{"op":"create","id":"s1"}}"#).unwrap();
    stdin.flush().unwrap();
    for i in 0..20 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], true, "{line}");
        assert_eq!(v["lsn"], i + 1);
        writeln!(stdin, r#"{{"op":"activity","id":"s1","action":"a{i}"}}"#).unwrap();
        stdin.flush().unwrap();
    }
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.lines().count(), 1);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn replay_prints_one_json_line_per_event_with_filters() {
    let d = dir();
    d.ok(&["create", "--id", "a"]);
    d.ok(&["create", "--id", "b"]);
    d.ok(&["activity", "a", "x"]);
    d.ok(&["activity", "b", "y"]);
    d.ok(&["cleanup", "--max-age-days", "0"]);
    let all = d.ok(&["replay"]);
    let events: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 5);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["lsn"], i as u64 + 1);
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(e["type"].is_string());
    }
    assert_eq!(events[2]["type"], "activity_recorded");
    assert_eq!(events[2]["session_id"], "a");
    assert_eq!(events[4]["session_ids"], serde_json::json!(["a", "b"]));
    let only_b = d.ok(&["replay", "--session", "b"]);
    let lsns: Vec<u64> = only_b
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["lsn"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(lsns, [2, 4, 5]);
    assert_eq!(d.ok(&["replay", "--from", "4"]).lines().count(), 2);
    d.fails(&["replay", "--session", "../x"], 4, "invalid session id");
    let empty = dir();
    empty.fails(&["replay"], 3, "data directory not found");
}

#[test]
fn a_closed_pipe_ends_quietly_with_status_zero() {
    let d = dir();
    let input: String = std::iter::once(r#"{"op":"create","id":"s1"}"#.to_string())
        .chain((0..3000).map(|i| format!(r#"{{"op":"activity","id":"s1","action":"a{i}"}}"#)))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(d.run_stdin(&["apply"], &input).status.success());
    let mut child = d
        .cmd(&["replay"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: replay's next writes hit a closed pipe.
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn verify_and_repair_report_damage_with_file_and_offset() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    for i in 0..5 {
        d.ok(&["activity", "s1", &format!("a{i}")]);
    }
    let out = d.ok(&["verify"]);
    assert!(
        out.starts_with("intact: 1 segments, 6 records, last LSN 6"),
        "{out}"
    );
    let seg = d.segment();
    // The third record's payload: header (32) + two frames; find it by replaying sizes.
    let bytes = std::fs::read(&seg).unwrap();
    let mut pos = 32;
    let mut starts = Vec::new();
    while let Ok(f) = session_engine::wal::record::decode_frame(&bytes[pos..]) {
        // Each command's clean close sealed the log; seals are not records.
        if !f.seal {
            starts.push(pos);
        }
        pos += f.len;
    }
    flip(&seg, starts[2] + 24);
    let err = d.fails(
        &["verify"],
        7,
        &format!("{} at byte offset {}", seg.display(), starts[2]),
    );
    assert!(err.contains("run `session-engine repair`"), "{err}");
    let err = d.fails(
        &["activity", "s1", "x"],
        7,
        &format!("corruption in {}", seg.display()),
    );
    assert!(err.contains(&format!("byte offset {}", starts[2])), "{err}");
    assert!(err.contains("verify") && err.contains("repair"), "{err}");
    let out = d.ok(&["repair"]);
    assert!(
        out.contains(&format!("from {} at offset {}", seg.display(), starts[2])),
        "{out}"
    );
    assert!(out.contains("quarantine"), "{out}");
    assert!(out.contains("the log now ends at LSN 2"), "{out}");
    d.ok(&["verify"]);
    d.ok(&["activity", "s1", "after repair"]);
    assert!(d.ok(&["repair"]).starts_with("nothing to repair"));
}

#[test]
fn a_torn_tail_is_reported_by_verify_and_cut_with_a_warning_on_open() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.ok(&["activity", "s1", "a"]);
    let seg = d.segment();
    let bytes = std::fs::read(&seg).unwrap();
    let mut pos = 32;
    let mut last = 0;
    while let Ok(f) = session_engine::wal::record::decode_frame(&bytes[pos..]) {
        if !f.seal {
            last = pos;
        }
        pos += f.len;
    }
    // A write torn by a crash: the last record cut short, and no seal after it (a clean
    // close seals the log; a crash before the seal leaves none).
    let mut torn = bytes.clone();
    torn[last + 10..pos].fill(0);
    std::fs::write(&seg, &torn).unwrap();
    d.fails(
        &["verify"],
        8,
        &format!("torn final record: {} at byte offset {last}", seg.display()),
    );
    let o = d.run(&["activity", "s1", "b"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("torn write"), "{err}");
    assert!(err.contains(&format!("offset {last}")), "{err}");
    assert!(err.contains("quarantine"), "{err}");
    d.ok(&["verify"]);
    assert_eq!(d.json(&["show", "s1"])["activity_log"][0]["action"], "b");
}

#[test]
fn a_damaged_segment_header_refuses_to_open() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    let seg = d.segment();
    flip(&seg, 3);
    d.fails(
        &["show", "s1"],
        7,
        &format!(
            "corruption in {} at byte offset 0: bad segment magic",
            seg.display()
        ),
    );
    d.fails(&["verify"], 7, "bad segment magic");
}

#[test]
fn a_second_writer_gets_a_clear_error_while_readers_still_work() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    let (mut holder, stdin) = hold_writer(&d);
    d.fails(
        &["activity", "s1", "x"],
        6,
        "data directory is in use by another process",
    );
    assert_eq!(d.json(&["show", "s1"])["activity_log"][0]["action"], "held");
    d.ok(&["verify"]);
    assert_eq!(d.ok(&["replay"]).lines().count(), 2);
    drop(stdin);
    assert!(holder.wait().unwrap().success());
    d.ok(&["activity", "s1", "x"]);
}

#[test]
fn snapshot_and_stats() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.ok(&["create", "--id", "s2"]);
    d.ok(&["pause", "s2"]);
    assert_eq!(d.ok(&["snapshot"]).trim(), "snapshot at LSN 3");
    let s = d.json(&["stats"]);
    assert_eq!(s["sessions_by_status"]["active"], 1);
    assert_eq!(s["sessions_by_status"]["paused"], 1);
    assert_eq!(s["events"], 3);
    assert_eq!(s["last_lsn"], 3);
    assert_eq!(s["segments"], 1);
    assert_eq!(s["snapshot_lsn"], 3);
    assert!(s["bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["projections"]["marker_lsn"], 3);
    assert_eq!(s["projections"]["behind"], false);
    let empty = dir();
    empty.fails(&["stats"], 3, "data directory not found");
}

#[test]
fn every_command_has_help() {
    let d = dir();
    let help = d.ok(&["--help"]);
    let mut commands = Vec::new();
    let mut in_commands = false;
    for l in help.lines() {
        if l.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            match l.split_whitespace().next() {
                Some(c) if l.starts_with("  ") => commands.push(c.to_string()),
                _ => break,
            }
        }
    }
    assert!(commands.len() > 20, "{commands:?}");
    for c in commands.iter().filter(|c| *c != "help") {
        let out = d.ok(&[c, "--help"]);
        assert!(out.contains("Usage: session-engine"), "{c}: {out}");
    }
}

#[test]
fn the_data_directory_defaults_to_claude_runtime_and_the_environment_overrides_it() {
    let d = dir();
    let o = Command::new(BIN)
        .current_dir(&d.root)
        .env_remove("SESSION_ENGINE_DIR")
        .args(["create", "--id", "s1"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(d.root.join(".claude/runtime/wal").is_dir());
    assert!(d.root.join(".claude/runtime/logs/toolkit.log").is_file());
    let o = Command::new(BIN)
        .current_dir(&d.root)
        .env("SESSION_ENGINE_DIR", d.root.join("elsewhere"))
        .args(["create", "--id", "s2"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(d.root.join("elsewhere/wal").is_dir());
}

#[test]
fn the_toolkit_log_is_json_lines() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.fails(&["activity", "nope", "x"], 3, "session not found");
    let log = std::fs::read_to_string(d.data.join("logs/toolkit.log")).unwrap();
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries.iter().any(|e| e["op"] == "create" && e["lsn"] == 1));
    assert!(
        entries
            .iter()
            .any(|e| e["op"] == "activity" && e["kind"] == "not_found")
    );
    for e in &entries {
        assert!(e["timestamp"].is_string() && e["level"].is_string(), "{e}");
    }
}

#[test]
fn the_log_starts_with_the_engines_header_line() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    let log = std::fs::read_to_string(d.data.join("logs/toolkit.log")).unwrap();
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["session_engine_log"], 1, "{first}");
    // Later runs append to the same file under the one header.
    d.ok(&["activity", "s1", "a"]);
    let log = std::fs::read_to_string(d.data.join("logs/toolkit.log")).unwrap();
    assert_eq!(log.matches("session_engine_log").count(), 1);
    assert!(log.lines().any(|l| l.contains("\"op\":\"activity\"")));
}

#[test]
fn a_toolkit_log_another_program_wrote_is_never_appended_to() {
    let d = dir();
    let logs = d.data.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // What the Python toolkit's ToolkitLogger writes there: JSON lines, no header of ours.
    let theirs =
        "{\"timestamp\": \"2026-01-01T00:00:00\", \"level\": \"INFO\", \"message\": \"x\"}\n";
    std::fs::write(logs.join("toolkit.log"), theirs).unwrap();
    d.ok(&["create", "--id", "s1"]);
    d.fails(&["activity", "nope", "x"], 3, "session not found");
    assert_eq!(
        std::fs::read_to_string(logs.join("toolkit.log")).unwrap(),
        theirs
    );
    let ours = std::fs::read_to_string(logs.join("session-engine.log")).unwrap();
    assert!(
        ours.lines()
            .next()
            .unwrap()
            .contains("\"session_engine_log\":1")
    );
    assert!(ours.lines().any(|l| l.contains("\"op\":\"create\"")));
    // When both names are taken by others, only stderr gets the log.
    std::fs::remove_file(logs.join("session-engine.log")).unwrap();
    std::fs::write(logs.join("session-engine.log"), "not ours\n").unwrap();
    d.ok(&["activity", "s1", "b"]);
    assert_eq!(
        std::fs::read_to_string(logs.join("toolkit.log")).unwrap(),
        theirs
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("session-engine.log")).unwrap(),
        "not ours\n"
    );
    let names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn read_only_commands_do_not_create_the_data_directory() {
    let d = dir();
    d.fails(&["show", "s1"], 3, "data directory not found");
    d.fails(&["verify"], 3, "data directory not found");
    d.ok(&["list"]);
    assert!(!d.data.exists());
}

#[test]
fn demo_creates_a_session_records_into_it_and_shows_it_back() {
    let d = dir();
    let s = d.json(&["demo"]);
    assert_eq!(s["name"], "demo");
    assert_eq!(s["activity_log"].as_array().unwrap().len(), 2);
    assert_eq!(s["checkpoints"].as_array().unwrap().len(), 1);
    let id = s["session_id"].as_str().unwrap();
    assert_eq!(d.json(&["show", id])["session_id"], id);
    d.ok(&["verify"]);
}

#[test]
fn write_commands_leave_the_seed_json_files_complete() {
    let d = dir();
    d.ok(&["create", "--id", "s1", "--meta", "user=alice"]);
    d.ok(&[
        "activity",
        "s1",
        "user_input",
        "--details",
        r#"{"message":"Hello"}"#,
    ]);
    d.ok(&["create", "--id", "s2"]);
    d.ok(&["archive", "s2"]);
    d.ok(&[
        "chain",
        "agent-1",
        "--link",
        "ext-1",
        "--prompt",
        "p",
        "--response",
        "r",
    ]);
    let read = |p: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.data.join(p)).unwrap()).unwrap()
    };
    let reg = read("sessions/registry.json");
    assert_eq!(reg["sessions"]["s1"]["status"], "active");
    assert_eq!(reg["sessions"]["s2"]["status"], "archived");
    let s1 = read("sessions/session_s1.json");
    assert_eq!(s1, d.json(&["show", "s1"]), "show prints the session file");
    assert_eq!(s1["activity_log"][0]["details"]["message"], "Hello");
    assert!(!d.data.join("sessions/session_s2.json").exists());
    assert_eq!(
        read("sessions/archive/session_s2.json")["status"],
        "archived"
    );
    assert_eq!(
        read("chains/agent-1_sessions.json")["current_session_id"],
        "ext-1"
    );
    assert!(d.data.join("logs/session_s1.log").is_file());
    std::fs::remove_dir_all(d.data.join("sessions")).unwrap();
    let out = d.ok(&["rebuild-projections"]);
    assert!(
        out.starts_with("rebuilt the projections at LSN 5: 2 session files"),
        "{out}"
    );
    assert_eq!(read("sessions/session_s1.json"), s1);
}

#[test]
fn export_and_import_round_trip_and_refuse_damaged_foreign_or_missing_bundles() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.ok(&["activity", "s1", "a", "--details", r#"{"k":1}"#]);
    d.ok(&["checkpoint", "s1"]);
    let bundle = d.root.join("s1.bundle.json");
    d.ok(&["export", "s1", bundle.to_str().unwrap()]);
    // Into another engine, the id is kept.
    let other = dir();
    assert_eq!(other.ok(&["import", bundle.to_str().unwrap()]).trim(), "s1");
    let a = d.json(&["show", "s1"]);
    let b = other.json(&["show", "s1"]);
    assert_eq!(a["activity_log"], b["activity_log"]);
    assert_eq!(a["checkpoints"], b["checkpoints"]);
    // Into the same engine, the clash gets a new id.
    let new_id = d.ok(&["import", bundle.to_str().unwrap()]);
    assert_ne!(new_id.trim(), "s1");
    assert_eq!(
        d.json(&["show", new_id.trim()])["activity_log"],
        a["activity_log"]
    );
    d.fails(&["export", "nope", "x.json"], 3, "session not found: nope");
    d.fails(&["import", "missing.json"], 3, "bundle file not found");
    let damaged = d.root.join("damaged.json");
    let text = std::fs::read_to_string(&bundle).unwrap();
    std::fs::write(&damaged, text.replacen("\"a\"", "\"b\"", 1)).unwrap();
    d.fails(&["import", damaged.to_str().unwrap()], 4, "checksum");
    let foreign = d.root.join("foreign.json");
    std::fs::write(&foreign, r#"{"sessions":{}}"#).unwrap();
    d.fails(
        &["import", foreign.to_str().unwrap()],
        4,
        "not a session-engine bundle",
    );
    let before = d.ok(&["list"]);
    assert_eq!(lines(&before).len(), 2, "refused imports changed nothing");
}

/// JSON text `depth` arrays deep.
fn nested_text(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

/// Issue 12, defect 6: the CLI accepted details its own bundle could not import again.
#[test]
fn export_then_import_works_for_the_deepest_details_the_cli_accepts() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    let mut accepted = Vec::new();
    for depth in [64, 65, 127] {
        let details = nested_text(depth);
        let o = d.run(&["activity", "s1", "a", "--details", &details]);
        match o.status.code() {
            Some(0) => accepted.push(depth),
            Some(4) => {
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    err.contains("invalid details") && err.contains("nested"),
                    "{err}"
                );
            }
            other => panic!("{depth}: {other:?}"),
        }
    }
    assert!(accepted.contains(&64), "{accepted:?}");
    let bundle = d.root.join("s1.bundle.json");
    d.ok(&["export", "s1", bundle.to_str().unwrap()]);
    let other = dir();
    let o = other.run(&["import", bundle.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "details {accepted:?} deep were accepted, but their bundle is refused: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        d.json(&["show", "s1"])["activity_log"],
        other.json(&["show", "s1"])["activity_log"]
    );
}

/// Issue 12: JSON given on the command line obeys the same rules as every JSON input:
/// nested past the limit or with a duplicate key, it is refused (exit 4), never stored
/// with one value lost, and never silently stored as a string instead.
#[test]
fn command_line_json_with_duplicate_keys_or_nested_past_the_limit_is_refused() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    let deep = nested_text(65);
    let far = nested_text(10_000);
    for bad in [r#"{"a":1,"a":2}"#, r#"[{"x":{"a":1,"a":1}}]"#, &deep, &far] {
        let needle = if bad.starts_with("[[") {
            "nested"
        } else {
            "duplicate key"
        };
        d.fails(&["activity", "s1", "a", "--details", bad], 4, needle);
        d.fails(&["command", "s1", "c", "--args", bad], 4, needle);
        d.fails(&["meta", "s1", "k", bad], 4, needle);
        d.fails(
            &["create", "--id", "s2", "--meta", &format!("k={bad}")],
            4,
            needle,
        );
    }
    // Text that is not JSON at all is still a string value, as documented.
    d.ok(&["meta", "s1", "k", "{not json"]);
    assert_eq!(d.ok(&["meta", "s1", "k"]).trim(), r#""{not json""#);
    d.ok(&["meta", "s1", "k", &nested_text(64)]);
    let s = d.json(&["show", "s1"]);
    assert_eq!(s["activity_log"].as_array().unwrap().len(), 0);
    assert_eq!(s["command_history"].as_array().map(Vec::len), Some(0));
}

/// Issue 12, defect 11: `apply` took a line with a duplicate key, the last value winning.
/// Such a line is refused with a per-line answer like any bad line; `apply` goes on and
/// exits 0.
#[test]
fn apply_refuses_lines_with_duplicate_keys_or_json_nested_past_the_limit() {
    let d = dir();
    let deep = nested_text(65);
    let far = nested_text(10_000);
    let input = [
        r#"{"op":"create","id":"s1"}"#.to_owned(),
        r#"{"op":"pause","id":"s1","id":"s1"}"#.to_owned(),
        r#"{"op":"activity","id":"s1","action":"a","action":"b"}"#.to_owned(),
        r#"{"op":"activity","id":"s1","action":"a","details":{"k":1,"k":2}}"#.to_owned(),
        r#"{"op":"create","id":"s2","meta":{"k":1,"k":2}}"#.to_owned(),
        format!(r#"{{"op":"activity","id":"s1","action":"a","details":{deep}}}"#),
        format!(r#"{{"op":"meta","id":"s1","key":"k","value":{far}}}"#),
        r#"{"op":"activity","id":"s1","action":"a","details":{"k":1}}"#.to_owned(),
    ]
    .join("\n");
    let o = d.run_stdin(&["apply"], &input);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 8);
    for (i, a) in answers.iter().enumerate() {
        let refused = (1..=6).contains(&i);
        assert_eq!(a["ok"], !refused, "line {i}: {a}");
        if refused {
            assert_eq!(a["kind"], "invalid_input", "line {i}: {a}");
            let needle = if i >= 5 { "nested" } else { "duplicate key" };
            assert!(
                a["error"].as_str().unwrap().contains(needle),
                "line {i}: {a}"
            );
        }
    }
    assert_eq!(answers[7]["lsn"], 2, "refused lines use no LSN");
    let s = d.json(&["show", "s1"]);
    assert_eq!(s["status"], "active");
    assert_eq!(s["activity_log"].as_array().unwrap().len(), 1);
    assert_eq!(lines(&d.ok(&["list"])), ["s1"]);
}

/// Blocks every write under `sessions/`, even for root: a regular file takes the
/// directory's place.
fn obstruct_sessions(d: &Dir) {
    let sessions = d.data.join("sessions");
    std::fs::remove_dir_all(&sessions).unwrap();
    std::fs::write(&sessions, b"not a directory").unwrap();
}

fn clear_obstruction(d: &Dir) {
    std::fs::remove_file(d.data.join("sessions")).unwrap();
}

/// Issue 12, defect 5: a command whose event is in the log exits 0 with its normal output
/// even when the projection files cannot be written afterwards; the failure is a warning
/// on stderr and shows in `stats`; the next command writes the files once it can.
#[test]
fn a_committed_command_exits_0_when_its_projection_cannot_be_written() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    obstruct_sessions(&d);
    let o = d.run(&["activity", "s1", "act", "--details", r#"{"n":1}"#]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(
        err.contains("warning: the projection files are behind the log"),
        "{err}"
    );
    assert!(
        err.contains("sessions"),
        "the warning names the path: {err}"
    );
    assert!(!err.contains("error:"), "{err}");
    // The activity is in the log exactly once.
    let events: Vec<Value> = d
        .ok(&["replay", "--session", "s1"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        d.json(&["show", "s1"])["activity_log"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let s = d.json(&["stats"]);
    assert_eq!(s["projections"]["behind"], true, "{s}");
    assert_eq!(s["projections"]["marker_lsn"], 1, "{s}");
    assert!(
        s["projections"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("sessions")),
        "{s}"
    );
    // Once the obstruction is gone, the next command writes every file and warns no more.
    clear_obstruction(&d);
    let o = d.run(&["activity", "s1", "act2"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(!err.contains("warning"), "{err}");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(d.data.join("sessions/session_s1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file, d.json(&["show", "s1"]));
    assert_eq!(file["activity_log"].as_array().unwrap().len(), 2);
    let registry: Value = serde_json::from_str(
        &std::fs::read_to_string(d.data.join("sessions/registry.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(registry["sessions"]["s1"]["status"], "active");
    let s = d.json(&["stats"]);
    assert_eq!(s["projections"]["behind"], false, "{s}");
    assert_eq!(s["projections"]["marker_lsn"], 3, "{s}");
    assert_eq!(s["projections"]["last_error"], Value::Null, "{s}");
}

/// Issue 12, defect 5, for every command that commits: exit 0, the usual stdout, a
/// warning on stderr; `rebuild-projections` repairs everything once it can.
#[test]
fn every_committing_command_exits_0_when_its_projection_cannot_be_written() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    let bundle = d.root.join("s1.bundle.json");
    d.ok(&["export", "s1", bundle.to_str().unwrap()]);
    obstruct_sessions(&d);
    let committed = |args: &[&str]| -> String {
        let o = d.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{args:?}: stderr {err}");
        assert!(
            err.contains("warning: the projection files are behind the log"),
            "{args:?}: {err}"
        );
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(committed(&["create", "--id", "s2"]).trim(), "s2");
    committed(&["activity", "s1", "a"]);
    committed(&["meta", "s1", "k", "v"]);
    committed(&["meta", "s1", "k", "--remove"]);
    assert_eq!(committed(&["checkpoint", "s1"]).trim(), "0");
    committed(&["restore", "s1"]);
    committed(&["decision", "s1", "--what", "w", "--why", "y"]);
    committed(&["command", "s1", "c"]);
    committed(&[
        "chain",
        "ag",
        "--link",
        "e1",
        "--prompt",
        "p",
        "--response",
        "r",
    ]);
    committed(&["chain", "ag", "--reset"]);
    committed(&["pause", "s1"]);
    committed(&["resume", "s1"]);
    committed(&["end", "s1"]);
    committed(&["archive", "s1"]);
    assert_eq!(committed(&["cleanup", "--max-age-days", "1"]).trim(), "0");
    assert_eq!(committed(&["clone", "s2", "--new-id", "s3"]).trim(), "s3");
    let imported = committed(&["import", bundle.to_str().unwrap()]);
    assert_eq!(imported.trim().len(), 36, "{imported}");
    let o = d.run_stdin(
        &["apply"],
        &[
            r#"{"op":"activity","id":"s2","action":"a"}"#,
            r#"{"op":"pause","id":"s2"}"#,
        ]
        .join("\n"),
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "apply: {err}");
    assert!(
        err.contains("warning: the projection files are behind the log"),
        "{err}"
    );
    let answers: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|a| a["ok"] == true), "{answers:?}");
    let last = d.json(&["stats"])["last_lsn"].as_u64().unwrap();
    assert_eq!(answers[1]["lsn"], last);
    // Each command is in the log once.
    assert_eq!(d.ok(&["replay"]).lines().count() as u64, last);
    assert_eq!(d.json(&["stats"])["projections"]["behind"], true);
    clear_obstruction(&d);
    let out = d.ok(&["rebuild-projections"]);
    assert!(
        out.starts_with(&format!("rebuilt the projections at LSN {last}")),
        "{out}"
    );
    let s = d.json(&["stats"]);
    assert_eq!(s["projections"]["behind"], false, "{s}");
    assert_eq!(s["projections"]["marker_lsn"], last, "{s}");
    assert!(d.data.join("sessions/archive/session_s1.json").is_file());
    assert!(d.data.join("sessions/session_s3.json").is_file());
}

/// Starts `apply` as a long-running writer and waits for its first answer, so it holds the
/// writer lock.
fn hold_writer(d: &Dir) -> (Child, std::process::ChildStdin) {
    let mut holder: Child = d
        .cmd(&["apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    let mut stdout = BufReader::new(holder.stdout.take().unwrap());
    writeln!(stdin, r#"{{"op":"activity","id":"s1","action":"held"}}"#).unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains(r#""ok":true"#), "{line}");
    (holder, stdin)
}

#[test]
fn deleting_lock_while_a_writer_runs_does_not_let_a_second_writer_in() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    let (mut holder, stdin) = hold_writer(&d);
    std::fs::remove_file(d.data.join("LOCK")).unwrap();
    d.fails(
        &["activity", "s1", "x"],
        6,
        "data directory is in use by another process",
    );
    drop(stdin);
    assert!(holder.wait().unwrap().success());
    d.ok(&["activity", "s1", "x"]);
    d.ok(&["verify"]);
}

/// A file outside the data directory with known content, and a symbolic link to it at
/// `link`.
#[cfg(unix)]
fn plant_link(d: &Dir, link: &Path) -> PathBuf {
    let outside = d.root.join("outside.txt");
    std::fs::write(&outside, b"precious").unwrap();
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, link).unwrap();
    outside
}

/// Runs a command that may succeed or fail but must not panic (status 101) or die.
fn no_panic(d: &Dir, args: &[&str]) -> Output {
    let o = d.run(args);
    assert!(
        matches!(o.status.code(), Some(c) if c != 101),
        "{args:?}: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[cfg(unix)]
#[test]
fn symlinks_are_not_followed_out_of_the_data_directory_session_tmp() {
    let d = dir();
    // Planted after the first open: its rebuild of the projections removes stale
    // temporary files.
    d.ok(&["create", "--id", "s1"]);
    let outside = plant_link(&d, &d.data.join("sessions/session_s1.json.tmp"));
    no_panic(&d, &["activity", "s1", "a"]);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    // The session file itself was written inside the data directory.
    assert!(
        std::fs::symlink_metadata(d.data.join("sessions/session_s1.json"))
            .unwrap()
            .is_file()
    );
}

#[cfg(unix)]
#[test]
fn symlinks_are_not_followed_out_of_the_data_directory_session_log() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    let log = d.data.join("logs/session_s1.log");
    let _ = std::fs::remove_file(&log);
    let outside = plant_link(&d, &log);
    no_panic(&d, &["activity", "s1", "a"]);
    no_panic(&d, &["activity", "s1", "b"]);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
}

#[cfg(unix)]
#[test]
fn symlinks_are_not_followed_out_of_the_data_directory_chain_tmp() {
    let d = dir();
    let link = |ext: &str| {
        no_panic(
            &d,
            &[
                "chain",
                "agent-1",
                "--link",
                ext,
                "--prompt",
                "p",
                "--response",
                "r",
            ],
        );
    };
    link("ext-1");
    let outside = plant_link(&d, &d.data.join("chains/agent-1_sessions.json.tmp"));
    link("ext-2");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    assert_eq!(d.json(&["chain", "agent-1"])["current_session_id"], "ext-2");
    assert!(
        std::fs::symlink_metadata(d.data.join("chains/agent-1_sessions.json"))
            .unwrap()
            .is_file()
    );
}

#[cfg(unix)]
#[test]
fn symlinks_are_not_followed_out_of_the_data_directory_subfolder() {
    let d = dir();
    let elsewhere = d.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(&d.data).unwrap();
    std::os::unix::fs::symlink(&elsewhere, d.data.join("sessions")).unwrap();
    no_panic(&d, &["create", "--id", "s1"]);
    no_panic(&d, &["activity", "s1", "a"]);
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "wrote through a linked folder"
    );
    let wal = d.root.join("wal-elsewhere");
    std::fs::create_dir_all(&wal).unwrap();
    let d2 = dir();
    std::fs::create_dir_all(&d2.data).unwrap();
    std::os::unix::fs::symlink(&wal, d2.data.join("wal")).unwrap();
    d2.fails(&["create", "--id", "s1"], 1, "symbolic link");
    assert!(std::fs::read_dir(&wal).unwrap().next().is_none());
}

#[cfg(unix)]
#[test]
fn export_file_replaces_only_a_regular_file() {
    use std::os::unix::fs::FileTypeExt;
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.ok(&["activity", "s1", "a"]);
    // A new path and an existing regular file are fine.
    let new = d.root.join("new.json");
    d.ok(&["export", "s1", new.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&new).unwrap().contains("\"s1\""));
    let existing = d.root.join("existing.json");
    std::fs::write(&existing, b"old").unwrap();
    d.ok(&["export", "s1", existing.to_str().unwrap()]);
    assert!(
        std::fs::read_to_string(&existing)
            .unwrap()
            .contains("\"s1\"")
    );
    // A device is refused and stays a device. Never /dev/null itself: run as root, the
    // defect this guards against replaces it with a regular file for the whole machine.
    // A null device made in the test's own folder needs root; without it, skip this part.
    let device = d.root.join("null");
    let made = Command::new("mknod")
        .arg(&device)
        .args(["c", "1", "3"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if made {
        d.fails(
            &["export", "s1", device.to_str().unwrap()],
            4,
            "not a regular file",
        );
        assert!(
            std::fs::symlink_metadata(&device)
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
    // A symbolic link is refused and its target is unchanged.
    let target = d.root.join("target.txt");
    std::fs::write(&target, b"precious").unwrap();
    let link = d.root.join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    d.fails(
        &["export", "s1", link.to_str().unwrap()],
        4,
        "not a regular file",
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    // A fifo and a directory are refused.
    let fifo = d.root.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    d.fails(
        &["export", "s1", fifo.to_str().unwrap()],
        4,
        "not a regular file",
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let folder = d.root.join("folder");
    std::fs::create_dir(&folder).unwrap();
    d.fails(
        &["export", "s1", folder.to_str().unwrap()],
        4,
        "not a regular file",
    );
    assert!(folder.is_dir());
}

/// Every file and folder under `root` with its permission bits, for the test below.
#[cfg(unix)]
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), m.is_dir(), m.permissions().mode() & 0o777));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out
}

#[cfg(unix)]
fn run_under_umask_022(d: &Dir, args: &[&str]) {
    // The test process's umask is shared by every thread; the child gets its own.
    let mut c = Command::new("sh");
    c.current_dir(&d.root)
        .env_remove("SESSION_ENGINE_DIR")
        .env_remove("RUST_LOG")
        .arg("-c")
        .arg("umask 022 && exec \"$@\"")
        .arg("sh")
        .arg(BIN)
        .arg("--data-dir")
        .arg(&d.data)
        .args(args);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[cfg(unix)]
#[test]
fn files_are_not_world_readable() {
    let d = dir();
    run_under_umask_022(&d, &["create", "--id", "s1"]);
    run_under_umask_022(&d, &["activity", "s1", "a"]);
    run_under_umask_022(&d, &["snapshot"]);
    let found = modes(&d.data);
    assert!(
        found
            .iter()
            .any(|(p, _, _)| p.ends_with("logs/toolkit.log"))
    );
    assert!(found.iter().any(|(p, _, _)| p.ends_with("LOCK")));
    for (p, is_dir, mode) in found {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} has mode {mode:o}", p.display());
    }
    let g = dir();
    run_under_umask_022(&g, &["--group-access", "create", "--id", "s1"]);
    run_under_umask_022(&g, &["--group-access", "activity", "s1", "a"]);
    run_under_umask_022(&g, &["--group-access", "snapshot"]);
    for (p, is_dir, mode) in modes(&g.data) {
        let want = if is_dir { 0o750 } else { 0o640 };
        assert_eq!(mode, want, "{} has mode {mode:o}", p.display());
    }
}

// ---- Ownership: another tool's files are never touched (issue 13) ----

/// amplihack's `sessions/registry.json` and one of its session files.
const AMPLIHACK_REGISTRY: &str = r#"{
  "sessions": {
    "claude_session_1733100000_ab12cd34": {
      "name": "x",
      "created_at": 1733100000.5,
      "last_accessed": 1733100001.25,
      "status": "saved",
      "config": {
        "timeout": 300.0,
        "max_retries": 3,
        "retry_delay": 1.0,
        "heartbeat_interval": 30.0,
        "enable_logging": true,
        "log_level": "INFO",
        "auto_save_interval": 60.0,
        "session_name": "x"
      },
      "metadata": {}
    }
  },
  "updated_at": 1733100002.0
}"#;
const AMPLIHACK_SESSION: &str = r#"{
  "session_id": "claude_session_1733100000_ab12cd34",
  "state": {"session_id": "claude_session_1733100000_ab12cd34", "start_time": 1733100000.5,
            "last_activity": 1733100001.25, "is_active": false, "command_count": 0,
            "error_count": 0, "last_error": null, "metadata": {}},
  "config": {"timeout": 300.0, "max_retries": 3, "retry_delay": 1.0,
             "heartbeat_interval": 30.0, "enable_logging": true, "log_level": "INFO",
             "auto_save_interval": 60.0, "session_name": "x"},
  "command_history": [],
  "statistics": {},
  "saved_at": 1733100002.0,
  "metadata": {}
}"#;
/// A chain file as seed 003's tracker writes it.
const SEED_003_CHAIN: &str = r#"{
  "agent_id": "py-agent",
  "current_session_id": "sess-1",
  "interaction_count": 1,
  "sessions": [
    {
      "session_id": "sess-1",
      "created_at": "2025-11-08T10:30:00.123456",
      "interaction_count": 1,
      "last_prompt": "hi",
      "last_response": "hello",
      "metadata": {}
    }
  ]
}"#;

fn put(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[test]
fn writing_commands_in_an_amplihack_runtime_directory_exit_9_and_change_nothing() {
    let d = dir();
    // The default data directory, `.claude/runtime`, as amplihack leaves it.
    let runtime = d.root.join(".claude/runtime");
    let registry = runtime.join("sessions/registry.json");
    let session = runtime.join("sessions/claude_session_1733100000_ab12cd34.json");
    put(&registry, AMPLIHACK_REGISTRY);
    put(&session, AMPLIHACK_SESSION);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .current_dir(&d.root)
            .env_remove("SESSION_ENGINE_DIR")
            .env_remove("RUST_LOG")
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["create", "--name", "x"][..],
        &[
            "chain",
            "py-agent",
            "--link",
            "e1",
            "--prompt",
            "p",
            "--response",
            "r",
        ],
        &["rebuild-projections"],
    ] {
        let o = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(9), "{args:?}: {err}");
        assert!(err.contains("sessions/registry.json"), "{err}");
        assert!(err.contains("was not written by session-engine"), "{err}");
        assert!(err.contains("session-engine import"), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
        assert!(o.stdout.is_empty());
        assert_eq!(
            std::fs::read_to_string(&registry).unwrap(),
            AMPLIHACK_REGISTRY
        );
        assert_eq!(
            std::fs::read_to_string(&session).unwrap(),
            AMPLIHACK_SESSION
        );
    }
    let names: Vec<String> = std::fs::read_dir(runtime.join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!runtime.join("projections.manifest").exists());
    assert!(!runtime.join("projections.json").exists());
    // Another data directory works.
    let o = run(&["--data-dir", "elsewhere", "create", "--id", "s1"]);
    assert!(o.status.success());
}

#[test]
fn a_seed_003_chain_file_stops_the_first_open_and_is_never_replaced_by_a_link() {
    let d = dir();
    let chain = d.data.join("chains/py-agent_sessions.json");
    put(&chain, SEED_003_CHAIN);
    let link = [
        "chain",
        "py-agent",
        "--link",
        "e2",
        "--prompt",
        "p",
        "--response",
        "r",
    ];
    d.fails(&link, 9, "chains/py-agent_sessions.json was not written");
    assert_eq!(std::fs::read_to_string(&chain).unwrap(), SEED_003_CHAIN);

    // A directory the engine already writes to: the tracker's file appears later. The
    // link is committed (exit 0) and its projection refused with a warning naming it.
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    let chain = d.data.join("chains/py-agent_sessions.json");
    put(&chain, SEED_003_CHAIN);
    let o = d.run(&link);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("warning"), "{err}");
    assert!(err.contains("chains/py-agent_sessions.json"), "{err}");
    assert_eq!(std::fs::read_to_string(&chain).unwrap(), SEED_003_CHAIN);
    assert_eq!(d.json(&["chain", "py-agent"])["current_session_id"], "e2");
    // From now on the state has that chain: writing commands stop at the open.
    d.fails(&["activity", "s1", "a"], 9, "py-agent_sessions.json");
    assert_eq!(std::fs::read_to_string(&chain).unwrap(), SEED_003_CHAIN);
}

#[test]
fn rebuild_projections_leaves_files_it_did_not_write_untouched() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.ok(&["activity", "s1", "a"]);
    d.ok(&[
        "chain",
        "agent-1",
        "--link",
        "e1",
        "--prompt",
        "p",
        "--response",
        "r",
    ]);
    let foreign_session = d.data.join("sessions/session_foreign.json");
    let foreign_chain = d.data.join("chains/py-agent_sessions.json");
    put(&foreign_session, "{\"someone\": \"else\"}");
    put(&foreign_chain, SEED_003_CHAIN);
    let out = d.ok(&["rebuild-projections"]);
    assert!(out.contains("moved 0 files"), "{out}");
    let r = d.json(&["--json", "rebuild-projections"]);
    assert_eq!(r["moved_aside"], 0);
    assert_eq!(
        std::fs::read_to_string(&foreign_session).unwrap(),
        "{\"someone\": \"else\"}"
    );
    assert_eq!(
        std::fs::read_to_string(&foreign_chain).unwrap(),
        SEED_003_CHAIN
    );
    assert!(!d.data.join("projections-attic").exists());
    let stats = d.json(&["stats"]);
    assert_eq!(stats["projections"]["attic_folders"], 0);
    // registry, marker, one session file, its log, one chain file.
    assert_eq!(stats["projections"]["owned_files"], 5);
}

#[test]
fn a_repair_moves_the_files_of_the_sessions_it_took_away_aside() {
    let d = dir();
    d.ok(&["create", "--id", "s1"]);
    d.ok(&["create", "--id", "s2"]);
    let s2 = std::fs::read(d.data.join("sessions/session_s2.json")).unwrap();
    let seg = d.segment();
    let bytes = std::fs::read(&seg).unwrap();
    let mut pos = 32;
    let mut starts = Vec::new();
    while let Ok(f) = session_engine::wal::record::decode_frame(&bytes[pos..]) {
        if !f.seal {
            starts.push(pos);
        }
        pos += f.len;
    }
    // Damage the record that created s2.
    flip(&seg, starts[1] + 24);
    d.ok(&["repair"]);
    assert!(!d.data.join("sessions/session_s2.json").exists());
    let attic = d.data.join("projections-attic");
    let folder = std::fs::read_dir(&attic)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read(folder.join("sessions/session_s2.json")).unwrap(),
        s2,
        "moved aside, not deleted"
    );
    assert!(folder.join("logs/session_s2.log").is_file());
    assert_eq!(d.json(&["stats"])["projections"]["attic_folders"], 1);
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    names.sort();
    names
}

fn activity_lines(n: usize) -> String {
    let mut input = String::from("{\"op\":\"create\",\"id\":\"s1\"}\n");
    for i in 0..n {
        input.push_str(&format!(
            "{{\"op\":\"activity\",\"id\":\"s1\",\"action\":\"step {i}\"}}\n"
        ));
    }
    input
}

#[test]
fn segment_bytes_and_snapshot_every_give_a_short_run_several_segments_and_a_snapshot() {
    let d = dir();
    let o = d.run_stdin(
        &["--segment-bytes", "4K", "--snapshot-every", "50", "apply"],
        &activity_lines(100),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.lines().last(), Some(r#"{"ok":true,"lsn":101}"#));
    let wal = d.data.join("wal");
    let segments = files_with_ext(&wal, ".wal");
    assert!(segments.len() >= 2, "{segments:?}");
    // Each is 4 KiB, or just larger when one batch needed more (a record never spans
    // segments); nowhere near the default 16 MiB.
    for s in &segments {
        let len = std::fs::metadata(wal.join(s)).unwrap().len();
        assert!((4096..64 << 10).contains(&len), "{s}: {len}");
    }
    let snapshots = files_with_ext(&d.data.join("snapshots"), ".snap");
    assert!(!snapshots.is_empty());
    let verified = d.ok(&["verify"]);
    assert!(
        verified.starts_with(&format!("intact: {} segments, 101 records", segments.len())),
        "{verified}"
    );
    // Later runs with the defaults read it all and write 16 MiB segments.
    let shown = d.json(&["show", "s1"]);
    assert_eq!(shown["activity_log"].as_array().unwrap().len(), 100);
    d.ok(&["--segment-bytes", "16M", "activity", "s1", "more"]);
    assert_eq!(d.json(&["stats"])["last_lsn"], 102);
    // 0: no automatic snapshot, however many events (50 would have taken one here).
    let more: String = (0..120)
        .map(|i| format!("{{\"op\":\"activity\",\"id\":\"s1\",\"action\":\"m{i}\"}}\n"))
        .collect();
    let o = d.run_stdin(&["--snapshot-every", "0", "apply"], &more);
    assert!(o.status.success());
    assert_eq!(
        files_with_ext(&d.data.join("snapshots"), ".snap"),
        snapshots
    );
    // 1: one after the next batch.
    d.ok(&["--snapshot-every", "1", "activity", "s1", "last"]);
    let after = files_with_ext(&d.data.join("snapshots"), ".snap");
    assert_eq!(after.len(), snapshots.len() + 1, "{after:?}");
}

#[test]
fn a_bad_segment_size_or_snapshot_interval_is_a_usage_error_that_changes_nothing() {
    let d = dir();
    for (args, needle) in [
        (
            ["--segment-bytes", "100"],
            "is not between 4096 (4K) and 1073741824 (1G)",
        ),
        (["--segment-bytes", "2G"], "is not between 4096"),
        (["--segment-bytes", "0"], "is not between 4096"),
        (["--segment-bytes", "lots"], "not a number of bytes"),
        (["--segment-bytes", "12X"], "unknown unit"),
        (
            ["--snapshot-every", "often"],
            "invalid value 'often' for '--snapshot-every",
        ),
        (["--snapshot-every", "1.5"], "invalid value"),
        // 0 was silently raised to 1 ms; it is refused instead.
        (["--sync-interval-ms", "0"], "0 is not in 1.."),
    ] {
        let err = d.fails(&[args[0], args[1], "create"], 2, needle);
        assert!(err.contains(args[0]), "{err}");
        assert!(!d.data.exists(), "{args:?} created the data directory");
    }
    d.fails(
        &["--snapshot-every", "-3", "create"],
        2,
        "unexpected argument",
    );
    assert!(!d.data.exists());
    // The help shows the engine's defaults.
    let help = d.ok(&["--help"]);
    assert!(help.contains("[default: 16777216]"), "{help}");
    assert!(help.contains("[default: 100000]"), "{help}");
}

#[test]
fn apply_exits_zero_when_lines_are_refused_and_six_when_the_directory_is_in_use() {
    let d = dir();
    let input = [
        r#"{"op":"create","id":"s1"}"#,
        r#"{"op":"create","id":"s1"}"#,
        r#"{"op":"pause","id":"s1"}"#,
        r#"{"op":"activity","id":"s1","action":"while paused"}"#,
        r#"{"op":"activity","id":"ghost","action":"a"}"#,
        r#"{"op":"activity","id":"../x","action":"a"}"#,
        "{",
        r#"{"op":"resume","id":"s1"}"#,
    ]
    .join("\n");
    let o = d.run_stdin(&["apply"], &input);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = answers
        .iter()
        .map(|a| a["kind"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ok",
            "already_exists",
            "ok",
            "invalid_state",
            "not_found",
            "invalid_input",
            "invalid_input",
            "ok"
        ]
    );
    // A second `apply` while one runs cannot open the directory: 6.
    let mut running = d
        .cmd(&["apply"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = running.stdin.take().unwrap();
    let mut stdout = BufReader::new(running.stdout.take().unwrap());
    writeln!(stdin, r#"{{"op":"activity","id":"s1","action":"held"}}"#).unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains(r#""ok":true"#), "{line}");
    let o = d.run_stdin(&["apply"], r#"{"op":"pause","id":"s1"}"#);
    assert_eq!(
        o.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    drop(stdin);
    assert!(running.wait().unwrap().success());
    assert_eq!(d.json(&["show", "s1"])["status"], "active");
}

/// The index column of `history`'s lines.
fn indices(out: &str) -> Vec<usize> {
    out.lines()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect()
}

/// `history --json`'s lines without their `index`, which must count from `first` by `step`.
fn without_index(out: &str, first: i64, step: i64) -> Vec<Value> {
    out.lines()
        .enumerate()
        .map(|(n, l)| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let index = v.as_object_mut().unwrap().shift_remove("index").unwrap();
            assert_eq!(index, first + step * n as i64, "{l}");
            v
        })
        .collect()
}

#[test]
fn history_prints_one_line_per_item_in_pages_oldest_or_newest_first() {
    let d = dir();
    let mut input = vec![r#"{"op":"create","id":"s1"}"#.to_string()];
    for i in 0..11 {
        input.push(format!(
            r#"{{"op":"activity","id":"s1","action":"a{i}","details":{{"i":{i},"s":"x y"}}}}"#
        ));
    }
    input.push(r#"{"op":"activity","id":"s1","action":"tab\there\\ and\nline"}"#.into());
    let o = d.run_stdin(&["apply"], &(input.join("\n") + "\n"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.ok(&[
        "command",
        "s1",
        "cargo test",
        "--error",
        "1 failed",
        "--duration-ms",
        "12",
    ]);
    d.ok(&["command", "s1", "ls", "--args", r#"{"a":[1,2]}"#]);
    d.ok(&[
        "decision",
        "s1",
        "--what",
        "use\timbl",
        "--why",
        "cheap",
        "--alternatives",
        "Vec",
    ]);

    // One line per item: index, timestamp, action, details as compact JSON.
    let all = d.ok(&["history", "s1"]);
    assert_eq!(indices(&all), (0..12).collect::<Vec<_>>());
    for (i, l) in all.lines().enumerate().take(11) {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.len(), 4, "{l}");
        assert!(chrono::DateTime::parse_from_rfc3339(f[1]).is_ok(), "{l}");
        assert_eq!(f[2], format!("a{i}"));
        assert_eq!(f[3], format!(r#"{{"i":{i},"s":"x y"}}"#));
    }
    let last: Vec<&str> = all.lines().nth(11).unwrap().split('\t').collect();
    assert_eq!(
        last.len(),
        4,
        "tabs and newlines in a name are escaped: {last:?}"
    );
    assert_eq!(last[2], r"tab\there\\ and\nline");
    assert_eq!(last[3], "{}");

    // --json: one object per line, show's entries plus the index.
    let show = d.json(&["show", "s1"]);
    let json = d.ok(&["history", "s1", "--json"]);
    assert_eq!(json.lines().count(), 12);
    assert_eq!(
        Value::Array(without_index(&json, 0, 1)),
        show["activity_log"]
    );
    let cmds = d.ok(&["history", "s1", "--commands", "--json"]);
    assert_eq!(
        Value::Array(without_index(&cmds, 0, 1)),
        show["command_history"]
    );
    let decs = d.ok(&["history", "s1", "--decisions", "--json"]);
    assert_eq!(Value::Array(without_index(&decs, 0, 1)), show["decisions"]);
    let cmds = d.ok(&["history", "s1", "--commands"]);
    let f: Vec<Vec<&str>> = cmds.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!((f[0][0], f[0][2]), ("0", "cargo test"));
    assert_eq!(
        f[0][3],
        r#"{"args":{},"success":false,"error":"1 failed","duration_ms":12}"#
    );
    assert_eq!((f[1][0], f[1][2]), ("1", "ls"));
    assert_eq!(
        f[1][3],
        r#"{"args":{"a":[1,2]},"success":true,"error":null,"duration_ms":0}"#
    );
    let decs = d.ok(&["history", "s1", "--decisions"]);
    let f: Vec<&str> = decs.trim_end().split('\t').collect();
    assert_eq!(
        (f[0], f[2], f[3]),
        ("0", r"use\timbl", r#"{"why":"cheap","alternatives":"Vec"}"#)
    );

    // Pages, oldest first: --from is an index, --limit a count.
    assert_eq!(
        indices(&d.ok(&["history", "s1", "--from", "3", "--limit", "4"])),
        [3, 4, 5, 6]
    );
    assert_eq!(
        indices(&d.ok(&["history", "s1", "--from", "10", "--limit", "5"])),
        [10, 11]
    );
    assert_eq!(
        d.ok(&["history", "s1", "--from", "12"]),
        "",
        "where the next item will be"
    );
    let mut paged = String::new();
    let mut from = 0;
    loop {
        let page = d.ok(&["history", "s1", "--from", &from.to_string(), "--limit", "5"]);
        if page.is_empty() {
            break;
        }
        from = indices(&page).last().unwrap() + 1;
        paged.push_str(&page);
    }
    assert_eq!(paged, all, "pages put together are the whole history");

    // Newest first: from the start index down to 0.
    let newest = d.ok(&["history", "s1", "--newest-first"]);
    assert_eq!(indices(&newest), (0..12).rev().collect::<Vec<_>>());
    let mut reversed: Vec<&str> = all.lines().collect();
    reversed.reverse();
    assert_eq!(newest.lines().collect::<Vec<_>>(), reversed);
    assert_eq!(
        indices(&d.ok(&["history", "s1", "--newest-first", "--limit", "3"])),
        [11, 10, 9]
    );
    assert_eq!(
        indices(&d.ok(&[
            "history",
            "s1",
            "--newest-first",
            "--from",
            "4",
            "--limit",
            "3"
        ])),
        [4, 3, 2]
    );
    assert_eq!(
        indices(&d.ok(&[
            "history",
            "s1",
            "--newest-first",
            "--from",
            "1",
            "--limit",
            "5"
        ])),
        [1, 0]
    );
    let page = d.ok(&[
        "history",
        "s1",
        "--newest-first",
        "--from",
        "5",
        "--limit",
        "2",
        "--json",
    ]);
    assert_eq!(without_index(&page, 5, -1).len(), 2);

    // --at LSN: the history right after that record (LSN 4: the third activity).
    let at = d.ok(&["history", "s1", "--at", "4"]);
    assert_eq!(indices(&at), [0, 1, 2]);
    assert_eq!(
        at,
        all.lines()
            .take(3)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let at_json = d.ok(&["history", "s1", "--at", "4", "--json", "--newest-first"]);
    let mut then = d.json(&["show", "s1", "--at", "4"])["activity_log"].clone();
    then.as_array_mut().unwrap().reverse();
    assert_eq!(Value::Array(without_index(&at_json, 2, -1)), then);
    assert_eq!(d.ok(&["history", "s1", "--commands", "--at", "13"]), "");
}

#[test]
fn history_refuses_bad_input_with_the_clis_exit_statuses() {
    let d = dir();
    d.fails(&["history", "s1"], 3, "data directory not found");
    d.ok(&["create", "--id", "e"]);
    // An empty session: nothing to print, and only index 0 (where the first item will
    // be) to start from.
    assert_eq!(d.ok(&["history", "e"]), "");
    assert_eq!(d.ok(&["history", "e", "--newest-first"]), "");
    assert_eq!(
        d.ok(&["history", "e", "--decisions", "--from", "0", "--json"]),
        ""
    );
    d.fails(
        &["history", "e", "--from", "1"],
        4,
        "invalid --from: 1 is past the end: the session has no activities",
    );
    d.fails(
        &["history", "e", "--newest-first", "--from", "0"],
        4,
        "the session has no activities",
    );
    for i in 0..3 {
        d.ok(&["activity", "e", &format!("a{i}")]);
    }
    d.fails(
        &["history", "e", "--from", "4"],
        4,
        "4 is past the end: the session has 3 activities (indices 0 to 2)",
    );
    d.fails(
        &["history", "e", "--newest-first", "--from", "3"],
        4,
        "3 is past the end: the session has 3 activities (indices 0 to 2)",
    );
    d.fails(
        &["history", "e", "--commands", "--from", "1"],
        4,
        "the session has no commands",
    );
    d.fails(&["history", "nope"], 3, "session not found: nope");
    d.fails(&["history", "../x"], 4, "invalid");
    d.fails(
        &["history", "e", "--at", "99"],
        5,
        "beyond the end of the log",
    );
    d.fails(
        &["history", "e", "--at", "0"],
        3,
        "session not found: e at LSN 0",
    );
    d.fails(&["history", "e", "--limit", "0"], 2, "--limit");
    d.fails(&["history", "e", "--from=-1"], 2, "invalid value");
    d.fails(&["history", "e", "--from", "x"], 2, "--from");
    d.fails(
        &["history", "e", "--commands", "--decisions"],
        2,
        "cannot be used with",
    );
    assert_eq!(indices(&d.ok(&["history", "e", "--limit", "2"])), [0, 1]);
}
