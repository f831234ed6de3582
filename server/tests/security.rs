//! The token rule and the DNS-rebinding checks.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::{Harness, assert_error, body};
use reqwest::Method;
use session_engine::{ManagerOptions, SessionManager};
use session_engine_server::ServeOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_checks_host_and_origin() {
    let h = Harness::start().await;
    let port = h.server.as_ref().expect("server").local_addr().port();
    let send = |host: Option<String>, origin: Option<&str>| {
        let mut r = h.req(Method::GET, "/api/claude/sessions");
        if let Some(host) = host {
            r = r.header("host", host);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r
    };
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (st, v) = body(send(Some(host.clone()), None).send().await.expect("send")).await;
        assert_eq!(st, 200, "{host}: {v}");
    }
    let (st, _) = body(
        send(None, Some(&format!("http://localhost:{port}")))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 200);
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost:{}", port.wrapping_add(1)),
        "localhost".to_owned(),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost:{port}.evil"),
    ] {
        let (st, v) = body(send(Some(host.clone()), None).send().await.expect("send")).await;
        assert_eq!(st, 403, "{host}: {v}");
        assert_error(&v);
    }
    for origin in [
        "http://evil.example".to_owned(),
        format!("https://localhost:{port}"),
        "null".to_owned(),
        format!("http://localhost:{port}.evil.example"),
    ] {
        let before = h.lsn();
        let r = h
            .req(Method::POST, "/api/claude/sessions")
            .header("origin", &origin)
            .json(&serde_json::json!({}));
        let (st, v) = body(r.send().await.expect("send")).await;
        assert_eq!(st, 403, "{origin}: {v}");
        assert_eq!(h.lsn(), before, "a refused request writes nothing");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_makes_the_token_required() {
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a-long-enough-secret-token\n").expect("write");
    let tf = token_file.clone();
    let mut h = Harness::with(move |o| o.token_file = Some(tf)).await;
    assert_eq!(h.token.as_deref(), Some("a-long-enough-secret-token"));
    let (st, v) = h.get("/health").await;
    assert_eq!(st, 200, "{v}");
    // With the token, Host is not checked.
    let (st, _) = body(
        h.req(Method::GET, "/health")
            .header("host", "anything.example")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 200);
    let token = h.token.take();
    for auth in [
        None,
        Some("Bearer wrong".to_owned()),
        Some("Bearer a-long-enough-secret-toke".to_owned()),
        Some("Bearer a-long-enough-secret-token2".to_owned()),
        Some("a-long-enough-secret-token".to_owned()),
        Some("Basic a-long-enough-secret-token".to_owned()),
    ] {
        let before = h.lsn();
        let mut r = h
            .req(Method::POST, "/api/claude/sessions")
            .json(&serde_json::json!({}));
        if let Some(a) = &auth {
            r = r.header("authorization", a);
        }
        let resp = r.send().await.expect("send");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let (st, v) = body(resp).await;
        assert_eq!(st, 401, "{auth:?}: {v}");
        assert_error(&v);
        assert_eq!(h.lsn(), before);
    }
    h.token = token;
    h.stop().await;
    // The user's token file is never written.
    assert_eq!(
        std::fs::read_to_string(&token_file).expect("read"),
        "a-long-enough-secret-token\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_generates_a_private_token_file() {
    let mut h = Harness::with(|o| o.addr = "0.0.0.0:0".parse().expect("addr")).await;
    let path = h.data_dir().join("server-token");
    assert_eq!(h.server.as_ref().and_then(|s| s.token_path()), Some(&path));
    let meta = std::fs::metadata(&path).expect("token file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = h.token.clone().expect("token");
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let (st, _) = h.get("/api/claude/sessions").await;
    assert_eq!(st, 200);
    h.token = None;
    let (st, _) = h.get("/api/claude/sessions").await;
    assert_eq!(st, 401);
    h.token = Some(token.clone());
    let data = h.data_dir();
    let manager = Arc::clone(&h.manager);
    if let Some(s) = h.server.take() {
        s.shutdown().await.expect("shutdown");
    }
    // A second start reuses the token the service wrote.
    let again = session_engine_server::start(
        Arc::clone(&manager),
        ServeOptions {
            addr: "0.0.0.0:0".parse().expect("addr"),
            ..ServeOptions::default()
        },
    )
    .await
    .expect("restart");
    assert_eq!(std::fs::read_to_string(&path).expect("read").trim(), token);
    again.shutdown().await.expect("shutdown");
    manager.close().expect("close");
    drop(manager);
    drop(h);
    let _ = data;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_file_at_the_token_path_is_refused_and_left_alone() {
    for (i, content) in ["short\n", "not a token the service wrote, though long\n"]
        .iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        let manager =
            Arc::new(SessionManager::open(&data, ManagerOptions::default()).expect("open"));
        let path = data.join("server-token");
        std::fs::write(&path, content).expect("write");
        let r = session_engine_server::start(
            Arc::clone(&manager),
            ServeOptions {
                addr: "0.0.0.0:0".parse().expect("addr"),
                ..ServeOptions::default()
            },
        )
        .await;
        assert!(r.is_err(), "case {i}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), *content);
        manager.close().expect("close");
    }
    // A symbolic link there is refused too, and not followed.
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let manager = Arc::new(SessionManager::open(&data, ManagerOptions::default()).expect("open"));
    let target = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, data.join("server-token")).expect("link");
    let r = session_engine_server::start(
        Arc::clone(&manager),
        ServeOptions {
            addr: "0.0.0.0:0".parse().expect("addr"),
            ..ServeOptions::default()
        },
    )
    .await;
    assert!(r.is_err());
    assert!(!target.exists(), "nothing written through the link");
    manager.close().expect("close");
}
