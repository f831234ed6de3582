//! The log-backend seam: everything the engine asks of its log, in one trait.
//!
//! ```text
//! LogBackend::open(start, writable, sink) ── recovery: every record after `start` to the
//!                                            sink, the backend's own integrity rules
//!                                            (torn tails, damage) ── Opened { recovery,
//!                                            writer: Box<dyn LogWriter> when writable }
//! LogWriter: start_batch → (FrameBuf filled by the engine) → append → sync / seal
//! LogBackend::read(from, to, f) ── records with their places, for subscriptions, export,
//!                                  `replay`, point-in-time reads
//! LogBackend::read_lsns(lsns, f) ── the records at given LSNs (ascending), with their
//!                                   places: point reads of history by log position
//! ```
//!
//! The engine encodes events straight into a [`FrameBuf`] (no copy per event) and never
//! looks at files, frames' flags or segments itself: [`FileLog`] (the write-ahead log of
//! [`crate::wal`], the default) keeps all of that inside, and [`MemLog`] (records in
//! memory, with a crash that drops what was not synced) proves that another backend plugs
//! in without touching the writer. A position ([`LogPosition`]) is opaque to the engine:
//! it stores the one [`LogWriter::position`] gives in snapshots and hands it back to
//! [`LogBackend::open`], which may use it to start reading cheaply and must check it.
//!
//! Contract of every backend (see `../shared/DESIGN.md`, "Log backends"): LSNs are dense
//! from 1; `append` takes a batch whose first LSN is `last_lsn() + 1`; a batch is durable
//! (in the backend's own sense) only once `sync` returns; `read` and `open` refuse to
//! serve a history with a hole; damage is an error naming its place ([`Error::Corruption`](crate::Error::Corruption)
//! with a file, or what stands for one, and an offset).

mod file;
mod memory;

use std::fmt;
use std::path::Path;

use crate::error::Result;
use crate::event::Event;
use crate::types::Lsn;
pub use crate::wal::{FrameBuf, LogPosition, RecordSink, StartPoint, TornTail};

pub use file::FileLog;
pub use memory::MemLog;

/// What [`LogBackend::read`] calls for each record: `(place, offset, lsn, payload)`,
/// returning whether to go on.
pub type ReadFn<'a> = dyn FnMut(&Path, u64, Lsn, &[u8]) -> Result<bool> + 'a;

/// A log the engine can run on.
pub trait LogBackend: Send + Sync + fmt::Debug {
    /// Recovers the log: hands every record after `start` to `sink`, in order, then
    /// decides how the log ends by the backend's rules. With `writable`, also makes the
    /// log ready for appends (a file log cuts a torn tail aside, syncs what it recovered
    /// and seals it) and returns the writer. Corruption is an error naming its place;
    /// nothing is changed on disk before `sink` has settled.
    fn open(&self, start: StartPoint, writable: bool, sink: &mut dyn RecordSink) -> Result<Opened>;

    /// Calls `f(place, offset, lsn, payload)` for each record with `from <= lsn <= to`, in
    /// order, until it returns `Ok(false)`. Works while a writer (maybe in another
    /// process) appends: a record being written is simply not there yet. Stops at the end
    /// of the valid log; damage before it, or a hole, is an error.
    fn read(&self, from: Lsn, to: Lsn, f: &mut ReadFn<'_>) -> Result<()>;

    /// Calls `f(place, offset, lsn, payload)` for the record at each of `lsns`, in order,
    /// until it returns `Ok(false)`: point reads by log position. `lsns` must be strictly
    /// ascending and not hold LSN 0 ([`Error::InvalidInput`](crate::Error::InvalidInput)
    /// otherwise, before anything is read). Works while a writer appends, as
    /// [`LogBackend::read`] does. An LSN the log does not have is never skipped: once the
    /// records before it have been handed on, an LSN past the end of the valid log is
    /// [`Error::LsnOutOfRange`](crate::Error::LsnOutOfRange), and an LSN in a hole or at
    /// damage is [`Error::Corruption`](crate::Error::Corruption) naming its place.
    ///
    /// The default reads each run of consecutive LSNs with one [`LogBackend::read`], for
    /// a backend with nothing better (its `LsnOutOfRange::last` is then the last LSN that
    /// read found, or the LSN before the one asked for when it found none). [`FileLog`]
    /// finds each record through a sparse index of its segment, reading at most
    /// [`crate::wal::INDEX_STRIDE`] records (and about [`crate::wal::INDEX_SPAN_BYTES`])
    /// per record once the segment is indexed;
    /// [`MemLog`] takes each record directly.
    fn read_lsns(&self, lsns: &[Lsn], f: &mut ReadFn<'_>) -> Result<()> {
        check_ascending(lsns)?;
        let mut rest = lsns;
        while let Some(&run_first) = rest.first() {
            let n = 1 + rest.windows(2).take_while(|w| w[1] == w[0].next()).count();
            let (run, tail) = rest.split_at(n);
            let run_last = run[n - 1];
            let (mut next, mut go) = (run_first, true);
            self.read(run_first, run_last, &mut |place, offset, lsn, payload| {
                if lsn != next {
                    return Err(crate::Error::corruption(
                        place,
                        offset,
                        format!("the log gave LSN {lsn} where LSN {next} was asked for"),
                    ));
                }
                next = next.next();
                go = f(place, offset, lsn, payload)?;
                Ok(go && lsn < run_last)
            })?;
            if !go {
                return Ok(());
            }
            if next <= run_last {
                return Err(crate::Error::LsnOutOfRange {
                    requested: next,
                    last: Lsn(next.0 - 1),
                });
            }
            rest = tail;
        }
        Ok(())
    }
}

/// Refuses LSNs for [`LogBackend::read_lsns`] that are not strictly ascending or hold
/// LSN 0, as [`Error::InvalidInput`](crate::Error::InvalidInput).
pub fn check_ascending(lsns: &[Lsn]) -> Result<()> {
    if lsns.first() == Some(&Lsn::ZERO) {
        return Err(crate::Error::invalid("lsns", "LSN 0 names no record"));
    }
    if let Some(w) = lsns.windows(2).find(|w| w[1] <= w[0]) {
        return Err(crate::Error::invalid(
            "lsns",
            format!("LSNs must be strictly ascending: {} follows {}", w[1], w[0]),
        ));
    }
    Ok(())
}

/// What [`LogBackend::open`] found, and the writer when opened writable.
pub struct Opened {
    /// What recovery found.
    pub recovery: Recovery,
    /// The writer (writable opens only).
    pub writer: Option<Box<dyn LogWriter>>,
}

/// What recovery found in the log.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// LSN of the last valid record (the start's LSN when there is none after it).
    pub last_lsn: Lsn,
    /// Records handed to the sink.
    pub replayed: u64,
    /// The damaged end that was cut (or, read-only, that would be), if any.
    pub torn: Option<TornTail>,
    /// How many files the log is made of (segments), for reports; 0 for a log in memory.
    pub files: usize,
}

