//! The JSON-lines command protocol: one command per line in, one answer per line out.
//!
//! This is what `session-engine apply` reads and writes, and what a script or a service
//! sends. It lives in the library so that every front end parses the same way and so the
//! parser can be fuzzed.
//!
//! # Input lines
//!
//! Each line is one JSON object with an `op` field. Session ids may be given as `id` or
//! `session_id`.
//!
//! | `op`         | fields                                                                   |
//! |--------------|--------------------------------------------------------------------------|
//! | `create`     | `id`?, `name`?, `timeout`? (seconds, default 3600), `agent`?, `working_dir`?, `meta`? (object), `config`? (object of `SessionConfig` fields) |
//! | `activity`   | `id`, `action`, `details`? (any JSON)                                    |
//! | `meta`       | `id`, `key`, `value` (any JSON; sets the key)                            |
//! | `unmeta`     | `id`, `key` (removes the key)                                            |
//! | `pause`, `resume`, `end`, `archive` | `id`                                              |
//! | `checkpoint` | `id`, `label`?                                                           |
//! | `restore`    | `id`, `index`? (default: the last checkpoint)                            |
//! | `decision`   | `id`, `what`, `why`, `alternatives`?                                     |
//! | `command`    | `id`, `command`, `args`? (any JSON), `success` (bool), `error`?, `duration_ms`? |
//! | `chain_link` | `agent`, `external_id` (or `link`), `prompt`?, `response`?, `metadata`?  |
//! | `chain_reset`| `agent`                                                                  |
//! | `cleanup`    | `max_age_days`                                                           |
//! | `clone`      | `id` (the source), `new_id`?                                             |
//! | `expire`     | (none): record now the expiry of every session idle past its timeout     |
//! | `runs`       | `run`? (a run id: that run only), `id`? (a session: its runs), `status`? |
//! | `cancel`     | `run` (a run id) or `all: true`; `wait`? (seconds after the grace period, default 10) |
//! | `health`     | `stale_after`? (seconds, default 300)                                    |
//! | `exec`       | `id`, `program`, `args`? (array of strings), `cwd`?, `env`? (object of strings), `timeout_ms`?, `retries`?, `retry_delay_ms`? (default 1000), `max_memory_mb`?, `max_cpu_secs`?, `max_output_bytes`?, `grace_ms`?, `safe_to_repeat`?, `cgroup`? (default true) |
//! | `logs`       | `run`, `offset`? (bytes, default 0), `limit`? (bytes, default 64 KiB, at most 1 MiB) |
//!
//! The last five are the supervised runs' operations ([`parse_request`] reads them;
//! [`parse_line`] refuses them, as they are no engine command): `runs`, `health` and
//! `logs` read, `cancel` asks the run's supervisor (see `SessionManager::cancel_runs`) and
//! waits, `exec` runs a program (no shell: `program` is a path or a name looked up in
//! `PATH`, `args` its arguments) as `SessionManager::exec` does and answers once the run
//! has ended; its output goes to the run's log (read it with `logs`), not to the answers.
//! The limits are checked as the library checks them (each from 1 to its maximum).
//! Unknown fields are refused, so a typo does not silently do something else, and so is a
//! key given twice in any object of the line, the line's own or one inside a JSON value
//! (`details`, `value`, `args`, `meta`, `metadata`, `config`): which one was meant is not
//! known, and a JSON value would silently keep only the last. JSON values obey the engine's
//! limits (at most [`MAX_JSON_DEPTH`] levels of arrays and objects, `MAX_JSON_LEN` bytes).
//! A refused line is answered like any bad line (`"kind":"invalid_input"`) and the next
//! line is read.
//!
//! # Answers
//!
//! ```text
//! {"ok":true,"lsn":17}                     the command is durable at LSN 17
//! {"ok":true,"lsn":18,"id":"0190a4..."}    create and clone also give the session id
//! {"ok":true,"lsn":19,"index":0}           checkpoint and restore give the index
//! {"ok":true,"lsn":20,"archived":3}        cleanup gives how many sessions it archived
//! {"ok":false,"error":"session not found: x","kind":"not_found"}
//! {"ok":true,"runs":[{"id":1,"status":"completed",...}]}   runs ("run":{...} for one)
//! {"ok":true,"cancelled":[{"id":2,"status":"cancelled"}]}  cancel, every run cancelled
//! {"ok":false,"error":"not cancelled: ...","kind":"not_cancelled","cancelled":[...]}
//! {"ok":true,"health":{"totalSessions":3,"healthySessions":1,...}}
//! {"ok":true,"run":{"id":3,"status":"failed","exit_code":1,...}}  exec, once the run ended
//! {"ok":true,"run":3,"offset":0,"length":6,"next_offset":6,"total_bytes":6,
//!  "complete":true,"encoding":"utf-8","output":"hello\n"}    logs ("base64" if not UTF-8)
//! ```
//!
//! `lsn` is the LSN of the command's record; a command with nothing to do (a cleanup that
//! archived nothing) answers with the last LSN at the time and `"appended":false`.

