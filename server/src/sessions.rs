//! Seed 002's session endpoints: create, list, get (`?at=LSN`), update, terminate,
//! clone, export, import, status and metrics; and the write path every handler shares
//! (If-Match, the per-session lock, ETag).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use session_engine::{
    JsonText, ListFilter, Lsn, NewSession, Session, SessionId, SessionManager, Status,
};

use crate::AppState;
use crate::adapter::call;
use crate::api::{ApiError, ApiJson, ok, ok_with};

/// Query parameters; unknown or ill-typed ones are 400 in the envelope.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request(e.body_text()))
            }
            Err(_) => Err(ApiError::bad_request("the query string could not be read")),
        }
    }
}

/// A session id from the path: a safe file name, or 400.
pub fn session_id(id: &str) -> Result<SessionId, ApiError> {
    SessionId::new(id).map_err(ApiError::from)
}

/// `"<lsn>"`.
pub fn etag(lsn: Lsn) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", lsn.0)).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// What `If-Match` asks for: `None` (absent or `*` on an existing session) or a version.
fn if_match(headers: &HeaderMap) -> Result<Option<Lsn>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::bad_request("If-Match is not text"))?
        .trim();
    if v == "*" {
        return Ok(None);
    }
    let inner = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    inner.parse::<u64>().map(|n| Some(Lsn(n))).map_err(|_| {
        ApiError::bad_request("If-Match must be an ETag this service gave (\"<lsn>\")")
    })
}

/// Runs a write of session `id`: takes its lock, checks `If-Match` against its version,
/// commits `f` (which returns the answer's data and the LSN of the write, `None` when
/// nothing was appended) and answers with the new `ETag`.
pub async fn write<F>(
    s: &AppState,
    id: &SessionId,
    headers: &HeaderMap,
    status: StatusCode,
    f: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(&SessionManager) -> session_engine::Result<(Value, Option<Lsn>)> + Send + 'static,
{
    let expected = if_match(headers)?;
    let _lock = s.versions.lock(id.as_str()).await;
    if let Some(expected) = expected {
        let exists = s.manager.state().session(id).is_some();
        if !exists {
            return Err(ApiError::from(session_engine::Error::NotFound {
                kind: "session",
                id: id.to_string(),
            }));
        }
        let current = s.versions.version(id, s.manager.last_lsn()).await?;
        if current != expected {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "version_conflict",
                format!(
                    "the session is at version {}, not {}",
                    current.0, expected.0
                ),
            ));
        }
    }
    let started = std::time::Instant::now();
    let (data, lsn) = call(&s.manager, f).await?;
    let mut resp = ok_with(status, data);
    if lsn.is_some() {
        s.metrics.commits.inc();
        s.metrics
            .write_latency
            .observe(started.elapsed().as_secs_f64());
    }
    // The session's version after the write (the write's LSN, or an earlier one when
    // nothing was appended), from the tracker, which is exact.
    // The write is committed: without a version in time, it is answered without ETag.
    if let Ok(v) = s
        .versions
        .version_within(id, s.manager.last_lsn(), Duration::from_secs(2))
        .await
    {
        resp.headers_mut().insert(header::ETAG, etag(v));
    }
    Ok(resp)
}

/// The list view of a session.
pub fn summary(s: &Session) -> Value {
    json!({
        "id": s.id,
        "name": &*s.name,
        "agent": s.agent.as_deref(),
        "working_directory": s.working_dir.as_deref(),
        "status": s.body.status.as_str(),
        "created_at": s.created_at,
        "last_activity": s.last_activity,
        "timeout_secs": s.timeout_secs,
        "activity_count": s.body.activity_count(),
        "command_count": s.body.command_count(),
        "decision_count": s.body.decision_count(),
        "checkpoint_count": s.checkpoints.len(),
        "metadata_count": s.body.metadata.len(),
    })
}

fn to_json(meta: &Map<String, Value>) -> session_engine::Result<Vec<(String, JsonText)>> {
    meta.iter()
        .map(|(k, v)| Ok((k.clone(), JsonText::from_value(v)?)))
        .collect()
}

/// `POST /api/claude/sessions`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    id: Option<String>,
    name: Option<String>,
    agent: Option<String>,
    working_directory: Option<String>,
    description: Option<String>,
    timeout_secs: Option<u64>,
    metadata: Option<Map<String, Value>>,
}

#[utoipa::path(post, path = "/api/claude/sessions", tag = "sessions", summary = "Creates a session",
    request_body = CreateBody,
    responses(crate::openapi::Created))]
