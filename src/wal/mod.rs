//! The write-ahead log: checksummed record frames in preallocated segment files.
//!
//! * [`record`] owns the frame layout and the validity rule.
//! * [`segment`] owns the segment header, naming, and scanning one segment.
//! * [`recover`] (in `recovery.rs`) opens a log directory: checks every segment header, walks the records
//!   after a starting point, and decides clean end / torn tail / corruption.
//! * [`Wal`] appends write batches and syncs them: the writer half of
//!   [`crate::backend::FileLog`], the engine's default [`crate::backend::LogBackend`].
//! * [`LogReader`] reads records from any LSN for replay, export and subscriptions.
//! * [`SegmentIndexes`] (in `index.rs`) reads records by LSN through a sparse index of
//!   each segment, for point reads that must not scan the whole log.
//!
//! Architecture invariant: LSNs are dense and increasing across the whole log; a record
//! never spans two segments; the bytes after the last record of the last segment are zeros
//! once recovery has run (a torn tail is moved aside and zeroed before anything is written
//! after it).

mod index;
mod reader;
pub mod record;
mod recovery;
pub mod segment;
mod writer;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::types::Lsn;

pub use index::{INDEX_CACHE_SEGMENTS, INDEX_SPAN_BYTES, INDEX_STRIDE, SegmentIndexes};
pub use reader::LogReader;
use reader::scan_file;
pub use record::{FrameBuf, MAX_PAYLOAD_LEN};
pub(crate) use recovery::zero_aside;
pub use recovery::{RecordSink, StartPoint, recover, recover_into, save_aside};
use segment::{SEGMENT_HEADER_LEN, decode_header_full, parse_segment_name, segment_name};
pub use writer::{Wal, WalOptions};

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
        let listed_prev = out.last().map(|p| p.first_lsn);
        let h = check_segment_header(&path, &header[..n], first, listed_prev)?;
        out.push(SegmentInfo {
            first_lsn: first,
            path,
            version: h.version,
        });
    }
    Ok(out)
}

/// Checks the header `header` of the segment at `path`, named for LSN `first`, whose
/// predecessor in the listing starts at `listed_prev` (`None`: it is listed first): the
/// header is valid and names the same first LSN, the first segment starts at LSN 1, and a
/// format 2 header names the listed predecessor. Every listing and the point reader
/// ([`index`]) check a segment this one way.
pub(crate) fn check_segment_header(
    path: &Path,
    header: &[u8],
    first: Lsn,
    listed_prev: Option<Lsn>,
) -> Result<segment::SegmentHeader> {
    let h = decode_header_full(path, header)?;
    let in_header = h.first_lsn;
    if in_header != first {
        return Err(Error::corruption(
            path,
            16,
            format!("segment header says first LSN {in_header}, its name says {first}"),
        ));
    }
    if let Some(prev) = listed_prev
        && prev >= first
    {
        return Err(Error::corruption(
            path,
            16,
            "segment first LSNs are not increasing",
        ));
    }
    if listed_prev.is_none() && first != Lsn(1) {
        return Err(Error::corruption(
            path,
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
            path,
            24,
            format!("the log has a gap before this segment: {gap}"),
        ));
    }
    Ok(h)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::LogWriter;
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
