//! `Idempotency-Key`: a write retried with the same key gets the first answer again
//! instead of writing twice.
//!
//! The keys live in a bounded in-memory map (the oldest answered key forgotten first; a
//! key whose request is still in flight is never forgotten, so its answer is kept
//! whatever came meanwhile, and when [`CAPACITY`] requests with keys are in flight at
//! once the next one is refused with 503 and `Retry-After`); they do not survive a
//! restart, so a retry after a restart writes again. A key reused for another
//! request (another method, path or body) is refused with 422; a retry while the first
//! request is still being answered gets 409. Only answers below 500 are kept: after a
//! server error the retry runs again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::api::error_response;

/// Keys remembered by default ([`crate::Limits::idempotency_keys`]).
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

impl Keys {
    /// Room for `capacity` keys (at least one), answered or in flight.
    pub fn with_capacity(capacity: usize) -> Keys {
        Keys {
            inner: Mutex::new(Remembered {
                capacity: capacity.max(1),
                ..Remembered::default()
            }),
        }
    }
}

/// The map and the order its keys came in; `order` holds exactly the map's keys, so a
/// key released and used again is evicted by its new place, not by a stale old one.
/// `in_flight` counts the [`Entry::InFlight`] entries, which are never evicted.
struct Remembered {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
    in_flight: usize,
    capacity: usize,
}

impl Default for Remembered {
    fn default() -> Self {
        Remembered {
            map: HashMap::new(),
            order: VecDeque::new(),
            in_flight: 0,
            capacity: CAPACITY,
        }
    }
}

/// [`CAPACITY`] requests with keys are in flight: none can be forgotten to make room.
#[derive(Debug, PartialEq, Eq)]
struct Full;

impl Remembered {
    /// Marks `key` (not in the map) in flight, forgetting the oldest answered keys beyond
    /// [`CAPACITY`]; refused when [`CAPACITY`] keys are in flight already.
    fn admit(&mut self, key: String, fingerprint: Fingerprint) -> Result<(), Full> {
        if self.in_flight >= self.capacity {
            return Err(Full);
        }
        self.map.insert(key.clone(), Entry::InFlight(fingerprint));
        self.order.push_back(key);
        self.in_flight += 1;
        while self.order.len() > self.capacity {
            // Some answered key exists: at most `capacity` of the entries are in flight.
            let Some(at) = self
                .order
                .iter()
                .position(|k| matches!(self.map.get(k), Some(Entry::Done { .. })))
            else {
                break;
            };
            if let Some(old) = self.order.remove(at) {
                self.map.remove(&old);
            }
        }
        Ok(())
    }

    /// Keeps the answer of `key`, in flight until now.
    fn complete(&mut self, key: &str, done: Entry) {
        if let Some(e) = self.map.get_mut(key)
            && matches!(e, Entry::InFlight(_))
        {
            *e = done;
            self.in_flight -= 1;
        }
    }

    /// Forgets `key` (only while it is in flight, with `in_flight_only`).
    fn release(&mut self, key: &str, in_flight_only: bool) {
        if in_flight_only && !matches!(self.map.get(key), Some(Entry::InFlight(_))) {
            return;
        }
        if let Some(e) = self.map.remove(key) {
            if matches!(e, Entry::InFlight(_)) {
                self.in_flight -= 1;
            }
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
            None => {
                if guard.admit(key.clone(), fingerprint.clone()).is_err() {
                    let mut r = error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        "too many requests with an Idempotency-Key are in flight; retry later",
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return r;
                }
            }
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
        guard.complete(
            &key,
            Entry::Done {
                fingerprint,
                status: rparts.status,
                headers: rparts.headers.clone(),
                body: body.clone(),
            },
        );
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

    fn done(n: u64) -> Entry {
        Entry::Done {
            fingerprint: fp(n),
            status: StatusCode::CREATED,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// Admits `key` and keeps an answer for it at once.
    fn answered(r: &mut Remembered, key: String) {
        r.admit(key.clone(), fp(2)).expect("room");
        r.complete(&key, done(2));
    }

    #[test]
    fn a_key_released_and_used_again_is_kept_for_a_full_capacity() {
        let mut r = Remembered::default();
        r.admit("k".into(), fp(0)).expect("room");
        r.release("k", true);
        r.admit("k".into(), fp(1)).expect("room");
        r.complete("k", done(1));
        // CAPACITY - 1 newer keys: "k" (admitted second) is still among the newest CAPACITY.
        for i in 0..CAPACITY - 1 {
            answered(&mut r, format!("other-{i}"));
        }
        assert!(
            matches!(r.map.get("k"), Some(Entry::Done { fingerprint, .. }) if *fingerprint == fp(1)),
            "a stale place of the released key evicted its new entry"
        );
        assert_eq!(r.order.len(), r.map.len());
        // One more key evicts it, being the oldest.
        answered(&mut r, "last".into());
        assert!(!r.map.contains_key("k"));
        assert_eq!(r.order.len(), CAPACITY);
        assert_eq!(r.in_flight, 0);
    }

    #[test]
    fn a_key_in_flight_is_not_evicted_by_newer_keys() {
        let mut r = Remembered::default();
        r.admit("slow".into(), fp(0)).expect("room");
        // Far more newer keys than the table holds, all answered, while "slow" runs.
        for i in 0..2 * CAPACITY {
            answered(&mut r, format!("other-{i}"));
        }
        assert!(
            matches!(r.map.get("slow"), Some(Entry::InFlight(_))),
            "a key still in flight was evicted"
        );
        assert_eq!(r.map.len(), CAPACITY);
        assert_eq!(r.order.len(), CAPACITY);
        // Its answer is then kept, so a retry replays it.
        r.complete("slow", done(0));
        assert!(matches!(r.map.get("slow"), Some(Entry::Done { .. })));
        // Answered now, it is the oldest and goes first.
        answered(&mut r, "next".into());
        assert!(!r.map.contains_key("slow"));
    }

    #[test]
    fn a_table_full_of_keys_in_flight_refuses_more_and_stays_bounded() {
        let mut r = Remembered::default();
        for i in 0..CAPACITY {
            r.admit(format!("k{i}"), fp(0)).expect("room");
        }
        assert_eq!(r.admit("one-more".into(), fp(0)), Err(Full));
        assert!(!r.map.contains_key("one-more"));
        assert_eq!(r.map.len(), CAPACITY);
        // One answered (or released) makes room again; the answered one is evicted.
        r.complete("k0", done(0));
        r.admit("one-more".into(), fp(0))
            .expect("room after an answer");
        assert!(!r.map.contains_key("k0"));
        assert_eq!(r.map.len(), CAPACITY);
        r.release("k1", true);
        r.admit("two-more".into(), fp(0))
            .expect("room after a release");
        assert_eq!(r.map.len(), CAPACITY);
        assert_eq!(r.in_flight, CAPACITY);
    }

    #[test]
    fn the_drop_guard_releases_only_a_key_still_in_flight() {
        let mut r = Remembered::default();
        r.admit("k".into(), fp(0)).expect("room");
        r.complete("k", done(0));
        r.release("k", true);
        assert!(r.map.contains_key("k"), "a kept answer was forgotten");
        r.release("k", false);
        assert!(r.map.is_empty() && r.order.is_empty());
        assert_eq!(r.in_flight, 0);
    }
}
