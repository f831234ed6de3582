//! The protocol's `exec` and `logs` ops: their fields, and their answers.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Fields, Request, run_json, type_name};
use crate::error::{Error, Result};
use crate::manager::{DEFAULT_OUTPUT_READ, ExecRequest};
use crate::run::{Limits, RetryPolicy, RunId};

/// `exec`'s retry delay when none is given, as the command line's `--retry-delay-ms`.
const DEFAULT_RETRY_DELAY_MS: u64 = 1000;

/// A string of the line that reaches a process (program, argument, directory,
/// environment): no NUL byte, which no `exec` could pass on.
fn no_nul(field: &'static str, s: String) -> Result<String> {
    if s.contains('\0') {
        return Err(Error::invalid(field, "must not contain a NUL byte"));
    }
    Ok(s)
}

impl Fields {
    /// An array of strings (none: empty).
    fn strings(&mut self, key: &'static str) -> Result<Vec<String>> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => no_nul(key, s),
                    other => Err(Error::invalid(
                        key,
                        format!("item {i} must be a string, got {}", type_name(&other)),
                    )),
                })
                .collect(),
            Some(other) => Err(Error::invalid(
                key,
                format!("must be an array of strings, got {}", type_name(&other)),
            )),
        }
    }

    /// An object of string values, as (name, value) pairs in the line's order.
    fn env(&mut self, key: &'static str) -> Result<Vec<(String, String)>> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(Error::invalid(
                            key,
                            format!("{k:?} is no variable name (empty, or with '=' or NUL)"),
                        ));
                    }
                    match v {
                        Value::String(s) => Ok((k, no_nul(key, s)?)),
                        other => Err(Error::invalid(
                            key,
                            format!("{k} must be a string, got {}", type_name(&other)),
                        )),
                    }
                })
                .collect(),
            Some(other) => Err(Error::invalid(
                key,
                format!("must be an object of strings, got {}", type_name(&other)),
            )),
        }
    }
}

/// `exec`'s fields into a request (no output sink: the output goes to the run's log).
pub(super) fn parse_exec(f: &mut Fields) -> Result<Request> {
    let session = f.session()?;
    let program = no_nul("program", f.required_string("program")?)?;
    if program.is_empty() {
        return Err(Error::invalid("program", "must not be empty"));
    }
    let args = f.strings("args")?;
    let cwd = f
        .string("cwd")?
        .map(|c| no_nul("cwd", c))
        .transpose()?
        .map(std::path::PathBuf::from);
    let env = f.env("env")?;
    let max_memory_bytes = f
        .u64("max_memory_mb")?
        .map(|mb| {
            mb.checked_mul(1 << 20)
                .ok_or_else(|| Error::invalid("max_memory_mb", format!("{mb} MiB is too large")))
        })
        .transpose()?;
    let limits = Limits {
        timeout_ms: f.u64("timeout_ms")?,
        max_memory_bytes,
        max_cpu_secs: f.u64("max_cpu_secs")?,
        max_output_bytes: f.u64("max_output_bytes")?,
        grace_ms: f.u64("grace_ms")?,
    };
    limits.validate()?;
    let max_retries = match f.u64("retries")? {
        None => 0,
        Some(n) => u32::try_from(n).map_err(|_| Error::invalid("retries", "is too large"))?,
    };
    let retry = RetryPolicy {
        max_retries,
        retry_delay_ms: f.u64("retry_delay_ms")?.unwrap_or(DEFAULT_RETRY_DELAY_MS),
        safe_to_repeat: f.bool("safe_to_repeat")?.unwrap_or(false),
    };
    Ok(Request::Exec(Box::new(ExecRequest {
        session: session.to_string(),
        program,
        args,
        cwd,
        env,
        limits,
        retry,
        on_output: None,
        cgroup: f.bool("cgroup")?.unwrap_or(true),
    })))
}

/// `logs`'s fields.
pub(super) fn parse_logs(f: &mut Fields) -> Result<Request> {
    let run = f
        .run_id("run")?
        .ok_or_else(|| Error::invalid("run", "missing for op \"logs\""))?;
    Ok(Request::Logs {
        run,
        offset: f.u64("offset")?.unwrap_or(0),
        limit: f.u64("limit")?.unwrap_or(DEFAULT_OUTPUT_READ),
    })
}

/// `exec`'s answer, once the run has ended: `{"ok":true,"run":{...}}` as `runs` gives it.
pub(super) fn answer_exec(manager: &crate::SessionManager, req: &ExecRequest) -> Result<Value> {
    let run = manager.exec(req.clone())?.wait()?;
    Ok(json!({"ok": true, "run": run_json(&run)}))
}

/// `logs`'s answer: the byte range, UTF-8 text or (when the bytes are not UTF-8, a
/// range that cuts a character included) base64, as the HTTP service's run output.
pub(super) fn answer_logs(
    manager: &crate::SessionManager,
    run: RunId,
    offset: u64,
    limit: u64,
) -> Result<Value> {
    let out = manager.run_output(run, offset, limit)?;
    let next = out.next_offset();
    let (encoding, text) = match String::from_utf8(out.bytes) {
        Ok(t) => ("utf-8", t),
        Err(e) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
        ),
    };
    Ok(json!({
        "ok": true,
        "run": run.0,
        "offset": offset,
        "length": next - offset,
        "next_offset": next,
        "total_bytes": out.total_bytes,
        "complete": out.complete,
        "encoding": encoding,
        "output": text,
    }))
}
