//! Writing the JSON projection files.

use super::*;

/// Most threads projection files are written on at once.
const WRITE_THREADS: usize = 16;

/// Fewest files worth a thread of their own.
const FILES_PER_THREAD: usize = 32;

/// Runs `write` for every item, on several threads when there are many, and returns the
/// first failure in item order. Each write of a projection file ends in syncs, and a sync
/// waits for the disk (and the file system's journal); run side by side, they overlap and
/// share journal commits. A thread stops at its own first failure.
pub(super) fn in_parallel<T: Sync>(
    items: &[T],
    write: impl Fn(&T) -> Result<(), Failure> + Sync,
) -> Result<(), Failure> {
    let threads = WRITE_THREADS.min(items.len() / FILES_PER_THREAD).max(1);
    if threads == 1 {
        return items.iter().try_for_each(write);
    }
    let write = &write;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().try_for_each(write)))
            .collect();
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        results.into_iter().collect()
    })
}

impl Projection {
    pub(super) fn ensure_dirs(&mut self) -> std::result::Result<(), Failure> {
        if !self.dirs_ready {
            for d in self.paths.dirs() {
                self.storage
                    .create_dir_all(d)
                    .map_err(failure("create projection directory", d))?;
            }
            self.dirs_ready = true;
        }
        Ok(())
    }

