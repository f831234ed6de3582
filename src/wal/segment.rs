//! Segment files: naming, the header, and scanning a segment's records.
//!
//! ```text
//! offset  size  field
//!      0     8  magic         b"SESSWAL\0"
//!      8     4  version       u32 LE (2; 1 is still read)
//!     12     4  header_len    u32 LE (32): records start here
//!     16     8  first_lsn     u64 LE, LSN of the segment's first record
//!     24     4  prev_records  u32 LE, records in the previous segment (0 for the segment
//!                             at LSN 1); format 1: reserved, zero
//!     28     4  crc32         u32 LE, CRC-32 of bytes 0..28
//! ```
//!
//! A segment is named `<first_lsn as 20 decimal digits>.wal`, is created at its full size
//! filled with zeros, and is written in place. The bytes after its last record are zeros
//! unless a write was torn. `prev_records` chains the segments: segment `N` says that
//! the one before it starts at `N - prev_records`, so a missing segment is found from the
//! headers alone.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::types::Lsn;

use super::record::{FRAME_HEADER_LEN, Frame, FrameError, MAX_PAYLOAD_LEN, decode_frame};

/// Segment magic bytes.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SESSWAL\0";
/// Current segment format version (2: seals and the `prev_records` chain).
pub const SEGMENT_VERSION: u32 = 2;
/// Oldest segment format version this build reads.
pub const OLDEST_SEGMENT_VERSION: u32 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// File extension of segment files.
pub const SEGMENT_EXT: &str = "wal";

const _: () = assert!(SEGMENT_HEADER_LEN == 8 + 4 + 4 + 8 + 4 + 4);

/// The file name of the segment starting at `first`.
pub fn segment_name(first: Lsn) -> String {
    first.file_name(SEGMENT_EXT)
}

/// Parses a segment file name; `None` for anything else.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    Lsn::from_file_name(name, SEGMENT_EXT)
}

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the segment's first record.
    pub first_lsn: Lsn,
    /// Format version.
    pub version: u32,
    /// First LSN of the previous segment (format 2; `None` for the first segment and for
    /// format 1, which did not record it).
    pub prev_first_lsn: Option<Lsn>,
}

/// Encodes a current-version header of the segment starting at `first`, whose previous
/// segment starts at `prev` (`Lsn::ZERO` when `first` is 1).
///
/// Panics if `prev` is not below `first` or the previous segment would hold 2^32 records
/// or more (no writer makes such a segment).
pub fn encode_header(first: Lsn, prev: Lsn) -> [u8; SEGMENT_HEADER_LEN] {
    let prev_records = if first == Lsn(1) {
        0
    } else {
        u32::try_from(first.0 - prev.0).expect("previous segment holds under 2^32 records")
    };
    encode_header_raw(first, SEGMENT_VERSION, prev_records)
}

/// Encodes a header with the given fields (tests use it for older versions).
pub fn encode_header_raw(first: Lsn, version: u32, prev_records: u32) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first.0.to_le_bytes());
    h[24..28].copy_from_slice(&prev_records.to_le_bytes());
    let c = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&c.to_le_bytes());
    h
}

/// Decodes and checks a segment header, returning its first LSN. Errors name `path` and
/// the offset of the bad field.
pub fn decode_header(path: &Path, bytes: &[u8]) -> Result<Lsn> {
    decode_header_full(path, bytes).map(|h| h.first_lsn)
}

