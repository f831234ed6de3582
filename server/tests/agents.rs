//! Seed 002's agents per session through a real client on loopback: list, activate,
//! deactivate, restart (each an event), If-Match and Idempotency-Key, and bad input of
//! every kind answered with its status and nothing written.

mod common;

use common::{Harness, assert_error, body};
use reqwest::Method;
use serde_json::{Value, json};

fn agent<'a>(list: &'a Value, t: &str) -> &'a Value {
    list["data"]["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["agent_type"] == t)
        .expect("type listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_listed_activated_restarted_and_deactivated_each_an_event() {
    let h = Harness::start().await;
    let id = h.create("agents").await;
    let base = format!("/api/claude/sessions/{id}/agents");
    let (st, v) = h.get(&base).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["count"], 12);
    assert_eq!(v["data"]["active"], 0);
    assert_eq!(agent(&v, "BACKEND")["status"], "inactive");

    let before = h.lsn();
    let (st, v) = h
        .post(
            &format!("{base}/backend/activate"),
            json!({ "config": { "max_memory_mb": 512 } }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["agent_type"], "BACKEND");
    assert_eq!(v["data"]["action"], "activated");
    assert_eq!(v["data"]["lsn"], before + 1);
    let r = h
        .req(Method::POST, &format!("{base}/BACKEND/restart"))
        .send()
        .await
        .expect("send");
    let (st, v) = body(r).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["action"], "restarted");
    let (st, v) = h.get(&base).await;
    assert_eq!(st, 200);
    let b = agent(&v, "BACKEND");
    assert_eq!(b["status"], "active", "{v}");
    assert_eq!(b["activations"], 1);
    assert_eq!(b["restarts"], 1);
    assert_eq!(b["config"], json!({ "max_memory_mb": 512 }));
    assert_eq!(v["data"]["active"], 1);
    let (st, v) = h
        .post(&format!("{base}/Backend/deactivate"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(h.lsn(), before + 3, "three events");
    let (_, v) = h.get(&base).await;
    assert_eq!(agent(&v, "BACKEND")["status"], "inactive");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_and_idempotency_keys_apply_to_agent_changes() {
    let h = Harness::start().await;
    let id = h.create("agents").await;
    let url = format!("/api/claude/sessions/{id}/agents/security/activate");
    let before = h.lsn();
    let r = h
        .req(Method::POST, &url)
        .header("if-match", "\"999999\"")
        .send()
        .await
        .expect("send");
    let (st, v) = body(r).await;
    assert_eq!(st, 409, "{v}");
    assert_error(&v);
    assert_eq!(h.lsn(), before, "a conflict writes nothing");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = h
            .req(Method::POST, &url)
            .header("idempotency-key", "agent-1")
            .send()
            .await
            .expect("send");
        answers.push(body(r).await);
    }
    assert_eq!(answers[0].0, 200, "{:?}", answers[0]);
    assert_eq!(answers[0], answers[1], "the retry gets the first answer");
    assert_eq!(h.lsn(), before + 1, "written once");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_agent_requests_get_their_status_and_write_nothing() {
    let h = Harness::start().await;
    let id = h.create("agents").await;
    let base = format!("/api/claude/sessions/{id}/agents");
    let (st, _) = h.post(&format!("{base}/api/activate"), json!({})).await;
    assert_eq!(st, 200);
    let before = h.lsn();
    let raw = |path: String, body: &'static str| {
        h.req(Method::POST, &path)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        // Unknown agent type, unknown session, bad id.
        (raw(format!("{base}/wizard/activate"), ""), 404),
        (raw(format!("{base}/backend-services/activate"), ""), 404),
        (
            raw("/api/claude/sessions/nope/agents/api/restart".into(), ""),
            404,
        ),
        (
            raw("/api/claude/sessions/..%2Fx/agents/api/restart".into(), ""),
            400,
        ),
        // Wrong state: active already, not active.
        (raw(format!("{base}/api/activate"), ""), 409),
        (raw(format!("{base}/frontend/deactivate"), ""), 409),
        (raw(format!("{base}/frontend/restart"), ""), 409),
        // Malformed JSON, wrong types, unknown fields, a config on a deactivation.
        (raw(format!("{base}/frontend/activate"), "{"), 400),
        (
            raw(
                format!("{base}/frontend/activate"),
                r#"{"config": 5, "x": 1}"#,
            ),
            422,
        ),
        (
            raw(format!("{base}/frontend/activate"), r#"{"agent": "x"}"#),
            422,
        ),
        (raw(format!("{base}/frontend/activate"), r#"[1]"#), 422),
        (
            raw(format!("{base}/api/deactivate"), r#"{"config": {}}"#),
            422,
        ),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let (st, v) = body(req.send().await.expect("send")).await;
        assert_eq!(st, want, "case {i}: {v}");
        assert_error(&v);
    }
    assert_eq!(h.lsn(), before, "nothing was written");
    // An ended session takes no agent change.
    let (st, v) = h
        .req(Method::DELETE, &format!("/api/claude/sessions/{id}"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("send");
    assert!(st == 200 || st == 204, "{v:?}");
    let before = h.lsn();
    let (st, v) = h.post(&format!("{base}/api/restart"), json!({})).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(h.lsn(), before);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_over_http_carries_the_active_agents_of_its_source() {
    let h = Harness::start().await;
    let id = h.create("source").await;
    let base = format!("/api/claude/sessions/{id}/agents");
    for (t, body) in [
        ("devops", json!({ "config": { "retry_attempts": 3 } })),
        ("monitoring", json!({})),
        ("quality", json!({})),
    ] {
        let (st, v) = h.post(&format!("{base}/{t}/activate"), body).await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = h
        .post(&format!("{base}/quality/deactivate"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    let before = h.lsn();
    let (st, v) = h
        .post(
            &format!("/api/claude/sessions/{id}/clone"),
            json!({ "new_id": "copy" }),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["data"]["session"]["id"], "copy");
    // The clone's event and one activation per active agent.
    assert_eq!(h.lsn(), before + 3);
    let (st, v) = h.get("/api/claude/sessions/copy/agents").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["active"], 2, "{v}");
    let d = agent(&v, "DEVOPS");
    assert_eq!(d["status"], "active");
    assert_eq!(d["activations"], 1);
    assert_eq!(d["config"], json!({ "retry_attempts": 3 }));
    assert_eq!(agent(&v, "MONITORING")["status"], "active");
    assert_eq!(agent(&v, "QUALITY")["status"], "inactive");
    // The source keeps its own.
    let (_, v) = h.get(&base).await;
    assert_eq!(v["data"]["active"], 2, "{v}");
    assert_eq!(agent(&v, "QUALITY")["activations"], 1);
    h.stop().await;
}
