//! Imported Claude Code transcripts in the state: per engine session, where its file is,
//! how much of it is imported (offset, lines, the chained hash of the imported prefix)
//! and the ids its records link by. The bytes themselves stay in the log.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ApplyError, Session, State, fail};
use crate::claude::events::{ClaudeEvent, ClaudeOpened, ClaudePiece, Layout};
use crate::event::SessionCreated;
use crate::state::SessionConfig;
use crate::types::{SessionId, Timestamp};

/// Most references to records outside a transcript (and other `sessionId`s) one
/// transcript keeps; more are counted in [`Transcript::refs_dropped`].
pub const MAX_REFS: usize = 1024;

/// The hash of an empty prefix.
pub const EMPTY_PREFIX_HASH: u64 = 0;

/// The prefix hash after `bytes` (a piece) follows a prefix whose hash is `prev`: XXH3-64
/// of the piece seeded with the previous hash.
pub fn chain_hash(prev: u64, bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, prev)
}

/// How a record of a transcript points outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefKind {
    /// `parentUuid` naming a record that is not (yet) in this transcript: a resumed
    /// session continuing another, or a subagent's first record.
    Parent,
    /// `logicalParentUuid` (a compaction) naming a record not in this transcript.
    LogicalParent,
    /// `leafUuid` of a `summary` record naming a record not in this transcript.
    SummaryLeaf,
    /// A `sessionId` other than the transcript's first one.
    SessionId,
}

/// One imported transcript.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// How it was opened.
    pub opened: ClaudeOpened,
    /// Bytes imported (the offset the next piece starts at).
    pub offset: u64,
    /// Whole lines imported.
    pub lines: u64,
    /// Pieces imported.
    pub pieces: u64,
    /// Lines that parsed as JSON objects.
    pub records: u64,
    /// Lines kept as bytes that are not records.
    pub bad_lines: u64,
    /// The chained hash of the imported prefix ([`chain_hash`] over the pieces).
    pub hash: u64,
    /// Where the last piece starts, and its hash alone (a cheap check that the file
    /// still ends the imported prefix the same way).
    pub last_piece: Option<(u64, u64)>,
    /// The first `sessionId` of its records.
    pub claude_session: Option<String>,
    /// The last `uuid` of its records: the leaf the file ends on (the current branch).
    pub leaf: Option<String>,
    /// When its first and last records with a `timestamp` were written.
    pub first_timestamp: Option<Timestamp>,
    /// See `first_timestamp`.
    pub last_timestamp: Option<Timestamp>,
    /// Records with two or more children (a rewind or fork made a branch there).
    pub branch_points: u64,
    /// Every `uuid` of its records. Serialised in sorted order, so that a snapshot of a
    /// state is the same bytes whatever the hasher's seed (decoding takes any order).
    #[serde(
        serialize_with = "sorted_set",
        deserialize_with = "super::bounded::hash_set"
    )]
    pub uuids: imbl::HashSet<Arc<str>>,
    /// How many records name each uuid as their `parentUuid` (to find branch points);
    /// serialised in sorted order, as `uuids`.
    #[serde(
        serialize_with = "sorted_map",
        deserialize_with = "super::bounded::hash_map"
    )]
    pub children: imbl::HashMap<Arc<str>, u32>,
    /// References to records outside it, and other session ids, in order, first of each.
    pub refs: Vec<(RefKind, String)>,
    /// References not kept past [`MAX_REFS`].
    pub refs_dropped: u64,
    /// The version that replaced it (its file was rewritten).
    pub replaced_by: Option<SessionId>,
}

/// A hashed set serialised as a sequence in sorted order (the same layout as its own
/// `Serialize`, which follows the hasher's order).
fn sorted_set<S: serde::Serializer>(
    set: &imbl::HashSet<Arc<str>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut v: Vec<&Arc<str>> = set.iter().collect();
    v.sort_unstable();
    s.collect_seq(v)
}

/// A hashed map serialised as a map in key order (see [`sorted_set`]).
fn sorted_map<S: serde::Serializer>(
    map: &imbl::HashMap<Arc<str>, u32>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut v: Vec<(&Arc<str>, &u32)> = map.iter().collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    s.collect_map(v)
}

impl Transcript {
    fn new(opened: &ClaudeOpened) -> Transcript {
        Transcript {
            opened: opened.clone(),
            offset: 0,
            lines: 0,
            pieces: 0,
            records: 0,
            bad_lines: 0,
            hash: EMPTY_PREFIX_HASH,
            last_piece: None,
            claude_session: None,
            leaf: None,
            first_timestamp: None,
            last_timestamp: None,
            branch_points: 0,
            uuids: imbl::HashSet::new(),
            children: imbl::HashMap::new(),
            refs: Vec::new(),
            refs_dropped: 0,
            replaced_by: None,
        }
    }

    fn add_ref(&mut self, kind: RefKind, id: &str) {
        if self.refs.iter().any(|(k, r)| *k == kind && r == id) {
            return;
        }
        if self.refs.len() >= MAX_REFS {
            self.refs_dropped += 1;
        } else {
            self.refs.push((kind, id.to_string()));
        }
    }

