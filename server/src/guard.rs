//! Who may talk to the service: the bearer token and the DNS-rebinding check.
//!
//! * Bound to a loopback address with no token configured, every request must carry a
//!   `Host` of `localhost`, `127.0.0.1` or `[::1]` with the bound port, and an `Origin`,
//!   if any, of `http://` one of those: a web page on another site, whose name an
//!   attacker pointed at 127.0.0.1, sends its own host name and is refused (403).
//! * With a token (always, when bound to another address), every request must carry
//!   `Authorization: Bearer <token>`, compared in constant time (401 otherwise); `/health`
//!   included. Host and Origin are then not checked: the token is the proof. Two
//!   exceptions, for the dashboard in a browser: its static page and script (`GET /`,
//!   `GET /dashboard.js`, which hold no data) are served without it, and the WebSocket
//!   upgrade (`/ws/sessions`), which a browser cannot give an `Authorization` header,
//!   may carry it as a subprotocol instead: `bearer.<the token in unpadded base64url>`
//!   beside [`WS_PROTOCOL`] (the one the server selects, so the token is never echoed).
//!   Neither puts the token in a URL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use session_engine::storage::{FileKind, Storage, write_new_atomic};
use subtle::ConstantTimeEq;

use crate::api::error_response;

/// The WebSocket subprotocol the server selects (the dashboard offers it beside its
/// `bearer.` credential).
pub const WS_PROTOCOL: &str = "session-engine";

/// The prefix of the WebSocket subprotocol that carries the token.
const WS_BEARER: &str = "bearer.";

/// The token file the service generates in the data directory.
pub const TOKEN_FILE: &str = "server-token";

/// The access rule in force.
#[derive(Clone, Debug)]
pub struct Guard {
    token: Option<Arc<[u8]>>,
    port: u16,
}

impl Guard {
    /// A guard for a server on `addr`, with `token` (required unless loopback).
    pub fn new(addr: SocketAddr, token: Option<String>) -> Guard {
        Guard {
            token: token.map(|t| Arc::from(t.into_bytes().into_boxed_slice())),
            port: addr.port(),
        }
    }

    /// Whether a token is required.
    pub fn uses_token(&self) -> bool {
        self.token.is_some()
    }

    fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Box<Response>> {
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .as_bytes();
            // `ct_eq` on slices of different lengths is false without comparing bytes;
            // the length of the token is not a secret (64 hex digits when generated).
            if bool::from(given.ct_eq(token)) {
                return Ok(());
            }
            let static_page = *method == Method::GET && matches!(path, "/" | "/dashboard.js");
            if static_page || (path == "/ws/sessions" && ws_token_matches(headers, token)) {
                return Ok(());
            }
            let mut r = error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return Err(Box::new(r));
        }
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !host.is_some_and(|h| self.local_authority(h)) {
            return Err(Box::new(error_response(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                "the Host header must name this machine's loopback address",
            )));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let ok = origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|a| self.local_authority(a));
            if !ok {
                return Err(Box::new(error_response(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    "cross-origin requests are refused",
                )));
            }
        }
        Ok(())
    }

    fn local_authority(&self, authority: &str) -> bool {
        let port = self.port.to_string();
        ["localhost", "127.0.0.1", "[::1]"].iter().any(|h| {
            authority
                .strip_prefix(h)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|p| p == port)
        })
    }
}

/// Whether a `Sec-WebSocket-Protocol` value is `bearer.` and `token` in unpadded
/// base64url (compared in constant time).
fn ws_token_matches(headers: &HeaderMap, token: &[u8]) -> bool {
    use base64::Engine as _;
    let mut found = false;
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(v) = v.to_str() else { continue };
        for p in v.split(',').map(str::trim) {
            let Some(b64) = p.strip_prefix(WS_BEARER) else {
                continue;
            };
            let Ok(given) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64) else {
                continue;
            };
            found |= bool::from(given.as_slice().ct_eq(token));
        }
    }
    found
}

/// The middleware applying the [`Guard`].
pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    match g.check(req.method(), req.uri().path(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => *r,
    }
}

/// Reads the token from `path` (a file the user gave; never written). Surrounding
/// whitespace is ignored; a token of fewer than 16 bytes is refused.
pub fn read_token_file(storage: &dyn Storage, path: &Path) -> session_engine::Result<String> {
    let bytes = storage.read(path).map_err(|e| session_engine::Error::Io {
        op: "read token file",
        path: path.to_owned(),
        source: std::sync::Arc::new(e),
    })?;
    let token = std::str::from_utf8(&bytes)
        .map(str::trim)
        .map_err(|_| invalid("the token file is not UTF-8 text"))?;
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "the token must be at least 16 characters, without spaces",
        ));
    }
    Ok(token.to_owned())
}

/// The service's own token in `<data_dir>/server-token`: generated (32 random bytes as
/// 64 hex digits, file mode 0600, created with a no-replace rename so no other file is
/// ever replaced) when nothing is there, reused when a token file the service wrote is
/// there; anything else at that path (a link, a directory, a file not in the service's
/// format) is refused and left alone.
pub fn data_dir_token(storage: &dyn Storage, data_dir: &Path) -> session_engine::Result<PathBuf> {
    let path = data_dir.join(TOKEN_FILE);
    let io = |op, e| session_engine::Error::Io {
        op,
        path: path.clone(),
        source: std::sync::Arc::new(e),
    };
    match storage.kind(&path).map_err(|e| io("stat token file", e))? {
        None => {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw)
                .map_err(|e| io("generate token", std::io::Error::other(e.to_string())))?;
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            write_new_atomic(storage, &path, format!("{hex}\n").as_bytes())
                .map_err(|e| io("write token file", e))?;
            Ok(path)
        }
        Some(FileKind::File) => {
            let t = read_token_file(storage, &path)?;
            if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(path)
            } else {
                Err(invalid(
                    "server-token in the data directory is not a token this service wrote; \
                     it is left alone (pass --token-file)",
                ))
            }
        }
        Some(_) => Err(invalid(
            "server-token in the data directory is not a regular file; it is left alone",
        )),
    }
}

fn invalid(reason: &str) -> session_engine::Error {
    session_engine::Error::InvalidInput {
        field: "token",
        reason: reason.to_owned(),
    }
}
