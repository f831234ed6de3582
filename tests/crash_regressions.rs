//! Regression tests for crash-safety bugs found by the crash, fault and bit-flip sweeps.
//! Each test names the bug it pins; each failed before its fix.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use session_engine::storage::{CrashMode, Storage};
use session_engine::wal::record::decode_frame;
use session_engine::wal::segment::SEGMENT_HEADER_LEN;
use session_engine::{Engine, Lsn};

/// The engine created `data/`, `data/wal/` and `data/snapshots/` without syncing their
/// parents, so a power cut could make the directories, and with them every acknowledged
/// record, vanish.
#[test]
fn a_new_data_directory_survives_a_power_cut_after_the_first_acknowledged_command() {
    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    for seed in 0..64 {
        for mode in CrashMode::ALL {
            let crashed: Arc<dyn Storage> = Arc::new(m.crash(seed, mode));
            let r = Engine::open_read_only("data", options(crashed, &clock))
                .unwrap_or_else(|err| panic!("seed {seed} {mode:?}: {err}"));
            assert_eq!(r.last_lsn(), Lsn(1), "seed {seed} {mode:?}");
        }
    }
}

/// The same for a data directory whose parents are missing too.
#[test]
fn a_nested_new_data_directory_survives_a_power_cut() {
    let (m, s) = mem();
    let clock = clock();
    let e = Engine::open(".claude/runtime", options(Arc::clone(&s), &clock)).unwrap();
    create(&e, "s1");
    for seed in 0..64 {
        let crashed: Arc<dyn Storage> = Arc::new(m.crash(seed, CrashMode::Whole));
        let r = Engine::open_read_only(".claude/runtime", options(crashed, &clock))
            .unwrap_or_else(|err| panic!("seed {seed}: {err}"));
        assert_eq!(r.last_lsn(), Lsn(1), "seed {seed}");
    }
}

/// Recovery saved a torn tail into `quarantine/` and then zeroed it in the segment, but
/// the new `quarantine/` directory's entry was not durable: a power cut right after the
/// cut could lose the saved bytes, deleting them silently.
#[test]
fn bytes_moved_to_quarantine_survive_a_power_cut() {
    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    activity(&e, "s1", "a");
    let (m, s) = killed(&m, e);
    let seg = segments(&m, "data")[0].clone();
    let mut bytes = m.file_content(&seg).unwrap();
    let first = decode_frame(&bytes[SEGMENT_HEADER_LEN..]).unwrap().len;
    let second = SEGMENT_HEADER_LEN + first;
    bytes[second + 25] ^= 0xff;
    let damaged = bytes[second..second + 30].to_vec();
    m.set_file_content(&seg, bytes).unwrap();
    let e = open(&s, &clock);
    let torn = e.recovery_report().torn_tail.clone().unwrap();
    let saved = torn.saved_to.unwrap();
    e.close().unwrap();
    for seed in 0..64 {
        let crashed = m.crash(seed, CrashMode::Whole);
        let content = crashed
            .file_content(&saved)
            .unwrap_or_else(|err| panic!("seed {seed}: {} lost: {err}", saved.display()));
        assert_eq!(content[..30], damaged[..], "seed {seed}");
    }
    assert!(Path::new(&saved).starts_with("data/quarantine"));
}

/// A segment renamed into place whose directory sync failed (or whose process died
/// before the sync) was trusted by the next open: it appended and acknowledged records
/// in a segment whose directory entry could still vanish in a power cut.
#[test]
fn a_segment_whose_directory_sync_failed_is_made_durable_before_it_is_written() {
    use session_engine::storage::{FaultKind, FaultPlan, FaultStorage};
    let mut reopened_after_failed_open = 0;
    for fail_at in 1..=12 {
        let (m, inner) = mem();
        let faulty: Arc<dyn Storage> = Arc::new(FaultStorage::new(
            Arc::clone(&inner),
            FaultPlan {
                kind: FaultKind::SyncFails,
                fail_at,
                forever: false,
            },
        ));
        let clock = clock();
        if Engine::open("data", options(faulty, &clock)).is_ok() {
            continue;
        }
        reopened_after_failed_open += 1;
        // The disk heals; the process opens the directory again and works.
        let e = open(&inner, &clock);
        create(&e, "s1");
        activity(&e, "s1", "acknowledged");
        for seed in 0..32 {
            for mode in CrashMode::ALL {
                let crashed: Arc<dyn Storage> = Arc::new(m.crash(seed, mode));
                let r = Engine::open_read_only("data", options(crashed, &clock)).unwrap();
                assert_eq!(
                    r.last_lsn(),
                    Lsn(2),
                    "sync {fail_at} failed; seed {seed} {mode:?}"
                );
            }
        }
    }
    assert!(
        reopened_after_failed_open >= 5,
        "{reopened_after_failed_open}"
    );
}

/// A crafted snapshot (valid checksums) claiming LSN 2^64-1 made recovery overflow its
/// LSN arithmetic: a panic in debug builds, a misleading "gap" in release builds. LSNs
/// above `Lsn::MAX` are now refused where they are decoded.
#[test]
fn absurd_lsns_in_crafted_files_are_refused_not_overflowed() {
    use session_engine::snapshot::{decode_snapshot, snapshot_name};
    use session_engine::wal::FrameBuf;
    use session_engine::wal::segment::{decode_header, encode_header_raw};
    use session_engine::{Error, State, codec};

    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    e.close().unwrap();
    for lsn in [u64::MAX, Lsn::MAX.0 + 1] {
        let mut st = State::new();
        st.last_lsn = Lsn(lsn);
        let mut payload = Vec::new();
        codec::encode_state(&st, &mut payload).unwrap();
        let bytes = common::checks::snapshot_bytes(lsn, 1, SEGMENT_HEADER_LEN as u64, &payload);
        let path = Path::new("data/snapshots").join(snapshot_name(Lsn(lsn)));
        let err = decode_snapshot(&path, &bytes).unwrap_err();
        assert!(matches!(err, Error::Corruption { offset: 16, .. }), "{err}");
        // The engine skips it and replays the log.
        let image = m.kill_image();
        image.set_file_content(&path, bytes).unwrap();
        let e = Engine::open("data", options(Arc::new(image), &clock)).unwrap();
        assert_eq!(e.last_lsn(), Lsn(1));
        assert_eq!(e.recovery_report().skipped_snapshots.len(), 1);

        let err = decode_header(Path::new("seg"), &encode_header_raw(Lsn(lsn), 2, 0)).unwrap_err();
        assert!(matches!(err, Error::Corruption { offset: 16, .. }), "{err}");
    }
    let mut b = FrameBuf::new();
    b.reset(true);
    b.begin(Lsn(Lsn::MAX.0 + 1)).extend_from_slice(b"x");
    b.finish().unwrap();
    assert!(decode_frame(b.bytes()).is_err());
    let mut b = FrameBuf::new();
    b.reset(true);
    b.begin(Lsn::MAX).extend_from_slice(b"x");
    b.finish().unwrap();
    assert_eq!(decode_frame(b.bytes()).unwrap().lsn, Lsn::MAX);
}
