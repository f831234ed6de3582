//! [`Storage`] on the real file system.
//!
//! Files are created `0600` and folders `0700` ([`FileStorage::with_group_access`]: `0640`
//! and `0750`); a file opened for writing is never reached through a symbolic link
//! (`O_NOFOLLOW`), and a folder made or checked by `create_dir_all` may not be one. The
//! writer lock is an exclusive `flock` on the lock file and on the directory holding it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use super::{Bytes, FileKind, FileStat, LockGuard, OpenMode, Storage, StorageFile};

/// The real file system. Reads of whole files use `memmap2`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileStorage {
    group_access: bool,
}

impl FileStorage {
    /// The real file system; new files are private to their owner (`0600`, folders
    /// `0700`).
    pub fn new() -> FileStorage {
        FileStorage {
            group_access: false,
        }
    }

    /// The real file system; new files are readable by the owner's group too (`0640`,
    /// folders `0750`), for a data directory that a group of users reads.
    pub fn with_group_access() -> FileStorage {
        FileStorage { group_access: true }
    }

    /// Whether new files are readable by the owner's group.
    pub fn group_access(&self) -> bool {
        self.group_access
    }

    /// The mode new files are created with (before the umask).
    pub fn file_mode(&self) -> u32 {
        if self.group_access { 0o640 } else { 0o600 }
    }

    /// The mode new folders are created with (before the umask).
    pub fn dir_mode(&self) -> u32 {
        if self.group_access { 0o750 } else { 0o700 }
    }

    /// Options for an open in `mode` that create files with [`FileStorage::file_mode`] and,
    /// when `mode` writes, never follow a symbolic link at the path.
    fn options(&self, mode: OpenMode) -> OpenOptions {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
            OpenMode::CreateTruncate => o.read(true).write(true).create(true).truncate(true),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(self.file_mode());
            if mode != OpenMode::Read {
                o.custom_flags(libc::O_NOFOLLOW);
            }
        }
        o
    }
}

/// The error for a symbolic link where the engine writes.
fn link_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link; the engine does not follow links inside its data \
             directory (remove the link, or replace it with the file or folder itself)",
            path.display()
        ),
    )
}

/// `e` from opening `path` with `O_NOFOLLOW`, with a clear message if `path` is a link.
fn open_error(path: &Path, e: io::Error) -> io::Error {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP)
        && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    {
        return link_error(path);
    }
    let _ = path;
    e
}

#[derive(Debug)]
struct RealFile(File);

/// The writer lock: `flock`s on the data directory and on its lock file.
#[derive(Debug)]
struct RealLock {
    dir: File,
    file: File,
}

impl LockGuard for RealLock {}

impl Drop for RealLock {
    fn drop(&mut self) {
        // Unlocked here, not by closing the descriptors: a `flock` belongs to the open
        // file, which a child that another thread of this process forks (a supervised run
        // starting) shares until its `exec`. Closed alone, ours would leave the lock held
        // by that copy, and the next open of the directory refused for that moment;
        // `LOCK_UN` on any copy releases it for all of them.
        let _ = self.file.unlock();
        let _ = self.dir.unlock();
    }
}

