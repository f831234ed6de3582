//! The dashboard at `/` in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `.ci/run`), driven over the DevTools protocol with a small client on
//! tokio-tungstenite. A screenshot of the session list is taken, and an activity, a
//! session and a run recorded after the page loaded appear on it without a reload, as do
//! the events written while its WebSocket was down (each once).
//!
//! Without Chromium the test is skipped, except under `CI=true`, where it fails. The
//! browser is found as `$CHROMIUM`, or `chromium`, `chromium-browser`, `google-chrome`
//! in `PATH`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Harness;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A headless Chromium, killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws_url: String,
}

impl Browser {
    fn launch(program: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose, and the browser's DevTools path, here.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let ws_url = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser {
            child,
            _profile: profile,
            ws_url,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools protocol client attached to one page (flat session mode).
struct Page {
    ws: Socket,
    next_id: u64,
    session: Option<String>,
    /// Exceptions thrown and errors logged by the page.
    problems: Vec<Value>,
}

impl Page {
    async fn open(browser: &Browser) -> Page {
        let (ws, _) = tokio_tungstenite::connect_async(browser.ws_url.as_str())
            .await
            .expect("connect to DevTools");
        let mut page = Page {
            ws,
            next_id: 0,
            session: None,
            problems: Vec::new(),
        };
        let target = page
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        page.session = Some(attached["sessionId"].as_str().expect("session").to_owned());
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await;
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        page
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to DevTools");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("DevTools open")
                .expect("read DevTools");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            match v["method"].as_str() {
                Some("Runtime.exceptionThrown") => self.problems.push(v["params"].clone()),
                Some("Log.entryAdded") if v["params"]["entry"]["level"] == "error" => {
                    self.problems.push(v["params"].clone())
                }
                _ => {}
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true on the page (polled; the deadline only bounds
    /// a failing run).
    async fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        // An expression that throws (the page has not built its elements yet, or a new
        // navigation is still loading) is "not yet", not a failure.
        let guarded = format!(
            "(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        );
        while self.eval(&guarded).await != json!(true) {
            if Instant::now() > deadline {
                let text = self.eval("document.body.innerText").await;
                panic!("the page never showed {what}; it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&mut self, id: &str) -> String {
        let v = self
            .eval(&format!("document.getElementById('{id}').innerText"))
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn screenshot(&mut self, path: &Path) -> Vec<u8> {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("data"))
            .expect("base64");
        std::fs::write(path, &png).expect("write screenshot");
        png
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_sessions_and_live_activity_without_a_reload() {
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no Chromium: .ci/run must install Debian's `chromium`"
        );
        eprintln!("skipped: no chromium in PATH (set CHROMIUM or install Debian's chromium)");
        return;
    };
    let h = Harness::start().await;
    // The page and its script are served with a strict policy.
    let r = h.req(reqwest::Method::GET, "/").send().await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    assert!(r.headers().contains_key("content-security-policy"));
    let alpha = h.create("alpha-session").await;
    let beta = h.create("beta-session").await;
    let (st, v) = h
        .post(
            &format!("/api/claude/sessions/{alpha}/activities"),
            json!({"action": "before-load"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");

    let browser = Browser::launch(&chromium);
    let mut page = Page::open(&browser).await;
    page.call("Page.navigate", json!({ "url": format!("{}/", h.base) }))
        .await;
    page.wait_for(
        "both sessions, a healthy service and a live stream",
        "document.querySelectorAll('#sessions tr').length === 2 \
         && document.getElementById('health').textContent === 'healthy' \
         && document.getElementById('stream').textContent === 'live'",
    )
    .await;
    let list = page.text("sessions").await;
    for want in [
        alpha.as_str(),
        beta.as_str(),
        "alpha-session",
        "beta-session",
        "active",
    ] {
        assert!(list.contains(want), "{want} not in {list}");
    }
    // Marks this page: a reload would lose the mark.
    page.eval("window.__probe = 'same page'; true").await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shot = dir.join("dashboard-sessions.png");
    let png = page.screenshot(&shot).await;
    assert_eq!(png_size(&png), (1280, 900));
    eprintln!("screenshot: {}", shot.display());

    // Select alpha: its activity so far.
    page.eval(&format!(
        "document.querySelector('#sessions tr[data-id=\"{alpha}\"]').click(); true"
    ))
    .await;
    page.wait_for(
        "alpha's activity",
        "document.getElementById('activity').innerText.includes('before-load')",
    )
    .await;

    // Recorded through the API after the page loaded: it appears, live.
    let (st, v) = h
        .post(
            &format!("/api/claude/sessions/{alpha}/activities"),
            json!({"action": "recorded-after-load", "details": {"n": 1}}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let lsn = h.lsn();
    page.wait_for(
        "the new activity in alpha's activity and in the events",
        &format!(
            "document.getElementById('activity').innerText.includes('recorded-after-load') \
             && document.getElementById('events').innerText.includes('{lsn} activity_recorded') \
             && document.getElementById('lsn').textContent === '{lsn}'"
        ),
    )
    .await;
    // The list follows: a new session, and alpha's count.
    h.create("gamma-session").await;
    page.wait_for(
        "the new session in the list",
        &format!(
            "document.querySelectorAll('#sessions tr').length === 3 \
             && document.getElementById('sessions').innerText.includes('gamma-session') \
             && document.querySelector('#sessions tr[data-id=\"{alpha}\"]').children[4].textContent === '2'"
        ),
    )
    .await;
    // A supervised run, its output and its exit, as they happen.
    let m = std::sync::Arc::clone(&h.manager);
    let id = alpha.clone();
    tokio::task::spawn_blocking(move || {
        m.exec(session_engine::ExecRequest::new(
            &id,
            "sh",
            &["-c", "echo run-output-marker"],
        ))
        .expect("exec")
        .wait()
        .expect("run")
    })
    .await
    .expect("join");
    page.wait_for(
        "the run, its output and its exit",
        &format!(
            "document.getElementById('runs').innerText.includes('exited 0') \
             && document.getElementById('runs').innerText.includes('{alpha}') \
             && document.getElementById('run-output').innerText.includes('run-output-marker')"
        ),
    )
    .await;
    // The socket drops while writes go on: the page reconnects from its last LSN and
    // shows every event once.
    page.eval("state.socket.close(); true").await;
    for i in 0..3 {
        let (st, v) = h
            .post(
                &format!("/api/claude/sessions/{alpha}/activities"),
                json!({ "action": format!("while-away-{i}") }),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    let head = h.lsn();
    page.wait_for(
        "the events written while the socket was down",
        &format!(
            "document.getElementById('lsn').textContent === '{head}' \
             && document.getElementById('stream').textContent === 'live' \
             && document.getElementById('activity').innerText.includes('while-away-2') \
             && document.querySelector('#sessions tr[data-id=\"{alpha}\"]').children[4].textContent === '5'"
        ),
    )
    .await;
    let shown = page
        .eval("[...document.querySelectorAll('#events li code:first-child')].map(e => Number(e.textContent))")
        .await;
    let want: Vec<u64> = (1..=head).rev().collect();
    assert_eq!(shown, json!(want), "every event once, newest first");
    let activity = page.text("activity").await;
    for i in 0..3 {
        assert_eq!(
            activity.matches(&format!("while-away-{i}")).count(),
            1,
            "{activity}"
        );
    }
    // No reload happened: the mark is there, and the page was navigated to once.
    assert_eq!(page.eval("window.__probe").await, json!("same page"));
    assert_eq!(
        page.eval("performance.getEntriesByType('navigation').length")
            .await,
        json!(1)
    );
    page.screenshot(&dir.join("dashboard-live.png")).await;
    let problems = std::mem::take(&mut page.problems);
    assert!(
        problems.is_empty(),
        "the page reported errors: {problems:?}"
    );
    drop(page);
    drop(browser);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_dashboard_asks_for_it_once_and_works_live() {
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no Chromium: .ci/run must install Debian's `chromium`"
        );
        eprintln!("skipped: no chromium in PATH (set CHROMIUM or install Debian's chromium)");
        return;
    };
    // A token with characters a WebSocket subprotocol may not hold as such.
    let secret = "a-long/enough+secret=token";
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{secret}\n")).expect("write");
    let h = Harness::with(move |o| o.token_file = Some(token_file)).await;
    assert_eq!(h.token.as_deref(), Some(secret));
    let alpha = h.create("alpha-session").await;
    // Without the token: the page and its script (no data), nothing else.
    let plain = reqwest::Client::new();
    for (path, want) in [
        ("/", 200),
        ("/dashboard.js", 200),
        ("/health", 401),
        ("/api/claude/sessions", 401),
    ] {
        let r = plain
            .get(format!("{}{path}", h.base))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), want, "{path}");
    }
    // The WebSocket takes the token as a subprotocol (base64url), and only the right one.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = format!("{}/ws/sessions", h.base.replacen("http://", "ws://", 1));
    let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    for (offered, want) in [
        (
            format!("session-engine, bearer.{}", b64("wrong-token-000000")),
            401,
        ),
        (format!("session-engine, bearer.{secret}"), 401),
        (format!("session-engine, bearer.{}", b64(secret)), 101),
    ] {
        let mut req = ws_url.as_str().into_client_request().expect("request");
        req.headers_mut()
            .insert("sec-websocket-protocol", offered.parse().expect("header"));
        match tokio_tungstenite::connect_async(req).await {
            Ok((_, resp)) => {
                assert_eq!(want, 101, "{offered}");
                // The server selects its own protocol: the token is not echoed.
                assert_eq!(resp.headers()["sec-websocket-protocol"], "session-engine");
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), want, "{offered}");
            }
            Err(e) => panic!("{offered}: {e}"),
        }
    }

    let browser = Browser::launch(&chromium);
    let mut page = Page::open(&browser).await;
    page.call("Page.navigate", json!({ "url": format!("{}/", h.base) }))
        .await;
    page.wait_for(
        "the token form",
        "document.getElementById('login').hidden === false",
    )
    .await;
    // A wrong token is refused and asked for again.
    page.eval(
        "document.getElementById('token').value = 'not-the-token-at-all'; \
         document.querySelector('#login button').click(); true",
    )
    .await;
    page.wait_for(
        "the refusal",
        "document.getElementById('login').hidden === false \
         && document.getElementById('login-message').textContent === 'the token was refused'",
    )
    .await;
    page.eval(&format!(
        "document.getElementById('token').value = {}; \
         document.querySelector('#login button').click(); true",
        json!(secret)
    ))
    .await;
    page.wait_for(
        "the session, a healthy service and a live stream",
        "document.querySelectorAll('#sessions tr').length === 1 \
         && document.getElementById('health').textContent === 'healthy' \
         && document.getElementById('stream').textContent === 'live' \
         && document.getElementById('login').hidden === true",
    )
    .await;
    assert!(page.text("sessions").await.contains("alpha-session"));
    page.eval(&format!(
        "document.querySelector('#sessions tr[data-id=\"{alpha}\"]').click(); true"
    ))
    .await;
    let (st, v) = h
        .post(
            &format!("/api/claude/sessions/{alpha}/activities"),
            json!({"action": "recorded-with-a-token"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let lsn = h.lsn();
    page.wait_for(
        "the activity, live over the authenticated socket",
        &format!(
            "document.getElementById('activity').innerText.includes('recorded-with-a-token') \
             && document.getElementById('lsn').textContent === '{lsn}'"
        ),
    )
    .await;
    // Asked once; kept for this tab only, and never in the page's URL.
    assert_eq!(
        page.eval("sessionStorage.getItem('session-engine-token')")
            .await,
        json!(secret)
    );
    assert_eq!(page.eval("localStorage.length").await, json!(0));
    let href = page.eval("location.href").await;
    assert_eq!(href, json!(format!("{}/", h.base)));
    page.screenshot(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-token.png"))
        .await;
    // The 401s of the first attempts are logged by the browser as failed loads; nothing
    // else may be.
    let problems: Vec<Value> = std::mem::take(&mut page.problems)
        .into_iter()
        .filter(|p| {
            !p["entry"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("401"))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "the page reported errors: {problems:?}"
    );
    drop(page);
    drop(browser);
    h.stop().await;
}
