//! The file backend: the write-ahead log of [`crate::wal`] in a data directory's `wal/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{LogBackend, Opened, RecordSink, Recovery, StartPoint};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::types::Lsn;
use crate::wal::{self, LogReader, SegmentIndexes, Wal, WalOptions};

/// The write-ahead log in `wal/` (segments of checksummed frames, seals, torn-tail and
/// damage rules of `docs/format.md`): the engine's default backend.
#[derive(Clone, Debug)]
pub struct FileLog {
    storage: Arc<dyn Storage>,
    wal: PathBuf,
    quarantine: PathBuf,
    options: WalOptions,
    /// The sparse per-segment indexes of [`LogBackend::read_lsns`], shared by clones.
    indexes: Arc<SegmentIndexes>,
}

impl FileLog {
    /// The log in `wal_dir`; torn tails cut at a writable open are saved into
    /// `quarantine_dir`; new segments are preallocated to `segment_bytes`.
    pub fn new(
        storage: Arc<dyn Storage>,
        wal_dir: &Path,
        quarantine_dir: &Path,
        segment_bytes: u64,
    ) -> FileLog {
        FileLog {
            storage,
            wal: wal_dir.to_path_buf(),
            quarantine: quarantine_dir.to_path_buf(),
            options: WalOptions { segment_bytes },
            indexes: Arc::new(SegmentIndexes::new()),
        }
    }

    /// How many segments' point-read indexes are held now (at most
    /// [`wal::INDEX_CACHE_SEGMENTS`]), for tests and reports.
    pub fn indexed_segments(&self) -> usize {
        self.indexes.cached_segments()
    }
}

/// A `&mut dyn RecordSink` handed on to [`wal::recover_into`].
struct Sink<'a>(&'a mut dyn RecordSink);

impl RecordSink for Sink<'_> {
    fn record(&mut self, path: &Path, offset: u64, lsn: Lsn, payload: &[u8]) -> Result<()> {
        self.0.record(path, offset, lsn, payload)
    }

    fn settle(&mut self) -> Result<()> {
        self.0.settle()
    }
}

impl LogBackend for FileLog {
    fn open(&self, start: StartPoint, writable: bool, sink: &mut dyn RecordSink) -> Result<Opened> {
        let storage = &*self.storage;
        if writable {
            read_unproven_tail_from_the_device(storage, &self.wal, &start)?;
        }
        let recovered = wal::recover_into(
            storage,
            &self.wal,
            &self.quarantine,
            start,
            writable,
            &mut Sink(sink),
        )?;
        let writer = if writable {
            let w = Wal::open(
                Arc::clone(&self.storage),
                &self.wal,
                &recovered,
                self.options,
            )?;
            Some(Box::new(w) as Box<dyn super::LogWriter>)
        } else {
            None
        };
        Ok(Opened {
            recovery: Recovery {
                last_lsn: recovered.last_lsn,
                replayed: recovered.replayed,
                torn: recovered.torn,
                // A writable open of an empty log created its first segment.
                files: recovered.segments.len().max(usize::from(writable)),
            },
            writer,
        })
    }

    fn read(&self, from: Lsn, to: Lsn, f: &mut super::ReadFn<'_>) -> Result<()> {
        LogReader::new(Arc::clone(&self.storage), &self.wal).for_each_at(from, to, f)
    }

    /// Finds the segment of each LSN by the first LSNs in the segments' names, then the
    /// record through the segment's sparse index (built by one checked scan of the segment
    /// the first time it is read, extended from its end when a record past it is asked
    /// for): see [`SegmentIndexes`].
    fn read_lsns(&self, lsns: &[Lsn], f: &mut super::ReadFn<'_>) -> Result<()> {
        super::check_ascending(lsns)?;
        self.indexes.read_lsns(&*self.storage, &self.wal, lsns, f)
    }
}

/// A previous writer whose fsync failed may have left records that only the page cache
/// holds (Linux marks such pages clean and keeps showing them). Before a writer builds on
/// the log, the part no sync is known to have covered is dropped from the cache, so that
/// recovery reads it from the device: the written part of the last two segments (a failed
/// sync covers at most the last one and, at a rollover, the one before), but nothing
/// before the snapshot's last record (a snapshot is taken only once the log is durable up
/// to it).
fn read_unproven_tail_from_the_device(
    storage: &dyn Storage,
    wal_dir: &Path,
    start: &StartPoint,
) -> Result<()> {
    let first_lsn = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(wal::segment::parse_segment_name)
    };
    let segments = wal::list_segments_lenient(storage, wal_dir)?;
    let proven = start
        .position
        .filter(|p| segments.iter().any(|s| first_lsn(s) == Some(p.segment)));
    for seg in segments.iter().rev().take(2) {
        let first = first_lsn(seg);
        let from = match proven {
            Some(p) if first < Some(p.segment) => continue,
            Some(p) if first == Some(p.segment) => p.offset,
            _ => 0,
        };
        let written = storage
            .read(seg)
            .map(|b| wal::segment::nonzero_end(&b) as u64)
            .map_err(|e| Error::io("read segment", seg, e))?;
        if written > from {
            storage
                .drop_cached(seg, from..written)
                .map_err(|e| Error::io("drop cached pages of", seg, e))?;
        }
    }
    Ok(())
}