mod claude_ops;
mod fast;
mod run_ops;

pub use claude_ops::{ClaudeOp, hits_json};

use serde_json::{Map, Value, json};

use crate::command::{Command, Committed, NewSession, Outcome};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::manager::CancelTarget;
use crate::run::{ExitKind, Run, RunId, RunStatus};
use crate::state::{LogLevel, SessionConfig};
use crate::types::{
    AgentId, JsonText, Lsn, MAX_JSON_DEPTH, SessionId, json_input_error, parse_json_input,
};

/// Longest accepted input line, in bytes.
pub const MAX_LINE_LEN: usize = 4 << 20;

struct Fields {
    op: &'static str,
    map: Map<String, Value>,
}

impl Fields {
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::invalid(
                field_name(key),
                format!("must be a string, got {}", type_name(&other)),
            )),
        }
    }

    fn required_string(&mut self, key: &'static str) -> Result<String> {
        self.string(key)?
            .ok_or_else(|| Error::invalid(field_name(key), format!("missing for op {:?}", self.op)))
    }

    fn u64(&mut self, key: &'static str) -> Result<Option<u64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                Error::invalid(
                    field_name(key),
                    format!("{n} is not a non-negative integer"),
                )
            }),
            Some(other) => Err(Error::invalid(
                field_name(key),
                format!("must be a number, got {}", type_name(&other)),
            )),
        }
    }

    /// A number of seconds: finite, from 0 to `max`, as milliseconds.
    fn seconds_ms(&mut self, key: &'static str, max: f64) -> Result<Option<u64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(s) if s.is_finite() && (0.0..=max).contains(&s) => {
                    Ok(Some((s * 1000.0).round() as u64))
                }
                _ => Err(Error::invalid(
                    field_name(key),
                    format!("{n} is not a number of seconds from 0 to {max}"),
                )),
            },
            Some(other) => Err(Error::invalid(
                field_name(key),
                format!("must be a number, got {}", type_name(&other)),
            )),
        }
    }

    fn run_id(&mut self, key: &'static str) -> Result<Option<RunId>> {
        match self.u64(key)? {
            None => Ok(None),
            Some(0) => Err(Error::invalid(field_name(key), "run ids start at 1")),
            Some(n) => Ok(Some(RunId(n))),
        }
    }

    fn bool(&mut self, key: &'static str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(Error::invalid(
                field_name(key),
                format!("must be true or false, got {}", type_name(&other)),
            )),
        }
    }

    fn json(&mut self, key: &'static str) -> Result<Option<JsonText>> {
        self.take(key).map(|v| json_value(key, &v)).transpose()
    }

    fn session(&mut self) -> Result<SessionId> {
        let a = self.string("id")?;
        let b = self.string("session_id")?;
        match (a, b) {
            (Some(a), Some(b)) if a != b => Err(Error::invalid(
                "session id",
                "`id` and `session_id` disagree",
            )),
            (Some(s), _) | (None, Some(s)) => SessionId::new(&s),
            (None, None) => Err(Error::invalid(
                "session id",
                format!("missing (`id` or `session_id`) for op {:?}", self.op),
            )),
        }
    }

    fn agent(&mut self) -> Result<AgentId> {
        AgentId::new(&self.required_string("agent")?)
    }

    fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(Error::invalid(
                "field",
                format!("unknown field {k:?} for op {:?}", self.op),
            )),
        }
    }
}

