//! A log in memory: the second backend, which proves the seam (the engine runs on it
//! unchanged) and lets tests simulate a crash without files.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    FrameBuf, LogBackend, LogPosition, LogWriter, Opened, RecordSink, Recovery, StartPoint,
};
use crate::error::{Error, Result};
use crate::types::Lsn;

/// What stands for a file in the places a [`MemLog`] reports (the offset is the record's
/// index).
pub const MEM_LOG_PLACE: &str = "<memory log>";

/// Records held in memory. Clones share the records, so a test can keep one, drop the
/// engine and open another engine on the same log. Appended records are readable at once
/// (as a file's page cache is); [`MemLog::crash`] gives the log a power cut would leave,
/// without the records not synced yet.
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Record `i` has LSN `i + 1`.
    records: Vec<Vec<u8>>,
    /// Records `..durable` survive a crash.
    durable: usize,
    /// Syncs done, for tests.
    syncs: u64,
}

impl MemLog {
    /// An empty log.
    pub fn new() -> MemLog {
        MemLog::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log a power cut now would leave: a new log holding only the records synced so
    /// far. This one is left as it is, so an engine still writing to it writes into a log
    /// nobody reads any more (as `MemStorage::crash` leaves the old image to its engine).
    pub fn crash(&self) -> MemLog {
        let g = self.lock();
        let records = g.records[..g.durable].to_vec();
        MemLog {
            inner: Arc::new(Mutex::new(Inner {
                durable: records.len(),
                records,
                syncs: 0,
            })),
        }
    }

    /// Records not synced yet.
    pub fn unsynced(&self) -> usize {
        let g = self.lock();
        g.records.len() - g.durable
    }

    /// Records in the log (synced or not).
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Syncs done so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

fn place() -> &'static Path {
    Path::new(MEM_LOG_PLACE)
}

impl LogBackend for MemLog {
    fn open(&self, start: StartPoint, writable: bool, sink: &mut dyn RecordSink) -> Result<Opened> {
        let records: Vec<Vec<u8>> = {
            let g = self.lock();
            let have = g.records.len() as u64;
            if start.lsn.0 > have {
                return Err(Error::corruption(
                    place(),
                    have,
                    format!(
                        "the log ends at LSN {have}, before the snapshot's LSN {}",
                        start.lsn
                    ),
                ));
            }
            g.records[start.lsn.0 as usize..].to_vec()
        };
        let mut lsn = start.lsn;
        for payload in &records {
            lsn = lsn.next();
            sink.record(place(), lsn.0 - 1, lsn, payload)?;
        }
        sink.settle()?;
        let writer = writable.then(|| {
            // Whatever a previous writer left is durable from now on, as a file log syncs
            // what it recovered.
            let mut g = self.lock();
            g.durable = g.records.len();
            Box::new(MemWriter {
                log: self.clone(),
                last: lsn,
                dirty: false,
            }) as Box<dyn LogWriter>
        });
        Ok(Opened {
            recovery: Recovery {
                last_lsn: lsn,
                replayed: records.len() as u64,
                torn: None,
                files: 0,
            },
            writer,
        })
    }

    fn read(&self, from: Lsn, to: Lsn, f: &mut super::ReadFn<'_>) -> Result<()> {
        let mut lsn = from.max(Lsn(1));
        while lsn <= to {
            // Copied out so that `f` may take its time (or append) without the lock.
            let Some(payload) = self.lock().records.get(lsn.0 as usize - 1).cloned() else {
                return Ok(());
            };
            if !f(place(), lsn.0 - 1, lsn, &payload)? {
                return Ok(());
            }
            lsn = lsn.next();
        }
        Ok(())
    }

    fn read_lsns(&self, lsns: &[Lsn], f: &mut super::ReadFn<'_>) -> Result<()> {
        super::check_ascending(lsns)?;
        for &lsn in lsns {
            let found = {
                let g = self.lock();
                g.records
                    .get(lsn.0 as usize - 1)
                    .cloned()
                    .ok_or(Error::LsnOutOfRange {
                        requested: lsn,
                        last: Lsn(g.records.len() as u64),
                    })
            };
            if !f(place(), lsn.0 - 1, lsn, &found?)? {
                break;
            }
        }
        Ok(())
    }
}

/// The writer of a [`MemLog`].
struct MemWriter {
    log: MemLog,
    last: Lsn,
    dirty: bool,
}

impl LogWriter for MemWriter {
    fn start_batch(&mut self, batch: &mut FrameBuf) {
        // Frames are only the batch's container here; their flags mean nothing.
        batch.reset(false);
    }

    fn append(&mut self, batch: &FrameBuf) -> Result<()> {
        let mut g = self.log.lock();
        if g.records.len() as u64 != self.last.0 && !batch.is_empty() {
            // Another writer on the same log appended first: nothing of the batch is
            // stored, and this writer stays where it was (see `LogWriter::sync`).
            return Err(Error::LogConflict {
                log: MEM_LOG_PLACE.into(),
                reason: format!(
                    "the log ends at {}, this writer at {}",
                    g.records.len(),
                    self.last
                ),
            });
        }
        for frame in batch.frames() {
            let expected = Lsn(g.records.len() as u64 + 1);
            if frame.lsn != expected || frame.lsn != self.last.next() {
                return Err(Error::corruption(
                    place(),
                    g.records.len() as u64,
                    format!(
                        "record {} does not continue the log (next is {expected})",
                        frame.lsn
                    ),
                ));
            }
            g.records.push(frame.payload.to_vec());
            self.last = frame.lsn;
        }
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if self.dirty {
            let mut g = self.log.lock();
            g.durable = g.records.len();
            g.syncs += 1;
            self.dirty = false;
        }
        Ok(())
    }

    fn caught_up(&mut self, records: &[(Lsn, &[u8])]) -> Result<()> {
        let g = self.log.lock();
        let mut next = self.last.next();
        for (lsn, payload) in records {
            let held = g.records.get((lsn.0 as usize).wrapping_sub(1));
            if *lsn != next || held.map(|p| &p[..]) != Some(*payload) {
                return Err(Error::corruption(
                    place(),
                    lsn.0.saturating_sub(1),
                    format!("record {lsn} is not the log's record {next}"),
                ));
            }
            next = next.next();
        }
        if let Some((lsn, _)) = records.last() {
            self.last = *lsn;
        }
        Ok(())
    }

    fn last_lsn(&self) -> Lsn {
        self.last
    }

    fn position(&self) -> LogPosition {
        LogPosition {
            segment: Lsn::ZERO,
            offset: self.last.0.saturating_sub(1),
        }
    }
}