pub async fn create(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let id = b.id.as_deref().map(session_id).transpose()?;
    let mut metadata = to_json(&b.metadata.unwrap_or_default())?;
    if let Some(d) = b.description {
        metadata.push((
            "description".to_owned(),
            JsonText::from_value(&Value::String(d))?,
        ));
    }
    let new = NewSession {
        id,
        name: b.name,
        timeout_secs: b.timeout_secs.unwrap_or(3600),
        agent: b.agent,
        working_dir: b.working_directory,
        metadata,
        ..NewSession::default()
    };
    let (data, lsn) = call(&s.manager, move |m| {
        let session = m.create_session(new)?;
        let snap = session.snapshot()?;
        Ok((
            serde_json::to_value(&*snap).unwrap_or(Value::Null),
            m.last_lsn(),
        ))
    })
    .await?;
    s.metrics.commits.inc();
    let mut resp = ok_with(StatusCode::CREATED, json!({ "session": data }));
    // The create's LSN: the last LSN right after it may be a later write of another
    // session, which is never this session's version; the tracker answers exactly.
    if let Some(id) = data
        .get("id")
        .and_then(Value::as_str)
        .and_then(|i| SessionId::new(i).ok())
        && let Ok(v) = s
            .versions
            .version_within(&id, lsn, Duration::from_secs(2))
            .await
    {
        resp.headers_mut().insert(header::ETAG, etag(v));
    }
    Ok(resp)
}

/// `GET /api/claude/sessions` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    agent: Option<String>,
    name: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// Most sessions one page holds.
pub const MAX_PAGE: usize = 1000;

#[utoipa::path(
    get,
    path = "/api/claude/sessions",
    tag = "sessions",
    summary = "Lists sessions (filters: status, agent, name; pagination)",
    params(ListQuery),
    responses(crate::openapi::Answered)
)]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|st| {
            Status::parse(st).ok_or_else(|| {
                ApiError::bad_request(
                    "status must be one of active, paused, ended, archived, timed_out",
                )
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    let all = s.manager.list_sessions(ListFilter {
        status,
        active_only: false,
    });
    let matching: Vec<&Arc<Session>> = all
        .iter()
        .filter(|x| {
            q.agent
                .as_deref()
                .is_none_or(|a| x.agent.as_deref() == Some(a))
        })
        .filter(|x| q.name.as_deref().is_none_or(|n| x.name.contains(n)))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|x| summary(x))
        .collect();
    Ok(ok(json!({
        "sessions": page,
        "total": matching.len(),
        "offset": offset,
        "limit": limit,
    })))
}

/// `GET /api/claude/sessions/{id}` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AtQuery {
    at: Option<u64>,
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}", tag = "sessions", summary = "A session (`?at=LSN`: as it was then); its version as ETag",
    params(("id" = String, Path, description = "A session id"), AtQuery),
    responses(crate::openapi::Answered))]
pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AtQuery>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    if let Some(at) = q.at {
        let sid = id.clone();
        let session = call(&s.manager, move |m| m.session_at(sid.as_str(), Lsn(at))).await?;
        return match session {
            Some(session) => Ok(ok(json!({ "session": session, "at": at }))),
            None => Err(ApiError::from(session_engine::Error::NotFound {
                kind: "session",
                id: format!("{id} at LSN {at}"),
            })),
        };
    }
    let state = s.manager.state();
    let Some(session) = state.session(&id) else {
        return Err(ApiError::from(session_engine::Error::NotFound {
            kind: "session",
            id: id.to_string(),
        }));
    };
    // While the version tracker is still reading a long log (at start), the session is
    // answered without a version rather than not at all.
    let version = s
        .versions
        .version_within(&id, state.last_lsn, Duration::from_secs(1))
        .await
        .ok();
    // Its activities' details are in the log: read on the blocking pool, with the state
    // the version was taken against (damage there is an error naming its place).
    let (session, as_of) = (Arc::clone(session), state.last_lsn);
    let session = call(&s.manager, move |m| {
        m.engine().session_with_details(&session, as_of)
    })
    .await?;
    let mut resp = ok(json!({ "session": session, "version": version.map(|v| v.0) }));
    if let Some(v) = version {
        resp.headers_mut().insert(header::ETAG, etag(v));
    }
    Ok(resp)
}

/// `PUT /api/claude/sessions/{id}`: metadata changes (a `null` value removes the key),
/// then a status change. Each is its own event: a refusal stops there and leaves the
/// earlier ones committed (the answer says which).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    status: Option<String>,
    metadata: Option<Map<String, Value>>,
}

#[utoipa::path(put, path = "/api/claude/sessions/{id}", tag = "sessions", summary = "Updates metadata, then status (If-Match honoured)",
    params(("id" = String, Path, description = "A session id")),
    request_body = UpdateBody,
    responses(crate::openapi::Answered))]
