//! Seed 002's answer envelope `{success, data, error, timestamp}`, the mapping of the
//! engine's typed errors to HTTP statuses, and the JSON body extractor whose refusals use
//! the same envelope.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use session_engine::Error;

/// Seconds since the epoch, as seed 002's `timestamp`.
pub fn timestamp() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A successful answer: `{"success": true, "data": ..., "error": null, "timestamp": ...}`.
pub fn ok(data: impl Serialize) -> Response {
    ok_with(StatusCode::OK, data)
}

/// [`ok`] with another status (201 for a creation).
pub fn ok_with(status: StatusCode, data: impl Serialize) -> Response {
    match serde_json::to_value(data) {
        Ok(data) => (
            status,
            axum::Json(json!({
                "success": true,
                "data": data,
                "error": null,
                "timestamp": timestamp(),
            })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "an answer could not be serialised");
            ApiError::internal().into_response()
        }
    }
}

/// A refused or failed request: a status and a message that names no file, path or
/// internal detail.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short machine-readable kind ("not_found", "conflict", ...).
    pub kind: &'static str,
    /// The message shown to the client.
    pub message: String,
}

impl ApiError {
    /// A refusal with `status`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 500 with a generic message (the cause goes to the log, not to the client).
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        use StatusCode as S;
        match &e {
            Error::NotFound { .. } => ApiError::new(S::NOT_FOUND, "not_found", e.to_string()),
            Error::AlreadyExists { .. } => ApiError::new(S::CONFLICT, "conflict", e.to_string()),
            Error::InvalidState { .. } => {
                ApiError::new(S::CONFLICT, "invalid_state", e.to_string())
            }
            Error::InvalidInput { field, reason } => ApiError::new(
                S::BAD_REQUEST,
                "invalid_input",
                format!("invalid {field}: {reason}"),
            ),
            Error::InvalidBundle { reason, .. } => ApiError::new(
                S::UNPROCESSABLE_ENTITY,
                "invalid_bundle",
                format!("the bundle was refused: {reason}"),
            ),
            Error::LsnOutOfRange { requested, last } => ApiError::new(
                S::BAD_REQUEST,
                "lsn_out_of_range",
                format!(
                    "LSN {} is past the end of the log ({})",
                    requested.0, last.0
                ),
            ),
            Error::ReadOnly => ApiError::new(S::FORBIDDEN, "read_only", "the engine is read-only"),
            Error::Closed => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "closed",
                "the engine is shutting down",
            ),
            Error::Poisoned { .. } => {
                tracing::error!(error = %e, "engine poisoned");
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the engine refuses writes after a storage failure",
                )
            }
            _ => {
                tracing::error!(error = %e, "engine error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, self.kind, &self.message)
    }
}

/// The envelope of an error.
pub fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "success": false,
            "data": null,
            "error": message,
            "error_kind": kind,
            "timestamp": timestamp(),
        })),
    )
        .into_response()
}

/// A JSON body; malformed JSON is 400, a body of the wrong shape (types, unknown or
/// missing fields) 422, a wrong content type 415, an oversized body 413, each in the
/// envelope.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        _ => "malformed_json",
    };
    let message = match &r {
        JsonRejection::JsonDataError(e) => e.body_text(),
        JsonRejection::JsonSyntaxError(_) => "the body is not well-formed JSON".to_owned(),
        JsonRejection::MissingJsonContentType(_) => {
            "expected a body with content-type application/json".to_owned()
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "the body is too large".to_owned(),
        _ => "the body could not be read".to_owned(),
    };
    ApiError::new(status, kind, message)
}

/// `Value` is `serde_json::Value`; re-exported for handlers.
pub type Json = Value;
