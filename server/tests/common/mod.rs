#![allow(dead_code)]
//! A real server on 127.0.0.1, port 0, over a fresh data directory.

use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;
use session_engine::{ManagerOptions, SessionManager};
use session_engine_server::{ServeOptions, Server};

pub struct Harness {
    pub server: Option<Server>,
    pub manager: Arc<SessionManager>,
    pub base: String,
    pub client: Client,
    pub token: Option<String>,
    /// Last, so that a test that does not stop the harness drops the server and the
    /// manager before their data directory is deleted.
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(|_| {}).await
    }

    pub async fn with(f: impl FnOnce(&mut ServeOptions)) -> Harness {
        Harness::with_manager(ManagerOptions::default(), f).await
    }

    pub async fn with_manager(
        manager_options: ManagerOptions,
        f: impl FnOnce(&mut ServeOptions),
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager =
            Arc::new(SessionManager::open(dir.path().join("data"), manager_options).expect("open"));
        let mut options = ServeOptions {
            addr: "127.0.0.1:0".parse().expect("addr"),
            ..ServeOptions::default()
        };
        f(&mut options);
        let server = session_engine_server::start(Arc::clone(&manager), options)
            .await
            .expect("start");
        let base = format!("http://127.0.0.1:{}", server.local_addr().port());
        let token = server
            .token_path()
            .map(|p| std::fs::read_to_string(p).expect("token").trim().to_owned());
        Harness {
            server: Some(server),
            manager,
            base,
            client: Client::new(),
            token,
            dir,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self
            .client
            .request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        body(self.req(Method::GET, path).send().await.expect("send")).await
    }

    pub async fn post(&self, path: &str, json: Value) -> (u16, Value) {
        body(
            self.req(Method::POST, path)
                .json(&json)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    pub async fn create(&self, name: &str) -> String {
        let (st, v) = self
            .post("/api/claude/sessions", serde_json::json!({ "name": name }))
            .await;
        assert_eq!(st, 201, "{v}");
        v["data"]["session"]["id"].as_str().expect("id").to_owned()
    }

    pub fn lsn(&self) -> u64 {
        self.manager.last_lsn().0
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("shutdown");
        }
        self.manager.close().expect("close");
    }
}

pub async fn body(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// Checks the envelope of an error answer.
pub fn assert_error(v: &Value) {
    assert_eq!(v["success"], false, "{v}");
    assert!(v["error"].is_string(), "{v}");
    assert!(v["timestamp"].is_f64(), "{v}");
}

impl Harness {
    /// The value of the unlabelled metric `name` at `/metrics` (panics if absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .req(Method::GET, "/metrics")
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }
}

/// A task recording activities in session `id` through the API, one request after the
/// other, until `stop` is set; it returns how many it wrote. (The writes that go on while
/// the stream tests kill and resume their clients.)
pub fn spawn_writer(
    h: &Arc<Harness>,
    id: &str,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<u64>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let (h, flag, id) = (Arc::clone(h), Arc::clone(&stop), id.to_owned());
    let task = tokio::spawn(async move {
        let mut n = 0u64;
        while !flag.load(Ordering::SeqCst) {
            let (st, v) = h
                .post(
                    &format!("/api/claude/sessions/{id}/activities"),
                    serde_json::json!({ "action": format!("a{n}") }),
                )
                .await;
            assert_eq!(st, 201, "{v}");
            n += 1;
        }
        n
    });
    (stop, task)
}
