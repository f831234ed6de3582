//! Replay of the log into the state, on two threads: the caller's thread reads the
//! segments, checks each frame's CRC and decodes its event; a helper thread applies the
//! decoded events to the state, in log order.
//!
//! Decoding and applying each take a large share of a replay, so overlapping them
//! shortens a long one (by a quarter or so on a 2-vCPU machine: `docs/benchmarks.md`, W4).
//! The outcome is the serial replay's exactly: the same state, the same first error (a
//! record that does not apply is reported before any later damage, since the helper only
//! ever sees records before the one that stopped the reader), and nothing changed on disk
//! when a record does not apply (the log's torn tail is cut only after [`Replay::settle`]
//! has waited for the helper). A replay of fewer than [`BATCH`] records never starts the
//! helper.

use std::path::{Path, PathBuf};
use std::thread::{Scope, ScopedJoinHandle};

use crossbeam_channel::{Sender, bounded};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::state::State;
use crate::types::Lsn;
use crate::wal::RecordSink;

/// Records per hand-over to the helper.
const BATCH: usize = 1024;

/// Batches decoded ahead of the helper at most (bounds the memory of a replay).
const AHEAD: usize = 4;

/// Decoded records of one segment.
struct Batch {
    path: PathBuf,
    records: Vec<(u64, Lsn, Event)>,
}

impl Batch {
    fn apply_to(self, state: &mut State) -> Result<()> {
        for (offset, lsn, event) in self.records {
            super::apply_record(state, &self.path, offset, lsn, &event)?;
        }
        Ok(())
    }
}

type Helper<'scope> = (Sender<Batch>, ScopedJoinHandle<'scope, (State, Result<()>)>);

/// A [`RecordSink`] that decodes on the calling thread and applies on a helper.
pub(super) struct Replay<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    /// The state while no helper runs (before the first full batch, and after `settle`).
    state: Option<State>,
    batch: Batch,
    helper: Option<Helper<'scope>>,
    /// A record did not apply (its error has been returned).
    failed: bool,
}

impl<'scope, 'env> Replay<'scope, 'env> {
    /// Replays onto `state`, starting a helper in `scope` once there is a batch to hand over.
    pub(super) fn new(scope: &'scope Scope<'scope, 'env>, state: State) -> Self {
        Replay {
            scope,
            state: Some(state),
            batch: Batch {
                path: PathBuf::new(),
                records: Vec::with_capacity(BATCH),
            },
            helper: None,
            failed: false,
        }
    }

    fn hand_over(&mut self) -> Result<()> {
        let batch = Batch {
            path: self.batch.path.clone(),
            records: std::mem::replace(&mut self.batch.records, Vec::with_capacity(BATCH)),
        };
        if self.helper.is_none()
            && let Some(mut state) = self.state.take()
        {
            let (tx, rx) = bounded::<Batch>(AHEAD);
            let handle = self.scope.spawn(move || {
                for b in rx {
                    if let Err(e) = b.apply_to(&mut state) {
                        // Dropping the receiver makes the reader's next hand-over fail.
                        return (state, Err(e));
                    }
                }
                (state, Ok(()))
            });
            self.helper = Some((tx, handle));
        }
        match &self.helper {
            Some((tx, _)) if tx.send(batch).is_ok() => Ok(()),
            // The helper stopped at a record that does not apply: stop reading with its error.
            _ => self.settle(),
        }
    }

    /// Applies what is left, waits for the helper, and returns the first error the first
    /// time it is found.
    fn wait(&mut self) -> Option<Error> {
        if self.failed {
            return None;
        }
        let rest = Batch {
            path: self.batch.path.clone(),
            records: std::mem::take(&mut self.batch.records),
        };
        let outcome = match self.helper.take() {
            None => match self.state.as_mut() {
                Some(state) => rest.apply_to(state),
                None => Ok(()),
            },
            Some((tx, handle)) => {
                // A helper that already stopped has the earlier error; the rest is moot.
                let _ = tx.send(rest);
                drop(tx);
                let (state, outcome) = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                self.state = Some(state);
                outcome
            }
        };
        self.failed = outcome.is_err();
        outcome.err()
    }

    /// Waits for the helper and returns the state, or the first error: the helper's comes
    /// from a record before the one that stopped `read`, so it goes first.
    pub(super) fn finish(
        mut self,
        read: Result<crate::backend::Opened>,
    ) -> Result<(State, crate::backend::Opened)> {
        if let Some(e) = self.wait() {
            return Err(e);
        }
        let recovered = read?;
        match self.state.take() {
            Some(state) if !self.failed => Ok((state, recovered)),
            _ => Err(stopped()),
        }
    }
}

/// The error of a replay asked to go on after it failed (its first error was returned).
fn stopped() -> Error {
    Error::Poisoned {
        cause: "the replay stopped at a record that does not apply".into(),
    }
}

impl RecordSink for Replay<'_, '_> {
    fn record(&mut self, path: &Path, offset: u64, lsn: Lsn, payload: &[u8]) -> Result<()> {
        if self.failed {
            return Err(stopped());
        }
        let event = super::decode_record(path, offset, lsn, payload)?;
        if self.batch.path != path {
            if !self.batch.records.is_empty() {
                self.hand_over()?;
            }
            self.batch.path = path.to_path_buf();
        }
        self.batch.records.push((offset, lsn, event));
        if self.batch.records.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        match self.wait() {
            Some(e) => Err(e),
            None if self.failed => Err(stopped()),
            None => Ok(()),
        }
    }
}
