//! [`LogReader`]: records from any LSN, for replay, export and subscriptions, read from
//! segments another thread or process may be appending to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::list_segments;
use super::record;
use super::segment::{SEGMENT_HEADER_LEN, SegmentEnd, SegmentScan, scan_segment};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::types::Lsn;

/// How many times a reader reads the last segment again when it looks corrupt.
const LIVE_RETRIES: usize = 8;
/// How long a reader waits, in all, for a torn-looking tail of a live segment to become a
/// valid record (a write in progress) before it reports a torn tail.
const LIVE_TORN_WAIT: std::time::Duration = std::time::Duration::from_millis(40);

/// Scans the segment at `path` (whose content is `bytes`) like [`scan_segment`]. When
/// `live` (another thread or process may be appending to it) and the scan ends in
/// corruption, the segment is read again and the scan resumes at the damage: a reader
/// racing the writer can see a frame of a later write before one of an earlier write that
/// it looked at a moment earlier, and that is not damage. Real damage is still there after
/// every retry. A torn-looking tail of a live segment is likewise read again, after short
/// pauses, until it is a valid record or [`LIVE_TORN_WAIT`] has passed with the same
/// bytes: a write in progress is not a torn write.
pub(super) fn scan_file(
    storage: &dyn Storage,
    path: &Path,
    mut bytes: crate::storage::Bytes,
    start: usize,
    expected: Lsn,
    live: bool,
    mut on_record: impl FnMut(u64, &record::Frame<'_>) -> bool,
) -> Result<(SegmentScan, crate::storage::Bytes)> {
    let (mut off, mut exp) = (start, expected);
    let mut retries = 0;
    let mut torn_wait = std::time::Duration::from_millis(1);
    let mut torn_seen: Option<Vec<u8>> = None;
    let mut sealed_before = None;
    loop {
        let mut scan = scan_segment(&bytes, off, exp, &mut on_record);
        sealed_before = scan.sealed_before.or(sealed_before);
        scan.sealed_before = sealed_before;
        match &scan.end {
            SegmentEnd::Corrupt { offset, .. } if live && retries < LIVE_RETRIES => {
                // The retries count per place: a reader that follows a busy writer's tail
                // may pass many such views.
                retries = if *offset as usize == off {
                    retries + 1
                } else {
                    1
                };
                off = *offset as usize;
                std::thread::yield_now();
            }
            SegmentEnd::Torn {
                offset,
                damaged_end,
                ..
            } if live && torn_wait < LIVE_TORN_WAIT && writer_active(storage, path) => {
                let damaged = bytes[*offset as usize..*damaged_end as usize].to_vec();
                if torn_seen.as_ref() == Some(&damaged) {
                    torn_wait *= 4;
                } else {
                    torn_wait = std::time::Duration::from_millis(1);
                }
                torn_seen = Some(damaged);
                off = *offset as usize;
                std::thread::sleep(torn_wait);
            }
            _ => return Ok((scan, bytes)),
        }
        exp = scan.last_lsn.next();
        drop(bytes);
        bytes = storage
            .read(path)
            .map_err(|e| Error::io("read segment", path, e))?;
    }
}

/// Whether a writer holds the lock of the data directory that the segment at `path` belongs
/// to (`<root>/LOCK`, `<root>/wal/<segment>`), so that a torn-looking tail may be a write in
/// progress. When that cannot be told, it may be.
pub(super) fn writer_active(storage: &dyn Storage, segment: &Path) -> bool {
    match segment.parent().and_then(Path::parent) {
        Some(root) => storage.is_locked(&root.join("LOCK")).unwrap_or(true),
        None => true,
    }
}

/// Reads records from the file log, for replay, export and subscriptions. Works on a
/// directory another process is writing: a record being written is simply not there yet.
#[derive(Debug, Clone)]
pub struct LogReader {
    storage: Arc<dyn Storage>,
    wal_dir: PathBuf,
}

impl LogReader {
    /// A reader of the log in `wal_dir`.
    pub fn new(storage: Arc<dyn Storage>, wal_dir: &Path) -> LogReader {
        LogReader {
            storage,
            wal_dir: wal_dir.to_path_buf(),
        }
    }

    /// Calls `f(lsn, payload)` for each record with `from <= lsn <= to`, in order, stopping
    /// early when `f` returns `Ok(false)`. Stops at the end of the valid log; corruption
    /// before that is an error naming the file and offset.
    pub fn for_each(
        &self,
        from: Lsn,
        to: Lsn,
        mut f: impl FnMut(Lsn, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.for_each_at(from, to, |_, _, lsn, payload| f(lsn, payload))
    }

    /// Calls `f(lsn, event)` for each record with `from <= lsn <= to`, decoded, in order,
    /// stopping early when `f` returns `Ok(false)`. A record that does not decode is
    /// corruption naming its segment and byte offset (as every other damage is).
    pub fn for_each_event(
        &self,
        from: Lsn,
        to: Lsn,
        mut f: impl FnMut(Lsn, crate::event::Event) -> Result<bool>,
    ) -> Result<()> {
        self.for_each_at(from, to, |path, offset, lsn, payload| {
            f(
                lsn,
                crate::codec::decode_record(path, offset, lsn, payload)?,
            )
        })
    }

    /// [`LogReader::for_each`] with each record's place: `f(segment, offset, lsn,
    /// payload)`, the offset that of the record's frame in its segment.
    pub fn for_each_at(
        &self,
        from: Lsn,
        to: Lsn,
        mut f: impl FnMut(&Path, u64, Lsn, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        if from > to {
            return Ok(());
        }
        let segments = list_segments(&*self.storage, &self.wal_dir)?;
        let first_idx = segments
            .iter()
            .rposition(|s| s.first_lsn <= from.max(Lsn(1)))
            .unwrap_or(0);
        let mut err: Option<Error> = None;
        // The LSN the next segment must start at (unknown until a segment has been read).
        let mut expected: Option<Lsn> = None;
        for (i, seg) in segments.iter().enumerate().skip(first_idx) {
            if seg.first_lsn > to {
                break;
            }
            if let Some(e) = expected
                && seg.first_lsn != e
            {
                let what = if seg.first_lsn > e {
                    format!("LSNs {e}..={} are missing", seg.first_lsn.0 - 1)
                } else {
                    "the segments overlap".to_string()
                };
                return Err(Error::corruption(
                    &seg.path,
                    16,
                    format!(
                        "segment starts at LSN {} but the previous segment ended at LSN {}: \
                         {what}",
                        seg.first_lsn,
                        e.0 - 1,
                    ),
                ));
            }
            let bytes = self
                .storage
                .read(&seg.path)
                .map_err(|e| Error::io("read segment", &seg.path, e))?;
            let mut stop = false;
            let is_last = i + 1 == segments.len();
            let (scan, _) = scan_file(
                &*self.storage,
                &seg.path,
                bytes,
                SEGMENT_HEADER_LEN,
                seg.first_lsn,
                is_last,
                |offset, frame| {
                    if frame.lsn < from {
                        return true;
                    }
                    if frame.lsn > to {
                        stop = true;
                        return false;
                    }
                    match f(&seg.path, offset, frame.lsn, frame.payload) {
                        // Nothing after `to` is looked at: past it, the log may be being
                        // written right now.
                        Ok(true) if frame.lsn < to => true,
                        Ok(_) => {
                            stop = true;
                            false
                        }
                        Err(e) => {
                            err = Some(e);
                            false
                        }
                    }
                },
            )?;
            if let Some(e) = err.take() {
                return Err(e);
            }
            if stop {
                return Ok(());
            }
            expected = Some(scan.last_lsn.next());
            match scan.end {
                SegmentEnd::Clean { .. } => {}
                SegmentEnd::Corrupt { offset, reason } => {
                    return Err(Error::corruption(&seg.path, offset, reason));
                }
                SegmentEnd::Torn { offset, reason, .. } => {
                    if i + 1 < segments.len() {
                        return Err(Error::corruption(&seg.path, offset, reason));
                    }
                }
            }
        }
        Ok(())
    }
}
