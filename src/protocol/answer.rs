//! Writing answers: the answer line of a committed command, a run, an error, an event.

use serde_json::{Map, Value, json};

use super::{Request, claude_ops, run_ops};
use crate::command::{Committed, Outcome};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::run::{ExitKind, Run, RunStatus};
use crate::types::Lsn;

/// The answer line for an accepted command.
pub fn answer_ok(c: &Committed) -> Value {
    let mut v = json!({"ok": true, "lsn": c.lsn.0});
    if !c.appended {
        v["appended"] = Value::Bool(false);
    }
    match &c.outcome {
        Outcome::Session(id) => v["id"] = Value::String(id.to_string()),
        Outcome::Checkpoint(i) => v["index"] = json!(i),
        Outcome::Sessions(ids) => {
            v["sessions"] = json!(ids.iter().map(|i| i.as_str()).collect::<Vec<_>>())
        }
        _ => {}
    }
    v
}

/// [`answer_ok`]'s line (without its newline) appended to `out`: the same text as
/// `answer_ok(c)` serialised, written directly for the answer a bulk load gets most
/// (`{"ok":true,"lsn":N}`), without building a JSON value.
pub fn write_answer_ok(c: &Committed, out: &mut String) {
    use std::fmt::Write as _;
    match (&c.outcome, c.appended) {
        (Outcome::Done | Outcome::Chains(_) | Outcome::Run(_), true) => {
            let _ = write!(out, "{{\"ok\":true,\"lsn\":{}}}", c.lsn.0);
        }
        _ => out.push_str(&answer_ok(c).to_string()),
    }
}

/// One run as JSON: what `runs` answers (and the command line prints).
pub fn run_json(r: &Run) -> Value {
    json!({
        "id": r.id.0,
        "session": r.session.as_str(),
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "program": r.spec.program,
        "args": r.spec.args,
        "cwd": r.spec.cwd,
        "exit_code": match r.exit { Some(ExitKind::Code(c)) => json!(c), _ => Value::Null },
        "signal": match r.exit { Some(ExitKind::Signal(s)) => json!(s), _ => Value::Null },
        "ended_by": r.ended_by.map(|e| format!("{e:?}").to_lowercase()),
        "pid": r.process.as_ref().map(|p| p.pid),
        "duration_ms": r.duration_ms,
        "user_cpu_us": r.usage.user_us,
        "sys_cpu_us": r.usage.sys_us,
        "max_rss_kb": r.usage.max_rss_kb,
        "output_chunks": r.output_chunks,
        "output_kept": r.output_kept,
        "output_dropped": r.output_dropped,
        "last_output_at": r.last_output_at.map(|t| t.to_iso8601_micros()),
        "error": r.error,
    })
}

/// Answers a run op through `manager` (the `apply` loop calls it once every line before
/// it is answered): [`run_op`], an error as its answer line.
pub fn answer_run_op(manager: &crate::SessionManager, req: &Request) -> Value {
    run_op(manager, req).unwrap_or_else(|e| answer_err(&e))
}

/// Answers a run op through `manager`; an error is the op's failure (a refusal, or, as
/// `Error::is_refusal` tells, the engine's own: a step of an `exec` that could not be
/// recorded). `exec` returns only once its run has ended.
pub fn run_op(manager: &crate::SessionManager, req: &Request) -> Result<Value> {
    Ok(match req {
        Request::Command(_) => {
            return Err(Error::invalid("op", "a command is no run op"));
        }
        Request::Runs {
            run: Some(id),
            session,
            status,
        } => {
            let r = manager.run(*id)?;
            if session.as_ref().is_some_and(|s| *s != r.session)
                || status.is_some_and(|s| s != r.status)
            {
                return Err(Error::invalid(
                    "run",
                    "`run` with `id` or `status` that it does not match",
                ));
            }
            json!({"ok": true, "run": run_json(&r)})
        }
        Request::Runs {
            run: None,
            session,
            status,
        } => {
            let runs = manager.runs(&crate::RunFilter {
                session: session.clone(),
                status: *status,
            });
            json!({"ok": true, "runs": runs.iter().map(|r| run_json(r)).collect::<Vec<_>>()})
        }
        Request::Cancel { target, wait_ms } => {
            let got = manager.cancel_runs(*target, std::time::Duration::from_millis(*wait_ms))?;
            let list: Vec<Value> = got
                .iter()
                .map(|c| json!({"id": c.run.0, "status": c.status.as_str()}))
                .collect();
            let failed: Vec<String> = got
                .iter()
                .filter(|c| c.status != RunStatus::Cancelled)
                .map(|c| format!("run {} is {}", c.run, c.status.as_str()))
                .collect();
            if failed.is_empty() {
                json!({"ok": true, "cancelled": list})
            } else {
                json!({
                    "ok": false,
                    "error": format!("not cancelled: {}", failed.join("; ")),
                    "kind": "not_cancelled",
                    "cancelled": list,
                })
            }
        }
        Request::Health { stale_after_ms } => {
            let h = manager.run_health(std::time::Duration::from_millis(*stale_after_ms));
            json!({"ok": true, "health": serde_json::to_value(&h).unwrap_or(Value::Null)})
        }
        Request::Exec(req) => run_ops::answer_exec(manager, req)?,
        Request::Claude(op) => claude_ops::answer(manager, op)?,
        Request::Logs { run, offset, limit } => {
            run_ops::answer_logs(manager, *run, *offset, *limit)?
        }
        Request::ResumeRuns => {
            let resumed = manager.resume_runs()?;
            json!({"ok": true, "resumed": resumed.iter().map(|r| r.0).collect::<Vec<_>>()})
        }
    })
}

/// The answer line for a refused line or a failed command.
pub fn answer_err(e: &Error) -> Value {
    json!({"ok": false, "error": e.to_string(), "kind": e.kind()})
}

/// One event as a flat JSON object: `lsn`, `timestamp` (ISO 8601, microseconds), `type`,
/// `session_id` (when the event concerns one session), `session_ids` (when it concerns
/// several), then the event's own fields. This is `replay`'s output line.
pub fn event_json(lsn: Lsn, event: &Event) -> Value {
    let mut out = Map::new();
    out.insert("lsn".into(), json!(lsn.0));
    out.insert(
        "timestamp".into(),
        Value::String(event.at.to_iso8601_micros()),
    );
    out.insert("type".into(), Value::String(event.body.type_name().into()));
    let sessions = event.body.sessions();
    match sessions.as_slice() {
        [] => {}
        [one] => {
            out.insert("session_id".into(), Value::String(one.to_string()));
        }
        many => {
            out.insert(
                "session_ids".into(),
                json!(many.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            );
        }
    }
    // The body's serde form is `{"Variant": {fields}}` (or a bare value for one-field
    // variants); flatten the fields into the line.
    if let Ok(Value::Object(tagged)) = serde_json::to_value(&event.body)
        && let Some((_, inner)) = tagged.into_iter().next()
    {
        match inner {
            Value::Object(fields) => {
                for (k, v) in fields {
                    if k == "session" || k == "sessions" {
                        continue;
                    }
                    out.entry(k).or_insert(v);
                }
            }
            other => {
                out.insert("data".into(), other);
            }
        }
    }
    Value::Object(out)
}
