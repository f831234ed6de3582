//! The single I/O seam: every byte the engine reads or writes goes through [`Storage`].
//!
//! [`FileStorage`] is the real file system. With the `test-util` feature (the crate's own
//! tests, benches, `compare` and fuzz turn it on; an embedding crate need not) come the
//! test doubles: `MemStorage`, an in-memory file system that keeps a *live* and a
//! *durable* image of every file and directory so tests can simulate a power cut at any
//! point (`MemStorage::crash`), `FaultStorage`, which injects I/O errors, and
//! `SplitMix64`, the seeded RNG they draw from.
//!
//! Architecture invariant: no other module touches `std::fs`, except the binary's log
//! files. Paths are always absolute or relative to the data directory the engine was opened
//! on; the storage does no path validation of its own.
//!
//! What the storage guarantees about the files it makes (the real file system; the
//! in-memory one has no links or permissions to model):
//!
//! * **No symbolic links inside the data directory.** A file opened for writing is never
//!   reached through a link at its name (`O_NOFOLLOW`: the open fails with an error naming
//!   the file), and [`Storage::create_dir_all`] refuses a folder that is a link (to a
//!   directory or anything else), naming it, so nothing below it is ever written. Links
//!   *above* the data directory, and the data directory itself being a link the user made
//!   ([`create_root_durable`]), are followed as usual. Temporary files
//!   ([`write_atomic`], snapshots) are created exclusively (`O_EXCL`) under unpredictable
//!   names ([`temp_name`]), so a name planted in advance is never written through.
//! * **Private by default.** New files are created `0600` and new folders `0700` (before
//!   the umask); [`FileStorage::with_group_access`] makes them `0640`/`0750`. Existing
//!   files and folders keep their modes.
//! * **A writer lock that cannot be unlinked away.** [`Storage::try_lock`] locks the
//!   directory holding the lock file as well as the file, so deleting `LOCK` while a writer
//!   runs does not let a second one in, and releases that lock only `LOCK` still exclude
//!   a new one (and the other way round).

#[cfg(any(test, feature = "test-util"))]
mod fault;
mod fs;
#[cfg(any(test, feature = "test-util"))]
mod mem;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};

#[cfg(any(test, feature = "test-util"))]
pub use fault::{FaultKind, FaultPlan, FaultStorage};
pub use fs::FileStorage;
#[cfg(any(test, feature = "test-util"))]
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

/// What is at a path, as [`Storage::kind`] sees it (links are not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (to anything, or dangling).
    Symlink,
    /// Anything else: a device, a fifo, a socket.
    Other,
}

/// What [`Storage::stat`] tells about a path (a symbolic link there is not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// What is at the path.
    pub kind: FileKind,
    /// The length of a regular file in bytes (0 for anything else).
    pub len: u64,
    /// A value that changes whenever the file's content may have changed, `None` when the
    /// storage cannot tell. The real file system mixes the device, inode number, length and
    /// modification and change times (`ctime`, which no program can set back); the
    /// in-memory one the file's identity and content. Equal values mean the file is very
    /// likely unchanged; different values mean it may have changed.
    pub version: Option<u64>,
}

/// Mixes `fields` into one value (SplitMix64's finaliser), for [`FileStat::version`]:
/// stable across runs and releases, unlike the standard library's hashers.
pub(crate) fn mix(fields: &[u64]) -> u64 {
    let mut h: u64 = 0x243F_6A88_85A3_08D3;
    for &f in fields {
        let mut z = (h ^ f).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::File => "a regular file",
            FileKind::Dir => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Other => "a device, fifo or socket",
        })
    }
}

