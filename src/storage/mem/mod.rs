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

mod model;
mod ops;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::SplitMix64;

pub use model::CrashMode;
use model::*;

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
