//! Full rebuilds, and the check of the files at open.

use super::*;

use std::collections::hash_map;

use super::manifest::{self, Entry, LoadError, Manifest};

/// Why the check at open did not pass.
pub(crate) enum PrepareError {
    /// Reading or creating the manifest failed: a warning at open; the projector checks
    /// again before it writes anything.
    Io(Failure),
    /// The directory's projections may not be written: files the engine did not write at
    /// paths it is about to write ([`Error::ForeignFiles`]), or a manifest of a newer
    /// release.
    Refused(Error),
}

/// Directory listings made on demand, each directory once.
#[derive(Default)]
pub(super) struct Listings(HashMap<PathBuf, HashSet<String>>);

impl Listings {
    /// Whether something is at `path`, by a listing of its directory.
    pub(super) fn has(&mut self, storage: &dyn Storage, path: &Path) -> Result<bool, Failure> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Ok(false);
        };
        let names = match self.0.entry(dir.to_path_buf()) {
            hash_map::Entry::Occupied(e) => e.into_mut(),
            hash_map::Entry::Vacant(v) => v.insert(list(storage, dir)?.into_iter().collect()),
        };
        Ok(names.contains(name))
    }
}

/// What the marker holds while a full rebuild runs: not a valid marker, so a crash during
/// the rebuild leads to another one.
fn rebuilding_marker() -> Vec<u8> {
    format!(
        "{{\"format\":\"{}\",\"version\":{},\"lsn\":null}}",
        super::super::schema::MARKER_FORMAT,
        super::super::schema::MARKER_VERSION
    )
    .into_bytes()
}

impl Projection {
    /// Every path the projections of `state` are written to: the marker, the registry,
    /// each session's file (where its status puts it) and log (when it logs), each
    /// chain's file. The check at open and the stale-file decision of a rebuild both
    /// come from it.
    pub(super) fn wanted_paths(&self, state: &State) -> Vec<PathBuf> {
        let mut v = Vec::with_capacity(2 + 2 * state.sessions.len() + state.chains.len());
        v.push(self.paths.marker.clone());
        v.push(self.paths.registry.clone());
        for s in state.sessions.values() {
            v.extend(self.layout.session_file(s));
            if self.wants_log(s) {
                v.push(self.layout.log_file(&s.id));
            }
        }
        for c in state.chains.values() {
            v.push(self.paths.chain_file(&c.agent_id));
        }
        v
    }

    /// Whether session `s` has a per-session log in this format.
    pub(super) fn wants_log(&self, s: &Session) -> bool {
        // An amplihack session adopted without a log has none until it changes.
        let adopted_without_log = self.layout.format() == ProjectionFormat::Amplihack
            && s.adoption().is_some_and(|a| a.pristine && !a.log);
        s.config.enable_logging && self.layout.writes_log(&s.id) && !adopted_without_log
    }

    /// Files an older release (without a manifest) wrote for `state` besides the wanted
    /// paths: sessions' files in their other place, rotated logs.
    fn legacy_paths(&self, state: &State) -> Result<Vec<PathBuf>, Failure> {
        let mut v: Vec<PathBuf> = state
            .sessions
            .values()
            .flat_map(|s| self.layout.other_session_files(s))
            .collect();
        for name in list(&*self.storage, &self.paths.logs_archive)? {
            if self
                .layout
                .rotated_log_of(&name)
                .is_some_and(|(id, _)| state.session(&id).is_some())
            {
                v.push(self.paths.logs_archive.join(name));
            }
        }
        Ok(v)
    }

