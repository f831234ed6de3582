//! One measurement of durable commits, for comparing builds of the engine side by side
//! (the machine is noisy: run two builds in alternation and compare medians).
//!
//! ```text
//! cargo run --release --example durable_wait -- <engine|manager> <writers> <events per writer> [dir [always|none]]
//! ```
//!
//! `engine` calls [`Engine::execute`] (with `Durability::Always` unless `none` is given);
//! `manager` records the same activities through [`SessionManager`] handles with the
//! projections on. Each writer
//! thread has its own session; after a warm-up of 50 events per writer, every call is
//! timed. Prints one line: `key=value` pairs (events per second, latency percentiles in
//! microseconds, events per fdatasync of the log).

#![allow(clippy::unwrap_used)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_engine::storage::{Bytes, FileKind, LockGuard, OpenMode, StorageFile};
use session_engine::{
    Command, Durability, Engine, FileStorage, JsonText, ManagerOptions, NewSession, Options,
    SessionId, SessionManager, Storage, SystemClock,
};

/// The real file system, counting the `fdatasync`s of log segments.
#[derive(Debug)]
struct Counting {
    inner: FileStorage,
    log_syncs: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Box<dyn StorageFile>,
    log_syncs: Option<Arc<AtomicU64>>,
}

impl StorageFile for CountingFile {
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
        if let Some(n) = &self.log_syncs {
            n.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        if let Some(n) = &self.log_syncs {
            n.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.sync_all()
    }
}

impl Storage for Counting {
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
        // Segments are created under a temporary name in `wal/`, then renamed.
        let is_log = path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "wal");
        Ok(Box::new(CountingFile {
            inner: self.inner.open(path, mode)?,
            log_syncs: is_log.then(|| Arc::clone(&self.log_syncs)),
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
    fn stat(&self, path: &Path) -> io::Result<Option<session_engine::storage::FileStat>> {
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

const WARM_UP: u64 = 50;

fn details(i: u64) -> serde_json::Value {
    serde_json::json!({
        "tool": "Edit",
        "file": format!("src/module_{:04}/handler_{:03}.rs", i % 9973, i % 997),
        "tokens": (i * 37) % 5000,
        "note": "a".repeat(100),
    })
}

/// Something that records activity `i` for writer `w`, durably.
trait Target: Sync {
    fn record(&self, w: usize, i: u64);
    fn close(&self);
}

struct Bare {
    engine: Engine,
    sessions: Vec<SessionId>,
}

impl Target for Bare {
    fn record(&self, w: usize, i: u64) {
        let details = JsonText::from_value(&details(i)).unwrap();
        self.engine
            .execute(Command::RecordActivity {
                session: self.sessions[w].clone(),
                action: "tool_use".into(),
                details: Some(details),
            })
            .unwrap();
    }
    fn close(&self) {
        self.engine.close().unwrap();
    }
}

struct Managed {
    manager: SessionManager,
    sessions: Vec<session_engine::ClaudeSession>,
}

impl Target for Managed {
    fn record(&self, w: usize, i: u64) {
        self.sessions[w]
            .record_activity("tool_use", Some(details(i)))
            .unwrap();
    }
    fn close(&self) {
        self.manager.close().unwrap();
    }
}

fn new_session(w: usize) -> NewSession {
    NewSession {
        id: Some(SessionId::new(&format!("writer-{w:02}")).unwrap()),
        timeout_secs: 0,
        ..NewSession::default()
    }
}

/// Runs `per` timed calls on each of `writers` threads, after the warm-up; returns the
/// wall time (from the first thread's start to the last one's end), every call's latency
/// and the log syncs of the timed calls.
fn run(
    target: &dyn Target,
    writers: usize,
    per: u64,
    log_syncs: &AtomicU64,
) -> (Duration, Vec<Duration>, u64) {
    // Between the two barriers every writer has finished its warm-up and waits, so the
    // sync counter is still.
    let warm = std::sync::Barrier::new(writers + 1);
    let go = std::sync::Barrier::new(writers + 1);
    let mut syncs_at_start = 0;
    let runs = std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers)
            .map(|w| {
                let (warm, go) = (&warm, &go);
                s.spawn(move || {
                    for i in 0..WARM_UP {
                        target.record(w, i);
                    }
                    warm.wait();
                    go.wait();
                    let start = Instant::now();
                    let mut lat = Vec::with_capacity(per as usize);
                    for i in WARM_UP..WARM_UP + per {
                        let t = Instant::now();
                        target.record(w, i);
                        lat.push(t.elapsed());
                    }
                    (start, Instant::now(), lat)
                })
            })
            .collect();
        warm.wait();
        syncs_at_start = log_syncs.load(Ordering::Relaxed);
        go.wait();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let syncs = log_syncs.load(Ordering::Relaxed) - syncs_at_start;
    let start = runs.iter().map(|r| r.0).min().unwrap();
    let end = runs.iter().map(|r| r.1).max().unwrap();
    let lat = runs.into_iter().flat_map(|r| r.2).collect();
    (end - start, lat, syncs)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!(
            "usage: durable_wait <engine|manager> <writers> <events per writer> [dir [always|none]]"
        );
        std::process::exit(2);
    }
    let kind = args[0].as_str();
    let writers: usize = args[1].parse().unwrap();
    let per: u64 = args[2].parse().unwrap();
    let base = args
        .get(3)
        .map_or_else(|| PathBuf::from("target/bench-data"), PathBuf::from);
    let durability = match args.get(4).map(String::as_str) {
        None | Some("always") => Durability::Always,
        Some("none") => Durability::None,
        Some(other) => panic!("unknown durability {other:?}: always or none"),
    };
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let log_syncs = Arc::new(AtomicU64::new(0));
    let options = Options {
        durability,
        snapshot_every: 0,
        watchdog_interval: None,
        storage: Arc::new(Counting {
            inner: FileStorage::new(),
            log_syncs: Arc::clone(&log_syncs),
        }),
        clock: Arc::new(SystemClock),
        ..Options::default()
    };
    let target: Box<dyn Target> = match kind {
        "engine" => {
            let engine = Engine::open(dir.path(), options).unwrap();
            let sessions = (0..writers)
                .map(|w| {
                    let new = new_session(w);
                    let id = new.id.clone().unwrap();
                    engine
                        .execute(Command::CreateSession(Box::new(new)))
                        .unwrap();
                    id
                })
                .collect();
            Box::new(Bare { engine, sessions })
        }
        "manager" => {
            let manager =
                SessionManager::open(dir.path(), ManagerOptions::with_engine(options)).unwrap();
            let sessions = (0..writers)
                .map(|w| manager.create_session(new_session(w)).unwrap())
                .collect();
            Box::new(Managed { manager, sessions })
        }
        other => panic!("unknown target {other:?}: engine or manager"),
    };
    let (elapsed, mut lat, syncs) = run(&*target, writers, per, &log_syncs);
    let n = writers as u64 * per;
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e6
    };
    println!(
        "target={kind} writers={writers} durability={durability:?} events={n} ev_s={:.0} p50_us={:.1} p99_us={:.1} \
         max_us={:.0} ev_per_sync={:.2}",
        n as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        n as f64 / syncs.max(1) as f64,
    );
    target.close();
}
