//! The record frame: how one event's payload is laid out in a segment, and the rule for
//! when a frame is valid.
//!
//! ```text
//! offset  size  field
//!      0     4  payload_len   u32 LE, 1 ..= MAX_PAYLOAD_LEN
//!      4     4  crc32         u32 LE, CRC-32 (IEEE) of bytes 0..4 and 8..20+payload_len
//!      8     8  lsn           u64 LE
//!     16     4  batch         u32 LE: bits 0..30 the record's position in its write batch
//!                             (0 = first); bit 30 (SEAL) marks a seal, not a record; bit 31
//!                             (SYNCED_BEFORE) set when everything before the batch was
//!                             synced before the batch was written
//!     20     n  payload       the encoded event (see `codec`); a seal's is one zero byte
//! ```
//!
//! A **seal** (format 2) is a frame with `SEAL | SYNCED_BEFORE` in its batch field, batch
//! index 0, the LSN the next record will have, and the one-byte payload `0`. It is written
//! after a sync and proves that every byte before it was durable, so damage before it is
//! corruption, never a torn write. Format 1 never set bit 30 (a batch holds at most
//! 2^20 records), so the rule reads format 1 frames unchanged.
//!
//! A frame at offset `o` of a segment is **valid** if and only if: `payload_len` is in
//! `1..=MAX_PAYLOAD_LEN`, the whole frame lies inside the segment, `1 <= lsn <= 2^62`
//! ([`Lsn::MAX`]), `batch_index < lsn`, and the CRC matches. The checksum covers every byte of the frame
//! except itself, so the LSN and batch field are as trustworthy as the payload.

use crate::types::{Lsn, u32_at, u64_at};

/// Bytes before the payload.
pub const FRAME_HEADER_LEN: usize = 20;
/// Largest payload a frame may carry (16 MiB). A length field above this is damage, so
/// garbage never causes a huge allocation or read.
pub const MAX_PAYLOAD_LEN: usize = 16 << 20;
/// Smallest possible frame.
pub const MIN_FRAME_LEN: usize = FRAME_HEADER_LEN + 1;

/// Flag bit of the batch field: the log was durable up to this batch's first record
/// before the batch was written.
pub const SYNCED_BEFORE: u32 = 1 << 31;

/// Flag bit of the batch field: the frame is a seal (see the module documentation).
pub const SEAL: u32 = 1 << 30;

/// The payload of a seal.
pub const SEAL_PAYLOAD: [u8; 1] = [0];

/// Length of a seal frame.
pub const SEAL_LEN: usize = FRAME_HEADER_LEN + SEAL_PAYLOAD.len();

const _: () = assert!(FRAME_HEADER_LEN == 4 + 4 + 8 + 4);
const _: () = assert!(MAX_PAYLOAD_LEN < u32::MAX as usize);

/// A valid frame found in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's LSN.
    pub lsn: Lsn,
    /// Position of the record within the batch it was written in.
    pub batch_index: u32,
    /// Whether everything before the record's batch was durable when the batch was written.
    pub synced_before: bool,
    /// Whether the frame is a seal rather than a record: everything before it was durable
    /// when it was written, and the next record has LSN `lsn`.
    pub seal: bool,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// Total frame length (header + payload).
    pub len: usize,
}

impl Frame<'_> {
    /// The LSN of the first record of this record's write batch.
    pub fn batch_first(&self) -> Lsn {
        Lsn(self.lsn.0 - u64::from(self.batch_index))
    }
}

/// Why the bytes at an offset are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than a header's worth of bytes remain.
    TruncatedHeader,
    /// The length field is zero or above the bound.
    BadLength(u32),
    /// The frame would run past the end of the segment.
    TruncatedPayload {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes left in the segment.
        available: usize,
    },
    /// The batch index cannot belong to this LSN.
    BadBatchIndex,
    /// The LSN is zero or above [`Lsn::MAX`].
    BadLsn(u64),
    /// The checksum does not match.
    Checksum,
    /// A frame marked as a seal that is not one (flags, batch index or payload).
    BadSeal,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TruncatedHeader => write!(f, "record header is cut short"),
            FrameError::BadLength(n) => {
                write!(f, "record length {n} is outside 1..={MAX_PAYLOAD_LEN}")
            }
            FrameError::TruncatedPayload { needed, available } => write!(
                f,
                "record needs {needed} bytes but only {available} remain in the segment"
            ),
            FrameError::BadBatchIndex => write!(f, "record batch index is larger than its LSN"),
            FrameError::BadLsn(n) => write!(f, "record LSN {n} is outside 1..={}", Lsn::MAX),
            FrameError::Checksum => write!(f, "record checksum mismatch"),
            FrameError::BadSeal => write!(f, "malformed seal"),
        }
    }
}

