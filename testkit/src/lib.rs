//! The test scaffolding of session-engine, one crate used by the integration tests of
//! every member (`tests/common/mod.rs` re-exports it; `cli/tests/` use it directly), the
//! fuzz targets and `tests/fuzz_regressions.rs`, so that they all run the same code:
//! [`model`] (a reference model of the session domain), [`workload`] (seeded command
//! sequences and their runner), [`checks`] (a recovered engine against the model, the
//! crash, fault and bit-flip checks), [`runs`] (supervised runs), and below: options for
//! deterministic tests, storage images and segment helpers.
#![allow(dead_code, clippy::unwrap_used)]

pub mod checks;
pub mod model;
pub mod runs;
pub mod workload;

use std::path::Path;
use std::sync::Arc;

use session_engine::storage::{
    Bytes, FileKind, LockGuard, MemStorage, OpenMode, Storage, StorageFile,
};
use session_engine::{
    Command, Durability, Engine, JsonText, ManualClock, NewSession, Options, SessionId, Timestamp,
};

/// 2025-11-08T10:30:00Z, the seeds' example time.
pub const T0: i64 = 1_762_597_800;

pub fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_secs(T0))
}

/// Options for deterministic tests: manual clock, no watchdog, no automatic snapshots.
pub fn options(storage: Arc<dyn Storage>, clock: &ManualClock) -> Options {
    Options {
        durability: Durability::Always,
        segment_bytes: 8 * 1024,
        snapshot_every: 0,
        keep_snapshots: 3,
        max_batch: 64,
        max_batch_bytes: 256 << 10,
        watchdog_interval: None,
        storage,
        clock: Arc::new(clock.clone()),
        log: None,
    }
}

pub fn mem() -> (Arc<MemStorage>, Arc<dyn Storage>) {
    let m = Arc::new(MemStorage::new());
    let s: Arc<dyn Storage> = m.clone();
    (m, s)
}

/// The storage a process kill would leave while `e` is still open (its log not sealed by a
/// clean close), as a new storage; `e` is then closed on the old one.
pub fn killed(m: &MemStorage, e: Engine) -> (Arc<MemStorage>, Arc<dyn Storage>) {
    let image = Arc::new(m.kill_image());
    drop(e);
    let s: Arc<dyn Storage> = image.clone();
    (image, s)
}

/// Byte ranges of the records (not seals) of a segment, from its header on.
pub fn record_ranges(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = session_engine::wal::segment::SEGMENT_HEADER_LEN;
    while let Ok(f) = session_engine::wal::record::decode_frame(&bytes[pos..]) {
        if !f.seal {
            out.push((pos, pos + f.len));
        }
        pos += f.len;
    }
    out
}

/// Asserts that `bytes[from..]` holds a seal naming LSN `next` and zeros after it (what a
/// writer leaves after cutting a torn tail at `from`: it seals what it kept).
pub fn assert_sealed_then_zeros(bytes: &[u8], from: usize, next: u64) {
    use session_engine::Lsn;
    use session_engine::wal::record::{SEAL_LEN, encode_seal};
    assert_eq!(
        bytes[from..from + SEAL_LEN],
        encode_seal(Lsn(next))[..],
        "a seal at {from}"
    );
    assert!(
        bytes[from + SEAL_LEN..].iter().all(|&b| b == 0),
        "zeros after the seal at {from}"
    );
}

pub fn open(storage: &Arc<dyn Storage>, clock: &ManualClock) -> Engine {
    Engine::open("data", options(Arc::clone(storage), clock)).unwrap()
}

