//! `/api/events`: catch-up, the caught-up marker, live, resume by Last-Event-ID with no
//! gap and no duplicate, slow clients, the session filter, shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Harness;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// Reads SSE events from a response; stops after `max` events (or at the end).
struct Reader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl Reader {
    fn new(r: reqwest::Response) -> Reader {
        Reader {
            stream: r.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    any = true;
                    let (k, v) = line.split_once(':').unwrap_or((line, ""));
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    match k {
                        "id" => ev.id = v.parse().ok(),
                        "event" => ev.event = v.to_owned(),
                        "data" => data.push_str(v),
                        _ => {}
                    }
                }
                if !any {
                    continue;
                }
                ev.data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Some(ev);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.stream.next())
                .await
                .expect("an event within 20 s")?
                .ok()?;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}

async fn open(h: &Harness, query: &str, last: Option<u64>) -> Reader {
    let mut r = h.req(Method::GET, &format!("/api/events{query}"));
    if let Some(l) = last {
        r = r.header("last-event-id", l.to_string());
    }
    let resp = r.send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    Reader::new(resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_then_marker_then_live() {
    let h = Harness::start().await;
    let a = h.create("a").await;
    let b = h.create("b").await;
    h.post(
        &format!("/api/claude/sessions/{a}/activities"),
        json!({"action": "x"}),
    )
    .await;
    let head = h.lsn();
    let mut r = open(&h, "?from=1", None).await;
    let mut seen = Vec::new();
    loop {
        let e = r.next().await.expect("event");
        if e.event == "caught-up" {
            assert_eq!(e.id, Some(head));
            assert_eq!(e.data["lsn"], head);
            break;
        }
        assert_eq!(e.data["lsn"], e.id.expect("id"));
        seen.push(e.id.expect("id"));
    }
    assert_eq!(seen, (1..=head).collect::<Vec<_>>());
    // Live.
    h.post(
        &format!("/api/claude/sessions/{b}/activities"),
        json!({"action": "live"}),
    )
    .await;
    let e = r.next().await.expect("live event");
    assert_eq!(e.id, Some(head + 1));
    assert_eq!(e.event, "activity_recorded", "{e:?}");
    let (_, m) = h.get("/api/system-status").await;
    assert_eq!(m["data"]["open_streams"], 1);

    // The session filter: only b's events, and still the marker.
    let mut r = open(&h, &format!("?from=1&session={b}"), None).await;
    let mut ids = Vec::new();
    loop {
        let e = r.next().await.expect("event");
        if e.event == "caught-up" {
            break;
        }
        assert!(
            e.data["sessions"]
                .as_array()
                .expect("sessions")
                .contains(&json!(b)),
            "{e:?}"
        );
        ids.push(e.id.expect("id"));
    }
    assert_eq!(ids, vec![2, head + 1], "b's creation and its activity");
    // No `from`: live only, the marker first.
    let mut r = open(&h, "", None).await;
    let e = r.next().await.expect("marker");
    assert_eq!(e.event, "caught-up");
    assert_eq!(e.id, Some(h.lsn()));
    h.stop().await;
}

/// A client killed and resumed many times while writes go on receives every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_resumed_clients_see_no_gap_and_no_duplicate() {
    let h = Arc::new(Harness::with(|o| o.limits.stream_queue = 4).await);
    let id = h.create("busy").await;
    let (stop, writer) = common::spawn_writer(&h, &id);
    let mut got: Vec<u64> = Vec::new();
    let mut last: Option<u64> = None;
    for round in 0..40u64 {
        let mut r = match last {
            Some(l) => open(&h, "", Some(l)).await,
            None => open(&h, "?from=1", None).await,
        };
        // Read a few events (some rounds slowly), then drop the connection mid-stream.
        for _ in 0..(3 + round % 7) {
            let e = r.next().await.expect("event");
            if round % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let Some(lsn) = e.id else { continue };
            if e.event != "caught-up" {
                got.push(lsn);
            }
            last = Some(lsn);
        }
        drop(r);
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.await.expect("writer");
    assert!(written > 0);
    // Resume once more and read to the end of what was written.
    let head = h.lsn();
    let mut r = open(&h, "", last).await;
    while last.is_none_or(|l| l < head) {
        let e = r.next().await.expect("event");
        if e.event != "caught-up" {
            got.push(e.id.expect("id"));
        }
        last = e.id;
    }
    assert_eq!(
        got,
        (1..=head).collect::<Vec<_>>(),
        "every LSN once, in order"
    );
    drop(r);
    let h = Arc::try_unwrap(h).ok().expect("one owner");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_falls_back_to_the_log_and_misses_nothing() {
    let h = Harness::with(|o| o.limits.stream_queue = 2).await;
    let id = h.create("s").await;
    let mut r = open(&h, "", None).await;
    assert_eq!(r.next().await.expect("marker").event, "caught-up");
    let fallbacks = "session_engine_stream_log_fallbacks_total";
    assert_eq!(h.metric(fallbacks).await, 0.0);
    let start = h.lsn();
    // Far more events than the queue, the engine's live buffer of 1,024 batches
    // included, while the client reads nothing; 8 KiB each, so that the sockets' buffers
    // (a few MiB on loopback) fill first and the stream really waits for its client.
    let session = h.manager.get_session(&id).expect("session");
    let pad = "x".repeat(8 << 10);
    for i in 0..3000 {
        session
            .record_activity(&format!("a{i}"), Some(json!({ "pad": pad })))
            .expect("activity");
    }
    let head = h.lsn();
    let mut next = start + 1;
    while next <= head {
        let e = r.next().await.expect("event");
        assert_eq!(e.id, Some(next), "{e:?}");
        next += 1;
    }
    // The stream was cut loose from the live feed and read the rest from the log.
    assert!(h.metric(fallbacks).await >= 1.0, "no fallback was counted");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_returns() {
    let h = Harness::start().await;
    let mut r = open(&h, "", None).await;
    assert_eq!(r.next().await.expect("marker").event, "caught-up");
    let mut h = h;
    let server = h.server.take().expect("server");
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown finishes with a stream open")
        .expect("shutdown");
    assert!(r.next().await.is_none(), "the stream ended");
    h.manager.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_cap_are_refused_until_one_closes() {
    let h = Harness::with(|o| o.limits.max_streams = 2).await;
    let mut a = open(&h, "", None).await;
    let _b = open(&h, "", None).await;
    assert_eq!(a.next().await.expect("marker").event, "caught-up");
    let (st, v) = h.get("/api/events").await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error_kind"], "too_many_streams");
    // Ordinary requests still work.
    let (st, _) = h.get("/api/claude/sessions").await;
    assert_eq!(st, 200);
    drop(a);
    let mut ok = false;
    for _ in 0..100 {
        let r = h
            .req(Method::GET, "/api/events")
            .send()
            .await
            .expect("send");
        if r.status().as_u16() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a closed stream frees its place");
    h.stop().await;
}

/// A request whose body is still arriving when shutdown starts is answered (and
/// committed) before the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_a_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h = Harness::start().await;
    let addr = h.server.as_ref().expect("server").local_addr();
    let body = br#"{"id": "in-flight", "name": "late"}"#;
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/claude/sessions HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        addr.port(),
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(&body[..10]).await.expect("part");
    conn.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = h.server.take().expect("server");
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "shutdown waits for the request");
    conn.write_all(&body[10..]).await.expect("rest");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n")
            && String::from_utf8_lossy(&answer).contains("\"success\"")
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    drop(conn);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown ends")
        .expect("join")
        .expect("shutdown");
    assert!(h.manager.get_session("in-flight").is_ok(), "committed");
    h.manager.close().expect("close");
}