/// A file system.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `path` and any missing parents. Refuses, with an error naming it, a `path`
    /// that is a symbolic link (even to a directory): nothing the engine writes under a
    /// folder it created is reached through a link (see the module documentation).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries in directory `path`, sorted, leaving out names that are
    /// not UTF-8 (no file the engine writes has one; [`Storage::list_dir_not_utf8`] gives
    /// them to a caller that reports them). Missing directory: `NotFound`.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// The names in directory `path` that are not UTF-8, which [`Storage::list_dir`]
    /// leaves out (none where every name is text, as in the test doubles).
    fn list_dir_not_utf8(&self, path: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        let _ = path;
        Ok(Vec::new())
    }
    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// What is at `path`, without following a symbolic link there; `None` if nothing is.
    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>>;
    /// What is at `path` after following symbolic links (a link to a directory is a
    /// directory); `None` if nothing is there or a link there dangles. Readers of files
    /// other programs wrote use it to look at a path the user named before opening it (a
    /// fifo would block the open). The default follows nothing: it is [`Storage::kind`].
    fn kind_following(&self, path: &Path) -> io::Result<Option<FileKind>> {
        self.kind(path)
    }
    /// Whether paths name files of this machine's file system, which another library
    /// (SQLite, for the search index) may open itself. The default is false: the index
    /// is then kept in memory.
    fn is_local_files(&self) -> bool {
        false
    }
    /// Opens a file. A mode that writes never follows a symbolic link at `path`: the open
    /// fails, naming the file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    /// The whole content of a file. The real file system maps it into memory.
    fn read(&self, path: &Path) -> io::Result<Bytes>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Renames `from` to `to` only if nothing is at `to`: fails with
    /// [`io::ErrorKind::AlreadyExists`], changing nothing, when something is (checked and
    /// done in one step: `renameat2(RENAME_NOREPLACE)` on Linux, `link` and `unlink`
    /// where that is missing). The engine creates its projection files with it, so a file
    /// another program put there meanwhile is never replaced.
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes everything written so far to the file system holding `path` durable: every
    /// file's data and every directory's entries (`syncfs(2)` on an open descriptor of
    /// `path`). The projector's checkpoint calls it once instead of syncing each file it
    /// wrote (see [`write_atomic_unsynced`]); a wrapper must hand it on.
    fn sync_fs(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive writer lock on `path` (a lock file, created if missing) and on
    /// the directory holding it, without blocking. `Ok(None)` means another holder has
    /// either. Locking the directory too means that removing the lock file while it is
    /// held does not let a second holder in; locking the file too keeps out older
    /// releases, which lock only the file.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
    /// What is at `path` (without following a symbolic link there), its length and a
    /// [`FileStat::version`] that changes with its content; `None` if nothing is there.
    /// The default knows no version.
    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        Ok(match self.kind(path)? {
            None => None,
            Some(FileKind::File) => Some(FileStat {
                kind: FileKind::File,
                len: self.open(path, OpenMode::Read)?.len()?,
                version: None,
            }),
            Some(kind) => Some(FileStat {
                kind,
                len: 0,
                version: None,
            }),
        })
    }
    /// Whether someone holds the writer lock [`Storage::try_lock`] on `path` would take,
    /// found without taking it and without creating anything (read-only tools use it to
    /// tell whether a writer may be appending). `true` when it cannot tell.
    fn is_locked(&self, path: &Path) -> io::Result<bool> {
        let _ = path;
        Ok(true)
    }
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

/// A name for a temporary file that will replace `name`: `<name>.<16 hex digits>.tmp`,
/// the digits unpredictable (from the standard library's randomly keyed hasher), so a
/// name cannot be planted in advance. Create it with [`OpenMode::CreateNew`].
pub fn temp_name(name: &OsStr) -> OsString {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let mut out = name.to_os_string();
    out.push(format!(".{:016x}.tmp", h.finish()));
    out
}

/// The name a temporary file stands in for, if `name` is one: `<name>` for a
/// [`temp_name`] (`<name>.<16 hex digits>.tmp`) or an older release's `<name>.tmp`.
pub fn temp_target(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".tmp")?;
    let is_hex =
        |h: &str| h.len() == 16 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match stem.rsplit_once('.') {
        Some((base, hex)) if !base.is_empty() && is_hex(hex) => Some(base),
        _ => Some(stem),
    }
}

/// Writes `data` to `path` atomically: a temporary file next to it (a fresh
/// [`temp_name`], created exclusively), fsync, rename over `path`, fsync of the directory.
/// After a crash the file holds either the old or the new content, never a mix. A failed
/// write removes its temporary file (as far as it can).
pub fn write_atomic(storage: &dyn Storage, path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_as(storage, path, data, false)
}

/// [`write_atomic`] for a file that must not exist yet: the temporary file is renamed
/// with [`Storage::rename_noreplace`], so when something is at `path` by then (another
/// program's file) it fails with [`io::ErrorKind::AlreadyExists`], leaving that file as
/// it is and removing its temporary file.
pub fn write_new_atomic(storage: &dyn Storage, path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_as(storage, path, data, true)
}

/// [`write_atomic`] without its syncs: a temporary file next to `path` (a fresh
/// [`temp_name`], created exclusively), renamed over `path`. A reader never sees a mix of
/// the old and new content (the rename is atomic), but a power cut before the next
/// [`Storage::sync_fs`] may leave the old content, the new, an empty or torn file, or
/// nothing where nothing was: the caller must be able to tell and redo it (the projector
/// rewrites every file changed after its marker at open).
pub fn write_atomic_unsynced(storage: &dyn Storage, path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_with(storage, path, data, false, false)
}

