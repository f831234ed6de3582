//! The streaming reader of one Claude Code transcript (JSON Lines).
//!
//! [`TranscriptReader`] reads a file in chunks of [`CHUNK_BYTES`] and yields one
//! [`Entry`] per line: a [`Record`] (the line's original bytes, its byte offset and line
//! number, and the parsed JSON value) or a [`LineProblem`] (a line that is not a record,
//! with why). It never stops at a bad line, never panics on any bytes, and holds at most
//! one line of [`TranscriptReader::max_line`] bytes (plus one chunk) in memory: a longer
//! line is reported as [`ProblemKind::TooLong`] and skipped without being kept.
//!
//! A line is the bytes up to a `\n` (the `\n` is not part of [`Record::bytes`]); the
//! bytes after the last `\n` are the last line, which a writer may still be writing: if
//! they do not parse they are [`ProblemKind::Incomplete`] (a write in progress), not
//! damage. A 0-byte file has no lines and is valid.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage, StorageFile};

/// The longest line read as a record by default (64 MiB); a longer one is reported as
/// [`ProblemKind::TooLong`] and skipped.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// How much the reader asks the file for at a time.
pub const CHUNK_BYTES: usize = 256 << 10;

/// One line that parsed as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The line number, from 1.
    pub line: u64,
    /// The byte offset of the line's first byte in the file.
    pub offset: u64,
    /// The line's bytes exactly as in the file, without the `\n` that ends it (a `\r`
    /// before it stays).
    pub bytes: Vec<u8>,
    /// Whether a `\n` ended the line (only the last line of a file can lack one).
    pub terminated: bool,
    /// The parsed value.
    pub value: Value,
}

/// What a record is, by its `type` field. Unknown types are kept as they are
/// ([`RecordKind::Other`]): Claude Code adds new ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind<'a> {
    /// `"type":"user"`: a prompt, or tool results.
    User,
    /// `"type":"assistant"`: (a part of) a model answer.
    Assistant,
    /// `"type":"system"`, with its `subtype` (`compact_boundary`, `local_command`, ...).
    System {
        /// The `subtype` field, when it is a string.
        subtype: Option<&'a str>,
    },
    /// `"type":"summary"`: a session title pointing at a leaf (`leafUuid`).
    Summary,
    /// `"type":"progress"`: tool and subagent progress.
    Progress,
    /// `"type":"file-history-snapshot"`: the checkpoint of edited files.
    FileHistorySnapshot,
    /// `"type":"queue-operation"`: prompts queued while the agent worked.
    QueueOperation,
    /// A `type` this reader does not know.
    Other(&'a str),
    /// Not an object, or an object without a string `type`.
    Untyped,
}

impl Record {
    /// The `type` field, when the record is an object with a string `type`.
    pub fn record_type(&self) -> Option<&str> {
        self.value.get("type")?.as_str()
    }

    /// What the record is.
    pub fn kind(&self) -> RecordKind<'_> {
        match self.record_type() {
            None => RecordKind::Untyped,
            Some("user") => RecordKind::User,
            Some("assistant") => RecordKind::Assistant,
            Some("system") => RecordKind::System {
                subtype: self.value.get("subtype").and_then(Value::as_str),
            },
            Some("summary") => RecordKind::Summary,
            Some("progress") => RecordKind::Progress,
            Some("file-history-snapshot") => RecordKind::FileHistorySnapshot,
            Some("queue-operation") => RecordKind::QueueOperation,
            Some(other) => RecordKind::Other(other),
        }
    }
}

/// A line that is not a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LineProblem {
    /// The line number, from 1.
    pub line: u64,
    /// The byte offset of the line's first byte in the file.
    pub offset: u64,
    /// The line's length in bytes, without its `\n`.
    #[serde(rename = "length")]
    pub len: u64,
    /// What is wrong with it.
    #[serde(flatten)]
    pub kind: ProblemKind,
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// Bytes that are not UTF-8, at byte `at` of the line.
    InvalidUtf8 {
        /// The offset of the first bad byte inside the line.
        at: u64,
    },
    /// UTF-8 that is not one JSON value.
    InvalidJson {
        /// The parser's reason.
        reason: String,
        /// The column (in bytes, from 1) where the parser stopped.
        column: u64,
    },
    /// Longer than the reader's limit: skipped unread.
    TooLong {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The last line, with no `\n` after it, that does not parse: a write in progress
    /// (or a write a crash cut), not damage.
    Incomplete,
}

impl ProblemKind {
    /// Whether the line is damage: everything but [`ProblemKind::Incomplete`].
    pub fn is_damage(&self) -> bool {
        !matches!(self, ProblemKind::Incomplete)
    }
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ProblemKind::InvalidUtf8 { at } => {
                write!(f, "invalid UTF-8 at byte {at} of the line")
            }
            ProblemKind::InvalidJson { reason, column } => {
                write!(f, "invalid JSON: {reason} at column {column}")
            }
            ProblemKind::TooLong { limit } => write!(
                f,
                "line of {} bytes, longer than the limit of {limit}: skipped",
                self.len
            ),
            ProblemKind::Incomplete => write!(
                f,
                "incomplete last line ({} bytes, no newline): a write in progress",
                self.len
            ),
        }
    }
}

/// One line of a transcript.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// A line that parsed.
    Record(Record),
    /// A line that did not.
    Problem(LineProblem),
}

/// Reads a transcript line by line; see the module documentation.
#[derive(Debug)]
pub struct TranscriptReader {
    file: Box<dyn StorageFile>,
    path: PathBuf,
    max_line: usize,
    /// The next file offset to read.
    pos: u64,
    chunk: Vec<u8>,
    start: usize,
    end: usize,
    /// The current line's bytes read so far (empty while skipping).
    partial: Vec<u8>,
    /// The current line's length so far, when it is over the limit and being skipped.
    skipping: Option<u64>,
    /// The number of the line being read.
    line: u64,
    /// The offset of the line being read.
    line_start: u64,
    eof: bool,
    done: bool,
}

