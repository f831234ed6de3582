//! Snapshots: the whole state at an LSN, checksummed, written atomically.
//!
//! ```text
//! offset  size  field
//!      0     8  magic          b"SESSNAP\0"
//!      8     4  version        u32 LE (1)
//!     12     4  header_len     u32 LE (64): the payload starts here
//!     16     8  lsn            u64 LE: the state includes every record up to this LSN
//!     24     8  log_segment    u64 LE: first LSN of the segment holding record lsn (0 if lsn = 0)
//!     32     8  log_offset     u64 LE: byte offset of record lsn in that segment (0 if lsn = 0)
//!     40     8  payload_len    u64 LE
//!     48     4  payload_crc32  u32 LE: CRC-32 of the payload
//!     52     8  reserved       zero
//!     60     4  header_crc32   u32 LE: CRC-32 of bytes 0..60
//!     64     n  payload        `codec::encode_state`
//! ```
//!
//! Files are named `<lsn as 20 digits>.snap` in `snapshots/`. A snapshot is written to a
//! temporary file, synced, renamed into place and the directory synced, so a crash leaves
//! either the whole file or none. The newest valid snapshot is used at open; a damaged one
//! is skipped (and reported) in favour of an older one, or of a full replay.
//!
//! Architecture invariant: a snapshot is written only after the log is durable up to its
//! LSN, so a snapshot never describes records the log could lose.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::codec;
use crate::error::{Error, Result};
use crate::state::State;
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::types::{Lsn, u32_at, u64_at};
use crate::wal::LogPosition;

/// Snapshot magic bytes.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SESSNAP\0";
/// Current snapshot format version.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Header length.
pub const SNAPSHOT_HEADER_LEN: usize = 64;

const _: () = assert!(SNAPSHOT_HEADER_LEN == 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4);

/// The file name of the snapshot at `lsn`.
pub fn snapshot_name(lsn: Lsn) -> String {
    lsn.file_name("snap")
}

/// Parses a snapshot file name.
pub fn parse_snapshot_name(name: &str) -> Option<Lsn> {
    Lsn::from_file_name(name, "snap")
}

/// A snapshot's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The state's LSN.
    pub lsn: Lsn,
    /// Where record `lsn` is in the log.
    pub position: LogPosition,
    /// Payload length.
    pub payload_len: u64,
    /// Payload checksum.
    pub payload_crc: u32,
}

fn encode_header(h: &SnapshotHeader) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut b = [0u8; SNAPSHOT_HEADER_LEN];
    b[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    b[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(SNAPSHOT_HEADER_LEN as u32).to_le_bytes());
    b[16..24].copy_from_slice(&h.lsn.0.to_le_bytes());
    b[24..32].copy_from_slice(&h.position.segment.0.to_le_bytes());
    b[32..40].copy_from_slice(&h.position.offset.to_le_bytes());
    b[40..48].copy_from_slice(&h.payload_len.to_le_bytes());
    b[48..52].copy_from_slice(&h.payload_crc.to_le_bytes());
    let c = crc32fast::hash(&b[0..60]);
    b[60..64].copy_from_slice(&c.to_le_bytes());
    b
}

/// Checks and decodes a snapshot file's bytes. Errors name `path` and the offset.
pub fn decode_snapshot(path: &Path, bytes: &[u8]) -> Result<(SnapshotHeader, State)> {
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(Error::corruption(
            path,
            0,
            format!("snapshot is {} bytes, shorter than its header", bytes.len()),
        ));
    }
    let h = &bytes[..SNAPSHOT_HEADER_LEN];
    if h[0..8] != SNAPSHOT_MAGIC {
        return Err(Error::corruption(path, 0, "bad snapshot magic"));
    }
    if crc32fast::hash(&h[0..60]) != u32_at(h, 60) {
        return Err(Error::corruption(
            path,
            60,
            "snapshot header checksum mismatch",
        ));
    }
    let version = u32_at(h, 8);
    if version != SNAPSHOT_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    if u32_at(h, 12) as usize != SNAPSHOT_HEADER_LEN {
        return Err(Error::corruption(path, 12, "bad snapshot header length"));
    }
    let header = SnapshotHeader {
        lsn: Lsn(u64_at(h, 16)),
        position: LogPosition {
            segment: Lsn(u64_at(h, 24)),
            offset: u64_at(h, 32),
        },
        payload_len: u64_at(h, 40),
        payload_crc: u32_at(h, 48),
    };
    if header.lsn > Lsn::MAX {
        return Err(Error::corruption(
            path,
            16,
            format!("snapshot LSN {} is above {}", header.lsn, Lsn::MAX),
        ));
    }
    if header.position.segment > Lsn::MAX {
        return Err(Error::corruption(
            path,
            24,
            format!(
                "snapshot log segment {} is above {}",
                header.position.segment,
                Lsn::MAX
            ),
        ));
    }
    let payload = &bytes[SNAPSHOT_HEADER_LEN..];
    if payload.len() as u64 != header.payload_len {
        return Err(Error::corruption(
            path,
            40,
            format!(
                "snapshot payload is {} bytes, its header says {}",
                payload.len(),
                header.payload_len
            ),
        ));
    }
    if crc32fast::hash(payload) != header.payload_crc {
        return Err(Error::corruption(
            path,
            SNAPSHOT_HEADER_LEN as u64,
            "snapshot payload checksum mismatch",
        ));
    }
    let state = codec::decode_state(payload).map_err(|e| {
        Error::corruption(
            path,
            SNAPSHOT_HEADER_LEN as u64,
            format!("snapshot payload: {e}"),
        )
    })?;
    if state.last_lsn != header.lsn {
        return Err(Error::corruption(
            path,
            16,
            format!(
                "snapshot header says LSN {} but its state is at LSN {}",
                header.lsn, state.last_lsn
            ),
        ));
    }
    Ok((header, state))
}

