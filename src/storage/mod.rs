//! The single I/O seam: every byte the engine reads or writes goes through [`Storage`].
//!
//! Two implementations ship with the crate: [`FileStorage`] on the real file system, and
//! [`MemStorage`], an in-memory file system that keeps a *live* and a *durable* image of
//! every file and directory so tests can simulate a power cut at any point
//! ([`MemStorage::crash`]) and inject I/O errors ([`FaultStorage`]).
//!
//! Architecture invariant: no other module touches `std::fs`, except the binary's log
//! files. Paths are always absolute or relative to the data directory the engine was opened
//! on; the storage does no path validation of its own.

mod fault;
mod fs;
mod mem;

use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};

pub use fault::{FaultKind, FaultPlan, FaultStorage};
pub use fs::FileStorage;
pub use mem::{CrashMode, MemStorage};

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Create a new file for reading and writing; fails if it exists.
    CreateNew,
    /// Create or truncate a file for reading and writing.
    CreateTruncate,
}

/// A file system.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `path` and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries in directory `path`, sorted. Missing directory: `NotFound`.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    /// The whole content of a file. The real file system maps it into memory.
    fn read(&self, path: &Path) -> io::Result<Bytes>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive writer lock on `path` (a lock file, created if missing) and on
    /// the directory holding it, without blocking. `Ok(None)` means another holder has
    /// either. Locking the directory too means that removing the lock file while it is
    /// held does not let a second holder in; locking the file too keeps out older
    /// releases, which lock only the file.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
    /// Drops the clean cached pages of bytes `range` of the file (widened to whole 4 KiB
    /// pages), so the next read of them shows what the device holds
    /// (`posix_fadvise(POSIX_FADV_DONTNEED)`). Dirty pages stay. After a failed fsync Linux
    /// marks the lost pages clean but keeps showing their content ("fsyncgate"); a new
    /// writer calls this on the log's unproven tail before it reads it, so it never builds
    /// on records the device does not have.
    fn drop_cached(&self, path: &Path, range: std::ops::Range<u64>) -> io::Result<()>;
}

/// `range` widened to whole pages of `PAGE` bytes (what `drop_cached` works on).
pub(crate) fn page_range(range: std::ops::Range<u64>) -> std::ops::Range<u64> {
    const PAGE: u64 = 4096;
    let start = range.start / PAGE * PAGE;
    let end = range.end.div_ceil(PAGE).saturating_mul(PAGE);
    start..end.max(start)
}

/// An open file.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + fmt::Debug {
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The file's length in bytes.
    fn len(&mut self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) the file.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
}

/// Held while the writer lock is taken; dropping it releases the lock.
pub trait LockGuard: Send + fmt::Debug {}

/// File content returned by [`Storage::read`]: mapped or owned.
pub enum Bytes {
    /// Content copied into memory.
    Owned(Vec<u8>),
    /// A read-only memory map of the file.
    Mapped(memmap2::Mmap),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

/// Writes `data` to `path` atomically: a temporary file next to it, fsync, rename over
/// `path`, fsync of the directory. After a crash the file holds either the old or the new
/// content, never a mix.
pub fn write_atomic(storage: &dyn Storage, path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = storage.open(&tmp, OpenMode::CreateTruncate)?;
        f.write_at(0, data)?;
        f.sync_all()?;
    }
    storage.rename(&tmp, path)?;
    storage.sync_dir(dir)
}

/// Creates directory `path` (and any missing parents) so that it survives a power cut.
///
/// A new directory entry is durable only once the directory holding it is synced (POSIX;
/// ext4 happens to hide this, other file systems do not), so a directory created without
/// that sync can vanish after a crash with every file in it. This syncs the parent of
/// each directory it creates, and the parent of `path` even when `path` already existed:
/// a previous process may have created it and died before its own sync.
pub fn create_dir_durable(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    let mut parents: Vec<PathBuf> = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() {
            break;
        }
        let Some(parent) = p.parent() else { break };
        let parent = if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent.to_path_buf()
        };
        let existed = storage.exists(p)?;
        parents.push(parent);
        if existed {
            break;
        }
        cur = p.parent();
    }
    storage.create_dir_all(path)?;
    for parent in parents.iter().rev() {
        storage.sync_dir(parent)?;
    }
    Ok(())
}

/// A small deterministic pseudo-random generator (SplitMix64) for crash simulation and
/// tests, so the library needs no `rand` dependency and every run is reproducible by seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n.max(1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}
