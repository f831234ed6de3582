//! Point reads by LSN: [`SegmentIndexes`], the sparse in-memory index of the file log that
//! [`crate::backend::FileLog`]'s `read_lsns` uses, so that reading one record of a large
//! log reads one segment's bytes, not the whole log.
//!
//! ```text
//! read_lsns([l1 < l2 < ...])
//!   list_dir(wal/) ── the segment holding each LSN, by the first LSNs in the file names
//!   per segment: its index, from the cache or built by one scan of the segment (the
//!                sequential reader's `scan_file`: every frame checked, the header and
//!                its place in the chain too); an LSN past the indexed end of a segment
//!                that may still grow extends the index from that end (same scan)
//!   per LSN: the span between the index entry at or before it and the next entry (at
//!            most INDEX_STRIDE records, INDEX_SPAN_BYTES of them), read with `read_at`
//!            and walked with `scan_segment`: every frame up to the LSN is checked as the
//!            reader checks it
//! ```
//!
//! Damage is never silent. A span that does not hold the records its index says it
//! holds drops the index; the segment is scanned again from its start, and damage found
//! by that scan is [`Error::Corruption`] naming the segment and the byte offset, classified
//! as the sequential reader classifies it (a damaged frame in a segment before the last,
//! or followed by a later synced frame or a seal, is corruption; in the last segment, a
//! torn tail ends the log). An index can go stale only when a writer's recovery cuts and
//! rewrites a tail a reader had indexed; the rescan then serves the log as it now is. An
//! LSN past the end of the log is [`Error::LsnOutOfRange`]; an LSN in a hole (a segment
//! ending before the next one starts) is corruption naming the next segment, offset 16,
//! as [`super::LogReader`] reports it.
//!
//! A span (the records from one index entry to the next) holds at most [`INDEX_STRIDE`]
//! records and, when it holds more than one, starts less than [`INDEX_SPAN_BYTES`] before
//! its last record. The cache holds the indexes of at most [`INDEX_CACHE_SEGMENTS`]
//! segments (the least recently used is dropped): 16 bytes per entry, one entry per
//! [`INDEX_STRIDE`] records or [`INDEX_SPAN_BYTES`] of records, whichever comes first, so
//! at most `segment_bytes / 84 + 16 * (segment_bytes / 1 MiB + 1)` bytes per segment (a
//! frame is at least 21 bytes): 200 KiB for the default 16 MiB segment.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::reader::{scan_file, writer_active};
use super::record::decode_frame;
use super::segment::{SEGMENT_HEADER_LEN, SegmentEnd, parse_segment_name, scan_segment};
use super::{check_segment_header, read_full};
use crate::backend::ReadFn;
use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage};
use crate::types::Lsn;

/// An index entry at least every this many records of a segment: a point read reads at
/// most this many records once the segment is indexed.
pub const INDEX_STRIDE: u64 = 64;

/// An index entry also starts once the records since the last one reach this many bytes,
/// so that a span of large records stays small: a point read reads less than this plus
/// the record it wants (1 MiB).
pub const INDEX_SPAN_BYTES: u64 = 1 << 20;

/// The indexes of at most this many segments are kept (least recently used dropped).
pub const INDEX_CACHE_SEGMENTS: usize = 32;

/// The sparse index of one segment, up to the end of its valid records seen so far.
#[derive(Clone, Debug)]
struct SegmentIndex {
    /// `(lsn, offset)` of the first record of each span, ascending: the first record of
    /// the segment, then one at most [`INDEX_STRIDE`] records or, past
    /// [`INDEX_SPAN_BYTES`], one record later.
    entries: Vec<(Lsn, u64)>,
    /// LSN of the last valid record indexed (`first - 1` when none).
    end_lsn: Lsn,
    /// The offset just past that record's frame: where a scan for more resumes.
    end_offset: u64,
    /// How the segment ends, once that is settled (a segment that was not the last one
    /// when it was scanned to its end); `None` while it may still grow.
    settled: Option<Settled>,
}

#[derive(Clone, Debug)]
enum Settled {
    /// Only zeros follow the last record.
    Clean,
    /// The scan stopped at damage: [`Error::Corruption`] for any LSN after `end_lsn`.
    Damaged(Damage),
}

/// Where and why a scan of a segment stopped before its end.
#[derive(Clone, Debug)]
struct Damage {
    offset: u64,
    reason: String,
    /// Torn (nothing proves the damaged bytes were durable) rather than corrupt.
    torn: bool,
}

impl SegmentIndex {
    fn empty(first: Lsn) -> SegmentIndex {
        SegmentIndex {
            entries: Vec::new(),
            end_lsn: Lsn(first.0 - 1),
            end_offset: SEGMENT_HEADER_LEN as u64,
            settled: None,
        }
    }

