//! The model `MemStorage` keeps: files with their live and durable bytes and unsynced
//! writes, directories with their unsynced entry changes, and the crash image of each.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::storage::SplitMix64;

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
pub(super) enum Node {
    Dir,
    File(u64),
}

#[derive(Clone, Debug)]
pub(super) enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
pub(super) struct MemFile {
    pub(super) live: Vec<u8>,
    pub(super) durable: Vec<u8>,
    pub(super) pending: Vec<Pending>,
}

/// Writes `data` into `out` at `offset`, growing it with zeros if needed.
pub(super) fn put(out: &mut Vec<u8>, offset: usize, data: &[u8]) {
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
    pub(super) fn sync(&mut self) {
        for p in self.pending.drain(..) {
            match p {
                Pending::Write { offset, data } => put(&mut self.durable, offset as usize, &data),
                Pending::SetLen(len) => self.durable.resize(len as usize, 0),
            }
        }
    }

    /// The content a power cut leaves.
    pub(super) fn crash_image(&self, rng: &mut SplitMix64, mode: CrashMode) -> Vec<u8> {
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
pub(super) fn grow(out: &mut Vec<u8>, len: usize, rng: &mut SplitMix64) {
    if out.len() < len {
        let old = out.len();
        out.resize(len, 0);
        if rng.below(2) == 0 {
            rng.fill(&mut out[old..len]);
        }
    }
}

pub(super) fn pieces(
    start: u64,
    end: u64,
    mode: CrashMode,
    rng: &mut SplitMix64,
) -> Vec<(u64, u64)> {
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
pub(super) enum DirOp {
    /// An entry appeared (a new file or directory, or the target of a cross-directory
    /// rename).
    Link(PathBuf, Node),
    /// An entry went away (a removal, or the source of a cross-directory rename).
    Unlink(PathBuf),
    /// A rename inside one directory, which file systems make atomic.
    Rename(PathBuf, PathBuf, Node),
}

impl DirOp {
    pub(super) fn apply(&self, map: &mut BTreeMap<PathBuf, Node>) {
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
pub(super) enum LockKey {
    Dir(PathBuf),
    File(u64),
}

/// Drops `.` components, so `./data` and `data` name the same entry and `.` is the root.
pub(super) fn norm(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

pub(super) fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[derive(Debug, Default)]
pub(super) struct MemFs {
    /// Every entry as a running process sees it. The root (the empty path) is implicit.
    pub(super) live: BTreeMap<PathBuf, Node>,
    /// Every entry as of the last sync of its directory.
    pub(super) durable: BTreeMap<PathBuf, Node>,
    /// Unsynced entry changes, oldest first, each with the directory it changes.
    pub(super) dir_ops: Vec<(PathBuf, DirOp)>,
    pub(super) files: HashMap<u64, MemFile>,
    /// Writer locks held: like `flock`, on a directory and on a file (by identity, not
    /// name, so removing a locked file does not release its lock).
    pub(super) locks: BTreeSet<LockKey>,
    pub(super) next_id: u64,
    pub(super) syncs: u64,
    pub(super) halt_after_syncs: Option<u64>,
    pub(super) halted: bool,
    /// The file sync with this number fails and loses the file's unsynced writes.
    pub(super) lose_at_sync: Option<u64>,
}

pub(super) fn halted_error() -> io::Error {
    io::Error::other("simulated power loss: the storage has halted")
}

impl MemFs {
    /// `NotFound` unless `path` is a directory (the root always is).
    pub(super) fn dir_must_exist(&self, path: &Path) -> io::Result<()> {
        if self.is_dir(path) {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("directory {} not found", path.display()),
        ))
    }

    pub(super) fn check_alive(&self) -> io::Result<()> {
        if self.halted {
            Err(halted_error())
        } else {
            Ok(())
        }
    }

    /// Counts a sync; fails it (and halts the storage) when the crash point is reached.
    pub(super) fn count_sync(&mut self) -> io::Result<()> {
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

    pub(super) fn is_dir(&self, path: &Path) -> bool {
        path.as_os_str().is_empty() || self.live.get(path) == Some(&Node::Dir)
    }

    pub(super) fn parent_is_dir(&self, path: &Path) -> io::Result<()> {
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

    pub(super) fn file_id(&self, path: &Path) -> io::Result<u64> {
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
    pub(super) fn change(&mut self, dir: PathBuf, op: DirOp) {
        op.apply(&mut self.live);
        self.dir_ops.push((dir, op));
    }

    pub(super) fn new_file(&mut self, path: &Path) -> u64 {
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
    pub(super) fn new_durable_file(&mut self, path: &Path) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.files.insert(id, MemFile::default());
        self.live.insert(path.to_path_buf(), Node::File(id));
        self.durable.insert(path.to_path_buf(), Node::File(id));
        id
    }
}
