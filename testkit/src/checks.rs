//! The checks behind the fuzz targets, in one place: `fuzz/fuzz_targets/*.rs` call them on
//! libFuzzer's inputs, and `tests/fuzz_regressions.rs` calls them on the committed seed
//! corpora and minimized crash inputs. Each check panics when the engine misbehaves (a
//! panic inside the engine, or a broken invariant) and returns normally otherwise.
//!
//! Inputs are read with [`Input`], which yields zeros once the bytes run out, so every
//! byte string is a valid input.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use session_engine::codec;
use session_engine::event::SessionCreated;
use session_engine::snapshot::{SNAPSHOT_HEADER_LEN, decode_snapshot, snapshot_name};
use session_engine::storage::{CrashMode, MemStorage, Storage};
use session_engine::wal::FrameBuf;
use session_engine::wal::record::{FRAME_HEADER_LEN, decode_frame, encode_seal, peek_lsn};
use session_engine::wal::segment::{
    SEGMENT_HEADER_LEN, SegmentEnd, decode_header, decode_header_full, encode_header,
    encode_header_raw, scan_segment, segment_name,
};
use session_engine::{
    AgentId, Command, Engine, Error, Event, EventBody, JsonText, Lsn, ManualClock, NewSession,
    SessionConfig, SessionId, State, Status, Timestamp,
};

use super::model::Model;
use super::workload::{Runner, START_SECS, Settings, Step, workload_options};

/// A fuzz target's check.
pub type Check = fn(&[u8]);

/// The fuzz targets and their checks, by name.
pub const TARGETS: &[(&str, Check)] = &[
    ("wal_segment", wal_segment),
    ("event_payload", event_payload),
    ("snapshot_file", snapshot_file),
    ("recovery", recovery),
    ("model", model),
    ("bundle", bundle),
    ("apply_line", apply_line),
    ("chain_file", chain_file),
];

/// A reader of fuzz input that yields zeros past the end.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos = start + n;
        &self.data[start..end]
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

// ---------------------------------------------------------------------------------------
// wal_segment: the record and segment decoders.

/// The record/segment decoder: `decode_header`, `decode_frame` and `scan_segment` on raw
/// bytes (first byte even), or on a segment of valid frames in batches, damaged by a few
/// mutations (first byte odd), where the recovery table's verdict is known and checked.
pub fn wal_segment(data: &[u8]) {
    let mut inp = Input::new(data);
    if inp.u8().is_multiple_of(2) {
        raw_segment(inp.rest());
    } else {
        damaged_segment(&mut inp);
    }
}

/// The invariants of a scan of `bytes` from `start` expecting `expected`.
fn scan_checked(bytes: &[u8], start: usize, expected: Lsn) -> (Vec<(u64, u64)>, SegmentEnd) {
    let mut records: Vec<(u64, u64)> = Vec::new();
    let scan = scan_segment(bytes, start, expected, |off, frame| {
        records.push((off, frame.lsn.0));
        true
    });
    // Seals naming the next LSN may stand between records and after the last one.
    let pass_seals = |pos: &mut u64, lsn: u64| {
        while let Ok(f) = decode_frame(&bytes[(*pos as usize).min(bytes.len())..]) {
            if !(f.seal && f.lsn.0 == lsn) {
                break;
            }
            *pos += f.len as u64;
        }
    };
    let mut pos = start as u64;
    for (i, (off, lsn)) in records.iter().enumerate() {
        pass_seals(&mut pos, *lsn);
        assert_eq!(*off, pos, "records are not contiguous");
        assert_eq!(
            *lsn,
            expected.0.wrapping_add(i as u64),
            "LSNs are not dense"
        );
        let f = decode_frame(&bytes[*off as usize..]).expect("a reported record decodes");
        assert!(!f.seal, "a seal reported as a record");
        pos += f.len as u64;
    }
    pass_seals(&mut pos, scan.last_lsn.0.wrapping_add(1));
    assert_eq!(
        scan.last_lsn.0,
        expected
            .0
            .wrapping_add(records.len() as u64)
            .wrapping_sub(1)
    );
    let zeros_from = |o: u64| {
        bytes[(o as usize).min(bytes.len())..]
            .iter()
            .all(|&b| b == 0)
    };
    match &scan.end {
        SegmentEnd::Clean { offset } => {
            assert_eq!(*offset, pos, "a clean end is after the last record");
            assert!(zeros_from(*offset), "a clean end is followed by zeros only");
        }
        SegmentEnd::Torn {
            offset,
            damaged_end,
            ..
        } => {
            assert_eq!(*offset, pos);
            assert!(offset < damaged_end && *damaged_end as usize <= bytes.len());
            assert_ne!(bytes[*damaged_end as usize - 1], 0);
            assert!(zeros_from(*damaged_end));
        }
        SegmentEnd::Corrupt { offset, .. } => {
            assert!(*offset as usize <= bytes.len());
        }
    }
    (records, scan.end)
}