    /// The byte range of the span holding `lsn` (which must be indexed), the LSN of its
    /// first record and of its last.
    fn span(&self, lsn: Lsn) -> (std::ops::Range<u64>, Lsn, Lsn) {
        let e = self.entries.partition_point(|x| x.0 <= lsn) - 1;
        let (span_first, start) = self.entries[e];
        let (span_last, end) = match self.entries.get(e + 1) {
            Some(&(next, offset)) => (Lsn(next.0 - 1), offset),
            None => (self.end_lsn, self.end_offset),
        };
        (start..end, span_first, span_last)
    }

    /// Notes the valid record `lsn` whose frame is `len` bytes at `offset`, the next one
    /// after `end_lsn`.
    fn push(&mut self, lsn: Lsn, offset: u64, len: u64) {
        let starts_span = match self.entries.last() {
            None => true,
            Some(&(l, o)) => lsn.0 - l.0 >= INDEX_STRIDE || offset - o >= INDEX_SPAN_BYTES,
        };
        if starts_span {
            self.entries.push((lsn, offset));
        }
        self.end_lsn = lsn;
        self.end_offset = offset + len;
    }
}

/// The point-read indexes of one file log's segments, bounded (see the module
/// documentation). Shared by the clones of a [`crate::backend::FileLog`].
#[derive(Default)]
pub struct SegmentIndexes {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    tick: u64,
    /// `(segment, index, last use)`.
    entries: Vec<(PathBuf, Arc<SegmentIndex>, u64)>,
}

impl std::fmt::Debug for SegmentIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.lock();
        write!(f, "SegmentIndexes({} segments)", c.entries.len())
    }
}

/// What reading one span gave.
enum Span {
    /// Every wanted record of the span was handed on; `true` to go on.
    Served(bool),
    /// The span is not what the index says: `delivered` records were handed on first.
    Damaged { delivered: usize, error: Error },
}

impl SegmentIndexes {
    /// No index yet.
    pub fn new() -> SegmentIndexes {
        SegmentIndexes::default()
    }

    /// How many segments are indexed now (at most [`INDEX_CACHE_SEGMENTS`]).
    pub fn cached_segments(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, path: &Path) -> Option<Arc<SegmentIndex>> {
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        let e = c.entries.iter_mut().find(|e| e.0 == path)?;
        e.2 = tick;
        Some(Arc::clone(&e.1))
    }

    fn put(&self, path: &Path, index: Arc<SegmentIndex>) {
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        if let Some(e) = c.entries.iter_mut().find(|e| e.0 == path) {
            *e = (path.to_path_buf(), index, tick);
            return;
        }
        if c.entries.len() >= INDEX_CACHE_SEGMENTS
            && let Some(oldest) = (0..c.entries.len()).min_by_key(|&i| c.entries[i].2)
        {
            c.entries.swap_remove(oldest);
        }
        c.entries.push((path.to_path_buf(), index, tick));
    }

    fn forget(&self, path: &Path) {
        self.lock().entries.retain(|e| e.0 != path);
    }

    /// Calls `f(segment, offset, lsn, payload)` for each of `lsns` (strictly ascending,
    /// none zero: the caller checks) of the log in `wal_dir`, in order, until it returns
    /// `Ok(false)`. An LSN the log does not have is an error once the ones before it
    /// have been handed on (see the module documentation).
    pub fn read_lsns(
        &self,
        storage: &dyn Storage,
        wal_dir: &Path,
        lsns: &[Lsn],
        f: &mut ReadFn<'_>,
    ) -> Result<()> {
        let Some(&first_wanted) = lsns.first() else {
            return Ok(());
        };
        let segments = segment_names(storage, wal_dir)?;
        if segments.is_empty() {
            return Err(Error::LsnOutOfRange {
                requested: first_wanted,
                last: Lsn::ZERO,
            });
        }
        let mut rest = lsns;
        while let Some(&lsn) = rest.first() {
            let k = segments.partition_point(|s| s.0 <= lsn).saturating_sub(1);
            let n = match segments.get(k + 1) {
                Some(next) => rest.partition_point(|l| *l < next.0),
                None => rest.len(),
            };
            let (group, tail) = rest.split_at(n);
            if !self.read_in_segment(storage, &segments, k, group, f)? {
                return Ok(());
            }
            rest = tail;
        }
        Ok(())
    }