    /// The check at open. Loads the ownership manifest and refuses to go on when a path
    /// the state is about to be projected to holds a file the engine did not write (the
    /// registry, the marker, sessions' files and logs, chains' files): existence checks
    /// of the paths the manifest does not hold, by one listing per folder, so it never
    /// reads the files. At the first open of a directory (no manifest) any file with a
    /// name the projector writes is refused too, for the state may soon name it (a seed
    /// 003 chain file, say); with a valid marker of an older release instead, the
    /// existing files of the state are adopted. Nothing is written unless it passes;
    /// then, at the first open, the manifest is created (durably). Idempotent.
    pub(crate) fn prepare(&mut self) -> Result<(), PrepareError> {
        if self.has_manifest() {
            return Ok(());
        }
        let mpath = self.manifest_path();
        let loaded = {
            let valid = |rel: &str| self.manageable(rel);
            Manifest::load(&*self.storage, &mpath, &valid)
        };
        let loaded = match loaded {
            Ok(m) => m,
            Err(LoadError::Io(e)) => {
                return Err(PrepareError::Io(failure(
                    "read projection manifest",
                    &mpath,
                )(e)));
            }
            Err(LoadError::Version(found)) => {
                return Err(PrepareError::Refused(Error::UnsupportedVersion {
                    file: mpath,
                    found,
                    supported: 1,
                }));
            }
        };
        let state = self.engine.state();
        let first = loaded.is_none();
        let legacy = first
            && self
                .storage
                .read(&self.paths.marker)
                .is_ok_and(|b| Marker::parse(&b).is_some());
        let storage = Arc::clone(&self.storage);
        let mut listings = Listings::default();
        let mut foreign = BTreeSet::new();
        let mut adopt = HashMap::new();
        let mut candidates = self.wanted_paths(&state);
        if legacy {
            candidates.extend(self.legacy_paths(&state).map_err(PrepareError::Io)?);
        }
        // Files the log says the engine took over: what an amplihack adoption read, and a
        // chain file equal to what the engine writes for an imported chain.
        let adopted: HashSet<PathBuf> = state
            .sessions
            .values()
            .flat_map(|s| self.layout.adopted_files(s))
            .collect();
        for p in candidates {
            let rel = self.rel(&p).map_err(PrepareError::Io)?;
            if loaded.as_ref().is_some_and(|m| m.get(&rel).is_some()) {
                continue;
            }
            if listings.has(&*storage, &p).map_err(PrepareError::Io)? {
                if legacy || adopted.contains(&p) || self.is_imported_chain_file(&state, &p) {
                    adopt.insert(rel, Entry::Reserved);
                } else {
                    foreign.insert(p);
                }
            }
        }
        if first && !legacy {
            for dir in self.all_dirs() {
                // The amplihack format's names are amplihack's own (`<id>.json`,
                // `<id>.log`): a file there the state does not name is amplihack's, never
                // the engine's to write (only the paths above are).
                if self.layout.format() == ProjectionFormat::Amplihack && dir != self.paths.chains {
                    continue;
                }
                for name in list(&*storage, &dir).map_err(PrepareError::Io)? {
                    let path = dir.join(&name);
                    if self.is_projection_file(&dir, &name)
                        && !adopt.contains_key(&self.rel(&path).map_err(PrepareError::Io)?)
                    {
                        foreign.insert(path);
                    }
                }
            }
        }
        if !foreign.is_empty() {
            return Err(PrepareError::Refused(Error::ForeignFiles {
                files: foreign.into_iter().collect(),
            }));
        }
        let manifest = match loaded {
            Some(m) => m,
            None => {
                let adopted = adopt.len();
                let m = Manifest::create(&*storage, &mpath, adopt).map_err(|e| {
                    PrepareError::Io(failure("create projection manifest", &mpath)(e))
                })?;
                if legacy {
                    tracing::info!(
                        files = adopted,
                        "projections: adopted the files an older release wrote"
                    );
                }
                m
            }
        };
        *self.manifest.lock().unwrap_or_else(|e| e.into_inner()) = Some(manifest);
        Ok(())
    }

    /// [`Projection::prepare`] for the projector thread, whose failures are retried.
    pub(super) fn ensure_prepared(&mut self) -> Result<(), Failure> {
        match self.prepare() {
            Ok(()) => Ok(()),
            Err(PrepareError::Io(f)) => Err(f),
            Err(PrepareError::Refused(Error::ForeignFiles { files })) => {
                let mut f = manifest::foreign(files.first().map_or(&self.paths.root, |p| p));
                if files.len() > 1 {
                    f.message = format!("{} ({} such files)", f.message, files.len());
                }
                Err(f)
            }
            Err(PrepareError::Refused(e)) => Err(Failure {
                op: "check the projection files",
                path: self.manifest_path(),
                kind: io::ErrorKind::InvalidData,
                message: e.to_string(),
            }),
        }
    }

    /// Whether `path` is the file of a chain of `state` and holds, as a JSON value, exactly
    /// what the engine writes for it: a seed 003 tracker file imported from where it lies
    /// (taking it over loses nothing).
    pub(super) fn is_imported_chain_file(&self, state: &State, path: &Path) -> bool {
        let Some(agent) = path
            .parent()
            .filter(|d| *d == self.paths.chains)
            .and_then(|_| path.file_name()?.to_str())
            .and_then(agent_of_chain_file)
        else {
            return false;
        };
        let Some(chain) = state.chain(&agent) else {
            return false;
        };
        let (Ok(bytes), Ok(ours)) = (self.storage.read(path), ChainFile::of(chain).to_bytes())
        else {
            return false;
        };
        let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
        parse(&bytes).is_some_and(|v| Some(v) == parse(&ours))
    }