    fn apply_piece(&mut self, p: &ClaudePiece) -> Result<(), ApplyError> {
        if p.offset != self.offset {
            return fail(format!(
                "transcript {} has {} bytes imported; a piece at offset {} does not follow",
                p.session, self.offset, p.offset
            ));
        }
        if p.bytes.is_empty() {
            return fail(format!("an empty piece of transcript {}", p.session));
        }
        self.hash = chain_hash(self.hash, &p.bytes);
        self.last_piece = Some((p.offset, chain_hash(EMPTY_PREFIX_HASH, &p.bytes)));
        self.offset += p.bytes.len() as u64;
        self.pieces += 1;
        if p.ends_line() {
            self.lines += 1;
            if p.refs.is_some() {
                self.records += 1;
            } else {
                self.bad_lines += 1;
            }
        }
        let Some(r) = &p.refs else { return Ok(()) };
        if let Some(t) = r.timestamp {
            self.first_timestamp.get_or_insert(t);
            self.last_timestamp = Some(t);
        }
        if let Some(sid) = &r.session_id {
            match &self.claude_session {
                None => self.claude_session = Some(sid.clone()),
                Some(first) if first != sid => self.add_ref(RefKind::SessionId, sid),
                Some(_) => {}
            }
        }
        for (kind, target) in [
            (RefKind::Parent, &r.parent_uuid),
            (RefKind::LogicalParent, &r.logical_parent_uuid),
            (RefKind::SummaryLeaf, &r.leaf_uuid),
        ] {
            if let Some(t) = target
                && !self.uuids.contains(t.as_str())
            {
                self.add_ref(kind, t);
            }
        }
        if let Some(parent) = &r.parent_uuid {
            let n = self.children.entry(Arc::from(parent.as_str())).or_insert(0);
            *n += 1;
            if *n == 2 {
                self.branch_points += 1;
            }
        }
        if let Some(u) = &r.uuid {
            self.uuids.insert(Arc::from(u.as_str()));
            self.leaf = Some(u.clone());
        }
        Ok(())
    }
}

impl State {
    /// The transcript imported as session `id`.
    pub fn transcript(&self, id: &SessionId) -> Option<&Arc<Transcript>> {
        self.claude.get(id)
    }

    /// The newest version of the transcript first imported as `id` (itself when its file
    /// was never rewritten).
    pub fn newest_transcript(&self, id: &SessionId) -> Option<(&SessionId, &Arc<Transcript>)> {
        let (mut id, mut t) = self.claude.get_key_value(id)?;
        // Versions form a chain; bounded by the number of transcripts.
        for _ in 0..self.claude.len() {
            match t
                .replaced_by
                .as_ref()
                .and_then(|n| self.claude.get_key_value(n))
            {
                Some((nid, nt)) => (id, t) = (nid, nt),
                None => break,
            }
        }
        Some((id, t))
    }

    /// The transcript holding the record `uuid`, if one does (the newest version first).
    pub fn transcript_with_uuid(&self, uuid: &str) -> Option<&SessionId> {
        self.claude
            .iter()
            .filter(|(_, t)| t.uuids.contains(uuid))
            .max_by_key(|(_, t)| t.opened.version)
            .map(|(id, _)| id)
    }

    /// The transcripts whose first `sessionId` is `claude_session`.
    pub fn transcripts_of_claude_session<'a>(
        &'a self,
        claude_session: &'a str,
    ) -> impl Iterator<Item = &'a SessionId> + 'a {
        self.claude
            .iter()
            .filter(move |(_, t)| t.claude_session.as_deref() == Some(claude_session))
            .map(|(id, _)| id)
    }

    pub(super) fn apply_claude(
        &mut self,
        at: Timestamp,
        e: &ClaudeEvent,
    ) -> Result<(), ApplyError> {
        match e {
            ClaudeEvent::Opened(o) => {
                if self.sessions.contains_key(&o.session) || self.claude.contains_key(&o.session) {
                    return fail(format!("session {} already exists", o.session));
                }
                if let Some(prev) = &o.replaces {
                    let Some(p) = self.claude.get_mut(prev) else {
                        return fail(format!("transcript {prev} to replace does not exist"));
                    };
                    if p.replaced_by.is_some() {
                        return fail(format!("transcript {prev} was already replaced"));
                    }
                    Arc::make_mut(p).replaced_by = Some(o.session.clone());
                }
                let name = match o.layout {
                    Layout::Session => o.session.to_string(),
                    _ => format!("{} (subagent)", o.session),
                };
                let created = SessionCreated {
                    session: o.session.clone(),
                    name,
                    agent: Some("claude-code".into()),
                    working_dir: o.cwd.clone(),
                    timeout_secs: 0,
                    config: SessionConfig::default(),
                    metadata: Vec::new(),
                };
                self.sessions
                    .insert(o.session.clone(), Arc::new(Session::created(&created, at)));
                self.claude
                    .insert(o.session.clone(), Arc::new(Transcript::new(o)));
            }
            ClaudeEvent::Piece(p) => {
                let Some(t) = self.claude.get_mut(&p.session) else {
                    return fail(format!("transcript {} does not exist", p.session));
                };
                Arc::make_mut(t).apply_piece(p)?;
                if let Some(s) = self.sessions.get_mut(&p.session) {
                    Arc::make_mut(s).last_activity = at;
                }
            }
        }
        Ok(())
    }

    /// Puts back the transcripts a state schema 4 snapshot stores after the state.
    pub(crate) fn attach_transcripts(
        &mut self,
        transcripts: Vec<(SessionId, Transcript)>,
    ) -> Result<(), ApplyError> {
        for (id, t) in transcripts {
            if !self.sessions.contains_key(&id) {
                return fail(format!("transcript {id} has no session"));
            }
            if self.claude.insert(id.clone(), Arc::new(t)).is_some() {
                return fail(format!("transcript {id} given twice"));
            }
        }
        Ok(())
    }
}