    /// [`SegmentIndexes::read_lsns`] for the LSNs `group`, all of which belong in segment
    /// `k` of `segments` (at or after its first LSN, before the next one's). Returns
    /// whether to go on.
    fn read_in_segment(
        &self,
        storage: &dyn Storage,
        segments: &[(Lsn, PathBuf)],
        k: usize,
        group: &[Lsn],
        f: &mut ReadFn<'_>,
    ) -> Result<bool> {
        let (first, path) = (segments[k].0, segments[k].1.as_path());
        let is_last = k + 1 == segments.len();
        let listed_prev = k.checked_sub(1).map(|j| segments[j].0);
        let want_last = group[group.len() - 1];
        let mut done = 0;
        // Whether the index in hand comes from a scan made by this call.
        let mut fresh = false;
        let mut index = self.get(path);
        loop {
            // The damage the last scan of this call stopped at, when not kept in the index
            // (the last segment's, which a later read scans again).
            let mut stopped_at: Option<Damage> = None;
            let mut idx = match index.take() {
                Some(i) => i,
                None => {
                    fresh = true;
                    let (i, d) = build(storage, path, first, listed_prev, is_last)?;
                    stopped_at = d;
                    let i = Arc::new(i);
                    self.put(path, Arc::clone(&i));
                    i
                }
            };
            if want_last > idx.end_lsn && idx.settled.is_none() && stopped_at.is_none() {
                let (i, d) = extend(storage, path, &idx, is_last)?;
                stopped_at = d;
                idx = Arc::new(i);
                self.put(path, Arc::clone(&idx));
            }
            while done < group.len() && group[done] <= idx.end_lsn {
                let (range, span_first, span_last) = idx.span(group[done]);
                let n = group[done..].partition_point(|l| *l <= span_last);
                let wanted = &group[done..done + n];
                match read_span(storage, path, range, span_first, wanted, f)? {
                    Span::Served(true) => done += n,
                    Span::Served(false) => return Ok(false),
                    Span::Damaged { delivered, error } => {
                        done += delivered;
                        if fresh {
                            return Err(error);
                        }
                        break;
                    }
                }
            }
            if done == group.len() {
                return Ok(true);
            }
            if !fresh {
                // Not in an index an earlier call made (or past it, extended from its end):
                // scan the segment from its start before saying the record is not there.
                // An index goes stale when a writer's recovery cut and rewrote a tail.
                self.forget(path);
                continue;
            }
            let lsn = group[done];
            let damage = match &idx.settled {
                Some(Settled::Damaged(d)) => Some(d),
                _ => stopped_at.as_ref(),
            };
            return Err(past_the_end(storage, segments, k, &idx, damage, lsn));
        }
    }
}

/// The error for `lsn`, which segment `k` (indexed as `idx`) should hold but does not.
fn past_the_end(
    storage: &dyn Storage,
    segments: &[(Lsn, PathBuf)],
    k: usize,
    idx: &SegmentIndex,
    damage: Option<&Damage>,
    lsn: Lsn,
) -> Error {
    let path = &segments[k].1;
    let is_last = k + 1 == segments.len();
    match damage {
        // The sequential reader's rule: damage before the end of the last segment's
        // records is corruption, and so is a torn tail anywhere but in the last segment.
        Some(d) if !d.torn || !is_last => Error::corruption(
            path,
            d.offset,
            format!("{}; LSN {lsn} cannot be read", d.reason),
        ),
        // A torn tail of the last segment ends the log; the record asked for is the
        // damaged one unless a writer may be writing it right now.
        Some(d) if lsn == idx.end_lsn.next() && !writer_active(storage, path) => Error::corruption(
            path,
            d.offset,
            format!("{}; LSN {lsn} cannot be read", d.reason),
        ),
        _ if is_last => Error::LsnOutOfRange {
            requested: lsn,
            last: idx.end_lsn,
        },
        _ => {
            let (next_first, next_path) = (segments[k + 1].0, &segments[k + 1].1);
            Error::corruption(
                next_path,
                16,
                format!(
                    "segment starts at LSN {next_first} but the previous segment ended at \
                     LSN {}: LSNs {}..={} are missing (LSN {lsn} was asked for)",
                    idx.end_lsn,
                    idx.end_lsn.next(),
                    next_first.0 - 1,
                ),
            )
        }
    }
}

/// The segments of `wal_dir` by their names alone, oldest first: `(first LSN, path)`.
fn segment_names(storage: &dyn Storage, wal_dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let mut out: Vec<(Lsn, PathBuf)> = super::list_segments_lenient(storage, wal_dir)?
        .into_iter()
        .filter_map(|p| {
            let first = p.file_name()?.to_str().and_then(parse_segment_name)?;
            Some((first, p))
        })
        .collect();
    out.sort_by_key(|s| s.0);
    Ok(out)
}

