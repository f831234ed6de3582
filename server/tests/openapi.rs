//! `/openapi.json` against the routes actually served: every route the router serves,
//! with every method it answers, is in the document, and every documented path and
//! method is served.

mod common;

use std::collections::BTreeSet;

use common::Harness;
use reqwest::Method;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// A concrete path for a pattern: each `{param}` replaced by a sample value.
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| if seg.starts_with('{') { "probe" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the server routes `method pattern` to a handler: anything but 405 (a path
/// it serves, another method) or the fallback's 404 (no such path).
async fn served(h: &Harness, method: &str, pattern: &str) -> bool {
    let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let r = h
        .req(m, &concrete(pattern))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    // Only a 404's body is read: a stream (`/api/events`) does not end.
    match r.status().as_u16() {
        405 => false,
        404 => !r
            .text()
            .await
            .unwrap_or_default()
            .contains("no such endpoint"),
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_routes_served() {
    let h = Harness::with(|o| o.limits.rate_limit = None).await;
    let (st, doc) = h.get("/openapi.json").await;
    assert_eq!(st, 200, "{doc}");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(p, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), p.clone()))
        })
        .collect();
    // Each documented operation says what it answers.
    for (p, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{m} {p} documents no response"
                );
            }
        }
    }

    let patterns = session_engine_server::route_patterns(h.manager.clone());
    assert!(
        patterns.iter().any(|p| p == "/health") && patterns.len() >= 20,
        "the router's routes could not be read: {patterns:?}"
    );
    let mut served_ops = BTreeSet::new();
    for p in &patterns {
        for m in METHODS {
            if served(&h, m, p).await {
                served_ops.insert((m.to_string(), p.clone()));
            }
        }
    }
    let undocumented: Vec<_> = served_ops.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served_ops).collect();
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    // The fallback answers an unknown path, and it is no route of the document.
    assert!(!served(&h, "get", "/api/claude/nope").await);
    assert!(!paths.contains_key("/api/claude/nope"));
    h.stop().await;
}
