//! [`Wal`]: appends write batches to preallocated segments and syncs them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record;
use super::segment::{SEGMENT_HEADER_LEN, SEGMENT_VERSION, encode_header, segment_name};
use super::{FrameBuf, LogPosition, Recovered};
use crate::backend::LogWriter;
use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::types::Lsn;

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
    /// Opens the writer after [`super::recover`] (which must have run writable on the same
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
