//! An in-memory file system with a *live* and a *durable* image, for tests and crash
//! simulation.
//!
//! Every file keeps the bytes a running process sees (`live`), the bytes that survived its
//! last `sync_data`/`sync_all` (`durable`), and the writes made since, with their data.
//! Every directory keeps the entry changes made since its last `sync_dir` (creations of
//! files and directories, renames, removals), in order. [`MemStorage::crash`] builds the
//! image a power cut would leave, following SQLite's crash test semantics and ALICE's
//! model of what file systems may persist:
//!
//! * each unsynced write is cut into pieces (whole, three parts at random points, 4096-byte
//!   pages or 512-byte sectors, see [`CrashMode`]) and each piece is kept, dropped,
//!   overwritten with garbage or with zeros;
//! * space a write adds past the durable end of a file, if it appears at all, reads as the
//!   written bytes, zeros or garbage; an unsynced `set_len` may or may not happen;
//! * each directory keeps an ordered prefix of its unsynced entry changes (none, some, or
//!   all of them): an unsynced creation, rename or removal may vanish, later ones never
//!   survive without the earlier ones of the same directory, and a new directory is an
//!   entry of its parent like any other, so it and everything in it may vanish until the
//!   parent is synced.
//!
//! `Storage::sync_fs` (`syncfs`) makes every pending write and entry change durable at
//! once.
//!
//! [`MemStorage::halt_after_syncs`] stops the "machine" at a chosen sync: that sync and
//! every later mutating call fail, so a test can sweep the crash point over every sync of
//! a workload.
//!
//! Paths are compared after dropping `.` components, and the empty path is the root, which
//! always exists and is durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Bytes, FileKind, FileStat, LockGuard, OpenMode, SplitMix64, Storage, StorageFile};

/// How unsynced writes are cut into independently surviving pieces at a simulated crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Each write survives, vanishes or turns to garbage as a whole.
    Whole,
    /// Each write is cut in three parts at random points (ALICE).
    ThreeParts,
    /// Each write is cut at 4096-byte page boundaries.
    Pages,
    /// Each write is cut at 512-byte sector boundaries (SQLite's crash tests).
    Sectors,
    /// Every unsynced write and directory change is lost: the image is exactly what was
    /// made durable. Not part of [`CrashMode::ALL`]; tests use it to check that something
    /// was synced at all.
    DurableOnly,
}

