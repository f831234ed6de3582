//! Segment files: naming, the header, and scanning a segment's records.
//!
//! ```text
//! offset  size  field
//!      0     8  magic         b"SESSWAL\0"
//!      8     4  version       u32 LE (1)
//!     12     4  header_len    u32 LE (32): records start here
//!     16     8  first_lsn     u64 LE, LSN of the segment's first record
//!     24     4  reserved      u32, zero
//!     28     4  crc32         u32 LE, CRC-32 of bytes 0..28
//! ```
//!
//! A segment is named `<first_lsn as 20 decimal digits>.wal`, is created at its full size
//! filled with zeros, and is written in place. The bytes after its last record are zeros
//! unless a write was torn.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::types::Lsn;

use super::record::{FRAME_HEADER_LEN, Frame, FrameError, MAX_PAYLOAD_LEN, decode_frame};

/// Segment magic bytes.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SESSWAL\0";
/// Current segment format version.
pub const SEGMENT_VERSION: u32 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// File extension of segment files.
pub const SEGMENT_EXT: &str = "wal";

const _: () = assert!(SEGMENT_HEADER_LEN == 8 + 4 + 4 + 8 + 4 + 4);

/// The file name of the segment starting at `first`.
pub fn segment_name(first: Lsn) -> String {
    format!("{:020}.{SEGMENT_EXT}", first.0)
}

/// Parses a segment file name; `None` for anything else.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Lsn)
}

/// Encodes a segment header.
pub fn encode_header(first: Lsn) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first.0.to_le_bytes());
    let c = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&c.to_le_bytes());
    h
}

/// Decodes and checks a segment header. Errors name `path` and the offset of the bad field.
pub fn decode_header(path: &Path, bytes: &[u8]) -> Result<Lsn> {
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
    if version != SEGMENT_VERSION {
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
    Ok(first)
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
    loop {
        match decode_frame(&bytes[pos.min(bytes.len())..]) {
            Ok(frame) => {
                if frame.lsn != next {
                    return SegmentScan {
                        last_lsn: Lsn(next.0 - 1),
                        end: SegmentEnd::Corrupt {
                            offset: pos as u64,
                            reason: format!(
                                "record has LSN {} where LSN {} was expected ({})",
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
    // written after the log was synced proves that the damaged bytes had been durable;
    // frames of the same batch, or of later batches that were never synced either, are
    // part of the same torn write.
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
                        "{err} at the record with LSN {expected}, and a valid record \
                         (LSN {}) of a later write follows at offset {off}",
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
        let h = encode_header(Lsn(5));
        assert_eq!(decode_header(Path::new("s"), &h).unwrap(), Lsn(5));
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
        let mut out = encode_header(Lsn(1)).to_vec();
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