pub async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<UpdateBody>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let target = b
        .status
        .as_deref()
        .map(|st| match st {
            "active" | "paused" | "ended" | "archived" => Ok(st.to_owned()),
            _ => Err(ApiError::bad_request(
                "status must be one of active, paused, ended, archived",
            )),
        })
        .transpose()?;
    let mut changes = Vec::new();
    for (k, v) in b.metadata.unwrap_or_default() {
        let v = if v.is_null() { None } else { Some(v) };
        if let Some(v) = &v {
            JsonText::from_value(v).map_err(ApiError::from)?;
        }
        changes.push((k, v));
    }
    let sid = id.clone();
    write(&s, &id, &headers, StatusCode::OK, move |m| {
        let session = m.get_session(sid.as_str())?;
        let mut last = None;
        for (k, v) in changes {
            last = Some(match v {
                Some(v) => session.set_metadata(&k, v)?,
                None => session.remove_metadata(&k)?,
            });
        }
        if let Some(t) = target {
            let current = session.status()?;
            if current.as_str() != t {
                last = Some(match t.as_str() {
                    "active" => {
                        m.resume_session(sid.as_str())?;
                        m.last_lsn()
                    }
                    "paused" => session.pause()?,
                    "ended" => session.end()?,
                    _ => session.archive()?,
                });
            }
        }
        let snap = session.state()?;
        Ok((json!({ "session": summary(&snap) }), last))
    })
    .await
}

/// `DELETE /api/claude/sessions/{id}`: ends the session (seed 002's terminate).
#[utoipa::path(delete, path = "/api/claude/sessions/{id}", tag = "sessions", summary = "Terminates a session",
    params(("id" = String, Path, description = "A session id")),
    responses(crate::openapi::Answered))]
pub async fn terminate(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let sid = id.clone();
    write(&s, &id, &headers, StatusCode::OK, move |m| {
        let session = m.get_session(sid.as_str())?;
        let lsn = session.end()?;
        Ok((json!({ "id": sid, "status": "ended" }), Some(lsn)))
    })
    .await
}

/// `POST /api/claude/sessions/{id}/clone` body.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneBody {
    new_id: Option<String>,
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/clone", tag = "sessions", summary = "Clones a session",
    params(("id" = String, Path, description = "A session id")),
    request_body = CloneBody,
    responses(crate::openapi::Created))]
pub async fn clone(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let b: CloneBody = optional_body(&body)?;
    if let Some(n) = &b.new_id {
        session_id(n)?;
    }
    let (data, lsn) = call(&s.manager, move |m| {
        let c = m.clone_session(id.as_str(), b.new_id.as_deref())?;
        Ok((summary(&*c.state()?), m.last_lsn()))
    })
    .await?;
    s.metrics.commits.inc();
    let _ = lsn;
    Ok(ok_with(StatusCode::CREATED, json!({ "session": data })))
}

/// An optional JSON body: empty is the default value.
pub fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "the body is not well-formed JSON",
            )
        } else {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                e.to_string(),
            )
        }
    })
}

/// `POST /api/claude/sessions/{id}/export`: the bundle, as `data`.
#[utoipa::path(post, path = "/api/claude/sessions/{id}/export", tag = "sessions", summary = "A session's bundle",
    params(("id" = String, Path, description = "A session id")),
    responses(crate::openapi::Answered))]
pub async fn export(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let json = call(&s.manager, move |m| m.export_bundle(id.as_str())?.to_json()).await?;
    let bundle: Value = serde_json::from_slice(&json).map_err(|_| ApiError::internal())?;
    Ok(ok(json!({ "bundle": bundle })))
}

/// `POST /api/claude/sessions/import`: the body is a bundle as `export` gives it (the
/// `bundle` object itself).
#[utoipa::path(post, path = "/api/claude/sessions/import", tag = "sessions", summary = "Imports a bundle as `export` gives it",
    request_body(content = Object, description = "A bundle"),
    responses(crate::openapi::Created))]
pub async fn import(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let data = call(&s.manager, move |m| {
        let session = m.import_bytes(&body)?;
        Ok(summary(&*session.state()?))
    })
    .await?;
    s.metrics.commits.inc();
    Ok(ok_with(StatusCode::CREATED, json!({ "session": data })))
}

/// `GET /api/claude/sessions/{id}/status`.
#[utoipa::path(get, path = "/api/claude/sessions/{id}/status", tag = "sessions", summary = "A session's status",
    params(("id" = String, Path, description = "A session id")),
    responses(crate::openapi::Answered))]
pub async fn status(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let m = &s.manager;
    let session = m.get_session(id.as_str())?;
    let snap = session.state()?;
    Ok(ok(json!({
        "id": id,
        "status": snap.body.status.as_str(),
        "is_active": snap.is_active(m.now()),
        "last_activity": snap.last_activity,
    })))
}

/// `GET /api/claude/sessions/{id}/metrics`: seed 000's statistics.
#[utoipa::path(get, path = "/api/claude/sessions/{id}/metrics", tag = "sessions", summary = "A session's statistics",
    params(("id" = String, Path, description = "A session id")),
    responses(crate::openapi::Answered))]
pub async fn statistics(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let stats = s.manager.get_session(id.as_str())?.get_statistics()?;
    Ok(ok(stats))
}
