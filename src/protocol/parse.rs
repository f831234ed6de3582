//! Reading a line: the op names, `parse_line`, `parse_request` and each op's command.

use serde_json::Value;

use super::fields::json_value;
use super::{Fields, MAX_LINE_LEN, Request, claude_ops, fast, run_ops};
use crate::command::{Command, NewSession};
use crate::error::{Error, Result};
use crate::manager::CancelTarget;
use crate::run::RunStatus;
use crate::state::{LogLevel, SessionConfig};
use crate::types::{MAX_JSON_DEPTH, SessionId, json_input_error, parse_json_input};

pub(super) const OPS: [&str; 23] = [
    "create",
    "activity",
    "meta",
    "unmeta",
    "pause",
    "resume",
    "end",
    "archive",
    "checkpoint",
    "restore",
    "decision",
    "command",
    "chain_link",
    "chain_reset",
    "cleanup",
    "clone",
    "expire",
    "runs",
    "cancel",
    "health",
    "exec",
    "logs",
    "resume_runs",
];

/// The ops that are no engine command: the supervised runs' (see [`Request`]).
pub(super) const RUN_OPS: [&str; 6] = ["runs", "cancel", "health", "exec", "logs", "resume_runs"];

pub(super) fn parse_config(v: Value) -> Result<SessionConfig> {
    let Value::Object(map) = v else {
        return Err(Error::invalid("config", "must be an object"));
    };
    let mut c = SessionConfig::default();
    for (k, v) in map {
        let num = |v: &Value| {
            v.as_f64()
                .ok_or_else(|| Error::invalid("config", format!("{k} must be a number")))
        };
        match k.as_str() {
            "timeout" => c.timeout = num(&v)?,
            "retry_delay" => c.retry_delay = num(&v)?,
            "heartbeat_interval" => c.heartbeat_interval = num(&v)?,
            "auto_save_interval" => c.auto_save_interval = num(&v)?,
            "max_retries" => {
                c.max_retries = v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| Error::invalid("config", "max_retries must be an integer"))?
            }
            "enable_logging" => {
                c.enable_logging = v
                    .as_bool()
                    .ok_or_else(|| Error::invalid("config", "enable_logging must be a boolean"))?
            }
            "log_level" => {
                c.log_level = v.as_str().and_then(LogLevel::parse).ok_or_else(|| {
                    Error::invalid("config", "log_level must be DEBUG, INFO, WARNING or ERROR")
                })?
            }
            other => {
                return Err(Error::invalid(
                    "config",
                    format!("unknown setting {other:?}"),
                ));
            }
        }
    }
    Ok(c)
}

/// Parses one input line into a command. Never panics; every problem is an
/// [`Error::InvalidInput`] (or the id validation error) naming the field. The run ops
/// (`runs`, `cancel`, `health`, `exec`, `logs`, `resume_runs`) are no command: refused
/// here, read by [`parse_request`].
pub fn parse_line(line: &str) -> Result<Command> {
    match fast::activity(line) {
        Some(cmd) => Ok(cmd),
        None => parse_line_general(line),
    }
}

/// [`parse_line`] without its fast path.
pub(super) fn parse_line_general(line: &str) -> Result<Command> {
    let f = parse_object(line)?;
    if RUN_OPS.contains(&f.op) || claude_ops::OPS.contains(&f.op) {
        return Err(Error::invalid(
            "op",
            format!(
                "{:?} is an operation on runs or transcripts, not an engine command",
                f.op
            ),
        ));
    }
    command_of(f)
}

/// Parses one input line into a [`Request`]: a command (as [`parse_line`]) or a run op.
/// Never panics; problems are typed errors naming the field.
pub fn parse_request(line: &str) -> Result<Request> {
    match fast::activity(line) {
        Some(cmd) => Ok(Request::Command(cmd)),
        None => parse_request_general(line),
    }
}

/// [`parse_request`] without its fast path.
pub(super) fn parse_request_general(line: &str) -> Result<Request> {
    let mut f = parse_object(line)?;
    let req = match f.op {
        "runs" => Request::Runs {
            run: f.run_id("run")?,
            session: f.optional_session()?,
            status: f
                .string("status")?
                .map(|s| s.parse::<RunStatus>())
                .transpose()?,
        },
        "cancel" => {
            let run = f.run_id("run")?;
            let all = f.bool("all")?.unwrap_or(false);
            let target = match (run, all) {
                (Some(r), false) => CancelTarget::Run(r),
                (None, true) => CancelTarget::All,
                _ => {
                    return Err(Error::invalid(
                        "run",
                        "give `run` (a run id) or `all: true`, not both",
                    ));
                }
            };
            Request::Cancel {
                target,
                wait_ms: f.seconds_ms("wait", 3600.0)?.unwrap_or(10_000),
            }
        }
        "health" => Request::Health {
            stale_after_ms: f
                .seconds_ms("stale_after", 31_536_000.0)?
                .unwrap_or(crate::run::DEFAULT_STALE_AFTER_MS),
        },
        "exec" => run_ops::parse_exec(&mut f)?,
        "logs" => run_ops::parse_logs(&mut f)?,
        "resume_runs" => Request::ResumeRuns,
        op if claude_ops::OPS.contains(&op) => Request::Claude(claude_ops::parse(&mut f)?),
        _ => return command_of(f).map(Request::Command),
    };
    f.finish()?;
    Ok(req)
}

