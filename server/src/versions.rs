//! Session versions for optimistic concurrency: a session's version is the LSN of the
//! last event that touched it, shown as the `ETag` `"<lsn>"` and checked against
//! `If-Match`.
//!
//! The engine does not keep that LSN, so the service follows the log: a task subscribed
//! from LSN 1 records, for each event, the LSN against every session it touches
//! (`EventBody::sessions`). A check waits until the tracker has seen the log up to the
//! state it compares with. Writes of one session through the service are serialised by a
//! lock (one of [`STRIPES`], by the session id's hash) held from the check to the commit,
//! so two conditional writes cannot both pass. The one race left: the engine's watchdog
//! (recording an idle session's expiry) does not take that lock, so an expiry committed
//! between the check and the write is not seen by the check; the write then meets the
//! expired status and is refused by the engine (409) or applies after it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_engine::{Lsn, SessionId, SessionManager};
use tokio::sync::watch;

use crate::adapter::{self, StreamItem};
use crate::api::ApiError;

/// Write locks, by session id hash.
pub const STRIPES: usize = 64;

/// The tracker.
pub struct Versions {
    map: Mutex<HashMap<SessionId, Lsn>>,
    seen: watch::Sender<Lsn>,
    hasher: std::collections::hash_map::RandomState,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Versions {
    /// Starts following the log of `manager`.
    pub fn start(manager: &Arc<SessionManager>) -> Arc<Versions> {
        let v = Arc::new(Versions {
            map: Mutex::new(HashMap::new()),
            seen: watch::channel(Lsn(0)).0,
            hasher: Default::default(),
            locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        });
        // Its own fallbacks are not counted with the clients' streams.
        let mut rx = adapter::stream_events(manager, Lsn(1), 1024, Default::default());
        let weak = Arc::downgrade(&v);
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let Some(v) = weak.upgrade() else { return };
                match item {
                    StreamItem::Event(e) => {
                        {
                            let mut map = v.map.lock().unwrap_or_else(|p| p.into_inner());
                            for s in e.event.body.sessions() {
                                map.insert(s.clone(), e.lsn);
                            }
                        }
                        v.seen.send_replace(e.lsn);
                    }
                    StreamItem::CaughtUp(lsn) => {
                        v.seen.send_if_modified(|s| {
                            let newer = lsn.0 > s.0;
                            if newer {
                                *s = lsn;
                            }
                            newer
                        });
                    }
                    StreamItem::Failed => return,
                }
            }
        });
        v
    }

    /// The write lock of session `id`.
    pub async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut h = self.hasher.build_hasher();
        id.hash(&mut h);
        let i = (std::hash::Hasher::finish(&h) % STRIPES as u64) as usize;
        self.locks[i].lock().await
    }

    /// The version of session `id` once the tracker has seen the log up to `upto`
    /// (waiting at most 10 s, then 503).
    pub async fn version(&self, id: &SessionId, upto: Lsn) -> Result<Lsn, ApiError> {
        self.version_within(id, upto, Duration::from_secs(10)).await
    }

    /// [`Versions::version`], waiting at most `wait`.
    pub async fn version_within(
        &self,
        id: &SessionId,
        upto: Lsn,
        wait: Duration,
    ) -> Result<Lsn, ApiError> {
        let mut rx = self.seen.subscribe();
        let waited = tokio::time::timeout(wait, rx.wait_for(|seen| seen.0 >= upto.0)).await;
        match waited {
            Ok(Ok(_)) => {}
            _ => {
                return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "session versions are not known yet; retry",
                ));
            }
        }
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(id).copied().unwrap_or(Lsn(0)))
    }
}