impl CrashMode {
    /// Every mode, for sweeps.
    pub const ALL: [CrashMode; 4] = [
        CrashMode::Whole,
        CrashMode::ThreeParts,
        CrashMode::Pages,
        CrashMode::Sectors,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct MemFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

/// Writes `data` into `out` at `offset`, growing it with zeros if needed.
fn put(out: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if out.len() < end {
        out.resize(end, 0);
    }
    out[offset..end].copy_from_slice(data);
}

impl MemFile {
    /// Applies every pending change to the durable image, in order: afterwards it equals
    /// the live image, unless a failed sync lost changes (see
    /// [`MemStorage::fail_sync_losing_data`]).
    fn sync(&mut self) {
        for p in self.pending.drain(..) {
            match p {
                Pending::Write { offset, data } => put(&mut self.durable, offset as usize, &data),
                Pending::SetLen(len) => self.durable.resize(len as usize, 0),
            }
        }
    }

    /// The content a power cut leaves.
    fn crash_image(&self, rng: &mut SplitMix64, mode: CrashMode) -> Vec<u8> {
        let mut out = self.durable.clone();
        if mode == CrashMode::DurableOnly {
            return out;
        }
        for p in &self.pending {
            match p {
                Pending::SetLen(len) => {
                    // Extending with `set_len` reads as zeros on every file system.
                    if rng.below(2) == 0 {
                        out.resize(*len as usize, 0);
                    }
                }
                Pending::Write { offset, data } => {
                    let offset = *offset;
                    for (start, end) in pieces(offset, offset + data.len() as u64, mode, rng) {
                        let (s, e) = (start as usize, end as usize);
                        let piece = &data[s - offset as usize..e - offset as usize];
                        match rng.below(4) {
                            // Dropped: the old bytes stay, and the file does not grow.
                            0 => {}
                            // Kept: the bytes written.
                            1 => {
                                grow(&mut out, s, rng);
                                put(&mut out, s, piece);
                            }
                            // Garbage: the sector was being written when power failed.
                            2 => {
                                grow(&mut out, s, rng);
                                let mut junk = vec![0u8; e - s];
                                rng.fill(&mut junk);
                                put(&mut out, s, &junk);
                            }
                            // Zeros: the file's size reached past the data, or the device
                            // returned a zeroed sector.
                            _ => {
                                grow(&mut out, s, rng);
                                put(&mut out, s, &vec![0u8; e - s]);
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// Grows `out` to `len` bytes, filling the new space with zeros or garbage: what a hole
/// before a surviving piece reads as.
fn grow(out: &mut Vec<u8>, len: usize, rng: &mut SplitMix64) {
    if out.len() < len {
        let old = out.len();
        out.resize(len, 0);
        if rng.below(2) == 0 {
            rng.fill(&mut out[old..len]);
        }
    }
}

fn pieces(start: u64, end: u64, mode: CrashMode, rng: &mut SplitMix64) -> Vec<(u64, u64)> {
    if start >= end {
        return Vec::new();
    }
    let aligned = |unit: u64| {
        let mut v = Vec::new();
        let mut s = start;
        while s < end {
            let e = ((s / unit) + 1) * unit;
            let e = e.min(end);
            v.push((s, e));
            s = e;
        }
        v
    };
    match mode {
        CrashMode::Whole | CrashMode::DurableOnly => vec![(start, end)],
        CrashMode::ThreeParts => {
            let len = end - start;
            let mut a = start + rng.below(len + 1);
            let mut b = start + rng.below(len + 1);
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            [(start, a), (a, b), (b, end)]
                .into_iter()
                .filter(|(s, e)| s < e)
                .collect()
        }
        CrashMode::Pages => aligned(4096),
        CrashMode::Sectors => aligned(512),
    }
}

/// An unsynced change to a directory's entries.
#[derive(Clone, Debug)]
enum DirOp {
    /// An entry appeared (a new file or directory, or the target of a cross-directory
    /// rename).
    Link(PathBuf, Node),
    /// An entry went away (a removal, or the source of a cross-directory rename).
    Unlink(PathBuf),
    /// A rename inside one directory, which file systems make atomic.
    Rename(PathBuf, PathBuf, Node),
}

impl DirOp {
    fn apply(&self, map: &mut BTreeMap<PathBuf, Node>) {
        match self {
            DirOp::Link(p, n) => {
                map.insert(p.clone(), *n);
            }
            DirOp::Unlink(p) => {
                map.remove(p);
            }
            DirOp::Rename(from, to, n) => {
                map.remove(from);
                map.insert(to.clone(), *n);
            }
        }
    }
}

/// What a writer lock is taken on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LockKey {
    Dir(PathBuf),
    File(u64),
}

/// Drops `.` components, so `./data` and `data` name the same entry and `.` is the root.
fn norm(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[derive(Debug, Default)]
struct MemFs {
    /// Every entry as a running process sees it. The root (the empty path) is implicit.
    live: BTreeMap<PathBuf, Node>,
    /// Every entry as of the last sync of its directory.
    durable: BTreeMap<PathBuf, Node>,
    /// Unsynced entry changes, oldest first, each with the directory it changes.
    dir_ops: Vec<(PathBuf, DirOp)>,
    files: HashMap<u64, MemFile>,
    /// Writer locks held: like `flock`, on a directory and on a file (by identity, not
    /// name, so removing a locked file does not release its lock).
    locks: BTreeSet<LockKey>,
    next_id: u64,
    syncs: u64,
    halt_after_syncs: Option<u64>,
    halted: bool,
    /// The file sync with this number fails and loses the file's unsynced writes.
    lose_at_sync: Option<u64>,
}

fn halted_error() -> io::Error {
    io::Error::other("simulated power loss: the storage has halted")
}

impl MemFs {
    fn check_alive(&self) -> io::Result<()> {
        if self.halted {
            Err(halted_error())
        } else {
            Ok(())
        }
    }

    /// Counts a sync; fails it (and halts the storage) when the crash point is reached.
    fn count_sync(&mut self) -> io::Result<()> {
        self.check_alive()?;
        if let Some(limit) = self.halt_after_syncs
            && self.syncs >= limit
        {
            self.halted = true;
            return Err(halted_error());
        }
        self.syncs += 1;
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.as_os_str().is_empty() || self.live.get(path) == Some(&Node::Dir)
    }

    fn parent_is_dir(&self, path: &Path) -> io::Result<()> {
        let parent = parent_of(path);
        if self.is_dir(&parent) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} does not exist", parent.display()),
            ))
        }
    }

    fn file_id(&self, path: &Path) -> io::Result<u64> {
        match self.live.get(path) {
            Some(Node::File(id)) => Ok(*id),
            Some(Node::Dir) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", path.display()),
            )),
        }
    }

    /// Records an entry change: live at once, durable when its directory is synced.
    fn change(&mut self, dir: PathBuf, op: DirOp) {
        op.apply(&mut self.live);
        self.dir_ops.push((dir, op));
    }

    fn new_file(&mut self, path: &Path) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.files.insert(id, MemFile::default());
        self.change(
            parent_of(path),
            DirOp::Link(path.to_path_buf(), Node::File(id)),
        );
        id
    }

    /// An entry that is durable at once (test set-up and lock files, whose durability
    /// does not matter).
    fn new_durable_file(&mut self, path: &Path) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.files.insert(id, MemFile::default());
        self.live.insert(path.to_path_buf(), Node::File(id));
        self.durable.insert(path.to_path_buf(), Node::File(id));
        id
    }
}

/// The in-memory file system. Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    fs: Arc<Mutex<MemFs>>,
}

impl MemStorage {
    /// An empty file system.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemFs> {
        // A panic while holding this lock can only come from a bug in this module; the data
        // is still usable for the test that is failing, so poisoning is ignored.
        self.fs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of syncs (file or directory) performed so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Once `n` syncs have succeeded in total, the next sync fails and every later mutating
    /// call fails too, as if the machine lost power there.
    pub fn halt_after_syncs(&self, n: u64) {
        self.lock().halt_after_syncs = Some(n);
    }