/// Appends to a log. Only the engine's writer holds one.
pub trait LogWriter: Send {
    /// Empties `batch` for the next batch of records, with whatever flags the backend's
    /// format needs (the file log marks a batch written after a sync as proof that
    /// everything before it is durable).
    fn start_batch(&mut self, batch: &mut FrameBuf);
    /// Writes a batch whose first LSN is `last_lsn() + 1`. The batch is not durable until
    /// [`LogWriter::sync`] returns.
    fn append(&mut self, batch: &FrameBuf) -> Result<()>;
    /// Makes everything appended so far durable.
    ///
    /// A remote log may refuse a batch because another writer appended first
    /// ([`Error::LogConflict`](crate::Error::LogConflict), from `append` or `sync`). When
    /// nothing of the refused batch was stored, the writer says so by being back where it
    /// was before the batch (`last_lsn()` is the batch's first LSN minus one): the engine
    /// then refuses the batch's commands with the conflict and stays writable (a
    /// [`crate::Engine::catch_up`] takes in the other writer's records). Otherwise the
    /// engine is poisoned, as after any failed write.
    fn sync(&mut self) -> Result<()>;
    /// Makes everything appended so far durable and records the proof in the log, so that
    /// later damage to those records is refused as corruption rather than cut as a torn
    /// write (the file log writes a seal frame and syncs it). Called at a clean close.
    fn seal(&mut self) -> Result<()> {
        self.sync()
    }
    /// Right after a [`LogWriter::sync`] with nothing appended since: records the proof
    /// that everything so far is durable without syncing the proof itself. Returns whether
    /// it wrote anything, which then needs a sync like any append.
    fn seal_after_sync(&mut self) -> Result<bool> {
        Ok(false)
    }
    /// Takes in `records` (`(lsn, payload)`, in order, the first one `last_lsn() + 1`),
    /// which another writer appended to the log: the next append follows them. Called by
    /// [`crate::Engine::catch_up`] with nothing appended and not yet synced, all or
    /// nothing: on an error the writer is where it was. The default refuses: a log with
    /// one writer (the file log holds the data directory's lock) never has such records.
    fn caught_up(&mut self, records: &[(Lsn, &[u8])]) -> Result<()> {
        Err(crate::Error::InvalidInput {
            field: "log",
            reason: format!(
                "this log has one writer: {} record(s) after LSN {} were appended by \
                 another writer, which it cannot take in",
                records.len(),
                self.last_lsn()
            ),
        })
    }
    /// The LSN of the last appended record.
    fn last_lsn(&self) -> Lsn;
    /// Where the last appended record is, for snapshots to resume from cheaply.
    fn position(&self) -> LogPosition;
}

/// [`LogBackend::read`], decoded: `f(lsn, event)` for each record with `from <= lsn <= to`.
/// A record that does not decode is corruption at its place, like any other damage.
pub fn read_events(
    log: &dyn LogBackend,
    from: Lsn,
    to: Lsn,
    mut f: impl FnMut(Lsn, Event) -> Result<bool>,
) -> Result<()> {
    log.read(from, to, &mut |path, offset, lsn, payload| {
        f(
            lsn,
            crate::codec::decode_record(path, offset, lsn, payload)?,
        )
    })
}

/// [`LogBackend::read_lsns`], decoded: `f(lsn, event)` for the record at each of `lsns`
/// (strictly ascending). A record that does not decode is corruption at its place, like
/// any other damage.
pub fn read_events_at(
    log: &dyn LogBackend,
    lsns: &[Lsn],
    mut f: impl FnMut(Lsn, Event) -> Result<bool>,
) -> Result<()> {
    log.read_lsns(lsns, &mut |path, offset, lsn, payload| {
        f(
            lsn,
            crate::codec::decode_record(path, offset, lsn, payload)?,
        )
    })
}
