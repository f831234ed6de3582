//! Moving sessions in and out: bundles (export, import), chains, clones.

use std::path::Path;

use crate::command::{Command, Outcome};
use crate::error::{Error, Result};
use crate::export::{Bundle, parse_bundle};

use super::{ChainImport, ClaudeSession, SessionManager, session_id, unexpected};

impl SessionManager {
    /// Every event of session `id`, as a bundle.
    pub fn export_bundle(&self, id: &str) -> Result<Bundle> {
        Bundle::export(&self.inner.engine, &session_id(id)?)
    }

    /// Exports session `id` to the file `path` (written atomically; seed 000
    /// `export_session_data`). Works on a read-only manager.
    pub fn export_session(&self, id: &str, path: impl AsRef<Path>) -> Result<Bundle> {
        let bundle = self.export_bundle(id)?;
        bundle.write_to(&*self.inner.engine.options().storage, path.as_ref())?;
        Ok(bundle)
    }

    /// Imports a bundle; the session keeps its id unless this engine already has it, in
    /// which case it gets a new one. Returns its handle.
    pub fn import_bundle(&self, bundle: Bundle) -> Result<ClaudeSession> {
        let c = self.inner.execute(Command::Import {
            original: bundle.session_id,
            events: bundle.events,
        })?;
        match c.outcome {
            Outcome::Session(id) => Ok(self.handle(id)),
            other => Err(unexpected(other)),
        }
    }

    /// Imports the bundle in `bytes`. A refused bundle is [`Error::InvalidBundle`] and
    /// changes nothing.
    pub fn import_bytes(&self, bytes: &[u8]) -> Result<ClaudeSession> {
        let bundle =
            parse_bundle(bytes).map_err(|reason| Error::InvalidBundle { path: None, reason })?;
        self.import_bundle(bundle)
    }

    /// Imports the bundle file at `path` (seed 000 `import_session_data`).
    pub fn import_session(&self, path: impl AsRef<Path>) -> Result<ClaudeSession> {
        let bundle = Bundle::read_from(&*self.inner.engine.options().storage, path.as_ref())?;
        self.import_bundle(bundle)
    }

    /// Imports seed 003 tracker files (`<agent>_sessions.json`, as seed 003's
    /// `SessionTracker` writes them): the file `path`, or every one in the directory `path`
    /// (seed 003's `~/.claude-agent/sessions`, or a data directory's `chains/`). Each file
    /// becomes one agent's chain, every field kept (see [`crate::import::seed003`]): the
    /// chain file the projector writes is equal, as a JSON value, to the file read, and
    /// `chain --link` goes on from the file's count and current id as seed 003 would.
    ///
    /// All or nothing, in one log record. A file equal, as a JSON value, to the chain file
    /// this engine renders for that agent is already imported and is left out
    /// ([`ChainImport::unchanged`]; importing twice changes nothing). Refused, changing
    /// nothing: a file that is not a tracker file ([`Error::InvalidChainFile`]), an agent
    /// whose chain in this engine differs from the file ([`Error::AlreadyExists`]; chains
    /// are not merged), and, with projections on, a chain whose projection path
    /// `chains/<agent>_sessions.json` holds a file other than the one imported
    /// ([`crate::import::seed003::ChainFileError::TargetTaken`]). When that path holds
    /// exactly the imported file (importing a data directory's own `chains/`), the import
    /// adopts it: the engine owns that file from then on. The call returns once the
    /// projection files show the import (a projection failure is not the import's: it is
    /// committed, and [`SessionManager::projection_status`] says so).
    pub fn import_chains(&self, path: impl AsRef<Path>) -> Result<ChainImport> {
        // The engine's own chain files, when `path` is the data directory's `chains/`,
        // must show the state before they are compared with it (an error here is the
        // projections', reported by their status; the comparison then refuses, safely).
        let _ = self.flush_projections();
        let storage = &*self.inner.engine.options().storage;
        let sources = crate::import::seed003::read_chain_files(storage, path.as_ref())?;
        self.import_chain_sources(sources)
    }

