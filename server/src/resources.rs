//! A session's activities, metadata, checkpoints, decisions and command runs; agents'
//! chains; analytics, system status and health.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use session_engine::{
    ClaudeSession, CommandRun, ListFilter, Lsn, SessionId, SessionManager, Status,
};

use crate::AppState;
use crate::adapter::call;
use crate::api::{ApiError, ApiJson, error_response, ok, ok_with};
use crate::sessions::{ApiQuery, optional_body, session_id, write};

/// Paging of a session's logs.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// One page of one kind of a session's history, read through the library's history
/// reader (`SessionManager::history`), on the blocking pool (a history read from the log
/// blocks). The session is looked up before the page is checked, so an unknown session
/// is a 404 whatever the paging.
async fn history_page<T, F>(s: &AppState, id: &str, p: Page, kind: F) -> Result<Response, ApiError>
where
    T: serde::Serialize + session_engine::history::Item + Send + Sync + 'static,
    F: for<'h> FnOnce(&'h session_engine::History) -> session_engine::history::Entries<'h, T>
        + Send
        + 'static,
{
    let id = session_id(id)?;
    let page = call(&s.manager, move |m| {
        let history = m.history(id.as_str())?;
        Ok(page(kind(&history), &p))
    })
    .await??;
    Ok(ok(page))
}

fn page<T: serde::Serialize + session_engine::history::Item>(
    items: session_engine::history::Entries<'_, T>,
    p: &Page,
) -> Result<Value, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > crate::sessions::MAX_PAGE {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let total = items.len();
    let offset = p.offset.unwrap_or(0);
    let items = items
        .page(offset, limit)
        .map(|e| e.map(|e| e.value))
        .collect::<session_engine::Result<Vec<_>>>()?;
    Ok(json!({ "items": items, "total": total, "offset": offset, "limit": limit }))
}

/// A write to session `id` (checked already): If-Match, the per-session lock and the
/// idempotency of [`write`], then `f` with the manager and the session's handle.
async fn session_write<F>(
    s: &AppState,
    id: SessionId,
    headers: &HeaderMap,
    status: StatusCode,
    f: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(&SessionManager, ClaudeSession) -> session_engine::Result<(Value, Option<Lsn>)>
        + Send
        + 'static,
{
    let sid = id.clone();
    write(s, &id, headers, status, move |m| {
        f(m, m.get_session(sid.as_str())?)
    })
    .await
}

fn snapshot(s: &AppState, id: &str) -> Result<std::sync::Arc<session_engine::Session>, ApiError> {
    Ok(s.manager.get_session(session_id(id)?.as_str())?.state()?)
}

/// `POST .../activities` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityBody {
    action: String,
    details: Option<Value>,
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/activities", tag = "activities", summary = "Records an activity",
    params(("id" = String, Path, description = "A session id")),
    request_body = ActivityBody,
    responses(crate::openapi::Created))]
pub async fn add_activity(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<ActivityBody>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    session_write(&s, id, &headers, StatusCode::CREATED, move |_, session| {
        let lsn = session.record_activity(&b.action, b.details)?;
        Ok((json!({ "lsn": lsn.0 }), Some(lsn)))
    })
    .await
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}/activities", tag = "activities", summary = "A session's activities, paged",
    params(("id" = String, Path, description = "A session id"), Page),
    responses(crate::openapi::Answered))]
pub async fn activities(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    history_page(&s, &id, p, |h| h.activities()).await
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}/metadata", tag = "metadata", summary = "A session's metadata",
    params(("id" = String, Path, description = "A session id")),
    responses(crate::openapi::Answered))]
pub async fn metadata(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let snap = snapshot(&s, &id)?;
    let map: serde_json::Map<String, Value> = snap
        .body
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.to_value()))
        .collect();
    Ok(ok(map))
}

/// `PUT .../metadata/{key}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetaBody {
    value: Value,
}

#[utoipa::path(put, path = "/api/claude/sessions/{id}/metadata/{key}", tag = "metadata", summary = "Sets a metadata key",
    params(("id" = String, Path, description = "A session id"), ("key" = String, Path, description = "A metadata key")),
    request_body = MetaBody,
    responses(crate::openapi::Answered))]
pub async fn set_metadata(
    State(s): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<MetaBody>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    session_write(&s, id, &headers, StatusCode::OK, move |_, session| {
        let lsn = session.set_metadata(&key, b.value)?;
        Ok((json!({ "lsn": lsn.0, "key": key }), Some(lsn)))
    })
    .await
}

