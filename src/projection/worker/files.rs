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

    /// Replaces `path` atomically, re-creating its directory if it was deleted.
    pub(super) fn write_file(
        &self,
        op: &'static str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        match write_atomic(&*self.storage, path, bytes) {
            Err(e) if is_not_found(&e) => {
                if let Some(dir) = path.parent() {
                    self.storage
                        .create_dir_all(dir)
                        .map_err(failure("create projection directory", dir))?;
                }
                write_atomic(&*self.storage, path, bytes).map_err(failure(op, path))
            }
            r => r.map_err(failure(op, path)),
        }
    }

    pub(super) fn remove_if_exists(&self, path: &Path) -> Result<bool, Failure> {
        match self.storage.remove_file(path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    self.storage
                        .sync_dir(dir)
                        .map_err(failure("sync projection directory", dir))?;
                }
                Ok(true)
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(failure("remove projection file", path)(e)),
        }
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
        self.write_file("write session file", &target, &bytes)?;
        // The new location is durable before the old one goes, so a crash in between
        // leaves the session in both places (fixed by the next write), never in neither.
        for other in self.layout.other_session_files(s) {
            self.remove_if_exists(&other)?;
        }
        Ok(())
    }

    /// Puts a file of the projector's own that it no longer wants (one of another format,
    /// after the directory changed formats) out of the way of the readers of the current
    /// format, without deleting it: it becomes `<name>.retired` next to where it was.
    /// Returns whether there was a file. (The ownership manifest's move-aside replaces
    /// this body; callers stay as they are.)
    pub(super) fn move_aside(&self, path: &Path) -> Result<bool, Failure> {
        match self.storage.kind(path) {
            Ok(Some(crate::storage::FileKind::File)) => {}
            Ok(_) => return Ok(false),
            Err(e) => return Err(failure("inspect projection file", path)(e)),
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".retired");
        let to = path.with_file_name(name);
        self.storage
            .rename(path, &to)
            .map_err(failure("move projection file aside", path))?;
        if let Some(dir) = path.parent() {
            self.storage
                .sync_dir(dir)
                .map_err(failure("sync projection directory", dir))?;
        }
        Ok(true)
    }

    /// INTEGRATION POINT (ownership manifest): the files an amplihack adoption took over
    /// (`Layout::adopted_files`: the adopted session's file where it was read, the
    /// registry, its log) become the engine's, so the writes that follow may replace
    /// them: the manifest records each path it does not have yet, with the file's hash,
    /// here, before the first write. Called when the projector absorbs a
    /// `SessionsAdopted` event, and at the start of every catch-up for each adopted
    /// session no event has changed since (an import in place commits with no projector
    /// running; a changed one has been written by the engine, so the manifest has its
    /// files). Until the manifest exists the projector writes over any file at its
    /// paths, so there is nothing to record.
    pub(super) fn adopt_files(&self, s: &Session) {
        let files = self.layout.adopted_files(s);
        tracing::debug!(session = %s.id, files = files.len(), "files adopted from amplihack");
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
        let path = self.paths.marker.clone();
        let bytes = serde_json::to_vec(&Marker::new(lsn.get()))
            .map_err(|e| failure("render projection marker", &path)(io::Error::other(e)))?;
        self.write_file("write projection marker", &path, &bytes)?;
        self.marker = lsn;
        Ok(())
    }

    /// Writes every dirty file from `state`, which must be durable.
    pub(super) fn flush_files(&mut self, state: &Arc<State>) -> Result<(), Failure> {
        self.ensure_dirs()?;
        if self.needs_rebuild {
            self.rebuild_from(state)?;
        }
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
        if self.dirty.registry {
            self.ensure_dirs()?;
            self.write_registry(state)?;
            self.dirty.registry = false;
        }
        if !self.has_file_work() && self.marker < self.received {
            self.write_marker(self.received)?;
        }
        Ok(())
    }
}
