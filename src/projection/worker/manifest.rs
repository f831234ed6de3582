//! Ownership: the manifest of the files the projector created, the checks the write and
//! remove primitives make with it, and the attic that files the engine no longer wants
//! (or that another program changed) are moved into instead of being deleted.
//!
//! # The rule
//!
//! The engine writes, replaces and removes only files it created. A path the projector is
//! about to write is in one of four states, decided by [`Projection::inspect`]:
//!
//! * **absent**: nothing there. The path is *reserved* first (a durable manifest line),
//!   then the file is created with a no-replace rename ([`Storage::rename_noreplace`]), so
//!   a file another program put there meanwhile is never replaced: the write fails naming
//!   it (a projection failure; the command that caused it is committed anyway).
//! * **own**: in the manifest, and unchanged since the engine wrote it (same
//!   [`crate::storage::FileStat::version`], or else the same length and CRC-32 as the
//!   manifest records; reserved paths, whose content the manifest does not know yet,
//!   count as own). It is replaced.
//! * **changed**: in the manifest, but another program changed it since (its content no
//!   longer matches). It is moved into the attic first (with a warning), then written
//!   afresh, so nothing the other program wrote is lost.
//! * **foreign**: not in the manifest. It is never written, replaced, moved or deleted. At
//!   open such a file at a path the state is about to be projected to stops the open with
//!   [`crate::Error::ForeignFiles`].
//!
//! Files of its own the engine no longer wants (a session's file where its status says it
//! should not be, rotated logs a rebuild replaces, files of sessions the log no longer has
//! after a repair, temporary files a crash left) are moved into the attic, never deleted.
//!
//! # The manifest file, `projections.manifest`
//!
//! In the data directory; append-only text, one record per line:
//!
//! ```text
//! <crc> <json>\n
//! ```
//!
//! `<crc>` is the CRC-32 (IEEE, as `crc32fast` computes it) of the `<json>` bytes, as 8
//! lowercase hex digits; a line whose checksum does not match, or that is not complete, is
//! ignored (a crash can leave the unsynced end of the file torn or garbled; the next open
//! rewrites the file without it). The first line is the header
//! `{"format":"session-engine-manifest","version":1}`; a newer `version` refuses the open
//! ([`crate::Error::UnsupportedVersion`]). Every other line is one record about a path
//! relative to the data directory (`/`-separated, inside the projection folders or the
//! marker; a record naming anything else is ignored), and the last record about a path
//! wins:
//!
//! | record | meaning |
//! |---|---|
//! | `{"new":"<path>"}` | the engine is about to create `<path>`: whatever is there is its own, content not known yet. Synced before the file is created (one sync for all the new paths of a flush), so a file the engine created is never taken for a foreign one after a crash. |
//! | `{"put":"<path>","len":<n>,"crc":<c>,"stat":"<hex>"}` | the engine last wrote `<n>` bytes with CRC-32 `<c>` there (for a per-session log: its first `<n>` bytes, which later appends extend); `stat` is the file's [`crate::storage::FileStat::version`] after that write, as 16 hex digits (absent when the storage cannot tell). Not synced on its own: synced with the next `new` record or by the checkpoint's `sync_fs` before the marker is written. |
//! | `{"gone":"<path>"}` | the path is no longer the engine's (its file was moved into the attic, or another program's file was found there). |
//!
//! The file is rewritten whole (atomically, one record per path) when it holds more than
//! twice as many lines as paths plus 4,096, when a full rebuild ends, and at the first open
//! after a crash damaged its end; appends are otherwise one write per flush, so its cost
//! is proportional to the files written, never to all the files.
//!
//! A data directory written by a release without a manifest (no manifest, but a valid
//! marker `projections.json`) has its files adopted at the first open: the paths its
//! state is projected to that exist are recorded as `new`. A directory with neither is
//! fresh: at its first open any file in the projection folders with a name the projector
//! writes (`session_<id>.json`, `<agent>_sessions.json`, `registry.json`, ...) is
//! foreign and stops the open.
//!
//! # The attic, `projections-attic/`
//!
//! `projections-attic/<UTC time of the first move of the process, YYYYMMDDTHHMMSSZ>/<path>`
//! (a `.1`, `.2`, ... suffix when that name is taken). The engine never reads it and never
//! deletes anything in it; it grows only when files are moved aside (a rebuild replacing
//! rotated logs, sessions the log no longer has, files another program changed, leftovers
//! of a crash). Delete it, or any folder in it, whenever its content is not wanted;
//! `stats` shows how many folders it holds.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use super::*;
use crate::storage::StorageFile;