pub fn id(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

pub fn create(engine: &Engine, s: &str) -> SessionId {
    let c = engine
        .execute(Command::CreateSession(Box::new(NewSession {
            id: Some(id(s)),
            ..NewSession::default()
        })))
        .unwrap();
    match c.outcome {
        session_engine::Outcome::Session(id) => id,
        o => panic!("unexpected outcome {o:?}"),
    }
}

pub fn activity(engine: &Engine, s: &str, action: &str) -> session_engine::Committed {
    engine
        .execute(Command::RecordActivity {
            session: id(s),
            action: action.into(),
            details: Some(JsonText::parse(&format!("{{\"n\":\"{action}\"}}")).unwrap()),
        })
        .unwrap()
}

pub fn segments(storage: &MemStorage, dir: &str) -> Vec<std::path::PathBuf> {
    storage
        .list_dir(&Path::new(dir).join("wal"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .map(|n| Path::new(dir).join("wal").join(n))
        .collect()
}

// ---- Session manager and projection helpers ----

use std::path::PathBuf;
use std::time::Duration;

use session_engine::{FileStorage, ManagerOptions, ProjectionOptions, SessionManager};

/// Projection settings that flush almost at once, so tests do not sleep.
pub fn fast_projections() -> ProjectionOptions {
    ProjectionOptions {
        flush_interval: Duration::from_millis(1),
        registry_interval: Duration::from_millis(2),
        checkpoint_interval: Duration::from_millis(5),
        coalesce_factor: 10,
        max_batch_events: 8192,
        retry_delay: Duration::from_millis(2),
        max_retries: 3,
        log_max_bytes: None,
        max_pending_log_bytes: 32 << 20,
        format: None,
    }
}

pub fn manager_options(storage: &Arc<dyn Storage>, clock: &ManualClock) -> ManagerOptions {
    ManagerOptions {
        engine: options(Arc::clone(storage), clock),
        projections: Some(fast_projections()),
    }
}

/// A data directory on one storage backend. Scenarios that touch files run on both.
pub struct Backend {
    pub name: &'static str,
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub mem: Option<Arc<MemStorage>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Backend {
    pub fn mem() -> Backend {
        let (m, s) = mem();
        Backend {
            name: "memory",
            storage: s,
            dir: PathBuf::from("data"),
            mem: Some(m),
            _tmp: None,
        }
    }

    pub fn file() -> Backend {
        let tmp = tempfile::tempdir().unwrap();
        Backend {
            name: "file system",
            storage: Arc::new(FileStorage::new()),
            dir: tmp.path().join("runtime"),
            mem: None,
            _tmp: Some(tmp),
        }
    }

    pub fn both() -> [Backend; 2] {
        [Backend::mem(), Backend::file()]
    }

    pub fn open(&self, clock: &ManualClock) -> SessionManager {
        SessionManager::open(&self.dir, manager_options(&self.storage, clock)).unwrap()
    }

    pub fn open_with(&self, clock: &ManualClock, projections: ProjectionOptions) -> SessionManager {
        let mut o = manager_options(&self.storage, clock);
        o.projections = Some(projections);
        SessionManager::open(&self.dir, o).unwrap()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.storage.exists(&self.path(rel)).unwrap()
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        self.storage.read(&self.path(rel)).unwrap().to_vec()
    }

    /// Parses a projection file the way a reader of the seeds' formats would.
    pub fn json(&self, rel: &str) -> serde_json::Value {
        let bytes = self.read(rel);
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{rel} is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    /// The JSON lines of a per-session log.
    pub fn log_lines(&self, rel: &str) -> Vec<serde_json::Value> {
        let bytes = self.read(rel);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{rel} ends mid-line"
        );
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect()
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let path = self.path(rel);
        let mut f = self.storage.open(&path, OpenMode::CreateTruncate).unwrap();
        f.write_at(0, data).unwrap();
        f.sync_all().unwrap();
    }

    pub fn remove(&self, rel: &str) {
        self.storage.remove_file(&self.path(rel)).unwrap();
    }

    pub fn list(&self, rel: &str) -> Vec<String> {
        self.storage.list_dir(&self.path(rel)).unwrap_or_default()
    }

    /// Every file under `rel` (recursively), by path relative to `rel`.
    pub fn files_under(&self, rel: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for n in self.list(rel) {
            let child = format!("{rel}/{n}");
            if self.storage.list_dir(&self.path(&child)).is_ok() {
                for (sub, bytes) in self.files_under(&child) {
                    out.push((format!("{n}/{sub}"), bytes));
                }
            } else {
                out.push((n, self.read(&child)));
            }
        }
        out
    }

    /// The files the engine moved aside into `projections-attic/<folder>/`, by their path
    /// in the data directory (with a `.<n>` suffix when one was moved more than once).
    pub fn attic(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self
            .files_under("projections-attic")
            .into_iter()
            .map(|(p, b)| {
                (
                    p.split_once('/').map_or(p.clone(), |(_, r)| r.to_owned()),
                    b,
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Removes a directory and everything under it.
    pub fn remove_tree(&self, rel: &str) {
        let path = self.path(rel);
        let Ok(names) = self.storage.list_dir(&path) else {
            return;
        };
        for n in names {
            let child = format!("{rel}/{n}");
            if self.storage.list_dir(&self.path(&child)).is_ok() {
                self.remove_tree(&child);
            } else {
                self.storage.remove_file(&self.path(&child)).unwrap();
            }
        }
        if self.mem.is_none() {
            std::fs::remove_dir(&path).unwrap();
        }
    }
}

pub fn json(v: serde_json::Value) -> Option<serde_json::Value> {
    Some(v)
}

/// Waits until the manager's projections reflect everything committed so far.
pub fn flush(m: &SessionManager) {
    m.flush_projections().unwrap();
}

/// What a test storage does around the operations it hands on to the storage it wraps
/// (see [`Hooked`]). Every hook does nothing unless a test's hooks say otherwise.
pub trait Hooks: Send + Sync + std::fmt::Debug {
    /// Before `open`; an error fails it.
    fn open(&self, _path: &Path, _mode: OpenMode) -> std::io::Result<()> {
        Ok(())
    }
    /// Wraps each file `open` returns.
    fn file(&self, file: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        file
    }
    /// Before `rename`; an error fails it.
    fn rename(&self, _from: &Path, _to: &Path) -> std::io::Result<()> {
        Ok(())
    }
    /// After a `rename` that succeeded.
    fn renamed(&self, _from: &Path, _to: &Path) {}
    /// Before `remove_file`; an error fails it.
    fn remove(&self, _path: &Path) -> std::io::Result<()> {
        Ok(())
    }
}

/// A storage that hands every operation on to `inner`, calling `hooks` around some of
/// them. Derefs to its hooks, so a test arms and reads them through it.
#[derive(Debug)]
pub struct Hooked<H> {
    pub inner: Arc<dyn Storage>,
    pub hooks: H,
}

impl<H> std::ops::Deref for Hooked<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.hooks
    }
}

impl<H: Hooks> Storage for Hooked<H> {
    fn create_dir_all(&self, p: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(p)
    }
    fn list_dir(&self, p: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list_dir(p)
    }
    fn exists(&self, p: &Path) -> std::io::Result<bool> {
        self.inner.exists(p)
    }
    fn kind(&self, p: &Path) -> std::io::Result<Option<FileKind>> {
        self.inner.kind(p)
    }
    fn kind_following(&self, p: &Path) -> std::io::Result<Option<FileKind>> {
        self.inner.kind_following(p)
    }
    fn open(&self, p: &Path, m: OpenMode) -> std::io::Result<Box<dyn StorageFile>> {
        self.hooks.open(p, m)?;
        Ok(self.hooks.file(self.inner.open(p, m)?))
    }
    fn read(&self, p: &Path) -> std::io::Result<Bytes> {
        self.inner.read(p)
    }
    fn rename(&self, a: &Path, b: &Path) -> std::io::Result<()> {
        self.hooks.rename(a, b)?;
        self.inner.rename(a, b)?;
        self.hooks.renamed(a, b);
        Ok(())
    }
    fn rename_noreplace(&self, a: &Path, b: &Path) -> std::io::Result<()> {
        self.hooks.rename(a, b)?;
        self.inner.rename_noreplace(a, b)?;
        self.hooks.renamed(a, b);
        Ok(())
    }
    fn stat(&self, p: &Path) -> std::io::Result<Option<session_engine::storage::FileStat>> {
        self.inner.stat(p)
    }
    fn remove_file(&self, p: &Path) -> std::io::Result<()> {
        self.hooks.remove(p)?;
        self.inner.remove_file(p)
    }
    fn sync_dir(&self, p: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(p)
    }
    fn sync_fs(&self, p: &Path) -> std::io::Result<()> {
        self.inner.sync_fs(p)
    }
    fn try_lock(&self, p: &Path) -> std::io::Result<Option<Box<dyn LockGuard>>> {
        self.inner.try_lock(p)
    }
    fn is_locked(&self, p: &Path) -> std::io::Result<bool> {
        self.inner.is_locked(p)
    }
    fn drop_cached(&self, p: &Path, r: std::ops::Range<u64>) -> std::io::Result<()> {
        self.inner.drop_cached(p, r)
    }
}

/// Fails opens for writing, renames and removals of paths that contain `needle`, while
/// armed: a projection-only I/O fault (the log keeps working).
#[derive(Debug)]
pub struct PathFaults {
    needle: String,
    /// Failures left; `u64::MAX` fails forever.
    remaining: std::sync::atomic::AtomicU64,
    pub injected: std::sync::atomic::AtomicU64,
}

impl PathFaults {
    pub fn new(inner: Arc<dyn Storage>, needle: &str) -> Arc<Hooked<PathFaults>> {
        Arc::new(Hooked {
            inner,
            hooks: PathFaults {
                needle: needle.into(),
                remaining: 0.into(),
                injected: 0.into(),
            },
        })
    }

    pub fn fail_next(&self, n: u64) {
        self.remaining.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.fail_next(0);
    }

    fn check(&self, path: &Path) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if !path.to_string_lossy().contains(&self.needle) {
            return Ok(());
        }
        let hit = self
            .remaining
            .fetch_update(SeqCst, SeqCst, |r| match r {
                0 => None,
                u64::MAX => Some(u64::MAX),
                r => Some(r - 1),
            })
            .is_ok();
        if hit {
            self.injected.fetch_add(1, SeqCst);
            Err(std::io::Error::from_raw_os_error(28))
        } else {
            Ok(())
        }
    }
}

impl Hooks for PathFaults {
    fn open(&self, p: &Path, m: OpenMode) -> std::io::Result<()> {
        if m == OpenMode::Read {
            Ok(())
        } else {
            self.check(p)
        }
    }
    fn rename(&self, _from: &Path, to: &Path) -> std::io::Result<()> {
        self.check(to)
    }
    fn remove(&self, p: &Path) -> std::io::Result<()> {
        self.check(p)
    }
}

/// Every projection file under a data directory (not the marker), by relative path.
pub fn projection_files(b: &Backend) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for dir in [
        "sessions",
        "sessions/archive",
        "logs",
        "logs/archive",
        "chains",
    ] {
        for name in b.list(dir) {
            let rel = format!("{dir}/{name}");
            if b.storage.list_dir(&b.path(&rel)).is_ok() {
                continue;
            }
            out.insert(rel.clone(), b.read(&rel));
        }
    }
    out
}