/// A JSON value of the line as `JsonText`, an error naming `field`.
fn json_value(field: &'static str, v: &Value) -> Result<JsonText> {
    JsonText::from_value(v).map_err(|e| match e {
        Error::InvalidInput { reason, .. } => Error::invalid(field, reason),
        other => other,
    })
}

fn field_name(key: &'static str) -> &'static str {
    key
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const OPS: [&str; 22] = [
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
];

/// The ops that are no engine command: the supervised runs' (see [`Request`]).
const RUN_OPS: [&str; 5] = ["runs", "cancel", "health", "exec", "logs"];

/// One input line: an engine command, or one of the supervised runs' operations, which a
/// front end answers through its `SessionManager` once every line before it is answered.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request {
    /// Every op but the run ops.
    Command(Command),
    /// `runs`: one run, or the runs of a session and/or a status, in id order.
    Runs {
        /// Only this run.
        run: Option<RunId>,
        /// Only this session's runs.
        session: Option<SessionId>,
        /// Only runs with this status.
        status: Option<RunStatus>,
    },
    /// `cancel`: see `SessionManager::cancel_runs`.
    Cancel {
        /// One run or all unfinished ones.
        target: CancelTarget,
        /// Milliseconds to wait after the longest grace period.
        wait_ms: u64,
    },
    /// `health`: seed 004's metrics (see `SessionManager::run_health`).
    Health {
        /// A running run silent for longer than this is stale, milliseconds.
        stale_after_ms: u64,
    },
    /// `claude_import`, `claude_show`, `claude_search`: Claude Code transcripts (see
    /// `protocol/claude_ops.rs`).
    Claude(ClaudeOp),
    /// `exec`: runs a program as `SessionManager::exec` does; answered once it has ended.
    Exec(Box<crate::ExecRequest>),
    /// `logs`: a byte range of a run's log (see `SessionManager::run_output`).
    Logs {
        /// The run.
        run: RunId,
        /// Where the range starts, bytes.
        offset: u64,
        /// How many bytes at most.
        limit: u64,
    },
}

fn parse_config(v: Value) -> Result<SessionConfig> {
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
/// (`runs`, `cancel`, `health`, `exec`, `logs`) are no command: refused here, read by [`parse_request`].
pub fn parse_line(line: &str) -> Result<Command> {
    match fast::activity(line) {
        Some(cmd) => Ok(cmd),
        None => parse_line_general(line),
    }
}

/// [`parse_line`] without its fast path.
fn parse_line_general(line: &str) -> Result<Command> {
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
fn parse_request_general(line: &str) -> Result<Request> {
    let mut f = parse_object(line)?;
    let req = match f.op {
        "runs" => Request::Runs {
            run: f.run_id("run")?,
            session: match (f.string("id")?, f.string("session_id")?) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Error::invalid(
                        "session id",
                        "`id` and `session_id` disagree",
                    ));
                }
                (Some(s), _) | (None, Some(s)) => Some(SessionId::new(&s)?),
                (None, None) => None,
            },
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
        op if claude_ops::OPS.contains(&op) => Request::Claude(claude_ops::parse(&mut f)?),
        _ => return command_of(f).map(Request::Command),
    };
    f.finish()?;
    Ok(req)
}

/// The line as a JSON object with a known `op`.
fn parse_object(line: &str) -> Result<Fields> {
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

fn command_of(mut f: Fields) -> Result<Command> {
    let op = f.op;
    let cmd = match op {
        "create" => {
            let id = match (f.string("id")?, f.string("session_id")?) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Error::invalid(
                        "session id",
                        "`id` and `session_id` disagree",
                    ));
                }
                (Some(s), _) | (None, Some(s)) => Some(SessionId::new(&s)?),
                (None, None) => None,
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_answer_is_answer_ok_serialised() {
        let id = SessionId::new("s1").unwrap();
        let outcomes = [
            Outcome::Done,
            Outcome::Session(id.clone()),
            Outcome::Checkpoint(3),
            Outcome::Sessions(vec![id.clone(), SessionId::new("s2").unwrap()]),
            Outcome::Chains(vec![AgentId::new("a").unwrap()]),
            Outcome::Run(RunId(4)),
        ];
        for outcome in outcomes {
            for appended in [true, false] {
                for lsn in [0, 1, 17, u64::MAX] {
                    let c = Committed {
                        lsn: Lsn(lsn),
                        appended,
                        outcome: outcome.clone(),
                    };
                    let mut text = String::from("before ");
                    write_answer_ok(&c, &mut text);
                    assert_eq!(text, format!("before {}", answer_ok(&c)), "{c:?}");
                }
            }
        }
    }

    #[test]
    fn every_op_parses() {
        for line in [
            r#"{"op":"create"}"#,
            r#"{"op":"create","id":"s1","name":"n","timeout":10,"meta":{"a":1},"config":{"max_retries":5}}"#,
            r#"{"op":"activity","id":"s1","action":"x","details":{"k":[1]}}"#,
            r#"{"op":"activity","session_id":"s1","action":"x"}"#,
            r#"{"op":"meta","id":"s1","key":"k","value":"v"}"#,
            r#"{"op":"unmeta","id":"s1","key":"k"}"#,
            r#"{"op":"pause","id":"s1"}"#,
            r#"{"op":"resume","id":"s1"}"#,
            r#"{"op":"end","id":"s1"}"#,
            r#"{"op":"archive","id":"s1"}"#,
            r#"{"op":"checkpoint","id":"s1","label":"l"}"#,
            r#"{"op":"restore","id":"s1"}"#,
            r#"{"op":"restore","id":"s1","index":0}"#,
            r#"{"op":"decision","id":"s1","what":"w","why":"y","alternatives":"a"}"#,
            r#"{"op":"command","id":"s1","command":"ls","success":false,"error":"e","duration_ms":5}"#,
            r#"{"op":"chain_link","agent":"a","external_id":"e","prompt":"p","response":"r"}"#,
            r#"{"op":"chain_link","agent":"a","link":"e"}"#,
            r#"{"op":"chain_reset","agent":"a"}"#,
            r#"{"op":"cleanup","max_age_days":30}"#,
            r#"{"op":"clone","id":"s1","new_id":"s2"}"#,
        ] {
            parse_line(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn run_ops_parse_as_requests_and_are_no_commands() {
        use crate::manager::CancelTarget;
        let r = parse_request(r#"{"op":"runs","id":"s1","status":"running"}"#).unwrap();
        assert!(
            matches!(r, Request::Runs { run: None, session: Some(ref s), status: Some(RunStatus::Running) } if s.as_str() == "s1"),
            "{r:?}"
        );
        let r = parse_request(r#"{"op":"runs","run":3}"#).unwrap();
        assert!(
            matches!(
                r,
                Request::Runs {
                    run: Some(RunId(3)),
                    ..
                }
            ),
            "{r:?}"
        );
        let r = parse_request(r#"{"op":"cancel","all":true,"wait":0.5}"#).unwrap();
        assert!(
            matches!(
                r,
                Request::Cancel {
                    target: CancelTarget::All,
                    wait_ms: 500
                }
            ),
            "{r:?}"
        );
        let r = parse_request(r#"{"op":"cancel","run":2}"#).unwrap();
        assert!(
            matches!(
                r,
                Request::Cancel {
                    target: CancelTarget::Run(RunId(2)),
                    wait_ms: 10_000
                }
            ),
            "{r:?}"
        );
        let r = parse_request(r#"{"op":"health"}"#).unwrap();
        assert!(
            matches!(
                r,
                Request::Health {
                    stale_after_ms: 300_000
                }
            ),
            "{r:?}"
        );
        let r = parse_request(r#"{"op":"health","stale_after":1.5}"#).unwrap();
        assert!(
            matches!(
                r,
                Request::Health {
                    stale_after_ms: 1500
                }
            ),
            "{r:?}"
        );
        assert!(matches!(
            parse_request(r#"{"op":"pause","id":"s1"}"#).unwrap(),
            Request::Command(Command::Pause(_))
        ));
        for (line, needle) in [
            (r#"{"op":"cancel"}"#, "not both"),
            (r#"{"op":"cancel","run":1,"all":true}"#, "not both"),
            (r#"{"op":"cancel","run":0}"#, "start at 1"),
            (r#"{"op":"cancel","all":true,"wait":-1}"#, "seconds"),
            (r#"{"op":"health","stale_after":"x"}"#, "must be a number"),
            (r#"{"op":"runs","status":"dreaming"}"#, "no run status"),
            (r#"{"op":"runs","extra":1}"#, "unknown field"),
        ] {
            let e = parse_request(line).unwrap_err();
            assert!(e.to_string().contains(needle), "{line}: {e}");
        }
        for line in [
            r#"{"op":"runs"}"#,
            r#"{"op":"health"}"#,
            r#"{"op":"logs","run":1}"#,
            r#"{"op":"exec","id":"s1","program":"true"}"#,
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(
                e.to_string().contains("not an engine command"),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        for (line, needle) in [
            ("", "malformed JSON"),
            ("[]", "must be a JSON object"),
            (r#"{"id":"s1"}"#, "op: missing"),
            (r#"{"op":"fly"}"#, "unknown op"),
            (
                r#"{"op":"activity","id":"../x","action":"a"}"#,
                "session id",
            ),
            (r#"{"op":"activity","id":"s1"}"#, "action: missing"),
            (
                r#"{"op":"activity","id":"s1","action":7}"#,
                "must be a string",
            ),
            (
                r#"{"op":"pause","id":"s1","extra":1}"#,
                "unknown field \"extra\"",
            ),
            (r#"{"op":"restore","id":"s1","index":-1}"#, "non-negative"),
            (r#"{"op":"meta","id":"s1","key":"k"}"#, "value: missing"),
            (
                r#"{"op":"create","config":{"timeout":"x"}}"#,
                "timeout must be a number",
            ),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { .. }), "{line}: {e}");
            assert!(e.to_string().contains(needle), "{line}: {e}");
        }
    }

    /// Issue 12, defect 11: a duplicate key was accepted, the last value winning.
    #[test]
    fn duplicate_keys_are_refused_at_every_level_of_a_line() {
        for line in [
            r#"{"op":"pause","id":"s1","id":"s2"}"#,
            r#"{"op":"pause","op":"pause","id":"s1"}"#,
            r#"{"op":"pause","id":"s1","session_id":"s1","id":"s1"}"#,
            r#"{"op":"activity","id":"s1","action":"a","action":"b"}"#,
            r#"{"op":"create","meta":{"k":1,"k":2}}"#,
            r#"{"op":"create","config":{"timeout":1,"timeout":2}}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":{"k":1,"k":1}}"#,
            r#"{"op":"activity","id":"s1","action":"a","details":[{"x":{"k":1,"j":2,"k":3}}]}"#,
            r#"{"op":"meta","id":"s1","key":"k","value":{"a":null,"a":null}}"#,
            r#"{"op":"command","id":"s1","command":"c","success":true,"args":{"a":1,"a":1}}"#,
            r#"{"op":"chain_link","agent":"a","link":"e","metadata":{"m":1,"m":2}}"#,
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { .. }), "{line}: {e}");
            assert!(e.to_string().contains("duplicate key"), "{line}: {e}");
        }
        // The same keys once each are fine.
        parse_line(r#"{"op":"activity","id":"s1","action":"a","details":{"k":{"k":1}}}"#).unwrap();
    }

    fn nested_text(depth: usize) -> String {
        format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
    }

    /// Issue 12, defect 6: one nesting limit for every JSON value, refused at the input.
    #[test]
    fn json_values_nested_past_the_limit_are_refused_per_line_not_a_crash() {
        const LIMIT: usize = MAX_JSON_DEPTH;
        let lines = |d: &str| {
            [
                format!(r#"{{"op":"activity","id":"s1","action":"a","details":{d}}}"#),
                format!(r#"{{"op":"meta","id":"s1","key":"k","value":{d}}}"#),
                format!(r#"{{"op":"create","meta":{{"k":{d}}}}}"#),
                format!(r#"{{"op":"command","id":"s1","command":"c","success":true,"args":{d}}}"#),
                format!(r#"{{"op":"chain_link","agent":"a","link":"e","metadata":{d}}}"#),
            ]
        };
        for line in lines(&nested_text(LIMIT)) {
            parse_line(&line).unwrap_or_else(|e| panic!("{}: {e}", &line[..40]));
        }
        for depth in [LIMIT + 1, 126, 127, 128, 10_000, 1_000_000] {
            for line in lines(&nested_text(depth)) {
                let e = parse_line(&line).unwrap_err();
                assert!(matches!(e, Error::InvalidInput { .. }), "{depth}: {e}");
                assert!(e.to_string().contains("nested"), "{depth}: {e}");
            }
        }
    }
}
