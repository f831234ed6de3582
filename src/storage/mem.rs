//! An in-memory file system with a *live* and a *durable* image, for tests and crash
//! simulation.
//!
//! Every file keeps the bytes a running process sees (`live`) and the bytes that survived
//! the last `sync_data`/`sync_all` (`durable`), plus the list of writes made since. Every
//! directory entry (create, rename, remove) becomes durable when its directory is synced.
//! [`MemStorage::crash`] builds the image a power cut would leave, following SQLite's crash
//! test semantics: each unsynced write is cut into pieces (whole, three parts, 4096-byte
//! aligned pages or 512-byte sectors, see [`CrashMode`]) and each piece is kept, dropped
//! or overwritten with garbage; space a kept piece adds past the durable end is filled
//! with zeros or garbage; each directory keeps either its durable or its live listing.
//!
//! [`MemStorage::halt_after_syncs`] stops the "machine" at a chosen sync: that sync and
//! every later mutating call fail, so the test can sweep the crash point over every sync of
//! a workload. Directories themselves are durable as soon as they are created.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Bytes, LockGuard, OpenMode, SplitMix64, Storage, StorageFile};

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

#[derive(Clone, Copy, Debug)]
enum Pending {
    Write { offset: u64, len: u64 },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct MemFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

impl MemFile {
    fn sync(&mut self) {
        if self.pending.iter().any(|p| matches!(p, Pending::SetLen(_))) {
            self.durable = self.live.clone();
        } else {
            self.durable.resize(self.live.len(), 0);
            for p in &self.pending {
                if let Pending::Write { offset, len } = *p {
                    let (o, l) = (offset as usize, len as usize);
                    let end = (o + l).min(self.live.len());
                    if o < end {
                        self.durable[o..end].copy_from_slice(&self.live[o..end]);
                    }
                }
            }
        }
        self.pending.clear();
    }

