//! `GET /api/events?from=LSN[&session=ID]`: the committed events as Server-Sent Events.
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
//! slowed down, never dropped and never shown a gap. Comments (`: keep-alive`) every 15
//! seconds keep idle connections open. At shutdown each stream ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::json;
use session_engine::{Lsn, SessionId};

use crate::AppState;
use crate::adapter::{StreamItem, stream_events};
use crate::api::ApiError;
use crate::sessions::{ApiQuery, session_id};

/// Query of `/api/events`.
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
    let guard = Arc::new(OpenStream(s.clone(), permit));
    let mut shutdown = s.shutdown.clone();
    let events = stream::unfold(
        (rx, filter, guard, false),
        move |(mut rx, filter, guard, done)| async move {
            if done {
                return None;
            }
            loop {
                let item = rx.recv().await?;
                let ev = match item {
                    StreamItem::Event(e) => {
                        if let Some(f) = &filter
                            && !e.event.body.touches(f)
                        {
                            continue;
                        }
                        let data = json!({
                            "lsn": e.lsn.0,
                            "type": e.event.body.type_name(),
                            "sessions": e.event.body.sessions(),
                            "event": &*e.event,
                        });
                        Event::default()
                            .id(e.lsn.0.to_string())
                            .event(e.event.body.type_name())
                            .data(data.to_string())
                    }
                    StreamItem::CaughtUp(lsn) => Event::default()
                        .id(lsn.0.to_string())
                        .event("caught-up")
                        .data(json!({ "lsn": lsn.0 }).to_string()),
                    StreamItem::Failed => {
                        let ev = Event::default()
                            .event("error")
                            .data(json!({ "error": "the event stream failed" }).to_string());
                        return Some((Ok::<Event, Infallible>(ev), (rx, filter, guard, true)));
                    }
                };
                return Some((Ok(ev), (rx, filter, guard, false)));
            }
        },
    );
    let ended = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let events = take_until(events, ended);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
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
