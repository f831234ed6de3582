//! The write-ahead log: checksummed record frames in preallocated segment files.
//!
//! * [`record`] owns the frame layout and the validity rule.
//! * [`segment`] owns the segment header, naming, and scanning one segment.
//! * [`recover`] (in `recovery.rs`) opens a log directory: checks every segment header, walks the records
//!   after a starting point, and decides clean end / torn tail / corruption.
//! * [`Wal`] appends write batches and syncs them: the writer half of
//!   [`crate::backend::FileLog`], the engine's default [`crate::backend::LogBackend`].
//! * [`LogReader`] reads records from any LSN for replay, export and subscriptions.
//!
//! Architecture invariant: LSNs are dense and increasing across the whole log; a record
//! never spans two segments; the bytes after the last record of the last segment are zeros
//! once recovery has run (a torn tail is moved aside and zeroed before anything is written
//! after it).

pub mod record;
mod recovery;
pub mod segment;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::LogWriter;
use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::types::Lsn;

pub use record::{FrameBuf, MAX_PAYLOAD_LEN};
pub use recovery::{RecordSink, StartPoint, recover, recover_into, save_aside};
use segment::{
    SEGMENT_HEADER_LEN, SEGMENT_VERSION, SegmentEnd, SegmentScan, decode_header_full,
    encode_header, parse_segment_name, scan_segment, segment_name,
};

/// A position in the file log: the segment (by its first LSN) and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPosition {
    /// First LSN of the segment.
    pub segment: Lsn,
    /// Byte offset inside that segment.
    pub offset: u64,
}

/// A segment file found in the log directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// LSN of its first record (from the file name, checked against the header).
    pub first_lsn: Lsn,
    /// Its path.
    pub path: PathBuf,
    /// Its format version.
    pub version: u32,
}

/// What recovery cut from the end of the log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    /// The segment that was torn.
    pub file: PathBuf,
    /// Offset of the first damaged byte.
    pub offset: u64,
    /// Number of damaged bytes (up to the last non-zero byte).
    pub bytes: u64,
    /// The LSN the damaged record would have had.
    pub lsn: Lsn,
    /// Why the record is invalid.
    pub reason: String,
    /// Where the damaged bytes were saved (writable opens only).
    pub saved_to: Option<PathBuf>,
}

/// The result of [`recover`].
#[derive(Debug)]
pub struct Recovered {
    /// Every segment, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// LSN of the last valid record.
    pub last_lsn: Lsn,
    /// Where the next record goes (in the last segment), if there is a segment.
    pub end: Option<LogPosition>,
    /// Where the last valid record is, if there is one.
    pub last_record: Option<LogPosition>,
    /// The torn tail found at the end, if any.
    pub torn: Option<TornTail>,
    /// Number of records passed to the callback.
    pub replayed: u64,
    /// Whether the log ends in records that nothing proves durable (no seal after them,
    /// no snapshot at or after them, no later segment): after a crash, the last write.
    pub unsealed: bool,
}

/// Lists the segment files of `wal_dir`, oldest first, checking their headers and that
/// the chain is complete: the first starts at LSN 1 and each format 2 header names its
/// predecessor, so a missing segment is an error naming the missing LSNs.
pub fn list_segments(storage: &dyn Storage, wal_dir: &Path) -> Result<Vec<SegmentInfo>> {
    let names = match storage.list_dir(wal_dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list log directory", wal_dir, e)),
    };
    let mut out: Vec<SegmentInfo> = Vec::new();
    for name in names {
        let Some(first) = parse_segment_name(&name) else {
            continue;
        };
        let path = wal_dir.join(&name);
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        let n = {
            let mut f = storage
                .open(&path, OpenMode::Read)
                .map_err(|e| Error::io("open segment", &path, e))?;
            read_full(&mut *f, 0, &mut header).map_err(|e| Error::io("read segment", &path, e))?
        };
        let h = decode_header_full(&path, &header[..n])?;
        let in_header = h.first_lsn;
        if in_header != first {
            return Err(Error::corruption(
                &path,
                16,
                format!("segment header says first LSN {in_header}, its name says {first}"),
            ));
        }
        if let Some(prev) = out.last()
            && prev.first_lsn >= first
        {
            return Err(Error::corruption(
                &path,
                16,
                "segment first LSNs are not increasing",
            ));
        }
        let listed_prev = out.last().map(|p| p.first_lsn);
        if listed_prev.is_none() && first != Lsn(1) {
            return Err(Error::corruption(
                &path,
                16,
                format!(
                    "the first segment starts at LSN {first}, not 1: LSNs 1..={} are missing",
                    first.0 - 1
                ),
            ));
        }
        if let Some(prev) = h.prev_first_lsn
            && listed_prev != Some(prev)
        {
            let gap = match listed_prev {
                Some(p) if p > prev => format!(
                    "segment {} lies inside the previous segment's LSNs",
                    segment_name(p)
                ),
                _ => format!(
                    "segment {} (LSNs {prev}..={}) is missing",
                    segment_name(prev),
                    first.0 - 1
                ),
            };
            return Err(Error::corruption(
                &path,
                24,
                format!("the log has a gap before this segment: {gap}"),
            ));
        }
        out.push(SegmentInfo {
            first_lsn: first,
            path,
            version: h.version,
        });
    }
    Ok(out)
}

