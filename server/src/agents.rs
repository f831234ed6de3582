//! Seed 002's agents per session: list a session's agents (all twelve types, with their
//! status), activate, deactivate, restart (each an event; see `session_engine::state`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use session_engine::event::AgentAction;
use session_engine::state::{AGENT_TYPES, agent_type};

use crate::AppState;
use crate::api::{ApiError, ok};
use crate::sessions::{optional_body, session_id, write};

/// This module's routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    const P: &str = "/api/claude/sessions/{id}/agents";
    Router::new()
        .route(P, get(list))
        .route(&format!("{P}/{{name}}/activate"), post(activate))
        .route(&format!("{P}/{{name}}/deactivate"), post(deactivate))
        .route(&format!("{P}/{{name}}/restart"), post(restart))
}

/// The body of an activation or a restart (optional).
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBody {
    /// The agent's configuration (seed 002's `max_memory_mb`, `timeout_seconds`, ...).
    config: Option<Value>,
}

#[utoipa::path(get, path = "/api/claude/sessions/{id}/agents", tag = "agents", summary = "A session's agents: every agent type with its status",
    params(("id" = String, Path, description = "A session id")),
    responses(crate::openapi::Answered))]
pub async fn list(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let state = s.manager.state();
    if state.session(&id).is_none() {
        return Err(ApiError::from(session_engine::Error::NotFound {
            kind: "session",
            id: id.to_string(),
        }));
    }
    let agents = state.agents_of(&id);
    let list: Vec<Value> = AGENT_TYPES
        .iter()
        .map(|(t, caps)| {
            let a = agents.and_then(|a| a.get(*t));
            json!({
                "agent_type": t,
                "capabilities": caps,
                "status": if a.is_some_and(|a| a.active) { "active" } else { "inactive" },
                "activations": a.map_or(0, |a| a.activations),
                "restarts": a.map_or(0, |a| a.restarts),
                "last_changed": a.map(|a| a.changed_at),
                "config": a.and_then(|a| a.config.as_ref()).map(|c| c.to_value()),
            })
        })
        .collect();
    let active = list.iter().filter(|a| a["status"] == "active").count();
    Ok(ok(json!({
        "session_id": id,
        "agents": list,
        "count": list.len(),
        "active": active,
    })))
}

async fn change(
    s: AppState,
    id: String,
    name: String,
    headers: HeaderMap,
    action: AgentAction,
    body: &[u8],
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let b: AgentBody = optional_body(body)?;
    // serde also reads a struct from an array (`[{...}]`): only an object is a body.
    if body
        .iter()
        .find(|c| !c.is_ascii_whitespace())
        .is_some_and(|c| *c != b'{')
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    if action == AgentAction::Deactivated && b.config.is_some() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "a deactivation takes no configuration",
        ));
    }
    let Some(kind) = agent_type(&name) else {
        return Err(ApiError::from(session_engine::Error::NotFound {
            kind: "agent type",
            id: name,
        }));
    };
    let sid = id.clone();
    write(&s, &id, &headers, StatusCode::OK, move |m| {
        let session = m.get_session(sid.as_str())?;
        let lsn = match action {
            AgentAction::Activated => session.activate_agent(kind, b.config.as_ref())?,
            AgentAction::Deactivated => session.deactivate_agent(kind)?,
            AgentAction::Restarted => session.restart_agent(kind, b.config.as_ref())?,
        };
        Ok((
            json!({ "lsn": lsn.0, "agent_type": kind, "action": action.name() }),
            Some(lsn),
        ))
    })
    .await
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/agents/{name}/activate", tag = "agents", summary = "Activates an agent type in a session",
    params(("id" = String, Path, description = "A session id"), ("name" = String, Path, description = "One of seed 002's agent types (any case)")),
    request_body = AgentBody,
    responses(crate::openapi::Answered))]
pub async fn activate(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change(s, id, name, headers, AgentAction::Activated, &body).await
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/agents/{name}/deactivate", tag = "agents", summary = "Deactivates an active agent",
    params(("id" = String, Path, description = "A session id"), ("name" = String, Path, description = "One of seed 002's agent types (any case)")),
    responses(crate::openapi::Answered))]
pub async fn deactivate(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change(s, id, name, headers, AgentAction::Deactivated, &body).await
}

#[utoipa::path(post, path = "/api/claude/sessions/{id}/agents/{name}/restart", tag = "agents", summary = "Restarts an active agent",
    params(("id" = String, Path, description = "A session id"), ("name" = String, Path, description = "One of seed 002's agent types (any case)")),
    request_body = AgentBody,
    responses(crate::openapi::Answered))]
pub async fn restart(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change(s, id, name, headers, AgentAction::Restarted, &body).await
}
