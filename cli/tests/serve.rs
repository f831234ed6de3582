//! `session-engine serve`: the binary listens, answers over HTTP, and on SIGTERM answers
//! what is in flight, closes the engine cleanly and exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    (status, out)
}

/// Sends SIGname to our child `pid` (not yet waited for, so the pid is still its).
fn signal(pid: u32, name: &str) {
    let st = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(st.success());
}

#[test]
fn serve_answers_then_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert!(
        ready["token_file"].is_null(),
        "loopback needs no token: {ready}"
    );
    let addr = ready["listening"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .expect("listening")
        .to_owned();
    let (st, _) = http(&addr, "GET", "/health", "");
    assert_eq!(st, 200);
    let (st, out) = http(
        &addr,
        "POST",
        "/api/claude/sessions",
        "{\"id\": \"served\"}",
    );
    assert_eq!(st, 201, "{out}");
    let (st, out) = http(
        &addr,
        "POST",
        "/api/claude/sessions/served/activities",
        "{\"action\": \"edit\"}",
    );
    assert_eq!(st, 201, "{out}");
    signal(child.id(), "TERM");
    let status = child.wait().expect("wait");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(status.success(), "{status:?}: {err}");
    // The engine was closed: the directory opens for writing (the lock is free) and has
    // both records.
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["--json", "show", "served"])
        .output()
        .expect("show");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("edit"), "{shown}");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["activity", "served", "after"])
        .output()
        .expect("activity");
    assert!(out.status.success(), "the lock was released: {out:?}");
}

#[test]
fn serve_on_another_address_requires_and_generates_a_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--addr", "0.0.0.0:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    // Kept open until the server has exited: a closed pipe would fail its last writes.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdout.read_line(&mut line).expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("json");
    let token_file = ready["token_file"].as_str().expect("token file").to_owned();
    assert_eq!(std::path::Path::new(&token_file), data.join("server-token"));
    let port = ready["listening"]
        .as_str()
        .and_then(|u| u.rsplit(':').next())
        .expect("port")
        .to_owned();
    let (st, _) = http(&format!("127.0.0.1:{port}"), "GET", "/health", "");
    assert_eq!(st, 401);
    signal(child.id(), "INT");
    let status = child.wait().expect("wait");
    drop(stdout);
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_refuses_a_burst_or_header_timeout_of_zero_before_opening_anything() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    for flags in [["--rate-burst", "0"], ["--header-timeout-ms", "0"]] {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(flags)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        assert!(!data.exists(), "{flags:?} created the data directory");
    }
}
