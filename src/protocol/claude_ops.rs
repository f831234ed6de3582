//! The protocol's Claude Code transcript ops: their fields and their answers.
//!
//! | `op`            | fields                                                            |
//! |-----------------|-------------------------------------------------------------------|
//! | `claude_import` | `paths` (array of strings: transcript files or folders walked for `*.jsonl`) |
//! | `claude_show`   | `id` (the engine session of a transcript)                         |
//! | `claude_search` | `query`, `project`?, `session`?, `type`? (a string or an array of them), `since`? (RFC 3339 or `YYYY-MM-DD`), `limit`? (default 20) |
//! | `claude_validate`, `claude_info` | `paths` (as `claude_import`; read only, nothing imported) |
//! | `claude_export` | `id`, `path` (a new file: refused if anything is there) |
//! | `chain_summary` | `agent`: seed 003's `get_chain_summary`                           |
//!
//! ```text
//! {"ok":true,"files":[{"path":..,"session":..,"lines":3,...}],"failed":[],"skipped":[],
//!  "unreadable":[],"chained":[{"agent":"claude-aaaa","session_id":"bbbb",...}]}
//! {"ok":true,"transcript":{"session":..,"imported_bytes":..,"links":[...],...}}
//! {"ok":true,"total":2,"indexed":0,"hits":[{"session":..,"line":4,"uuid":..,
//!  "timestamp":..,"type":"user","snippet":"...","score":1.25}]}
//! {"ok":true,"valid":true,"files":[{"file_path":..,"session_id":..,...}],"totals":{..},
//!  "skipped":[],"unreadable":[]}                                  claude_validate, claude_info
//! {"ok":true,"path":"/tmp/a.jsonl","bytes":5120}                 claude_export
//! {"ok":true,"summary":{"agent_id":"a","total_sessions":2,...}}   chain_summary
//! ```
//!
//! `claude_validate` and `claude_info` answer as `claude validate --json` and `claude info
//! --json` print ([`Report::to_json`]); a transcript with bad lines is `"valid":false`,
//! still an `ok` answer (the op itself worked).
//!
//! `claude_import` is `claude::import::import_paths` (the files that could not be read
//! are listed in `failed` and `unreadable`, the others imported; the answer is an error
//! only when the engine itself failed), `claude_show` is `claude::import::describe`,
//! `claude_search` is `claude::search::search` (hits best first; `indexed` the records
//! it added to the full-text index, `rebuilt` why it built the index again, if it did). They are answered as the run ops are,
//! once every line before them is.

use serde_json::{Value, json};

use super::{Fields, type_name};
use crate::claude::import::{self, ImportRun};
use crate::claude::search::{self, SearchQuery};
use crate::claude::{Detail, Report};
use crate::error::{Error, Result};
use crate::storage::FileStorage;
use crate::types::{AgentId, SessionId};

/// The ops of this module.
pub(super) const OPS: [&str; 7] = [
    "claude_import",
    "claude_show",
    "claude_search",
    "claude_validate",
    "claude_info",
    "claude_export",
    "chain_summary",
];

/// A transcript op.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClaudeOp {
    /// `claude_import`.
    Import {
        /// Files or folders.
        paths: Vec<std::path::PathBuf>,
    },
    /// `claude_show`.
    Show(SessionId),
    /// `claude_search`.
    Search(SearchQuery),
    /// `claude_validate` (`Detail::Validation`) and `claude_info` (`Detail::Info`).
    Read {
        /// Files or folders.
        paths: Vec<std::path::PathBuf>,
        /// Which fields of each file.
        detail: Detail,
    },
    /// `claude_export`.
    Export {
        /// The engine session of the transcript.
        session: SessionId,
        /// The new file.
        path: std::path::PathBuf,
    },
    /// `chain_summary`.
    ChainSummary(AgentId),
}

/// The `paths` field: one path or several, at least one.
fn paths(f: &mut Fields, what: &str) -> Result<Vec<std::path::PathBuf>> {
    let paths = one_or_many(f, "paths")?;
    if paths.is_empty() {
        return Err(Error::invalid(
            "paths",
            format!("missing: name the transcript files or folders to {what}"),
        ));
    }
    Ok(paths.into_iter().map(Into::into).collect())
}