/// The paths of files in `wal_dir` named like segments, oldest first, without reading
/// them (for repair, which must cope with damaged headers).
pub fn list_segments_lenient(storage: &dyn Storage, wal_dir: &Path) -> Result<Vec<PathBuf>> {
    match storage.list_dir(wal_dir) {
        Ok(names) => Ok(names
            .iter()
            .filter(|n| parse_segment_name(n).is_some())
            .map(|n| wal_dir.join(n))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("list log directory", wal_dir, e)),
    }
}

fn read_full(f: &mut dyn StorageFile, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

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
fn scan_file(
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
fn writer_active(storage: &dyn Storage, segment: &Path) -> bool {
    match segment.parent().and_then(Path::parent) {
        Some(root) => storage.is_locked(&root.join("LOCK")).unwrap_or(true),
        None => true,
    }
}

/// Settings of the file log.
#[derive(Clone, Copy, Debug)]
pub struct WalOptions {
    /// Size of each preallocated segment file.
    pub segment_bytes: u64,
}

/// Creates a zero-filled segment of `size` bytes starting at `first`, atomically: it appears
/// under its final name only with its header and zeros durable.
///
/// When the creation fails, the temporary file is removed again (a failed preallocation on
/// a full disk must not keep the disk full).
fn create_segment(
    storage: &dyn Storage,
    wal_dir: &Path,
    first: Lsn,
    prev: Lsn,
    size: u64,
) -> Result<(PathBuf, Box<dyn StorageFile>)> {
    let tmp = wal_dir.join(format!("{}.tmp", segment_name(first)));
    let made = create_segment_via(storage, wal_dir, &tmp, first, prev, size);
    if made.is_err() {
        match storage.remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                file = %tmp.display(),
                error = %e,
                "could not remove the temporary file of a failed segment creation"
            ),
        }
    }
    made
}