    /// [`SessionManager::import_chains`] for the files [`crate::import::seed003::read_chain_files`]
    /// read.
    fn import_chain_sources(
        &self,
        sources: Vec<crate::import::seed003::ChainSource>,
    ) -> Result<ChainImport> {
        use crate::import::seed003::ChainFileError;
        use crate::storage::FileKind;
        let state = self.inner.state();
        let mut report = ChainImport::default();
        let mut new = Vec::new();
        for s in sources {
            let Some(existing) = state.chain(&s.chain.agent) else {
                new.push(s);
                continue;
            };
            let ours = serde_json::to_value(crate::projection::ChainFile::of(existing)).ok();
            let theirs = serde_json::from_slice::<serde_json::Value>(&s.bytes).ok();
            if ours.is_some() && ours == theirs {
                report.unchanged.push(s.chain.agent);
            } else {
                return Err(Error::AlreadyExists {
                    kind: "chain",
                    id: s.chain.agent.to_string(),
                });
            }
        }
        if new.is_empty() {
            return Ok(report);
        }
        // A chain's projection path holding another file: the import is refused, whether
        // or not a projector runs now (one will write there).
        if !self.inner.engine.is_read_only() {
            let storage = &*self.inner.engine.options().storage;
            let paths = self.projection_paths();
            for s in &new {
                let target = paths.chain_file(&s.chain.agent);
                let taken = || Error::InvalidChainFile {
                    path: s.path.clone(),
                    reason: ChainFileError::TargetTaken {
                        target: target.clone(),
                    },
                };
                match storage
                    .kind(&target)
                    .map_err(|e| Error::io("inspect chain file", &target, e))?
                {
                    None => {}
                    Some(FileKind::File) => {
                        let there = storage
                            .read(&target)
                            .map_err(|e| Error::io("read chain file", &target, e))?;
                        // The same bytes there are the file being imported (the data
                        // directory's own `chains/`): the projector adopts it.
                        if *there != *s.bytes {
                            return Err(taken());
                        }
                    }
                    Some(_) => return Err(taken()),
                }
            }
        }
        // The projector takes over a file at a chain's path that holds exactly what it
        // writes for the imported chain (see `projection`'s ownership rules).
        let c = self
            .inner
            .execute(Command::ImportChains {
                chains: new.into_iter().map(|s| s.chain).collect(),
            })
            .map_err(|e| match e {
                // The whole import is one record: say what to do when it is too big.
                Error::InvalidInput {
                    field: "event",
                    reason,
                } => Error::InvalidInput {
                    field: "chain import",
                    reason: format!(
                        "{reason}; import the tracker files in smaller groups (a directory \
                         per group, or one file at a time)"
                    ),
                },
                other => other,
            })?;
        report.imported = match c.outcome {
            Outcome::Chains(agents) => agents,
            other => return Err(unexpected(other)),
        };
        report.lsn = Some(c.lsn);
        if let Err(e) = self.wait_for_projections(c.lsn, None) {
            tracing::warn!(
                error = %e,
                "the imported chains are committed, but their projection files are not \
                 written yet"
            );
        }
        Ok(report)
    }

    /// Copies session `id` into a new active session (id generated when `new_id` is
    /// `None`), keeping its metadata, logs and checkpoints, and the agents active in the
    /// source when the call begins (seed 002's "agent copying"): each is activated in the
    /// copy with its configuration, one `AgentChanged` event each, after the clone's
    /// event (submitted together, so they usually share its batch). The copy's agent
    /// counters start afresh. The call returns once all are durable; if one is refused
    /// (the copy was ended meanwhile) its error is returned and the copy stays.
    pub fn clone_session(&self, id: &str, new_id: Option<&str>) -> Result<ClaudeSession> {
        let new_id = new_id.map(session_id).transpose()?;
        let source = session_id(id)?;
        let agents: Vec<(String, Option<crate::types::JsonText>)> = self
            .inner
            .state()
            .agents_of(&source)
            .map(|a| {
                a.iter()
                    .filter(|(_, a)| a.active)
                    .map(|(t, a)| (t.clone(), a.config.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let c = self.inner.execute(Command::Clone { source, new_id })?;
        let id = match c.outcome {
            Outcome::Session(id) => id,
            other => return Err(unexpected(other)),
        };
        let pending: Vec<_> = agents
            .into_iter()
            .map(|(agent_type, config)| {
                self.inner.engine().submit(Command::ChangeAgent {
                    session: id.clone(),
                    agent_type,
                    action: crate::event::AgentAction::Activated,
                    config,
                })
            })
            .collect();
        for p in pending {
            p.wait()?;
        }
        Ok(self.handle(id))
    }
}
