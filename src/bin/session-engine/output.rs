//! Standard output (with a closed pipe treated as a normal end) and the JSON shapes the
//! commands print.

use std::io::{self, BufWriter, Stdout, Write};

use anyhow::Result;
use serde_json::{Value, json};
use session_engine::storage::Storage;
use session_engine::{Chain, Engine, Session, Timestamp};

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

fn activity_json(a: &session_engine::state::Activity) -> Value {
    json!({
        "action": &*a.action,
        "timestamp": a.timestamp.to_iso8601(),
        "details": a.details.as_ref().map(|d| d.to_value()),
    })
}

/// `show`'s object: seed 001's session file fields, then the engine's extras.
pub fn session_json(s: &Session, now: Timestamp) -> Value {
    let metadata: serde_json::Map<String, Value> = s
        .body
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.to_value()))
        .collect();
    json!({
        "session_id": s.id.as_str(),
        "created_at": s.created_at.to_iso8601(),
        "last_activity": s.last_activity.to_iso8601(),
        "status": s.status().as_str(),
        "timeout_seconds": s.timeout_secs,
        "metadata": metadata,
        "activity_log": s.body.activity_log.iter().map(activity_json).collect::<Vec<_>>(),
        "name": &*s.name,
        "agent": s.agent.as_deref(),
        "working_dir": s.working_dir.as_deref(),
        "is_active": s.is_active(now),
        "config": serde_json::to_value(&s.config).unwrap_or(Value::Null),
        "checkpoints": s.checkpoints.iter().map(|c| json!({
            "index": c.index,
            "label": c.label.as_deref(),
            "created_at": c.created_at.to_iso8601(),
            "status": c.body.status.as_str(),
            "activity_count": c.body.activity_log.len(),
        })).collect::<Vec<_>>(),
        "command_history": s.body.commands.iter().map(|c| json!({
            "command": &*c.command,
            "args": c.args.as_ref().map(|a| a.to_value()),
            "timestamp": c.timestamp.to_iso8601(),
            "success": c.success,
            "error": c.error.as_deref(),
            "duration_ms": c.duration_ms,
        })).collect::<Vec<_>>(),
        "decisions": s.body.decisions.iter().map(|d| json!({
            "what": &*d.what,
            "why": &*d.why,
            "alternatives": d.alternatives.as_deref(),
            "timestamp": d.timestamp.to_iso8601(),
        })).collect::<Vec<_>>(),
        "statistics": serde_json::to_value(s.statistics(now)).unwrap_or(Value::Null),
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
        "activity_count": s.body.activity_log.len(),
    })
}

/// `chain`'s object: seed 003's persisted tracker file.
pub fn chain_json(c: &Chain) -> Value {
    json!({
        "agent_id": c.agent_id.as_str(),
        "current_session_id": c.current_session_id.as_deref(),
        "interaction_count": c.interaction_count,
        "sessions": c.sessions.iter().map(|l| json!({
            "session_id": &*l.session_id,
            "created_at": l.created_at.to_iso8601(),
            "interaction_count": l.interaction_count,
            "last_prompt": &*l.last_prompt,
            "last_response": &*l.last_response,
            "metadata": l.metadata.as_ref().map(|m| m.to_value()),
        })).collect::<Vec<_>>(),
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
    Ok(json!({
        "sessions": state.sessions.len(),
        "sessions_by_status": by_status,
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
    }))
}
