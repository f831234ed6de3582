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
        let sessions = listed(&self.paths.sessions)?;
        let archive = listed(&self.paths.archive)?;
        let logs = listed(&self.paths.logs)?;
        let rotated: HashSet<SessionId> = list(storage, &self.paths.logs_archive)?
            .iter()
            .filter_map(|n| rotated_log_of(n).map(|(id, _)| id))
            .collect();
        let chains = listed(&self.paths.chains)?;
        if !sessions.contains("registry.json") {
            self.dirty.registry = true;
        }
        for s in state.sessions.values() {
            let name = format!("session_{}.json", s.id);
            let (here, there) = if s.status() == Status::Archived {
                (&archive, &sessions)
            } else {
                (&sessions, &archive)
            };
            if !here.contains(&name) || there.contains(&name) {
                self.dirty.sessions.insert(s.id.clone());
                self.dirty.registry = true;
            }
            if s.config.enable_logging
                && !logs.contains(&format!("session_{}.log", s.id))
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
        let p = &self.paths;
        let is =
            |file: &Path| file.parent() == Some(dir) && file.file_name() == Some(name.as_ref());
        if is(&p.marker) || is(&p.registry) {
            true
        } else if dir == p.sessions || dir == p.archive {
            session_id_of_file(name).is_some()
        } else if dir == p.logs {
            session_id_of_log(name).is_some()
        } else if dir == p.chains {
            agent_of_chain_file(name).is_some()
        } else {
            false
        }
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
                let stale = if let Some(base) = crate::storage::temp_target(&name) {
                    self.is_projection_file(dir, base)
                } else if *dir == self.paths.sessions || *dir == self.paths.archive {
                    session_id_of_file(&name).is_some_and(|id| state.session(&id).is_none())
                } else if *dir == self.paths.logs {
                    session_id_of_log(&name).is_some_and(|id| state.session(&id).is_none())
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
