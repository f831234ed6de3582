//! The one seam between the async server and the engine's blocking API.
//!
//! Every engine call goes through [`call`], which runs it on tokio's blocking pool, and
//! every event stream through [`stream_events`], which drives a blocking
//! [`session_engine::Subscription`] on a blocking thread. When the engine gains an
//! awaitable `Pending` and `Subscription`, only this module changes.

use std::sync::Arc;
use std::time::Duration;

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
/// The thread blocks when the channel is full: memory stays bounded, the engine's writer
/// never waits for it (it cuts the subscription loose), and the subscription then reads
/// what it missed from the log. The thread ends when the receiver is dropped.
pub fn stream_events(
    manager: &Arc<SessionManager>,
    from: Lsn,
    capacity: usize,
) -> mpsc::Receiver<StreamItem> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let m = Arc::clone(manager);
    tokio::task::spawn_blocking(move || {
        let head = m.last_lsn();
        let mut sub = m.engine().subscribe(from);
        let mut caught_up = false;
        loop {
            if !caught_up && sub.next_lsn().0 > head.0 {
                caught_up = true;
                if tx.blocking_send(StreamItem::CaughtUp(head)).is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            match sub.recv_timeout(Duration::from_millis(500)) {
                Ok(Some(e)) => {
                    if tx.blocking_send(StreamItem::Event(e)).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(session_engine::Error::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "an event stream failed");
                    let _ = tx.blocking_send(StreamItem::Failed);
                    return;
                }
            }
        }
    });
    rx
}