    /// The file sync (`sync_data`/`sync_all`) that would be the `n`-th sync overall (counting
    /// from 0, like [`MemStorage::halt_after_syncs`]) fails with EIO, once, the way Linux
    /// fails an `fsync` after a write-back error: the file's unsynced writes are dropped
    /// from the durable image (their pages are marked clean) but stay visible to readers,
    /// so a later successful sync does not save them. Directory syncs are not affected;
    /// a directory sync at that number lets the next file sync fail instead.
    pub fn fail_sync_losing_data(&self, n: u64) {
        self.lock().lose_at_sync = Some(n);
    }

    /// Ends a halt as a process kill rather than a power cut: the machine keeps running,
    /// so every write the dead process made stays visible, durable only where it was
    /// synced, and the storage accepts writes again. A later [`MemStorage::crash`] then
    /// models a power cut that follows the restart.
    pub fn restart_process(&self) {
        let mut fs = self.lock();
        fs.halted = false;
        fs.halt_after_syncs = None;
    }

    /// Whether the storage has halted (see [`MemStorage::halt_after_syncs`]).
    pub fn is_halted(&self) -> bool {
        self.lock().halted
    }

    /// The file system a power cut would leave now: durable bytes plus each unsynced
    /// write's pieces kept, dropped, garbled or zeroed, and each directory's durable
    /// entries plus a prefix of its unsynced changes (see the module documentation).
    /// Deterministic for a given `seed`. Locks are not carried over.
    pub fn crash(&self, seed: u64, mode: CrashMode) -> MemStorage {
        let fs = self.lock();
        let mut rng = SplitMix64::new(seed);
        let mut entries = fs.durable.clone();
        let mut dirs: Vec<&PathBuf> = fs.dir_ops.iter().map(|(d, _)| d).collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            let ops: Vec<&DirOp> = fs
                .dir_ops
                .iter()
                .filter(|(d, _)| d == dir)
                .map(|(_, op)| op)
                .collect();
            let keep = match mode {
                CrashMode::DurableOnly => 0,
                _ => rng.below(ops.len() as u64 + 1) as usize,
            };
            for op in &ops[..keep] {
                op.apply(&mut entries);
            }
        }
        // An entry survives only if every directory above it does.
        let reachable = |p: &Path| {
            p.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .all(|a| entries.get(a) == Some(&Node::Dir))
        };
        let mut new = MemFs::default();
        let mut images: HashMap<u64, u64> = HashMap::new();
        for (path, node) in &entries {
            if !reachable(path) {
                continue;
            }
            let node = match node {
                Node::Dir => Node::Dir,
                Node::File(id) => {
                    let new_id = match images.get(id) {
                        Some(n) => *n,
                        None => {
                            let content = fs
                                .files
                                .get(id)
                                .map(|f| f.crash_image(&mut rng, mode))
                                .unwrap_or_default();
                            new.next_id += 1;
                            let n = new.next_id;
                            new.files.insert(
                                n,
                                MemFile {
                                    live: content.clone(),
                                    durable: content,
                                    pending: Vec::new(),
                                },
                            );
                            images.insert(*id, n);
                            n
                        }
                    };
                    Node::File(new_id)
                }
            };
            new.live.insert(path.clone(), node);
        }
        new.durable = new.live.clone();
        MemStorage {
            fs: Arc::new(Mutex::new(new)),
        }
    }