/// A link from one transcript to another, as its records (or its place in Claude Code's
/// layout) tell it, resolved against the transcripts imported so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TranscriptLink {
    /// `parent` (a `parentUuid` outside the file: a resumed session, a subagent's start),
    /// `logical_parent` (a compaction's `logicalParentUuid`), `summary_leaf` (a `summary`
    /// record's `leafUuid`), `session_id` (records of another session id in the file),
    /// `subagent_of` (the file is a subagent's transcript of that session), or
    /// `replaces` (an earlier version of a rewritten file).
    pub kind: &'static str,
    /// The uuid or Claude Code session id named.
    pub target: String,
    /// The engine session holding it, when one imported does.
    pub session: Option<SessionId>,
}

impl State {
    /// The transcript session whose records are of Claude Code session `claude_session`,
    /// a session's own transcript rather than a subagent's, other than `not`.
    fn transcript_of(&self, claude_session: &str, not: &SessionId) -> Option<SessionId> {
        self.claude
            .iter()
            .filter(|(id, t)| {
                *id != not
                    && t.replaced_by.is_none()
                    && (t.claude_session.as_deref() == Some(claude_session)
                        || id.as_str() == claude_session)
            })
            .min_by_key(|(_, t)| t.opened.layout != Layout::Session)
            .map(|(id, _)| id.clone())
    }

    /// Every link of the transcript imported as `id` (empty when there is none).
    pub fn transcript_links(&self, id: &SessionId) -> Vec<TranscriptLink> {
        let Some(t) = self.claude.get(id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(prev) = &t.opened.replaces {
            out.push(TranscriptLink {
                kind: "replaces",
                target: prev.to_string(),
                session: Some(prev.clone()),
            });
        }
        let parent = match t.opened.layout {
            Layout::Session => None,
            Layout::AgentNested => t.opened.parent.clone(),
            Layout::AgentBeside => t.claude_session.clone(),
        };
        if let Some(p) = parent {
            out.push(TranscriptLink {
                kind: "subagent_of",
                session: self.transcript_of(&p, id),
                target: p,
            });
        }
        for (kind, target) in &t.refs {
            let (name, session) = match kind {
                RefKind::Parent => ("parent", self.transcript_with_uuid(target)),
                RefKind::LogicalParent => ("logical_parent", self.transcript_with_uuid(target)),
                RefKind::SummaryLeaf => ("summary_leaf", self.transcript_with_uuid(target)),
                RefKind::SessionId => {
                    out.push(TranscriptLink {
                        kind: "session_id",
                        target: target.clone(),
                        session: self.transcript_of(target, id),
                    });
                    continue;
                }
            };
            out.push(TranscriptLink {
                kind: name,
                target: target.clone(),
                session: session.filter(|s| *s != id).cloned(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(uuids: impl Iterator<Item = u32>) -> Transcript {
        let mut t = Transcript::new(&ClaudeOpened {
            session: SessionId::new("t").unwrap(),
            source: "/p/t.jsonl".into(),
            layout: Layout::Session,
            parent: None,
            cwd: None,
            version: 1,
            replaces: None,
            reason: None,
        });
        for i in uuids {
            let u: Arc<str> = format!("uuid-{i:04}").into();
            t.uuids.insert(Arc::clone(&u));
            t.children.insert(u, i % 3);
        }
        t
    }

    /// Two transcripts holding the same uuids, built in opposite orders (and so with
    /// hashed sets of their own seeds), serialise to the same bytes: a snapshot of a
    /// state does not depend on the hasher.
    #[test]
    fn a_transcripts_hashed_sets_serialise_in_sorted_order() {
        let a = transcript(0..200);
        let b = transcript((0..200).rev());
        assert_eq!(a, b);
        let (ja, jb) = (
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap(),
        );
        assert_eq!(ja, jb);
        let v: serde_json::Value = serde_json::from_str(&ja).unwrap();
        let uuids: Vec<&str> = v["uuids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        let mut sorted = uuids.clone();
        sorted.sort_unstable();
        assert_eq!(uuids, sorted);
        let back: Transcript = serde_json::from_str(&ja).unwrap();
        assert_eq!(back, a);
    }
}