fn raw_segment(bytes: &[u8]) {
    let path = Path::new("segment");
    let header = decode_header_full(path, bytes);
    if let Ok(h) = header {
        assert!(h.first_lsn.0 >= 1);
        assert_eq!(decode_header(path, bytes).ok(), Some(h.first_lsn));
        // A header that decodes re-encodes to the same bytes. (Not through `encode_header`,
        // which is for the writer: it panics on a previous segment of 2^32 records or
        // more, and an arbitrary first LSN with no previous one is such a case.)
        let prev_records = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
        assert_eq!(
            bytes[..SEGMENT_HEADER_LEN],
            encode_header_raw(h.first_lsn, h.version, prev_records)
        );
        if let Some(prev) = h.prev_first_lsn {
            assert_eq!(h.first_lsn.0 - prev.0, u64::from(prev_records));
            assert_eq!(
                bytes[..SEGMENT_HEADER_LEN],
                encode_header(h.first_lsn, prev)
            );
        }
    }
    let header = header.map(|h| h.first_lsn);
    if let Ok(f) = decode_frame(bytes) {
        assert!(f.len > FRAME_HEADER_LEN && f.len <= bytes.len());
        assert_eq!(f.payload.len(), f.len - FRAME_HEADER_LEN);
        assert!(u64::from(f.batch_index) < f.lsn.0);
        assert_eq!(peek_lsn(bytes), Some(f.lsn.0));
    }
    // Scan as recovery would: from the header, expecting the header's LSN (or LSN 1).
    let start = SEGMENT_HEADER_LEN.min(bytes.len());
    scan_checked(bytes, start, header.unwrap_or(Lsn(1)));
}

/// One frame of a built segment.
#[derive(Clone, Copy, Debug)]
struct Built {
    start: usize,
    end: usize,
    lsn: u64,
    batch_first: u64,
    synced: bool,
    /// A seal naming `lsn` (the next record's), not a record.
    seal: bool,
}