fn crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[0..4]);
    h.update(&header[8..FRAME_HEADER_LEN]);
    h.update(payload);
    h.finalize()
}

/// The LSN field of the frame that would start at the beginning of `bytes`, without any
/// validation (used to filter candidates cheaply while searching past damage).
pub fn peek_lsn(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= FRAME_HEADER_LEN).then(|| u64_at(bytes, 8))
}

/// Decodes the frame at the start of `bytes`, applying the validity rule.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::TruncatedHeader);
    }
    let len = u32_at(bytes, 0);
    if len == 0 || len as usize > MAX_PAYLOAD_LEN {
        return Err(FrameError::BadLength(len));
    }
    let total = FRAME_HEADER_LEN + len as usize;
    if total > bytes.len() {
        return Err(FrameError::TruncatedPayload {
            needed: total,
            available: bytes.len(),
        });
    }
    let lsn = u64_at(bytes, 8);
    let batch = u32_at(bytes, 16);
    let batch_index = batch & !(SYNCED_BEFORE | SEAL);
    if lsn == 0 || lsn > Lsn::MAX.0 {
        return Err(FrameError::BadLsn(lsn));
    }
    if u64::from(batch_index) >= lsn {
        return Err(FrameError::BadBatchIndex);
    }
    let payload = &bytes[FRAME_HEADER_LEN..total];
    if crc(&bytes[..FRAME_HEADER_LEN], payload) != u32_at(bytes, 4) {
        return Err(FrameError::Checksum);
    }
    let seal = batch & SEAL != 0;
    if seal && (batch != SEAL | SYNCED_BEFORE || payload != SEAL_PAYLOAD) {
        return Err(FrameError::BadSeal);
    }
    Ok(Frame {
        lsn: Lsn(lsn),
        batch_index,
        synced_before: batch & SYNCED_BEFORE != 0,
        seal,
        payload,
        len: total,
    })
}

/// The seal frame saying that every record before LSN `next` is durable.
pub fn encode_seal(next: Lsn) -> [u8; SEAL_LEN] {
    let mut b = [0u8; SEAL_LEN];
    b[0..4].copy_from_slice(&(SEAL_PAYLOAD.len() as u32).to_le_bytes());
    b[8..16].copy_from_slice(&next.0.to_le_bytes());
    b[16..20].copy_from_slice(&(SEAL | SYNCED_BEFORE).to_le_bytes());
    b[FRAME_HEADER_LEN..].copy_from_slice(&SEAL_PAYLOAD);
    let c = crc(&b[..FRAME_HEADER_LEN], &SEAL_PAYLOAD);
    b[4..8].copy_from_slice(&c.to_le_bytes());
    b
}

/// A buffer of consecutive frames forming one write batch. Payloads are encoded straight
/// into it, so a batch costs no per-record allocation.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
    first_lsn: Option<Lsn>,
    count: u32,
    open: Option<usize>,
    last_start: usize,
    synced_before: bool,
}

impl FrameBuf {
    /// An empty batch.
    pub fn new() -> FrameBuf {
        FrameBuf::default()
    }

    /// Empties the batch, keeping its capacity. `synced_before` says whether the log will
    /// be durable up to this batch when it is written (it sets the frames' flag).
    pub fn reset(&mut self, synced_before: bool) {
        self.buf.clear();
        self.first_lsn = None;
        self.count = 0;
        self.open = None;
        self.synced_before = synced_before;
    }

    /// Starts a frame for `lsn` and returns the buffer to append the payload to. Must be
    /// followed by [`FrameBuf::finish`] or [`FrameBuf::abandon`]. LSNs within a batch must
    /// be consecutive.
    pub fn begin(&mut self, lsn: Lsn) -> &mut Vec<u8> {
        assert!(self.open.is_none(), "previous frame not finished");
        let first = *self.first_lsn.get_or_insert(lsn);
        assert_eq!(
            lsn.0,
            first.0 + u64::from(self.count),
            "LSNs in a batch must be consecutive"
        );
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
        self.buf[start + 8..start + 16].copy_from_slice(&lsn.0.to_le_bytes());
        let flag = if self.synced_before { SYNCED_BEFORE } else { 0 };
        self.buf[start + 16..start + 20].copy_from_slice(&(self.count | flag).to_le_bytes());
        self.open = Some(start);
        &mut self.buf
    }

