//! Supervised runs (issue 17) over HTTP: a session's runs (by status), one run, its
//! output by byte range, cancel, and start.
//!
//! Starting one is `SessionManager::exec`: a program and its arguments, never a shell;
//! it is served only when the server is bound to a loopback address ([`Exec`]), since
//! whoever may call it runs programs as the server's user. Its working directory passes
//! the checks of `navigate` (canonical, an existing directory, not a restricted system
//! path, readable); it defaults to the session's working directory. Output is read from
//! `runs/<id>.log` in the data directory (never through a link, regular files only).

use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use session_engine::run::{ExitKind, Limits, Run, RunId, RunStatus};
use session_engine::{Error, ExecRequest, RunFilter, SessionId, supervisor};

use crate::AppState;
use crate::adapter::call;
use crate::api::{ApiError, ApiJson, ok, ok_with};
use crate::sessions::{ApiQuery, session_id};
use crate::workspace::{usable_dir, working_directory};

/// Whether `POST .../runs` is served: only on a loopback address.
#[derive(Clone, Copy, Debug)]
pub struct Exec {
    /// Starting runs is allowed.
    pub allowed: bool,
}

/// Default and largest `length` of an output read.
pub const DEFAULT_READ: u64 = 64 << 10;
/// Largest `length` of an output read.
pub const MAX_READ: u64 = 1 << 20;
/// Longest a cancel waits for the run's end before answering 202.
pub const MAX_CANCEL_WAIT: Duration = Duration::from_secs(20);

/// This module's routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    const S: &str = "/api/claude/sessions/{id}/runs";
    Router::new()
        .route(S, get(list).post(start))
        .route(&format!("{S}/{{run}}"), get(one))
        .route(&format!("{S}/{{run}}/output"), get(output))
        .route(&format!("{S}/{{run}}/cancel"), post(cancel))
}

/// One run as JSON (the command line's `runs --json` fields, and its times).
pub fn run_json(r: &Run) -> Value {
    json!({
        "id": r.id.0,
        "session": r.session.as_str(),
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "program": r.spec.program,
        "args": r.spec.args,
        "cwd": r.spec.cwd,
        "requested_at": r.requested_at,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
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
        "error": r.error,
    })
}

fn not_found(kind: &'static str, id: impl ToString) -> ApiError {
    ApiError::from(Error::NotFound {
        kind,
        id: id.to_string(),
    })
}

fn existing_session(s: &AppState, id: &str) -> Result<SessionId, ApiError> {
    let id = session_id(id)?;
    if s.manager.state().session(&id).is_none() {
        return Err(not_found("session", &id));
    }
    Ok(id)
}

/// Run `run` of session `id`, or 404 (a run of another session too).
fn session_run(
    s: &AppState,
    id: &str,
    run: &str,
) -> Result<(SessionId, std::sync::Arc<Run>), ApiError> {
    let id = session_id(id)?;
    let run: RunId = run.parse()?;
    match s.manager.run(run) {
        Ok(r) if r.session == id => Ok((id, r)),
        _ => Err(not_found("run", format!("{run} of session {id}"))),
    }
}

/// `GET .../runs` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}/runs", tag = "runs",
    summary = "A session's supervised runs (`?status=`: those in that state)",
    params(("id" = String, Path, description = "A session id"), ListQuery),
    responses(crate::openapi::Answered))]
pub async fn list(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let id = existing_session(&s, &id)?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()?;
    let runs = s.manager.runs(&RunFilter {
        session: Some(id),
        status,
    });
    let runs: Vec<Value> = runs.iter().map(|r| run_json(r)).collect();
    Ok(ok(json!({ "total": runs.len(), "runs": runs })))
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}/runs/{run}", tag = "runs",
    summary = "One run of a session",
    params(("id" = String, Path, description = "A session id"), ("run" = String, Path, description = "A run id")),
    responses(crate::openapi::Answered))]
pub async fn one(
    State(s): State<AppState>,
    UrlPath((id, run)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, r) = session_run(&s, &id, &run)?;
    Ok(ok(json!({ "run": run_json(&r) })))
}

/// `GET .../output` query: a byte range of the run's log.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    offset: Option<u64>,
    length: Option<u64>,
}

/// What a read of the log found.
enum Read {
    Bytes { total: u64, bytes: Vec<u8> },
    PastEnd { total: u64 },
}

/// Reads `length` bytes at `offset` of run `id`'s log in `root`; a log not written yet is
/// empty. Refuses a `runs` folder or a log that is a link or not a regular file.
fn read_log(root: &Path, id: RunId, offset: u64, length: u64) -> io::Result<Read> {
    let dir = root.join(supervisor::RUNS_DIR);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(io::Error::other("the runs folder is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Read::Bytes {
                total: 0,
                bytes: Vec::new(),
            });
        }
        Err(e) => return Err(e),
    }
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(supervisor::log_path(root, id))
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Read::Bytes {
                total: 0,
                bytes: Vec::new(),
            });
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("the run log is not a regular file"));
    }
    let total = meta.len();
    if offset > total {
        return Ok(Read::PastEnd { total });
    }
    let want = length.min(total - offset) as usize;
    let mut bytes = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match f.read_at(&mut bytes[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(got);
    Ok(Read::Bytes { total, bytes })
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}/runs/{run}/output", tag = "runs",
    summary = "A byte range of a run's output (`offset`, `length` up to 1 MiB, default 64 KiB)",
    description = "The output is text when it is UTF-8 (`encoding` = `utf-8`), else base64. \
        An `offset` past the end is a 416 in the envelope.",
    params(("id" = String, Path, description = "A session id"), ("run" = String, Path, description = "A run id"), OutputQuery),
    responses(crate::openapi::Answered))]