impl FileStorage {
    fn try_lock_once(&self, path: &Path) -> io::Result<Option<RealLock>> {
        // The directory first: its lock cannot be undone by unlinking a name. The file
        // too, for releases that lock only the file.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = File::open(dir)?;
        match dir.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut o = self.options(OpenMode::ReadWrite);
        o.create(true).truncate(false);
        let file = o.open(path).map_err(|e| open_error(path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RealLock { dir, file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl Storage for FileStorage {
    fn is_local_files(&self) -> bool {
        true
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(self.dir_mode())
                .create(path)?;
        }
        #[cfg(not(unix))]
        fs::create_dir_all(path)?;
        if fs::symlink_metadata(path)?.file_type().is_symlink() {
            return Err(link_error(path));
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn list_dir_not_utf8(&self, path: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let name = entry?.file_name();
            if name.to_str().is_none() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        kind_of(fs::symlink_metadata(path))
    }

    fn kind_following(&self, path: &Path) -> io::Result<Option<FileKind>> {
        // A link is followed, so the metadata is never a link's.
        kind_of(fs::metadata(path))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let file = self
            .options(mode)
            .open(path)
            .map_err(|e| open_error(path, e))?;
        Ok(Box::new(RealFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Bytes> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(Bytes::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only. The engine never truncates a file that a reader may
        // have mapped: segments are preallocated and only overwritten in place (a reader may
        // see a record being written, which fails its checksum and is treated as the end of
        // the log), and snapshots are replaced by rename, which leaves an existing map valid.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Bytes::Mapped(map))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        #[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
        match renameat2_noreplace(from, to) {
            // Older kernels and some file systems do not know the flag.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
            r => return r,
        }
        // A hard link is created only where no name is; then the old name goes. A crash
        // in between leaves both names for the same file.
        if fs::symlink_metadata(from)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "cannot move directory {} without replacing: this file system has no \
                     RENAME_NOREPLACE",
                    from.display()
                ),
            ));
        }
        fs::hard_link(from, to)?;
        fs::remove_file(from)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        let m = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let kind = kind_from(m.file_type());
        let len = if kind == FileKind::File { m.len() } else { 0 };
        #[cfg(unix)]
        let version = {
            use std::os::unix::fs::MetadataExt;
            Some(super::mix(&[
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ctime() as u64,
                m.ctime_nsec() as u64,
            ]))
        };
        #[cfg(not(unix))]
        let version = None;
        Ok(Some(FileStat { kind, len, version }))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(path)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            Ok(())
        }
    }

    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let dir = File::open(path)?;
            // SAFETY: `syncfs` only reads the descriptor, which `dir` keeps open for the
            // call.
            #[allow(unsafe_code)]
            let r = unsafe { libc::syncfs(dir.as_raw_fd()) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        {
            // No `syncfs`: `sync` makes every file system durable (POSIX lets it return
            // early, macOS and the BSDs wait).
            let _ = path;
            // SAFETY: `sync` takes no arguments and cannot fail.
            #[cfg(unix)]
            #[allow(unsafe_code)]
            unsafe {
                libc::sync()
            };
            Ok(())
        }
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        Ok(self
            .try_lock_once(path)?
            .map(|g| Box::new(g) as Box<dyn LockGuard>))
    }

    fn is_locked(&self, path: &Path) -> io::Result<bool> {
        // A shared lock is refused exactly while a writer holds its exclusive one; it is
        // dropped at once.
        let held = |f: File| match f.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(fs::TryLockError::WouldBlock) => Ok(true),
            Err(fs::TryLockError::Error(e)) => Err(e),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if held(File::open(dir)?)? {
            return Ok(true);
        }
        match File::open(path) {
            Ok(f) => held(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn drop_cached(&self, path: &Path, range: std::ops::Range<u64>) -> io::Result<()> {
        FileStorage::fadvise_dontneed(path, range)
    }
}

/// `renameat2(from, to, RENAME_NOREPLACE)`.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn renameat2_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
    };
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: both arguments are valid NUL-terminated strings that outlive the call;
    // renameat2 reads them and keeps no pointer.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl FileStorage {
    #[cfg(target_os = "linux")]
    fn fadvise_dontneed(path: &Path, range: std::ops::Range<u64>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let file = File::open(path)?;
        // The kernel drops only whole pages inside the range: widen it to pages.
        let r = super::page_range(range);
        let off = |v: u64| libc::off_t::try_from(v).unwrap_or(libc::off_t::MAX);
        let (start, len) = (off(r.start), off(r.end - r.start));
        // SAFETY: a plain system call on a descriptor this function owns.
        #[allow(unsafe_code)]
        let rc =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), start, len, libc::POSIX_FADV_DONTNEED) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn fadvise_dontneed(path: &Path, _range: std::ops::Range<u64>) -> io::Result<()> {
        // Elsewhere there is no portable way to drop clean pages; the open still checks
        // the file exists so errors are the same.
        File::open(path).map(|_| ())
    }
}

impl StorageFile for RealFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.0.write_all_at(buf, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Seek, SeekFrom, Write};
            self.0.seek(SeekFrom::Start(offset))?;
            self.0.write_all(buf)
        }
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.0.read_at(buf, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            self.0.seek(SeekFrom::Start(offset))?;
            self.0.read(buf)
        }
    }

    fn len(&mut self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// The kind of file `t` is.
fn kind_from(t: fs::FileType) -> FileKind {
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

/// The kind of file `meta` describes; `None` when there is none.
fn kind_of(meta: io::Result<fs::Metadata>) -> io::Result<Option<FileKind>> {
    match meta {
        Ok(m) => Ok(Some(kind_from(m.file_type()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