/// The manifest's file name, in the data directory.
pub(crate) const MANIFEST_FILE: &str = "projections.manifest";
/// The attic's folder name, in the data directory.
pub(crate) const ATTIC_DIR: &str = "projections-attic";
const FORMAT: &str = "session-engine-manifest";
const VERSION: u32 = 1;
/// The manifest is rewritten once it has more lines than this many per path...
const COMPACT_FACTOR: u64 = 2;
/// ... plus this many.
const COMPACT_SLACK: u64 = 4096;
/// The op of the failure that refuses to write over a foreign file.
pub(crate) const FOREIGN_OP: &str = "refuse to replace a file session-engine did not write";

/// What the manifest says about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// About to be created, or created without its content recorded yet: whatever is
    /// there is the engine's.
    Reserved,
    /// The engine last wrote `len` bytes with CRC-32 `crc` there (a log: its first
    /// `len` bytes); the file's stat version after that write.
    Written {
        len: u64,
        crc: u32,
        version: Option<u64>,
    },
}

/// What is at a path the projector is about to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// Nothing.
    Absent,
    /// The engine's own file, unchanged since it wrote it.
    Own,
    /// The engine's own file, changed since by another program.
    Changed,
    /// A file the engine did not create.
    Foreign,
}

/// What [`Projection::inspect`] accepts as unchanged besides what the manifest records.
#[derive(Clone, Copy, Debug)]
pub(super) enum Accept<'a> {
    /// Only the recorded content.
    Exact,
    /// The recorded content, or exactly these bytes (what is about to be written: after a
    /// crash lost the record of a write, the file may already hold it).
    OrEqual(&'a [u8]),
}

/// Why a file goes into the attic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Why {
    /// The engine no longer wants it.
    Unwanted,
    /// Another program changed it.
    Changed,
}

/// The manifest, loaded.
pub(super) struct Manifest {
    path: PathBuf,
    entries: HashMap<String, Entry>,
    file: Option<Box<dyn StorageFile>>,
    /// Where the next line goes.
    end: u64,
    /// Lines not written yet.
    pending: Vec<u8>,
    pending_lines: u64,
    /// Lines in the file.
    lines: u64,
    /// Lines written since the last sync.
    unsynced: bool,
    /// The file must be rewritten whole before anything is appended (its end is damaged,
    /// or an append failed part way).
    rewrite: bool,
}

/// How loading the manifest can fail.
pub(super) enum LoadError {
    Io(io::Error),
    /// A newer release wrote it.
    Version(u32),
}

/// A checksummed manifest line.
fn push_line(out: &mut Vec<u8>, json: &str) {
    let crc = crc32fast::hash(json.as_bytes());
    let mut line = String::with_capacity(json.len() + 10);
    let _ = write!(line, "{crc:08x} {json}");
    line.push('\n');
    out.extend_from_slice(line.as_bytes());
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The JSON of a record about `rel` (`None`: gone).
fn record_json(rel: &str, entry: Option<Entry>) -> String {
    match entry {
        None => format!("{{\"gone\":{}}}", quoted(rel)),
        Some(Entry::Reserved) => format!("{{\"new\":{}}}", quoted(rel)),
        Some(Entry::Written { len, crc, version }) => match version {
            Some(v) => format!(
                "{{\"put\":{},\"len\":{len},\"crc\":{crc},\"stat\":\"{v:016x}\"}}",
                quoted(rel)
            ),
            None => format!("{{\"put\":{},\"len\":{len},\"crc\":{crc}}}", quoted(rel)),
        },
    }
}

fn header_json() -> String {
    format!("{{\"format\":\"{FORMAT}\",\"version\":{VERSION}}}")
}

#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    format: Option<Cow<'a, str>>,
    #[serde(default)]
    version: Option<u32>,
    #[serde(borrow, default)]
    new: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    put: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    gone: Option<Cow<'a, str>>,
    #[serde(default)]
    len: Option<u64>,
    #[serde(default)]
    crc: Option<u32>,
    #[serde(borrow, default)]
    stat: Option<Cow<'a, str>>,
}

