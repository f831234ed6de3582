//! Ownership checks: what the projector's write and remove primitives consult before they
//! touch a path (the rule is in [`super::manifest`]), the reservations of new paths, and
//! the attic files are moved aside into.

use std::sync::MutexGuard;

use super::manifest::{
    ATTIC_DIR, Accept, Entry, Found, MANIFEST_FILE, Manifest, Why, foreign, is_plain_relative,
    own_temp_target,
};
use super::*;
use crate::storage::{FileKind, create_dir_durable};

impl Projection {
    /// The data directory and every folder the projections are written to.
    pub(super) fn all_dirs(&self) -> Vec<PathBuf> {
        std::iter::once(self.paths.root.clone())
            .chain(self.paths.dirs().iter().map(|d| d.to_path_buf()))
            .collect()
    }

    pub(super) fn manifest_path(&self) -> PathBuf {
        self.paths.root.join(MANIFEST_FILE)
    }

    fn manifest_lock(&self) -> MutexGuard<'_, Option<Manifest>> {
        self.manifest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the loaded manifest (an error before the check at open succeeded).
    pub(super) fn with_manifest<T>(
        &self,
        f: impl FnOnce(&mut Manifest) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut guard = self.manifest_lock();
        match guard.as_mut() {
            Some(m) => f(m),
            None => Err(Failure {
                op: "check the projection files",
                path: self.manifest_path(),
                kind: io::ErrorKind::Other,
                message: "the projection files have not been checked yet".into(),
            }),
        }
    }

    /// Whether the manifest is loaded (the check at open succeeded).
    pub(super) fn has_manifest(&self) -> bool {
        self.manifest_lock().is_some()
    }

    /// `path` relative to the data directory, `/`-separated, as the manifest names it.
    pub(super) fn rel(&self, path: &Path) -> Result<String, Failure> {
        let outside = || Failure {
            op: "name a projection file",
            path: path.to_path_buf(),
            kind: io::ErrorKind::InvalidInput,
            message: "not a plain path inside the data directory".into(),
        };
        let rest = path.strip_prefix(&self.paths.root).map_err(|_| outside())?;
        let mut out = String::new();
        for c in rest.components() {
            let std::path::Component::Normal(c) = c else {
                return Err(outside());
            };
            let c = c.to_str().ok_or_else(outside)?;
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(c);
        }
        if is_plain_relative(&out) {
            Ok(out)
        } else {
            Err(outside())
        }
    }

    /// Whether the manifest may name `rel`: the marker, or a file in one of the folders
    /// the projections are written to. Anything else in a manifest is ignored, so a
    /// damaged or planted manifest can never make the engine move its log aside.
    pub(super) fn manageable(&self, rel: &str) -> bool {
        let path = self.paths.root.join(rel);
        path == self.paths.marker
            || path
                .parent()
                .is_some_and(|d| self.paths.dirs().contains(&d))
    }

    /// What the manifest says about `path`.
    pub(super) fn entry(&self, path: &Path) -> Result<Option<Entry>, Failure> {
        let rel = self.rel(path)?;
        self.with_manifest(|m| Ok(m.get(&rel)))
    }

