//! Cuts a transcript file into the pieces the import stores (see [`super::events`]): from
//! a given offset, each complete line with its `\n`, or, for a line longer than
//! [`PIECE_BYTES`], cuts of [`PIECE_BYTES`] from its start and then the rest with the
//! `\n` (a line is cut only once its `\n` is known to be in the file). Bytes after the last
//! `\n` are an incomplete line, a write in progress: never returned. Memory is bounded by
//! one piece plus one read.

use serde::Deserialize;
use serde_json::Value;

use super::events::{PIECE_BYTES, RecordRefs};
use crate::storage::StorageFile;
use crate::types::Timestamp;

/// How much is read at a time.
const READ_BYTES: usize = 1 << 20;

/// One piece of a file.
#[derive(Debug)]
pub struct RawPiece {
    /// Where it starts.
    pub offset: u64,
    /// Its bytes (`\n` included when it ends a line).
    pub bytes: Vec<u8>,
    /// The number of the line it belongs to, from 1.
    pub line: u64,
    /// Whether the piece is a whole line.
    pub whole_line: bool,
}

/// The pieces of a file from an offset; see the module documentation.
pub struct Pieces {
    file: Box<dyn StorageFile>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a newline, from `pos`.
    scanned: usize,
    /// The next piece's offset.
    pos: u64,
    /// The current line's offset and number.
    line_start: u64,
    line: u64,
    /// Where the `\n` of the long line being cut is.
    long_line_end: Option<u64>,
    eof: bool,
}

impl Pieces {
    /// Pieces of `file` from `offset`, which must start line `line`.
    pub fn new(file: Box<dyn StorageFile>, offset: u64, line: u64) -> Pieces {
        Pieces {
            file,
            buf_off: offset,
            buf: Vec::new(),
            scanned: 0,
            pos: offset,
            line_start: offset,
            line,
            long_line_end: None,
            eof: false,
        }
    }

    /// The offset the next piece would start at.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes after the last complete line (known so far: all of them once `next` has
    /// returned `None`).
    pub fn incomplete_bytes(&self) -> u64 {
        (self.buf_off + self.buf.len() as u64).saturating_sub(self.line_start)
    }

    fn read_more(&mut self) -> std::io::Result<bool> {
        // Drop what was returned already.
        let done = (self.pos - self.buf_off) as usize;
        if done > 0 {
            self.buf.drain(..done);
            self.buf_off = self.pos;
        }
        let have = self.buf.len();
        self.buf.resize(have + READ_BYTES, 0);
        let at = self.buf_off + have as u64;
        let n = loop {
            match self.file.read_at(at, &mut self.buf[have..]) {
                Ok(n) => break n.min(READ_BYTES),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(have + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// Whether a `\n` follows `from` in the file (read without keeping the bytes).
    fn newline_after(&mut self, from: u64) -> std::io::Result<Option<u64>> {
        let mut chunk = vec![0u8; READ_BYTES];
        let mut at = from;
        loop {
            let n = match self.file.read_at(at, &mut chunk) {
                Ok(n) => n.min(chunk.len()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(None);
            }
            if let Some(i) = memchr::memchr(b'\n', &chunk[..n]) {
                return Ok(Some(at + i as u64));
            }
            at += n as u64;
        }
    }

    fn take(&mut self, len: usize, ends_line: bool) -> RawPiece {
        let start = (self.pos - self.buf_off) as usize;
        let bytes = self.buf[start..start + len].to_vec();
        let piece = RawPiece {
            offset: self.pos,
            bytes,
            line: self.line,
            whole_line: self.pos == self.line_start && ends_line,
        };
        self.pos += len as u64;
        self.scanned = 0;
        if ends_line {
            self.line_start = self.pos;
            self.line += 1;
            self.long_line_end = None;
        }
        piece
    }

    /// The next piece, `None` at the end of the complete lines.
    pub fn next_piece(&mut self) -> std::io::Result<Option<RawPiece>> {
        loop {
            let start = (self.pos - self.buf_off) as usize;
            let avail = self.buf.len() - start;
            let window = avail.min(PIECE_BYTES + 1);
            if let Some(i) = memchr::memchr(b'\n', &self.buf[start + self.scanned..start + window])
            {
                return Ok(Some(self.take(self.scanned + i + 1, true)));
            }
            self.scanned = window;
            if window == PIECE_BYTES + 1 {
                // A long line: cut it, once its end is known to be in the file.
                if self.long_line_end.is_none()
                    && let Some(i) = memchr::memchr(b'\n', &self.buf[start + window..])
                {
                    self.long_line_end = Some(self.pos + (window + i) as u64);
                }
                if self.long_line_end.is_none() {
                    let from = self.buf_off + self.buf.len() as u64;
                    match self.newline_after(from)? {
                        Some(end) => self.long_line_end = Some(end),
                        None => return Ok(None),
                    }
                }
                return Ok(Some(self.take(PIECE_BYTES, false)));
            }
            if self.eof || !self.read_more()? {
                return Ok(None);
            }
        }
    }
}

#[derive(Deserialize)]
struct Fields {
    #[serde(rename = "type")]
    kind: Option<Value>,
    subtype: Option<Value>,
    uuid: Option<Value>,
    #[serde(rename = "parentUuid")]
    parent_uuid: Option<Value>,
    #[serde(rename = "logicalParentUuid")]
    logical_parent_uuid: Option<Value>,
    #[serde(rename = "leafUuid")]
    leaf_uuid: Option<Value>,
    #[serde(rename = "sessionId")]
    session_id: Option<Value>,
    timestamp: Option<Value>,
    cwd: Option<Value>,
}

fn text(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// What a whole line holds: its record references and `cwd` (none for JSON that is not an
/// object), or why it is not a record.
pub fn parse_line(bytes: &[u8]) -> Result<(RecordRefs, Option<String>), String> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let text_of = std::str::from_utf8(body)
        .map_err(|e| format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()))?;
    if !text_of.trim_start().starts_with('{') {
        // JSON, but not an object: a record without fields (as the reader counts it).
        serde_json::from_str::<serde::de::IgnoredAny>(text_of)
            .map_err(|e| format!("invalid JSON: {e}"))?;
        return Ok((RecordRefs::default(), None));
    }
    // Straight into the few fields wanted: the rest is checked but not kept.
    let f: Fields = serde_json::from_str(text_of).map_err(|e| {
        if e.is_data() {
            format!("not a transcript record: {e}")
        } else {
            format!("invalid JSON: {e}")
        }
    })?;
    let timestamp = text(f.timestamp)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| Timestamp(t.timestamp_micros()));
    Ok((
        RecordRefs {
            kind: text(f.kind),
            subtype: text(f.subtype),
            uuid: text(f.uuid),
            parent_uuid: text(f.parent_uuid),
            logical_parent_uuid: text(f.logical_parent_uuid),
            leaf_uuid: text(f.leaf_uuid),
            session_id: text(f.session_id),
            timestamp,
        },
        text(f.cwd),
    ))
}