    /// Writes `path` atomically, re-creating its directory if it was deleted, if the
    /// engine may (see [`manifest`]): its own unchanged file is replaced; where nothing is,
    /// the path is reserved in the manifest and the file created without replacing; its
    /// own file that another program changed is moved aside first; a file it did not
    /// write is never touched (the failure names it). Records what it wrote.
    pub(super) fn write_file(
        &self,
        op: &'static str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        match self.inspect(path, manifest::Accept::OrEqual(bytes))? {
            manifest::Found::Foreign => return Err(manifest::foreign(path)),
            manifest::Found::Own => self
                .in_its_dir(path, || write_atomic(&*self.storage, path, bytes))
                .map_err(failure(op, path))?,
            manifest::Found::Changed => {
                self.move_aside(path, manifest::Why::Changed)?;
                self.create_new(op, path, bytes)?;
            }
            manifest::Found::Absent => self.create_new(op, path, bytes)?,
        }
        self.record(path, bytes.len() as u64, crc32fast::hash(bytes))
    }

    /// Takes `path` out of the projections: the engine's own file is moved into the attic
    /// (never deleted); a file it did not write is left alone. Whether one was moved.
    pub(super) fn remove_if_exists(&self, path: &Path) -> Result<bool, Failure> {
        if self.entry(path)?.is_none() {
            return Ok(false);
        }
        Ok(self.move_aside(path, manifest::Why::Unwanted)?.is_some())
    }

    /// Renames the engine's own file `from` to `to`, where nothing is (an archived
    /// session's file moving to the archive), moving the manifest's record along. `to`'s
    /// folder is synced before `from`'s, so a crash leaves the file in one place or both.
    pub(super) fn move_own(&self, from: &Path, to: &Path) -> Result<(), Failure> {
        self.reserve(std::slice::from_ref(&to.to_path_buf()))?;
        if self.entry(to)?.is_none() {
            return Err(manifest::foreign(to));
        }
        match self.in_its_dir(to, || self.storage.rename_noreplace(from, to)) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.forget(to, true)?;
                return Err(manifest::foreign(to));
            }
            r => r.map_err(failure("move projection file", from))?,
        }
        for d in [to.parent(), from.parent()].into_iter().flatten() {
            self.storage
                .sync_dir(d)
                .map_err(failure("sync projection directory", d))?;
        }
        // Its content is the engine's; the next write of `to` replaces it.
        self.with_manifest(|m| {
            let (f, t) = (self.rel(from)?, self.rel(to)?);
            let e = m.get(&f).unwrap_or(manifest::Entry::Reserved);
            let e = match e {
                manifest::Entry::Written { len, crc, .. } => manifest::Entry::Written {
                    len,
                    crc,
                    version: None,
                },
                r => r,
            };
            m.set(&t, Some(e));
            m.set(&f, None);
            Ok(())
        })
    }

    pub(super) fn write_session(&self, state: &State, id: &SessionId) -> Result<(), Failure> {
        let Some(s) = state.session(id) else {
            return Ok(());
        };
        let Some(target) = self.layout.session_file(s) else {
            return Ok(());
        };
        let bytes = self
            .layout
            .render_session(s)
            .map_err(|e| failure("render session file", &target)(io::Error::other(e)))?;
        // Only the engine's own files at the other places matter (none, mostly).
        let mut others = Vec::new();
        for other in self.layout.other_session_files(s) {
            if self.entry(&other)?.is_some() {
                others.push(other);
            }
        }
        if others.is_empty() {
            return self.write_file("write session file", &target, &bytes);
        }
        // A session that moved (archived): its own file moves with it when it is
        // unchanged and nothing is at the new place yet.
        for other in &others {
            if self.inspect(other, manifest::Accept::Exact)? == manifest::Found::Own
                && self.inspect(&target, manifest::Accept::Exact)? == manifest::Found::Absent
            {
                self.move_own(other, &target)?;
            }
        }
        self.write_file("write session file", &target, &bytes)?;
        // Still in both places (a crash between the two, or the old one was changed):
        // the new location is durable before the old one goes into the attic.
        for other in &others {
            self.remove_if_exists(other)?;
        }
        Ok(())
    }

    /// Takes over files other tools wrote that the state says the engine adopted: the
    /// files an amplihack adoption read for session `s` (`Layout::adopted_files`: its file
    /// where it was read, the registry, its log) become the engine's, so the writes that
    /// follow may replace them. Each path the manifest does not hold yet is recorded as
    /// the engine's (durably, before any write). Called when the projector absorbs a
    /// `SessionsAdopted` event, and by the check at open.
    pub(super) fn adopt_files(&self, s: &Session) -> Result<(), Failure> {
        let files = self.layout.adopted_files(s);
        self.adopt_paths(&files)
    }

    /// Records the existing files at `paths` as the engine's own (see
    /// [`Projection::adopt_files`]), durably; paths the manifest holds are left as they are.
    pub(super) fn adopt_paths(&self, paths: &[PathBuf]) -> Result<(), Failure> {
        if !self.has_manifest() {
            // The check at open adopts them when it creates the manifest.
            return Ok(());
        }
        let mut fresh = Vec::new();
        for p in paths {
            if self.entry(p)?.is_none() {
                fresh.push(self.rel(p)?);
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let mpath = self.manifest_path();
        let storage = Arc::clone(&self.storage);
        self.with_manifest(|m| {
            for rel in &fresh {
                m.set(rel, Some(manifest::Entry::Reserved));
            }
            m.commit(&*storage, true)
                .map_err(failure("sync projection manifest", &mpath))
        })
    }

    pub(super) fn write_chain(&self, state: &State, agent: &AgentId) -> Result<(), Failure> {
        let path = self.paths.chain_file(agent);
        let Some(c) = state.chain(agent) else {
            return Ok(());
        };
        let bytes = ChainFile::of(c)
            .to_bytes()
            .map_err(|e| failure("render chain file", &path)(io::Error::other(e)))?;
        self.write_file("write chain file", &path, &bytes)
    }

    pub(super) fn write_registry(&self, state: &State) -> Result<(), Failure> {
        let path = &self.paths.registry;
        match self
            .layout
            .render_registry(state)
            .map_err(|e| failure("render registry", path)(io::Error::other(e)))?
        {
            Some(bytes) => self.write_file("write registry", path, &bytes),
            None => Ok(()),
        }
    }

    pub(super) fn write_marker(&mut self, lsn: Lsn) -> Result<(), Failure> {
        // What the manifest says about the files is durable before the marker vouches for
        // them, so after a crash it rarely lags the files it describes.
        self.commit_manifest(true, true)?;
        let path = self.paths.marker.clone();
        let bytes = serde_json::to_vec(&Marker::new(lsn.get()))
            .map_err(|e| failure("render projection marker", &path)(io::Error::other(e)))?;
        self.write_file("write projection marker", &path, &bytes)?;
        self.marker = lsn;
        // The marker's own record (not synced: a lost one only means the next write of
        // the marker compares its content).
        self.commit_manifest(false, false)
    }

    /// Writes every dirty file from `state`, which must be durable.
    pub(super) fn flush_files(&mut self, state: &Arc<State>) -> Result<(), Failure> {
        self.ensure_prepared()?;
        self.ensure_dirs()?;
        if self.needs_rebuild {
            self.rebuild_from(state)?;
        }
        let state = Arc::clone(state);
        // New paths are reserved in the manifest with one sync for all of them.
        let mut fresh: Vec<PathBuf> = Vec::new();
        for id in &self.dirty.sessions {
            if let Some(s) = state.session(id) {
                fresh.extend(self.layout.session_file(s));
            }
        }
        fresh.extend(self.dirty.chains.iter().map(|a| self.paths.chain_file(a)));
        fresh.extend(self.logs.lines.keys().map(|id| self.layout.log_file(id)));
        self.reserve(&fresh)?;
        let result = self.flush_dirty(&state);
        self.commit_manifest(false, false)?;
        result
    }

    fn flush_dirty(&mut self, state: &Arc<State>) -> Result<(), Failure> {
        let state = Arc::clone(state);
        // On a failure every session stays dirty: rewriting a file that was written is
        // harmless.
        let ids: Vec<&SessionId> = self.dirty.sessions.iter().collect();
        in_parallel(&ids, |id| self.write_session(&state, id))?;
        self.dirty.sessions.clear();
        while let Some(agent) = self.dirty.chains.first().cloned() {
            self.write_chain(&state, &agent)?;
            self.dirty.chains.remove(&agent);
        }
        while let Some((id, lines)) = self.logs.lines.pop_first() {
            self.logs.pending_bytes = self
                .logs
                .pending_bytes
                .saturating_sub(lines.iter().map(|l| l.text.len()).sum());
            if let Err(f) = self.append_log(&id, &lines) {
                self.logs.pending_bytes += lines.iter().map(|l| l.text.len()).sum::<usize>();
                // The file may have changed under us; read its tail again next time.
                self.logs.tails.remove(&id);
                self.logs.lines.insert(id, lines);
                return Err(f);
            }
        }
        if !self.logs.rebuild.is_empty() {
            let which = std::mem::take(&mut self.logs.rebuild);
            match self.rebuild_logs_from_wal(Some(&which), self.received, &state) {
                Ok(n) => self.shared.update(|p| p.status.logs_rebuilt += n),
                Err(f) => {
                    self.logs.rebuild = which;
                    return Err(f);
                }
            }
        }
        self.dirty_since = None;
        self.absorbed_since_flush = 0;
        Ok(())
    }

    /// Writes the registry from `state`, which must be durable, and the marker.
    pub(super) fn checkpoint(&mut self, state: &Arc<State>) -> Result<(), Failure> {
        self.last_checkpoint = Instant::now();
        self.ensure_prepared()?;
        if self.dirty.registry {
            self.ensure_dirs()?;
            let written = self.write_registry(state);
            self.commit_manifest(false, false)?;
            written?;
            self.dirty.registry = false;
        }
        if !self.has_file_work() && self.marker < self.received {
            self.write_marker(self.received)?;
        }
        Ok(())
    }
}