/// Decodes and checks a segment header. Errors name `path` and the offset of the bad field.
pub fn decode_header_full(path: &Path, bytes: &[u8]) -> Result<SegmentHeader> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(Error::corruption(
            path,
            0,
            format!(
                "segment is {} bytes long, shorter than its {SEGMENT_HEADER_LEN}-byte header",
                bytes.len()
            ),
        ));
    }
    let h = &bytes[..SEGMENT_HEADER_LEN];
    if h[0..8] != SEGMENT_MAGIC {
        return Err(Error::corruption(path, 0, "bad segment magic"));
    }
    let stored = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if crc32fast::hash(&h[0..28]) != stored {
        return Err(Error::corruption(
            path,
            28,
            "segment header checksum mismatch",
        ));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if !(OLDEST_SEGMENT_VERSION..=SEGMENT_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: SEGMENT_VERSION,
        });
    }
    let header_len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if header_len as usize != SEGMENT_HEADER_LEN {
        return Err(Error::corruption(
            path,
            12,
            format!("segment header length {header_len}, expected {SEGMENT_HEADER_LEN}"),
        ));
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[16..24]);
    let first = Lsn(u64::from_le_bytes(first));
    if first == Lsn::ZERO || first > Lsn::MAX {
        return Err(Error::corruption(
            path,
            16,
            format!("segment first LSN {first} is outside 1..={}", Lsn::MAX),
        ));
    }
    let prev_records = u64::from(u32::from_le_bytes([h[24], h[25], h[26], h[27]]));
    let prev_first_lsn = match (version, first) {
        (1, _) => None,
        (_, Lsn(1)) if prev_records == 0 => None,
        (_, f) if f.0 > 1 && (1..f.0).contains(&prev_records) => Some(Lsn(f.0 - prev_records)),
        _ => {
            return Err(Error::corruption(
                path,
                24,
                format!(
                    "segment starting at LSN {first} says the previous segment holds \
                     {prev_records} records"
                ),
            ));
        }
    };
    Ok(SegmentHeader {
        first_lsn: first,
        version,
        prev_first_lsn,
    })
}

