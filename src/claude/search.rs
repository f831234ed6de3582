//! `claude search`: the records of imported transcripts whose text holds every word of
//! a query, ranked, through the full-text index [`super::index`].
//!
//! The text of a record is the strings Claude Code shows of it: a `user` or `assistant`
//! record's `message.content` (a prompt, an answer, thinking, a tool's input and result;
//! every string in it but those under `type`, `id`, `tool_use_id`, `signature`,
//! `media_type` and `source`, an image's base64), a `summary` record's `summary`, and a
//! top-level `content` (`system` records and others).
//!
//! The text is split into words by SQLite FTS5's `unicode61` tokenizer (letters and
//! digits; case folded, diacritics removed, so `über` finds `Über` and `uber`). A record
//! matches when it holds every word of the query (each whitespace-separated word of the
//! query is a quoted FTS5 string, so `a-b` is the phrase `a b`, and FTS5's own syntax in
//! a query is only text). Hits are ranked by FTS5's `bm25()` (best first: a word more
//! often, in a shorter text, ranks higher; ties newest first), at most `limit`; `total`
//! counts all of them.
//!
//! The index is a projection of the log in one SQLite file under the data directory
//! (`index/claude-search.sqlite`, `docs/format.md`): each search first indexes the
//! events after the last one it holds, in one transaction, and rebuilds it from the log
//! when it is missing or damaged. Transcripts are chosen from the current state as the
//! filters say (an earlier version of a rewritten file only when its session is named).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::events::Layout;
use super::index;
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
    /// The words (each required, case and accents folded; see the module documentation;
    /// not empty).
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
    /// Up to [`SNIPPET_CHARS`] characters of the record's text around the match
    /// (FTS5's `snippet()`, about 24 words), whitespace runs as one space, `…` where it
    /// is cut.
    pub snippet: String,
    /// The LSN of the event holding the line.
    pub lsn: Lsn,
    /// How well it matches (FTS5's `bm25()`, negated: higher is better).
    pub score: f64,
}

/// What a search found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SearchResult {
    /// The hits, best first, at most the limit.
    pub hits: Vec<Hit>,
    /// How many records matched in all.
    pub total: u64,
    /// Records this call added to the index (those of the events it lacked).
    pub indexed: u64,
    /// Log events this call read to bring the index up to date.
    pub events: u64,
    /// Why the index was built again from the whole log by this call, if it was (it is
    /// a projection: missing, damaged, of another version, or kept in memory).
    pub rebuilt: Option<String>,
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

