//! The one seam between the async server and the engine's blocking API.
//!
//! Every engine call goes through [`call`], which runs it on tokio's blocking pool (the
//! `SessionManager` API blocks until the write is durable), and every event stream
//! through [`stream_events`], which awaits the engine's `Subscription::recv_async`. When
//! the manager gains awaitable calls, only this module changes.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use session_engine::{CommittedEvent, Lsn, SessionManager};
use tokio::sync::mpsc;

use crate::api::ApiError;

/// Runs `f` with the manager on the blocking pool.
pub async fn call<T, F>(manager: &Arc<SessionManager>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&SessionManager) -> session_engine::Result<T> + Send + 'static,
{
    let m = Arc::clone(manager);
    match tokio::task::spawn_blocking(move || f(&m)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "an engine call panicked or was cancelled");
            Err(ApiError::internal())
        }
    }
}

/// What a stream thread sends.
pub enum StreamItem {
    /// A committed event.
    Event(CommittedEvent),
    /// Everything up to this LSN (the last one published when the stream started) has
    /// been delivered.
    CaughtUp(Lsn),
    /// The subscription failed (the log could not be read); the stream ends.
    Failed,
}

/// Streams committed events from `from` on into a bounded channel of `capacity` items.
///
/// A task awaits the engine's [`session_engine::Subscription`] (`recv_async`: no thread
/// is held while it waits) and waits when the channel is full: memory stays bounded, the
/// engine's writer never waits for it (it cuts the subscription loose), and the
/// subscription then reads what it missed from the log, adding one to `fallbacks` each
/// time. The task ends when the receiver is dropped.
pub fn stream_events(
    manager: &Arc<SessionManager>,
    from: Lsn,
    capacity: usize,
    fallbacks: Counter,
) -> mpsc::Receiver<StreamItem> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let head = manager.last_lsn();
    let mut sub = manager.engine().subscribe(from);
    tokio::spawn(async move {
        let mut caught_up = false;
        let mut counted = 0;
        loop {
            if !caught_up && sub.next_lsn().0 > head.0 {
                caught_up = true;
                if tx.send(StreamItem::CaughtUp(head)).await.is_err() {
                    return;
                }
            }
            // Dropping `recv_async` when the client goes away loses nothing.
            let received = tokio::select! {
                _ = tx.closed() => return,
                r = sub.recv_async() => r,
            };
            let fell_back = sub.fallbacks();
            if fell_back > counted {
                fallbacks.inc_by(fell_back - counted);
                counted = fell_back;
            }
            match received {
                Ok(e) => {
                    if tx.send(StreamItem::Event(e)).await.is_err() {
                        return;
                    }
                }
                Err(session_engine::Error::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "an event stream failed");
                    let _ = tx.send(StreamItem::Failed).await;
                    return;
                }
            }
        }
    });
    rx
}