    /// The content a power cut leaves.
    fn crash_image(&self, rng: &mut SplitMix64, mode: CrashMode) -> Vec<u8> {
        let mut out = self.durable.clone();
        for p in &self.pending {
            match *p {
                Pending::SetLen(len) => {
                    if rng.below(2) == 0 {
                        out.resize(len as usize, 0);
                    }
                }
                Pending::Write { offset, len } => {
                    for (start, end) in pieces(offset, offset + len, mode, rng) {
                        let (s, e) = (start as usize, end as usize);
                        match rng.below(3) {
                            0 => continue, // dropped: the old bytes stay
                            1 => {
                                grow(&mut out, e, rng);
                                // Kept: the bytes the process last wrote there.
                                let live_end = e.min(self.live.len());
                                if s < live_end {
                                    out[s..live_end].copy_from_slice(&self.live[s..live_end]);
                                }
                            }
                            _ => {
                                grow(&mut out, e, rng);
                                rng.fill(&mut out[s..e]);
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// Grows `out` to `len` bytes, filling the new space with zeros or garbage.
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
        CrashMode::Whole => vec![(start, end)],
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

#[derive(Debug, Default)]
struct MemFs {
    live: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
    files: HashMap<u64, MemFile>,
    locks: BTreeSet<PathBuf>,
    next_id: u64,
    syncs: u64,
    halt_after_syncs: Option<u64>,
    halted: bool,
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

    fn parent_is_dir(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if p.as_os_str().is_empty() => Ok(()),
            Some(p) => match self.live.get(p) {
                Some(Node::Dir) => Ok(()),
                _ => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("directory {} does not exist", p.display()),
                )),
            },
            None => Ok(()),
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

    fn new_file(&mut self, path: &Path) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.files.insert(id, MemFile::default());
        self.live.insert(path.to_path_buf(), Node::File(id));
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

    /// Whether the storage has halted (see [`MemStorage::halt_after_syncs`]).
    pub fn is_halted(&self) -> bool {
        self.lock().halted
    }

    /// The file system a power cut would leave now: durable bytes, plus each unsynced
    /// write's pieces kept, dropped or garbled, and each directory's durable or live
    /// listing. Deterministic for a given `seed`. Locks are not carried over.
    pub fn crash(&self, seed: u64, mode: CrashMode) -> MemStorage {
        let fs = self.lock();
        let mut rng = SplitMix64::new(seed);
        let dirs: Vec<PathBuf> = fs
            .live
            .iter()
            .filter(|(_, n)| **n == Node::Dir)
            .map(|(p, _)| p.clone())
            .collect();
        let mut new = MemFs::default();
        for d in &dirs {
            new.live.insert(d.clone(), Node::Dir);
        }
        let children = |map: &BTreeMap<PathBuf, Node>, dir: &Path| -> Vec<(PathBuf, u64)> {
            map.iter()
                .filter_map(|(p, n)| match n {
                    Node::File(id) if p.parent() == Some(dir) => Some((p.clone(), *id)),
                    _ => None,
                })
                .collect()
        };
        let mut images: HashMap<u64, u64> = HashMap::new();
        let mut roots: Vec<PathBuf> = dirs.clone();
        roots.push(PathBuf::new());
        for d in &roots {
            let live = children(&fs.live, d);
            let durable = children(&fs.durable, d);
            let listing = if live == durable || rng.below(2) == 0 {
                durable
            } else {
                live
            };
            for (path, id) in listing {
                let new_id = match images.get(&id) {
                    Some(n) => *n,
                    None => {
                        let content = fs
                            .files
                            .get(&id)
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
                        images.insert(id, n);
                        n
                    }
                };
                new.live.insert(path, Node::File(new_id));
            }
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
        let fs = self.lock();
        let id = fs.file_id(path)?;
        Ok(fs
            .files
            .get(&id)
            .map(|f| f.live.clone())
            .unwrap_or_default())
    }

    /// Replaces a file's content, live and durable (a test's way to damage a file).
    pub fn set_file_content(&self, path: &Path, content: Vec<u8>) -> io::Result<()> {
        let mut fs = self.lock();
        let id = match fs.file_id(path) {
            Ok(id) => id,
            Err(_) => {
                fs.parent_is_dir(path)?;
                let id = fs.new_file(path);
                fs.durable.insert(path.to_path_buf(), Node::File(id));
                id
            }
        };
        let f = fs.files.entry(id).or_default();
        f.live = content.clone();
        f.durable = content;
        f.pending.clear();
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
        let end = offset as usize + buf.len();
        if f.live.len() < end {
            f.live.resize(end, 0);
        }
        f.live[offset as usize..end].copy_from_slice(buf);
        f.pending.push(Pending::Write {
            offset,
            len: buf.len() as u64,
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
    path: PathBuf,
}

impl LockGuard for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut fs = self.fs.lock().unwrap_or_else(|e| e.into_inner());
        fs.locks.remove(&self.path);
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.lock();
        fs.check_alive()?;
        let mut cur = PathBuf::new();
        for c in path.components() {
            cur.push(c);
            match fs.live.get(&cur) {
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file", cur.display()),
                    ));
                }
                Some(Node::Dir) => {}
                None => {
                    fs.live.insert(cur.clone(), Node::Dir);
                    fs.durable.insert(cur.clone(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let fs = self.lock();
        if path.as_os_str().is_empty() {
            // The root is always there.
        } else if fs.live.get(path) != Some(&Node::Dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} not found", path.display()),
            ));
        }
        let mut names: Vec<String> = fs
            .live
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.lock().live.contains_key(path))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
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
        let fs = self.lock();
        let id = fs.file_id(path)?;
        Ok(Bytes::Owned(
            fs.files
                .get(&id)
                .map(|f| f.live.clone())
                .unwrap_or_default(),
        ))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.lock();
        fs.check_alive()?;
        let id = fs.file_id(from)?;
        fs.parent_is_dir(to)?;
        if fs.live.get(to) == Some(&Node::Dir) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", to.display()),
            ));
        }
        fs.live.remove(from);
        fs.live.insert(to.to_path_buf(), Node::File(id));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.lock();
        fs.check_alive()?;
        fs.file_id(path)?;
        fs.live.remove(path);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.lock();
        fs.count_sync()?;
        let in_dir = |p: &PathBuf, n: &Node| p.parent() == Some(path) && matches!(n, Node::File(_));
        let live: Vec<(PathBuf, Node)> = fs
            .live
            .iter()
            .filter(|(p, n)| in_dir(p, n))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        fs.durable.retain(|p, n| !in_dir(p, n));
        fs.durable.extend(live);
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut fs = self.lock();
        fs.check_alive()?;
        if !fs.live.contains_key(path) {
            fs.parent_is_dir(path)?;
            let id = fs.new_file(path);
            fs.durable.insert(path.to_path_buf(), Node::File(id));
        }
        if !fs.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(MemLock {
            fs: Arc::clone(&self.fs),
            path: path.to_path_buf(),
        })))
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

    #[test]
    fn synced_data_survives_every_crash() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("d")).unwrap();
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
    fn unsynced_writes_are_sometimes_kept_dropped_or_garbled() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("d")).unwrap();
        write(&s, "d/a", &[0u8; 4096], true);
        s.sync_dir(Path::new("d")).unwrap();
        let mut f = s.open(Path::new("d/a"), OpenMode::ReadWrite).unwrap();
        f.write_at(0, &[7u8; 4096]).unwrap();
        let (mut kept, mut dropped, mut garbled) = (false, false, false);
        for seed in 0..200 {
            let c = s.crash(seed, CrashMode::Sectors);
            let content = c.file_content(Path::new("d/a")).unwrap();
            for sector in content.chunks(512) {
                if sector.iter().all(|&b| b == 7) {
                    kept = true;
                } else if sector.iter().all(|&b| b == 0) {
                    dropped = true;
                } else {
                    garbled = true;
                }
            }
        }
        assert!(kept && dropped && garbled);
    }

    #[test]
    fn an_unsynced_rename_may_vanish() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("d")).unwrap();
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
        s.sync_dir(Path::new("d")).unwrap();
        let c = s.crash(1, CrashMode::Whole);
        assert_eq!(
            c.list_dir(Path::new("d")).unwrap(),
            vec!["final".to_string()]
        );
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

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let s = MemStorage::new();
        let g = s.try_lock(Path::new("LOCK")).unwrap();
        assert!(g.is_some());
        assert!(s.try_lock(Path::new("LOCK")).unwrap().is_none());
        drop(g);
        assert!(s.try_lock(Path::new("LOCK")).unwrap().is_some());
    }
}
