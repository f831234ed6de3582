//! Walks the recovery decision table of `docs/format.md`, row by row, on hand-built logs.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use session_engine::codec::event_to_vec;
use session_engine::event::{Event, EventBody, SessionCreated};
use session_engine::storage::{MemStorage, Storage};
use session_engine::wal::record::FrameBuf;
use session_engine::wal::segment::{SEGMENT_HEADER_LEN, encode_header, segment_name};
use session_engine::{Engine, Error, Lsn, SessionConfig, Timestamp};

const SEG_SIZE: usize = 4096;

fn created(n: u64) -> Vec<u8> {
    event_to_vec(&Event {
        at: Timestamp::from_secs(T0),
        body: EventBody::SessionCreated(Box::new(SessionCreated {
            session: id(&format!("s{n}")),
            name: format!("s{n}"),
            agent: None,
            working_dir: None,
            timeout_secs: 0,
            config: SessionConfig::default(),
            metadata: vec![],
        })),
    })
    .unwrap()
}

/// A segment starting at `first`, holding `batches` of records (each record creates session
/// `s<lsn>`), padded with zeros. Returns the bytes and each record's offset.
fn segment(first: u64, batches: &[usize], synced: bool) -> (Vec<u8>, Vec<usize>) {
    // Every multi-segment log here starts with a segment at LSN 1.
    let prev = if first > 1 { Lsn(1) } else { Lsn::ZERO };
    let mut out = encode_header(Lsn(first), prev).to_vec();
    let mut offsets = Vec::new();
    let mut lsn = first;
    for &n in batches {
        let mut b = FrameBuf::new();
        b.reset(synced);
        let base = out.len();
        let mut rel = Vec::new();
        for _ in 0..n {
            rel.push(b.bytes().len());
            b.begin(Lsn(lsn)).extend_from_slice(&created(lsn));
            b.finish().unwrap();
            lsn += 1;
        }
        offsets.extend(rel.into_iter().map(|r| base + r));
        out.extend_from_slice(b.bytes());
    }
    out.resize(SEG_SIZE, 0);
    (out, offsets)
}

fn wal_path(first: u64) -> PathBuf {
    Path::new("data/wal").join(segment_name(Lsn(first)))
}

fn storage_with(segments: &[(u64, Vec<u8>)]) -> (MemStorage, Arc<dyn Storage>) {
    let m = MemStorage::new();
    m.create_dir_all(Path::new("data/wal")).unwrap();
    for (first, bytes) in segments {
        m.set_file_content(&wal_path(*first), bytes.clone())
            .unwrap();
    }
    let s: Arc<dyn Storage> = Arc::new(m.clone());
    (m, s)
}

fn open(s: &Arc<dyn Storage>) -> Result<Engine, Error> {
    Engine::open("data", options(Arc::clone(s), &clock()))
}

