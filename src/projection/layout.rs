//! What a projection format puts where, and which renderer writes it: the one seam
//! between the projector, which writes, moves and checks files without knowing any
//! format, and the formats ([`super::schema`] for `seed`, [`super::schema::amplihack`]).
//!
//! Every path the projector writes under a data directory comes from a [`Layout`], so a
//! session id reaches the file system only through these functions (ids are safe file
//! names; the names each format reserves are refused here).

use std::path::{Path, PathBuf};

use super::format::ProjectionFormat;
use super::logline::{self, LogLine};
use super::schema::{
    self, ProjectionPaths, RegistryFile, SessionFile, agent_of_chain_file, amplihack,
};
use crate::event::Event;
use crate::state::{Session, State, Status};
use crate::types::{Lsn, SessionId};

/// The files of one format under one data directory.
#[derive(Clone, Debug)]
pub struct Layout {
    format: ProjectionFormat,
    paths: ProjectionPaths,
}

impl Layout {
    /// The layout of `format` under `root`.
    pub fn new(root: &Path, format: ProjectionFormat) -> Layout {
        Layout {
            format,
            paths: ProjectionPaths::new(root),
        }
    }

    /// The format.
    pub fn format(&self) -> ProjectionFormat {
        self.format
    }

    /// The directories and the files every format shares (registry, marker, chains).
    pub fn paths(&self) -> &ProjectionPaths {
        &self.paths
    }

    /// Where session `s`'s file belongs now, given its status; `None` when the format
    /// writes none for it.
    pub fn session_file(&self, s: &Session) -> Option<PathBuf> {
        let archived = s.status() == Status::Archived;
        match self.format {
            ProjectionFormat::Seed => Some(if archived {
                self.paths.archived_session_file(&s.id)
            } else {
                self.paths.session_file(&s.id)
            }),
            ProjectionFormat::Amplihack => amplihack::has_file(s).then(|| {
                if archived {
                    self.amplihack_archive_file(s)
                } else {
                    self.paths.sessions.join(format!("{}.json", s.id))
                }
            }),
        }
    }

    fn amplihack_archive_file(&self, s: &Session) -> PathBuf {
        self.paths
            .archive
            .join(format!("{}_{}.json", s.id, amplihack::archive_ts(s)))
    }

    /// The other places this format may have left a file of `s` (under an earlier
    /// status), to be removed once the file where it belongs is written.
    pub fn other_session_files(&self, s: &Session) -> Vec<PathBuf> {
        let archived = s.status() == Status::Archived;
        match self.format {
            ProjectionFormat::Seed => vec![if archived {
                self.paths.session_file(&s.id)
            } else {
                self.paths.archived_session_file(&s.id)
            }],
            ProjectionFormat::Amplihack if !amplihack::writes_file(&s.id) => Vec::new(),
            ProjectionFormat::Amplihack => vec![if archived {
                self.paths.sessions.join(format!("{}.json", s.id))
            } else {
                self.amplihack_archive_file(s)
            }],
        }
    }

    /// Every file this format may hold for session `s`, wherever its status puts it: its
    /// file in either place, its log and the log's rotated parts up to `rotated`.
    pub fn all_session_files(&self, s: &Session, rotated: &[u64]) -> Vec<PathBuf> {
        let mut v = Vec::new();
        if self.format == ProjectionFormat::Seed || amplihack::writes_file(&s.id) {
            v.extend(self.session_file(s));
            v.extend(self.other_session_files(s));
            if self.format == ProjectionFormat::Amplihack && !amplihack::has_file(s) {
                v.push(self.paths.sessions.join(format!("{}.json", s.id)));
            }
        }
        if self.writes_log(&s.id) {
            v.push(self.log_file(&s.id));
            v.extend(rotated.iter().map(|n| self.rotated_log_file(&s.id, *n)));
        }
        v
    }

    /// The bytes of session `s`'s file, its activities as the state holds them (an
    /// error if the format writes activities and one has its details in the log: see
    /// [`Layout::render_session_with`]).
    pub fn render_session(&self, s: &Session) -> serde_json::Result<Vec<u8>> {
        self.render_session_with(s, None)
    }

    /// Whether a session's file holds its activities (their details are read from the
    /// log to render it).
    pub fn writes_activities(&self) -> bool {
        self.format == ProjectionFormat::Seed
    }

    /// The bytes of session `s`'s file with `activities`, its activities read through its
    /// history, when [`Layout::writes_activities`] (`None`: as the state holds them).
    pub fn render_session_with(
        &self,
        s: &Session,
        activities: Option<&[std::sync::Arc<crate::state::Activity>]>,
    ) -> serde_json::Result<Vec<u8>> {
        match (self.format, activities) {
            (ProjectionFormat::Seed, Some(a)) => SessionFile::with_activities(s, a).to_bytes(),
            (ProjectionFormat::Seed, None) => SessionFile::of(s).to_bytes(),
            (ProjectionFormat::Amplihack, _) => amplihack::session_bytes(s),
        }
    }