    /// What is at `path`, as far as ownership goes. Cheap for the engine's own unchanged
    /// files (one `stat`); reads the file only when its stat version differs from the one
    /// recorded (and then records the new version if the content is still the same).
    pub(super) fn inspect(&self, path: &Path, accept: Accept<'_>) -> Result<Found, Failure> {
        let rel = self.rel(path)?;
        let entry = self.with_manifest(|m| Ok(m.get(&rel)))?;
        let st = self
            .storage
            .stat(path)
            .map_err(failure("inspect projection file", path))?;
        let Some(st) = st else {
            return Ok(Found::Absent);
        };
        let (len, crc, version) = match entry {
            None => return Ok(Found::Foreign),
            Some(Entry::Reserved) => return Ok(Found::Own),
            Some(Entry::Written { len, crc, version }) => (len, crc, version),
        };
        if st.kind != FileKind::File {
            return Ok(Found::Changed);
        }
        if version.is_some() && st.version == version && st.len == len {
            return Ok(Found::Own);
        }
        let bytes = match self.storage.read(path) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Ok(Found::Absent),
            Err(e) => return Err(failure("read projection file", path)(e)),
        };
        let recorded = bytes.len() as u64 == len && crc32fast::hash(&bytes) == crc;
        let equal = matches!(accept, Accept::OrEqual(b) if *b == *bytes);
        drop(bytes);
        if recorded || equal {
            if recorded {
                self.record_version(path, len, crc)?;
            }
            Ok(Found::Own)
        } else {
            Ok(Found::Changed)
        }
    }

    /// Whether `path` is still exactly what the engine last recorded there, by its stat
    /// version alone (`false` when it cannot tell, or nothing is there).
    pub(super) fn unchanged(&self, path: &Path) -> Result<bool, Failure> {
        let Some(Entry::Written {
            len,
            version: Some(v),
            ..
        }) = self.entry(path)?
        else {
            return Ok(false);
        };
        let st = self
            .storage
            .stat(path)
            .map_err(failure("inspect projection file", path))?;
        Ok(
            st.is_some_and(|st| {
                st.kind == FileKind::File && st.len == len && st.version == Some(v)
            }),
        )
    }

    /// Reserves the paths among `paths` that the manifest does not hold and where nothing
    /// is, durably, with one sync: after a crash, files created there are the engine's.
    /// Paths where something is are left out (the writes to them find a foreign file).
    pub(super) fn reserve(&self, paths: &[PathBuf]) -> Result<(), Failure> {
        let mut fresh = Vec::new();
        for p in paths {
            let rel = self.rel(p)?;
            if self.with_manifest(|m| Ok(m.get(&rel)))?.is_some() {
                continue;
            }
            let there = self
                .storage
                .kind(p)
                .map_err(failure("inspect projection file", p))?;
            if there.is_none() {
                fresh.push(rel);
            }
        }
        self.reserve_rel(&fresh)
    }

    /// Records the relative paths `fresh` in the manifest as reserved for the engine,
    /// durably, with one sync (nothing when there are none).
    pub(super) fn reserve_rel(&self, fresh: &[String]) -> Result<(), Failure> {
        if fresh.is_empty() {
            return Ok(());
        }
        let path = self.manifest_path();
        let storage = Arc::clone(&self.storage);
        self.with_manifest(|m| {
            for rel in fresh {
                m.set(rel, Some(Entry::Reserved));
            }
            m.commit(&*storage, true)
                .map_err(failure("sync projection manifest", &path))
        })
    }

    /// Records that `path` now holds `len` bytes with CRC-32 `crc`, which the engine just
    /// wrote there (written to the manifest by the next commit).
    pub(super) fn record(&self, path: &Path, len: u64, crc: u32) -> Result<(), Failure> {
        self.record_version(path, len, crc)
    }

    fn record_version(&self, path: &Path, len: u64, crc: u32) -> Result<(), Failure> {
        let rel = self.rel(path)?;
        // A file whose length is not what was just written changed already: no version,
        // so the next write compares content.
        let version = match self.storage.stat(path) {
            Ok(Some(st)) if st.kind == FileKind::File && st.len == len => st.version,
            _ => None,
        };
        self.with_manifest(|m| {
            m.set(&rel, Some(Entry::Written { len, crc, version }));
            Ok(())
        })
    }

    /// Drops `path` from the manifest (durably if `sync`).
    pub(super) fn forget(&self, path: &Path, sync: bool) -> Result<(), Failure> {
        let rel = self.rel(path)?;
        let mpath = self.manifest_path();
        let storage = Arc::clone(&self.storage);
        self.with_manifest(|m| {
            if m.get(&rel).is_none() {
                return Ok(());
            }
            m.set(&rel, None);
            if sync {
                m.commit(&*storage, true)
                    .map_err(failure("sync projection manifest", &mpath))?;
            }
            Ok(())
        })
    }

    /// Writes the manifest records made since the last commit (one write); syncs the
    /// manifest if `sync`; rewrites it whole when it has grown enough (`compact`).
    pub(super) fn commit_manifest(&self, sync: bool, compact: bool) -> Result<(), Failure> {
        let path = self.manifest_path();
        let storage = Arc::clone(&self.storage);
        let mut guard = self.manifest_lock();
        let Some(m) = guard.as_mut() else {
            return Ok(());
        };
        let r = if compact && m.wants_compaction() {
            m.write_whole(&*storage, false)
        } else {
            m.commit(&*storage, sync)
        };
        r.map_err(failure("write projection manifest", &path))
    }

    /// The attic folder of this process, created on first use.
    fn attic_folder(&self) -> Result<PathBuf, Failure> {
        let mut guard = self.attic.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = guard.as_ref() {
            return Ok(p.clone());
        }
        let now = self.engine.options().clock.now();
        let stamp = now.to_datetime().format("%Y%m%dT%H%M%SZ").to_string();
        let attic = self.paths.root.join(ATTIC_DIR);
        let folder = attic.join(stamp);
        for d in [&attic, &folder] {
            create_dir_durable(&*self.storage, d).map_err(failure("create the attic", d))?;
        }
        Ok(guard.insert(folder).clone())
    }

    /// Renames `path` into the attic (never replacing anything there). `None` when
    /// nothing was at `path`. The attic's entry is made durable before the file's old one
    /// goes, so a crash leaves the file in one place or both, never in neither.
    fn rename_into_attic(&self, path: &Path) -> Result<Option<PathBuf>, Failure> {
        let rel = self.rel(path)?;
        let folder = self.attic_folder()?;
        let mut dest = folder.join(&rel);
        if let Some(parent) = dest.parent() {
            let mut dirs: Vec<&Path> = parent
                .ancestors()
                .take_while(|a| *a != folder.as_path())
                .collect();
            dirs.reverse();
            for d in dirs {
                create_dir_durable(&*self.storage, d).map_err(failure("create the attic", d))?;
            }
        }
        let mut n = 0u32;
        loop {
            match self.storage.rename_noreplace(path, &dest) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 10_000 => {
                    n += 1;
                    dest = folder.join(format!("{rel}.{n}"));
                }
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(failure("move projection file aside", path)(e)),
            }
        }
        for d in [dest.parent(), path.parent()].into_iter().flatten() {
            self.storage
                .sync_dir(d)
                .map_err(failure("sync projection directory", d))?;
        }
        Ok(Some(dest))
    }

    /// Moves the file at `path`, one of the engine's own, into the attic and drops it from
    /// the manifest. `None` when nothing was there.
    pub(super) fn move_aside(&self, path: &Path, why: Why) -> Result<Option<PathBuf>, Failure> {
        let moved = self.rename_into_attic(path)?;
        self.forget(path, false)?;
        let Some(dest) = moved else {
            return Ok(None);
        };
        match why {
            Why::Changed => tracing::warn!(
                file = %path.display(),
                moved_to = %dest.display(),
                "a projection file was changed by another program (or damaged); moved it \
                 aside before writing it afresh"
            ),
            Why::Unwanted => tracing::info!(
                file = %path.display(),
                moved_to = %dest.display(),
                "moved a projection file the engine no longer writes aside"
            ),
        }
        Ok(Some(dest))
    }

    /// Creates `path` holding `bytes`, where the engine found nothing: reserved first
    /// (durably: the manifest says the path is the engine's before the file exists, even
    /// when the file itself is not synced), then created without replacing, so a file
    /// another program put there meanwhile stays (and the write fails naming it). Synced
    /// when `durable`.
    pub(super) fn create_new(
        &self,
        op: &'static str,
        path: &Path,
        bytes: &[u8],
        durable: bool,
    ) -> Result<(), Failure> {
        self.reserve(std::slice::from_ref(&path.to_path_buf()))?;
        if self.entry(path)?.is_none() {
            return Err(foreign(path));
        }
        let write = || {
            if durable {
                write_new_atomic(&*self.storage, path, bytes)
            } else {
                write_new_atomic_unsynced(&*self.storage, path, bytes)
            }
        };
        match self.in_its_dir(path, write) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.forget(path, true)?;
                Err(foreign(path))
            }
            r => r.map_err(failure(op, path)),
        }
    }

    /// Runs `f`, and once more after creating `path`'s folder if it failed because the
    /// folder is missing (deleted while the engine runs).
    pub(super) fn in_its_dir<T>(
        &self,
        path: &Path,
        mut f: impl FnMut() -> io::Result<T>,
    ) -> io::Result<T> {
        match f() {
            Err(e) if is_not_found(&e) => {
                if let Some(dir) = path.parent() {
                    self.storage.create_dir_all(dir)?;
                }
                f()
            }
            r => r,
        }
    }

    /// Moves aside the engine's own temporary files among `names` (in `dir`): a crash
    /// leaves them behind, and their names are unpredictable, so no later write reuses
    /// them. Only this writer's projector writes here (the writer lock), so none is in
    /// use. Returns how many were moved.
    pub(super) fn move_own_temporaries(
        &self,
        dir: &Path,
        names: &[String],
    ) -> Result<u64, Failure> {
        let mut moved = 0;
        for name in names {
            let Some(base) = own_temp_target(name) else {
                continue;
            };
            let target = dir.join(base);
            let own = if target == self.manifest_path() {
                true
            } else {
                match self.rel(&target) {
                    Ok(rel) => self.with_manifest(|m| Ok(m.get(&rel).is_some()))?,
                    Err(_) => false,
                }
            };
            // The manifest does not name temporary files: nothing to forget.
            if own && self.rename_into_attic(&dir.join(name))?.is_some() {
                moved += 1;
            }
        }
        Ok(moved)
    }
}