    /// Seals the open frame: fills in its length and checksum. Fails (and drops the frame)
    /// when the payload is empty or over [`MAX_PAYLOAD_LEN`].
    pub fn finish(&mut self) -> Result<(), usize> {
        let start = self.open.take().expect("no open frame");
        let len = self.buf.len() - start - FRAME_HEADER_LEN;
        if len == 0 || len > MAX_PAYLOAD_LEN {
            self.buf.truncate(start);
            if self.count == 0 {
                self.first_lsn = None;
            }
            return Err(len);
        }
        self.buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        let c = crc(
            &self.buf[start..start + FRAME_HEADER_LEN],
            &self.buf[start + FRAME_HEADER_LEN..],
        );
        self.buf[start + 4..start + 8].copy_from_slice(&c.to_le_bytes());
        self.count += 1;
        self.last_start = start;
        Ok(())
    }

    /// Drops the open frame.
    pub fn abandon(&mut self) {
        if let Some(start) = self.open.take() {
            self.buf.truncate(start);
            if self.count == 0 {
                self.first_lsn = None;
            }
        }
    }

    /// The framed bytes.
    pub fn bytes(&self) -> &[u8] {
        debug_assert!(self.open.is_none());
        &self.buf
    }

    /// Number of frames.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// LSN of the first frame, if any.
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.first_lsn
    }

    /// LSN of the last frame, if any.
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.first_lsn.map(|f| Lsn(f.0 + u64::from(self.count) - 1))
    }

    /// Number of framed bytes.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// Byte offset, within the batch, of the last finished frame.
    pub fn last_frame_start(&self) -> usize {
        self.last_start
    }

    /// Iterates over the frames (for log implementations that store payloads elsewhere).
    pub fn frames(&self) -> impl Iterator<Item = Frame<'_>> {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let f = decode_frame(&self.buf[pos..]).ok()?;
            pos += f.len;
            Some(f)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, payloads: &[&[u8]]) -> FrameBuf {
        let mut b = FrameBuf::new();
        b.reset(true);
        for (i, p) in payloads.iter().enumerate() {
            b.begin(Lsn(first + i as u64)).extend_from_slice(p);
            b.finish().unwrap();
        }
        b
    }

    #[test]
    fn frames_round_trip() {
        let b = batch(7, &[b"one", b"two", b"three"]);
        let frames: Vec<_> = b.frames().collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].lsn, Lsn(9));
        assert_eq!(frames[2].batch_index, 2);
        assert_eq!(frames[2].batch_first(), Lsn(7));
        assert!(frames[2].synced_before);
        assert_eq!(frames[1].payload, b"two");
    }

    #[test]
    fn any_single_bit_flip_invalidates_a_frame() {
        let b = batch(3, &[b"payload bytes"]);
        let bytes = b.bytes().to_vec();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut d = bytes.clone();
                d[i] ^= 1 << bit;
                assert!(
                    decode_frame(&d).is_err(),
                    "flip at byte {i} bit {bit} accepted"
                );
            }
        }
    }

    #[test]
    fn a_seal_decodes_as_a_seal_and_any_flip_invalidates_it() {
        let s = encode_seal(Lsn(42));
        let f = decode_frame(&s).unwrap();
        assert!(f.seal && f.synced_before);
        assert_eq!(
            (f.lsn, f.batch_first(), f.len),
            (Lsn(42), Lsn(42), SEAL_LEN)
        );
        for i in 0..s.len() {
            for bit in 0..8 {
                let mut d = s;
                d[i] ^= 1 << bit;
                assert!(decode_frame(&d).is_err(), "flip {i}/{bit}");
            }
        }
        assert!(!decode_frame(batch(3, &[b"x"]).bytes()).unwrap().seal);
    }

    #[test]
    fn zeros_and_huge_lengths_are_invalid() {
        assert_eq!(decode_frame(&[0u8; 64]), Err(FrameError::BadLength(0)));
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_frame(&d), Err(FrameError::BadLength(_))));
        assert_eq!(decode_frame(&[1u8; 5]), Err(FrameError::TruncatedHeader));
    }

    #[test]
    fn empty_and_oversized_payloads_are_refused_at_encode() {
        let mut b = FrameBuf::new();
        b.begin(Lsn(1));
        assert_eq!(b.finish(), Err(0));
        assert!(b.is_empty());
        b.begin(Lsn(1)).extend_from_slice(b"x");
        b.finish().unwrap();
        assert_eq!(b.len(), 1);
    }
}
