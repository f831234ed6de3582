//! Claude Code's own transcripts: `~/.claude/projects/<project>/<session id>.jsonl`, one
//! JSON object per line (`user`, `assistant`, `system`, `summary`, `progress`,
//! `file-history-snapshot`, `queue-operation`, and types Claude Code adds later).
//!
//! * [`reader`]: [`TranscriptReader`], the streaming line reader (bounded memory, every
//!   bad line reported by number, an incomplete last line told from damage);
//! * [`summary`]: [`TranscriptInfo`], seed 003's `validate_session_file` and
//!   `get_session_info` with more (records by type, ids, models, token usage counted
//!   once per message), and [`Totals`] over several files;
//! * [`find_transcripts`]: the `*.jsonl` files under the paths a user names;
//! * [`report`]: [`Report`], `claude validate` and `claude info` over several paths, with
//!   the JSON form the command line and the protocol share;
//! * [`answer`]: [`parse_answer`], the result message `claude -p --output-format json`
//!   prints, which `SessionManager::exec_claude` reads.
//!
//! Everything here only reads, through [`Storage`], and never follows a symbolic link
//! inside a directory it walks.

pub mod answer;
pub mod events;
pub mod import;
pub mod index;
pub mod pieces;
pub mod reader;
pub mod report;
pub mod resume;
pub mod search;
pub mod summary;

use std::path::{Path, PathBuf};

pub use answer::{AnswerError, ClaudeAnswer, MAX_ANSWER_BYTES, parse_answer};
pub use reader::{
    CHUNK_BYTES, Entry, LineProblem, MAX_LINE_BYTES, ProblemKind, Record, RecordKind,
    TranscriptReader,
};
pub use report::{Detail, Report};
pub use summary::{TokenUsage, Totals, TranscriptInfo, summarize, summarize_reader};

use crate::error::Error;
use crate::storage::{FileKind, Storage};

/// How deep [`find_transcripts`] goes below a directory it was given (Claude Code's own
/// layout is two levels: `<project>/<session>/subagents/agent-*.jsonl`).
pub const MAX_WALK_DEPTH: usize = 32;

/// The folder of `~/.claude/projects` that holds the transcripts of sessions run in
/// `cwd`: the directory with every character outside `[A-Za-z0-9]` replaced by `-`
/// (`/home/a/my.proj` is `-home-a-my-proj`).
pub fn project_dir_name(cwd: &str) -> String {
    cwd.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Where Claude Code keeps the transcript of session `session_id` run in `cwd`, under
/// `projects` (`~/.claude/projects`): seed 003's `validate_session_file` path.
pub fn transcript_path(projects: &Path, cwd: &str, session_id: &str) -> PathBuf {
    projects
        .join(project_dir_name(cwd))
        .join(format!("{session_id}.jsonl"))
}

/// A path [`find_transcripts`] passed over, and why.
#[derive(Debug)]
pub struct Skipped {
    /// The path.
    pub path: PathBuf,
    /// Why it was not read.
    pub reason: String,
}

/// A path [`find_transcripts`] could not look at.
#[derive(Debug)]
pub struct Unreadable {
    /// The path.
    pub path: PathBuf,
    /// What went wrong (an [`Error::Io`]; `NotFound` for a path that does not exist).
    pub error: Error,
    /// Whether the user named this path (rather than it being found in a directory).
    pub named: bool,
}

/// What [`find_transcripts`] found.
#[derive(Debug, Default)]
pub struct Found {
    /// The transcripts to read, in the order the paths were given, each directory's
    /// sorted by name.
    pub files: Vec<PathBuf>,
    /// Symbolic links inside directories (not followed), and anything that is not a
    /// regular file named `*.jsonl`.
    pub skipped: Vec<Skipped>,
    /// Paths that could not be listed or looked at.
    pub unreadable: Vec<Unreadable>,
}

/// The transcripts at `paths`: a file is read whatever its name (a symbolic link the user
/// names is followed); a directory is walked for regular files named `*.jsonl`, at most
/// [`MAX_WALK_DEPTH`] levels down, without following the symbolic links inside it (so a
/// link loop, or a link out of the tree, is reported in [`Found::skipped`] and never
/// entered). A folder or path that cannot be read is reported and the rest is walked.
/// Nothing is written.
pub fn find_transcripts(storage: &dyn Storage, paths: &[PathBuf]) -> Found {
    let mut found = Found::default();
    for path in paths {
        let kind = match storage.kind_following(path) {
            Ok(k) => k,
            Err(e) => {
                found.unreadable.push(Unreadable {
                    path: path.clone(),
                    error: Error::io("inspect transcript path", path, e),
                    named: true,
                });
                continue;
            }
        };
        match kind {
            Some(FileKind::File) => found.files.push(path.clone()),
            Some(FileKind::Dir) => walk(storage, path, &mut found),
            None => found.unreadable.push(Unreadable {
                path: path.clone(),
                error: Error::io(
                    "inspect transcript path",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such file or directory (or a dangling symbolic link)",
                    ),
                ),
                named: true,
            }),
            Some(k) => found.unreadable.push(Unreadable {
                path: path.clone(),
                error: Error::io(
                    "inspect transcript path",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{k}, not a regular file or a directory"),
                    ),
                ),
                named: true,
            }),
        }
    }
    found
}