/// Indexes the segment at `path` from its start: reads it, checks its header and its place
/// after `listed_prev`, and scans every frame.
fn build(
    storage: &dyn Storage,
    path: &Path,
    first: Lsn,
    listed_prev: Option<Lsn>,
    is_last: bool,
) -> Result<(SegmentIndex, Option<Damage>)> {
    let bytes = storage
        .read(path)
        .map_err(|e| Error::io("read segment", path, e))?;
    check_segment_header(
        path,
        &bytes[..bytes.len().min(SEGMENT_HEADER_LEN)],
        first,
        listed_prev,
    )?;
    scan_on(storage, path, bytes, SegmentIndex::empty(first), is_last)
}

/// `idx` extended past its end by a scan of the segment from there.
fn extend(
    storage: &dyn Storage,
    path: &Path,
    idx: &SegmentIndex,
    is_last: bool,
) -> Result<(SegmentIndex, Option<Damage>)> {
    let bytes = storage
        .read(path)
        .map_err(|e| Error::io("read segment", path, e))?;
    scan_on(storage, path, bytes, idx.clone(), is_last)
}

/// Scans `bytes` (the segment at `path`) from `idx`'s end as the sequential reader does
/// (a live last segment read again where it looks damaged), adding an entry every
/// [`INDEX_STRIDE`] records. Damage is kept in the index for a segment before the last
/// (it no longer changes), and returned.
fn scan_on(
    storage: &dyn Storage,
    path: &Path,
    bytes: crate::storage::Bytes,
    mut idx: SegmentIndex,
    is_last: bool,
) -> Result<(SegmentIndex, Option<Damage>)> {
    let (start, expected) = (idx.end_offset as usize, idx.end_lsn.next());
    let (scan, _) = scan_file(
        storage,
        path,
        bytes,
        start,
        expected,
        is_last,
        |offset, frame| {
            idx.push(frame.lsn, offset, frame.len as u64);
            true
        },
    )?;
    let damage = match scan.end {
        SegmentEnd::Clean { .. } => None,
        SegmentEnd::Torn { offset, reason, .. } => Some(Damage {
            offset,
            reason,
            torn: true,
        }),
        SegmentEnd::Corrupt { offset, reason } => Some(Damage {
            offset,
            reason,
            torn: false,
        }),
    };
    if !is_last {
        idx.settled = Some(match &damage {
            None => Settled::Clean,
            Some(d) => Settled::Damaged(d.clone()),
        });
    }
    Ok((idx, damage))
}

/// Reads the bytes `range` of the segment at `path`, which its index says hold whole
/// frames from LSN `span_first` on, and hands on the records `wanted` (ascending, inside
/// the span), checking every frame up to the last of them as [`scan_segment`] does.
fn read_span(
    storage: &dyn Storage,
    path: &Path,
    range: std::ops::Range<u64>,
    span_first: Lsn,
    wanted: &[Lsn],
    f: &mut ReadFn<'_>,
) -> Result<Span> {
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    let n = {
        let mut file = storage
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io("open segment", path, e))?;
        read_full(&mut *file, range.start, &mut buf)
            .map_err(|e| Error::io("read segment", path, e))?
    };
    buf.truncate(n);
    let (mut delivered, mut go, mut err) = (0, true, None);
    let scan = scan_segment(&buf, 0, span_first, |offset, frame| {
        if frame.lsn != wanted[delivered] {
            return true;
        }
        match f(path, range.start + offset, frame.lsn, frame.payload) {
            Ok(true) => {
                delivered += 1;
                delivered < wanted.len()
            }
            Ok(false) => {
                go = false;
                false
            }
            Err(e) => {
                err = Some(e);
                false
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if !go || delivered == wanted.len() {
        return Ok(Span::Served(go));
    }
    // The scan stopped before the last wanted record. Its own reason may name offsets in
    // `buf`; this one names the frame at its place in the segment.
    let at = match scan.end {
        SegmentEnd::Clean { offset }
        | SegmentEnd::Torn { offset, .. }
        | SegmentEnd::Corrupt { offset, .. } => offset,
    };
    let expected = scan.last_lsn.next();
    let why = match decode_frame(&buf[(at as usize).min(buf.len())..]) {
        Err(e) => format!("{e} at the record with LSN {expected}"),
        Ok(frame) => format!(
            "record has LSN {} where LSN {expected} was expected",
            frame.lsn
        ),
    };
    Ok(Span::Damaged {
        delivered,
        error: Error::corruption(
            path,
            range.start + at,
            format!("{why} (read by LSN {})", wanted[delivered]),
        ),
    })
}
