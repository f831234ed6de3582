//! [`Storage`] on the model: opening, reading, writing, syncing, renaming, locking.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{Bytes, FileKind, FileStat, LockGuard, OpenMode, Storage, StorageFile};

use super::MemStorage;
use super::model::*;

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
            version: Some(crate::storage::mix(&[
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
        fs.dir_must_exist(&path)?;
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
        fs.dir_must_exist(&path)?;
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
            let r = crate::storage::page_range(range);
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
