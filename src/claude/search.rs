//! `claude search`: the records of imported transcripts whose text holds a query.
//!
//! The text of a record is the strings Claude Code shows of it: a `user` or `assistant`
//! record's `message.content` (a prompt, an answer, thinking, a tool's input and result;
//! every string in it but those under `type`, `id`, `tool_use_id`, `signature`,
//! `media_type` and `source`, an image's base64), a `summary` record's `summary`, and a
//! top-level `content` (`system` records and others). A record matches when one of those
//! strings, lowercased (Unicode's `to_lowercase`), contains the query lowercased: a
//! case-insensitive substring match, not a word or ranked full-text one.
//!
//! There is no index: a search reads the transcripts' pieces back from the log, in
//! order, and parses only the lines whose raw bytes may hold the query (for an ASCII
//! query, a line without `\u` escapes that does not hold the query in ASCII lowercase
//! cannot match, so it is skipped unparsed). Its cost is that of reading the log
//! (`docs/benchmarks.md`). Hits are given newest first (by the record's `timestamp`, then
//! log order), at most `limit`; `total` counts all of them.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::events::{ClaudePiece, Layout};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::state::{State, Transcript};
use crate::types::{Lsn, SessionId, Timestamp};

/// The hits a search gives when no limit is asked for.
pub const DEFAULT_LIMIT: usize = 20;
/// Most characters of a snippet.
pub const SNIPPET_CHARS: usize = 160;
/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;

/// What to search for.
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    /// The text (matched case-insensitively as a substring; not empty).
    pub text: String,
    /// Only transcripts of this project: a `cwd` (`/home/a/proj`) or its folder under
    /// `~/.claude/projects` (`-home-a-proj`); compared as Claude Code names folders.
    pub project: Option<String>,
    /// Only this session: an engine session id, or a Claude Code session id (its own
    /// transcript, the versions of a rewritten one and its subagents').
    pub session: Option<String>,
    /// Only records of these `type`s (`user`, `assistant`, `summary`, ...; empty: all).
    pub kinds: Vec<String>,
    /// Only records with a `timestamp` at or after this.
    pub since: Option<Timestamp>,
    /// Most hits given (0: [`DEFAULT_LIMIT`]).
    pub limit: usize,
}

/// One record that matches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    /// The engine session holding the transcript.
    pub session: SessionId,
    /// The record's `sessionId`.
    pub claude_session: Option<String>,
    /// The line's number in the transcript, from 1.
    pub line: u64,
    /// Its byte offset in the file.
    pub offset: u64,
    /// The record's `uuid`.
    pub uuid: Option<String>,
    /// Its `timestamp`.
    pub timestamp: Option<Timestamp>,
    /// Its `type`.
    pub kind: Option<String>,
    /// Up to [`SNIPPET_CHARS`] characters of the matching text around the match,
    /// whitespace runs as one space, `…` where it is cut.
    pub snippet: String,
    /// The LSN of the event holding the line.
    pub lsn: Lsn,
}

/// What a search found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SearchResult {
    /// The hits, newest first, at most the limit.
    pub hits: Vec<Hit>,
    /// How many records matched in all.
    pub total: u64,
    /// Records of the chosen transcripts looked at.
    pub records: u64,
    /// Records parsed (the others were told apart by their bytes).
    pub parsed: u64,
    /// Bytes of those records.
    pub bytes: u64,
}

/// A `--since` value: RFC 3339 (`2026-01-05T10:00:00Z`) or a day (`2026-01-05`, midnight
/// UTC).
pub fn parse_since(text: &str) -> Result<Timestamp> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(Timestamp(t.timestamp_micros()));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(Timestamp(t.and_utc().timestamp_micros()));
    }
    Err(Error::invalid(
        "since",
        format!("{text:?} is neither RFC 3339 (2026-01-05T10:00:00Z) nor a day (2026-01-05)"),
    ))
}

