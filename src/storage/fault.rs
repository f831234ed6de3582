//! I/O error injection: a [`Storage`] wrapper that fails the Nth operation of a kind, once
//! or forever (SQLite's "countdown" I/O error tests).

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Bytes, FileKind, FileStat, LockGuard, OpenMode, Storage, StorageFile};

/// What the injected failure looks like, and which operations count towards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO` from any operation, reads included.
    Io,
    /// `ENOSPC` from an operation that allocates space (writes, `set_len`, file creation).
    NoSpace,
    /// A write that stores only the first half of its buffer, then fails.
    ShortWrite,
    /// A failed `fsync`/`fdatasync`/directory sync.
    SyncFails,
}

impl FaultKind {
    /// Every kind, for sweeps.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Io,
        FaultKind::NoSpace,
        FaultKind::ShortWrite,
        FaultKind::SyncFails,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Alloc,
    Sync,
    Meta,
}

impl FaultKind {
    fn counts(self, op: Op) -> bool {
        match self {
            FaultKind::Io => true,
            FaultKind::NoSpace => matches!(op, Op::Write | Op::Alloc),
            FaultKind::ShortWrite => op == Op::Write,
            FaultKind::SyncFails => op == Op::Sync,
        }
    }

    fn error(self) -> io::Error {
        match self {
            FaultKind::NoSpace => io::Error::from_raw_os_error(28), // ENOSPC
            FaultKind::SyncFails => io::Error::other("injected fsync failure"),
            FaultKind::Io | FaultKind::ShortWrite => io::Error::from_raw_os_error(5), // EIO
        }
    }
}

/// When to fail.
#[derive(Clone, Copy, Debug)]
pub struct FaultPlan {
    /// The kind of failure; only operations of that kind are counted.
    pub kind: FaultKind,
    /// Fail the operation with this 1-based count. `u64::MAX` never fails (to count ops).
    pub fail_at: u64,
    /// Keep failing every counted operation after the first failure.
    pub forever: bool,
}

#[derive(Debug)]
struct FaultState {
    plan: FaultPlan,
    counted: u64,
    fired: bool,
}

impl FaultState {
    /// Counts `op` and says whether it must fail.
    fn should_fail(&mut self, op: Op) -> bool {
        if !self.plan.kind.counts(op) {
            return false;
        }
        self.counted += 1;
        if self.fired && self.plan.forever {
            return true;
        }
        if self.counted == self.plan.fail_at {
            self.fired = true;
            return true;
        }
        false
    }
}

/// A storage that fails according to a [`FaultPlan`]. Clones share the countdown.
#[derive(Clone, Debug)]
pub struct FaultStorage {
    inner: Arc<dyn Storage>,
    state: Arc<Mutex<FaultState>>,
}

impl FaultStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>, plan: FaultPlan) -> FaultStorage {
        FaultStorage {
            inner,
            state: Arc::new(Mutex::new(FaultState {
                plan,
                counted: 0,
                fired: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many operations of the plan's kind have been attempted.
    pub fn counted(&self) -> u64 {
        self.lock().counted
    }

    /// Whether the fault has fired.
    pub fn fired(&self) -> bool {
        self.lock().fired
    }

    /// Stops injecting faults (the "disk" is healthy again).
    pub fn heal(&self) {
        let mut s = self.lock();
        s.plan.fail_at = u64::MAX;
        s.plan.forever = false;
        s.fired = false;
    }

    fn check(&self, op: Op) -> io::Result<()> {
        let mut s = self.lock();
        if s.should_fail(op) {
            Err(s.plan.kind.error())
        } else {
            Ok(())
        }
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Box<dyn StorageFile>,
    owner: FaultStorage,
}

impl StorageFile for FaultFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let fail = {
            let mut s = self.owner.lock();
            s.should_fail(Op::Write).then_some(s.plan.kind)
        };
        match fail {
            Some(FaultKind::ShortWrite) => {
                let half = buf.len() / 2;
                self.inner.write_at(offset, &buf[..half])?;
                Err(FaultKind::ShortWrite.error())
            }
            Some(kind) => Err(kind.error()),
            None => self.inner.write_at(offset, buf),
        }
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.owner.check(Op::Read)?;
        self.inner.read_at(offset, buf)
    }

    fn len(&mut self) -> io::Result<u64> {
        self.owner.check(Op::Read)?;
        self.inner.len()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.owner.check(Op::Alloc)?;
        self.inner.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.owner.check(Op::Sync)?;
        self.inner.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.owner.check(Op::Sync)?;
        self.inner.sync_all()
    }
}

impl Storage for FaultStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Meta)?;
        self.inner.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.check(Op::Read)?;
        self.inner.list_dir(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.check(Op::Read)?;
        self.inner.exists(path)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        self.check(Op::Read)?;
        self.inner.kind(path)
    }

    fn kind_following(&self, path: &Path) -> io::Result<Option<FileKind>> {
        self.check(Op::Read)?;
        self.inner.kind_following(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let op = match mode {
            OpenMode::Read | OpenMode::ReadWrite => Op::Read,
            OpenMode::CreateNew | OpenMode::CreateTruncate => Op::Alloc,
        };
        self.check(op)?;
        Ok(Box::new(FaultFile {
            inner: self.inner.open(path, mode)?,
            owner: self.clone(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Bytes> {
        self.check(Op::Read)?;
        self.inner.read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Meta)?;
        self.inner.rename(from, to)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Meta)?;
        self.inner.rename_noreplace(from, to)
    }

    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        self.check(Op::Read)?;
        self.inner.stat(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Meta)?;
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Sync)?;
        self.inner.sync_dir(path)
    }

    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Sync)?;
        self.inner.sync_fs(path)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.check(Op::Meta)?;
        self.inner.try_lock(path)
    }

    fn is_locked(&self, path: &Path) -> io::Result<bool> {
        self.inner.is_locked(path)
    }

    fn drop_cached(&self, path: &Path, range: std::ops::Range<u64>) -> io::Result<()> {
        self.check(Op::Read)?;
        self.inner.drop_cached(path, range)
    }
}