fn walk(storage: &dyn Storage, root: &Path, found: &mut Found) {
    // Depth first with an explicit stack, children in name order.
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let names = match storage.list_dir(&dir) {
            Ok(n) => n,
            Err(e) => {
                found.unreadable.push(Unreadable {
                    error: Error::io("list transcript directory", &dir, e),
                    path: dir,
                    named: false,
                });
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for name in names {
            let path = dir.join(&name);
            let jsonl = name.ends_with(".jsonl");
            match storage.kind(&path) {
                Ok(Some(FileKind::File)) if jsonl => found.files.push(path),
                Ok(Some(FileKind::File)) | Ok(None) => {}
                Ok(Some(FileKind::Dir)) if depth < MAX_WALK_DEPTH => subdirs.push(path),
                Ok(Some(FileKind::Dir)) => found.skipped.push(Skipped {
                    path,
                    reason: format!("more than {MAX_WALK_DEPTH} folders deep: not walked"),
                }),
                Ok(Some(FileKind::Symlink)) => found.skipped.push(Skipped {
                    path,
                    reason: "a symbolic link, not followed".into(),
                }),
                Ok(Some(FileKind::Other)) if jsonl => found.skipped.push(Skipped {
                    path,
                    reason: "a device, fifo or socket, not a regular file".into(),
                }),
                Ok(Some(_)) => {}
                Err(e) => found.unreadable.push(Unreadable {
                    error: Error::io("inspect transcript path", &path, e),
                    path,
                    named: false,
                }),
            }
        }
        // Not one of Claude Code's names (those are text), and no session id: reported.
        match storage.list_dir_not_utf8(&dir) {
            Ok(odd) => found.skipped.extend(odd.into_iter().map(|name| Skipped {
                path: dir.join(name),
                reason: "its name is not UTF-8: not read (rename it to import it)".into(),
            })),
            Err(e) => found.unreadable.push(Unreadable {
                error: Error::io("list transcript directory", &dir, e),
                path: dir.clone(),
                named: false,
            }),
        }
        // Files of this folder first, then its folders in name order.
        for d in subdirs.into_iter().rev() {
            stack.push((d, depth + 1));
        }
    }
}

/// The transcript of Claude Code session `session_id` under `projects` (`~/.claude/projects`):
/// `<projects>/<project>/<session_id>.jsonl` in some project folder (links inside
/// `projects` are not followed), checked to be valid (every line a record; an incomplete
/// last line, a write in progress, is fine). `NotFound` when there is none, `InvalidInput`
/// when the id is not a file name or the transcript has a bad line. `chain --link` uses it.
pub fn find_valid_transcript(
    storage: &dyn Storage,
    projects: &Path,
    session_id: &str,
) -> crate::error::Result<PathBuf> {
    if crate::types::SessionId::new(session_id).is_err() {
        return Err(Error::invalid(
            "link",
            format!("{session_id:?} is not a Claude Code session id (a file name)"),
        ));
    }
    let names = storage
        .list_dir(projects)
        .map_err(|e| Error::io("list the projects folder", projects, e))?;
    let file = format!("{session_id}.jsonl");
    let path = names
        .iter()
        .map(|n| projects.join(n))
        .filter(|d| matches!(storage.kind(d), Ok(Some(FileKind::Dir))))
        .map(|d| d.join(&file))
        .find(|p| matches!(storage.kind(p), Ok(Some(FileKind::File))))
        .ok_or_else(|| Error::NotFound {
            kind: "Claude Code transcript",
            id: format!(
                "{session_id} (no {file} in a project folder of {})",
                projects.display()
            ),
        })?;
    let info = summarize(storage, &path)?;
    if !info.valid {
        let first = info
            .problems
            .first()
            .map(|p| format!("line {}: {p}", p.line))
            .unwrap_or_default();
        return Err(Error::invalid(
            "link",
            format!(
                "the transcript {} has {} bad lines ({first})",
                path.display(),
                info.bad_lines
            ),
        ));
    }
    Ok(path)
}