    /// The bytes of `sessions/registry.json`; `None` when the format writes none for
    /// this state (an adoption of a directory that had none, unchanged).
    pub fn render_registry(&self, state: &State) -> serde_json::Result<Option<Vec<u8>>> {
        match self.format {
            ProjectionFormat::Seed => RegistryFile::of(state).to_bytes().map(Some),
            ProjectionFormat::Amplihack => amplihack::registry_bytes(state),
        }
    }

    /// Whether session `id` has a per-session log in this format.
    pub fn writes_log(&self, id: &SessionId) -> bool {
        match self.format {
            ProjectionFormat::Seed => true,
            ProjectionFormat::Amplihack => amplihack::writes_log(id),
        }
    }

    /// The per-session log of `id`.
    pub fn log_file(&self, id: &SessionId) -> PathBuf {
        match self.format {
            ProjectionFormat::Seed => self.paths.log_file(id),
            ProjectionFormat::Amplihack => self.paths.logs.join(format!("{id}.log")),
        }
    }

    /// Part `n` of `id`'s rotated log.
    pub fn rotated_log_file(&self, id: &SessionId, n: u64) -> PathBuf {
        match self.format {
            ProjectionFormat::Seed => self.paths.rotated_log_file(id, n),
            ProjectionFormat::Amplihack => self.paths.logs_archive.join(format!("{id}.{n}.log")),
        }
    }

    /// The session a file named `name` in `dir` (`sessions/` or its archive) is the file
    /// of, in this format.
    pub fn session_of_file(&self, dir: &Path, name: &str) -> Option<SessionId> {
        match self.format {
            ProjectionFormat::Seed => schema::session_id_of_file(name),
            ProjectionFormat::Amplihack if dir == self.paths.archive => {
                amplihack::archived_file_of(name).map(|(id, _)| id)
            }
            ProjectionFormat::Amplihack => amplihack::session_id_of_file(name),
        }
    }

    /// The session a log named `name` in `logs/` belongs to.
    pub fn session_of_log(&self, name: &str) -> Option<SessionId> {
        match self.format {
            ProjectionFormat::Seed => schema::session_id_of_log(name),
            ProjectionFormat::Amplihack => amplihack::session_id_of_log(name),
        }
    }

    /// The session and part number of a rotated log named `name` in `logs/archive/`.
    pub fn rotated_log_of(&self, name: &str) -> Option<(SessionId, u64)> {
        match self.format {
            ProjectionFormat::Seed => schema::rotated_log_of(name),
            ProjectionFormat::Amplihack => amplihack::rotated_log_of(name),
        }
    }

    /// Whether `name` in `dir` is a file this format writes (by its name alone).
    pub fn is_projection_file(&self, dir: &Path, name: &str) -> bool {
        let p = &self.paths;
        let is =
            |file: &Path| file.parent() == Some(dir) && file.file_name() == Some(name.as_ref());
        if is(&p.marker) || is(&p.registry) {
            true
        } else if dir == p.sessions || dir == p.archive {
            self.session_of_file(dir, name).is_some()
        } else if dir == p.logs {
            self.session_of_log(name).is_some()
        } else if dir == p.logs_archive {
            self.rotated_log_of(name).is_some()
        } else if dir == p.chains {
            agent_of_chain_file(name).is_some()
        } else {
            false
        }
    }

    /// Appends the per-session log lines event `lsn` produces in this format.
    pub(crate) fn log_lines(
        &self,
        lsn: Lsn,
        event: &Event,
        state: &State,
        out: &mut Vec<(SessionId, LogLine)>,
    ) {
        logline::lines_for(self.format, lsn, event, state, out);
    }

    /// The paths of the files an adoption took over from amplihack for session `s` (where
    /// they were read): its file, the registry if there was one, its log if it had one;
    /// the files the engine owns from then on. Empty for a session that was not adopted,
    /// and in another format.
    pub fn adopted_files(&self, s: &Session) -> Vec<PathBuf> {
        let Some(a) = s.adoption() else {
            return Vec::new();
        };
        if self.format != ProjectionFormat::Amplihack {
            return Vec::new();
        }
        let mut v = Vec::new();
        if a.documents.file.is_some() {
            v.push(match a.documents.archive_ts {
                Some(ts) => self.paths.archive.join(format!("{}_{ts}.json", s.id)),
                None => self.paths.sessions.join(format!("{}.json", s.id)),
            });
        }
        if a.documents.registry_rest.is_some() {
            v.push(self.paths.registry.clone());
        }
        if a.log && self.writes_log(&s.id) {
            v.push(self.log_file(&s.id));
        }
        v
    }
}
