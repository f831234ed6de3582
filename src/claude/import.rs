//! `claude import`: Claude Code transcripts into the engine, losslessly and incrementally.
//!
//! Each transcript file is one engine session (ids: [`session_id_for`]); each of its
//! lines is one event holding the line's exact bytes ([`super::events`]). The state keeps
//! per transcript how far the file is imported and the chained hash of that prefix
//! ([`crate::state::Transcript`]), updated by the same events that hold the bytes, so a
//! crash at any moment leaves the two in step: the next import goes on from there,
//! neither losing nor repeating a line (a piece that does not continue its transcript is
//! refused by `decide`).
//!
//! Before going on, the import checks that the file still starts with what was imported
//! ([`Check`]). A file that does not (rewritten, truncated) is reported and imported from
//! its start as a new version, a new session `<id>.v<n>` that names the one it replaces;
//! nothing is merged. An incomplete last line is left for the next import. A line that is
//! not a record (not UTF-8, not JSON) is reported by number and kept as bytes, so export
//! still gives the file back.

mod follow;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::events::{ClaudeEvent, ClaudeOpened, ClaudePiece, Layout};
use super::pieces::{Pieces, RawPiece, parse_line};
pub use super::resume::{ChainedLink, link_resumed};
use crate::command::Command;
use crate::engine::{Engine, Pending};
use crate::error::{Error, Result};
use crate::state::{EMPTY_PREFIX_HASH, Transcript, chain_hash};
use crate::storage::{OpenMode, Storage};
use crate::types::SessionId;
pub use follow::{Follower, SETTLE, import_paths};

/// Most commands in flight at once while importing.
const MAX_IN_FLIGHT: usize = 2048;
/// Most bytes of pieces in flight at once.
const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;
/// Most bad lines a report lists (all are counted).
pub const MAX_REPORTED_BAD_LINES: usize = 100;
/// How many lines are looked at for a `cwd` before a transcript is opened.
const CWD_LOOKAHEAD_LINES: usize = 64;

/// How to check that a file still starts with what was imported of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Re-read the imported prefix and compare its chained hash (a full read).
    Full,
    /// Compare only the file's length and the last imported piece (for `follow`, after a
    /// full check of the same file).
    Quick,
}

/// The engine session of the transcript at `path`, its layout and, for a subagent under
/// its session's folder, that session's id:
///
/// * `<project>/<id>.jsonl` is session `<id>` (Claude Code's session id);
/// * `<project>/agent-<a>.jsonl` is session `agent-<a>`;
/// * `<project>/<id>/subagents/agent-<a>.jsonl` is session `<id>.agent-<a>`.
///
/// A later version of a rewritten file is `<that id>.v<n>`. A name that is not a valid
/// session id is refused.
pub fn session_id_for(path: &Path) -> Result<(SessionId, Layout, Option<String>)> {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".jsonl").unwrap_or(n))
        .ok_or_else(|| Error::invalid("transcript", format!("{}: no file name", path.display())))?;
    let parent_dir = path.parent();
    let in_subagents = parent_dir
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        == Some("subagents");
    let session_dir = parent_dir
        .and_then(|p| p.parent())
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    let bad = |e: Error| {
        Error::invalid(
            "transcript",
            format!(
                "{}: its name does not make a session id ({e})",
                path.display()
            ),
        )
    };
    match (stem.starts_with("agent-"), in_subagents, session_dir) {
        (true, true, Some(parent)) if SessionId::new(parent).is_ok() => {
            let id = SessionId::new(&format!("{parent}.{stem}")).map_err(bad)?;
            Ok((id, Layout::AgentNested, Some(parent.to_string())))
        }
        (true, _, _) => Ok((
            SessionId::new(stem).map_err(bad)?,
            Layout::AgentBeside,
            None,
        )),
        _ => Ok((SessionId::new(stem).map_err(bad)?, Layout::Session, None)),
    }
}

/// A line that is not a record (its bytes were imported all the same).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// Its number, from 1.
    pub line: u64,
    /// Its offset in the file.
    pub offset: u64,
    /// Why it is not a record.
    pub reason: String,
}

