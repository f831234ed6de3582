//! `ws://…/ws/sessions?from=LSN[&session=ID]`: seed 002's WebSocket of live updates,
//! with the semantics of `/api/events` ([`crate::events`], whose machinery it uses).
//!
//! Every text message the server sends is one JSON object whose `type` is the name the
//! SSE stream gives it: an event (`{"type": "activity_recorded", "lsn": 7, "sessions":
//! [...], "event": {...}}`), then, once the log is caught up, `{"type": "caught-up",
//! "lsn": N}` (everything up to `N` has been sent), then live events. A client that
//! reconnects with `from` = the last LSN it saw + 1 misses nothing and gets nothing
//! twice (`Last-Event-ID` is honoured too, for clients that can set headers). A bad query
//! is refused before the upgrade with the API's 400 envelope; a request that is not a
//! WebSocket upgrade gets 400 `websocket_required`.
//!
//! A slow reader is handled as in the SSE stream: one bounded queue per connection, the
//! subscription behind it reads from the log. The server sends a WebSocket ping every
//! [`crate::Limits::keep_alive`]; a client that sends nothing back (no pong, no frame at
//! all) within [`crate::Limits::ws_dead_timeout`] of a ping, or does not take a message
//! within that time, is taken for dead and its socket closed (1008 when a close frame can
//! still be sent), which frees its place among the open streams; a client may send `{"type": "ping"}` and gets
//! `{"type": "pong"}`; any other message gets an `error` message (the socket stays open).
//! When the subscription fails, an `error` message is sent and the socket closed (1011);
//! at shutdown it is closed with 1001. The guard (Host, Origin, token) applies to the
//! upgrade request like to every route.

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};
use std::time::Duration;

use crate::AppState;
use crate::api::ApiError;
use crate::events::{EventsQuery, Opened};
use crate::sessions::ApiQuery;

/// Largest message a client may send (it only ever needs `{"type": "ping"}`).
const MAX_CLIENT_MESSAGE: usize = 4096;

/// `GET /ws/sessions`: the upgrade.
#[utoipa::path(get, path = "/ws/sessions", tag = "events",
    summary = "Committed events over a WebSocket: catch-up, `caught-up`, then live",
    description = "Each text message is one JSON object whose `type` is the SSE event's name \
        (an event with its `lsn`, `caught-up`, `pong`, `error`). Reconnecting with `from` = \
        the last LSN seen + 1 misses nothing and repeats nothing; `Last-Event-ID` wins over \
        `from`. A client may send `{\"type\": \"ping\"}`.",
    params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "The last LSN received")),
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade (`websocket_required`) or a bad query, in the envelope",
            body = crate::openapi::Envelope),
        (status = "4XX", description = "Refused, in the envelope", body = crate::openapi::Envelope),
        (status = 503, description = "Too many streams open, in the envelope", body = crate::openapi::Envelope)))]
pub async fn sessions(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            e.status(),
            "websocket_required",
            format!("/ws/sessions is a WebSocket: {}", e.body_text()),
        )
    })?;
    let opened = Opened::open(&s, &headers, q)?;
    Ok(upgrade
        .protocols([crate::guard::WS_PROTOCOL])
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, opened, s)))
}

fn text(v: &Value) -> Message {
    Message::Text(v.to_string().into())
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str, within: Duration) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(within, socket.send(Message::Close(Some(frame)))).await;
}

/// Sends `m`, or fails when the client has not taken it within `within` (it reads
/// nothing: taken for dead).
async fn send(socket: &mut WebSocket, m: Message, within: Duration) -> Result<(), ()> {
    match tokio::time::timeout(within, socket.send(m)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn serve(mut socket: WebSocket, mut opened: Opened, s: AppState) {
    let mut shutdown = s.shutdown.clone();
    let dead = s.limits.ws_dead_timeout;
    let mut ping = tokio::time::interval(s.limits.keep_alive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    // When a ping is unanswered: the time by which some frame must have come back.
    let mut answer_by: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            m = opened.next() => {
                let Some(m) = m else {
                    // The engine closed.
                    return close(socket, close_code::AWAY, "the event stream ended", dead).await;
                };
                if send(&mut socket, text(&m.data), dead).await.is_err() {
                    return;
                }
                if m.last {
                    return close(socket, close_code::ERROR, "the event stream failed", dead).await;
                }
            }
            incoming = socket.recv() => {
                // Any frame shows the client is there.
                answer_by = None;
                match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(t))) => {
                        let is_ping = serde_json::from_str::<Value>(t.as_str())
                            .is_ok_and(|v| v.get("type").and_then(Value::as_str) == Some("ping"));
                        let answer = if is_ping {
                            json!({ "type": "pong" })
                        } else {
                            json!({
                                "type": "error",
                                "error": "this socket accepts only {\"type\": \"ping\"}",
                            })
                        };
                        if send(&mut socket, text(&answer), dead).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let answer = json!({ "type": "error", "error": "binary messages are not accepted" });
                        if send(&mut socket, text(&answer), dead).await.is_err() {
                            return;
                        }
                    }
                    // Pings are answered by the protocol layer; pongs need nothing more.
                    Some(Ok(_)) => {}
                }
            }
            _ = ping.tick() => {
                if send(&mut socket, Message::Ping(Default::default()), dead).await.is_err() {
                    return;
                }
                if answer_by.is_none() {
                    answer_by = Some(tokio::time::Instant::now() + dead);
                }
            }
            _ = async {
                match answer_by {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                return close(socket, close_code::POLICY, "no answer to the server's ping", dead).await;
            }
            _ = async { drop(shutdown.wait_for(|s| *s).await) } => {
                return close(socket, close_code::AWAY, "the server is shutting down", dead).await;
            }
        }
    }
}