/// Whether `rel` is a plain relative path (no `..`, `.`, empty or absolute parts).
pub(super) fn is_plain_relative(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && !rel.contains('\\')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// What a manifest file holds.
pub(super) struct Parsed {
    pub(super) entries: HashMap<String, Entry>,
    /// Valid lines.
    pub(super) lines: u64,
    /// Lines ignored: torn, garbled, or naming a path the projector does not write.
    pub(super) damaged: u64,
    /// Where the last complete line ends.
    pub(super) complete: u64,
}

/// Parses a manifest; `valid` says which relative paths it may name.
pub(super) fn parse(bytes: &[u8], valid: &dyn Fn(&str) -> bool) -> Result<Parsed, LoadError> {
    let mut p = Parsed {
        entries: HashMap::new(),
        lines: 0,
        damaged: 0,
        complete: 0,
    };
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            p.damaged += 1;
            break;
        };
        let line = &bytes[pos..pos + nl];
        pos += nl + 1;
        p.complete = pos as u64;
        let parsed = (|| {
            let (hex, json) = (line.get(..8)?, line.get(9..)?);
            if line.get(8) != Some(&b' ') {
                return None;
            }
            let crc = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if crc32fast::hash(json) != crc {
                return None;
            }
            serde_json::from_slice::<Line<'_>>(json).ok()
        })();
        let Some(l) = parsed else {
            p.damaged += 1;
            continue;
        };
        if l.format.as_deref() == Some(FORMAT) {
            let v = l.version.unwrap_or(0);
            if v > VERSION {
                return Err(LoadError::Version(v));
            }
            p.lines += 1;
            continue;
        }
        let (rel, entry) = if let Some(rel) = l.new {
            (rel, Some(Entry::Reserved))
        } else if let Some(rel) = l.put {
            let (Some(len), Some(crc)) = (l.len, l.crc) else {
                p.damaged += 1;
                continue;
            };
            let version = l.stat.and_then(|s| u64::from_str_radix(&s, 16).ok());
            (rel, Some(Entry::Written { len, crc, version }))
        } else if let Some(rel) = l.gone {
            (rel, None)
        } else {
            p.damaged += 1;
            continue;
        };
        if !is_plain_relative(&rel) || !valid(&rel) {
            p.damaged += 1;
            continue;
        }
        p.lines += 1;
        match entry {
            Some(e) => {
                p.entries.insert(rel.into_owned(), e);
            }
            None => {
                p.entries.remove(rel.as_ref());
            }
        }
    }
    Ok(p)
}

/// Writes `bytes` to `path` durably, whatever the projection files' durability: a fresh
/// temporary file, synced, renamed into place (without replacing, if `new`), the
/// directory synced.
fn write_durable(storage: &dyn Storage, path: &Path, bytes: &[u8], new: bool) -> io::Result<()> {
    if new {
        crate::storage::write_new_atomic(storage, path, bytes)
    } else {
        crate::storage::write_atomic(storage, path, bytes)
    }
}

