//! The snapshot thread the writer feeds: it serialises state clones while the writer goes
//! on appending.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Sender, unbounded};

use crate::backend::LogPosition;
use crate::engine::Shared;
use crate::engine::answer::Reply as AnswerTx;
use crate::error::{Error, Result};
use crate::snapshot;
use crate::state::State;
use crate::types::Lsn;

pub(super) struct SnapJob {
    pub(super) state: Arc<State>,
    pub(super) position: LogPosition,
    pub(super) replies: Vec<AnswerTx<Result<Lsn>>>,
}

/// The snapshot thread: serialises state clones while the writer goes on appending.
pub(super) struct Snapshotter {
    tx: Option<Sender<SnapJob>>,
    busy: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Snapshotter {
    pub(super) fn spawn(shared: Arc<Shared>) -> Result<Snapshotter> {
        let (tx, rx) = unbounded::<SnapJob>();
        let busy = Arc::new(AtomicBool::new(false));
        let b = Arc::clone(&busy);
        let handle = std::thread::Builder::new()
            .name("session-engine-snapshot".into())
            .spawn(move || {
                for job in rx {
                    let storage = &*shared.options.storage;
                    let dir = &shared.paths.snapshots;
                    let started = Instant::now();
                    let r = snapshot::write_snapshot(storage, dir, &job.state, job.position)
                        .and_then(|path| {
                            snapshot::prune(storage, dir, shared.options.keep_snapshots)?;
                            Ok(path)
                        });
                    match &r {
                        Ok(path) => tracing::info!(
                            lsn = %job.state.last_lsn,
                            file = %path.display(),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "snapshot written"
                        ),
                        Err(e) => tracing::error!(error = %e, "snapshot failed"),
                    }
                    b.store(false, Ordering::SeqCst);
                    for reply in job.replies {
                        reply.send(match &r {
                            Ok(_) => Ok(job.state.last_lsn),
                            Err(e) => Err(e.clone()),
                        });
                    }
                }
            })
            .map_err(|e| Error::io("spawn snapshot thread", "", e))?;
        Ok(Snapshotter {
            tx: Some(tx),
            busy,
            handle: Some(handle),
        })
    }

    pub(super) fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    pub(super) fn submit(&mut self, job: SnapJob) {
        self.busy.store(true, Ordering::SeqCst);
        if let Some(tx) = &self.tx
            && let Err(e) = tx.send(job)
        {
            self.busy.store(false, Ordering::SeqCst);
            for r in e.0.replies {
                r.send(Err(Error::Closed));
            }
        }
    }

    /// Finishes queued snapshots and stops the thread.
    pub(super) fn stop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
