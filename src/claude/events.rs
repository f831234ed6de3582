//! What an imported Claude Code transcript puts in the log: the payload of
//! [`crate::event::EventBody::ClaudeTranscript`] (event schema 4).
//!
//! A transcript is one engine session. [`ClaudeEvent::Opened`] creates it (and says which
//! file it comes from); each [`ClaudeEvent::Piece`] then holds the next bytes of the file,
//! exactly as read: one whole line with its `\n`, or, for a line longer than
//! [`PIECE_BYTES`], consecutive cuts of it every [`PIECE_BYTES`] from its start (the `\n`
//! in the last). Concatenating a transcript's pieces in log order gives the file's
//! imported prefix back byte for byte. Pieces carry the file offset they start at, so a
//! piece that does not continue the transcript is refused (nothing is ever imported twice
//! or with a gap), and what the importer read out of the record (its `type` and the ids
//! that link records: [`RecordRefs`]), so the state can follow links without parsing.

use serde::{Deserialize, Serialize};

use crate::types::{SessionId, Timestamp};

/// The longest piece: a line longer than this is cut into pieces of this size (the last
/// one shorter). Part of the format: the prefix hash is chained over pieces.
pub const PIECE_BYTES: usize = 8 << 20;

/// One step of importing a transcript.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClaudeEvent {
    /// A transcript file becomes an engine session (its first version, or a new version
    /// of one whose file was rewritten).
    Opened(Box<ClaudeOpened>),
    /// The next bytes of a transcript.
    Piece(Box<ClaudePiece>),
}

impl ClaudeEvent {
    /// The engine session the event concerns.
    pub fn session(&self) -> &SessionId {
        match self {
            ClaudeEvent::Opened(o) => &o.session,
            ClaudeEvent::Piece(p) => &p.session,
        }
    }

    /// The same event under another session id (a bundle imported under a new id).
    pub fn readdressed(&self, to: &SessionId) -> ClaudeEvent {
        let mut e = self.clone();
        match &mut e {
            ClaudeEvent::Opened(o) => o.session = to.clone(),
            ClaudeEvent::Piece(p) => p.session = to.clone(),
        }
        e
    }
}

/// Where a transcript file sits in Claude Code's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// `<project>/<session id>.jsonl`: a session's own transcript.
    Session,
    /// `<project>/agent-<id>.jsonl`: a subagent's, beside the sessions (older layout; its
    /// records carry the parent's `sessionId` and `isSidechain`).
    AgentBeside,
    /// `<project>/<session id>/subagents/agent-<id>.jsonl`: a subagent's, under its parent.
    AgentNested,
}

/// A transcript becoming an engine session ([`ClaudeEvent::Opened`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaudeOpened {
    /// The engine session (see `claude::import::session_id_for`).
    pub session: SessionId,
    /// The file it is read from, as the import was given it (absolute when it could be
    /// made so).
    pub source: String,
    /// The file's layout.
    pub layout: Layout,
    /// For a subagent's transcript, the Claude Code session id of its parent (from the
    /// nested layout's folder name; the beside layout's comes from its records).
    pub parent: Option<String>,
    /// The `cwd` of the transcript's first record that has one.
    pub cwd: Option<String>,
    /// 1 for the first import of the file; `n + 1` for the version that replaces version
    /// `n` after the file was rewritten.
    pub version: u32,
    /// The session of the version it replaces (`None` for version 1).
    pub replaces: Option<SessionId>,
    /// What was found that made the new version (for version 2 and later).
    pub reason: Option<String>,
}

/// The next bytes of a transcript ([`ClaudeEvent::Piece`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaudePiece {
    /// The engine session.
    pub session: SessionId,
    /// The file offset of the piece's first byte: the transcript's imported length.
    pub offset: u64,
    /// The bytes, exactly as in the file (`\n` included when the piece ends a line).
    /// Encoded as bytes (`serde_bytes`: a length and the raw bytes in bincode), not as a
    /// sequence of numbers.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// What the line holds, on the piece that ends a line which parsed as a JSON object.
    pub refs: Option<Box<RecordRefs>>,
    /// Why the line is not a record (not UTF-8, not JSON, too long to parse), on the
    /// piece that ends it. Its bytes are kept all the same.
    pub problem: Option<String>,
}

impl ClaudePiece {
    /// Whether the piece ends a line.
    pub fn ends_line(&self) -> bool {
        self.bytes.last() == Some(&b'\n')
    }
}

/// What the importer read out of a record: its kind and the ids that tie records,
/// files and sessions together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordRefs {
    /// `type` (`user`, `assistant`, `summary`, ..., or one this build does not know).
    pub kind: Option<String>,
    /// `subtype` of a `system` record (`compact_boundary`, ...).
    pub subtype: Option<String>,
    /// `uuid`.
    pub uuid: Option<String>,
    /// `parentUuid`: the record it follows (a rewind makes branches: two records with
    /// the same parent).
    pub parent_uuid: Option<String>,
    /// `logicalParentUuid`: the record a compaction continues from.
    pub logical_parent_uuid: Option<String>,
    /// `leafUuid` of a `summary` record: the leaf (often in another file) it names.
    pub leaf_uuid: Option<String>,
    /// `sessionId`.
    pub session_id: Option<String>,
    /// `timestamp`, parsed.
    pub timestamp: Option<Timestamp>,
}