    /// Moves aside the engine's own temporary files in the data directory and the
    /// projection folders. How many.
    pub(super) fn move_all_own_temporaries(&self) -> Result<u64, Failure> {
        let mut moved = 0;
        for dir in self.all_dirs() {
            let names = list(&*self.storage, &dir)?;
            moved += self.move_own_temporaries(&dir, &names)?;
        }
        Ok(moved)
    }

    /// Marks for rewriting every file of `state` that is missing or in the wrong place, and
    /// moves aside the temporary files a crash left.
    pub(super) fn check_missing(&mut self, state: &State) -> std::result::Result<(), Failure> {
        self.ensure_prepared()?;
        self.move_all_own_temporaries()?;
        let storage = Arc::clone(&self.storage);
        let mut listings = Listings::default();
        let rotated: HashSet<SessionId> = list(&*storage, &self.paths.logs_archive)?
            .iter()
            .filter_map(|n| self.layout.rotated_log_of(n).map(|(id, _)| id))
            .collect();
        // A missing file holds the watermark just after the marker until it is written.
        let after = self.marker.next();
        if !listings.has(&*storage, &self.paths.registry)? {
            self.dirty.registry(after);
        }
        for s in state.sessions.values() {
            if let Some(here) = self.layout.session_file(s) {
                let mut misplaced = false;
                for there in self.layout.other_session_files(s) {
                    misplaced |=
                        self.entry(&there)?.is_some() && listings.has(&*storage, &there)?;
                }
                if !listings.has(&*storage, &here)? || misplaced {
                    self.dirty.session(&s.id, after);
                    self.dirty.registry(after);
                }
            }
            if self.wants_log(s)
                && !listings.has(&*storage, &self.layout.log_file(&s.id))?
                && !rotated.contains(&s.id)
            {
                self.logs.rebuild.insert(s.id.clone());
            }
        }
        for c in state.chains.values() {
            if !listings.has(&*storage, &self.paths.chain_file(&c.agent_id))? {
                self.dirty.chain(&c.agent_id, after);
            }
        }
        Ok(())
    }

    /// A full rebuild, recorded in the status either way.
    pub(crate) fn rebuild(&mut self) -> Result<RebuildReport> {
        let started = Instant::now();
        match self.rebuild_inner() {
            Ok(r) => {
                self.succeeded();
                self.publish();
                tracing::info!(
                    lsn = %r.lsn,
                    sessions = r.sessions,
                    logs = r.logs,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "projections rebuilt"
                );
                Ok(r)
            }
            Err(f) => {
                // Files may be gone already (moved aside): nothing is projected past the
                // marker until the retry completes.
                self.projected = self.watermark();
                let err = f.to_error();
                self.failed(f);
                self.publish();
                Err(err)
            }
        }
    }

    /// A full rebuild from the current state, made durable first.
    pub(super) fn rebuild_inner(&mut self) -> Result<RebuildReport, Failure> {
        let state = self.engine.state();
        // Owed even when the log cannot be synced first (see `rebuild_from`).
        self.needs_rebuild = true;
        self.sync_log()?;
        self.rebuild_from(&state)
    }

    /// Whether `name` in `dir` is a name the projector writes (for some session or
    /// agent): what the first open of a directory refuses when it is already there.
    pub(super) fn is_projection_file(&self, dir: &Path, name: &str) -> bool {
        self.layout.is_projection_file(dir, name)
    }

    /// A full rebuild in `format`, the directory's new format: the files of the old one
    /// are moved aside into the attic (never deleted), the new format is recorded, and
    /// every file is written in it. A crash before the record leaves the old format
    /// (rebuilt in full at the next open, since the marker is invalid); after it, the new
    /// one.
    pub(crate) fn rebuild_as(&mut self, format: ProjectionFormat) -> Result<RebuildReport> {
        let state = self.engine.state();
        let switched = self.retire_format(&state).and_then(|moved| {
            crate::projection::format::record(&*self.storage, &self.paths.root, format).map_err(
                |e| Failure {
                    op: "record the projection format",
                    path: crate::projection::format::format_file(&self.paths.root),
                    kind: io::ErrorKind::Other,
                    message: e.to_string(),
                },
            )?;
            Ok(moved)
        });
        let moved = match switched {
            Ok(n) => n,
            Err(f) => {
                // The old format stays, and some of its files may be in the attic already:
                // they are all written again, by the retries.
                self.needs_rebuild = true;
                self.projected = self.watermark();
                let err = f.to_error();
                self.failed(f);
                self.publish();
                return Err(err);
            }
        };
        tracing::info!(from = %self.layout.format(), to = %format, moved, "projection format changed");
        self.layout = Layout::new(&self.paths.root, format);
        self.shared.update(|p| p.status.format = format);
        self.rebuild().map(|mut r| {
            r.moved_aside += moved;
            r
        })
    }