    /// A copy of everything as a running process sees it (live bytes), fully durable.
    /// Used to model a process kill without power loss.
    pub fn kill_image(&self) -> MemStorage {
        let fs = self.lock();
        let mut new = MemFs {
            live: fs.live.clone(),
            next_id: fs.next_id,
            ..MemFs::default()
        };
        for (id, f) in &fs.files {
            new.files.insert(
                *id,
                MemFile {
                    live: f.live.clone(),
                    durable: f.live.clone(),
                    pending: Vec::new(),
                },
            );
        }
        new.durable = new.live.clone();
        MemStorage {
            fs: Arc::new(Mutex::new(new)),
        }
    }

    /// Live content of a file, for tests that inspect or damage bytes directly.
    pub fn file_content(&self, path: &Path) -> io::Result<Vec<u8>> {
        let path = norm(path);
        let fs = self.lock();
        let id = fs.file_id(&path)?;
        Ok(fs
            .files
            .get(&id)
            .map(|f| f.live.clone())
            .unwrap_or_default())
    }

    /// Replaces a file's content, live and durable (a test's way to damage a file). A new
    /// file is durable at once.
    pub fn set_file_content(&self, path: &Path, content: Vec<u8>) -> io::Result<()> {
        let path = norm(path);
        let mut fs = self.lock();
        let id = match fs.file_id(&path) {
            Ok(id) => id,
            Err(_) => {
                fs.parent_is_dir(&path)?;
                fs.new_durable_file(&path)
            }
        };
        let f = fs.files.entry(id).or_default();
        f.live = content.clone();
        f.durable = content;
        f.pending.clear();
        Ok(())
    }
}

impl MemStorage {
    /// A rename of a file; with `no_replace`, refused when something is at `to`.
    fn rename_as(&self, from: &Path, to: &Path, no_replace: bool) -> io::Result<()> {
        let (from, to) = (norm(from), norm(to));
        let mut fs = self.lock();
        fs.check_alive()?;
        let id = fs.file_id(&from)?;
        fs.parent_is_dir(&to)?;
        if no_replace && (fs.is_dir(&to) || fs.live.contains_key(&to)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", to.display()),
            ));
        }
        if fs.live.get(&to) == Some(&Node::Dir) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", to.display()),
            ));
        }
        let (from_dir, to_dir) = (parent_of(&from), parent_of(&to));
        if from_dir == to_dir {
            fs.change(from_dir, DirOp::Rename(from, to, Node::File(id)));
        } else {
            fs.change(to_dir, DirOp::Link(to, Node::File(id)));
            fs.change(from_dir, DirOp::Unlink(from));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MemHandle {
    fs: Arc<Mutex<MemFs>>,
    id: u64,
    writable: bool,
}

impl MemHandle {
    fn lock(&self) -> MutexGuard<'_, MemFs> {
        self.fs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "file opened read-only")
}

impl StorageFile for MemHandle {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(read_only_error());
        }
        let mut fs = self.lock();
        fs.check_alive()?;
        let f = fs.files.entry(self.id).or_default();
        put(&mut f.live, offset as usize, buf);
        f.pending.push(Pending::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let fs = self.lock();
        let Some(f) = fs.files.get(&self.id) else {
            return Ok(0);
        };
        let start = (offset as usize).min(f.live.len());
        let n = buf.len().min(f.live.len() - start);
        buf[..n].copy_from_slice(&f.live[start..start + n]);
        Ok(n)
    }

    fn len(&mut self) -> io::Result<u64> {
        let fs = self.lock();
        Ok(fs.files.get(&self.id).map_or(0, |f| f.live.len() as u64))
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only_error());
        }
        let mut fs = self.lock();
        fs.check_alive()?;
        let f = fs.files.entry(self.id).or_default();
        f.live.resize(len as usize, 0);
        f.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut fs = self.lock();
        fs.count_sync()?;
        if fs.lose_at_sync.is_some_and(|n| fs.syncs > n) {
            fs.lose_at_sync = None;
            if let Some(f) = fs.files.get_mut(&self.id) {
                f.pending.clear();
            }
            return Err(io::Error::from_raw_os_error(5));
        }
        if let Some(f) = fs.files.get_mut(&self.id) {
            f.sync();
        }
        Ok(())
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