/// What importing one file did.
#[derive(Clone, Debug, Serialize)]
pub struct FileImport {
    /// The file.
    pub path: PathBuf,
    /// The session it is imported into.
    pub session: SessionId,
    /// Whether that session was created by this import.
    pub opened: bool,
    /// Why the file was imported as a new version (it no longer starts with what was
    /// imported of it), if it was.
    pub new_version: Option<String>,
    /// The session of the version it replaces, if it was.
    pub replaces: Option<SessionId>,
    /// Bytes imported now.
    pub bytes: u64,
    /// Whole lines imported now.
    pub lines: u64,
    /// Bytes of the file imported in all (the offset the next import starts at).
    pub imported_to: u64,
    /// Lines imported now that are not records (at most [`MAX_REPORTED_BAD_LINES`]).
    pub bad_lines: Vec<BadLine>,
    /// How many there were.
    pub bad_line_count: u64,
    /// Bytes after the last complete line: left for the next import.
    pub incomplete_bytes: u64,
}

impl FileImport {
    /// The JSON form of the report, as `claude import --json` and the `claude_import`
    /// op print it (paths as text, lossily where they are not UTF-8).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path.to_string_lossy(),
            "session": self.session.as_str(),
            "opened": self.opened,
            "new_version": self.new_version,
            "replaces": self.replaces.as_ref().map(|r| r.as_str()),
            "bytes": self.bytes,
            "lines": self.lines,
            "imported_to": self.imported_to,
            "bad_line_count": self.bad_line_count,
            "bad_lines": self.bad_lines.iter().map(|b| serde_json::json!({
                "line": b.line, "offset": b.offset, "reason": b.reason,
            })).collect::<Vec<_>>(),
            "incomplete_bytes": self.incomplete_bytes,
        })
    }
}

/// Why a file does not start with what was imported of it, if it does not.
fn prefix_mismatch(
    storage: &dyn Storage,
    path: &Path,
    t: &Transcript,
    check: Check,
) -> Result<Option<String>> {
    let mut file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open transcript", path, e))?;
    let len = file
        .len()
        .map_err(|e| Error::io("read transcript", path, e))?;
    if len < t.offset {
        return Ok(Some(format!(
            "the file has {len} bytes, fewer than the {} imported (truncated or rewritten)",
            t.offset
        )));
    }
    if t.offset == 0 {
        return Ok(None);
    }
    if check == Check::Quick
        && let Some((at, hash)) = t.last_piece
    {
        let mut buf = vec![0u8; (t.offset - at) as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(at + got as u64, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read transcript", path, e)),
            }
        }
        return Ok(
            (got < buf.len() || chain_hash(EMPTY_PREFIX_HASH, &buf) != hash).then(|| {
                format!("the last imported line, at byte {at}, is no longer the same (rewritten)")
            }),
        );
    }
    let mut pieces = Pieces::new(file, 0, 1);
    let mut hash = EMPTY_PREFIX_HASH;
    while pieces.position() < t.offset {
        let piece = pieces
            .next_piece()
            .map_err(|e| Error::io("read transcript", path, e))?;
        match piece {
            Some(p) if p.offset + p.bytes.len() as u64 <= t.offset => {
                hash = chain_hash(hash, &p.bytes);
            }
            _ => {
                return Ok(Some(format!(
                    "its lines no longer end at byte {} where the import stopped (rewritten)",
                    t.offset
                )));
            }
        }
    }
    Ok((hash != t.hash).then(|| {
        format!(
            "its first {} bytes are not the ones imported (rewritten)",
            t.offset
        )
    }))
}