fn damaged_segment(inp: &mut Input<'_>) {
    let first = Lsn(1 + u64::from(inp.u16()));
    let mut seg = encode_header(first, Lsn(first.0 - 1)).to_vec();
    let mut frames: Vec<Built> = Vec::new();
    let mut lsn = first;
    let batches = 1 + inp.u8() % 8;
    for b in 0..batches {
        let count = 1 + inp.u8() % 4;
        let synced = b == 0 || inp.u8().is_multiple_of(2);
        let mut fb = FrameBuf::new();
        fb.reset(synced);
        let batch_first = lsn.0;
        for _ in 0..count {
            let len = 1 + inp.u8() as usize % 48;
            // Letters only: no run of payload bytes can pass for a frame (its length field
            // would be over the limit), so the verdict below is exact.
            let payload: Vec<u8> = (0..len).map(|_| b'a' + inp.u8() % 26).collect();
            fb.begin(lsn).extend_from_slice(&payload);
            fb.finish().unwrap();
            let start = seg.len() + fb.bytes().len() - FRAME_HEADER_LEN - len;
            frames.push(Built {
                start,
                end: start + FRAME_HEADER_LEN + len,
                lsn: lsn.0,
                batch_first,
                synced,
                seal: false,
            });
            lsn = lsn.next();
        }
        seg.extend_from_slice(fb.bytes());
        // Sometimes a seal after the batch, as a clean close or a reopen writes one.
        if inp.u8().is_multiple_of(4) {
            let s = encode_seal(lsn);
            frames.push(Built {
                start: seg.len(),
                end: seg.len() + s.len(),
                lsn: lsn.0,
                batch_first: lsn.0,
                synced: true,
                seal: true,
            });
            seg.extend_from_slice(&s);
        }
    }
    let records_end = seg.len();
    seg.resize(records_end + inp.u8() as usize * 2, 0);
    let original = seg.clone();
    for _ in 0..inp.u8() % 4 {
        let kind = inp.u8() % 4;
        let at = SEGMENT_HEADER_LEN + inp.u16() as usize % (seg.len() - SEGMENT_HEADER_LEN);
        match kind {
            0 => seg[at] ^= 1 << (inp.u8() % 8),
            1 => seg[at] = inp.u8(),
            // A torn write: zeros from here to the end of the segment.
            2 => seg[at..].fill(0),
            _ => {
                let end = (at + 1 + inp.u8() as usize).min(seg.len());
                seg[at..end].fill(0);
            }
        }
    }
    let (records, end) = scan_checked(&seg, SEGMENT_HEADER_LEN, first);
    let intact = |f: &Built| seg[f.start..f.end] == original[f.start..f.end];
    let damaged = frames.iter().position(|f| !intact(f));
    let accepted = damaged.unwrap_or(frames.len());
    assert_eq!(
        records.len(),
        frames[..accepted].iter().filter(|f| !f.seal).count(),
        "records up to the first damaged frame are accepted, and only those"
    );
    let pos = frames.get(accepted).map_or(records_end, |f| f.start) as u64;
    let rest_is_zero = seg[pos as usize..].iter().all(|&b| b == 0);
    let corrupt = damaged.is_some_and(|d| {
        frames[d + 1..]
            .iter()
            .any(|f| intact(f) && f.synced && f.batch_first > frames[d].lsn)
    });
    match end {
        SegmentEnd::Clean { offset } => {
            assert!(rest_is_zero && !corrupt && offset == pos, "{end:?}");
        }
        SegmentEnd::Torn { offset, .. } => {
            assert!(!rest_is_zero && !corrupt && offset == pos, "{end:?}");
        }
        SegmentEnd::Corrupt { offset, .. } => {
            assert!(
                corrupt && offset == pos,
                "{end:?} but no synced later batch is intact"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// event_payload: the event decoder and `State::apply`.

/// The event payload decoder: whatever decodes re-encodes to a payload that decodes to the
/// same bytes, and applying it (to an empty state and to one where the sessions it names
/// exist) returns `Ok` or an error, never panics.
pub fn event_payload(data: &[u8]) {
    let Ok(event) = codec::decode_event(data) else {
        return;
    };
    let bytes = codec::event_to_vec(&event).expect("a decoded event encodes");
    let back = codec::decode_event(&bytes).expect("a re-encoded event decodes");
    assert_eq!(
        codec::event_to_vec(&back).unwrap(),
        bytes,
        "encoding is not stable"
    );
    let _ = State::new().apply(Lsn(1), &event);
    let mut st = State::new();
    let mut lsn = Lsn::ZERO;
    for id in event.body.sessions() {
        if st.session(id).is_none() {
            lsn = lsn.next();
            st.apply(lsn, &created(id.clone(), event.at)).unwrap();
        }
    }
    let before = st.clone();
    if st.apply(lsn.next(), &event).is_err() {
        // A failed apply may leave a half-applied scratch state (recovery then refuses
        // the log); only the LSN must not move.
        assert_eq!(st.last_lsn, before.last_lsn);
    }
}

fn created(id: SessionId, at: Timestamp) -> Event {
    Event {
        at,
        body: EventBody::SessionCreated(Box::new(SessionCreated {
            session: id.clone(),
            name: id.to_string(),
            agent: None,
            working_dir: None,
            timeout_secs: 60,
            config: SessionConfig::default(),
            metadata: vec![],
        })),
    }
}

// ---------------------------------------------------------------------------------------
// snapshot_file: the snapshot loader.

/// A snapshot file as `docs/format.md` describes it, written independently of the
/// engine's encoder.
pub fn snapshot_bytes(lsn: u64, segment: u64, offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; SNAPSHOT_HEADER_LEN];
    b[0..8].copy_from_slice(b"SESSNAP\0");
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..16].copy_from_slice(&(SNAPSHOT_HEADER_LEN as u32).to_le_bytes());
    b[16..24].copy_from_slice(&lsn.to_le_bytes());
    b[24..32].copy_from_slice(&segment.to_le_bytes());
    b[32..40].copy_from_slice(&offset.to_le_bytes());
    b[40..48].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    b[48..52].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let c = crc32fast::hash(&b[0..60]);
    b[60..64].copy_from_slice(&c.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

/// The snapshot loader: raw bytes (first byte even), or a state payload wrapped in a valid
/// header (first byte odd) so that the state decoder is reached. Whatever loads
/// re-encodes stably, and the state it holds can be worked on without a panic.
pub fn snapshot_file(data: &[u8]) {
    let mut inp = Input::new(data);
    let path = Path::new("snapshot");
    let loaded = if inp.u8().is_multiple_of(2) {
        decode_snapshot(path, inp.rest())
    } else {
        let segment = u64::from(inp.u8());
        let offset = u64::from(inp.u16());
        let payload = inp.rest();
        let lsn = codec::decode_state(payload).map_or(0, |s| s.last_lsn.0);
        decode_snapshot(path, &snapshot_bytes(lsn, segment, offset, payload))
    };
    let Ok((header, state)) = loaded else {
        return;
    };
    assert_eq!(header.lsn, state.last_lsn);
    let mut a = Vec::new();
    codec::encode_state(&state, &mut a).unwrap();
    let back = codec::decode_state(&a).expect("a re-encoded state decodes");
    let mut b = Vec::new();
    codec::encode_state(&back, &mut b).unwrap();
    assert_eq!(a, b, "state encoding is not stable");
    // Work on the loaded state as the writer would.
    let now = Timestamp::from_secs(START_SECS);
    for cmd in [
        Command::ExpireIdle,
        Command::CleanupOldSessions { max_age_days: 0 },
    ] {
        let mut st = state.clone();
        if let Ok((Some(body), _)) = session_engine::command::decide(&st, cmd, now) {
            let lsn = st.last_lsn.next();
            let _ = st.apply(lsn, &Event { at: now, body });
        }
    }
    for s in state.sessions.values() {
        let _ = s.statistics(now);
        let _ = s.command_history(3);
    }
    for c in state.chains.values() {
        let _ = c.summary();
    }
}

// ---------------------------------------------------------------------------------------
// recovery: opening a whole directory built from fuzz input.

fn sid(n: u8) -> SessionId {
    SessionId::new(&format!("s{}", n % 4)).unwrap()
}

fn text(inp: &mut Input<'_>) -> String {
    match inp.u8() % 8 {
        0 => String::new(),
        1 => " ".into(),
        2 => "tab\there\nnewline".into(),
        3 => "ctrl\u{1}char".into(),
        4 => "é".repeat(150),
        5 => "x".repeat(1025),
        _ => format!("text-{}", inp.u8()),
    }
}

fn json(inp: &mut Input<'_>) -> JsonText {
    JsonText::parse(&format!(r#"{{"n":{}}}"#, inp.u8())).unwrap()
}

/// An event made from fuzz input: any variant, about sessions `s0`..`s3`, which may or
/// may not fit the state it is applied to.
pub fn arb_event(inp: &mut Input<'_>, depth: u32) -> Event {
    let at = Timestamp::from_secs(START_SECS + i64::from(inp.u16()));
    let s = sid(inp.u8());
    let body = match inp.u8() % 15 {
        0 => created(s, at).body,
        1 => EventBody::ActivityRecorded {
            session: s,
            action: text(inp).into(),
            details: (inp.u8().is_multiple_of(2)).then(|| json(inp)),
        },
        2 => EventBody::MetadataSet {
            session: s,
            key: text(inp),
            value: json(inp),
        },
        3 => EventBody::MetadataRemoved {
            session: s,
            key: text(inp),
        },
        4 => EventBody::StatusChanged {
            session: s,
            status: [
                Status::Active,
                Status::Paused,
                Status::Ended,
                Status::TimedOut,
                Status::Archived,
            ][inp.u8() as usize % 5],
        },
        5 => EventBody::SessionsExpired {
            sessions: vec![s, sid(inp.u8())],
        },
        6 => EventBody::SessionsArchived { sessions: vec![s] },
        7 => EventBody::CommandRecorded {
            session: s,
            command: text(inp).into(),
            args: None,
            success: inp.u8().is_multiple_of(2),
            error: Some(text(inp)),
            duration_ms: u64::from(inp.u16()),
        },
        8 => EventBody::CheckpointSaved {
            session: s,
            label: Some(text(inp)),
        },
        9 => EventBody::CheckpointRestored {
            session: s,
            index: u32::from(inp.u8() % 4),
        },
        10 => EventBody::DecisionLogged {
            session: s,
            what: text(inp),
            why: text(inp),
            alternatives: None,
        },
        11 => EventBody::ChainLinked {
            agent: AgentId::new(&format!("a{}", inp.u8() % 2)).unwrap(),
            external_id: text(inp),
            prompt: text(inp),
            response: text(inp),
            metadata: None,
        },
        12 => EventBody::ChainReset {
            agent: AgentId::new(&format!("a{}", inp.u8() % 2)).unwrap(),
        },
        13 if depth < 2 => EventBody::SessionImported {
            session: s,
            original: sid(inp.u8()),
            events: (0..inp.u8() % 4)
                .map(|_| arb_event(inp, depth + 1))
                .collect(),
        },
        _ => {
            let mut scratch = State::new();
            scratch.apply(Lsn(1), &created(sid(inp.u8()), at)).unwrap();
            let data = scratch.sessions.values().next().unwrap().as_ref().clone();
            EventBody::SessionCloned {
                session: s,
                source: data.id.clone(),
                data: Box::new(data),
            }
        }
    };
    Event { at, body }
}

/// Builds a data directory from fuzz input on a `MemStorage`: up to four segments, each raw
/// bytes or a valid header followed by frames holding made-up events or raw payloads,
/// optionally damaged, and optionally a snapshot (raw bytes, or a valid snapshot of the
/// state the made-up events lead to).
pub fn build_directory(inp: &mut Input<'_>) -> MemStorage {
    let mem = MemStorage::new();
    let wal = Path::new("data/wal");
    let snaps = Path::new("data/snapshots");
    mem.create_dir_all(wal).unwrap();
    mem.create_dir_all(snaps).unwrap();
    let mut next = 1u64;
    let mut prev_first = 0u64;
    let mut state = State::new();
    // Ends of batches whose events all applied in order: (state, segment, offset).
    let mut positions: Vec<(State, u64, u64)> = Vec::new();
    for _ in 0..1 + inp.u8() % 4 {
        match inp.u8() % 5 {
            0 => {
                // Raw bytes under a segment name.
                let name_lsn = if inp.u8().is_multiple_of(2) {
                    next
                } else {
                    u64::from(inp.u16())
                };
                let len = inp.u16() as usize;
                let bytes = inp.bytes(len).to_vec();
                mem.set_file_content(&wal.join(segment_name(Lsn(name_lsn))), bytes)
                    .unwrap();
            }
            kind => {
                let first = match inp.u8() % 16 {
                    0 => u64::from(inp.u8()),
                    1 => u64::MAX - u64::from(inp.u8()),
                    _ => next,
                };
                // A header that names the segment built before it (or one LSN back).
                let f = first.max(1);
                let prev_records = match f {
                    1 => 0,
                    _ if (1..f).contains(&prev_first) => f - prev_first,
                    _ => 1,
                };
                let prev_records = u32::try_from(prev_records).unwrap_or(1);
                let mut seg = encode_header_raw(Lsn(f), 2, prev_records).to_vec();
                prev_first = f;
                let mut lsn = first.max(1);
                for _ in 0..inp.u8() % 12 {
                    let mut fb = FrameBuf::new();
                    fb.reset(!inp.u8().is_multiple_of(4));
                    for _ in 0..1 + inp.u8() % 3 {
                        let payload = if kind == 1 {
                            let n = inp.u8() as usize;
                            let mut p = vec![1u8];
                            p.extend_from_slice(inp.bytes(n));
                            p
                        } else {
                            let e = arb_event(inp, 0);
                            if lsn == state.last_lsn.0 + 1 {
                                let _ = state.apply(Lsn(lsn), &e);
                            }
                            codec::event_to_vec(&e).unwrap()
                        };
                        fb.begin(Lsn(lsn)).extend_from_slice(&payload);
                        if fb.finish().is_err() {
                            continue;
                        }
                        match lsn.checked_add(1) {
                            Some(n) => lsn = n,
                            None => break,
                        }
                    }
                    seg.extend_from_slice(fb.bytes());
                    if state.last_lsn.0 == lsn - 1 && lsn > 1 {
                        positions.push((state.clone(), first.max(1), seg.len() as u64));
                    }
                }
                seg.resize(seg.len() + 64 * (inp.u8() as usize % 8), 0);
                for _ in 0..inp.u8() % 3 {
                    let at = inp.u16() as usize % seg.len();
                    seg[at] ^= 1 << (inp.u8() % 8);
                }
                mem.set_file_content(&wal.join(segment_name(Lsn(first))), seg)
                    .unwrap();
                next = lsn;
            }
        }
    }
    match inp.u8() % 4 {
        0 => {
            let lsn = u64::from(inp.u8());
            let len = inp.u16() as usize;
            let bytes = inp.bytes(len).to_vec();
            mem.set_file_content(&snaps.join(snapshot_name(Lsn(lsn))), bytes)
                .unwrap();
        }
        1 if !positions.is_empty() => {
            // A valid snapshot of the state at the end of some batch (the log may be
            // damaged before or after it).
            let (st, segment, offset) = &positions[inp.u8() as usize % positions.len()];
            let (lsn, segment, offset) = (st.last_lsn.0, *segment, *offset);
            let mut payload = Vec::new();
            codec::encode_state(st, &mut payload).unwrap();
            mem.set_file_content(
                &snaps.join(snapshot_name(Lsn(lsn))),
                snapshot_bytes(lsn, segment, offset, &payload),
            )
            .unwrap();
        }
        _ => {}
    }
    mem
}

fn recovery_options(storage: Arc<dyn Storage>, clock: &ManualClock) -> session_engine::Options {
    workload_options(storage, clock, Settings::default())
}

/// Recovery of a whole directory: `Engine::open` on a directory built from arbitrary
/// bytes returns an engine or a typed error, never panics; when it opens, `verify` agrees
/// with it, the next write works and a reopen recovers the same state plus that write.
pub fn recovery(data: &[u8]) {
    let mut inp = Input::new(data);
    let mem = Arc::new(build_directory(&mut inp));
    let storage: Arc<dyn Storage> = mem.clone();
    let clock = ManualClock::new(Timestamp::from_secs(START_SECS));
    let report = session_engine::verify(Path::new("data"), &*storage, |_| {});
    let read_only = Engine::open_read_only("data", recovery_options(storage.clone(), &clock));
    let opened = Engine::open("data", recovery_options(storage.clone(), &clock));
    let e = match opened {
        Ok(e) => e,
        Err(Error::Corruption { .. } | Error::UnsupportedVersion { .. }) => {
            let report = report.expect("verify runs where open refuses");
            assert!(
                !report.is_intact(),
                "open refused a directory verify finds intact: {report:?}"
            );
            assert!(
                read_only.is_err(),
                "a read-only open accepted what open refused"
            );
            return;
        }
        Err(e) => panic!("open failed with an untyped or unexpected error: {e}"),
    };
    let report = report.expect("verify runs where open succeeds");
    let rec = e.recovery_report();
    if rec.snapshot_lsn.is_none() {
        // Both replayed the whole log and must agree on it.
        assert_eq!(report.last_lsn, e.last_lsn(), "verify and open disagree");
        assert!(report.damage.is_none(), "{report:?}");
        assert_eq!(
            report.torn_tail.as_ref().map(|t| t.offset),
            rec.torn_tail.as_ref().map(|t| t.offset)
        );
    } else if report.damage.is_none() && report.torn_tail.is_none() {
        assert_eq!(report.last_lsn, e.last_lsn(), "verify and open disagree");
    } else {
        // The open started from a snapshot, after damage that verify, replaying from
        // LSN 1, reports; the snapshot it used is then reported as beyond the valid log.
        assert!(!report.is_intact());
    }
    let read_only = read_only.expect("a read-only open succeeds where open does");
    assert_eq!(read_only.last_lsn(), e.last_lsn());
    let before = e.state();
    let c = e
        .execute(Command::CreateSession(Box::new(NewSession {
            id: Some(SessionId::new("fuzz-after").unwrap()),
            ..NewSession::default()
        })))
        .expect("the next write works after recovery");
    assert_eq!(c.lsn, before.last_lsn.next());
    let after = e.state();
    e.close().unwrap();
    let again = Engine::open("data", recovery_options(storage, &clock)).expect("reopen");
    assert!(again.recovery_report().torn_tail.is_none());
    // Debug text, so that a NaN decoded from raw bytes compares equal to itself.
    assert_eq!(
        format!("{:?}", Model::from_state(&again.state())),
        format!("{:?}", Model::from_state(&after))
    );
}

// ---------------------------------------------------------------------------------------
// model: random operations with crashes against the reference model.

fn model_command(inp: &mut Input<'_>) -> Command {
    let s = sid(inp.u8());
    match inp.u8() % 18 {
        0 | 1 => Command::CreateSession(Box::new(NewSession {
            id: Some(s),
            name: (inp.u8().is_multiple_of(4)).then(|| text(inp)),
            timeout_secs: [0, 60, 3600][inp.u8() as usize % 3],
            agent: None,
            working_dir: None,
            config: SessionConfig {
                timeout: [300.0, -1.0, f64::NAN, 1e12][inp.u8() as usize % 4],
                max_retries: [3, 1001][inp.u8() as usize % 2],
                ..SessionConfig::default()
            },
            metadata: (0..inp.u8() % 3).map(|_| (text(inp), json(inp))).collect(),
        })),
        2..=4 => Command::RecordActivity {
            session: s,
            action: text(inp),
            details: (inp.u8().is_multiple_of(2)).then(|| json(inp)),
        },
        5 => Command::SetMetadata {
            session: s,
            key: text(inp),
            value: json(inp),
        },
        6 => Command::RemoveMetadata {
            session: s,
            key: text(inp),
        },
        7 => Command::Pause(s),
        8 => Command::Resume(s),
        9 => Command::End(s),
        10 => Command::Archive(s),
        11 => Command::CleanupOldSessions {
            max_age_days: u32::from(inp.u8() % 3),
        },
        12 => Command::ExpireIdle,
        13 => Command::RecordCommand {
            session: s,
            command: text(inp),
            args: None,
            success: inp.u8().is_multiple_of(2),
            error: (inp.u8().is_multiple_of(2)).then(|| text(inp)),
            duration_ms: u64::from(inp.u8()),
        },
        14 => Command::SaveCheckpoint {
            session: s,
            label: (inp.u8().is_multiple_of(2)).then(|| text(inp)),
        },
        15 => Command::RestoreCheckpoint {
            session: s,
            index: (inp.u8().is_multiple_of(2)).then(|| u32::from(inp.u8() % 3)),
        },
        16 => Command::LinkChain {
            agent: AgentId::new(&format!("a{}", inp.u8() % 2)).unwrap(),
            external_id: text(inp),
            prompt: text(inp),
            response: text(inp),
            metadata: None,
        },
        _ => match inp.u8() % 3 {
            0 => Command::ResetChain(AgentId::new(&format!("a{}", inp.u8() % 2)).unwrap()),
            1 => Command::LogDecision {
                session: s,
                what: text(inp),
                why: text(inp),
                alternatives: None,
            },
            _ => Command::Clone {
                source: s,
                new_id: Some(sid(inp.u8())),
            },
        },
    }
}

/// The steps a model input describes.
pub fn model_steps(inp: &mut Input<'_>) -> Vec<Step> {
    let mut steps = Vec::new();
    while !inp.is_empty() && steps.len() < 200 {
        let op = inp.u8();
        steps.push(match op % 16 {
            0..=9 => Step::Cmd(model_command(inp)),
            10 => Step::Advance(u64::from(inp.u8()) * [1, 60, 3600][inp.u8() as usize % 3]),
            11 => Step::Snapshot,
            12 => Step::Reopen,
            13 => Step::HaltAfter(u64::from(inp.u8() % 8)),
            _ => Step::Crash(inp.u64(), CrashMode::ALL[inp.u8() as usize % 4]),
        });
    }
    steps
}

/// Random operations, power cuts and halts against the engine on `MemStorage`, checked
/// step by step against the reference model by the workload runner.
pub fn model(data: &[u8]) {
    let mut inp = Input::new(data);
    let settings = Settings {
        segment_bytes: 4096 * (1 + u64::from(inp.u8() % 3)),
        snapshot_every: u64::from(inp.u8() % 24),
        keep_snapshots: 1 + inp.u8() as usize % 3,
        max_batch: 1 + inp.u8() as usize % 8,
    };
    let steps = model_steps(&mut inp);
    let mem = Arc::new(MemStorage::new());
    let mut run = Runner::new(mem.clone(), Some(mem), settings);
    run.run(&steps);
    // A final power cut: everything acknowledged survives, and the engine works on.
    run.run(&[Step::Crash(0xF1A1, CrashMode::Sectors)]);
    run.crash_seeds = 1;
    run.next_writes_survive("model");
    run.close();
}

/// An engine on an in-memory disk that lives as long as the thread: checks that run
/// commands share it, so state builds up across inputs as in a long-running `apply`.
fn shared_engine<R>(f: impl FnOnce(&Engine) -> R) -> R {
    thread_local! {
        static ENGINE: Engine = {
            let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
            let clock = ManualClock::new(Timestamp::from_secs(START_SECS));
            let settings = Settings {
                segment_bytes: 1 << 20,
                snapshot_every: 0,
                ..Settings::default()
            };
            Engine::open("fuzz", workload_options(storage, &clock, settings)).unwrap()
        };
    }
    ENGINE.with(f)
}

/// Target `bundle`: the export-bundle importer. Parsing arbitrary bytes never panics; a
/// bundle that parses (its events replay on an empty state, by the parser's own check)
/// imports into an engine, under its own id or a new one when the id is taken, and the
/// imported session's events re-export into a bundle that parses again.
pub fn bundle(data: &[u8]) {
    let Ok(bundle) = session_engine::parse_bundle(data) else {
        return;
    };
    let original = bundle.session_id.clone();
    let events = bundle.events.len();
    shared_engine(|e| {
        let c = e
            .execute(Command::Import {
                original,
                events: bundle.events,
            })
            .unwrap_or_else(|err| panic!("a parsed bundle of {events} events was refused: {err}"));
        let session_engine::Outcome::Session(id) = c.outcome else {
            panic!("an import answered {:?}", c.outcome);
        };
        let again = session_engine::export::Bundle::export(e, &id).expect("re-export");
        let bytes = again.to_json().expect("re-encode");
        session_engine::parse_bundle(&bytes).expect("a re-exported bundle parses");
    });
}

/// Target `apply_line`: the `apply` command parser. Any line (lossily decoded as UTF-8)
/// parses to a request (a command or a run op) or a typed `InvalidInput`-like refusal,
/// never a panic, and `parse_line` takes exactly the lines that are commands; a command
/// that parses runs against an engine and is either accepted or refused, never an engine
/// failure.
pub fn apply_line(data: &[u8]) {
    use session_engine::protocol::{Request, parse_line, parse_request};
    let line = String::from_utf8_lossy(data);
    let req = parse_request(&line);
    assert_eq!(
        parse_line(&line).is_ok(),
        matches!(req, Ok(Request::Command(_))),
        "parse_line and parse_request disagree on {line:?}"
    );
    match req {
        Err(e) => assert!(e.is_refusal(), "a bad line is not a refusal: {e:?}"),
        Ok(Request::Command(cmd)) => shared_engine(|e| {
            if let Err(err) = e.execute(cmd) {
                assert!(
                    err.is_refusal(),
                    "a parsed command failed the engine: {err:?}"
                );
            }
        }),
        // A run op: answering it needs a manager (cli/tests/supervisor_cli.rs).
        Ok(_) => {}
    }
}

/// Target `chain_file`: the seed 003 tracker file reader (`import`). Any bytes give a
/// chain or a typed refusal, never a panic; a chain that parses is accepted by the import
/// command on an empty state, the chain file the engine then renders is equal, as a JSON
/// value, to the input (the import is lossless), and the state holding it survives its
/// snapshot encoding.
pub fn chain_file(data: &[u8]) {
    use session_engine::import::seed003::parse_chain_file;
    let Ok(chain) = parse_chain_file(None, data) else {
        return;
    };
    let input: serde_json::Value =
        serde_json::from_slice(data).expect("a tracker file that parses is JSON");
    let agent = chain.agent.clone();
    let mut st = State::new();
    let now = Timestamp::from_secs(START_SECS);
    let (body, _) = session_engine::command::decide(
        &st,
        Command::ImportChains {
            chains: vec![chain],
        },
        now,
    )
    .unwrap_or_else(|e| panic!("a tracker file that parses was refused: {e}"));
    let body = body.expect("an import appends an event");
    st.apply(Lsn(1), &Event { at: now, body })
        .expect("an accepted import applies");
    let c = st.chain(&agent).expect("the imported chain");
    let rendered = serde_json::to_value(session_engine::projection::ChainFile::of(c)).unwrap();
    assert_eq!(
        rendered, input,
        "the chain file differs from the file imported"
    );
    let mut bytes = Vec::new();
    codec::encode_state(&st, &mut bytes).unwrap();
    assert_eq!(codec::decode_state(&bytes).expect("the state decodes"), st);
}