/// The text of `record` (see the module documentation): its strings, one per line.
pub(crate) fn record_text(record: &Value) -> String {
    let mut text = String::new();
    let mut add = |s: &str| {
        if s.trim().is_empty() {
            return;
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(s);
    };
    if let Some(c) = record.get("message").and_then(|m| m.get("content")) {
        strings(c, 0, &mut add);
    }
    if let Some(Value::String(s)) = record.get("summary") {
        add(s);
    }
    if let Some(c) = record.get("content") {
        strings(c, 0, &mut add);
    }
    text
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

/// The user's words as an FTS5 query: each word (separated by whitespace or control
/// characters) one quoted FTS5
/// string (a `"` doubled), all required. FTS5's syntax (`*`, `NEAR(`, `-`, `:`, `^`,
/// `AND`, parentheses) is only ever inside a string, so it is text; a word is tokenized
/// as the index is (`a-b` is the phrase `a b`). `None` when no word has a letter or digit.
pub fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        // A control character (NUL ends SQLite's reading of a string) separates words.
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// A snippet from FTS5's: whitespace runs as one space, at most [`SNIPPET_CHARS`]
/// characters, `…` where it is cut.
fn tidy_snippet(raw: &str) -> String {
    let mut out = String::new();
    for w in raw.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    if out.chars().count() > SNIPPET_CHARS {
        out = out.chars().take(SNIPPET_CHARS - 1).collect();
        if !out.ends_with('…') {
            out.push('…');
        }
    }
    out
}

fn sql_err(e: rusqlite::Error) -> Error {
    Error::io(
        "query the search index",
        index::INDEX_FILE,
        std::io::Error::other(e.to_string()),
    )
}

/// What [`update_index`] did to the search index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexUpdate {
    /// Log events read to bring the index up to date.
    pub events: u64,
    /// Records added to the index.
    pub indexed: u64,
    /// Why the index was built again from the whole log, if it was (missing, damaged, of
    /// another version, or kept in memory: then nothing is left for the next search).
    pub rebuilt: Option<String>,
}

/// Brings the search index up to the log's last LSN, as a search does first (reading
/// only the events it lacks; building it when it is missing or damaged), without a
/// query: `claude import` and `claude follow` call it after they import, so that the
/// next search has only the events after that to read. Writes only the index.
pub fn update_index(engine: &Engine) -> Result<IndexUpdate> {
    let (ix, caught) = index::open_current(engine, engine.state().last_lsn)?;
    Ok(IndexUpdate {
        events: caught.events,
        indexed: caught.records,
        rebuilt: ix.rebuilt,
    })
}

/// Searches the imported transcripts (see the module documentation): brings the index up
/// to the log's last LSN (reading only the events it lacks; rebuilding it when it is
/// missing or damaged), then asks it. Writes only the index.
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
    let (ix, caught) = index::open_current(engine, state.last_lsn)?;
    let mut result = SearchResult {
        indexed: caught.records,
        events: caught.events,
        rebuilt: ix.rebuilt.clone(),
        ..SearchResult::default()
    };
    if let Some(why) = &ix.rebuilt {
        tracing::info!(reason = %why, "the search index is a projection of the log: built again");
    }
    let chosen: Vec<&SessionId> = state
        .claude
        .iter()
        .filter(|(id, t)| chosen(q, id, t))
        .map(|(id, _)| id)
        .collect();
    let Some(fts) = fts_query(&q.text) else {
        return Ok(result);
    };
    if chosen.is_empty() {
        return Ok(result);
    }
    let conn = &ix.conn;
    conn.execute_batch(
        "CREATE TEMP TABLE chosen(session TEXT PRIMARY KEY) WITHOUT ROWID;
         CREATE TEMP TABLE kinds(kind TEXT PRIMARY KEY) WITHOUT ROWID;",
    )
    .map_err(sql_err)?;
    {
        let mut put = conn
            .prepare("INSERT OR IGNORE INTO temp.chosen(session) VALUES (?1)")
            .map_err(sql_err)?;
        for id in &chosen {
            put.execute([id.as_str()]).map_err(sql_err)?;
        }
        let mut put = conn
            .prepare("INSERT OR IGNORE INTO temp.kinds(kind) VALUES (?1)")
            .map_err(sql_err)?;
        for k in &q.kinds {
            put.execute([k.as_str()]).map_err(sql_err)?;
        }
    }
    let mut filter = String::from(
        "FROM texts JOIN records r ON r.id = texts.rowid
         WHERE texts MATCH ?1 AND r.session IN (SELECT session FROM temp.chosen)",
    );
    if !q.kinds.is_empty() {
        filter.push_str(" AND r.kind IN (SELECT kind FROM temp.kinds)");
    }
    filter.push_str(" AND (?2 IS NULL OR r.ts >= ?2)");
    let since = q.since.map(|t| t.0);
    let total: i64 = conn
        .query_row(
            &format!("SELECT count(*) {filter}"),
            rusqlite::params![fts, since],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    result.total = u64::try_from(total).unwrap_or(0);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT r.session, r.claude_session, r.line, r.offset, r.uuid, r.ts, r.kind, r.lsn,
                    bm25(texts) AS rank, snippet(texts, 0, '', '', '…', 24)
             {filter}
             ORDER BY rank, r.ts DESC, r.lsn DESC, r.line DESC LIMIT ?3"
        ))
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(
            rusqlite::params![fts, since, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, f64>(8)?,
                    r.get::<_, String>(9)?,
                ))
            },
        )
        .map_err(sql_err)?;
    for row in rows {
        let (session, claude_session, line, offset, uuid, ts, kind, lsn, rank, snippet) =
            row.map_err(sql_err)?;
        let Ok(session) = SessionId::new(&session) else {
            continue;
        };
        result.hits.push(Hit {
            session,
            claude_session,
            line: u64::try_from(line).unwrap_or(0),
            offset: u64::try_from(offset).unwrap_or(0),
            uuid,
            timestamp: ts.map(Timestamp),
            kind,
            snippet: tidy_snippet(&snippet),
            lsn: Lsn(u64::try_from(lsn).unwrap_or(0)),
            // bm25() is lower for a better match; the score is higher.
            score: -rank,
        });
    }
    Ok(result)
}