fn create_segment_via(
    storage: &dyn Storage,
    wal_dir: &Path,
    tmp: &Path,
    first: Lsn,
    prev: Lsn,
    size: u64,
) -> Result<(PathBuf, Box<dyn StorageFile>)> {
    let path = wal_dir.join(segment_name(first));
    let mut f = storage
        .open(tmp, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create segment", tmp, e))?;
    f.write_at(0, &encode_header(first, prev))
        .map_err(|e| Error::io("write segment header", tmp, e))?;
    // Real zeros, not a sparse extent: overwriting allocated, zeroed blocks lets each
    // fdatasync skip the metadata update that growing a file costs.
    let zeros = vec![0u8; 1 << 20];
    let mut off = SEGMENT_HEADER_LEN as u64;
    while off < size {
        let n = (size - off).min(zeros.len() as u64) as usize;
        f.write_at(off, &zeros[..n])
            .map_err(|e| Error::io("preallocate segment", tmp, e))?;
        off += n as u64;
    }
    f.sync_all()
        .map_err(|e| Error::io("sync new segment", tmp, e))?;
    storage
        .rename(tmp, &path)
        .map_err(|e| Error::io("rename new segment", tmp, e))?;
    storage
        .sync_dir(wal_dir)
        .map_err(|e| Error::io("sync log directory", wal_dir, e))?;
    Ok((path, f))
}

/// The file log's writer: appends batches to the last segment, rolling over to a new
/// preallocated segment when a batch does not fit.
#[derive(Debug)]
pub struct Wal {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    options: WalOptions,
    file: Box<dyn StorageFile>,
    path: PathBuf,
    seg_first: Lsn,
    /// First LSN of the segment before the current one (`Lsn::ZERO` for the first).
    seg_prev: Lsn,
    seg_size: u64,
    offset: u64,
    last_lsn: Lsn,
    last_record: LogPosition,
    dirty: bool,
    /// Records were appended after the last seal (or the open found such records).
    unsealed: bool,
}

impl Wal {
    /// Opens the writer after [`recover`] (which must have run writable on the same
    /// directory). Creates the first segment of an empty log.
    pub fn open(
        storage: Arc<dyn Storage>,
        wal_dir: &Path,
        recovered: &Recovered,
        options: WalOptions,
    ) -> Result<Wal> {
        storage
            .create_dir_all(wal_dir)
            .map_err(|e| Error::io("create log directory", wal_dir, e))?;
        // A segment found at recovery may have been renamed into place by a process that
        // died, or whose directory sync failed, before the directory was synced. Its entry
        // must be durable before records this writer acknowledges go into it.
        storage
            .sync_dir(wal_dir)
            .map_err(|e| Error::io("sync log directory", wal_dir, e))?;
        // The first LSN of the last listed segment before `first`.
        let before = |first: Lsn| {
            recovered
                .segments
                .iter()
                .rev()
                .map(|s| s.first_lsn)
                .find(|&f| f < first)
                .unwrap_or(Lsn::ZERO)
        };
        let (path, mut file, seg_first, offset) = match (recovered.segments.last(), recovered.end) {
            (Some(seg), Some(end)) if seg.version == SEGMENT_VERSION => {
                let f = storage
                    .open(&seg.path, OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open segment", &seg.path, e))?;
                (seg.path.clone(), f, seg.first_lsn, end.offset)
            }
            // An empty log, or one whose last segment is of an older format (which has no
            // seals): start a new segment. The older one was made durable by the writer
            // that wrote it, or is synced here first.
            (last, _) => {
                if let Some(seg) = last {
                    storage
                        .open(&seg.path, OpenMode::ReadWrite)
                        .and_then(|mut f| f.sync_data())
                        .map_err(|e| Error::io("fsync segment", &seg.path, e))?;
                }
                let first = recovered.last_lsn.next();
                let (p, f) = create_segment(
                    &*storage,
                    wal_dir,
                    first,
                    before(first),
                    options.segment_bytes,
                )?;
                (p, f, first, SEGMENT_HEADER_LEN as u64)
            }
        };
        let seg_size = file
            .len()
            .map_err(|e| Error::io("stat segment", &path, e))?;
        // Records found at recovery may still sit unsynced in the page cache (the previous
        // process may have been killed in a buffered mode). Sync them once, so that the
        // SYNCED_BEFORE flag of the next batch tells the truth.
        file.sync_data()
            .map_err(|e| Error::io("fsync segment", &path, e))?;
        let mut wal = Wal {
            storage,
            dir: wal_dir.to_path_buf(),
            options,
            file,
            path,
            seg_first,
            seg_prev: before(seg_first),
            seg_size,
            offset,
            last_lsn: recovered.last_lsn,
            last_record: recovered.last_record.unwrap_or_default(),
            dirty: false,
            unsealed: recovered.unsealed && seg_first <= recovered.last_lsn,
        };
        // After a crash the log ends in records nothing proves durable; now that they are
        // synced, seal them, so that damage to them from now on is refused, not cut.
        wal.seal()?;
        Ok(wal)
    }

    fn roll(&mut self, batch_len: u64) -> Result<()> {
        if self.dirty {
            self.sync()?;
        }
        let first = self.last_lsn.next();
        let size = self
            .options
            .segment_bytes
            .max(SEGMENT_HEADER_LEN as u64 + batch_len);
        // An empty current segment too small for the batch is replaced, not followed.
        let prev = if first == self.seg_first {
            self.seg_prev
        } else {
            self.seg_first
        };
        let (path, file) = create_segment(&*self.storage, &self.dir, first, prev, size)?;
        self.file = file;
        self.path = path;
        self.seg_prev = prev;
        self.seg_first = first;
        self.seg_size = size;
        self.offset = SEGMENT_HEADER_LEN as u64;
        // The previous segment is durable and no longer last: nothing in it can be cut.
        self.unsealed = false;
        tracing::debug!(segment = %self.path.display(), "rolled over to a new segment");
        Ok(())
    }

    /// The segment being written.
    pub fn current_segment(&self) -> &Path {
        &self.path
    }
}

impl LogWriter for Wal {
    fn start_batch(&mut self, batch: &mut FrameBuf) {
        // A batch written after a sync says so: it proves everything before it durable.
        batch.reset(!self.dirty);
    }

    fn append(&mut self, batch: &FrameBuf) -> Result<()> {
        let Some(first) = batch.first_lsn() else {
            return Ok(());
        };
        assert_eq!(
            first,
            self.last_lsn.next(),
            "batch does not continue the log"
        );
        let bytes = batch.bytes();
        let len = bytes.len() as u64;
        if self.offset + len > self.seg_size {
            self.roll(len)?;
        }
        self.file
            .write_at(self.offset, bytes)
            .map_err(|e| Error::io("write segment", &self.path, e))?;
        self.last_record = LogPosition {
            segment: self.seg_first,
            offset: self.offset + batch.last_frame_start() as u64,
        };
        self.offset += len;
        self.last_lsn = batch.last_lsn().unwrap_or(self.last_lsn);
        self.dirty = true;
        self.unsealed = true;
        Ok(())
    }

    fn seal_after_sync(&mut self) -> Result<bool> {
        let seal = record::encode_seal(self.last_lsn.next());
        if self.dirty || !self.unsealed || self.offset + seal.len() as u64 > self.seg_size {
            return Ok(false);
        }
        self.file
            .write_at(self.offset, &seal)
            .map_err(|e| Error::io("write seal", &self.path, e))?;
        self.offset += seal.len() as u64;
        self.dirty = true;
        self.unsealed = false;
        Ok(true)
    }

    fn seal(&mut self) -> Result<()> {
        self.sync()?;
        if !self.unsealed {
            return Ok(());
        }
        let seal = record::encode_seal(self.last_lsn.next());
        if self.offset + seal.len() as u64 > self.seg_size {
            // No room: the next segment proves this one durable (a non-last segment is
            // never cut); start it now.
            return self.roll(0);
        }
        self.file
            .write_at(self.offset, &seal)
            .map_err(|e| Error::io("write seal", &self.path, e))?;
        self.offset += seal.len() as u64;
        self.dirty = true;
        self.sync()?;
        self.unsealed = false;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.file
                .sync_data()
                .map_err(|e| Error::io("fsync segment", &self.path, e))?;
            self.dirty = false;
        }
        Ok(())
    }

    fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    fn position(&self) -> LogPosition {
        self.last_record
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn open(storage: &Arc<dyn Storage>, seg: u64) -> (Wal, Recovered) {
        let rec = recover(
            &**storage,
            Path::new("wal"),
            Path::new("quarantine"),
            StartPoint::default(),
            true,
            |_, _, _, _| Ok(()),
        )
        .unwrap();
        let wal = Wal::open(
            Arc::clone(storage),
            Path::new("wal"),
            &rec,
            WalOptions { segment_bytes: seg },
        )
        .unwrap();
        (wal, rec)
    }

    fn append(wal: &mut Wal, payloads: &[&[u8]]) {
        let mut b = FrameBuf::new();
        b.reset(true);
        let mut lsn = wal.last_lsn().next();
        for p in payloads {
            b.begin(lsn).extend_from_slice(p);
            b.finish().unwrap();
            lsn = lsn.next();
        }
        wal.append(&b).unwrap();
        wal.sync().unwrap();
    }

    #[test]
    fn records_survive_reopen_and_roll_over_segments() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let (mut wal, _) = open(&storage, 256);
        for i in 0..50u32 {
            append(&mut wal, &[format!("record {i}").as_bytes()]);
        }
        drop(wal);
        let mut seen = Vec::new();
        let rec = recover(
            &*storage,
            Path::new("wal"),
            Path::new("quarantine"),
            StartPoint::default(),
            true,
            |_, _, lsn, p| {
                seen.push((lsn, p.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        assert!(rec.segments.len() > 5, "{} segments", rec.segments.len());
        assert_eq!(rec.last_lsn, Lsn(50));
        assert_eq!(seen.len(), 50);
        assert_eq!(seen[49].1, b"record 49");
        assert!(rec.torn.is_none());
        let reader = LogReader::new(Arc::clone(&storage), Path::new("wal"));
        let mut n = 0;
        reader
            .for_each(Lsn(10), Lsn(20), |_, _| {
                n += 1;
                Ok(true)
            })
            .unwrap();
        assert_eq!(n, 11);
    }
}
