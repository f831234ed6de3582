//! Supervised runs over HTTP through a real client on loopback: start (a program and its
//! arguments, loopback only), list by status, get, output by byte range, cancel; bad
//! input answered with its status and nothing recorded.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, assert_error};
use serde_json::{Value, json};

fn runs_url(id: &str) -> String {
    format!("/api/claude/sessions/{id}/runs")
}

async fn start(h: &Harness, id: &str, body: Value) -> u64 {
    let (st, v) = h.post(&runs_url(id), body).await;
    assert_eq!(st, 202, "{v}");
    v["data"]["run"]["id"].as_u64().expect("run id")
}

/// Polls the run until `done` says so (each answer is a real GET; no timing asserted,
/// a generous bound only so a broken supervisor fails the test instead of hanging it).
async fn wait_for(h: &Harness, id: &str, run: u64, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, v) = h.get(&format!("{}/{run}", runs_url(id))).await;
        assert_eq!(st, 200, "{v}");
        if done(&v["data"]["run"]) {
            return v["data"]["run"].clone();
        }
        assert!(Instant::now() < until, "run {run} never got there: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn final_status(r: &Value) -> bool {
    !["pending", "running", "recovering"].contains(&r["status"].as_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_over_http_is_listed_read_and_its_output_served_by_range() {
    let h = Harness::start().await;
    let id = h.create("runs").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = std::fs::canonicalize(dir.path()).expect("canonical");
    let run = start(
        &h,
        &id,
        json!({ "program": "printf", "args": ["hello-%s", "world"], "cwd": dir.path() }),
    )
    .await;
    let r = wait_for(&h, &id, run, final_status).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["program"], "printf");
    assert_eq!(r["args"], json!(["hello-%s", "world"]));
    assert_eq!(r["cwd"], cwd.to_str().expect("utf8"));
    // The same object as the protocol's and the command line's `runs --json`, plus the
    // times only HTTP gives.
    let ro = session_engine::SessionManager::open_read_only(
        h.data_dir(),
        session_engine::Options::default(),
    )
    .expect("read-only open");
    let mine = ro.run(session_engine::run::RunId(run)).expect("the run");
    let Value::Object(mut http) = r.clone() else {
        panic!("{r}")
    };
    for (k, t) in [
        ("requested_at", Some(mine.requested_at)),
        ("started_at", mine.started_at),
        ("ended_at", mine.ended_at),
    ] {
        assert_eq!(http.remove(k), Some(json!(t.map(|t| t.micros()))), "{k}");
    }
    assert_eq!(
        Value::Object(http),
        session_engine::protocol::run_json(&mine),
        "HTTP and the protocol disagree on run {run}"
    );

    let out = format!("{}/{run}/output", runs_url(&id));
    let (st, v) = h.get(&out).await;
    assert_eq!(st, 200, "{v}");
    let d = &v["data"];
    assert_eq!(d["output"], "hello-world", "{v}");
    assert_eq!(d["encoding"], "utf-8");
    assert_eq!(d["total_bytes"], 11);
    assert_eq!(d["next_offset"], 11);
    assert_eq!(d["complete"], true);
    let (_, v) = h.get(&format!("{out}?offset=6&length=3")).await;
    assert_eq!(v["data"]["output"], "wor", "{v}");
    assert_eq!(v["data"]["next_offset"], 9);
    assert_eq!(v["data"]["complete"], false);
    let (_, v) = h.get(&format!("{out}?offset=11")).await;
    assert_eq!(v["data"]["output"], "", "{v}");
    assert_eq!(v["data"]["complete"], true);
    for (q, status) in [
        ("offset=12", 416),
        ("length=0", 400),
        (&format!("length={}", (1 << 20) + 1), 400),
        ("offset=-1", 400),
        ("offset=abc", 400),
        ("from=0", 400),
    ] {
        let (st, v) = h.get(&format!("{out}?{q}")).await;
        assert_eq!(st, status, "{q}: {v}");
        assert_error(&v);
    }

    // Output that is not UTF-8 comes as base64.
    let bin = start(
        &h,
        &id,
        json!({ "program": "printf", "args": ["\\377\\376"], "cwd": dir.path() }),
    )
    .await;
    wait_for(&h, &id, bin, final_status).await;
    let (_, v) = h.get(&format!("{}/{bin}/output", runs_url(&id))).await;
    assert_eq!(v["data"]["encoding"], "base64", "{v}");
    assert_eq!(v["data"]["output"], "//4=");

    // A failing run, and the status filter.
    let fail = start(&h, &id, json!({ "program": "false", "cwd": dir.path() })).await;
    let r = wait_for(&h, &id, fail, final_status).await;
    assert_eq!(r["status"], "failed", "{r}");
    let ids = |v: &Value| -> Vec<u64> {
        v["data"]["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["id"].as_u64().expect("id"))
            .collect()
    };
    let (_, v) = h.get(&runs_url(&id)).await;
    assert_eq!(ids(&v), [run, bin, fail]);
    let (_, v) = h.get(&format!("{}?status=completed", runs_url(&id))).await;
    assert_eq!(ids(&v), [run, bin]);
    let (_, v) = h.get(&format!("{}?status=failed", runs_url(&id))).await;
    assert_eq!(ids(&v), [fail]);
    let (_, v) = h.get(&format!("{}?status=running", runs_url(&id))).await;
    assert_eq!(ids(&v), Vec::<u64>::new());
    let (st, v) = h.get(&format!("{}?status=done", runs_url(&id))).await;
    assert_eq!(st, 400, "{v}");
    let (st, _) = h.get(&format!("{}?state=done", runs_url(&id))).await;
    assert_eq!(st, 400);

    // Another session's runs are not this one's.
    let other = h.create("other").await;
    let (_, v) = h.get(&runs_url(&other)).await;
    assert_eq!(v["data"]["total"], 0);
    for path in [
        format!("{}/{run}", runs_url(&other)),
        format!("{}/{run}/output", runs_url(&other)),
        format!("{}/99", runs_url(&id)),
        "/api/claude/sessions/nope/runs".to_owned(),
    ] {
        let (st, v) = h.get(&path).await;
        assert_eq!(st, 404, "{path}: {v}");
    }
    for path in [
        format!("{}/0", runs_url(&id)),
        format!("{}/x", runs_url(&id)),
    ] {
        let (st, _) = h.get(&path).await;
        assert_eq!(st, 400, "{path}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_running_run_and_a_second_cancel_is_a_conflict() {
    let h = Harness::start().await;
    let id = h.create("cancel").await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The session's working directory is the default cwd.
    let (st, v) = h
        .post(
            &format!("/api/claude/sessions/{id}/navigate"),
            json!({ "path": dir.path() }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let run = start(
        &h,
        &id,
        json!({ "program": "sleep", "args": ["30"], "grace_ms": 500 }),
    )
    .await;
    let r = wait_for(&h, &id, run, |r| r["status"] == "running").await;
    let cwd = std::fs::canonicalize(dir.path()).expect("canonical");
    assert_eq!(r["cwd"], cwd.to_str().expect("utf8"));
    let (_, v) = h.get(&format!("{}?status=running", runs_url(&id))).await;
    assert_eq!(v["data"]["total"], 1, "{v}");
    let (st, v) = h
        .post(&format!("{}/{run}/cancel", runs_url(&id)), json!({}))
        .await;
    // 200 once the end is recorded, 202 if the wait ran out first.
    assert!(st == 200 || st == 202, "{st}: {v}");
    let r = wait_for(&h, &id, run, final_status).await;
    assert_eq!(r["status"], "cancelled", "{r}");
    let (st, v) = h
        .post(&format!("{}/{run}/cancel", runs_url(&id)), json!({}))
        .await;
    assert_eq!(st, 409, "{v}");
    assert_error(&v);
    let (st, _) = h
        .post(&format!("{}/42/cancel", runs_url(&id)), json!({}))
        .await;
    assert_eq!(st, 404);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_records_nothing() {
    let h = Harness::start().await;
    let id = h.create("bad").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_str().expect("utf8").to_owned();
    let before = h.lsn();
    for (body, status) in [
        // No working directory: none given, none navigated to.
        (json!({ "program": "true" }), 400),
        (
            json!({ "program": "no-such-program-h18c", "cwd": base }),
            400,
        ),
        (json!({ "program": "", "cwd": base }), 400),
        (
            json!({ "program": "true", "cwd": format!("{base}/..") }),
            400,
        ),
        (json!({ "program": "true", "cwd": "/etc" }), 400),
        (json!({ "program": "true", "cwd": "relative" }), 400),
        (
            json!({ "program": "true", "cwd": format!("{base}/nope") }),
            400,
        ),
        (
            json!({ "program": "true", "cwd": base, "timeout_ms": 0 }),
            400,
        ),
        (json!({ "program": "true", "cwd": base, "args": "-x" }), 422),
        (json!({ "program": ["sh", "-c"], "cwd": base }), 422),
        (
            json!({ "program": "true", "cwd": base, "shell": true }),
            422,
        ),
        (
            json!({ "program": "true", "cwd": base, "env": {"A": "1"} }),
            422,
        ),
        (json!({ "cwd": base }), 422),
    ] {
        let (st, v) = h.post(&runs_url(&id), body.clone()).await;
        assert_eq!(st, status, "{body}: {v}");
        assert_error(&v);
    }
    let (st, _) = h
        .post(
            "/api/claude/sessions/nope/runs",
            json!({ "program": "true", "cwd": base }),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = h
        .post(
            "/api/claude/sessions/a%2F..%2Fb/runs",
            json!({ "program": "true", "cwd": base }),
        )
        .await;
    assert_eq!(st, 400);
    let (st, v) = common::body(
        h.req(reqwest::Method::POST, &runs_url(&id))
            .header("content-type", "application/json")
            .body("{\"program\": \"true\",")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_error(&v);
    assert_eq!(h.lsn(), before, "a refused start wrote");
    let (_, v) = h.get(&runs_url(&id)).await;
    assert_eq!(v["data"]["total"], 0, "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_a_run_is_refused_off_loopback() {
    let h = Harness::with(|o| o.addr = "0.0.0.0:0".parse().expect("addr")).await;
    assert!(h.token.is_some());
    let id = h.create("remote").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let before = h.lsn();
    let (st, v) = h
        .post(
            &runs_url(&id),
            json!({ "program": "true", "cwd": dir.path() }),
        )
        .await;
    assert_eq!(st, 403, "{v}");
    assert_error(&v);
    assert_eq!(h.lsn(), before);
    // Reading is served.
    let (st, v) = h.get(&runs_url(&id)).await;
    assert_eq!(st, 200, "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_log_replaced_by_a_link_is_never_read_through() {
    let h = Harness::start().await;
    let id = h.create("link").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let run = start(
        &h,
        &id,
        json!({ "program": "printf", "args": ["mine"], "cwd": dir.path() }),
    )
    .await;
    wait_for(&h, &id, run, final_status).await;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "not the engine's").expect("write");
    let log = h.data_dir().join("runs").join(format!("{run}.log"));
    std::fs::remove_file(&log).expect("rm");
    std::os::unix::fs::symlink(&secret, &log).expect("symlink");
    let (st, v) = h.get(&format!("{}/{run}/output", runs_url(&id))).await;
    assert_eq!(st, 500, "{v}");
    assert!(!v.to_string().contains("engine's"), "{v}");
    h.stop().await;
}
