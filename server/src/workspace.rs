//! Seed 002's `navigate`, `validate-path`, `validate-paths` and `agent-types`.
//!
//! A session's working directory is recorded by `SessionCreated` and no event changes
//! it, so `navigate` records the new one as the session's metadata key
//! `working_directory` (a `MetadataSet` event, a plain command like any other), and,
//! with `update_git_state`, the repository found there as the key `git` (a second
//! `MetadataSet`). The session's `working_dir` field keeps its value at creation;
//! [`working_directory`] is the current one (the key, else that field).

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use session_engine::Session;

use crate::AppState;
use crate::api::{ApiError, ApiJson, ok, timestamp};
use crate::paths::{self, Report, Require};
use crate::sessions::{session_id, write};

/// The metadata key `navigate` records the working directory under.
pub const WORKING_DIRECTORY_KEY: &str = "working_directory";
/// The metadata key `navigate` records the git state under.
pub const GIT_KEY: &str = "git";
/// Most paths one `validate-paths` request may hold.
pub const MAX_PATHS: usize = 100;

/// Seed 002's twelve agent types, in its order, with the capabilities it lists (the
/// library's list, which the agents of a session are checked against).
pub use session_engine::state::AGENT_TYPES;

/// This module's routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    const P: &str = "/api/claude";
    Router::new()
        .route(&format!("{P}/sessions/{{id}}/navigate"), post(navigate))
        .route(&format!("{P}/validate-path"), post(validate_path))
        .route(&format!("{P}/validate-paths"), post(validate_paths))
        .route(&format!("{P}/agent-types"), get(agent_types))
}

/// A session's current working directory: `navigate`'s metadata key, else the one it
/// was created with.
pub fn working_directory(s: &Session) -> Option<String> {
    s.body
        .metadata
        .get(WORKING_DIRECTORY_KEY)
        .and_then(|v| serde_json::from_str::<Value>(v.as_str()).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .or_else(|| s.working_dir.as_deref().map(str::to_owned))
}

/// The data directory, canonical when it resolves.
fn data_dir(s: &AppState) -> PathBuf {
    let d = s.manager.data_dir();
    std::fs::canonicalize(d).unwrap_or_else(|_| d.to_owned())
}

/// Runs the checks of `paths` on the blocking pool (they stat the file system).
pub async fn check_all(
    s: &AppState,
    paths: Vec<String>,
    require: Require,
) -> Result<Vec<Report>, ApiError> {
    let data = data_dir(s);
    tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|p| paths::check(p, &data, require))
            .collect()
    })
    .await
    .map_err(|_| ApiError::internal())
}

/// A refused path: 400, the report as `data`.
pub fn refused(report: Report) -> Response {
    let reasons: Vec<String> = report
        .errors
        .iter()
        .map(|p| format!("{} ({})", p.message, p.code))
        .collect();
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "success": false,
            "data": { "validation": report },
            "error": format!("invalid path: {}", reasons.join("; ")),
            "error_kind": "invalid_path",
            "timestamp": timestamp(),
        })),
    )
        .into_response()
}

/// `POST /api/claude/sessions/{id}/navigate` body (seed 002's fields).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NavigateBody {
    path: String,
    /// Readable, searchable and writable are required (default); `false` makes missing
    /// permissions warnings.
    validate_permissions: Option<bool>,
    /// Records the repository found there as the key `git` (default).
    update_git_state: Option<bool>,
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/navigate", tag = "workspace",
    summary = "Changes a session's working directory (metadata `working_directory`, and `git`)",
    description = "The path must be absolute, exist, be a directory outside the restricted \
        system paths and (unless `validate_permissions` is false) be readable, searchable and \
        writable. A refused path is a 400 `invalid_path` whose `data.validation` is the report. \
        If-Match and Idempotency-Key are honoured.",
    params(("id" = String, Path, description = "A session id")),
    request_body = NavigateBody,
    responses(crate::openapi::Answered))]