#[utoipa::path(delete, path = "/api/claude/sessions/{id}/metadata/{key}", tag = "metadata", summary = "Removes a metadata key",
    params(("id" = String, Path, description = "A session id"), ("key" = String, Path, description = "A metadata key")),
    responses(crate::openapi::Answered))]
pub async fn remove_metadata(
    State(s): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    session_write(&s, id, &headers, StatusCode::OK, move |_, session| {
        if session.get_metadata(&key)?.is_none() {
            return Err(session_engine::Error::NotFound {
                kind: "metadata key",
                id: key,
            });
        }
        let lsn = session.remove_metadata(&key)?;
        Ok((json!({ "lsn": lsn.0, "key": key }), Some(lsn)))
    })
    .await
}

/// `POST .../checkpoints` body.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointBody {
    label: Option<String>,
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/checkpoints", tag = "checkpoints", summary = "Saves a checkpoint (the body is optional)",
    params(("id" = String, Path, description = "A session id")),
    request_body = CheckpointBody,
    responses(crate::openapi::Created))]
pub async fn save_checkpoint(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let b: CheckpointBody = optional_body(&body)?;
    session_write(&s, id, &headers, StatusCode::CREATED, move |m, session| {
        let index = session.save_checkpoint(b.label.as_deref())?;
        Ok((json!({ "index": index }), Some(m.last_lsn())))
    })
    .await
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}/checkpoints", tag = "checkpoints", summary = "A session's checkpoints",
    params(("id" = String, Path, description = "A session id")),
    responses(crate::openapi::Answered))]
pub async fn checkpoints(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let snap = snapshot(&s, &id)?;
    let list: Vec<Value> = snap
        .checkpoints
        .iter()
        .map(|c| {
            json!({
                "index": c.index,
                "label": c.label.as_deref(),
                "created_at": c.created_at,
                "status": c.body.status.as_str(),
                "activity_count": c.body.activity_count(),
            })
        })
        .collect();
    Ok(ok(list))
}

/// `POST .../restore` body.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    index: Option<u32>,
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/restore", tag = "checkpoints", summary = "Restores a checkpoint (the latest without `index`)",
    params(("id" = String, Path, description = "A session id")),
    request_body = RestoreBody,
    responses(crate::openapi::Answered))]
pub async fn restore(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let b: RestoreBody = optional_body(&body)?;
    session_write(&s, id, &headers, StatusCode::OK, move |m, session| {
        let index = session.restore_checkpoint(b.index)?;
        Ok((json!({ "index": index }), Some(m.last_lsn())))
    })
    .await
}

/// `POST .../decisions` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    what: String,
    why: String,
    alternatives: Option<String>,
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/decisions", tag = "decisions", summary = "Logs a decision",
    params(("id" = String, Path, description = "A session id")),
    request_body = DecisionBody,
    responses(crate::openapi::Created))]
pub async fn add_decision(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<DecisionBody>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    session_write(&s, id, &headers, StatusCode::CREATED, move |_, session| {
        let lsn = session.log_decision(&b.what, &b.why, b.alternatives.as_deref())?;
        Ok((json!({ "lsn": lsn.0 }), Some(lsn)))
    })
    .await
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}/decisions", tag = "decisions", summary = "A session's decisions, paged",
    params(("id" = String, Path, description = "A session id"), Page),
    responses(crate::openapi::Answered))]
pub async fn decisions(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    history_page(&s, &id, p, |h| h.decisions()).await
}

/// `POST .../commands` body: a command run the caller made.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    command: String,
    args: Option<Value>,
    success: bool,
    error: Option<String>,
    duration_ms: u64,
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/commands", tag = "commands", summary = "Records a command run",
    params(("id" = String, Path, description = "A session id")),
    request_body = CommandBody,
    responses(crate::openapi::Created))]
pub async fn add_command(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<CommandBody>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let duration = Duration::from_millis(b.duration_ms);
    let mut run = if b.success {
        CommandRun::succeeded(b.command, duration)
    } else {
        CommandRun::failed(b.command, b.error.unwrap_or_default(), duration)
    };
    if let Some(a) = b.args {
        run = run.with_args(a);
    }
    session_write(&s, id, &headers, StatusCode::CREATED, move |_, session| {
        let lsn = session.record_command(run)?;
        Ok((json!({ "lsn": lsn.0 }), Some(lsn)))
    })
    .await
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}/commands", tag = "commands", summary = "A session's command runs, paged",
    params(("id" = String, Path, description = "A session id"), Page),
    responses(crate::openapi::Answered))]
pub async fn commands(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    history_page(&s, &id, p, |h| h.commands()).await
}

#[utoipa::path(
    get,
    path = "/api/claude/chains",
    tag = "chains",
    summary = "Every agent's chain",
    responses(crate::openapi::Answered)
)]
pub async fn chains(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(json!({ "agents": s.manager.agents() })))
}

