//! `/ws/sessions` with a real WebSocket client (tokio-tungstenite): catch-up, the
//! caught-up marker and live; resume by LSN many times while writes go on (no gap, no
//! duplicate); a slow reader; bad queries refused before the upgrade; the guard;
//! pings; shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Harness;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn url(h: &Harness, query: &str) -> String {
    format!(
        "{}/ws/sessions{query}",
        h.base.replacen("http://", "ws://", 1)
    )
}

async fn connect(h: &Harness, query: &str) -> Socket {
    let mut req = url(h, query).into_client_request().expect("request");
    if let Some(t) = &h.token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    let (socket, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    socket
}

/// The upgrade refused: its status and JSON body.
async fn refused(req: tungstenite::handshake::client::Request) -> (u16, Value) {
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            let v = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
            (resp.status().as_u16(), v)
        }
        Err(e) => panic!("not an HTTP refusal: {e}"),
    }
}

/// The next JSON text message (pings skipped); `None` when the socket closed.
async fn next(s: &mut Socket) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .expect("a message within 20 s")?;
        match m.expect("read") {
            Message::Text(t) => return Some(serde_json::from_str(t.as_str()).expect("JSON")),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

fn lsn(v: &Value) -> u64 {
    v["lsn"].as_u64().unwrap_or_else(|| panic!("no lsn: {v}"))
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
    let mut s = connect(&h, "?from=1").await;
    let mut seen = Vec::new();
    loop {
        let m = next(&mut s).await.expect("message");
        if m["type"] == "caught-up" {
            assert_eq!(lsn(&m), head, "{m}");
            break;
        }
        assert!(m["event"]["body"].is_object(), "{m}");
        seen.push(lsn(&m));
    }
    assert_eq!(seen, (1..=head).collect::<Vec<_>>());
    h.post(
        &format!("/api/claude/sessions/{b}/activities"),
        json!({"action": "live"}),
    )
    .await;
    let m = next(&mut s).await.expect("live");
    assert_eq!(lsn(&m), head + 1);
    assert_eq!(m["type"], "activity_recorded", "{m}");
    assert_eq!(m["sessions"], json!([b]));
    assert_eq!(m["event"]["body"]["ActivityRecorded"]["action"], "live");
    let (_, st) = h.get("/api/system-status").await;
    assert_eq!(st["data"]["open_streams"], 1, "{st}");

    // The session filter: only b's events, and still the marker.
    let mut s = connect(&h, &format!("?from=1&session={b}")).await;
    let mut ids = Vec::new();
    loop {
        let m = next(&mut s).await.expect("message");
        if m["type"] == "caught-up" {
            assert_eq!(lsn(&m), head + 1);
            break;
        }
        ids.push(lsn(&m));
    }
    assert_eq!(ids, vec![2, head + 1], "b's creation and its activity");
    // No `from`: live only, the marker first.
    let mut s = connect(&h, "").await;
    let m = next(&mut s).await.expect("marker");
    assert_eq!(m["type"], "caught-up");
    assert_eq!(lsn(&m), h.lsn());
    h.stop().await;
}

/// A client dropped and reconnected with `from` = its last LSN + 1, forty times while
/// writes go on, receives every event once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_clients_see_no_gap_and_no_duplicate() {
    let h = Arc::new(Harness::with(|o| o.limits.stream_queue = 4).await);
    let id = h.create("busy").await;
    let (stop, writer) = common::spawn_writer(&h, &id);
    let mut got: Vec<u64> = Vec::new();
    let mut last: u64 = 0;
    for round in 0..40u64 {
        let mut s = connect(&h, &format!("?from={}", last + 1)).await;
        for _ in 0..(3 + round % 7) {
            let m = next(&mut s).await.expect("message");
            if round % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if m["type"] != "caught-up" {
                got.push(lsn(&m));
            }
            last = lsn(&m);
        }
        if round % 2 == 0 {
            // A clean close half the time, a dropped connection the other half.
            let _ = s.close(None).await;
        }
        drop(s);
    }
    stop.store(true, Ordering::SeqCst);
    assert!(writer.await.expect("writer") > 0);
    let head = h.lsn();
    let mut s = connect(&h, &format!("?from={}", last + 1)).await;
    while last < head {
        let m = next(&mut s).await.expect("message");
        if m["type"] != "caught-up" {
            got.push(lsn(&m));
        }
        last = lsn(&m);
    }
    assert_eq!(
        got,
        (1..=head).collect::<Vec<_>>(),
        "every LSN once, in order"
    );
    drop(s);
    let h = Arc::try_unwrap(h).ok().expect("one owner");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_falls_back_to_the_log_and_misses_nothing() {
    // The reader stalls on purpose while thousands of writes go on (however long they
    // take on a loaded machine): it is not to be taken for dead meanwhile.
    let h = Harness::with(|o| {
        o.limits.stream_queue = 2;
        o.limits.ws_dead_timeout = Duration::from_secs(3600);
    })
    .await;
    let id = h.create("s").await;
    // A small receive buffer (which also turns off its autotuning), so that the socket
    // holds a few kilobytes, not megabytes: the server's sends stall, its queue fills and
    // the subscription behind it is cut loose by the writer.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr = h.server.as_ref().expect("server").local_addr();
    let tcp = socket.connect(addr).await.expect("connect");
    let req = url(&h, "").into_client_request().expect("request");
    let (mut s, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .expect("upgrade");
    assert_eq!(next(&mut s).await.expect("marker")["type"], "caught-up");
    let start = h.lsn();
    // While the client reads nothing: the server's send buffer still absorbs about 2 MB
    // on loopback (some 900 of these events), so 3,000 leave about 2,000 batches for the
    // engine's live buffer of 1,024: the subscription is cut loose (checked with a
    // probe in the writer; 1,500 were not enough).
    let session = h.manager.get_session(&id).expect("session");
    let pad = "p".repeat(2048);
    for i in 0..3000 {
        session
            .record_activity(&format!("a{i}"), Some(json!({ "pad": pad })))
            .expect("activity");
    }
    let head = h.lsn();
    for want in start + 1..=head {
        let m = next(&mut s).await.expect("message");
        assert_eq!(lsn(&m), want);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_the_upgrade_with_a_clear_error() {
    let h = Harness::start().await;
    let before = h.lsn();
    for (query, needle) in [
        ("?from=abc", "from"),
        ("?from=-1", "from"),
        ("?frm=1", "frm"),
        ("?session=..%2Fetc", "id"),
        ("?from=999999", "past the end of the log"),
    ] {
        let req = url(&h, query).into_client_request().expect("request");
        let (st, v) = refused(req).await;
        assert_eq!(st, 400, "{query}: {v}");
        common::assert_error(&v);
        assert!(
            v["error"].as_str().expect("error").contains(needle),
            "{query}: {v}"
        );
    }
    // The same rule for the SSE stream, whose Last-Event-ID may name it too.
    let r = h
        .req(reqwest::Method::GET, "/api/events")
        .header("last-event-id", "999999")
        .send()
        .await
        .expect("send");
    let (st, v) = common::body(r).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"].as_str().expect("error").contains("past the end"),
        "{v}"
    );
    // A plain GET, no upgrade.
    let (st, v) = h.get("/ws/sessions").await;
    assert!(st == 400 || st == 426, "{st} {v}");
    common::assert_error(&v);
    assert_eq!(v["error_kind"], "websocket_required", "{v}");
    // No stream was left open and nothing was written.
    let (_, status) = h.get("/api/system-status").await;
    assert_eq!(status["data"]["open_streams"], 0, "{status}");
    assert_eq!(h.lsn(), before);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_applies_to_the_upgrade() {
    let h = Harness::start().await;
    let mut req = url(&h, "").into_client_request().expect("request");
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().expect("origin"));
    let (st, v) = refused(req).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["error_kind"], "forbidden_origin");
    let mut req = url(&h, "").into_client_request().expect("request");
    req.headers_mut()
        .insert("host", "attacker.example:80".parse().expect("host"));
    assert_eq!(refused(req).await.0, 403);
    // The page's own origin is accepted.
    let mut req = url(&h, "").into_client_request().expect("request");
    let origin = h.base.clone();
    req.headers_mut()
        .insert("origin", origin.parse().expect("origin"));
    let (mut s, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("same origin");
    assert_eq!(next(&mut s).await.expect("marker")["type"], "caught-up");
    h.stop().await;

    // With a token: refused without it, accepted with it.
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a-long-enough-secret-token\n").expect("write");
    let h = Harness::with(move |o| o.token_file = Some(token_file)).await;
    let req = url(&h, "").into_client_request().expect("request");
    let (st, v) = refused(req).await;
    assert_eq!(st, 401, "{v}");
    let mut s = connect(&h, "").await;
    assert_eq!(next(&mut s).await.expect("marker")["type"], "caught-up");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_client_messages_the_stream_cap_and_shutdown() {
    let h = Harness::with(|o| {
        o.limits.keep_alive = Duration::from_millis(50);
        o.limits.max_streams = 1;
    })
    .await;
    let mut s = connect(&h, "").await;
    assert_eq!(next(&mut s).await.expect("marker")["type"], "caught-up");
    // The server's keep-alive pings.
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .expect("a ping")
            .expect("open")
            .expect("read");
        if matches!(m, Message::Ping(_)) {
            break;
        }
    }
    s.send(Message::text(r#"{"type": "ping"}"#))
        .await
        .expect("send");
    assert_eq!(next(&mut s).await.expect("pong"), json!({"type": "pong"}));
    s.send(Message::text("hello")).await.expect("send");
    let m = next(&mut s).await.expect("error");
    assert_eq!(m["type"], "error", "{m}");
    // Still open: a live event arrives.
    h.create("after").await;
    let m = next(&mut s).await.expect("event");
    assert_eq!(m["type"], "session_created", "{m}");
    // The cap counts WebSockets too.
    let (st, v) = refused(url(&h, "").into_client_request().expect("request")).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error_kind"], "too_many_streams");
    // Shutdown closes the socket with 1001 and returns.
    let mut h = h;
    let server = h.server.take().expect("server");
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown finishes with a socket open")
        .expect("shutdown");
    let close = loop {
        match s.next().await {
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001), "going away");
    h.manager.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_is_closed_and_one_that_answers_stays() {
    let h = Harness::with(|o| {
        o.limits.keep_alive = Duration::from_millis(200);
        o.limits.ws_dead_timeout = Duration::from_secs(3);
    })
    .await;
    let streams = "session_engine_open_streams";
    // The dead one: reads the marker, then never polls its socket again, so it answers
    // no ping.
    let mut dead = connect(&h, "").await;
    assert_eq!(next(&mut dead).await.expect("marker")["type"], "caught-up");
    // The live one reads all along (tungstenite answers pings as it reads).
    let mut live = connect(&h, "").await;
    assert_eq!(next(&mut live).await.expect("marker")["type"], "caught-up");
    let reader = tokio::spawn(async move {
        let mut pings = 0u32;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(120), live.next())
                .await
                .expect("a message")
                .expect("open")
                .expect("read");
            match m {
                Message::Ping(_) => pings += 1,
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                    if v["type"] == "session_created" {
                        return (pings, live);
                    }
                }
                Message::Close(f) => panic!("the answering client was closed: {f:?}"),
                _ => {}
            }
        }
    });
    assert_eq!(h.metric(streams).await, 2.0);
    // The server gives up on the dead one: its place among the streams is freed.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while h.metric(streams).await != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The live one is still served.
    h.create("after").await;
    let (pings, live) = reader.await.expect("reader");
    assert!(pings > 0, "the live client saw no ping");
    // The dead one, read at last: its socket ends (with the close frame, 1008, unless
    // answering a queued ping already found the connection gone).
    loop {
        match tokio::time::timeout(Duration::from_secs(20), dead.next())
            .await
            .expect("the end of the socket")
        {
            Some(Ok(Message::Close(f))) => {
                assert_eq!(f.map(|f| u16::from(f.code)), Some(1008), "policy");
                break;
            }
            Some(Ok(Message::Text(t))) => panic!("a message after the close: {t}"),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
    drop(live);
    h.stop().await;
}