pub async fn navigate(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<NavigateBody>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    paths::parse(&b.path)?;
    if s.manager.state().session(&id).is_none() {
        return Err(ApiError::from(session_engine::Error::NotFound {
            kind: "session",
            id: id.to_string(),
        }));
    }
    let strict = b.validate_permissions.unwrap_or(true);
    let require = Require {
        read: strict,
        write: strict,
    };
    let Some(report) = check_all(&s, vec![b.path], require).await?.pop() else {
        return Err(ApiError::internal());
    };
    let canonical = match (&report.canonical_path, report.valid) {
        (Some(c), true) => c.clone(),
        _ => return Ok(refused(report)),
    };
    let git = b
        .update_git_state
        .unwrap_or(true)
        .then(|| serde_json::to_value(&report.git).unwrap_or(Value::Null));
    let sid = id.clone();
    write(&s, &id, &headers, StatusCode::OK, move |m| {
        let session = m.get_session(sid.as_str())?;
        let previous = working_directory(&*session.state()?);
        let mut last = session.set_metadata(WORKING_DIRECTORY_KEY, Value::String(canonical))?;
        if let Some(g) = git {
            last = session.set_metadata(GIT_KEY, g)?;
        }
        Ok((
            json!({
                "id": sid,
                "working_directory": report.canonical_path,
                "previous_working_directory": previous,
                "validation": report,
            }),
            Some(last),
        ))
    })
    .await
}

/// `POST /api/claude/validate-path` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidatePathBody {
    path: String,
    /// Writable is required (otherwise missing write permission is a warning).
    require_writable: Option<bool>,
}

fn require(writable: Option<bool>) -> Require {
    Require {
        read: true,
        write: writable.unwrap_or(false),
    }
}

#[utoipa::path(post, path = "/api/claude/validate-path", tag = "workspace",
    summary = "Checks a path (existence, kind, permissions, restricted paths, git, disk)",
    request_body = ValidatePathBody,
    responses(crate::openapi::Answered))]
pub async fn validate_path(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<ValidatePathBody>,
) -> Result<Response, ApiError> {
    paths::parse(&b.path)?;
    let report = check_all(&s, vec![b.path], require(b.require_writable)).await?;
    Ok(ok(report.into_iter().next()))
}

/// `POST /api/claude/validate-paths` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidatePathsBody {
    paths: Vec<String>,
    require_writable: Option<bool>,
}

#[utoipa::path(post, path = "/api/claude/validate-paths", tag = "workspace",
    summary = "Checks up to 100 paths",
    request_body = ValidatePathsBody,
    responses(crate::openapi::Answered))]
pub async fn validate_paths(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<ValidatePathsBody>,
) -> Result<Response, ApiError> {
    if b.paths.len() > MAX_PATHS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_PATHS} paths per request"
        )));
    }
    for (i, p) in b.paths.iter().enumerate() {
        paths::parse(p).map_err(|e| ApiError::bad_request(format!("paths[{i}]: {}", e.message)))?;
    }
    let reports = check_all(&s, b.paths, require(b.require_writable)).await?;
    let valid = reports.iter().filter(|r| r.valid).count();
    Ok(ok(json!({
        "results": reports,
        "total": reports.len(),
        "valid_count": valid,
        "invalid_count": reports.len() - valid,
    })))
}

#[utoipa::path(
    get,
    path = "/api/claude/agent-types",
    tag = "workspace",
    summary = "Seed 002's agent types and their capabilities",
    responses(crate::openapi::Answered)
)]
pub async fn agent_types() -> Response {
    let types: Vec<Value> = AGENT_TYPES
        .iter()
        .map(|(name, caps)| json!({ "type": name, "capabilities": caps }))
        .collect();
    ok(json!({ "agent_types": types, "count": types.len() }))
}

/// Whether `p` is usable as a run's working directory (the same checks as `navigate`'s,
/// without requiring it writable); its canonical form.
pub async fn usable_dir(s: &AppState, p: &str) -> Result<Result<String, Response>, ApiError> {
    paths::parse(p)?;
    let req = Require {
        read: true,
        write: false,
    };
    let Some(report) = check_all(s, vec![p.to_owned()], req).await?.pop() else {
        return Err(ApiError::internal());
    };
    Ok(match (&report.canonical_path, report.valid) {
        (Some(c), true) => Ok(c.clone()),
        _ => Err(refused(report)),
    })
}