impl Manifest {
    /// Loads the manifest at `path`; `None` when there is none.
    pub(super) fn load(
        storage: &dyn Storage,
        path: &Path,
        valid: &dyn Fn(&str) -> bool,
    ) -> Result<Option<Manifest>, LoadError> {
        let bytes = match storage.read(path) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(LoadError::Io(e)),
        };
        let parsed = parse(&bytes, valid)?;
        drop(bytes);
        let file = storage
            .open(path, OpenMode::ReadWrite)
            .map_err(LoadError::Io)?;
        if parsed.damaged > 0 {
            tracing::warn!(
                file = %path.display(),
                ignored_lines = parsed.damaged,
                "projection manifest: ignored damaged lines (the end of a crash?); rewriting it"
            );
        }
        Ok(Some(Manifest {
            path: path.to_path_buf(),
            entries: parsed.entries,
            file: Some(file),
            end: parsed.complete,
            pending: Vec::new(),
            pending_lines: 0,
            lines: parsed.lines,
            unsynced: false,
            rewrite: parsed.damaged > 0,
        }))
    }

    /// Creates the manifest at `path` (which must not exist) holding `entries`, durably.
    pub(super) fn create(
        storage: &dyn Storage,
        path: &Path,
        entries: HashMap<String, Entry>,
    ) -> io::Result<Manifest> {
        let mut m = Manifest {
            path: path.to_path_buf(),
            entries,
            file: None,
            end: 0,
            pending: Vec::new(),
            pending_lines: 0,
            lines: 0,
            unsynced: false,
            rewrite: false,
        };
        m.write_whole(storage, true)?;
        Ok(m)
    }

    pub(super) fn get(&self, rel: &str) -> Option<Entry> {
        self.entries.get(rel).copied()
    }

    /// Every path the manifest holds, sorted.
    pub(super) fn paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.keys().cloned().collect();
        v.sort_unstable();
        v
    }

    /// Records `entry` for `rel` (`None`: gone), to be written by the next `commit`.
    pub(super) fn set(&mut self, rel: &str, entry: Option<Entry>) {
        let old = match entry {
            Some(e) => self.entries.insert(rel.to_owned(), e),
            None => self.entries.remove(rel),
        };
        if old == entry {
            return;
        }
        push_line(&mut self.pending, &record_json(rel, entry));
        self.pending_lines += 1;
    }

    /// Writes the pending records (one write), and syncs the file if `sync` (and anything
    /// written is unsynced).
    pub(super) fn commit(&mut self, storage: &dyn Storage, sync: bool) -> io::Result<()> {
        if self.rewrite {
            return self.write_whole(storage, false);
        }
        if !self.pending.is_empty() {
            let file = match &mut self.file {
                Some(f) => f,
                None => self
                    .file
                    .insert(storage.open(&self.path, OpenMode::ReadWrite)?),
            };
            if let Err(e) = file.write_at(self.end, &self.pending) {
                // Part of it may be there: the next commit rewrites the file instead.
                self.rewrite = true;
                self.file = None;
                return Err(e);
            }
            self.end += self.pending.len() as u64;
            self.lines += self.pending_lines;
            self.pending.clear();
            self.pending_lines = 0;
            self.unsynced = true;
        }
        if sync && self.unsynced {
            let file = match &mut self.file {
                Some(f) => f,
                None => self
                    .file
                    .insert(storage.open(&self.path, OpenMode::ReadWrite)?),
            };
            if let Err(e) = file.sync_data() {
                self.rewrite = true;
                self.file = None;
                return Err(e);
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Whether the file has grown enough past its paths to be rewritten.
    pub(super) fn wants_compaction(&self) -> bool {
        self.rewrite || self.lines > COMPACT_FACTOR * self.entries.len() as u64 + COMPACT_SLACK
    }

    /// Rewrites the file whole from the entries, durably (pending records included).
    pub(super) fn write_whole(&mut self, storage: &dyn Storage, new: bool) -> io::Result<()> {
        let mut image = Vec::with_capacity(64 * (self.entries.len() + 1));
        push_line(&mut image, &header_json());
        let mut paths: Vec<(&String, &Entry)> = self.entries.iter().collect();
        paths.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (rel, e) in paths {
            push_line(&mut image, &record_json(rel, Some(*e)));
        }
        self.file = None;
        write_durable(storage, &self.path, &image, new)?;
        self.file = Some(storage.open(&self.path, OpenMode::ReadWrite)?);
        self.end = image.len() as u64;
        self.lines = self.entries.len() as u64 + 1;
        self.pending.clear();
        self.pending_lines = 0;
        self.unsynced = false;
        self.rewrite = false;
        Ok(())
    }
}

/// The target of one of the engine's own temporary file names, `<name>.<16 hex>.tmp`
/// ([`temp_name`](crate::storage::temp_name)); `None` for any other name (another
/// program's `x.tmp` is not ours).
pub(super) fn own_temp_target(name: &str) -> Option<&str> {
    let (base, hex) = name.strip_suffix(".tmp")?.rsplit_once('.')?;
    let is_hex = hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (is_hex && !base.is_empty()).then_some(base)
}

/// The failure of a write refused because a foreign file is at `path`.
pub(super) fn foreign(path: &Path) -> Failure {
    Failure {
        op: FOREIGN_OP,
        path: path.to_path_buf(),
        kind: io::ErrorKind::AlreadyExists,
        message: "the file there was not written by session-engine (it is not in \
                  projections.manifest), so it is left as it is and this projection is not \
                  written; move it away, or adopt it with `session-engine import`"
            .into(),
    }
}

/// What the ownership records of a data directory say, for `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OwnershipSummary {
    /// Files the manifest records as the engine's; `None` without a manifest.
    pub owned_files: Option<u64>,
    /// Lines of the manifest that were ignored (damaged).
    pub damaged_lines: u64,
    /// Folders in the attic (`projections-attic/`).
    pub attic_folders: u64,
}

/// Reads the ownership records of the data directory at `root` without changing anything.
pub(crate) fn summary(storage: &dyn Storage, root: &Path) -> io::Result<OwnershipSummary> {
    let mut s = OwnershipSummary::default();
    match storage.read(&root.join(MANIFEST_FILE)) {
        Ok(bytes) => match parse(&bytes, &|_| true) {
            Ok(p) => {
                s.owned_files = Some(p.entries.len() as u64);
                s.damaged_lines = p.damaged;
            }
            Err(LoadError::Version(v)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("projections.manifest has version {v}, newer than {VERSION}"),
                ));
            }
            Err(LoadError::Io(e)) => return Err(e),
        },
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    match storage.list_dir(&root.join(ATTIC_DIR)) {
        Ok(v) => s.attic_folders = v.len() as u64,
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(s)
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
