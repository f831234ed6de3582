//! `/api/events` with a reader that really stalls: a raw HTTP/1.1 client on a socket
//! whose receive buffer is 4 KiB (which also turns off its autotuning), so the server's
//! writes block, the stream's bounded queue fills and the engine's writer cuts the
//! subscription loose; it must catch up from the log with no gap and no duplicate.
//! (With default buffers, loopback TCP absorbs megabytes and the fallback never runs.)

mod common;

use std::time::Duration;

use common::Harness;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads an SSE response over HTTP/1.1 chunked encoding, yielding the `id`s of events.
struct RawSse {
    tcp: tokio::net::TcpStream,
    raw: Vec<u8>,
    text: String,
    ids: std::collections::VecDeque<(u64, String)>,
}

impl RawSse {
    async fn open(h: &Harness, path: &str) -> RawSse {
        let addr = h.server.as_ref().expect("server").local_addr();
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut tcp = socket.connect(addr).await.expect("connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n\r\n",
            addr.port()
        );
        tcp.write_all(req.as_bytes()).await.expect("request");
        let mut r = RawSse {
            tcp,
            raw: Vec::new(),
            text: String::new(),
            ids: Default::default(),
        };
        let end = loop {
            if let Some(i) = r.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            r.fill().await;
        };
        let head = String::from_utf8_lossy(&r.raw[..end]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        r.raw.drain(..end + 4);
        r
    }

    async fn fill(&mut self) {
        let mut buf = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(20), self.tcp.read(&mut buf))
            .await
            .expect("data within 20 s")
            .expect("read");
        assert!(n > 0, "the stream ended");
        self.raw.extend_from_slice(&buf[..n]);
    }

    /// The next event: its id and its SSE event name.
    async fn next(&mut self) -> (u64, String) {
        loop {
            if let Some(e) = self.ids.pop_front() {
                return e;
            }
            // Whole chunks into `text`.
            while let Some(line) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size = std::str::from_utf8(&self.raw[..line])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .expect("a chunk size");
                if self.raw.len() < line + 2 + size + 2 {
                    break;
                }
                let data = self.raw[line + 2..line + 2 + size].to_vec();
                self.raw.drain(..line + 2 + size + 2);
                self.text
                    .push_str(std::str::from_utf8(&data).expect("utf-8"));
            }
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut id = None;
                let mut name = String::from("message");
                for l in block.lines() {
                    if let Some(v) = l.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = l.strip_prefix("event: ") {
                        name = v.to_owned();
                    }
                }
                if let Some(id) = id {
                    self.ids.push_back((id, name));
                }
            }
            if self.ids.is_empty() {
                self.fill().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sse_reader_falls_back_to_the_log_and_misses_nothing() {
    let h = Harness::with(|o| o.limits.stream_queue = 2).await;
    let id = h.create("s").await;
    let mut r = RawSse::open(&h, "/api/events").await;
    let (marker, name) = r.next().await;
    assert_eq!(name, "caught-up");
    assert_eq!(marker, h.lsn());
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
        let (got, name) = r.next().await;
        assert_eq!(got, want);
        assert_eq!(name, "activity_recorded");
    }
    h.stop().await;
}