/// [`write_new_atomic`] without its syncs (see [`write_atomic_unsynced`]): the rename
/// still never replaces a file that is at `path` by then.
pub fn write_new_atomic_unsynced(
    storage: &dyn Storage,
    path: &Path,
    data: &[u8],
) -> io::Result<()> {
    write_atomic_with(storage, path, data, true, false)
}

fn write_atomic_as(
    storage: &dyn Storage,
    path: &Path,
    data: &[u8],
    no_replace: bool,
) -> io::Result<()> {
    write_atomic_with(storage, path, data, no_replace, true)
}

fn write_atomic_with(
    storage: &dyn Storage,
    path: &Path,
    data: &[u8],
    no_replace: bool,
    sync: bool,
) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(temp_name(name));
    let mut f = storage.open(&tmp, OpenMode::CreateNew)?;
    let written = f
        .write_at(0, data)
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) });
    drop(f);
    let renamed = written.and_then(|()| {
        if no_replace {
            storage.rename_noreplace(&tmp, path)
        } else {
            storage.rename(&tmp, path)
        }
    });
    if let Err(e) = renamed {
        // Best effort: the error that matters is the first one.
        let _ = storage.remove_file(&tmp);
        return Err(e);
    }
    if sync { storage.sync_dir(dir) } else { Ok(()) }
}

/// [`create_dir_durable`] for a data directory the caller names, which may be a symbolic
/// link to a directory (the user's choice; the folders the engine makes inside it may not
/// be links, see the module documentation).
pub fn create_root_durable(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    if storage.kind(path)? == Some(FileKind::Symlink) && storage.exists(path)? {
        return Ok(());
    }
    create_dir_durable(storage, path)
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
/// With the `test-util` feature only.
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

#[cfg(any(test, feature = "test-util"))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_fresh_and_name_what_they_replace() {
        let a = temp_name("session_s1.json".as_ref());
        let b = temp_name("session_s1.json".as_ref());
        assert_ne!(a, b);
        let a = a.to_str().unwrap();
        assert_eq!(temp_target(a), Some("session_s1.json"));
        assert_eq!(temp_target("session_s1.json.tmp"), Some("session_s1.json"));
        assert_eq!(temp_target("session_s1.json"), None);
        assert_eq!(
            temp_target("x.0123456789ABCDEF.tmp"),
            Some("x.0123456789ABCDEF")
        );
    }

    #[test]
    fn a_new_atomic_write_never_replaces_and_memory_stat_versions_follow_content() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("d")).unwrap();
        write_new_atomic(&s, Path::new("d/f"), b"first").unwrap();
        let v1 = s.stat(Path::new("d/f")).unwrap().unwrap();
        assert_eq!((v1.kind, v1.len), (FileKind::File, 5));
        let e = write_new_atomic(&s, Path::new("d/f"), b"second").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(s.file_content(Path::new("d/f")).unwrap(), b"first");
        assert_eq!(
            s.list_dir(Path::new("d")).unwrap(),
            vec!["f"],
            "no temporary left"
        );
        assert_eq!(s.stat(Path::new("d/f")).unwrap(), Some(v1));
        s.set_file_content(Path::new("d/f"), b"FIRST".to_vec())
            .unwrap();
        let v2 = s.stat(Path::new("d/f")).unwrap().unwrap();
        assert_eq!(v2.len, 5);
        assert_ne!(v2.version, v1.version);
        write_atomic(&s, Path::new("d/f"), b"third").unwrap();
        assert_eq!(s.file_content(Path::new("d/f")).unwrap(), b"third");
        assert_eq!(s.stat(Path::new("d")).unwrap().unwrap().kind, FileKind::Dir);
        assert_eq!(s.stat(Path::new("d/none")).unwrap(), None);
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temporary_file() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("d")).unwrap();
        // The rename fails: "d/f" is a directory.
        s.create_dir_all(Path::new("d/f")).unwrap();
        assert!(write_atomic(&s, Path::new("d/f"), b"x").is_err());
        assert_eq!(s.list_dir(Path::new("d")).unwrap(), vec!["f".to_string()]);
        write_atomic(&s, Path::new("d/g"), b"y").unwrap();
        assert_eq!(s.list_dir(Path::new("d")).unwrap(), vec!["f", "g"]);
    }
}
