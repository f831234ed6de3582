//! Every endpoint through a real HTTP client against a real server on loopback.

mod common;

use common::{Harness, assert_error, body};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lifecycle_with_the_envelope() {
    let h = Harness::start().await;
    let (st, v) = h
        .post(
            "/api/claude/sessions",
            json!({
                "name": "My Project Session",
                "working_directory": "/tmp/project",
                "description": "Development session",
                "agent": "backend",
                "metadata": {"k": 1}
            }),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["success"], true);
    assert!(v["error"].is_null());
    assert!(v["timestamp"].as_f64().expect("timestamp") > 1.0e9);
    let id = v["data"]["session"]["id"].as_str().expect("id").to_owned();
    assert_eq!(v["data"]["session"]["name"], "My Project Session");
    let second = h.create("other").await;

    // List: filters and pagination.
    let (st, v) = h.get("/api/claude/sessions").await;
    assert_eq!(st, 200);
    assert_eq!(v["data"]["total"], 2);
    let (_, v) = h.get("/api/claude/sessions?agent=backend").await;
    assert_eq!(v["data"]["total"], 1);
    assert_eq!(v["data"]["sessions"][0]["id"], id.as_str());
    let (_, v) = h.get("/api/claude/sessions?name=Project").await;
    assert_eq!(v["data"]["total"], 1);
    let (_, v) = h.get("/api/claude/sessions?limit=1&offset=1").await;
    assert_eq!(v["data"]["total"], 2);
    assert_eq!(v["data"]["sessions"].as_array().expect("page").len(), 1);
    assert_eq!(v["data"]["sessions"][0]["id"], second.as_str());

    // Get, with its ETag.
    let r = h
        .req(Method::GET, &format!("/api/claude/sessions/{id}"))
        .send()
        .await
        .expect("send");
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let (st, v) = body(r).await;
    assert_eq!(st, 200);
    assert_eq!(v["data"]["session"]["working_dir"], "/tmp/project");
    assert_eq!(etag, format!("\"{}\"", v["data"]["version"]));
    let before_update = h.lsn();

    // Update: metadata and status.
    let (st, v) = body(
        h.req(Method::PUT, &format!("/api/claude/sessions/{id}"))
            .json(&json!({"metadata": {"k": null, "env": "dev"}, "status": "paused"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["session"]["status"], "paused");
    let (_, v) = h.get(&format!("/api/claude/sessions/{id}/metadata")).await;
    assert_eq!(
        v["data"],
        json!({"description": "Development session", "env": "dev"})
    );
    let (_, v) = h.get("/api/claude/sessions?status=paused").await;
    assert_eq!(v["data"]["total"], 1);

    // Point in time: before the update, the session was active with "k".
    let (st, v) = h
        .get(&format!("/api/claude/sessions/{id}?at={before_update}"))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["session"]["body"]["status"], "active");
    assert_eq!(v["data"]["session"]["body"]["metadata"]["k"], 1);

    // Status and metrics.
    let (_, v) = h.get(&format!("/api/claude/sessions/{id}/status")).await;
    assert_eq!(v["data"]["status"], "paused");
    let (st, v) = h.get(&format!("/api/claude/sessions/{id}/metrics")).await;
    assert_eq!(st, 200);
    assert_eq!(v["data"]["metadata_count"], 2);

    // Terminate.
    let (st, v) = body(
        h.req(Method::DELETE, &format!("/api/claude/sessions/{id}"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        h.manager
            .get_session(&id)
            .expect("s")
            .status()
            .expect("st")
            .as_str(),
        "ended"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_checkpoints_decisions_commands_chains() {
    let h = Harness::start().await;
    let id = h.create("work").await;
    let p = format!("/api/claude/sessions/{id}");
    let (st, v) = h
        .post(
            &format!("{p}/activities"),
            json!({"action": "edit", "details": {"file": "a.rs"}}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["lsn"], h.lsn());
    let (st, v) = h.get(&format!("{p}/activities")).await;
    assert_eq!(st, 200);
    assert_eq!(v["data"]["total"], 1);
    assert_eq!(v["data"]["items"][0]["action"], "edit");
    assert_eq!(v["data"]["items"][0]["details"], json!({"file": "a.rs"}));
    // The whole session, its activities' details read from the log (state schema 5).
    let (st, v) = h.get(&p).await;
    assert_eq!(st, 200, "{v}");
    let activities = &v["data"]["session"]["body"]["activity_log"];
    assert_eq!(activities[0]["details"], json!({"file": "a.rs"}), "{v}");

    let (st, v) = body(
        h.req(Method::PUT, &format!("{p}/metadata/branch"))
            .json(&json!({"value": "main"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = h
        .post(&format!("{p}/checkpoints"), json!({"label": "before"}))
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["index"], 0);
    h.post(&format!("{p}/activities"), json!({"action": "later"}))
        .await;
    let (st, _) = body(
        h.req(Method::DELETE, &format!("{p}/metadata/branch"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 200);
    let (st, v) = body(
        h.req(Method::DELETE, &format!("{p}/metadata/branch"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 404, "{v}");
    let (_, v) = h.get(&format!("{p}/checkpoints")).await;
    assert_eq!(v["data"][0]["label"], "before");
    let (st, v) = h.post(&format!("{p}/restore"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    let (_, v) = h.get(&format!("{p}/metadata")).await;
    assert_eq!(v["data"]["branch"], "main");
    let (_, v) = h.get(&format!("{p}/activities")).await;
    assert_eq!(v["data"]["total"], 1, "restored to the checkpoint: {v}");

    let (st, _) = h
        .post(
            &format!("{p}/decisions"),
            json!({"what": "use axum", "why": "tokio", "alternatives": "actix"}),
        )
        .await;
    assert_eq!(st, 201);
    let (_, v) = h.get(&format!("{p}/decisions")).await;
    assert_eq!(v["data"]["items"][0]["what"], "use axum");
    let (st, v) = h
        .post(
            &format!("{p}/commands"),
            json!({"command": "cargo test", "success": false, "error": "1 failed", "duration_ms": 12}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (_, v) = h.get(&format!("{p}/commands")).await;
    assert_eq!(v["data"]["items"][0]["success"], false);

    // Clone, export, import.
    let (st, v) = h
        .post(&format!("{p}/clone"), json!({"new_id": "copy-1"}))
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["session"]["id"], "copy-1");
    let (st, v) = h.post(&format!("{p}/export"), json!({})).await;
    assert_eq!(st, 200, "{v}");
    let bundle = v["data"]["bundle"].clone();
    let (st, v) = h.post("/api/claude/sessions/import", bundle).await;
    assert_eq!(st, 201, "{v}");
    assert_ne!(
        v["data"]["session"]["id"],
        id.as_str(),
        "a taken id gets a new one"
    );
    assert_eq!(v["data"]["session"]["decision_count"], 1);

    // Chains.
    let (st, v) = h
        .post(
            "/api/claude/chains/claude-main/links",
            json!({"session_id": "ext-1", "prompt": "hi", "response": "hello"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (_, v) = h.get("/api/claude/chains").await;
    assert_eq!(v["data"]["agents"], json!(["claude-main"]));
    let (_, v) = h.get("/api/claude/chains/claude-main").await;
    assert_eq!(v["data"]["current"], "ext-1");
    let (st, _) = body(
        h.req(Method::DELETE, "/api/claude/chains/claude-main")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 200);
    let (_, v) = h.get("/api/claude/chains/claude-main").await;
    assert!(v["data"]["current"].is_null(), "{v}");

    // System endpoints.
    let (st, v) = h.get("/health").await;
    assert_eq!((st, v["data"]["status"].clone()), (200, json!("healthy")));
    for path in ["/api/system-status", "/api/claude/system-status"] {
        let (st, v) = h.get(path).await;
        assert_eq!(st, 200);
        assert_eq!(v["data"]["last_lsn"], h.lsn());
        assert_eq!(v["data"]["sessions"], 3);
    }
    let (_, v) = h.get("/api/claude/analytics").await;
    assert_eq!(v["data"]["total_sessions"], 3);
    let r = h.req(Method::GET, "/metrics").send().await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("text");
    assert!(
        text.contains(
            "session_engine_http_requests_total{method=\"POST\",route=\"/api/claude/sessions/{id}/activities\",status=\"201\"} 2"
        ),
        "{text}"
    );
    assert!(text.contains("session_engine_commits_total"), "{text}");
    // The two activities' durable writes, timed.
    assert!(
        h.metric("session_engine_write_duration_seconds_count")
            .await
            >= 2.0,
        "{text}"
    );
    assert!(text.contains("session_engine_projection_lag"), "{text}");
    // The engine's writer counters: every record since the open (this test's directory
    // was new), each append timed and sized.
    let records = h.metric("session_engine_engine_records_total").await;
    assert_eq!(records, h.lsn() as f64, "{text}");
    let appends = h.metric("session_engine_engine_appends_total").await;
    assert!(appends >= 1.0 && appends <= records, "{text}");
    assert!(
        h.metric("session_engine_engine_log_syncs_total").await >= 1.0,
        "{text}"
    );
    assert_eq!(
        h.metric("session_engine_engine_append_duration_seconds_count")
            .await,
        appends,
        "{text}"
    );
    assert_eq!(
        h.metric("session_engine_engine_group_commit_size_sum")
            .await,
        records,
        "{text}"
    );
    assert!(
        text.contains("session_engine_engine_open_duration_seconds "),
        "{text}"
    );
    assert!(text.contains("session_engine_open_streams 0"), "{text}");
    let (st, v) = h.get("/nope").await;
    assert_eq!(st, 404);
    assert_error(&v);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let h = Harness::with(|o| o.limits.max_body = 64 * 1024).await;
    let id = h.create("s").await;
    let before = h.lsn();
    let acts = format!("/api/claude/sessions/{id}/activities");
    let raw = |path: &str, body: &'static str| {
        h.req(Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (raw(&acts, "{\"action\": "), 400),
        (raw(&acts, "not json"), 400),
        (raw(&acts, "{\"action\": 5}"), 422),
        (raw(&acts, "{\"action\": \"a\", \"extra\": 1}"), 422),
        (raw(&acts, "{}"), 422),
        (
            raw("/api/claude/sessions", "{\"name\": \"x\", \"agents\": []}"),
            422,
        ),
        (raw("/api/claude/sessions", "{\"id\": \"../../etc\"}"), 400),
        (raw("/api/claude/sessions", "{\"timeout_secs\": -1}"), 422),
        (
            h.req(Method::POST, &acts)
                .header("content-type", "text/plain")
                .body("{\"action\": \"a\"}"),
            415,
        ),
        (
            h.req(Method::POST, &acts)
                .header("content-type", "application/json")
                .body(format!("{{\"action\": \"{}\"}}", "x".repeat(100 * 1024))),
            413,
        ),
        (
            h.req(Method::POST, &acts)
                .header("content-type", "application/json")
                .header("idempotency-key", "big")
                .body(format!("{{\"action\": \"{}\"}}", "x".repeat(100 * 1024))),
            413,
        ),
        (
            raw(
                "/api/claude/sessions/..%2F..%2Fetc%2Fpasswd/activities",
                "{\"action\": \"a\"}",
            ),
            400,
        ),
        (
            raw(
                "/api/claude/sessions/.hidden/activities",
                "{\"action\": \"a\"}",
            ),
            400,
        ),
        (
            raw(
                "/api/claude/sessions/unknown/activities",
                "{\"action\": \"a\"}",
            ),
            404,
        ),
        (
            raw(&format!("/api/claude/sessions/{id}/restore"), "{}"),
            409,
        ),
        (
            raw("/api/claude/sessions/import", "{\"not\": \"a bundle\"}"),
            422,
        ),
        (
            raw(
                &format!("/api/claude/sessions/{id}/clone"),
                "{\"new_id\": \"a/b\"}",
            ),
            400,
        ),
        (
            raw(
                &format!("/api/claude/sessions/{id}/clone"),
                "{\"new_id\": \"".to_owned().leak(),
            ),
            400,
        ),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let (st, v) = body(req.send().await.expect("send")).await;
        assert_eq!(st, want, "case {i}: {v}");
        assert_error(&v);
        assert!(
            !v["error"].as_str().unwrap_or("").contains("/tmp"),
            "no internal path in {v}"
        );
        assert_eq!(h.lsn(), before, "case {i} changed nothing");
    }
    for (path, want) in [
        ("/api/claude/sessions?status=bogus", 400),
        ("/api/claude/sessions?limit=0", 400),
        ("/api/claude/sessions?limit=x", 400),
        ("/api/claude/sessions?unknown=1", 400),
        ("/api/claude/sessions/..%2Fx", 400),
        ("/api/claude/sessions/nope", 404),
        (&format!("/api/claude/sessions/{id}?at=999999") as &str, 400),
        ("/api/events?from=abc", 400),
        ("/api/events?session=..%2Fx", 400),
    ] {
        let (st, v) = h.get(path).await;
        assert_eq!(st, want, "{path}: {v}");
        assert_error(&v);
    }
    // An ended session refuses activity: 409.
    h.manager.get_session(&id).expect("s").end().expect("end");
    let before = h.lsn();
    let (st, v) = h.post(&acts, json!({"action": "a"})).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(h.lsn(), before);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_refuses_a_stale_version() {
    let h = Harness::start().await;
    let id = h.create("s").await;
    let p = format!("/api/claude/sessions/{id}");
    let r = h.req(Method::GET, &p).send().await.expect("send");
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let write = |etag: &str| {
        h.req(Method::POST, &format!("{p}/activities"))
            .header("if-match", etag)
            .json(&json!({"action": "a"}))
    };
    let r = write(&etag).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 201);
    let new_etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    assert_eq!(new_etag, format!("\"{}\"", h.lsn()));
    // Another session's write does not change this one's version.
    h.create("other").await;
    let before = h.lsn();
    let (st, v) = body(write(&etag).send().await.expect("send")).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error_kind"], "version_conflict");
    assert_eq!(h.lsn(), before, "nothing written");
    let (st, v) = body(write(&new_etag).send().await.expect("send")).await;
    assert_eq!(st, 201, "{v}");
    let (st, _) = body(write("garbage").send().await.expect("send")).await;
    assert_eq!(st, 400);
    let (st, _) = body(
        h.req(Method::DELETE, &p)
            .header("if-match", &etag)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 409);
    // Concurrent conditional writes with the same version: exactly one wins.
    let r = h.req(Method::GET, &p).send().await.expect("send");
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let req = write(&etag);
        tasks.push(tokio::spawn(async move {
            req.send().await.expect("send").status().as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.expect("join"));
    }
    codes.sort_unstable();
    assert_eq!(codes, vec![201, 409, 409, 409, 409, 409, 409, 409]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_a_retry_with_the_first_answer() {
    let h = Harness::start().await;
    let send = |key: &str, body: Value| {
        h.req(Method::POST, "/api/claude/sessions")
            .header("idempotency-key", key)
            .json(&body)
    };
    let (st1, v1) = body(
        send("k1", json!({"name": "once"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st1, 201);
    let after = h.lsn();
    let r = send("k1", json!({"name": "once"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let (st2, v2) = body(r).await;
    assert_eq!((st2, &v2), (st1, &v1), "the first answer again");
    assert_eq!(h.lsn(), after, "written once");
    assert_eq!(h.manager.list_sessions(Default::default()).len(), 1);
    let (st, v) = body(
        send("k1", json!({"name": "other"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(h.lsn(), after);
    // A refusal is remembered too (a 4xx is an answer).
    let (st, _) = body(
        send("k2", json!({"id": "bad/id"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = body(
        send("k2", json!({"id": "bad/id"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = body(send("", json!({})).send().await.expect("send")).await;
    assert_eq!(st, 400);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_is_503_in_the_envelope_and_its_retry_runs() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h =
        Harness::with(|o| o.limits.request_timeout = std::time::Duration::from_millis(300)).await;
    let addr = h.server.as_ref().expect("server").local_addr();
    let body = br#"{"name": "slow"}"#;
    // A body that never finishes arriving: the request times out (503) before its key is
    // taken (the body is read first), and its retry runs. (This does not reach the
    // idempotency drop guard; `tests/inflight.rs` drops a request whose handler runs.)
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/claude/sessions HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nIdempotency-Key: k\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        addr.port(),
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(&body[..5]).await.expect("part");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"timeout\""), "{text}");
    drop(conn);
    // The retry runs (it is not "still being answered").
    let (st, v) = body_of(
        h.req(Method::POST, "/api/claude/sessions")
            .header("idempotency-key", "k")
            .json(&json!({"name": "slow"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(h.manager.list_sessions(Default::default()).len(), 1);
    h.stop().await;
}

use common::body as body_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_listings_are_pages_of_the_sessions_history() {
    let h = Harness::start().await;
    let id = h.create("pages").await;
    let p = format!("/api/claude/sessions/{id}");
    for i in 0..5 {
        let (st, v) = h
            .post(
                &format!("{p}/activities"),
                json!({"action": format!("a{i}")}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    let actions = |v: &Value| -> Vec<String> {
        v["data"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|a| a["action"].as_str().expect("action").to_owned())
            .collect()
    };
    let (st, v) = h.get(&format!("{p}/activities?offset=1&limit=2")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(actions(&v), ["a1", "a2"]);
    assert_eq!(
        (
            &v["data"]["total"],
            &v["data"]["offset"],
            &v["data"]["limit"]
        ),
        (&json!(5), &json!(1), &json!(2))
    );
    let item = v["data"]["items"][0].as_object().expect("an object");
    let keys: Vec<&str> = item.keys().map(String::as_str).collect();
    assert_eq!(keys, ["action", "timestamp", "details"]);
    assert!(item["details"].is_null());
    let (_, v) = h.get(&format!("{p}/activities?offset=4&limit=10")).await;
    assert_eq!(actions(&v), ["a4"]);
    let (st, v) = h.get(&format!("{p}/activities?offset=9")).await;
    assert_eq!(st, 200, "an offset past the end is an empty page: {v}");
    assert_eq!(actions(&v), Vec::<String>::new());
    assert_eq!(
        (&v["data"]["total"], &v["data"]["offset"]),
        (&json!(5), &json!(9))
    );
    let (_, v) = h.get(&format!("{p}/activities")).await;
    assert_eq!(actions(&v), ["a0", "a1", "a2", "a3", "a4"]);
    assert_eq!(v["data"]["limit"], 100);
    for bad in ["limit=0", "limit=1001"] {
        let (st, v) = h.get(&format!("{p}/activities?{bad}")).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    let (st, v) = h
        .get("/api/claude/sessions/unknown/activities?limit=0")
        .await;
    assert_eq!(st, 404, "the session is looked up first: {v}");
    for kind in ["decisions", "commands"] {
        let (st, v) = h.get(&format!("{p}/{kind}?offset=3")).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"]["total"], 0);
        assert_eq!(v["data"]["items"], json!([]));
    }
}