/// The `cwd` of the file's first records, if one of the first lines has one.
fn first_cwd(storage: &dyn Storage, path: &Path) -> Result<Option<String>> {
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open transcript", path, e))?;
    let mut pieces = Pieces::new(file, 0, 1);
    for _ in 0..CWD_LOOKAHEAD_LINES {
        match pieces.next_piece() {
            Ok(Some(p)) if p.whole_line => {
                if let Ok((_, Some(cwd))) = parse_line(&p.bytes) {
                    return Ok(Some(cwd));
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::io("read transcript", path, e)),
        }
    }
    Ok(None)
}

/// The commands of one import in flight, bounded.
struct InFlight {
    queue: VecDeque<(Pending, usize)>,
    bytes: usize,
}

impl InFlight {
    fn push(&mut self, engine: &Engine, cmd: Command, bytes: usize) -> Result<()> {
        while self.queue.len() >= MAX_IN_FLIGHT || self.bytes + bytes > MAX_IN_FLIGHT_BYTES {
            self.wait_one()?;
        }
        self.queue.push_back((engine.submit(cmd), bytes));
        self.bytes += bytes;
        Ok(())
    }

    fn wait_one(&mut self) -> Result<()> {
        if let Some((p, n)) = self.queue.pop_front() {
            self.bytes -= n;
            p.wait()?;
        }
        Ok(())
    }

    fn wait_all(&mut self) -> Result<()> {
        let mut first = Ok(());
        while !self.queue.is_empty() {
            if let Err(e) = self.wait_one()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

fn piece_event(
    session: &SessionId,
    p: RawPiece,
    bad: &mut Vec<BadLine>,
    count: &mut u64,
) -> ClaudePiece {
    let ends = p.bytes.last() == Some(&b'\n');
    let (refs, problem) = if !ends {
        (None, None)
    } else if !p.whole_line {
        (
            None,
            Some(format!(
                "a line longer than {} bytes: kept, not parsed",
                super::events::PIECE_BYTES
            )),
        )
    } else {
        match parse_line(&p.bytes) {
            Ok((refs, _)) => (Some(Box::new(refs)), None),
            Err(reason) => (None, Some(reason)),
        }
    };
    if let Some(reason) = &problem {
        *count += 1;
        if bad.len() < MAX_REPORTED_BAD_LINES {
            bad.push(BadLine {
                line: p.line,
                offset: p.offset,
                reason: reason.clone(),
            });
        }
    }
    ClaudePiece {
        session: session.clone(),
        offset: p.offset,
        bytes: p.bytes,
        refs,
        problem,
    }
}

/// Imports what is new in the transcript at `path` (see the module documentation). What
/// was committed before an error stays committed and is where the next import goes on.
pub fn import_file(
    engine: &Engine,
    storage: &dyn Storage,
    path: &Path,
    check: Check,
) -> Result<FileImport> {
    let (base, layout, parent) = session_id_for(path)?;
    let state = engine.state();
    let mut report = FileImport {
        path: path.to_path_buf(),
        session: base.clone(),
        opened: false,
        new_version: None,
        replaces: None,
        bytes: 0,
        lines: 0,
        imported_to: 0,
        bad_lines: Vec::new(),
        bad_line_count: 0,
        incomplete_bytes: 0,
    };
    let (session, start, line) = match state.newest_transcript(&base) {
        Some((id, t)) => match prefix_mismatch(storage, path, t, check)? {
            None => (id.clone(), t.offset, t.lines + 1),
            Some(reason) => {
                let version = t.opened.version.saturating_add(1);
                let new = SessionId::new(&format!("{base}.v{version}"))?;
                report.new_version = Some(reason.clone());
                report.replaces = Some(id.clone());
                open(
                    engine,
                    storage,
                    path,
                    &new,
                    layout,
                    parent,
                    version,
                    Some(id.clone()),
                    Some(reason),
                )?;
                report.opened = true;
                (new, 0, 1)
            }
        },
        None => {
            if state.session(&base).is_some() {
                return Err(Error::AlreadyExists {
                    kind: "session (not a transcript)",
                    id: base.to_string(),
                });
            }
            open(engine, storage, path, &base, layout, parent, 1, None, None)?;
            report.opened = true;
            (base.clone(), 0, 1)
        }
    };
    drop(state);
    report.session = session.clone();
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open transcript", path, e))?;
    let mut pieces = Pieces::new(file, start, line);
    let mut flight = InFlight {
        queue: VecDeque::new(),
        bytes: 0,
    };
    let result = (|| -> Result<()> {
        while let Some(p) = pieces
            .next_piece()
            .map_err(|e| Error::io("read transcript", path, e))?
        {
            let n = p.bytes.len();
            let piece = piece_event(
                &session,
                p,
                &mut report.bad_lines,
                &mut report.bad_line_count,
            );
            if piece.ends_line() {
                report.lines += 1;
            }
            report.bytes += n as u64;
            flight.push(
                engine,
                Command::Claude(Box::new(ClaudeEvent::Piece(Box::new(piece)))),
                n,
            )?;
        }
        Ok(())
    })();
    let waited = flight.wait_all();
    result?;
    waited?;
    report.imported_to = pieces.position();
    report.incomplete_bytes = pieces.incomplete_bytes();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn open(
    engine: &Engine,
    storage: &dyn Storage,
    path: &Path,
    session: &SessionId,
    layout: Layout,
    parent: Option<String>,
    version: u32,
    replaces: Option<SessionId>,
    reason: Option<String>,
) -> Result<()> {
    let source = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let opened = ClaudeOpened {
        session: session.clone(),
        source: source.display().to_string(),
        layout,
        parent,
        cwd: first_cwd(storage, path)?,
        version,
        replaces,
        reason,
    };
    engine.execute(Command::Claude(Box::new(ClaudeEvent::Opened(Box::new(
        opened,
    )))))?;
    Ok(())
}

/// The bytes of the transcript imported as `session`, in order, handed to `out` piece by
/// piece: the file's imported prefix, byte for byte. Reads the log (nothing is written).
pub fn export(
    engine: &Engine,
    session: &SessionId,
    mut out: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let state = engine.state();
    let Some(t) = state.transcript(session) else {
        return Err(Error::not_found("transcript", session));
    };
    let want = t.offset;
    let mut written = 0u64;
    engine.read_log(crate::types::Lsn(1), state.last_lsn, |_, event| {
        each_piece(&event.body, session, &mut |p| {
            if p.offset != written {
                return Err(Error::corruption(
                    Path::new(session.as_str()),
                    p.offset,
                    format!("transcript piece at {} after {written} bytes", p.offset),
                ));
            }
            out(&p.bytes)?;
            written += p.bytes.len() as u64;
            Ok(())
        })?;
        Ok(written < want)
    })?;
    Ok(written)
}

/// [`export`] into a new file at `path` (refused if anything is there: it is never
/// replaced), written whole and synced before it gets its name. Returns its length.
pub fn export_new_file(
    engine: &Engine,
    session: &SessionId,
    storage: &dyn crate::storage::Storage,
    path: &Path,
) -> Result<u64> {
    let mut bytes = Vec::new();
    export(engine, session, |b| {
        bytes.extend_from_slice(b);
        Ok(())
    })?;
    crate::storage::write_new_atomic(storage, path, &bytes).map_err(|e| Error::Io {
        op: "write transcript",
        path: path.to_path_buf(),
        source: std::sync::Arc::new(e),
    })?;
    Ok(bytes.len() as u64)
}

/// Calls `f` with each piece of session `id` that `body` holds: its own, or those of an
/// imported bundle's events that became `id` (nested at most `MAX_IMPORT_DEPTH` levels).
fn each_piece(
    body: &crate::event::EventBody,
    id: &SessionId,
    f: &mut dyn FnMut(&ClaudePiece) -> Result<()>,
) -> Result<()> {
    match body {
        crate::event::EventBody::ClaudeTranscript(e) => match &**e {
            ClaudeEvent::Piece(p) if p.session == *id => f(p),
            _ => Ok(()),
        },
        crate::event::EventBody::SessionImported {
            session,
            original,
            events,
        } if session == id => {
            for e in events {
                each_piece(&e.body, original, f)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Calls `f` with each transcript piece `body` holds and the engine session it is a piece
/// of: a transcript event's own, or those of an imported bundle's events (which became
/// the bundle's session), nested at most `MAX_IMPORT_DEPTH` levels.
pub(crate) fn each_piece_addressed(
    body: &crate::event::EventBody,
    f: &mut dyn FnMut(&ClaudePiece, &SessionId) -> Result<()>,
) -> Result<()> {
    match body {
        crate::event::EventBody::ClaudeTranscript(e) => match &**e {
            ClaudeEvent::Piece(p) => f(p, &p.session),
            _ => Ok(()),
        },
        crate::event::EventBody::SessionImported {
            session, events, ..
        } => {
            for e in events {
                each_piece_addressed(&e.body, &mut |p, _| f(p, session))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What importing several paths did.
#[derive(Debug, Default)]
pub struct ImportRun {
    /// The files imported (possibly with nothing new), in the order found.
    pub files: Vec<FileImport>,
    /// The files whose import failed, with why (what was committed of them stays).
    pub failed: Vec<(PathBuf, Error)>,
    /// What the walk skipped or could not read (see [`super::find_transcripts`]).
    pub found: super::Found,
    /// The chain links made for resumed sessions ([`link_resumed`]).
    pub chained: Vec<ChainedLink>,
    /// Why linking resumed sessions failed, if it did (the files were imported).
    pub chain_error: Option<Error>,
}

impl ImportRun {
    /// The JSON form of the run, the one both `claude import --json` and the
    /// `claude_import` op answer with: every file's report, the files that failed (with
    /// the error's kind), those skipped or unreadable while searching, the chain links
    /// made, and the error that stopped the linking, if any.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "files": self.files.iter().map(FileImport::to_json).collect::<Vec<_>>(),
            "failed": self.failed.iter().map(|(p, e)| serde_json::json!({
                "path": p.to_string_lossy(), "error": e.to_string(), "kind": e.kind(),
            })).collect::<Vec<_>>(),
            "skipped": self.found.skipped.iter().map(|s| serde_json::json!({
                "path": s.path.to_string_lossy(), "reason": s.reason,
            })).collect::<Vec<_>>(),
            "unreadable": self.found.unreadable.iter().map(|u| serde_json::json!({
                "path": u.path.to_string_lossy(), "error": u.error.to_string(),
            })).collect::<Vec<_>>(),
            "chained": self.chained.iter().map(|c| serde_json::json!({
                "agent": c.agent.as_str(),
                "session_id": c.session_id,
                "continues": c.continues,
                "transcript": c.transcript.as_ref().map(|t| t.as_str()),
            })).collect::<Vec<_>>(),
            "chain_error": self.chain_error.as_ref().map(|e| e.to_string()),
        })
    }
}

/// What the state knows of the transcript imported as `id`, as `claude show` and the
/// protocol's `claude_show` give it: its source, layout, cwd, version, how much is
/// imported (bytes, lines, records, bad lines, the prefix hash), its Claude Code session
/// id, the leaf it ends on, branch points, timestamps and its links to other transcripts.
pub fn describe(state: &crate::state::State, id: &SessionId) -> Result<serde_json::Value> {
    let t = state
        .transcript(id)
        .ok_or_else(|| Error::not_found("transcript", id))?;
    let links = state.transcript_links(id);
    let ts = |t: Option<crate::types::Timestamp>| t.map(|t| t.to_iso8601_micros());
    Ok(serde_json::json!({
        "session": id.as_str(),
        "source": t.opened.source,
        "layout": format!("{:?}", t.opened.layout),
        "cwd": t.opened.cwd,
        "version": t.opened.version,
        "replaces": t.opened.replaces.as_ref().map(|r| r.as_str()),
        "replaced_by": t.replaced_by.as_ref().map(|r| r.as_str()),
        "reason": t.opened.reason,
        "imported_bytes": t.offset,
        "lines": t.lines,
        "records": t.records,
        "bad_lines": t.bad_lines,
        "prefix_hash": format!("{:016x}", t.hash),
        "claude_session_id": t.claude_session,
        "leaf_uuid": t.leaf,
        "branch_points": t.branch_points,
        "first_timestamp": ts(t.first_timestamp),
        "last_timestamp": ts(t.last_timestamp),
        "continues": super::resume::continues(state, t),
        "links": serde_json::to_value(&links).map_err(|e| Error::invalid("links", e.to_string()))?,
        "links_dropped": t.refs_dropped,
    }))
}