/// A string or an array of strings (none: empty).
fn one_or_many(f: &mut Fields, key: &'static str) -> Result<Vec<String>> {
    let items = match f.take(key) {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![s]),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(Error::invalid(
                key,
                format!(
                    "must be a string or an array of strings, got {}",
                    type_name(&other)
                ),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if !s.contains('\0') => Ok(s),
            Value::String(_) => Err(Error::invalid(key, format!("item {i} holds a NUL byte"))),
            other => Err(Error::invalid(
                key,
                format!("item {i} must be a string, got {}", type_name(&other)),
            )),
        })
        .collect()
}

/// The fields of a transcript op (`f.op` is one of [`OPS`]).
pub(super) fn parse(f: &mut Fields) -> Result<ClaudeOp> {
    Ok(match f.op {
        "claude_import" => ClaudeOp::Import {
            paths: paths(f, "import")?,
        },
        "claude_validate" => ClaudeOp::Read {
            paths: paths(f, "validate")?,
            detail: Detail::Validation,
        },
        "claude_info" => ClaudeOp::Read {
            paths: paths(f, "read")?,
            detail: Detail::Info,
        },
        "claude_export" => {
            let session = f.session()?;
            let path = f.required_string("path")?;
            if path.is_empty() || path.contains('\0') {
                return Err(Error::invalid(
                    "path",
                    "must be a path, not empty, no NUL byte",
                ));
            }
            ClaudeOp::Export {
                session,
                path: path.into(),
            }
        }
        "chain_summary" => ClaudeOp::ChainSummary(AgentId::new(&f.required_string("agent")?)?),
        "claude_show" => ClaudeOp::Show(f.session()?),
        _ => {
            let text = f.required_string("query")?;
            let limit = match f.u64("limit")? {
                None => 0,
                Some(0) => return Err(Error::invalid("limit", "must be at least 1")),
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            };
            ClaudeOp::Search(SearchQuery {
                text,
                project: f.string("project")?,
                session: f.string("session")?,
                kinds: one_or_many(f, "type")?,
                since: f
                    .string("since")?
                    .map(|s| search::parse_since(&s))
                    .transpose()?,
                limit,
            })
        }
    })
}

/// `{"ok":true, ...}` and the run's JSON form ([`ImportRun::to_json`]).
fn run_json(run: &ImportRun) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("ok".into(), Value::Bool(true));
    if let Value::Object(report) = run.to_json() {
        m.extend(report);
    }
    Value::Object(m)
}

/// The JSON form of a search's hits.
pub fn hits_json(r: &search::SearchResult) -> Vec<Value> {
    r.hits
        .iter()
        .map(|h| {
            json!({
                "session": h.session.as_str(),
                "claude_session": h.claude_session,
                "line": h.line,
                "offset": h.offset,
                "uuid": h.uuid,
                "timestamp": h.timestamp.map(|t| t.to_iso8601_micros()),
                "type": h.kind,
                "snippet": h.snippet,
                "score": h.score,
            })
        })
        .collect()
}

/// The op's answer.
pub(super) fn answer(manager: &crate::SessionManager, op: &ClaudeOp) -> Result<Value> {
    Ok(match op {
        ClaudeOp::Import { paths } => {
            let run = import::import_paths(manager.engine(), &FileStorage::new(), paths);
            if let Some(e) = manager.engine().poisoned() {
                return Err(e);
            }
            run_json(&run)
        }
        ClaudeOp::Show(id) => {
            json!({"ok": true, "transcript": import::describe(&manager.state(), id)?})
        }
        ClaudeOp::Search(q) => {
            let r = search::search(manager.engine(), q)?;
            json!({"ok": true, "total": r.total, "indexed": r.indexed, "rebuilt": r.rebuilt,
                   "hits": hits_json(&r)})
        }
        ClaudeOp::Read { paths, detail } => {
            let mut m = serde_json::Map::new();
            m.insert("ok".into(), Value::Bool(true));
            if let Value::Object(report) = Report::read(&FileStorage::new(), paths).to_json(*detail)
            {
                m.extend(report);
            }
            Value::Object(m)
        }
        ClaudeOp::Export { session, path } => {
            let bytes =
                import::export_new_file(manager.engine(), session, &FileStorage::new(), path)?;
            json!({"ok": true, "path": path.to_string_lossy(), "bytes": bytes})
        }
        ClaudeOp::ChainSummary(agent) => {
            let chain = manager.chain(agent.as_str())?.chain();
            json!({"ok": true, "summary": chain.summary()})
        }
    })
}