/// The line as a JSON object with a known `op`.
pub(super) fn parse_object(line: &str) -> Result<Fields> {
    if line.len() > MAX_LINE_LEN {
        return Err(Error::invalid(
            "line",
            format!("{} bytes is over the limit of {MAX_LINE_LEN}", line.len()),
        ));
    }
    // The line's own objects (the line, `meta`, `config`) take two levels above the values
    // they hold; each value is then held to MAX_JSON_DEPTH by `JsonText::from_value`.
    let value =
        parse_json_input(line, MAX_JSON_DEPTH + 2).map_err(|e| match json_input_error(e) {
            Error::InvalidInput { reason, .. } => Error::invalid("line", reason),
            other => other,
        })?;
    let Value::Object(mut map) = value else {
        return Err(Error::invalid("line", "must be a JSON object"));
    };
    let op = match map.remove("op") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(Error::invalid("op", "must be a string")),
        None => return Err(Error::invalid("op", "missing")),
    };
    let Some(op) = OPS
        .iter()
        .chain(&claude_ops::OPS)
        .copied()
        .find(|o| *o == op)
    else {
        return Err(Error::invalid(
            "op",
            format!("unknown op {op:?}; expected one of {}", OPS.join(", ")),
        ));
    };
    Ok(Fields { op, map })
}

pub(super) fn command_of(mut f: Fields) -> Result<Command> {
    let op = f.op;
    let cmd = match op {
        "create" => {
            let id = f.optional_session()?;
            let mut metadata = Vec::new();
            match f.take("meta").or_else(|| f.take("metadata")) {
                None => {}
                Some(Value::Object(m)) => {
                    for (k, v) in m {
                        metadata.push((k, json_value("meta", &v)?));
                    }
                }
                Some(_) => return Err(Error::invalid("meta", "must be an object")),
            }
            let config = f
                .take("config")
                .map(parse_config)
                .transpose()?
                .unwrap_or_default();
            Command::CreateSession(Box::new(NewSession {
                id,
                name: f.string("name")?,
                timeout_secs: f.u64("timeout")?.unwrap_or(3600),
                agent: f.string("agent")?,
                working_dir: f.string("working_dir")?,
                config,
                metadata,
            }))
        }
        "activity" => Command::RecordActivity {
            session: f.session()?,
            action: f.required_string("action")?,
            details: f.json("details")?,
        },
        "meta" => {
            let session = f.session()?;
            let key = f.required_string("key")?;
            let value = f
                .take("value")
                .ok_or_else(|| Error::invalid("value", "missing for op \"meta\""))?;
            Command::SetMetadata {
                session,
                key,
                value: json_value("value", &value)?,
            }
        }
        "unmeta" => Command::RemoveMetadata {
            session: f.session()?,
            key: f.required_string("key")?,
        },
        "pause" => Command::Pause(f.session()?),
        "resume" => Command::Resume(f.session()?),
        "end" => Command::End(f.session()?),
        "archive" => Command::Archive(f.session()?),
        "checkpoint" => Command::SaveCheckpoint {
            session: f.session()?,
            label: f.string("label")?,
        },
        "restore" => {
            let session = f.session()?;
            let index = f
                .u64("index")?
                .map(|i| u32::try_from(i).map_err(|_| Error::invalid("index", "is too large")))
                .transpose()?;
            Command::RestoreCheckpoint { session, index }
        }
        "decision" => Command::LogDecision {
            session: f.session()?,
            what: f.required_string("what")?,
            why: f.required_string("why")?,
            alternatives: f.string("alternatives")?,
        },
        "command" => Command::RecordCommand {
            session: f.session()?,
            command: f.required_string("command")?,
            args: f.json("args")?,
            success: f
                .bool("success")?
                .ok_or_else(|| Error::invalid("success", "missing for op \"command\""))?,
            error: f.string("error")?,
            duration_ms: f.u64("duration_ms")?.unwrap_or(0),
        },
        "chain_link" => {
            let agent = f.agent()?;
            let external_id = match (f.string("external_id")?, f.string("link")?) {
                (Some(a), _) | (None, Some(a)) => a,
                (None, None) => {
                    return Err(Error::invalid(
                        "external_id",
                        "missing (`external_id` or `link`) for op \"chain_link\"",
                    ));
                }
            };
            Command::LinkChain {
                agent,
                external_id,
                prompt: f.string("prompt")?.unwrap_or_default(),
                response: f.string("response")?.unwrap_or_default(),
                metadata: f.json("metadata")?,
            }
        }
        "chain_reset" => Command::ResetChain(f.agent()?),
        "cleanup" => {
            let days = f
                .u64("max_age_days")?
                .ok_or_else(|| Error::invalid("max_age_days", "missing for op \"cleanup\""))?;
            Command::CleanupOldSessions {
                max_age_days: u32::try_from(days)
                    .map_err(|_| Error::invalid("max_age_days", "is too large"))?,
            }
        }
        "clone" => Command::Clone {
            source: f.session()?,
            new_id: f
                .string("new_id")?
                .map(|s| SessionId::new(&s))
                .transpose()?,
        },
        "expire" => Command::ExpireIdle,
        _ => return Err(Error::invalid("op", format!("unknown op {op:?}"))),
    };
    f.finish()?;
    Ok(cmd)
}