/// The folder of `~/.claude/projects` a transcript is in, from its source path.
fn project_folder(t: &Transcript) -> Option<String> {
    let p = Path::new(&t.opened.source);
    let dir = match t.opened.layout {
        Layout::Session | Layout::AgentBeside => p.parent(),
        Layout::AgentNested => p.parent().and_then(Path::parent).and_then(Path::parent),
    }?;
    Some(dir.file_name()?.to_str()?.to_string())
}

fn chosen(q: &SearchQuery, id: &SessionId, t: &Transcript) -> bool {
    if let Some(s) = &q.session {
        let claude = super::resume::claude_id(t);
        let named = id.as_str() == s
            || t.claude_session.as_deref() == Some(s)
            || (claude.as_deref() == Some(s) && t.opened.layout == Layout::Session)
            || t.opened.parent.as_deref() == Some(s);
        if !named {
            return false;
        }
    } else if t.replaced_by.is_some() {
        // An earlier version of a rewritten file: searched only when named.
        return false;
    }
    if let Some(p) = &q.project {
        let want = super::project_dir_name(p);
        let of_cwd = t.opened.cwd.as_deref().map(super::project_dir_name);
        if of_cwd.as_deref() != Some(&want) && project_folder(t).as_deref() != Some(&want) {
            return false;
        }
    }
    true
}

/// How a line is told apart before it is parsed.
struct Matcher {
    lower: String,
    /// The query in ASCII lowercase, when the raw bytes can rule a line out.
    ascii: Option<Vec<u8>>,
    finder: Option<memchr::memmem::Finder<'static>>,
    buf: Vec<u8>,
}

impl Matcher {
    fn new(text: &str) -> Matcher {
        let lower = text.to_lowercase();
        // A string's characters appear as themselves in the line unless escaped; an
        // ASCII query without the characters JSON escapes (`"`, `\`, `/`, controls) is
        // found in the raw bytes of a line without `\u` escapes whenever a string holds
        // it (only U+0130 and U+212A, not ASCII, lowercase to ASCII: lines with them are
        // parsed).
        let rawable = lower.is_ascii()
            && !lower
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || b == b'/' || b < 0x20 || b == 0x7f);
        let ascii = rawable.then(|| lower.as_bytes().to_vec());
        let finder = ascii
            .as_ref()
            .map(|a| memchr::memmem::Finder::new(a).into_owned());
        Matcher {
            lower,
            ascii,
            finder,
            buf: Vec::new(),
        }
    }

    /// Whether the line may match (false only when it cannot).
    fn may_match(&mut self, line: &[u8]) -> bool {
        let (Some(_), Some(finder)) = (&self.ascii, &self.finder) else {
            return true;
        };
        if memchr::memmem::find(line, b"\\u").is_some()
            || memchr::memmem::find(line, "\u{130}".as_bytes()).is_some()
            || memchr::memmem::find(line, "\u{212a}".as_bytes()).is_some()
        {
            return true;
        }
        self.buf.clear();
        self.buf.extend(line.iter().map(u8::to_ascii_lowercase));
        finder.find(&self.buf).is_some()
    }

    /// The snippet of the first text of `record` that holds the query.
    fn find(&self, record: &Value) -> Option<String> {
        let mut found = None;
        let mut look = |s: &str| {
            if found.is_none() {
                found = snippet(s, &self.lower);
            }
        };
        if let Some(c) = record.get("message").and_then(|m| m.get("content")) {
            strings(c, 0, &mut look);
        }
        if let Some(Value::String(s)) = record.get("summary") {
            look(s);
        }
        if let Some(c) = record.get("content") {
            strings(c, 0, &mut look);
        }
        found
    }
}

/// Keys whose strings are no text (ids, kinds, signatures, base64).
const NOT_TEXT: [&str; 6] = [
    "type",
    "id",
    "tool_use_id",
    "signature",
    "media_type",
    "source",
];

fn strings(v: &Value, depth: usize, f: &mut dyn FnMut(&str)) {
    if depth > 64 {
        return;
    }
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, depth + 1, f)),
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !NOT_TEXT.contains(&k.as_str()))
            .for_each(|(_, x)| strings(x, depth + 1, f)),
        _ => {}
    }
}