impl TranscriptReader {
    /// Opens `path` on `storage` for reading (nothing is written).
    pub fn open(storage: &dyn Storage, path: &Path) -> Result<TranscriptReader> {
        let file = storage
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io("open transcript", path, e))?;
        Ok(TranscriptReader::new(file, path))
    }

    /// Reads `file`; `path` names it in errors.
    pub fn new(file: Box<dyn StorageFile>, path: &Path) -> TranscriptReader {
        TranscriptReader {
            file,
            path: path.to_path_buf(),
            max_line: MAX_LINE_BYTES,
            pos: 0,
            chunk: Vec::new(),
            start: 0,
            end: 0,
            partial: Vec::new(),
            skipping: None,
            line: 1,
            line_start: 0,
            eof: false,
            done: false,
        }
    }

    /// Sets the longest line read as a record (at least 1 byte).
    pub fn with_max_line(mut self, bytes: usize) -> TranscriptReader {
        self.max_line = bytes.max(1);
        self
    }

    /// The longest line read as a record.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes of the file consumed so far (all of it once the reader is done).
    pub fn bytes_read(&self) -> u64 {
        self.pos
    }

    /// The entry for a whole line: its bytes are in `bytes`.
    fn finish(&mut self, bytes: Vec<u8>, terminated: bool) -> Entry {
        let (line, offset) = self.advance(bytes.len() as u64, terminated);
        let len = bytes.len() as u64;
        let problem = |kind| {
            Entry::Problem(LineProblem {
                line,
                offset,
                len,
                kind,
            })
        };
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(_) if !terminated => return problem(ProblemKind::Incomplete),
            Err(e) => {
                return problem(ProblemKind::InvalidUtf8 {
                    at: e.valid_up_to() as u64,
                });
            }
        };
        match serde_json::from_str::<Value>(text) {
            Ok(value) => Entry::Record(Record {
                line,
                offset,
                bytes,
                terminated,
                value,
            }),
            Err(_) if !terminated => problem(ProblemKind::Incomplete),
            Err(e) => {
                let message = e.to_string();
                // serde_json appends " at line L column C"; the line is always 1 here.
                let reason = match message.rsplit_once(" at line ") {
                    Some((r, _)) => r.to_string(),
                    None => message,
                };
                problem(ProblemKind::InvalidJson {
                    reason,
                    column: e.column() as u64,
                })
            }
        }
    }

    /// The problem for a line over the limit, `len` bytes long.
    fn too_long(&mut self, len: u64, terminated: bool) -> Entry {
        let (line, offset) = self.advance(len, terminated);
        Entry::Problem(LineProblem {
            line,
            offset,
            len,
            kind: ProblemKind::TooLong {
                limit: self.max_line as u64,
            },
        })
    }

    /// Moves past a line of `len` bytes; returns its number and offset.
    fn advance(&mut self, len: u64, terminated: bool) -> (u64, u64) {
        let at = (self.line, self.line_start);
        self.line += 1;
        self.line_start = self
            .line_start
            .saturating_add(len)
            .saturating_add(u64::from(terminated));
        at
    }

    /// Reads the next chunk; `Ok(false)` at the end of the file.
    fn refill(&mut self) -> std::io::Result<bool> {
        if self.chunk.len() != CHUNK_BYTES {
            self.chunk.resize(CHUNK_BYTES, 0);
        }
        loop {
            match self.file.read_at(self.pos, &mut self.chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    let n = n.min(self.chunk.len());
                    self.pos += n as u64;
                    self.start = 0;
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Iterator for TranscriptReader {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            if self.done {
                return None;
            }
            if self.start == self.end {
                if !self.eof {
                    match self.refill() {
                        Ok(true) => continue,
                        Ok(false) => self.eof = true,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(Error::io("read transcript", &self.path, e)));
                        }
                    }
                }
                // The end of the file: what follows the last newline is the last line.
                self.done = true;
                if let Some(len) = self.skipping.take() {
                    return Some(Ok(self.too_long(len, false)));
                }
                if !self.partial.is_empty() {
                    let bytes = std::mem::take(&mut self.partial);
                    return Some(Ok(self.finish(bytes, false)));
                }
                return None;
            }
            let avail = &self.chunk[self.start..self.end];
            match memchr::memchr(b'\n', avail) {
                Some(i) => {
                    let piece = self.start..self.start + i;
                    self.start += i + 1;
                    if let Some(len) = self.skipping.take() {
                        return Some(Ok(self.too_long(len + i as u64, true)));
                    }
                    let len = self.partial.len() + i;
                    if len > self.max_line {
                        self.partial = Vec::new();
                        return Some(Ok(self.too_long(len as u64, true)));
                    }
                    let bytes = if self.partial.is_empty() {
                        self.chunk[piece].to_vec()
                    } else {
                        let mut b = std::mem::take(&mut self.partial);
                        b.extend_from_slice(&self.chunk[piece]);
                        b
                    };
                    return Some(Ok(self.finish(bytes, true)));
                }
                None => {
                    let n = avail.len();
                    if let Some(len) = self.skipping.as_mut() {
                        *len += n as u64;
                    } else if self.partial.len() + n > self.max_line {
                        self.skipping = Some((self.partial.len() + n) as u64);
                        // Give the memory back: the line is not kept.
                        self.partial = Vec::new();
                    } else {
                        self.partial.extend_from_slice(avail);
                    }
                    self.start = self.end;
                }
            }
        }
    }
}
