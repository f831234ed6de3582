//! Full rebuilds, and the check of the files at open.

use super::*;

impl Projection {
    /// Removes the temporary files of the projector's own files among `names` (in `dir`):
    /// a crash leaves them behind, and their names are unpredictable, so no later write
    /// reuses them. Only this writer's projector writes here (the writer lock), so none is
    /// in use.
    pub(super) fn remove_own_temporaries(
        &self,
        dir: &Path,
        names: &[String],
    ) -> Result<(), Failure> {
        for name in names {
            if crate::storage::temp_target(name)
                .is_some_and(|base| self.is_projection_file(dir, base))
            {
                self.remove_if_exists(&dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Marks for rewriting every file of `state` that is missing or in the wrong place, and
    /// removes the temporary files a crash left.
    pub(super) fn check_missing(&mut self, state: &State) -> std::result::Result<(), Failure> {
        let storage = &*self.storage;
        let listed = |dir: &Path| -> Result<HashSet<String>, Failure> {
            let names = list(storage, dir)?;
            self.remove_own_temporaries(dir, &names)?;
            Ok(names.into_iter().collect())
        };
        listed(&self.paths.root)?;
        let mut present: HashMap<PathBuf, HashSet<String>> = HashMap::new();
        for dir in [&self.paths.sessions, &self.paths.archive, &self.paths.logs] {
            present.insert(dir.clone(), listed(dir)?);
        }
        let exists = |p: &Path| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            p.parent()
                .and_then(|d| present.get(d))
                .is_some_and(|names| names.contains(name))
        };
        let rotated: HashSet<SessionId> = list(storage, &self.paths.logs_archive)?
            .iter()
            .filter_map(|n| self.layout.rotated_log_of(n).map(|(id, _)| id))
            .collect();
        let chains = listed(&self.paths.chains)?;
        if !exists(&self.paths.registry) {
            self.dirty.registry = true;
        }
        for s in state.sessions.values() {
            if let Some(target) = self.layout.session_file(s)
                && (!exists(&target)
                    || self.layout.other_session_files(s).iter().any(|p| exists(p)))
            {
                self.dirty.sessions.insert(s.id.clone());
                self.dirty.registry = true;
            }
            // An amplihack session adopted without a log has none until it changes.
            let adopted_without_log = self.layout.format() == ProjectionFormat::Amplihack
                && s.adoption().is_some_and(|a| a.pristine && !a.log);
            if s.config.enable_logging
                && self.layout.writes_log(&s.id)
                && !adopted_without_log
                && !exists(&self.layout.log_file(&s.id))
                && !rotated.contains(&s.id)
            {
                self.logs.rebuild.insert(s.id.clone());
            }
        }
        for c in state.chains.values() {
            if !chains.contains(&format!("{}_sessions.json", c.agent_id)) {
                self.dirty.chains.insert(c.agent_id.clone());
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
        self.sync_log()?;
        self.rebuild_from(&state)
    }

    /// Whether `name` in `dir` is a file the projector writes.
    pub(super) fn is_projection_file(&self, dir: &Path, name: &str) -> bool {
        self.layout.is_projection_file(dir, name)
    }

    /// A full rebuild in `format`, the directory's new format: the files of the old one
    /// are moved aside (never deleted), the new format is recorded, and every file is
    /// written in it. A crash before the record leaves the old format (rebuilt in full at
    /// the next open, since the marker is gone); after it, the new one.
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

    /// Moves aside every file the current format wrote for the sessions of `state` (and
    /// its registry), after removing the marker. Returns how many files it moved.
    fn retire_format(&mut self, state: &State) -> Result<u64, Failure> {
        let marker = self.paths.marker.clone();
        self.remove_if_exists(&marker)?;
        self.marker = Lsn::ZERO;
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
                moved += u64::from(self.move_aside(&path)?);
            }
        }
        let registry = self.paths.registry.clone();
        moved += u64::from(self.move_aside(&registry)?);
        self.logs.tails.clear();
        Ok(moved)
    }

    /// A full rebuild from `state`, which must be durable.
    pub(super) fn rebuild_from(&mut self, state: &Arc<State>) -> Result<RebuildReport, Failure> {
        self.needs_rebuild = true;
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        // Without a marker a crash during the rebuild leads to another full rebuild.
        let marker = self.paths.marker.clone();
        self.remove_if_exists(&marker)?;
        self.marker = Lsn::ZERO;
        self.dirs_ready = false;
        self.ensure_dirs()?;
        let state = Arc::clone(state);
        let mut report = RebuildReport {
            lsn: state.last_lsn,
            ..RebuildReport::default()
        };
        let root = self.paths.root.clone();
        for dir in [&root, &self.paths.sessions, &self.paths.archive]
            .into_iter()
            .chain([&self.paths.logs, &self.paths.chains])
        {
            for name in list(&*self.storage, dir)? {
                let path = dir.join(&name);
                // Only the projector's own files: others (a bundle being exported into the
                // data directory, say) are not its to remove.
                // The amplihack format's names are amplihack's own (`<id>.json`), so a file
                // of a session the state lacks is as likely amplihack's as ours: left alone.
                let by_name = self.layout.format() == ProjectionFormat::Seed;
                let stale = if let Some(base) = crate::storage::temp_target(&name) {
                    self.is_projection_file(dir, base)
                } else if *dir == self.paths.sessions || *dir == self.paths.archive {
                    by_name
                        && self
                            .layout
                            .session_of_file(dir, &name)
                            .is_some_and(|id| state.session(&id).is_none())
                } else if *dir == self.paths.logs {
                    by_name
                        && self
                            .layout
                            .session_of_log(&name)
                            .is_some_and(|id| state.session(&id).is_none())
                } else if *dir == self.paths.chains {
                    agent_of_chain_file(&name).is_some_and(|a| state.chain(&a).is_none())
                } else {
                    false
                };
                if stale && self.remove_if_exists(&path)? {
                    report.removed += 1;
                }
            }
        }
        let ids: Vec<&SessionId> = state.sessions.keys().collect();
        in_parallel(&ids, |id| self.write_session(&state, id))?;
        report.sessions += ids.len() as u64;
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
        if self.received == state.last_lsn {
            self.write_marker(state.last_lsn)?;
        }
        self.last_checkpoint = Instant::now();
        self.shared.update(|p| p.status.rebuilds += 1);
        Ok(report)
    }
}