/// Snapshot bytes written between two `fdatasync`s of the snapshot file.
///
/// A snapshot of 100,000 sessions is a few hundred MiB. Written whole and synced once, all
/// of it sits in the device queue at the final fsync, and a log fdatasync issued then
/// waits behind it: appends stalled while a snapshot was taken (`benches/snapshot_stall.rs`;
/// figures in `docs/benchmarks.md`). Syncing every few MiB keeps at most that much ahead of the log.
const SNAPSHOT_SYNC_EVERY: u64 = 4 << 20;

/// Streams bytes into a storage file at increasing offsets, computing their CRC.
struct CrcWriter<'a> {
    file: &'a mut dyn StorageFile,
    offset: u64,
    crc: crc32fast::Hasher,
    buf: Vec<u8>,
    unsynced: u64,
}

impl CrcWriter<'_> {
    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_at(self.offset, &self.buf)?;
            self.offset += self.buf.len() as u64;
            self.unsynced += self.buf.len() as u64;
            self.buf.clear();
        }
        if self.unsynced >= SNAPSHOT_SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

impl Write for CrcWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.crc.update(data);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

/// Writes a snapshot of `state` (whose last record, LSN `state.last_lsn`, is at log
/// position `position`) into `dir`, atomically. Returns its path. A snapshot already there
/// at the same LSN is kept as it is (it holds the same state).
pub fn write_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    state: &State,
    position: LogPosition,
) -> Result<PathBuf> {
    storage
        .create_dir_all(dir)
        .map_err(|e| Error::io("create snapshot directory", dir, e))?;
    let path = dir.join(snapshot_name(state.last_lsn));
    // A snapshot at the same LSN holds the same state; keep the one that is there rather
    // than expose it to a failed rewrite.
    if storage
        .exists(&path)
        .map_err(|e| Error::io("check snapshot", &path, e))?
    {
        return Ok(path);
    }
    let tmp = dir.join(crate::storage::temp_name(
        snapshot_name(state.last_lsn).as_ref(),
    ));
    let mut file = storage
        .open(&tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io("create snapshot", &tmp, e))?;
    let mut w = CrcWriter {
        file: &mut *file,
        offset: SNAPSHOT_HEADER_LEN as u64,
        crc: crc32fast::Hasher::new(),
        buf: Vec::with_capacity(1 << 20),
        unsynced: 0,
    };
    codec::encode_state(state, &mut w).map_err(|e| match e {
        // The file's own error, with its kind (a full disk stays `StorageFull`).
        codec::EncodeError::Io(e) => Error::io("write snapshot", &tmp, e),
        other => Error::io("encode snapshot", &tmp, io::Error::other(other.to_string())),
    })?;
    w.flush()
        .map_err(|e| Error::io("write snapshot", &tmp, e))?;
    let payload_len = w.offset - SNAPSHOT_HEADER_LEN as u64;
    let payload_crc = w.crc.clone().finalize();
    let header = encode_header(&SnapshotHeader {
        lsn: state.last_lsn,
        position,
        payload_len,
        payload_crc,
    });
    file.write_at(0, &header)
        .map_err(|e| Error::io("write snapshot header", &tmp, e))?;
    file.sync_all()
        .map_err(|e| Error::io("fsync snapshot", &tmp, e))?;
    drop(file);
    storage
        .rename(&tmp, &path)
        .map_err(|e| Error::io("rename snapshot", &tmp, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync snapshot directory", dir, e))?;
    Ok(path)
}

/// A snapshot file that could not be used.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SkippedSnapshot {
    /// The file.
    pub file: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// Snapshot files in `dir`, newest first.
pub fn list_snapshots(storage: &dyn Storage, dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let names = match storage.list_dir(dir) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list snapshot directory", dir, e)),
    };
    let mut v: Vec<(Lsn, PathBuf)> = names
        .iter()
        .filter_map(|n| parse_snapshot_name(n).map(|lsn| (lsn, dir.join(n))))
        .collect();
    v.sort_by_key(|(lsn, _)| std::cmp::Reverse(*lsn));
    Ok(v)
}

/// A loaded snapshot: its header, its state and its file.
pub type LoadedSnapshot = (SnapshotHeader, State, PathBuf);

/// Loads the newest snapshot that decodes, skipping and reporting the others. Its log
/// position is a hint that recovery checks against the log.
pub fn load_newest(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<(Option<LoadedSnapshot>, Vec<SkippedSnapshot>)> {
    let mut skipped = Vec::new();
    for (lsn, path) in list_snapshots(storage, dir)? {
        let bytes = match storage.read(&path) {
            Ok(b) => b,
            Err(e) => {
                skipped.push(SkippedSnapshot {
                    file: path,
                    reason: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match decode_snapshot(&path, &bytes) {
            Ok((h, _)) if h.lsn != lsn => skipped.push(SkippedSnapshot {
                file: path,
                reason: format!("its name says LSN {lsn}, its header says {}", h.lsn),
            }),
            Ok((h, state)) => return Ok((Some((h, state, path)), skipped)),
            Err(e) => skipped.push(SkippedSnapshot {
                file: path,
                reason: e.to_string(),
            }),
        }
    }
    Ok((None, skipped))
}

/// Removes all but the newest `keep` snapshots, and leftover temporary files.
pub fn prune(storage: &dyn Storage, dir: &Path, keep: usize) -> Result<()> {
    for (_, path) in list_snapshots(storage, dir)?.into_iter().skip(keep.max(1)) {
        storage
            .remove_file(&path)
            .map_err(|e| Error::io("remove old snapshot", &path, e))?;
    }
    Ok(())
}

/// Removes temporary snapshot files left by a crash (they are incomplete by definition).
pub fn remove_temporaries(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let names = match storage.list_dir(dir) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list snapshot directory", dir, e)),
    };
    for n in names {
        if let Some(stem) = crate::storage::temp_target(&n)
            && parse_snapshot_name(stem).is_some()
        {
            let p = dir.join(&n);
            storage
                .remove_file(&p)
                .map_err(|e| Error::io("remove temporary snapshot", &p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn temporary_snapshots_are_fresh_names_and_leftovers_of_both_forms_are_removed() {
        let s = MemStorage::new();
        let dir = Path::new("snap");
        s.create_dir_all(dir).unwrap();
        let name = snapshot_name(Lsn(7));
        // A name planted in advance is neither used nor in the way.
        for n in [
            format!("{name}.tmp"),
            format!("{name}.0123456789abcdef.tmp"),
            "notes.tmp".to_string(),
        ] {
            s.set_file_content(&dir.join(n), b"left".to_vec()).unwrap();
        }
        let mut state = State::new();
        state.last_lsn = Lsn(7);
        let path = write_snapshot(&s, dir, &state, LogPosition::default()).unwrap();
        assert_eq!(path, dir.join(&name));
        remove_temporaries(&s, dir).unwrap();
        assert_eq!(
            s.list_dir(dir).unwrap(),
            vec![name, "notes.tmp".to_string()]
        );
    }

    #[test]
    fn snapshots_round_trip_and_reject_any_flipped_byte() {
        let s = MemStorage::new();
        let mut state = State::new();
        state.last_lsn = Lsn(0);
        let path = write_snapshot(&s, Path::new("snap"), &state, LogPosition::default()).unwrap();
        let bytes = s.file_content(&path).unwrap();
        let (h, back) = decode_snapshot(&path, &bytes).unwrap();
        assert_eq!(h.lsn, Lsn(0));
        assert_eq!(back, state);
        for i in 0..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 0x01;
            assert!(decode_snapshot(&path, &d).is_err(), "flip at {i} accepted");
        }
    }
}