    /// Moves aside (into the attic) every file of its own the current format wrote for the
    /// sessions of `state`, and its registry, after invalidating the marker. Returns how
    /// many files it moved.
    fn retire_format(&mut self, state: &State) -> Result<u64, Failure> {
        self.ensure_prepared()?;
        self.invalidate_marker()?;
        let mut rotated: HashMap<SessionId, Vec<u64>> = HashMap::new();
        for name in list(&*self.storage, &self.paths.logs_archive)? {
            if let Some((id, n)) = self.layout.rotated_log_of(&name) {
                rotated.entry(id).or_default().push(n);
            }
        }
        let mut moved = 0;
        for s in state.sessions.values() {
            let parts = rotated.get(&s.id).map_or(&[][..], Vec::as_slice);
            for path in self.layout.all_session_files(s, parts) {
                moved += u64::from(self.remove_if_exists(&path)?);
            }
        }
        let registry = self.paths.registry.clone();
        moved += u64::from(self.remove_if_exists(&registry)?);
        self.logs.tails.clear();
        Ok(moved)
    }

    /// Makes the marker invalid (a crash from now on leads to a full rebuild).
    fn invalidate_marker(&mut self) -> Result<(), Failure> {
        let marker = self.paths.marker.clone();
        if self.entry(&marker)?.is_some()
            && self
                .storage
                .exists(&marker)
                .map_err(failure("inspect projection marker", &marker))?
        {
            self.write_file_durable(
                "invalidate projection marker",
                &marker,
                &rebuilding_marker(),
            )?;
        }
        self.marker = Lsn::ZERO;
        Ok(())
    }

    /// A full rebuild from `state`, which must be durable.
    pub(super) fn rebuild_from(&mut self, state: &Arc<State>) -> Result<RebuildReport, Failure> {
        // Owed from here until it completes: a failure at any step, the first included,
        // leaves it to the retries rather than dropping it.
        self.needs_rebuild = true;
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        self.ensure_prepared()?;
        // Without a valid marker a crash during the rebuild leads to another full rebuild.
        self.invalidate_marker()?;
        self.dirs_ready = false;
        self.ensure_dirs()?;
        let state = Arc::clone(state);
        let mut report = RebuildReport {
            lsn: state.last_lsn,
            ..RebuildReport::default()
        };
        report.moved_aside += self.move_all_own_temporaries()?;
        // Only the projector's own files that the state no longer has a place for go
        // (into the attic); anybody else's (another tool's, a bundle being exported into
        // the data directory) are not its to touch.
        let wanted = self.wanted_paths(&state);
        let keep: HashSet<String> = wanted
            .iter()
            .map(|p| self.rel(p))
            .collect::<Result<_, _>>()?;
        let own = self.with_manifest(|m| Ok(m.paths()))?;
        for rel in own {
            if !keep.contains(&rel) && self.remove_if_exists(&self.paths.root.join(&rel))? {
                report.moved_aside += 1;
            }
        }
        self.reserve(&wanted)?;
        for id in state.sessions.keys() {
            self.write_session(&state, id)?;
            report.sessions += 1;
        }
        for agent in state.chains.keys() {
            self.write_chain(&state, agent)?;
            report.chains += 1;
        }
        self.write_registry(&state)?;
        self.logs.tails.clear();
        report.logs = self.rebuild_logs_from_wal(None, state.last_lsn, &state)?;
        self.received = self.received.max(state.last_lsn);
        self.dirty.clear();
        self.logs.lines.clear();
        self.logs.pending_bytes = 0;
        self.logs.rebuild.clear();
        self.needs_rebuild = false;
        self.dirty_since = None;
        self.absorbed_since_flush = 0;
        // The manifest is rewritten whole at every full rebuild.
        let (storage, mpath) = (Arc::clone(&self.storage), self.manifest_path());
        self.with_manifest(|m| {
            m.write_whole(&*storage, false)
                .map_err(failure("write projection manifest", &mpath))
        })?;
        if self.received == state.last_lsn {
            self.write_marker(state.last_lsn)?;
        }
        self.last_checkpoint = Instant::now();
        self.shared.update(|p| p.status.rebuilds += 1);
        Ok(report)
    }
}
