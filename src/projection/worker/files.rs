//! Writing the JSON projection files.

use super::*;

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
    ///
    /// Not synced (a temporary file renamed over it, [`write_atomic_unsynced`]): readers
    /// see the old or the new document, and the checkpoint's `Storage::sync_fs` makes it
    /// durable before the marker vouches for it.
    pub(super) fn write_file(
        &self,
        op: &'static str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        self.write_file_as(op, path, bytes, false)
    }

    /// [`Projection::write_file`], durable when it returns (the marker).
    pub(super) fn write_file_durable(
        &self,
        op: &'static str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        self.write_file_as(op, path, bytes, true)
    }

    fn write_file_as(
        &self,
        op: &'static str,
        path: &Path,
        bytes: &[u8],
        durable: bool,
    ) -> Result<(), Failure> {
        match self.inspect(path, manifest::Accept::OrEqual(bytes))? {
            manifest::Found::Foreign => return Err(manifest::foreign(path)),
            manifest::Found::Own => self
                .in_its_dir(path, || {
                    if durable {
                        write_atomic(&*self.storage, path, bytes)
                    } else {
                        write_atomic_unsynced(&*self.storage, path, bytes)
                    }
                })
                .map_err(failure(op, path))?,
            manifest::Found::Changed => {
                self.move_aside(path, manifest::Why::Changed)?;
                self.create_new(op, path, bytes, durable)?;
            }
            manifest::Found::Absent => self.create_new(op, path, bytes, durable)?,
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
        // A session file holds every activity: their details are read from the log, as
        // of the state being rendered.
        let activities = if self.layout.writes_activities() {
            let history = self.engine.history_of(s, state.last_lsn);
            let read: crate::error::Result<Vec<_>> = history
                .activities()
                .iter()
                .map(|e| e.map(|e| e.value))
                .collect();
            Some(read.map_err(|e| {
                failure("read the session's activities", &target)(io::Error::other(e))
            })?)
        } else {
            None
        };
        let bytes = self
            .layout
            .render_session_with(s, activities.as_deref())
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
        self.reserve_rel(&fresh)
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

    /// Makes every projection file durable (one `Storage::sync_fs` of the data
    /// directory's file system) and then the marker saying they reflect `lsn`.
    pub(super) fn write_marker(&mut self, lsn: Lsn) -> Result<(), Failure> {
        // The manifest's records are written before the sync makes them durable with the
        // files they describe, so after a crash it rarely lags them.
        self.commit_manifest(false, true)?;
        let root = self.paths.root.clone();
        self.storage
            .sync_fs(&root)
            .map_err(failure("sync the projection files", &root))?;
        let path = self.paths.marker.clone();
        let bytes = serde_json::to_vec(&Marker::new(lsn.get()))
            .map_err(|e| failure("render projection marker", &path)(io::Error::other(e)))?;
        self.write_file_durable("write projection marker", &path, &bytes)?;
        self.marker = lsn;
        // The marker's own record (not synced: a lost one only means the next write of
        // the marker compares its content).
        self.commit_manifest(false, false)
    }

    /// The earliest the file `key` may be written again (`None`: at once): a big file is
    /// rewritten no more often than `coalesce_factor` times what its last write took
    /// after that write started, so the projector spends at most about
    /// 1/`coalesce_factor` of its time on any one file and the writes of a growing file
    /// cost a bounded multiple of its final size; the registry also waits
    /// `registry_interval`.
    pub(super) fn gate(&self, key: &FileKey) -> Option<Instant> {
        let (start, took) = self.costs.get(key)?;
        let wait = took.saturating_mul(self.options.coalesce_factor);
        let wait = match key {
            FileKey::Registry => wait.max(self.options.registry_interval),
            _ => wait,
        };
        Some(*start + wait)
    }

    /// Runs `write` for the file `key`, keeping what it cost when that matters for
    /// [`Projection::gate`].
    fn timed(
        &mut self,
        key: FileKey,
        write: impl FnOnce(&Self) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let start = Instant::now();
        let r = write(self);
        let took = start.elapsed();
        if key == FileKey::Registry
            || took.saturating_mul(self.options.coalesce_factor) > self.options.flush_interval
        {
            self.costs.insert(key, (start, took));
        } else {
            self.costs.remove(&key);
        }
        r
    }

    /// Writes the dirty files from `state`, which must be durable: every one when `all`,
    /// otherwise those whose [`Projection::gate`] is open (the others wait, and
    /// `gated_until` says until when).
    pub(super) fn flush_files(&mut self, state: &Arc<State>, all: bool) -> Result<(), Failure> {
        self.ensure_prepared()?;
        self.ensure_dirs()?;
        if self.needs_rebuild {
            self.rebuild_from(state)?;
        }
        let state = Arc::clone(state);
        // New paths are reserved in the manifest with one sync for all of them.
        let mut fresh: Vec<PathBuf> = Vec::new();
        for id in self.dirty.sessions.keys() {
            if let Some(s) = state.session(id) {
                fresh.extend(self.layout.session_file(s));
            }
        }
        fresh.extend(self.dirty.chains.keys().map(|a| self.paths.chain_file(a)));
        fresh.extend(self.logs.lines.keys().map(|id| self.layout.log_file(id)));
        self.reserve(&fresh)?;
        let result = self.flush_dirty(&state, all);
        self.commit_manifest(false, false)?;
        result
    }

    fn flush_dirty(&mut self, state: &Arc<State>, all: bool) -> Result<(), Failure> {
        let state = Arc::clone(state);
        let now = Instant::now();
        let mut gated: Option<Instant> = None;
        let mut held = |gate: Option<Instant>| match gate {
            Some(t) if !all && now < t => {
                gated = Some(gated.map_or(t, |g| g.min(t)));
                true
            }
            _ => false,
        };
        // One file after the other: without syncs, writing on several threads only makes
        // them contend for the directory. A file stays dirty until it is written, and one
        // that fails does not keep the others from being written (the first failure is
        // returned once they were).
        let mut first: Option<Failure> = None;
        let ids: Vec<SessionId> = self.dirty.sessions.keys().cloned().collect();
        for id in ids {
            let key = FileKey::Session(id.clone());
            if held(self.gate(&key)) {
                continue;
            }
            match self.timed(key, |p| p.write_session(&state, &id)) {
                Ok(()) => {
                    self.dirty.sessions.remove(&id);
                }
                Err(f) => {
                    first.get_or_insert(f);
                }
            }
        }
        let agents: Vec<AgentId> = self.dirty.chains.keys().cloned().collect();
        for agent in agents {
            let key = FileKey::Chain(agent.clone());
            if held(self.gate(&key)) {
                continue;
            }
            match self.timed(key, |p| p.write_chain(&state, &agent)) {
                Ok(()) => {
                    self.dirty.chains.remove(&agent);
                }
                Err(f) => {
                    first.get_or_insert(f);
                }
            }
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
                first.get_or_insert(f);
                break;
            }
        }
        if first.is_none() && !self.logs.rebuild.is_empty() {
            let which = std::mem::take(&mut self.logs.rebuild);
            match self.rebuild_logs_from_wal(Some(&which), self.received, &state) {
                Ok(n) => self.shared.update(|p| p.status.logs_rebuilt += n),
                Err(f) => {
                    self.logs.rebuild = which;
                    first.get_or_insert(f);
                }
            }
        }
        // The registry last: it lists the sessions written above.
        if self.dirty.registry.is_some() && !held(self.gate(&FileKey::Registry)) {
            match self.timed(FileKey::Registry, |p| p.write_registry(&state)) {
                Ok(()) => self.dirty.registry = None,
                Err(f) => {
                    first.get_or_insert(f);
                }
            }
        }
        self.gated_until = gated;
        self.dirty_since = None;
        self.absorbed_since_flush = 0;
        first.map_or(Ok(()), Err)
    }

    /// Moves the marker up to the watermark, when it is past it (see
    /// [`Projection::write_marker`]).
    pub(super) fn checkpoint(&mut self) -> Result<(), Failure> {
        self.last_checkpoint = Instant::now();
        self.ensure_prepared()?;
        let w = self.watermark();
        if w > self.marker {
            self.write_marker(w)?;
        }
        Ok(())
    }
}
