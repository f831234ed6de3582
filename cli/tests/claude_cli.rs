//! `session-engine claude validate` and `claude info`, run as a user runs them, on the
//! fixtures in `tests/fixtures/claude/` (see `tests/claude_reader.rs` for the reader).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/claude")
        .join(rel)
}

/// Runs the binary with a data directory that must stay untouched.
fn run(data_dir: &Path, args: &[&str], paths: &[PathBuf]) -> Output {
    Process::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .args(paths)
        .env_remove("SESSION_ENGINE_DIR")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn no_data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("runtime");
    (dir, data)
}

#[test]
fn validate_exits_0_on_good_transcripts_and_creates_no_data_directory() {
    let (_d, data) = no_data_dir();
    let o = run(
        &data,
        &["claude", "validate"],
        &[
            fixture("generated/empty.jsonl"),
            fixture("generated/streamed.jsonl"),
            fixture("generated/cut_last.jsonl"),
            fixture("real"),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    assert!(out.contains("streamed.jsonl (8 lines, 8 records)"), "{out}");
    assert!(
        out.contains("cut_last.jsonl:3: incomplete last line"),
        "a write in progress is reported: {out}"
    );
    assert!(
        out.contains("11 files: 11 valid, 0 with bad lines (0 bad lines), 1 being written"),
        "{out}"
    );
    assert!(!data.exists(), "claude validate created the data directory");
}

#[test]
fn validate_reports_each_bad_line_by_file_and_number_and_exits_7() {
    let (_d, data) = no_data_dir();
    let o = run(
        &data,
        &["claude", "validate"],
        &[
            fixture("generated/bad_middle.jsonl"),
            fixture("generated/invalid_utf8.jsonl"),
        ],
    );
    assert_eq!(o.status.code(), Some(7));
    let out = stdout(&o);
    let bad = fixture("generated/bad_middle.jsonl");
    assert!(
        out.contains(&format!("BAD: {}: 1 bad lines of 5", bad.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}:3: invalid JSON", bad.display())),
        "{out}"
    );
    let utf8 = fixture("generated/invalid_utf8.jsonl");
    assert!(out.contains(&format!("{}:2: invalid UTF-8 at byte 26", utf8.display())));
    assert!(out.contains(&format!("{}:4: invalid UTF-8 at byte 26", utf8.display())));

    let o = run(
        &data,
        &["--json", "claude", "validate"],
        &[
            fixture("generated/bad_middle.jsonl"),
            fixture("generated/summary.jsonl"),
        ],
    );
    assert_eq!(o.status.code(), Some(7));
    let v = json(&o);
    assert_eq!(v["valid"], false);
    assert_eq!(v["files"][0]["valid"], false);
    assert_eq!(v["files"][0]["bad_lines"], 1);
    assert_eq!(v["files"][0]["problems"][0]["line"], 3);
    assert_eq!(v["files"][0]["problems"][0]["kind"], "invalid_json");
    assert_eq!(v["files"][0]["message_count"], 4);
    assert_eq!(v["files"][1]["valid"], true);
    assert_eq!(v["totals"]["files"], 2);
    assert_eq!(v["totals"]["valid_files"], 1);
    assert!(!data.exists());
}

#[test]
fn info_prints_seed_003_fields_and_tokens_counted_once_per_message() {
    let (_d, data) = no_data_dir();
    let o = run(
        &data,
        &["--json", "claude", "info"],
        &[fixture("generated/streamed.jsonl")],
    );
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    let f = &v["files"][0];
    // Seed 003's get_session_info, field for field.
    assert_eq!(f["session_id"], "streamed");
    assert_eq!(
        f["file_path"],
        fixture("generated/streamed.jsonl").to_str().unwrap()
    );
    assert_eq!(f["size_bytes"], 3199);
    assert_eq!(f["message_count"], 8);
    assert_eq!(f["first_timestamp"], "2025-12-20T10:00:00.000Z");
    assert_eq!(f["last_timestamp"], "2025-12-20T10:00:07.000Z");
    // The rest.
    assert_eq!(f["records_by_type"]["assistant"], 6);
    assert_eq!(f["assistant_messages"], 3);
    assert_eq!(f["usage"]["input_tokens"], 35);
    assert_eq!(f["usage"]["output_tokens"], 40);
    assert_eq!(f["usage"]["cache_creation_input_tokens"], 100);
    assert_eq!(f["usage"]["cache_read_input_tokens"], 3000);
    assert_eq!(f["cwds"][0], "/home/dev/proj");
    assert_eq!(f["versions"][0], "2.0.74");
    assert_eq!(f["models"].as_array().unwrap().len(), 3);
    assert_eq!(f["session_ids"][0], "11111111-2222-4333-8444-555555555555");

    let o = run(
        &data,
        &["claude", "info"],
        &[fixture("real/marot-spotter/short.jsonl")],
    );
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for line in [
        "  session_id: short",
        "  size_bytes: 10491",
        "  message_count: 15",
        "  first_timestamp: 2026-02-10T21:11:52.438Z",
        "  last_timestamp: 2026-02-10T21:16:12.381Z",
        "  records: assistant 5, file-history-snapshot 1, progress 3, system 2, user 4",
        "  models: claude-opus-4-6",
        "  tokens: input_tokens 3, output_tokens 13, cache_creation_input_tokens 13835, \
         cache_read_input_tokens 11515 (1 assistant messages, each counted once)",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    assert!(!data.exists());
}

#[test]
fn info_on_a_directory_totals_every_file_walked() {
    let (_d, data) = no_data_dir();
    let o = run(&data, &["--json", "claude", "info"], &[fixture("real")]);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    assert_eq!(v["files"].as_array().unwrap().len(), 8);
    let t = &v["totals"];
    assert_eq!(t["files"], 8);
    assert_eq!(t["valid_files"], 8);
    // Sums of the per-file figures (Python's json over the same files): no message id
    // repeats across these files.
    assert_eq!(t["message_count"], 4 + 8 + 8 + 60 + 15 + 39 + 2);
    assert_eq!(t["assistant_messages"], 3 + 15 + 1 + 4 + 1);
    assert_eq!(t["usage"]["input_tokens"], 15 + 138 + 3 + 54 + 3);
    assert_eq!(t["usage"]["output_tokens"], 297 + 1443 + 13 + 212 + 8);
    assert_eq!(
        t["usage"]["cache_read_input_tokens"],
        25_277 + 290_391 + 11_515 + 88_231 + 17_842
    );
}

#[test]
fn a_data_directory_that_exists_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("runtime");
    std::fs::create_dir(&data).unwrap();
    let o = run(
        &data,
        &["--log-level", "trace", "claude", "validate"],
        &[fixture("generated/bad_middle.jsonl")],
    );
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "logs/ was created"
    );
}

#[cfg(unix)]
#[test]
fn missing_paths_links_and_unreadable_files_are_reported_and_the_rest_is_read() {
    let (d, data) = no_data_dir();
    let root = d.path().join("projects");
    std::fs::create_dir_all(root.join("p")).unwrap();
    std::fs::copy(fixture("generated/streamed.jsonl"), root.join("p/s.jsonl")).unwrap();
    std::os::unix::fs::symlink(&root, root.join("p/loop")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("p/out.jsonl")).unwrap();

    // A missing path: exit 3, the other path still read.
    let missing = d.path().join("missing.jsonl");
    let o = run(
        &data,
        &["--json", "claude", "validate"],
        &[root.clone(), missing.clone()],
    );
    assert_eq!(o.status.code(), Some(3));
    let v = json(&o);
    assert_eq!(v["files"].as_array().unwrap().len(), 1);
    assert_eq!(v["files"][0]["message_count"], 8);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 2);
    assert_eq!(v["unreadable"][0]["path"], missing.to_str().unwrap());
    assert_eq!(v["unreadable"][0]["not_found"], true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("p/loop: a symbolic link, not followed"),
        "{err}"
    );

    // A fifo named on the command line cannot be read as a file: exit 1, never a hang.
    let fifo = d.path().join("fifo.jsonl");
    let made = Process::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let o = run(&data, &["claude", "info"], &[fifo, root.join("p/s.jsonl")]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stdout(&o).contains("message_count: 8"));
        assert!(String::from_utf8_lossy(&o.stderr).contains("not a regular file"));
    }

    // A file that cannot be opened (not when running as root, who can open anything).
    use std::os::unix::fs::PermissionsExt;
    let locked = root.join("p/locked.jsonl");
    std::fs::write(&locked, b"{}\n").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&locked).is_err() {
        let o = run(&data, &["claude", "validate"], std::slice::from_ref(&root));
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("locked.jsonl"));
    }
    assert!(!data.exists());
}

#[test]
fn a_line_over_the_limit_is_reported_by_line_and_the_command_goes_on() {
    let (d, data) = no_data_dir();
    let path = d.path().join("huge.jsonl");
    let mut bytes = b"{\"type\":\"user\"}\n".to_vec();
    let start = bytes.len();
    bytes.resize(start + (64 << 20) + 1, b'x');
    bytes.extend_from_slice(b"\n{\"type\":\"user\"}\n");
    std::fs::write(&path, &bytes).unwrap();
    drop(bytes);
    let o = run(&data, &["claude", "validate"], std::slice::from_ref(&path));
    assert_eq!(o.status.code(), Some(7));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "{}:2: line of 67108865 bytes, longer than the limit of 67108864: skipped",
            path.display()
        )),
        "{out}"
    );
    assert!(out.contains("1 bad lines of 3"), "{out}");
}

#[test]
fn validate_needs_a_path() {
    let (_d, data) = no_data_dir();
    let o = run(&data, &["claude", "validate"], &[]);
    assert_eq!(o.status.code(), Some(2));
}
