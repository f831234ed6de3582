//! Supervised runs (issue 17) over HTTP: a session's runs (by status), one run, its
//! output by byte range, cancel, and start.
//!
//! Starting one is `SessionManager::exec`: a program and its arguments, never a shell;
//! it is served only when the server is bound to a loopback address ([`Exec`]), since
//! whoever may call it runs programs as the server's user. Its working directory passes
//! the checks of `navigate` (canonical, an existing directory, not a restricted system
//! path, readable); it defaults to the session's working directory. Output is read by
//! `SessionManager::run_output` (`runs/<id>.log`, never through a link, regular files
//! only) and a cancel is `SessionManager::cancel_runs`, as the command line and the
//! protocol's ops do; a run is the protocol's `run_json` with its times added.

use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use session_engine::run::{Limits, Run, RunId, RunStatus};
use session_engine::{CancelTarget, Error, ExecRequest, RunFilter, SessionId};

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

/// Default `length` of an output read.
pub const DEFAULT_READ: u64 = session_engine::manager::DEFAULT_OUTPUT_READ;
/// Largest `length` of an output read.
pub const MAX_READ: u64 = session_engine::manager::MAX_OUTPUT_READ;
/// How long a cancel waits, after the run's grace period, for the run's end before
/// answering 202.
pub const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// This module's routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    const S: &str = "/api/claude/sessions/{id}/runs";
    Router::new()
        .route(S, get(list).post(start))
        .route(&format!("{S}/{{run}}"), get(one))
        .route(&format!("{S}/{{run}}/output"), get(output))
        .route(&format!("{S}/{{run}}/cancel"), post(cancel))
}

/// One run as JSON: the protocol's and the command line's `runs --json` object
/// (`session_engine::protocol::run_json`), and its times, which only HTTP gives:
/// `requested_at`, `started_at`, `ended_at` (microseconds since the epoch, or null).
pub fn run_json(r: &Run) -> Value {
    let mut v = session_engine::protocol::run_json(r);
    if let Value::Object(m) = &mut v {
        m.insert("requested_at".into(), json!(r.requested_at.micros()));
        m.insert("started_at".into(), json!(r.started_at.map(|t| t.micros())));
        m.insert("ended_at".into(), json!(r.ended_at.map(|t| t.micros())));
    }
    v
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
    let run = r.id;
    let m = std::sync::Arc::clone(&s.manager);
    let out = tokio::task::spawn_blocking(move || m.run_output(run, offset, length))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| match e {
            // The one refusal left once the length is checked: an offset past the end.
            Error::InvalidInput {
                field: "offset",
                reason,
            } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("offset {reason}"),
            ),
            e => ApiError::from(e),
        })?;
    let next = out.next_offset();
    let (encoding, text) = match String::from_utf8(out.bytes) {
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
        "total_bytes": out.total_bytes,
        "complete": out.complete,
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
    let run = r.id;
    // Leaves the cancel request wherever the run is supervised, then waits for its end
    // for its grace period and CANCEL_WAIT more (a run already final is a 409).
    let now = call(&s.manager, move |m| {
        m.cancel_runs(CancelTarget::Run(run), CANCEL_WAIT)?;
        m.run(run)
    })
    .await?;
    if now.status.is_final() {
        Ok(ok(json!({ "run": run_json(&now) })))
    } else {
        Ok(ok_with(
            StatusCode::ACCEPTED,
            json!({ "run": run_json(&now), "cancel_requested": true }),
        ))
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
