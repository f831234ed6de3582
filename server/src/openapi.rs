//! `GET /openapi.json`: the API as an OpenAPI 3.1 document, generated at compile time by
//! `utoipa` from the `#[utoipa::path]` attribute of each handler and the request types'
//! `ToSchema` / `IntoParams` derives. A handler served but not listed in [`ApiDoc`], or
//! listed but not served, fails `server/tests/openapi.rs`, which compares this document
//! with the router's routes.

use axum::Json;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::{dashboard, events, metrics, resources, runs, sessions, workspace, ws};

/// Seed 002's envelope: every answer but streams, metrics and this document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Envelope {
    /// Whether the request succeeded.
    success: bool,
    /// The answer (`null` on error).
    #[schema(value_type = Object, nullable)]
    data: Option<Value>,
    /// What went wrong (`null` on success); names no file, path or internal detail.
    error: Option<String>,
    /// On error, a short machine-readable kind (`not_found`, `conflict`, `rate_limited`...).
    error_kind: Option<String>,
    /// Seconds since the epoch.
    timestamp: f64,
}

/// The answers of a read or an update.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Answered {
    /// Done, in the envelope.
    #[response(status = 200)]
    Ok(#[to_schema] Envelope),
    /// Refused (bad input 400/413/415/422, unauthorised 401, forbidden host 403, not found
    /// 404, conflict 409, rate limited 429 with `Retry-After`), in the envelope.
    #[response(status = "4XX")]
    Refused(Envelope),
    /// Failed or unavailable (timeout, shutdown, a storage failure), in the envelope.
    #[response(status = "5XX")]
    Failed(Envelope),
}

/// The answers of a creation.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Created {
    /// Created, in the envelope.
    #[response(status = 201)]
    Created(#[to_schema] Envelope),
    /// Refused, in the envelope (see [`Answered`]).
    #[response(status = "4XX")]
    Refused(Envelope),
    /// Failed or unavailable, in the envelope.
    #[response(status = "5XX")]
    Failed(Envelope),
}

/// The answers of `POST .../runs` (a run starts in the background).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Started {
    /// The run was requested, in the envelope.
    #[response(status = 202)]
    Accepted(#[to_schema] Envelope),
    /// Refused (403 when the server is not bound to a loopback address), in the envelope.
    #[response(status = "4XX")]
    Refused(Envelope),
    /// Failed or unavailable, in the envelope.
    #[response(status = "5XX")]
    Failed(Envelope),
}

/// The answers of a run's cancel.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Cancelled {
    /// The run ended, in the envelope.
    #[response(status = 200)]
    Ended(#[to_schema] Envelope),
    /// Cancel requested, the run has not ended yet, in the envelope.
    #[response(status = 202)]
    Requested(Envelope),
    /// Refused (a finished run is 409), in the envelope.
    #[response(status = "4XX")]
    Refused(Envelope),
    /// Failed or unavailable, in the envelope.
    #[response(status = "5XX")]
    Failed(Envelope),
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "session-engine",
        description = "Seed 002's session API over the session engine: durable answers, \
            optimistic concurrency (If-Match), Idempotency-Key, resumable event streams. \
            A bearer token is required when the server is bound to a non-loopback address \
            (or given one)."
    ),
    modifiers(&Bearer),
    security((), ("bearer" = [])),
    paths(
        crate::agents::list,
        crate::agents::activate,
        crate::agents::deactivate,
        crate::agents::restart,
        sessions::create,
        sessions::list,
        sessions::import,
        sessions::get,
        sessions::update,
        sessions::terminate,
        sessions::clone,
        sessions::export,
        sessions::status,
        sessions::statistics,
        resources::add_activity,
        resources::activities,
        resources::metadata,
        resources::set_metadata,
        resources::remove_metadata,
        resources::save_checkpoint,
        resources::checkpoints,
        resources::restore,
        resources::add_decision,
        resources::decisions,
        resources::add_command,
        resources::commands,
        resources::chains,
        resources::chain,
        resources::reset_chain,
        resources::link_chain,
        resources::analytics,
        resources::system_status,
        resources::seed_system_status,
        resources::health,
        workspace::navigate,
        workspace::validate_path,
        workspace::validate_paths,
        workspace::agent_types,
        runs::list,
        runs::start,
        runs::one,
        runs::output,
        runs::cancel,
        events::stream,
        ws::sessions,
        dashboard::page,
        dashboard::script,
        metrics::render,
        document,
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "system", summary = "This document",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