fn assert_corruption(r: Result<Engine, Error>, file: &Path, offset: u64, needle: &str) {
    match r {
        Err(Error::Corruption {
            file: f,
            offset: o,
            reason,
        }) => {
            assert_eq!(f, file, "{reason}");
            assert_eq!(o, offset, "{reason}");
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(e) => panic!("expected corruption, opened at LSN {}", e.last_lsn()),
    }
}

#[test]
fn row_1_zeros_after_the_last_record_are_a_clean_end() {
    let (seg, _) = segment(1, &[1, 2], true);
    let (_, s) = storage_with(&[(1, seg)]);
    let e = open(&s).unwrap();
    assert_eq!(e.last_lsn(), Lsn(3));
    assert!(e.recovery_report().torn_tail.is_none());
}

#[test]
fn row_2_a_segment_ending_in_zeros_is_followed_by_the_next_one() {
    let (a, _) = segment(1, &[2], true);
    let (b, _) = segment(3, &[1], true);
    let (_, s) = storage_with(&[(1, a), (3, b)]);
    assert_eq!(open(&s).unwrap().last_lsn(), Lsn(3));
}

#[test]
fn row_3_damage_followed_by_nothing_synced_is_a_torn_tail_cut_and_saved() {
    let (mut seg, offs) = segment(1, &[1, 3], true);
    seg[offs[2] + 21] ^= 1; // LSN 3, inside the final batch; LSN 4 stays valid
    let (m, s) = storage_with(&[(1, seg.clone())]);
    let e = open(&s).unwrap();
    assert_eq!(e.last_lsn(), Lsn(2));
    let t = e.recovery_report().torn_tail.clone().unwrap();
    assert_eq!(
        (t.file.clone(), t.offset, t.lsn),
        (wal_path(1), offs[2] as u64, Lsn(3))
    );
    let saved = m.file_content(t.saved_to.as_ref().unwrap()).unwrap();
    assert_eq!(saved[..], seg[offs[2]..offs[2] + t.bytes as usize]);
    let after = m.file_content(&wal_path(1)).unwrap();
    // The cut bytes are zeroed, and the writer seals what it kept.
    assert_sealed_then_zeros(&after, offs[2], 3);
}

#[test]
fn row_4_damage_followed_by_a_later_synced_batch_is_corruption() {
    let (mut seg, offs) = segment(1, &[1, 1, 1], true);
    seg[offs[1] + 21] ^= 1;
    let (_, s) = storage_with(&[(1, seg)]);
    assert_corruption(
        open(&s),
        &wal_path(1),
        offs[1] as u64,
        "a later write follows",
    );
}

#[test]
fn row_5_damage_in_a_segment_that_is_not_the_last_is_corruption() {
    let (mut a, offs) = segment(1, &[1, 1], true);
    a[offs[1] + 21] ^= 1;
    let (b, _) = segment(3, &[1], true);
    let (_, s) = storage_with(&[(1, a), (3, b)]);
    assert_corruption(
        open(&s),
        &wal_path(1),
        offs[1] as u64,
        "later segments follow",
    );
}

#[test]
fn row_6_a_valid_record_with_the_wrong_lsn_is_corruption() {
    // LSNs 1, 2, then 2 again: a repeat.
    let (a, offs) = segment(1, &[2], true);
    let (b, boffs) = segment(2, &[1], true);
    let frame_len = session_engine::wal::record::decode_frame(&b[boffs[0]..])
        .unwrap()
        .len;
    let end_of_2 = offs[1] + frame_len;
    let mut bytes = a[..end_of_2].to_vec();
    bytes.extend_from_slice(&b[boffs[0]..boffs[0] + frame_len]);
    bytes.resize(SEG_SIZE, 0);
    let (_, s) = storage_with(&[(1, bytes)]);
    assert_corruption(
        open(&s),
        &wal_path(1),
        end_of_2 as u64,
        "where LSN 3 was expected (a repeat)",
    );
}

#[test]
fn row_7_a_segment_that_does_not_continue_the_lsns_is_corruption() {
    let (a, _) = segment(1, &[2], true);
    let (b, _) = segment(5, &[1], true);
    let (_, s) = storage_with(&[(1, a), (5, b)]);
    assert_corruption(
        open(&s),
        &wal_path(5),
        16,
        "previous segment ended at LSN 2",
    );
}

#[test]
fn row_8_a_damaged_segment_header_is_corruption_at_its_field() {
    for (offset, expect_at, needle) in [
        (0usize, 0u64, "bad segment magic"),
        (20, 28, "header checksum mismatch"),
        (29, 28, "header checksum mismatch"),
    ] {
        let (mut seg, _) = segment(1, &[1], true);
        seg[offset] ^= 1;
        let (_, s) = storage_with(&[(1, seg)]);
        assert_corruption(open(&s), &wal_path(1), expect_at, needle);
    }
    // A header that is internally valid but names another first LSN than the file.
    let (seg, _) = segment(7, &[1], true);
    let (_, s) = storage_with(&[(1, seg)]);
    assert_corruption(open(&s), &wal_path(1), 16, "its name says 1");
}

#[test]
fn row_9_an_unknown_segment_version_is_refused_as_unsupported() {
    let (mut seg, _) = segment(1, &[1], true);
    seg[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&seg[0..28]);
    seg[28..32].copy_from_slice(&crc.to_le_bytes());
    let (_, s) = storage_with(&[(1, seg)]);
    match open(&s) {
        Err(Error::UnsupportedVersion {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (3, 2));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn row_10_a_record_that_does_not_decode_or_apply_is_corruption() {
    // A checksummed frame whose payload is not an event.
    let mut out = encode_header(Lsn(1), Lsn::ZERO).to_vec();
    let mut b = FrameBuf::new();
    b.reset(true);
    b.begin(Lsn(1)).extend_from_slice(&[1, 0xff, 0xff, 0xff]);
    b.finish().unwrap();
    out.extend_from_slice(b.bytes());
    out.resize(SEG_SIZE, 0);
    let (_, s) = storage_with(&[(1, out)]);
    assert_corruption(
        open(&s),
        &wal_path(1),
        SEGMENT_HEADER_LEN as u64,
        "record 1",
    );
    // A well-formed event that does not apply: the same session created twice.
    let mut out = encode_header(Lsn(1), Lsn::ZERO).to_vec();
    let mut b = FrameBuf::new();
    b.reset(true);
    b.begin(Lsn(1)).extend_from_slice(&created(1));
    b.finish().unwrap();
    let second = SEGMENT_HEADER_LEN + b.bytes().len();
    b.begin(Lsn(2)).extend_from_slice(&created(1));
    b.finish().unwrap();
    out.extend_from_slice(b.bytes());
    out.resize(SEG_SIZE, 0);
    let (_, s) = storage_with(&[(1, out)]);
    assert_corruption(
        open(&s),
        &wal_path(1),
        second as u64,
        "does not apply to the state",
    );
}

#[test]
fn row_11_a_log_that_ends_before_its_snapshot_or_starts_after_lsn_1_is_corruption() {
    let (seg, _) = segment(3, &[1], true);
    let (_, s) = storage_with(&[(3, seg)]);
    assert_corruption(open(&s), &wal_path(3), 16, "starts at LSN 3, not 1");

    // A snapshot at LSN 5 over a log of 2 records.
    let (m, s) = mem();
    let clock = clock();
    let e = Engine::open("data", options(Arc::clone(&s), &clock)).unwrap();
    for i in 0..5 {
        create(&e, &format!("s{i}"));
    }
    e.snapshot().unwrap();
    e.close().unwrap();
    let (short, _) = segment(1, &[2], true);
    m.set_file_content(&wal_path(1), short).unwrap();
    match open(&s) {
        Err(Error::Corruption { file, reason, .. }) => {
            assert_eq!(file, wal_path(1));
            assert!(
                reason.contains("the log ends at LSN 2 but the snapshot is at LSN 5"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

// Open decodes records on its own thread and applies them on a helper once a log holds
// more than a batch (1,024 records); the rows below hold on such logs exactly as on the
// short ones above.

/// A segment of `n` records in batches of 100, record `lsn` creating session `s<lsn>`
/// unless `payload(lsn)` says otherwise; with `torn`, a last batch cut short. Returns the
/// bytes and each record's offset (and, with `torn`, where the cut batch starts).
fn long_segment(
    n: u64,
    payload: impl Fn(u64) -> Option<Vec<u8>>,
    torn: bool,
) -> (Vec<u8>, Vec<usize>) {
    let mut out = encode_header(Lsn(1), Lsn::ZERO).to_vec();
    let mut offsets = Vec::new();
    let mut b = FrameBuf::new();
    for lsn in 1..=n {
        if (lsn - 1) % 100 == 0 {
            out.extend_from_slice(b.bytes());
            b.reset(true);
        }
        offsets.push(out.len() + b.bytes().len());
        let p = payload(lsn).unwrap_or_else(|| created(lsn));
        b.begin(Lsn(lsn)).extend_from_slice(&p);
        b.finish().unwrap();
    }
    out.extend_from_slice(b.bytes());
    if torn {
        // The start of a batch of two more records, never synced.
        offsets.push(out.len());
        b.reset(false);
        for lsn in n + 1..=n + 2 {
            b.begin(Lsn(lsn)).extend_from_slice(&created(lsn));
            b.finish().unwrap();
        }
        out.extend_from_slice(&b.bytes()[..30]);
    }
    out.resize(out.len() + 4096, 0);
    (out, offsets)
}

const LONG: u64 = 5_000;

#[test]
fn a_long_log_replays_to_the_state_its_events_build() {
    let (seg, _) = long_segment(LONG, |_| None, false);
    let (_, s) = storage_with(&[(1, seg)]);
    let e = open(&s).unwrap();
    assert_eq!(e.last_lsn(), Lsn(LONG));
    let mut expected = session_engine::State::new();
    for lsn in 1..=LONG {
        let event = session_engine::codec::decode_event(&created(lsn)).unwrap();
        expected.apply(Lsn(lsn), &event).unwrap();
    }
    assert_eq!(*e.state(), expected);
}

#[test]
fn a_long_log_with_a_torn_tail_is_cut_after_the_last_whole_record() {
    let (seg, offs) = long_segment(LONG, |_| None, true);
    let end = offs[LONG as usize];
    let (m, s) = storage_with(&[(1, seg)]);
    let e = open(&s).unwrap();
    assert_eq!(e.last_lsn(), Lsn(LONG));
    assert_eq!(e.state().sessions.len() as u64, LONG);
    let t = e.recovery_report().torn_tail.clone().unwrap();
    assert_eq!((t.offset, t.lsn), (end as u64, Lsn(LONG + 1)));
    let after = m.file_content(&wal_path(1)).unwrap();
    assert_sealed_then_zeros(&after, end, LONG + 1);
}

#[test]
fn in_a_long_log_a_record_that_does_not_apply_is_corruption_and_nothing_is_cut() {
    // Records at several distances from the batch boundaries, the last record among them.
    for bad in [1_500, 2_048, 2_049, 4_999, LONG] {
        let (seg, offs) = long_segment(LONG, |lsn| (lsn == bad).then(|| created(7)), true);
        let (m, s) = storage_with(&[(1, seg.clone())]);
        assert_corruption(
            open(&s),
            &wal_path(1),
            offs[bad as usize - 1] as u64,
            &format!("record {bad} does not apply to the state"),
        );
        assert_eq!(
            m.file_content(&wal_path(1)).unwrap(),
            seg,
            "record {bad}: the torn tail was cut although the log does not open"
        );
        assert!(
            m.list_dir(Path::new("data/quarantine"))
                .map_or(true, |v| v.is_empty()),
            "record {bad}: something was set aside"
        );
    }
}

#[test]
fn in_a_long_log_the_first_bad_record_is_reported_whether_it_does_not_apply_or_not_decode() {
    let garbage = vec![1, 0xff, 0xff, 0xff];
    // A record that does not apply before one that does not decode: the first is reported,
    // although the reader decodes ahead of the helper that applies.
    let (seg, offs) = long_segment(
        LONG,
        |lsn| match lsn {
            2_000 => Some(created(3)),
            2_100 | 4_000 => Some(garbage.clone()),
            _ => None,
        },
        false,
    );
    let (_, s) = storage_with(&[(1, seg)]);
    assert_corruption(
        open(&s),
        &wal_path(1),
        offs[1_999] as u64,
        "record 2000 does not apply",
    );
    // A record that does not decode, after the helper has started and before any that does
    // not apply.
    let (seg, offs) = long_segment(
        LONG,
        |lsn| match lsn {
            3_000 => Some(garbage.clone()),
            3_500 => Some(created(3)),
            _ => None,
        },
        false,
    );
    let (_, s) = storage_with(&[(1, seg)]);
    assert_corruption(open(&s), &wal_path(1), offs[2_999] as u64, "record 3000: ");
}

#[test]
fn a_reader_names_the_segment_and_offset_of_a_record_that_does_not_decode() {
    // Readers that do not replay (subscriptions, `Engine::read_log`, the CLI's `replay`,
    // export) decode through the same path as replay, so they report the same place.
    let (seg, offs) = long_segment(
        10,
        |lsn| (lsn == 7).then(|| vec![1, 0xff, 0xff, 0xff]),
        false,
    );
    let (_, s) = storage_with(&[(1, seg)]);
    let reader = session_engine::wal::LogReader::new(Arc::clone(&s), Path::new("data/wal"));
    let mut seen = Vec::new();
    let err = reader
        .for_each_event(Lsn(1), Lsn(10), |lsn, _| {
            seen.push(lsn.0);
            Ok(true)
        })
        .unwrap_err();
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    match err {
        Error::Corruption {
            file,
            offset,
            reason,
        } => {
            assert_eq!(file, wal_path(1), "{reason}");
            assert_eq!(offset, offs[6] as u64, "{reason}");
            assert!(reason.contains("record 7"), "{reason}");
        }
        other => panic!("expected corruption, got {other}"),
    }
}