/// How a segment's run of valid records ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Only zeros follow `offset`: the segment ends cleanly.
    Clean {
        /// Where the next record would go.
        offset: u64,
    },
    /// The bytes at `offset` are not a valid record, and no valid record of a later batch
    /// written after a sync follows: the unsynced end of the log was torn. Everything from `offset` to `damaged_end`
    /// is damage to cut.
    Torn {
        /// Offset of the first invalid byte.
        offset: u64,
        /// One past the last non-zero byte of the segment.
        damaged_end: u64,
        /// Why the frame at `offset` is invalid.
        reason: String,
    },
    /// Damage followed by a valid record of a later batch written after a sync, or a valid
    /// record with the wrong LSN: the log is corrupt at `offset`.
    Corrupt {
        /// Offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// One segment's scan: its valid records (as offsets) and how it ends.
#[derive(Debug)]
pub struct SegmentScan {
    /// LSN of the last valid record, or `first - 1` when there is none.
    pub last_lsn: Lsn,
    /// How the run of valid records ends.
    pub end: SegmentEnd,
    /// The LSN named by the last seal the scan passed: every record before it is proven
    /// durable.
    pub sealed_before: Option<Lsn>,
}

/// Index one past the last non-zero byte of `bytes` (0 if all zero).
pub fn nonzero_end(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    // Whole 64-byte blocks from the back first: a clean segment tail is megabytes of zeros.
    while end >= 64 {
        let block = &bytes[end - 64..end];
        let mut acc = 0u64;
        for w in block.chunks_exact(8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            acc |= u64::from_ne_bytes(a);
        }
        if acc != 0 {
            break;
        }
        end -= 64;
    }
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    end
}

/// Walks the records of a segment whose bytes are `bytes`, starting at byte `start` where a
/// record with LSN `expected` must be. Calls `on_record` for each valid record in order and
/// stops early when it returns false (the end is then reported as clean at that point).
///
/// Seals (see [`super::record`]) are checked (a seal must name the next LSN) and passed
/// over; they are not records.
///
/// At the first invalid frame it decides, following the recovery table in
/// `docs/format.md`, whether the segment ends cleanly, was torn, or is corrupt.
pub fn scan_segment(
    bytes: &[u8],
    start: usize,
    expected: Lsn,
    mut on_record: impl FnMut(u64, &Frame<'_>) -> bool,
) -> SegmentScan {
    let mut pos = start;
    let mut next = expected;
    let mut sealed_before = None;
    loop {
        match decode_frame(&bytes[pos.min(bytes.len())..]) {
            Ok(frame) if frame.seal && frame.lsn == next => {
                sealed_before = Some(next);
                pos += frame.len;
            }
            Ok(frame) => {
                if frame.lsn != next {
                    return SegmentScan {
                        last_lsn: Lsn(next.0 - 1),
                        sealed_before,
                        end: SegmentEnd::Corrupt {
                            offset: pos as u64,
                            reason: format!(
                                "{} has LSN {} where LSN {} was expected ({})",
                                if frame.seal { "seal" } else { "record" },
                                frame.lsn,
                                next,
                                if frame.lsn < next {
                                    "a repeat"
                                } else {
                                    "a gap"
                                }
                            ),
                        },
                    };
                }
                if !on_record(pos as u64, &frame) {
                    return SegmentScan {
                        last_lsn: frame.lsn,
                        sealed_before,
                        end: SegmentEnd::Clean {
                            offset: (pos + frame.len) as u64,
                        },
                    };
                }
                pos += frame.len;
                next = next.next();
            }
            Err(err) => {
                let end = classify_damage(bytes, pos, next, err);
                return SegmentScan {
                    last_lsn: Lsn(next.0 - 1),
                    end,
                    sealed_before,
                };
            }
        }
    }
}

/// Decides what the invalid frame at `pos` (where LSN `expected` was due) means.
fn classify_damage(bytes: &[u8], pos: usize, expected: Lsn, err: FrameError) -> SegmentEnd {
    let rest = &bytes[pos.min(bytes.len())..];
    let damaged_len = nonzero_end(rest);
    if damaged_len == 0 {
        return SegmentEnd::Clean { offset: pos as u64 };
    }
    let damaged_end = pos + damaged_len;
    // Search the damaged region for valid frames. Only a frame of a later batch that was
    // written after the log was synced (or a seal naming a later LSN) proves that the
    // damaged bytes had been durable; frames of the same batch, or of later batches that
    // were never synced either, are part of the same torn write.
    let max_lsn = expected.0 + (bytes.len() - pos) as u64 / FRAME_HEADER_LEN as u64 + 1;
    let mut off = pos + 1;
    while off + FRAME_HEADER_LEN <= damaged_end {
        let lsn = super::record::peek_lsn(&bytes[off..]).unwrap_or(0);
        if lsn >= expected.0 && lsn <= max_lsn {
            let window_end = (off + FRAME_HEADER_LEN + MAX_PAYLOAD_LEN).min(bytes.len());
            if let Ok(frame) = decode_frame(&bytes[off..window_end])
                && frame.batch_first() > expected
                && frame.synced_before
            {
                return SegmentEnd::Corrupt {
                    offset: pos as u64,
                    reason: format!(
                        "{err} at the record with LSN {expected}, and {} (LSN {}) of a \
                         later write follows at offset {off}, so the damaged bytes had been \
                         durable",
                        if frame.seal {
                            "a seal"
                        } else {
                            "a valid record"
                        },
                        frame.lsn
                    ),
                };
            }
        }
        off += 1;
    }
    SegmentEnd::Torn {
        offset: pos as u64,
        damaged_end: damaged_end as u64,
        reason: format!("{err} at the record with LSN {expected}"),
    }
}

/// Path of the segment starting at `first` in `wal_dir`.
pub fn segment_path(wal_dir: &Path, first: Lsn) -> PathBuf {
    wal_dir.join(segment_name(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::FrameBuf;

    #[test]
    fn names_round_trip_and_sort_by_lsn() {
        assert_eq!(segment_name(Lsn(42)), "00000000000000000042.wal");
        assert_eq!(parse_segment_name(&segment_name(Lsn(42))), Some(Lsn(42)));
        assert_eq!(parse_segment_name("42.wal"), None);
        assert_eq!(parse_segment_name("00000000000000000042.wal.tmp"), None);
        assert!(segment_name(Lsn(9)) < segment_name(Lsn(10)));
    }

    #[test]
    fn header_round_trips_and_any_flip_is_refused() {
        let h = encode_header(Lsn(5), Lsn(2));
        let d = decode_header_full(Path::new("s"), &h).unwrap();
        assert_eq!((d.first_lsn, d.prev_first_lsn), (Lsn(5), Some(Lsn(2))));
        let v1 = encode_header_raw(Lsn(5), 1, 0);
        let d = decode_header_full(Path::new("s"), &v1).unwrap();
        assert_eq!(
            (d.first_lsn, d.version, d.prev_first_lsn),
            (Lsn(5), 1, None)
        );
        for bad in [
            encode_header_raw(Lsn(5), 2, 0),
            encode_header_raw(Lsn(5), 2, 5),
        ] {
            let e = decode_header_full(Path::new("s"), &bad).unwrap_err();
            assert!(matches!(e, Error::Corruption { offset: 24, .. }), "{e}");
        }
        for i in 0..SEGMENT_HEADER_LEN {
            let mut d = h;
            d[i] ^= 0x10;
            assert!(
                decode_header(Path::new("s"), &d).is_err(),
                "flip at {i} accepted"
            );
        }
    }

    fn segment(batches: &[&[&[u8]]]) -> Vec<u8> {
        segment_synced(batches, true)
    }

    fn segment_synced(batches: &[&[&[u8]]], synced: bool) -> Vec<u8> {
        let mut out = encode_header(Lsn(1), Lsn::ZERO).to_vec();
        let mut lsn = 1;
        for batch in batches {
            let mut b = FrameBuf::new();
            b.reset(synced);
            for p in *batch {
                b.begin(Lsn(lsn)).extend_from_slice(p);
                b.finish().unwrap();
                lsn += 1;
            }
            out.extend_from_slice(b.bytes());
        }
        out.resize(out.len() + 256, 0);
        out
    }

    fn scan(bytes: &[u8]) -> SegmentScan {
        scan_segment(bytes, SEGMENT_HEADER_LEN, Lsn(1), |_, _| true)
    }

    #[test]
    fn a_clean_segment_ends_at_the_zeros() {
        let s = segment(&[&[b"a"], &[b"bb", b"ccc"]]);
        let r = scan(&s);
        assert_eq!(r.last_lsn, Lsn(3));
        assert!(matches!(r.end, SegmentEnd::Clean { .. }));
    }

    #[test]
    fn damage_inside_the_final_batch_is_a_torn_tail() {
        let s = segment(&[&[b"first"], &[b"second", b"third", b"fourth"]]);
        let second = SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 5;
        let mut d = s.clone();
        d[second + FRAME_HEADER_LEN] ^= 1; // payload of LSN 2; LSNs 3 and 4 stay valid
        let r = scan(&d);
        assert_eq!(r.last_lsn, Lsn(1));
        assert!(matches!(r.end, SegmentEnd::Torn { offset, .. } if offset == second as u64));
    }

    #[test]
    fn damage_followed_by_a_later_batch_is_corruption() {
        let s = segment(&[&[b"first"], &[b"second"], &[b"third"]]);
        let mut d = s.clone();
        d[SEGMENT_HEADER_LEN + FRAME_HEADER_LEN] ^= 1; // payload of LSN 1
        let r = scan(&d);
        assert!(
            matches!(r.end, SegmentEnd::Corrupt { offset, .. } if offset == SEGMENT_HEADER_LEN as u64)
        );
    }

    #[test]
    fn damage_before_a_seal_is_corruption_and_a_seal_is_not_a_record() {
        let mut s = segment(&[&[b"first"], &[b"second", b"third"]]);
        let end = SEGMENT_HEADER_LEN + 3 * FRAME_HEADER_LEN + 5 + 6 + 5;
        s[end..end + crate::wal::record::SEAL_LEN]
            .copy_from_slice(&crate::wal::record::encode_seal(Lsn(4)));
        let r = scan(&s);
        assert_eq!((r.last_lsn, r.sealed_before), (Lsn(3), Some(Lsn(4))));
        assert!(matches!(r.end, SegmentEnd::Clean { offset }
            if offset as usize == end + crate::wal::record::SEAL_LEN));
        // The final batch's damage, torn without the seal, is corruption with it.
        let second = SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 5;
        let mut d = s.clone();
        d[second + FRAME_HEADER_LEN] ^= 1;
        assert!(matches!(scan(&d).end, SegmentEnd::Corrupt { offset, .. }
            if offset == second as u64));
        // A seal naming the wrong LSN is corruption.
        let mut w = s.clone();
        w[end..end + crate::wal::record::SEAL_LEN]
            .copy_from_slice(&crate::wal::record::encode_seal(Lsn(9)));
        assert!(matches!(scan(&w).end, SegmentEnd::Corrupt { offset, .. }
            if offset as usize == end));
    }

    #[test]
    fn damage_followed_only_by_never_synced_batches_is_a_torn_tail() {
        // Buffered mode: batches written without a sync in between may all be torn.
        let s = segment_synced(&[&[b"first"], &[b"second"], &[b"third"]], false);
        let mut d = s.clone();
        d[SEGMENT_HEADER_LEN + FRAME_HEADER_LEN] ^= 1;
        let r = scan(&d);
        assert_eq!(r.last_lsn, Lsn::ZERO);
        assert!(
            matches!(r.end, SegmentEnd::Torn { offset, .. } if offset == SEGMENT_HEADER_LEN as u64)
        );
    }
}
