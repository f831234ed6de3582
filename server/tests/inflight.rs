//! A keyed write whose body arrived in full and whose handler is still running when the
//! request is dropped (here by the request timeout, while the disk holds the log's
//! fsync): its `Idempotency-Key` is released, so the retry runs instead of being told
//! forever that the first request is still being answered.

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{Harness, body};
use reqwest::Method;
use serde_json::json;
use session_engine::storage::{Bytes, FileKind, FileStat, LockGuard, OpenMode, StorageFile};
use session_engine::{FileStorage, ManagerOptions, Options, Storage};

/// A disk whose log fsyncs wait while the gate is shut (a slow disk, held by the test).
#[derive(Debug, Default)]
struct Gate {
    shut: Mutex<bool>,
    opened: Condvar,
    /// A log fsync is waiting at the shut gate.
    reached: AtomicBool,
}

impl Gate {
    fn set(&self, shut: bool) {
        *self.shut.lock().expect("gate") = shut;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut shut = self.shut.lock().expect("gate");
        while *shut {
            self.reached.store(true, Ordering::SeqCst);
            shut = self.opened.wait(shut).expect("gate");
        }
    }
}

#[derive(Debug)]
struct GatedStorage {
    inner: FileStorage,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn StorageFile>,
    gate: Option<Arc<Gate>>,
}

impl StorageFile for GatedFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(offset, buf)
    }
    fn len(&mut self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        if let Some(g) = &self.gate {
            g.pass();
        }
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        if let Some(g) = &self.gate {
            g.pass();
        }
        self.inner.sync_all()
    }
}

impl Storage for GatedStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        self.inner.kind(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let is_log = path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "wal");
        Ok(Box::new(GatedFile {
            inner: self.inner.open(path, mode)?,
            gate: is_log.then(|| Arc::clone(&self.gate)),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Bytes> {
        self.inner.read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename_noreplace(from, to)
    }
    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        self.inner.stat(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_fs(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.inner.try_lock(path)
    }
    fn is_locked(&self, path: &Path) -> io::Result<bool> {
        self.inner.is_locked(path)
    }
    fn drop_cached(&self, path: &Path, range: std::ops::Range<u64>) -> io::Result<()> {
        self.inner.drop_cached(path, range)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_while_its_handler_runs_releases_its_key() {
    let gate = Arc::new(Gate::default());
    let storage = Arc::new(GatedStorage {
        inner: FileStorage::new(),
        gate: Arc::clone(&gate),
    });
    let options = ManagerOptions {
        engine: Options {
            storage,
            ..Options::default()
        },
        ..ManagerOptions::default()
    };
    let h = Arc::new(
        Harness::with_manager(options, |o| {
            o.limits.request_timeout = Duration::from_millis(500);
        })
        .await,
    );
    gate.set(true);
    let first = {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            body(
                h.req(Method::POST, "/api/claude/sessions")
                    .header("idempotency-key", "k")
                    .json(&json!({"name": "slow disk"}))
                    .send()
                    .await
                    .expect("send"),
            )
            .await
        })
    };
    // The whole body was read and the handler is in the engine, waiting for the disk.
    for _ in 0..3000 {
        if gate.reached.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        gate.reached.load(Ordering::SeqCst),
        "the write never reached the log"
    );
    // The timeout drops the handler while it still waits.
    let (st, v) = first.await.expect("first request");
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error_kind"], "timeout", "{v}");
    // The disk comes back: the first write commits all the same (it was not cancelled).
    gate.set(false);
    for _ in 0..3000 {
        if !h.manager.list_sessions(Default::default()).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.manager.list_sessions(Default::default()).len(), 1);
    // The retry runs (its answer was lost; it is not "still being answered").
    let r = h
        .req(Method::POST, "/api/claude/sessions")
        .header("idempotency-key", "k")
        .json(&json!({"name": "slow disk"}))
        .send()
        .await
        .expect("send");
    assert!(r.headers().get("idempotent-replayed").is_none());
    let (st, v) = body(r).await;
    assert_eq!(st, 201, "the dropped request's key was never released: {v}");
    // Its answer is kept from now on.
    let (st, v2) = body(
        h.req(Method::POST, "/api/claude/sessions")
            .header("idempotency-key", "k")
            .json(&json!({"name": "slow disk"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(v2["data"], v["data"]);
    assert_eq!(h.manager.list_sessions(Default::default()).len(), 2);
    let h = Arc::try_unwrap(h).ok().expect("one owner");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_writes_past_the_in_flight_capacity_are_503_busy_and_write_nothing() {
    let gate = Arc::new(Gate::default());
    let storage = Arc::new(GatedStorage {
        inner: FileStorage::new(),
        gate: Arc::clone(&gate),
    });
    let options = ManagerOptions {
        engine: Options {
            storage,
            ..Options::default()
        },
        ..ManagerOptions::default()
    };
    let h = Arc::new(
        Harness::with_manager(options, |o| {
            o.limits.idempotency_keys = 2;
            o.limits.request_timeout = Duration::from_secs(120);
        })
        .await,
    );
    let send = |key: &'static str, name: &'static str| {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            let r = h
                .req(Method::POST, "/api/claude/sessions")
                .header("idempotency-key", key)
                .json(&json!({ "name": name }))
                .send()
                .await
                .expect("send");
            let retry_after = r.headers().get("retry-after").cloned();
            (body(r).await, retry_after)
        })
    };
    gate.set(true);
    let first = send("k1", "one");
    for _ in 0..3000 {
        if gate.reached.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        gate.reached.load(Ordering::SeqCst),
        "k1 never reached the log"
    );
    // Two identical requests with k2: one is admitted (and waits for the disk), the other
    // is told at once that k2 is in flight; so two keys are in flight now.
    let mut a = send("k2", "two");
    let mut b = send("k2", "two");
    let (told, admitted) = tokio::select! {
        r = &mut a => (r.expect("a"), b),
        r = &mut b => (r.expect("b"), a),
    };
    assert_eq!(told.0.0, 409, "{}", told.0.1);
    assert_eq!(told.0.1["error_kind"], "in_progress");
    // A third key: no room, and nothing runs.
    let ((st, v), retry_after) = send("k3", "three").await.expect("k3");
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error_kind"], "busy", "{v}");
    assert_eq!(v["success"], false);
    assert_eq!(retry_after.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
    // Reads go on meanwhile.
    let (st, _) = h.get("/health").await;
    assert_eq!(st, 200);
    // The disk comes back: the two admitted writes are answered; k3 wrote nothing.
    gate.set(false);
    let ((st, v), _) = first.await.expect("k1");
    assert_eq!(st, 201, "{v}");
    let ((st, v), _) = admitted.await.expect("k2");
    assert_eq!(st, 201, "{v}");
    let names = |h: &Harness| {
        let mut n: Vec<String> = h
            .manager
            .list_sessions(Default::default())
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&h), ["one", "two"]);
    // Its retry, with room again, runs.
    let ((st, v), _) = send("k3", "three").await.expect("k3 again");
    assert_eq!(st, 201, "{v}");
    assert_eq!(names(&h), ["one", "three", "two"]);
    let h = Arc::try_unwrap(h).ok().expect("one owner");
    h.stop().await;
}
