//! `Idempotency-Key`: a write retried with the same key gets the first answer again
//! instead of writing twice.
//!
//! The keys live in a bounded in-memory map (the oldest forgotten first); they do not
//! survive a restart, so a retry after a restart writes again. A key reused for another
//! request (another method, path or body) is refused with 422; a retry while the first
//! request is still being answered gets 409. Only answers below 500 are kept: after a
//! server error the retry runs again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::api::error_response;

/// Keys remembered.
pub const CAPACITY: usize = 4096;
/// Longest key accepted.
pub const MAX_KEY: usize = 255;
/// Longest answer kept (a longer one is answered but not remembered).
const MAX_KEPT_BODY: usize = 1 << 20;

#[derive(Clone, PartialEq, Eq)]
struct Fingerprint {
    method: Method,
    uri: String,
    body: u64,
}

enum Entry {
    InFlight(Fingerprint),
    Done {
        fingerprint: Fingerprint,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

/// The remembered keys.
#[derive(Default)]
pub struct Keys {
    inner: Mutex<Remembered>,
}

/// The map and the order its keys came in; `order` holds exactly the map's keys, so a
/// key released and used again is evicted by its new place, not by a stale old one.
#[derive(Default)]
struct Remembered {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
}

impl Remembered {
    /// Marks `key` in flight, forgetting the oldest keys beyond [`CAPACITY`].
    fn admit(&mut self, key: String, fingerprint: Fingerprint) {
        self.map.insert(key.clone(), Entry::InFlight(fingerprint));
        self.order.push_back(key);
        while self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// Forgets `key` (only while it is in flight, with `in_flight_only`).
    fn release(&mut self, key: &str, in_flight_only: bool) {
        if in_flight_only && !matches!(self.map.get(key), Some(Entry::InFlight(_))) {
            return;
        }
        if self.map.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The middleware.
pub async fn idempotent(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get("idempotency-key").cloned() else {
        return next.run(req).await;
    };
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY => k.to_owned(),
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            );
        }
    };
    let (parts, body) = req.into_parts();
    let limit = if parts.uri.path().ends_with("/sessions/import") {
        s.limits.max_import_body
    } else {
        s.limits.max_body
    };
    let bytes = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the body is too large",
            );
        }
    };
    let fingerprint = Fingerprint {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        body: fnv(&bytes),
    };
    {
        let mut guard = s.keys.inner.lock().unwrap_or_else(|e| e.into_inner());
        match guard.map.get(&key) {
            Some(Entry::InFlight(f)) | Some(Entry::Done { fingerprint: f, .. })
                if *f != fingerprint =>
            {
                return error_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for another request",
                );
            }
            Some(Entry::InFlight(_)) => {
                return error_response(
                    StatusCode::CONFLICT,
                    "in_progress",
                    "a request with this Idempotency-Key is still being answered",
                );
            }
            Some(Entry::Done {
                status,
                headers,
                body,
                ..
            }) => {
                let mut r = (*status, body.clone()).into_response();
                *r.headers_mut() = headers.clone();
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return r;
            }
            None => guard.admit(key.clone(), fingerprint.clone()),
        }
    }
    // Dropped before the answer is kept (the client went away, or the request timed
    // out): the key is released, so a retry runs again. A write that timed out may have
    // committed all the same (the engine call is not cancelled); its answer is lost.
    let pending = Pending {
        state: s.clone(),
        key: Some(key.clone()),
    };
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (rparts, rbody) = resp.into_parts();
    // Answers are JSON built in memory; reading one back costs no more than it took.
    let body = match to_bytes(rbody, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            forget(&s, &key);
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            );
        }
    };
    if rparts.status.is_server_error() || body.len() > MAX_KEPT_BODY {
        forget(&s, &key);
    } else {
        let mut guard = s.keys.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Forgotten meanwhile (evicted): not remembered.
        if let Some(e) = guard.map.get_mut(&key) {
            *e = Entry::Done {
                fingerprint,
                status: rparts.status,
                headers: rparts.headers.clone(),
                body: body.clone(),
            };
        }
    }
    pending.done();
    Response::from_parts(rparts, Body::from(body))
}

struct Pending {
    state: AppState,
    key: Option<String>,
}

impl Pending {
    fn done(mut self) {
        self.key = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut guard = self
                .state
                .keys
                .inner
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            guard.release(&key, true);
        }
    }
}

fn forget(s: &AppState, key: &str) {
    let mut guard = s.keys.inner.lock().unwrap_or_else(|e| e.into_inner());
    guard.release(key, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u64) -> Fingerprint {
        Fingerprint {
            method: Method::POST,
            uri: "/api/sessions".into(),
            body: n,
        }
    }

    #[test]
    fn a_key_released_and_used_again_is_kept_for_a_full_capacity() {
        let mut r = Remembered::default();
        r.admit("k".into(), fp(0));
        r.release("k", true);
        r.admit("k".into(), fp(1));
        // CAPACITY - 1 newer keys: "k" (admitted second) is still among the newest CAPACITY.
        for i in 0..CAPACITY - 1 {
            r.admit(format!("other-{i}"), fp(2));
        }
        assert!(
            matches!(r.map.get("k"), Some(Entry::InFlight(f)) if *f == fp(1)),
            "a stale place of the released key evicted its new entry"
        );
        assert_eq!(r.order.len(), r.map.len());
        // One more key evicts it, being the oldest.
        r.admit("last".into(), fp(3));
        assert!(!r.map.contains_key("k"));
        assert_eq!(r.order.len(), CAPACITY);
    }

    #[test]
    fn the_drop_guard_releases_only_a_key_still_in_flight() {
        let mut r = Remembered::default();
        r.admit("k".into(), fp(0));
        r.map.insert(
            "k".into(),
            Entry::Done {
                fingerprint: fp(0),
                status: StatusCode::CREATED,
                headers: HeaderMap::new(),
                body: Bytes::new(),
            },
        );
        r.release("k", true);
        assert!(r.map.contains_key("k"), "a kept answer was forgotten");
        r.release("k", false);
        assert!(r.map.is_empty() && r.order.is_empty());
    }
}