pub async fn output(
    State(s): State<AppState>,
    UrlPath((id, run)): UrlPath<(String, String)>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> Result<Response, ApiError> {
    let (_, r) = session_run(&s, &id, &run)?;
    let offset = q.offset.unwrap_or(0);
    let length = q.length.unwrap_or(DEFAULT_READ);
    if length == 0 || length > MAX_READ {
        return Err(ApiError::bad_request(format!(
            "length must be 1 to {MAX_READ}"
        )));
    }
    // The status before the read: a run final then has its whole log written.
    let finished = r.status.is_final();
    let root = s.manager.data_dir().to_owned();
    let run = r.id;
    let read = tokio::task::spawn_blocking(move || read_log(&root, run, offset, length))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "a run log could not be read");
            ApiError::internal()
        })?;
    let (total, bytes) = match read {
        Read::Bytes { total, bytes } => (total, bytes),
        Read::PastEnd { total } => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("offset {offset} is past the end of the output ({total} bytes)"),
            ));
        }
    };
    let next = offset + bytes.len() as u64;
    let (encoding, text) = match String::from_utf8(bytes) {
        Ok(t) => ("utf-8", t),
        Err(e) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
        ),
    };
    Ok(ok(json!({
        "run": run.0,
        "offset": offset,
        "length": next - offset,
        "next_offset": next,
        "total_bytes": total,
        "complete": finished && next == total,
        "encoding": encoding,
        "output": text,
    })))
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/runs/{run}/cancel", tag = "runs",
    summary = "Cancels a run: 200 once it ended, 202 if it is still ending",
    params(("id" = String, Path, description = "A session id"), ("run" = String, Path, description = "A run id")),
    responses(crate::openapi::Cancelled))]
pub async fn cancel(
    State(s): State<AppState>,
    UrlPath((id, run)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, r) = session_run(&s, &id, &run)?;
    if r.status.is_final() {
        return Err(ApiError::from(Error::InvalidState {
            session: format!("run {}", r.id),
            op: "cancel",
            reason: format!("it is {}", r.status.as_str()),
        }));
    }
    let run = r.id;
    let root = s.manager.data_dir().to_owned();
    tokio::task::spawn_blocking(move || supervisor::request_cancel(&root, run))
        .await
        .map_err(|_| ApiError::internal())??;
    let wait = (Duration::from_millis(r.spec.limits.grace_ms()) + Duration::from_secs(5))
        .min(MAX_CANCEL_WAIT);
    let until = Instant::now() + wait;
    loop {
        let now = s.manager.run(run)?;
        if now.status.is_final() {
            return Ok(ok(json!({ "run": run_json(&now) })));
        }
        if Instant::now() >= until {
            return Ok(ok_with(
                StatusCode::ACCEPTED,
                json!({ "run": run_json(&now), "cancel_requested": true }),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST .../runs` body: a program and its arguments (no shell), and limits.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    program: String,
    args: Option<Vec<String>>,
    cwd: Option<String>,
    timeout_ms: Option<u64>,
    max_output_bytes: Option<u64>,
    max_memory_bytes: Option<u64>,
    max_cpu_secs: Option<u64>,
    grace_ms: Option<u64>,
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/runs", tag = "runs",
    summary = "Starts a run: a program and its arguments, never a shell (loopback only)",
    description = "Served only when the server is bound to a loopback address (403 otherwise). \
        `cwd` passes `navigate`'s checks and defaults to the session's working directory.",
    params(("id" = String, Path, description = "A session id")),
    request_body = StartBody,
    responses(crate::openapi::Started))]
pub async fn start(
    State(s): State<AppState>,
    Extension(exec): Extension<Exec>,
    UrlPath(id): UrlPath<String>,
    ApiJson(b): ApiJson<StartBody>,
) -> Result<Response, ApiError> {
    if !exec.allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "runs are started over HTTP only when the server is bound to a loopback address",
        ));
    }
    let id = existing_session(&s, &id)?;
    let cwd = match b.cwd {
        Some(c) => c,
        None => s
            .manager
            .state()
            .session(&id)
            .and_then(|x| working_directory(x))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "the session has no working directory: give cwd, or navigate it first",
                )
            })?,
    };
    let cwd = match usable_dir(&s, &cwd).await? {
        Ok(c) => c,
        Err(refused) => return Ok(refused),
    };
    let req = ExecRequest {
        session: id.to_string(),
        program: b.program,
        args: b.args.unwrap_or_default(),
        cwd: Some(cwd.into()),
        env: Vec::new(),
        limits: Limits {
            timeout_ms: b.timeout_ms,
            max_memory_bytes: b.max_memory_bytes,
            max_cpu_secs: b.max_cpu_secs,
            max_output_bytes: b.max_output_bytes,
            grace_ms: b.grace_ms,
        },
        retry: Default::default(),
        on_output: None,
        cgroup: true,
    };
    let run = call(&s.manager, move |m| {
        // The handle is dropped: the run stays supervised to its end.
        let h = m.exec(req).map_err(|e| match e {
            // The session was checked: what is missing is the program.
            Error::NotFound { kind, id } => Error::InvalidInput {
                field: "program",
                reason: format!("no {kind} {id}"),
            },
            e => e,
        })?;
        m.run(h.id())
    })
    .await?;
    s.metrics.commits.inc();
    Ok(ok_with(
        StatusCode::ACCEPTED,
        json!({ "run": run_json(&run) }),
    ))
}
