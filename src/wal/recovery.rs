//! Recovery of the file log: walk every record after a starting point into a
//! [`RecordSink`] and decide, by `docs/format.md`'s recovery table, how the log ends
//! (clean, a torn tail to cut, or corruption).

use std::path::{Path, PathBuf};

use super::segment::{SEGMENT_HEADER_LEN, SegmentEnd, SegmentScan, parse_segment_name};
use super::{LogPosition, Recovered, SegmentInfo, TornTail, list_segments, record, scan_file};
use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage};
use crate::types::Lsn;

/// Where recovery starts reading: after a snapshot at `lsn`, optionally with the exact
/// position of record `lsn`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartPoint {
    /// Records up to and including this LSN are already in the state.
    pub lsn: Lsn,
    /// Position of record `lsn` (the last one the state includes), when known.
    pub position: Option<LogPosition>,
}

/// What [`recover_into`] hands the records to ([`recover`] takes a closure instead).
pub trait RecordSink {
    /// Takes record `lsn`, found at `offset` of `path`; an error stops recovery and is
    /// returned by it.
    fn record(&mut self, path: &Path, offset: u64, lsn: Lsn, payload: &[u8]) -> Result<()>;

    /// Called after the last record is handed over and before recovery changes anything on
    /// disk (cutting a torn tail). A sink that finishes its work later, on another thread,
    /// finishes it here, so its error stops recovery with the log unchanged.
    fn settle(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A closure as a [`RecordSink`].
struct FnSink<F>(F);

impl<F: FnMut(&Path, u64, Lsn, &[u8]) -> Result<()>> RecordSink for FnSink<F> {
    fn record(&mut self, path: &Path, offset: u64, lsn: Lsn, payload: &[u8]) -> Result<()> {
        (self.0)(path, offset, lsn, payload)
    }
}

/// Opens the log in `wal_dir` and walks every record after `start`, calling
/// `on_record(path, offset, lsn, payload)` for each in order ([`recover_into`] with a
/// closure).
pub fn recover(
    storage: &dyn Storage,
    wal_dir: &Path,
    quarantine_dir: &Path,
    start: StartPoint,
    writable: bool,
    on_record: impl FnMut(&Path, u64, Lsn, &[u8]) -> Result<()>,
) -> Result<Recovered> {
    let mut sink = FnSink(on_record);
    recover_into(storage, wal_dir, quarantine_dir, start, writable, &mut sink)
}

/// Opens the log in `wal_dir` and walks every record after `start`, handing each to `sink`
/// in order.
///
/// Decides, per `docs/format.md`'s recovery table: a clean end; a torn tail (reported in
/// [`Recovered::torn`], and — when `writable` — saved into `quarantine_dir`, zeroed and
/// synced, once `sink` has settled); or corruption, returned as an error naming the
/// segment and offset.
pub fn recover_into(
    storage: &dyn Storage,
    wal_dir: &Path,
    quarantine_dir: &Path,
    start: StartPoint,
    writable: bool,
    sink: &mut (impl RecordSink + ?Sized),
) -> Result<Recovered> {
    if writable {
        remove_temp_segments(storage, wal_dir)?;
    }
    let segments = list_segments(storage, wal_dir)?;
    let mut rec = Recovered {
        segments: segments.clone(),
        last_lsn: start.lsn,
        end: None,
        last_record: None,
        torn: None,
        replayed: 0,
        unsealed: false,
    };
    if segments.is_empty() {
        check_empty_log(wal_dir, start)?;
        return Ok(rec);
    }
    // The segment holding record `start.lsn + 1` (or the last one, if the log ends there).
    let want = start.lsn.next();
    let first_idx = segments
        .iter()
        .rposition(|s| s.first_lsn <= want)
        .unwrap_or(0);
    let mut expected = want;
    let mut callback_error: Option<Error> = None;
    rec.last_record = snapshot_record_before(storage, &segments, first_idx, start)?;
    for (i, seg) in segments.iter().enumerate().skip(first_idx) {
        let is_last = i + 1 == segments.len();
        let bytes = read_segment(storage, &seg.path)?;
        let (start_off, seg_expected) = if i == first_idx {
            resume_point(&bytes, seg, start)
        } else {
            check_follows(seg, expected)?;
            (SEGMENT_HEADER_LEN, seg.first_lsn)
        };
        let (scan, bytes) = scan_file(
            storage,
            &seg.path,
            bytes,
            start_off,
            seg_expected,
            !writable && is_last,
            |off, frame| {
                rec.last_record = Some(LogPosition {
                    segment: seg.first_lsn,
                    offset: off,
                });
                if frame.lsn < want {
                    return true;
                }
                match sink.record(&seg.path, off, frame.lsn, frame.payload) {
                    Ok(()) => {
                        rec.replayed += 1;
                        true
                    }
                    Err(e) => {
                        callback_error = Some(e);
                        false
                    }
                }
            },
        )?;
        if let Some(e) = callback_error.take() {
            return Err(e);
        }
        if let SegmentEnd::Corrupt { offset, reason } = &scan.end {
            return Err(Error::corruption(&seg.path, *offset, reason.clone()));
        }
        if is_last {
            check_reaches_snapshot(seg, &scan, start)?;
        }
        expected = scan.last_lsn.next();
        if is_last {
            rec.unsealed = scan.last_lsn >= proven_below(seg, &scan, start);
        }
        match scan.end {
            SegmentEnd::Clean { offset } => {
                if is_last {
                    rec.end = Some(LogPosition {
                        segment: seg.first_lsn,
                        offset,
                    });
                }
            }
            SegmentEnd::Corrupt { offset, reason } => {
                return Err(Error::corruption(&seg.path, offset, reason));
            }
            SegmentEnd::Torn {
                offset,
                damaged_end,
                reason,
            } => {
                if !is_last {
                    return Err(Error::corruption(
                        &seg.path,
                        offset,
                        format!("{reason}, and later segments follow"),
                    ));
                }
                let mut torn = TornTail {
                    file: seg.path.clone(),
                    offset,
                    bytes: damaged_end - offset,
                    lsn: expected,
                    reason,
                    saved_to: None,
                };
                if writable {
                    sink.settle()?;
                    torn.saved_to = Some(cut_torn_tail(
                        storage,
                        quarantine_dir,
                        &seg.path,
                        bytes,
                        offset,
                        damaged_end,
                    )?);
                }
                rec.end = Some(LogPosition {
                    segment: seg.first_lsn,
                    offset,
                });
                rec.torn = Some(torn);
            }
        }
    }
    sink.settle()?;
    rec.last_lsn = Lsn(expected.0 - 1);
    Ok(rec)
}

/// A log with no segments is new, unless a snapshot says records were written.
fn check_empty_log(wal_dir: &Path, start: StartPoint) -> Result<()> {
    if start.lsn != Lsn::ZERO {
        return Err(Error::corruption(
            wal_dir,
            0,
            format!(
                "the log has no segments, but the newest snapshot is at LSN {}; the log \
                 directory was emptied",
                start.lsn
            ),
        ));
    }
    Ok(())
}

fn read_segment(storage: &dyn Storage, path: &Path) -> Result<crate::storage::Bytes> {
    storage
        .read(path)
        .map_err(|e| Error::io("read segment", path, e))
}

/// When the snapshot's last record sits in an earlier segment than the first one read
/// (the snapshot ended a segment), that record is still the log's last one unless the
/// walk finds newer ones: its position, if it is really there.
fn snapshot_record_before(
    storage: &dyn Storage,
    segments: &[SegmentInfo],
    first_idx: usize,
    start: StartPoint,
) -> Result<Option<LogPosition>> {
    if start.lsn != Lsn::ZERO
        && let Some(pos) = start.position
        && pos.segment != segments[first_idx].first_lsn
        && let Some(seg) = segments.iter().find(|s| s.first_lsn == pos.segment)
    {
        let bytes = read_segment(storage, &seg.path)?;
        let off = pos.offset as usize;
        if (SEGMENT_HEADER_LEN..bytes.len()).contains(&off)
            && record::decode_frame(&bytes[off..]).is_ok_and(|f| f.lsn == start.lsn)
        {
            return Ok(Some(pos));
        }
    }
    Ok(None)
}

/// Where to start walking the first segment read, and the LSN expected there: directly at
/// the snapshot's last record when the snapshot told where it is and it is really there;
/// otherwise from the segment's header (a walk that also finds damage, or a log that ends
/// before the snapshot).
fn resume_point(bytes: &[u8], seg: &SegmentInfo, start: StartPoint) -> (usize, Lsn) {
    if start.lsn != Lsn::ZERO
        && let Some(pos) = start.position
        && pos.segment == seg.first_lsn
    {
        let off = pos.offset as usize;
        let found = (SEGMENT_HEADER_LEN..bytes.len())
            .contains(&off)
            .then(|| record::decode_frame(&bytes[off..]).ok())
            .flatten()
            .map(|f| f.lsn);
        if found == Some(start.lsn) {
            return (off, start.lsn);
        }
        tracing::warn!(
            segment = %seg.path.display(),
            offset = pos.offset,
            lsn = %start.lsn,
            "the snapshot's log position does not hold its last record; walking the segment"
        );
    }
    (SEGMENT_HEADER_LEN, seg.first_lsn)
}

/// A later segment must start where the previous one ended.
fn check_follows(seg: &SegmentInfo, expected: Lsn) -> Result<()> {
    if seg.first_lsn != expected {
        return Err(Error::corruption(
            &seg.path,
            16,
            format!(
                "segment starts at LSN {} but the previous segment ended at LSN {}",
                seg.first_lsn,
                expected.0 - 1
            ),
        ));
    }
    Ok(())
}

/// The last segment must not end before the snapshot's last record: the log would have
/// lost records the snapshot says were durable.
fn check_reaches_snapshot(seg: &SegmentInfo, scan: &SegmentScan, start: StartPoint) -> Result<()> {
    if scan.last_lsn.next() < start.lsn.next() {
        let at = match &scan.end {
            SegmentEnd::Clean { offset } | SegmentEnd::Torn { offset, .. } => *offset,
            SegmentEnd::Corrupt { offset, .. } => *offset,
        };
        return Err(Error::corruption(
            &seg.path,
            at,
            format!(
                "the log ends at LSN {} but the snapshot is at LSN {}",
                scan.last_lsn, start.lsn
            ),
        ));
    }
    Ok(())
}

/// The first LSN of the last segment that nothing proves durable: everything before a
/// seal, a snapshot, or (for records of earlier segments) the existence of this segment is.
fn proven_below(seg: &SegmentInfo, scan: &SegmentScan, start: StartPoint) -> Lsn {
    [
        start.lsn.next(),
        seg.first_lsn,
        scan.sealed_before.unwrap_or(Lsn::ZERO),
    ]
    .into_iter()
    .max()
    .unwrap_or(Lsn::ZERO)
}

/// Cuts the torn tail of the segment at `path` (its content `bytes`): saves the damaged
/// bytes `offset..damaged_end` aside in `quarantine_dir`, then zeroes and syncs them.
/// Returns where they were saved.
fn cut_torn_tail(
    storage: &dyn Storage,
    quarantine_dir: &Path,
    path: &Path,
    bytes: crate::storage::Bytes,
    offset: u64,
    damaged_end: u64,
) -> Result<PathBuf> {
    zero_aside(
        storage,
        quarantine_dir,
        path,
        bytes,
        offset,
        damaged_end,
        "cut torn tail",
    )
}

/// Saves the bytes `offset..end` of the segment at `path` (its content `bytes`) aside in
/// `quarantine_dir`, then zeroes and syncs them in the segment (`op` names that write in
/// an error). Returns where they were saved.
pub(crate) fn zero_aside(
    storage: &dyn Storage,
    quarantine_dir: &Path,
    path: &Path,
    bytes: crate::storage::Bytes,
    offset: u64,
    end: u64,
    op: &'static str,
) -> Result<PathBuf> {
    let damaged = &bytes[offset as usize..end as usize];
    let saved = save_aside(storage, quarantine_dir, path, offset, damaged)?;
    let zeros = vec![0u8; damaged.len()];
    drop(bytes);
    let mut f = storage
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open segment", path, e))?;
    f.write_at(offset, &zeros)
        .map_err(|e| Error::io(op, path, e))?;
    f.sync_data()
        .map_err(|e| Error::io("sync segment", path, e))?;
    Ok(saved)
}

/// Copies `damaged` bytes (found in `file` at `offset`) into a new file in `quarantine_dir`
/// and returns its path. The copy is synced before anything is changed in `file`.
pub fn save_aside(
    storage: &dyn Storage,
    quarantine_dir: &Path,
    file: &Path,
    offset: u64,
    damaged: &[u8],
) -> Result<PathBuf> {
    crate::storage::create_dir_durable(storage, quarantine_dir)
        .map_err(|e| Error::io("create quarantine directory", quarantine_dir, e))?;
    let stem = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut n = 0u32;
    let path = loop {
        let candidate = quarantine_dir.join(format!("{stem}.at-{offset}.{n}.bin"));
        if !storage
            .exists(&candidate)
            .map_err(|e| Error::io("check quarantine file", &candidate, e))?
        {
            break candidate;
        }
        n += 1;
    };
    let mut f = storage
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| Error::io("create quarantine file", &path, e))?;
    f.write_at(0, damaged)
        .map_err(|e| Error::io("write quarantine file", &path, e))?;
    f.sync_all()
        .map_err(|e| Error::io("sync quarantine file", &path, e))?;
    storage
        .sync_dir(quarantine_dir)
        .map_err(|e| Error::io("sync quarantine directory", quarantine_dir, e))?;
    Ok(path)
}

fn remove_temp_segments(storage: &dyn Storage, wal_dir: &Path) -> Result<()> {
    let names = match storage.list_dir(wal_dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list log directory", wal_dir, e)),
    };
    for name in names {
        // A segment is created under a temporary name and renamed only once its header and
        // zero fill are durable, so a leftover temporary file holds no record.
        if let Some(stem) = name.strip_suffix(".tmp")
            && parse_segment_name(stem).is_some()
        {
            let p = wal_dir.join(&name);
            storage
                .remove_file(&p)
                .map_err(|e| Error::io("remove temporary segment", &p, e))?;
        }
    }
    Ok(())
}
