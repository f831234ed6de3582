//! `--log nats://...`: the binary runs on a JetStream stream instead of the data
//! directory's write-ahead log; a second data directory on the same stream sees the same
//! sessions; bad URLs are usage errors; an unreachable server fails the command.
#![allow(clippy::unwrap_used)]

#[path = "../../nats/tests/common/mod.rs"]
mod nats;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

fn run(data: &Path, log: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("SESSION_ENGINE_DIR")
        .env_remove("SESSION_ENGINE_LOG")
        .env_remove("RUST_LOG")
        .arg("--data-dir")
        .arg(data)
        .arg("--log")
        .arg(log)
        .args(args)
        .output()
        .unwrap()
}

fn ok(data: &Path, log: &str, args: &[&str]) -> String {
    let o = run(data, log, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_binary_runs_on_a_stream_and_another_data_directory_reads_it() {
    let Some(c) = nats::Cluster::single() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("nats://{}/cli", c.servers()[0]);
    let a = tmp.path().join("a");
    ok(&a, &url, &["create", "--id", "s1", "--name", "on nats"]);
    ok(&a, &url, &["activity", "s1", "user_input"]);
    ok(&a, &url, &["activity", "s1", "api_call"]);
    // No write-ahead log in the data directory: the records are in the stream.
    assert!(!a.join("wal").exists() || std::fs::read_dir(a.join("wal")).unwrap().count() == 0);
    // Another data directory on the same stream has the same session and writes after
    // the first one's records; the first one then reads them.
    let b = tmp.path().join("b");
    ok(&b, &url, &["activity", "s1", "from_b"]);
    let shown: Value = serde_json::from_str(&ok(&b, &url, &["--json", "show", "s1"])).unwrap();
    assert_eq!(shown["name"], "on nats", "{shown}");
    assert_eq!(
        shown["activity_log"].as_array().unwrap().len(),
        3,
        "{shown}"
    );
    let shown: Value = serde_json::from_str(&ok(&a, &url, &["--json", "show", "s1"])).unwrap();
    assert_eq!(
        shown["activity_log"].as_array().unwrap().len(),
        3,
        "{shown}"
    );
    // Without --log, the same data directory is a file log with nothing in it.
    let o = Command::new(BIN)
        .env_remove("SESSION_ENGINE_LOG")
        .env_remove("SESSION_ENGINE_DIR")
        .arg("--data-dir")
        .arg(tmp.path().join("c"))
        .args(["show", "s1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
}

#[test]
fn bad_urls_are_usage_errors_and_an_unreachable_server_fails_the_command() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["nats://", "http://127.0.0.1:4222", "nats://h:1/a.b"] {
        let o = run(tmp.path(), bad, &["create", "--id", "s"]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {o:?}");
    }
    // verify and repair are the file log's tools.
    for cmd in ["verify", "repair"] {
        let o = run(tmp.path(), "nats://127.0.0.1:1", &[cmd]);
        assert_eq!(o.status.code(), Some(4), "{cmd}: {o:?}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = run(
        &tmp.path().join("d"),
        &format!("nats://127.0.0.1:{port}"),
        &["create", "--id", "s"],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unavailable"), "{err}");
}
