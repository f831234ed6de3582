//! `GET /api/events?from=LSN[&session=ID]`: the committed events as Server-Sent Events,
//! and the machinery the WebSocket `/ws/sessions` ([`crate::ws`]) shares with it.
//!
//! Catch-up from the log, then one `caught-up` event (its id the last LSN published when
//! the stream started: every event up to it has been sent), then live events as they
//! commit. Each event's SSE `id` is its LSN, so a client that reconnects with
//! `Last-Event-ID` (which wins over `from`) resumes right after it: no gap, no
//! duplicate. Without either, the stream starts after the last committed event.
//! With `session`, only that session's events are sent (the `caught-up` marker still
//! comes, with its id, so a resume skips what was filtered out).
//!
//! Memory per connection is one bounded queue ([`crate::Limits::stream_queue`] events).
//! A client that reads slowly fills it; the engine's subscription behind it is then
//! cut loose by the writer and reads what it missed from the log, so a slow client is
//! slowed down, never dropped and never shown a gap. Comments (`: keep-alive`) every
//! [`crate::Limits::keep_alive`] keep idle connections open. At shutdown each stream ends.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};
use session_engine::{Lsn, SessionId};
use tokio::sync::mpsc;

use crate::AppState;
use crate::adapter::{StreamItem, stream_events};
use crate::api::ApiError;
use crate::sessions::{ApiQuery, session_id};

/// Query of `/api/events` and `/ws/sessions`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    from: Option<u64>,
    session: Option<String>,
}

struct OpenStream(
    AppState,
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.metrics.open_streams.dec();
    }
}

/// An open event stream: the bounded queue of what to send, its session filter, and its
/// place among [`crate::Limits::max_streams`] (freed when this is dropped).
pub struct Opened {
    rx: mpsc::Receiver<StreamItem>,
    filter: Option<SessionId>,
    _open: OpenStream,
}

/// One message of a stream: `name` is the SSE event name and the `type` of the
/// WebSocket message, `id` the SSE id (an LSN), `data` the JSON (holding `type`).
pub struct Message {
    /// `caught-up`, `error`, or the event's type name (`activity_recorded`, ...).
    pub name: &'static str,
    /// The LSN (of the event, or of the marker); none for `error`.
    pub id: Option<Lsn>,
    /// The message's JSON object.
    pub data: Value,
    /// Whether the stream ends after this message (the subscription failed).
    pub last: bool,
}

impl Opened {
    /// Checks the query and the `Last-Event-ID` header, takes a place among the open
    /// streams (503 `too_many_streams` past the cap) and subscribes.
    pub fn open(s: &AppState, headers: &HeaderMap, q: EventsQuery) -> Result<Opened, ApiError> {
        let filter: Option<SessionId> = q.session.as_deref().map(session_id).transpose()?;
        let last_id = match headers.get("last-event-id") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an LSN"))?,
            ),
        };
        let from = match (last_id, q.from) {
            (Some(id), _) => Lsn(id.saturating_add(1)),
            (None, Some(f)) => Lsn(f.max(1)),
            (None, None) => Lsn(s.manager.last_lsn().0 + 1),
        };
        let last = s.manager.last_lsn();
        if from.0 > last.0.saturating_add(1) {
            // A position this log never reached (another data directory, or one restored
            // from an older copy): nothing would tell the client its events differ.
            return Err(ApiError::bad_request(format!(
                "from (or Last-Event-ID) is past the end of the log: the last LSN is {}",
                last.0
            )));
        }
        let Ok(permit) = Arc::clone(&s.streams).try_acquire_owned() else {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "too many event streams are open; retry later",
            ));
        };
        let rx = stream_events(
            &s.manager,
            from,
            s.limits.stream_queue,
            s.metrics.stream_log_fallbacks.clone(),
        );
        s.metrics.open_streams.inc();
        Ok(Opened {
            rx,
            filter,
            _open: OpenStream(s.clone(), permit),
        })
    }

    /// The next message to send (events the filter leaves out are skipped); `None`
    /// when the stream has ended. Cancel-safe: it awaits only the queue.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            return Some(match self.rx.recv().await? {
                StreamItem::Event(e) => {
                    if let Some(f) = &self.filter
                        && !e.event.body.touches(f)
                    {
                        continue;
                    }
                    let name = e.event.body.type_name();
                    Message {
                        name,
                        id: Some(e.lsn),
                        data: json!({
                            "type": name,
                            "lsn": e.lsn.0,
                            "sessions": e.event.body.sessions(),
                            "event": &*e.event,
                        }),
                        last: false,
                    }
                }
                StreamItem::CaughtUp(lsn) => Message {
                    name: "caught-up",
                    id: Some(lsn),
                    data: json!({ "type": "caught-up", "lsn": lsn.0 }),
                    last: false,
                },
                StreamItem::Failed => Message {
                    name: "error",
                    id: None,
                    data: json!({ "type": "error", "error": "the event stream failed" }),
                    last: true,
                },
            });
        }
    }
}

#[utoipa::path(get, path = "/api/events", tag = "events",
    summary = "Committed events as Server-Sent Events: catch-up, `caught-up`, then live",
    description = "Each event's SSE id is its LSN; `Last-Event-ID` (which wins over `from`) resumes right after it.",
    params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "The last LSN received")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = "4XX", description = "Refused, in the envelope", body = crate::openapi::Envelope),
        (status = 503, description = "Too many streams open, in the envelope", body = crate::openapi::Envelope)))]
pub async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let opened = Opened::open(&s, &headers, q)?;
    let mut shutdown = s.shutdown.clone();
    let events = stream::unfold((opened, false), |(mut opened, done)| async move {
        if done {
            return None;
        }
        let m = opened.next().await?;
        let mut ev = Event::default().event(m.name).data(m.data.to_string());
        if let Some(id) = m.id {
            ev = ev.id(id.0.to_string());
        }
        Some((Ok::<Event, Infallible>(ev), (opened, m.last)))
    });
    let ended = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let events = take_until(events, ended);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(s.limits.keep_alive))
        .into_response())
}

fn take_until<S, F>(s: S, f: F) -> impl Stream<Item = S::Item>
where
    S: Stream,
    F: std::future::Future,
{
    use futures_util::StreamExt;
    s.take_until(f)
}