#[derive(Debug)]
struct MemLock {
    fs: Arc<Mutex<MemFs>>,
    keys: [LockKey; 2],
}

impl LockGuard for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut fs = self.fs.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            fs.locks.remove(k);
        }
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut fs = self.lock();
        fs.check_alive()?;
        let mut cur = PathBuf::new();
        for c in path.components() {
            let parent = cur.clone();
            cur.push(c);
            match fs.live.get(&cur) {
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file", cur.display()),
                    ));
                }
                Some(Node::Dir) => {}
                None => fs.change(parent, DirOp::Link(cur.clone(), Node::Dir)),
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = norm(path);
        let fs = self.lock();
        if !fs.is_dir(&path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} not found", path.display()),
            ));
        }
        let mut names: Vec<String> = fs
            .live
            .keys()
            .filter(|p| p.parent() == Some(path.as_path()))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let path = norm(path);
        let fs = self.lock();
        Ok(fs.is_dir(&path) || fs.live.contains_key(&path))
    }

    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        let path = norm(path);
        let fs = self.lock();
        Ok(if fs.is_dir(&path) {
            Some(FileKind::Dir)
        } else {
            fs.live.get(&path).map(|_| FileKind::File)
        })
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let path = norm(path);
        let path = path.as_path();
        let mut fs = self.lock();
        let (id, writable) = match mode {
            OpenMode::Read => (fs.file_id(path)?, false),
            OpenMode::ReadWrite => (fs.file_id(path)?, true),
            OpenMode::CreateNew => {
                fs.check_alive()?;
                if fs.live.contains_key(path) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists", path.display()),
                    ));
                }
                fs.parent_is_dir(path)?;
                (fs.new_file(path), true)
            }
            OpenMode::CreateTruncate => {
                fs.check_alive()?;
                fs.parent_is_dir(path)?;
                match fs.live.get(path) {
                    Some(Node::File(id)) => {
                        let id = *id;
                        if let Some(f) = fs.files.get_mut(&id) {
                            f.live.clear();
                            f.pending.push(Pending::SetLen(0));
                        }
                        (id, true)
                    }
                    Some(Node::Dir) => {
                        return Err(io::Error::new(
                            io::ErrorKind::IsADirectory,
                            format!("{} is a directory", path.display()),
                        ));
                    }
                    None => (fs.new_file(path), true),
                }
            }
        };
        Ok(Box::new(MemHandle {
            fs: Arc::clone(&self.fs),
            id,
            writable,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Bytes> {
        let path = norm(path);
        let fs = self.lock();
        let id = fs.file_id(&path)?;
        Ok(Bytes::Owned(
            fs.files
                .get(&id)
                .map(|f| f.live.clone())
                .unwrap_or_default(),
        ))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename_as(from, to, false)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename_as(from, to, true)
    }

    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        let path = norm(path);
        let fs = self.lock();
        if fs.is_dir(&path) {
            return Ok(Some(FileStat {
                kind: FileKind::Dir,
                len: 0,
                version: None,
            }));
        }
        let Some(Node::File(id)) = fs.live.get(&path).copied() else {
            return Ok(None);
        };
        let live = fs
            .files
            .get(&id)
            .map(|f| f.live.as_slice())
            .unwrap_or_default();
        Ok(Some(FileStat {
            kind: FileKind::File,
            len: live.len() as u64,
            version: Some(super::mix(&[
                id,
                live.len() as u64,
                u64::from(crc32fast::hash(live)),
            ])),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut fs = self.lock();
        fs.check_alive()?;
        fs.file_id(&path)?;
        fs.change(parent_of(&path), DirOp::Unlink(path));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut fs = self.lock();
        if !fs.is_dir(&path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} not found", path.display()),
            ));
        }
        fs.count_sync()?;
        let ops = std::mem::take(&mut fs.dir_ops);
        for (dir, op) in ops {
            if dir == path {
                op.apply(&mut fs.durable);
            } else {
                fs.dir_ops.push((dir, op));
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable, as `syncfs` does: every file's pending
    /// writes and every directory's entry changes. Counts as one sync (for
    /// [`MemStorage::halt_after_syncs`]). A file whose failed sync lost its writes
    /// ([`MemStorage::fail_sync_losing_data`]) keeps only what it had left.
    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut fs = self.lock();
        if !fs.is_dir(&path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} not found", path.display()),
            ));
        }
        fs.count_sync()?;
        for f in fs.files.values_mut() {
            f.sync();
        }
        let ops = std::mem::take(&mut fs.dir_ops);
        let fs = &mut *fs;
        for (_, op) in ops {
            op.apply(&mut fs.durable);
        }
        Ok(())
    }

    /// Locks the directory holding `path` and the file at `path` (created if missing),
    /// like the real file system's `flock`s: the file's lock belongs to the file, not its
    /// name, and the directory's lock outlives a removal of the file.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let path = norm(path);
        let mut fs = self.lock();
        fs.check_alive()?;
        fs.parent_is_dir(&path)?;
        let id = match fs.live.get(&path) {
            Some(_) => fs.file_id(&path)?,
            None => fs.new_durable_file(&path),
        };
        let keys = [LockKey::Dir(parent_of(&path)), LockKey::File(id)];
        if keys.iter().any(|k| fs.locks.contains(k)) {
            return Ok(None);
        }
        for k in &keys {
            fs.locks.insert(k.clone());
        }
        Ok(Some(Box::new(MemLock {
            fs: Arc::clone(&self.fs),
            keys,
        })))
    }

    fn is_locked(&self, path: &Path) -> io::Result<bool> {
        let path = norm(path);
        let fs = self.lock();
        fs.check_alive()?;
        let file = fs.live.get(&path).and_then(|_| fs.file_id(&path).ok());
        Ok(fs.locks.contains(&LockKey::Dir(parent_of(&path)))
            || file.is_some_and(|id| fs.locks.contains(&LockKey::File(id))))
    }

    /// Within `range` (whole 4 KiB pages), the live image becomes the durable one plus the
    /// unsynced writes: what a sync failure lost (see
    /// [`MemStorage::fail_sync_losing_data`]) stops showing, what is merely unsynced stays.
    fn drop_cached(&self, path: &Path, range: std::ops::Range<u64>) -> io::Result<()> {
        let path = norm(path);
        let mut fs = self.lock();
        fs.check_alive()?;
        let id = fs.file_id(&path)?;
        if let Some(f) = fs.files.get_mut(&id) {
            let mut device = f.durable.clone();
            for p in &f.pending {
                match p {
                    Pending::Write { offset, data } => put(&mut device, *offset as usize, data),
                    Pending::SetLen(len) => device.resize(*len as usize, 0),
                }
            }
            let r = super::page_range(range);
            let end = usize::try_from(r.end)
                .unwrap_or(usize::MAX)
                .min(f.live.len())
                .min(device.len());
            let start = usize::try_from(r.start).unwrap_or(usize::MAX).min(end);
            f.live[start..end].copy_from_slice(&device[start..end]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(s: &MemStorage, path: &str, data: &[u8], sync: bool) {
        let mut f = s.open(Path::new(path), OpenMode::CreateTruncate).unwrap();
        f.write_at(0, data).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
    }

    /// Creates directory `d` and makes its entry in the root durable.
    fn durable_dir(s: &MemStorage, d: &str) {
        s.create_dir_all(Path::new(d)).unwrap();
        s.sync_dir(Path::new("")).unwrap();
    }

    #[test]
    fn synced_data_survives_every_crash() {
        let s = MemStorage::new();
        durable_dir(&s, "d");
        write(&s, "d/a", b"hello", true);
        s.sync_dir(Path::new("d")).unwrap();
        for seed in 0..50 {
            for mode in CrashMode::ALL {
                let c = s.crash(seed, mode);
                assert_eq!(c.file_content(Path::new("d/a")).unwrap(), b"hello");
            }
        }
    }

    #[test]
    fn unsynced_writes_are_sometimes_kept_dropped_garbled_or_zeroed() {
        let s = MemStorage::new();
        durable_dir(&s, "d");
        write(&s, "d/a", &[1u8; 4096], true);
        s.sync_dir(Path::new("d")).unwrap();
        let mut f = s.open(Path::new("d/a"), OpenMode::ReadWrite).unwrap();
        f.write_at(0, &[7u8; 4096]).unwrap();
        let (mut kept, mut dropped, mut garbled, mut zeroed) = (false, false, false, false);
        for seed in 0..200 {
            let c = s.crash(seed, CrashMode::Sectors);
            let content = c.file_content(Path::new("d/a")).unwrap();
            assert_eq!(content.len(), 4096);
            for sector in content.chunks(512) {
                if sector.iter().all(|&b| b == 7) {
                    kept = true;
                } else if sector.iter().all(|&b| b == 1) {
                    dropped = true;
                } else if sector.iter().all(|&b| b == 0) {
                    zeroed = true;
                } else {
                    garbled = true;
                }
            }
        }
        assert!(kept && dropped && garbled && zeroed);
    }

    #[test]
    fn an_unsynced_append_may_leave_the_file_short_or_grown_with_zeros_or_garbage() {
        let s = MemStorage::new();
        durable_dir(&s, "d");
        write(&s, "d/a", b"head", true);
        s.sync_dir(Path::new("d")).unwrap();
        let mut f = s.open(Path::new("d/a"), OpenMode::ReadWrite).unwrap();
        f.write_at(4, &[9u8; 1000]).unwrap();
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let c = s.crash(seed, CrashMode::ThreeParts);
            let content = c.file_content(Path::new("d/a")).unwrap();
            assert_eq!(&content[..4], b"head", "synced bytes changed");
            let tail = &content[4..];
            seen.insert(match tail {
                [] => "short",
                t if t.iter().all(|&b| b == 9) && t.len() == 1000 => "whole",
                t if t.iter().all(|&b| b == 0) => "zeros",
                _ => "mixed",
            });
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
    }

    #[test]
    fn an_unsynced_rename_may_vanish() {
        let s = MemStorage::new();
        durable_dir(&s, "d");
        write(&s, "d/tmp", b"x", true);
        s.sync_dir(Path::new("d")).unwrap();
        s.rename(Path::new("d/tmp"), Path::new("d/final")).unwrap();
        let outcomes: BTreeSet<Vec<String>> = (0..40)
            .map(|seed| {
                s.crash(seed, CrashMode::Whole)
                    .list_dir(Path::new("d"))
                    .unwrap()
            })
            .collect();
        assert!(outcomes.contains(&vec!["tmp".to_string()]));
        assert!(outcomes.contains(&vec!["final".to_string()]));
        assert_eq!(outcomes.len(), 2, "a rename is atomic: {outcomes:?}");
        s.sync_dir(Path::new("d")).unwrap();
        let c = s.crash(1, CrashMode::Whole);
        assert_eq!(
            c.list_dir(Path::new("d")).unwrap(),
            vec!["final".to_string()]
        );
    }

    #[test]
    fn unsynced_entry_changes_survive_only_as_an_ordered_prefix() {
        let s = MemStorage::new();
        durable_dir(&s, "d");
        for name in ["a", "b", "c"] {
            write(&s, &format!("d/{name}"), b"x", true);
        }
        let outcomes: BTreeSet<Vec<String>> = (0..100)
            .map(|seed| {
                s.crash(seed, CrashMode::Whole)
                    .list_dir(Path::new("d"))
                    .unwrap()
            })
            .collect();
        let expected: BTreeSet<Vec<String>> =
            [vec![], vec!["a"], vec!["a", "b"], vec!["a", "b", "c"]]
                .into_iter()
                .map(|v| v.into_iter().map(String::from).collect())
                .collect();
        assert_eq!(outcomes, expected);
    }

    #[test]
    fn a_new_directory_and_its_files_may_vanish_until_its_parent_is_synced() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("root/sub")).unwrap();
        write(&s, "root/sub/f", b"data", true);
        s.sync_dir(Path::new("root/sub")).unwrap();
        s.sync_dir(Path::new("root")).unwrap();
        let survived = (0..40)
            .filter(|&seed| {
                s.crash(seed, CrashMode::Whole)
                    .exists(Path::new("root/sub/f"))
                    .unwrap()
            })
            .count();
        assert!(0 < survived && survived < 40, "{survived} of 40");
        // `.` names the root.
        s.sync_dir(Path::new(".")).unwrap();
        for seed in 0..40 {
            let c = s.crash(seed, CrashMode::Whole);
            assert_eq!(c.file_content(Path::new("root/sub/f")).unwrap(), b"data");
        }
    }

    #[test]
    fn syncing_a_missing_directory_is_an_error() {
        let s = MemStorage::new();
        let err = s.sync_dir(Path::new("nope")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn sync_fs_makes_every_write_and_entry_durable() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("d/e")).unwrap();
        crate::storage::write_atomic_unsynced(&s, Path::new("d/e/f"), b"new").unwrap();
        let mut h = s.open(Path::new("d/g"), OpenMode::CreateNew).unwrap();
        h.write_at(0, b"gg").unwrap();
        drop(h);
        // Nothing is durable yet.
        let lost = s.crash(1, CrashMode::DurableOnly);
        assert!(!lost.exists(Path::new("d")).unwrap());
        s.sync_fs(Path::new("d")).unwrap();
        let kept = s.crash(1, CrashMode::DurableOnly);
        assert_eq!(kept.file_content(Path::new("d/e/f")).unwrap(), b"new");
        assert_eq!(kept.file_content(Path::new("d/g")).unwrap(), b"gg");
        assert_eq!(kept.list_dir(Path::new("d/e")).unwrap(), vec!["f"]);
    }

    #[test]
    fn halting_fails_the_chosen_sync_and_everything_after() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("d")).unwrap();
        s.halt_after_syncs(1);
        write(&s, "d/a", b"1", true);
        let mut f = s.open(Path::new("d/a"), OpenMode::ReadWrite).unwrap();
        assert!(f.sync_data().is_err());
        assert!(f.write_at(0, b"2").is_err());
        assert!(s.is_halted());
    }

    /// A durable file `d/a` holding `old`, then `new` written at its start and lost by a
    /// failed sync. Returns the open file.
    fn lose_a_write(s: &MemStorage, old: &[u8]) -> Box<dyn StorageFile> {
        durable_dir(s, "d");
        write(s, "d/a", old, true);
        s.sync_dir(Path::new("d")).unwrap();
        let mut f = s.open(Path::new("d/a"), OpenMode::ReadWrite).unwrap();
        f.write_at(0, b"new").unwrap();
        s.fail_sync_losing_data(s.sync_count());
        assert!(f.sync_data().is_err());
        f
    }

    #[test]
    fn dropping_the_cache_shows_lost_writes_gone_and_keeps_unsynced_ones() {
        let s = MemStorage::new();
        let mut f = lose_a_write(&s, b"old-old");
        // Lost, yet still shown, like Linux after a write-back error.
        assert_eq!(&*s.read(Path::new("d/a")).unwrap(), b"new-old");
        // An unsynced (dirty) write after the failure stays visible.
        f.write_at(4, b"NEW").unwrap();
        s.drop_cached(Path::new("d/a"), 1..2).unwrap();
        assert_eq!(&*s.read(Path::new("d/a")).unwrap(), b"old-NEW");
        assert!(s.drop_cached(Path::new("d/missing"), 0..1).is_err());
    }

    #[test]
    fn a_failed_sync_can_lose_the_unsynced_writes_for_good() {
        let s = MemStorage::new();
        let mut f = lose_a_write(&s, b"old");
        assert_eq!(s.file_content(Path::new("d/a")).unwrap(), b"new");
        f.sync_data().unwrap();
        for seed in 0..20 {
            let c = s.crash(seed, CrashMode::Whole);
            assert_eq!(c.file_content(Path::new("d/a")).unwrap(), b"old");
        }
        // Writing the bytes again makes them dirty, and the next sync saves them.
        f.write_at(0, b"new").unwrap();
        f.sync_data().unwrap();
        let c = s.crash(0, CrashMode::Whole);
        assert_eq!(c.file_content(Path::new("d/a")).unwrap(), b"new");
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let s = MemStorage::new();
        let g = s.try_lock(Path::new("LOCK")).unwrap();
        assert!(g.is_some());
        assert!(s.try_lock(Path::new("LOCK")).unwrap().is_none());
        drop(g);
        assert!(s.try_lock(Path::new("LOCK")).unwrap().is_some());
    }

    #[test]
    fn deleting_lock_while_it_is_held_does_not_let_a_second_holder_in() {
        let s = MemStorage::new();
        durable_dir(&s, "d");
        let g = s.try_lock(Path::new("d/LOCK")).unwrap();
        assert!(g.is_some());
        s.remove_file(Path::new("d/LOCK")).unwrap();
        assert!(!s.exists(Path::new("d/LOCK")).unwrap());
        assert!(s.try_lock(Path::new("d/LOCK")).unwrap().is_none());
        // Another directory's lock is another lock.
        durable_dir(&s, "e");
        assert!(s.try_lock(Path::new("e/LOCK")).unwrap().is_some());
        drop(g);
        assert!(s.try_lock(Path::new("d/LOCK")).unwrap().is_some());
    }

    #[test]
    fn is_locked_tells_a_held_lock_and_creates_nothing() {
        let s = MemStorage::new();
        durable_dir(&s, "d");
        let lock = Path::new("d/LOCK");
        assert!(!s.is_locked(lock).unwrap());
        assert!(!s.exists(lock).unwrap(), "asking created the lock file");
        let g = s.try_lock(lock).unwrap().unwrap();
        assert!(s.is_locked(lock).unwrap());
        s.remove_file(lock).unwrap();
        assert!(
            s.is_locked(lock).unwrap(),
            "the directory's lock is still held"
        );
        drop(g);
        assert!(!s.is_locked(lock).unwrap());
    }
}
