//! Connection and client limits on a real server on loopback: the header-read timeout
//! (a client sending its headers a byte at a time is cut off) and the per-client rate
//! limit (429 in the envelope with Retry-After; other clients unaffected).

mod common;

use std::time::Duration;

use common::{Harness, assert_error, body};
use reqwest::Method;
use serde_json::json;
use session_engine_server::ratelimit::RateLimit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_its_headers_byte_by_byte_is_cut_off() {
    let h = Harness::with(|o| {
        o.limits.header_read_timeout = Duration::from_secs(1);
        o.limits.rate_limit = None;
    })
    .await;
    let addr = h.server.as_ref().expect("server").local_addr();
    let conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = conn.into_split();
    // A head that never ends: a header line that keeps growing, a byte every 100 ms,
    // for up to 30 s (then the client just holds the connection).
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Slow: ",
        addr.port()
    );
    let writer = tokio::spawn(async move {
        let bytes = head
            .into_bytes()
            .into_iter()
            .chain(std::iter::repeat_n(b'a', 300));
        for b in bytes {
            if wr.write_all(&[b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        false
    });
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut got)).await;
    writer.abort();
    assert!(closed.is_ok(), "the server kept the connection open");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "the incomplete request was answered: {text}"
    );
    // The server still serves others.
    let (st, v) = h.get("/health").await;
    assert_eq!(st, 200, "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_rate_gets_429_with_retry_after_and_others_are_served() {
    let h = Harness::with(|o| {
        // One token per 1,000 s: the bucket does not refill during the test.
        o.limits.rate_limit = Some(RateLimit {
            per_second: 0.001,
            burst: 3,
        });
    })
    .await;
    for _ in 0..3 {
        let (st, v) = h.get("/health").await;
        assert_eq!(st, 200, "{v}");
    }
    // A write past the limit is refused and does nothing.
    let r = h
        .req(Method::POST, "/api/claude/sessions")
        .json(&json!({"name": "too many"}))
        .send()
        .await
        .expect("send");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=1000).contains(&retry), "{retry}");
    let (st, v) = body(r).await;
    assert_eq!(st, 429, "{v}");
    assert_error(&v);
    assert_eq!(v["error_kind"], "rate_limited");
    assert!(v["data"].is_null());
    assert!(h.manager.list_sessions(Default::default()).is_empty());
    // Another client (another loopback address) has its own bucket.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let r = other
        .get(format!("{}/health", h.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    // The first is still refused, and the refusals are in the request metrics.
    let (st, _) = h.get("/health").await;
    assert_eq!(st, 429);
    let metrics = other
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "session_engine_http_requests_total{method=\"GET\",route=\"/health\",status=\"429\"} 1"
        ),
        "{metrics}"
    );
    h.stop().await;
}
