//! `GET /`: the dashboard, one HTML page and one script (`/dashboard.js`) compiled into
//! the binary, no build step. The page lists the sessions with their status, shows the
//! service's health, the selected session's activity and the supervised runs as they
//! happen. On a server with a token it asks for it once (kept in `sessionStorage`, sent
//! as `Authorization` and as the WebSocket subprotocol, never in a URL). It reads the API like any client: `/health`, `/api/claude/sessions`, a
//! session's `activities`, and the WebSocket `/ws/sessions`, opened on the last few
//! hundred events of the log (the recent activity and runs) and resumed with
//! `from` = last LSN + 1 when it drops, so it misses nothing.
//!
//! Everything the page shows from the API is set as text (`textContent`), never parsed as
//! HTML; the Content-Security-Policy allows only the page's own script and connections
//! to its own origin, and the page may not be framed.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn serve(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`.
#[utoipa::path(get, path = "/", tag = "dashboard", summary = "The dashboard page",
    responses((status = 200, description = "The page (its script is `/dashboard.js`)",
        content_type = "text/html", body = String)))]
pub async fn page() -> Response {
    serve(PAGE, "text/html; charset=utf-8")
}

/// `GET /dashboard.js`.
#[utoipa::path(get, path = "/dashboard.js", tag = "dashboard", summary = "The dashboard's script",
    responses((status = 200, description = "The script", content_type = "text/javascript",
        body = String)))]
pub async fn script() -> Response {
    serve(SCRIPT, "text/javascript; charset=utf-8")
}
