//! Standard output (with a closed pipe treated as a normal end) and the JSON shapes the
//! commands print.

use std::io::{self, BufWriter, Stdout, Write};
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};
use session_engine::projection::ProjectionPaths;
use session_engine::state::{Activity, CommandRecord, Decision};
use session_engine::storage::Storage;
use session_engine::{Engine, JsonText, Lsn, Session, Timestamp};

/// Buffered stdout. A write to a closed pipe becomes an error that `main` turns into a
/// quiet exit with status 0.
pub struct Out {
    w: BufWriter<Stdout>,
}

impl Out {
    pub fn new() -> Out {
        Out {
            w: BufWriter::new(io::stdout()),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, s: &str) -> Result<()> {
        self.w.write_all(s.as_bytes())?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    /// Writes one JSON value on one line.
    pub fn json(&mut self, v: &Value) -> Result<()> {
        serde_json::to_writer(&mut self.w, v).map_err(io::Error::from)?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.w.flush()?;
        Ok(())
    }
}

/// Whether `e` is a write to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// One element of `list --json`.
pub fn list_item_json(s: &Session, now: Timestamp) -> Value {
    json!({
        "session_id": s.id.as_str(),
        "name": &*s.name,
        "status": s.status().as_str(),
        "created_at": s.created_at.to_iso8601(),
        "last_activity": s.last_activity.to_iso8601(),
        "timeout_seconds": s.timeout_secs,
        "is_active": s.is_active(now),
        "activity_count": s.body.activity_count(),
    })
}

/// A name in a `history` line: tabs, newlines, carriage returns and backslashes are
/// written `\t`, `\n`, `\r` and `\\`, so one item is one line of tab-separated fields.
fn field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// Details or arguments as `show` prints them: the JSON value given, `{}` when none was.
fn details(d: Option<&JsonText>) -> Value {
    d.map_or_else(|| json!({}), JsonText::to_value)
}

/// `history`'s line of an activity: `INDEX<TAB>TIMESTAMP<TAB>ACTION<TAB>DETAILS`.
pub fn activity_line(index: usize, a: &Activity) -> String {
    format!(
        "{index}\t{}\t{}\t{}",
        a.timestamp.to_iso8601(),
        field(&a.action),
        a.details.text().map_or("{}", JsonText::as_str)
    )
}

/// `history --json`'s object of an activity: `show`'s `activity_log` entry and its index.
pub fn activity_json(index: usize, a: &Activity) -> Value {
    json!({
        "index": index,
        "action": &*a.action,
        "timestamp": a.timestamp.to_iso8601(),
        "details": details(a.details.text()),
    })
}

/// `history --commands`' line: `INDEX<TAB>TIMESTAMP<TAB>COMMAND<TAB>{args, success,
/// error, duration_ms}`.
pub fn command_line(index: usize, c: &CommandRecord) -> String {
    let rest = json!({
        "args": details(c.args.as_ref()),
        "success": c.success,
        "error": c.error.as_deref(),
        "duration_ms": c.duration_ms,
    });
    format!(
        "{index}\t{}\t{}\t{rest}",
        c.timestamp.to_iso8601(),
        field(&c.command)
    )
}

/// `history --commands --json`'s object: `show`'s `command_history` entry and its index.
pub fn command_json(index: usize, c: &CommandRecord) -> Value {
    json!({
        "index": index,
        "command": &*c.command,
        "args": details(c.args.as_ref()),
        "timestamp": c.timestamp.to_iso8601(),
        "success": c.success,
        "error": c.error.as_deref(),
        "duration_ms": c.duration_ms,
    })
}

/// `history --decisions`' line: `INDEX<TAB>TIMESTAMP<TAB>WHAT<TAB>{why, alternatives}`.
pub fn decision_line(index: usize, d: &Decision) -> String {
    let rest = json!({ "why": &*d.why, "alternatives": d.alternatives.as_deref() });
    format!(
        "{index}\t{}\t{}\t{rest}",
        d.timestamp.to_iso8601(),
        field(&d.what)
    )
}

/// `history --decisions --json`'s object: `show`'s `decisions` entry and its index.
pub fn decision_json(index: usize, d: &Decision) -> Value {
    json!({
        "index": index,
        "what": &*d.what,
        "why": &*d.why,
        "alternatives": d.alternatives.as_deref(),
        "timestamp": d.timestamp.to_iso8601(),
    })
}

/// `stats`' object.
pub fn stats_json(engine: &Engine, storage: &dyn Storage) -> Result<Value> {
    let state = engine.state();
    let by_status: serde_json::Map<String, Value> = state
        .count_by_status()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    let paths = engine.paths();
    let segments = session_engine::wal::list_segments_lenient(storage, &paths.wal)?;
    let mut wal_bytes = 0u64;
    for s in &segments {
        wal_bytes += storage.read(s).map(|b| b.len() as u64).unwrap_or(0);
    }
    let snapshots = session_engine::snapshot::list_snapshots(storage, &paths.snapshots)?;
    let mut snapshot_bytes = 0u64;
    for (_, p) in &snapshots {
        snapshot_bytes += storage.read(p).map(|b| b.len() as u64).unwrap_or(0);
    }
    let report = engine.recovery_report();
    let projection_paths = ProjectionPaths::new(&paths.root);
    let marker = session_engine::projection::marker_lsn(storage, &projection_paths);
    let behind = marker.map_or(state.last_lsn > Lsn::ZERO, |m| m < state.last_lsn);
    // The ownership records: files the manifest holds as the engine's, the attic.
    let ownership = session_engine::projection::ownership(storage, &projection_paths).ok();
    let last_error = if behind {
        crate::logging::LOG_NAMES
            .iter()
            .find_map(|name| last_projection_error(storage, &projection_paths.logs.join(name)))
    } else {
        None
    };
    let mut runs_by_status = serde_json::Map::new();
    for r in state.runs.values() {
        let n = runs_by_status
            .entry(r.status.as_str().to_string())
            .or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    Ok(json!({
        "sessions": state.sessions.len(),
        "sessions_by_status": by_status,
        "runs": state.runs.len(),
        "runs_by_status": runs_by_status,
        "chains": state.chains.len(),
        "events": state.last_lsn.0,
        "last_lsn": state.last_lsn.0,
        "segments": segments.len(),
        "wal_bytes": wal_bytes,
        "snapshots": snapshots.len(),
        "snapshot_bytes": snapshot_bytes,
        "snapshot_lsn": snapshots.first().map(|(l, _)| l.0),
        "bytes": wal_bytes + snapshot_bytes,
        "torn_tail": report.torn_tail.is_some(),
        "projections": {
            "format": session_engine::projection::format::recorded(storage, &paths.root)
                .ok()
                .flatten()
                .map(|f| f.as_str()),
            "marker_lsn": marker.map(|m| m.0),
            "behind": behind,
            "last_error": last_error,
            "owned_files": ownership.as_ref().map(|o| o.owned_files),
            "manifest_damaged_lines": ownership.as_ref().map(|o| o.damaged_lines),
            "attic_folders": ownership.as_ref().map(|o| o.attic_folders),
        },
    }))
}

/// Most of the engine's log that `stats` reads, from its end.
const LOG_TAIL_BYTES: usize = 1 << 20;

/// The error of the last projection warning in the toolkit log at `path`, if its tail has
/// one: why the projection files are behind the log, as the process that failed to write
/// them logged it.
fn last_projection_error(storage: &dyn Storage, path: &Path) -> Option<String> {
    let bytes = storage.read(path).ok()?;
    if !crate::logging::is_own_log(&bytes) {
        return None;
    }
    let tail = &bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES)..];
    tail.split(|&b| b == b'\n').rev().find_map(|line| {
        let v: Value = serde_json::from_slice(line).ok()?;
        let ours = v["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("session_engine::projection"));
        let bad = matches!(v["level"].as_str(), Some("WARN" | "ERROR"));
        if ours && bad {
            v["error"].as_str().map(str::to_owned)
        } else {
            None
        }
    })
}