#[utoipa::path(get, path = "/api/claude/chains/{agent}", tag = "chains", summary = "An agent's chain",
    params(("agent" = String, Path, description = "An agent id")),
    responses(crate::openapi::Answered))]
pub async fn chain(
    State(s): State<AppState>,
    Path(agent): Path<String>,
) -> Result<Response, ApiError> {
    let t = s.manager.chain(&agent)?;
    Ok(ok(json!({
        "agent": t.agent_id(),
        "current": t.get_current_session(),
        "links": t.get_session_chain(),
        "summary": t.get_chain_summary(),
    })))
}

/// `POST /api/claude/chains/{agent}/links` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    session_id: String,
    prompt: String,
    response: String,
    metadata: Option<Value>,
}

#[utoipa::path(post, path = "/api/claude/chains/{agent}/links", tag = "chains", summary = "Appends a link to an agent's chain",
    params(("agent" = String, Path, description = "An agent id")),
    request_body = LinkBody,
    responses(crate::openapi::Created))]
pub async fn link_chain(
    State(s): State<AppState>,
    Path(agent): Path<String>,
    ApiJson(b): ApiJson<LinkBody>,
) -> Result<Response, ApiError> {
    let lsn = call(&s.manager, move |m| {
        m.chain(&agent)?
            .update_session(&b.session_id, &b.prompt, &b.response, b.metadata)
    })
    .await?;
    s.metrics.commits.inc();
    Ok(ok_with(StatusCode::CREATED, json!({ "lsn": lsn.0 })))
}

#[utoipa::path(delete, path = "/api/claude/chains/{agent}", tag = "chains", summary = "Resets an agent's chain",
    params(("agent" = String, Path, description = "An agent id")),
    responses(crate::openapi::Answered))]
pub async fn reset_chain(
    State(s): State<AppState>,
    Path(agent): Path<String>,
) -> Result<Response, ApiError> {
    let lsn = call(&s.manager, move |m| m.chain(&agent)?.reset()).await?;
    s.metrics.commits.inc();
    Ok(ok(json!({ "lsn": lsn.0 })))
}

#[utoipa::path(
    get,
    path = "/api/claude/analytics",
    tag = "system",
    summary = "Analytics over every session",
    responses(crate::openapi::Answered)
)]
pub async fn analytics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let all = s.manager.list_sessions(ListFilter::default());
    let mut by_status = serde_json::Map::new();
    for st in Status::ALL {
        let n = all.iter().filter(|x| x.body.status == st).count();
        by_status.insert(st.as_str().to_owned(), json!(n));
    }
    let mut by_agent: std::collections::BTreeMap<&str, usize> = Default::default();
    for x in &all {
        *by_agent
            .entry(x.agent.as_deref().unwrap_or(""))
            .or_default() += 1;
    }
    let activities: usize = all.iter().map(|x| x.body.activity_count()).sum();
    Ok(ok(json!({
        "total_sessions": all.len(),
        "by_status": by_status,
        "by_agent": by_agent,
        "total_activities": activities,
    })))
}

#[utoipa::path(
    get,
    path = "/api/claude/system-status",
    tag = "system",
    summary = "The engine's status",
    responses(crate::openapi::Answered)
)]
pub async fn system_status(State(s): State<AppState>) -> Result<Response, ApiError> {
    let m = &s.manager;
    let projections = m.projection_status().map(|p| {
        json!({
            "projected_lsn": p.projected.0,
            "behind": p.is_behind(),
            "failures": p.failures,
            "ready": p.ready,
        })
    });
    Ok(ok(json!({
        "status": if m.engine().poisoned().is_some() { "degraded" } else { "ok" },
        "last_lsn": m.last_lsn().0,
        "sessions": m.state().sessions.len(),
        "read_only": m.engine().is_read_only(),
        "projections": projections,
        "open_streams": s.metrics.open_streams.get(),
    })))
}

#[utoipa::path(
    get,
    path = "/api/system-status",
    tag = "system",
    summary = "The engine's status, at seed 002's path",
    responses(crate::openapi::Answered)
)]
pub async fn seed_system_status(state: State<AppState>) -> Result<Response, ApiError> {
    system_status(state).await
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    summary = "Health (503 after a storage failure)",
    responses(crate::openapi::Answered)
)]
pub async fn health(State(s): State<AppState>) -> Response {
    if s.manager.engine().poisoned().is_some() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the engine refuses writes after a storage failure",
        );
    }
    ok(json!({ "status": "healthy", "last_lsn": s.manager.last_lsn().0 }))
}

pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