/// The snippet of `text` around its first match of `lower` (already lowercased).
fn snippet(text: &str, lower: &str) -> Option<String> {
    // Lowercase character by character, remembering where each original one starts.
    let mut low = String::with_capacity(text.len());
    let mut starts = Vec::with_capacity(text.len());
    for c in text.chars() {
        starts.push(low.len());
        low.extend(c.to_lowercase());
    }
    let at = low.find(lower)?;
    let chars: Vec<char> = text.chars().collect();
    // The original characters the match covers.
    let first = starts.partition_point(|&s| s <= at).saturating_sub(1);
    let end = starts.partition_point(|&s| s < at + lower.len());
    let width = end.saturating_sub(first);
    let room = SNIPPET_CHARS.saturating_sub(width);
    let from = first.saturating_sub(room / 3);
    let to = (end + (room - (first - from))).min(chars.len());
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    let mut space = false;
    for &c in &chars[from..to] {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() && !out.ends_with('…') {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    if to < chars.len() {
        out.push('…');
    }
    Some(out)
}

/// Searches the imported transcripts (see the module documentation). Reads the log;
/// nothing is written.
pub fn search(engine: &Engine, q: &SearchQuery) -> Result<SearchResult> {
    if q.text.trim().is_empty() {
        return Err(Error::invalid("query", "must not be empty"));
    }
    if q.text.len() > MAX_QUERY_BYTES {
        return Err(Error::invalid(
            "query",
            format!("{} bytes; the limit is {MAX_QUERY_BYTES}", q.text.len()),
        ));
    }
    let limit = if q.limit == 0 { DEFAULT_LIMIT } else { q.limit };
    let state: std::sync::Arc<State> = engine.state();
    // Per chosen transcript, the lines seen so far.
    let mut lines: HashMap<SessionId, u64> = state
        .claude
        .iter()
        .filter(|(id, t)| chosen(q, id, t))
        .map(|(id, _)| (id.clone(), 0))
        .collect();
    let mut result = SearchResult::default();
    if lines.is_empty() {
        return Ok(result);
    }
    let mut m = Matcher::new(&q.text);
    let mut hits: Vec<Hit> = Vec::new();
    let newest_first = |a: &Hit, b: &Hit| (b.timestamp, b.lsn).cmp(&(a.timestamp, a.lsn));
    engine.read_log(Lsn(1), state.last_lsn, |lsn, event| {
        let mut each = |p: &ClaudePiece, session: &SessionId| -> Result<()> {
            let Some(n) = lines.get_mut(session) else {
                return Ok(());
            };
            if !p.ends_line() {
                return Ok(());
            }
            *n += 1;
            let Some(refs) = &p.refs else { return Ok(()) };
            if !q.kinds.is_empty()
                && !q
                    .kinds
                    .iter()
                    .any(|k| refs.kind.as_deref() == Some(k.as_str()))
            {
                return Ok(());
            }
            if let Some(since) = q.since
                && refs.timestamp.is_none_or(|t| t < since)
            {
                return Ok(());
            }
            result.records += 1;
            result.bytes += p.bytes.len() as u64;
            if !m.may_match(&p.bytes) {
                return Ok(());
            }
            result.parsed += 1;
            let Ok(record) = serde_json::from_slice::<Value>(&p.bytes) else {
                return Ok(());
            };
            let Some(snippet) = m.find(&record) else {
                return Ok(());
            };
            result.total += 1;
            hits.push(Hit {
                session: session.clone(),
                claude_session: refs.session_id.clone(),
                line: *n,
                offset: p.offset,
                uuid: refs.uuid.clone(),
                timestamp: refs.timestamp,
                kind: refs.kind.clone(),
                snippet,
                lsn,
            });
            if hits.len() >= limit.saturating_mul(2).max(64) {
                hits.sort_by(newest_first);
                hits.truncate(limit);
            }
            Ok(())
        };
        super::import::each_piece_addressed(&event.body, &mut each)?;
        Ok(true)
    })?;
    hits.sort_by(newest_first);
    hits.truncate(limit);
    result.hits = hits;
    Ok(result)
}
