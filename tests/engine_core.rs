//! The engine core: durability, recovery, snapshots, locking, poisoning, group commit and
//! subscriptions.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use session_engine::storage::{
    FaultKind, FaultPlan, FaultStorage, MemStorage, Storage, StorageFile,
};
use session_engine::wal::segment::SEGMENT_HEADER_LEN;
use session_engine::{Command, Durability, Engine, Error, FileStorage, Lsn, Status};

#[test]
fn acknowledged_commands_survive_a_reopen_on_memory_and_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, mem) = mem();
    let file: Arc<dyn Storage> = Arc::new(FileStorage::new());
    for (storage, dir) in [
        (mem, PathBuf::from("data")),
        (file, tmp.path().join("data")),
    ] {
        let clock = clock();
        let e = Engine::open(&dir, options(Arc::clone(&storage), &clock)).unwrap();
        create(&e, "s1");
        for i in 0..20 {
            activity(&e, "s1", &format!("a{i}"));
        }
        let live = e.state();
        e.close().unwrap();
        let e = Engine::open(&dir, options(storage, &clock)).unwrap();
        assert_eq!(*e.state(), *live);
        assert_eq!(e.last_lsn(), Lsn(21));
        assert_eq!(
            e.state()
                .session(&id("s1"))
                .unwrap()
                .body
                .activity_log
                .len(),
            20
        );
    }
}

#[test]
fn a_refused_command_appends_nothing() {
    let (_, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    let before = e.last_lsn();
    let err = e
        .execute(Command::RecordActivity {
            session: id("nope"),
            action: "x".into(),
            details: None,
        })
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    e.execute(Command::End(id("s1"))).unwrap();
    let err = e
        .execute(Command::RecordActivity {
            session: id("s1"),
            action: "x".into(),
            details: None,
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidState { .. }), "{err}");
    assert_eq!(e.last_lsn(), before.next());
}

#[test]
fn snapshot_plus_tail_equals_full_replay() {
    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    for i in 0..30 {
        create(&e, &format!("s{i}"));
        activity(&e, &format!("s{i}"), "work");
    }
    let snap_lsn = e.snapshot().unwrap();
    assert_eq!(snap_lsn, Lsn(60));
    for i in 0..10 {
        activity(&e, &format!("s{i}"), "more");
        clock.advance_secs(1);
    }
    e.execute(Command::SaveCheckpoint {
        session: id("s3"),
        label: Some("cp".into()),
    })
    .unwrap();
    let live = e.state();
    e.close().unwrap();

    let e = open(&s, &clock);
    assert_eq!(e.recovery_report().snapshot_lsn, Some(Lsn(60)));
    assert_eq!(e.recovery_report().replayed, 11);
    assert_eq!(*e.state(), *live);
    e.close().unwrap();

    // The same directory without its snapshots replays everything to the same state.
    for name in m.list_dir(Path::new("data/snapshots")).unwrap() {
        m.remove_file(&Path::new("data/snapshots").join(name))
            .unwrap();
    }
    let e = open(&s, &clock);
    assert_eq!(e.recovery_report().snapshot_lsn, None);
    assert_eq!(e.recovery_report().replayed, 71);
    assert_eq!(*e.state(), *live);
}

/// Byte ranges of each record in the (single) segment of a small log.
fn record_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    record_ranges(bytes)
}

/// A small log as a process kill leaves it: its last batch is not sealed, so damage there
/// is a torn write.
fn small_log(records: usize) -> (Arc<MemStorage>, Arc<dyn Storage>, PathBuf) {
    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    for i in 1..records {
        activity(&e, "s1", &format!("activity-{i}"));
    }
    let (m, s) = killed(&m, e);
    let segs = segments(&m, "data");
    assert_eq!(segs.len(), 1);
    (m, s, segs[0].clone())
}

#[test]
fn a_torn_tail_at_every_byte_offset_of_the_last_record_is_cut() {
    let (m, _, seg) = small_log(12);
    let original = m.file_content(&seg).unwrap();
    let records = record_offsets(&original);
    assert_eq!(records.len(), 12);
    let (start, end) = records[11];
    for cut in start..end {
        for garbage in [false, true] {
            let image = m.kill_image();
            let mut bytes = original.clone();
            for (i, b) in bytes[cut..end].iter_mut().enumerate() {
                *b = if garbage {
                    (i as u8).wrapping_mul(31) | 1
                } else {
                    0
                };
            }
            image.set_file_content(&seg, bytes).unwrap();
            let storage: Arc<dyn Storage> = Arc::new(image.clone());
            let clock = clock();
            let e = open(&storage, &clock);
            assert_eq!(e.last_lsn(), Lsn(11), "cut at {cut} garbage {garbage}");
            let torn = e.recovery_report().torn_tail.clone();
            let damaged_bytes = cut > start || garbage;
            assert_eq!(torn.is_some(), damaged_bytes, "cut at {cut}");
            if let Some(t) = &torn {
                assert_eq!(t.offset, start as u64);
                assert_eq!(t.file, seg);
                assert_eq!(t.lsn, Lsn(12));
                let saved = t.saved_to.as_ref().unwrap();
                assert!(!image.file_content(saved).unwrap().is_empty());
            }
            // Everything before survives, and the next write lands where the torn one was.
            let s1 = e.state().session(&id("s1")).unwrap().clone();
            assert_eq!(s1.body.activity_log.len(), 10);
            let c = activity(&e, "s1", "after");
            assert_eq!(c.lsn, Lsn(12));
            e.close().unwrap();
            let e = open(&storage, &clock);
            assert_eq!(e.last_lsn(), Lsn(12));
            assert!(e.recovery_report().torn_tail.is_none());
        }
    }
}

#[test]
fn a_flipped_byte_anywhere_before_the_last_record_refuses_to_open_naming_segment_and_offset() {
    let (m, _, seg) = small_log(8);
    let original = m.file_content(&seg).unwrap();
    let records = record_offsets(&original);
    let last_start = records.last().unwrap().0;
    for pos in 0..last_start {
        let image = m.kill_image();
        let mut bytes = original.clone();
        bytes[pos] ^= 0x40;
        image.set_file_content(&seg, bytes).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(image);
        let clock = clock();
        let err = Engine::open("data", options(storage, &clock)).unwrap_err();
        match err {
            Error::Corruption { file, offset, .. } => {
                assert_eq!(file, seg, "byte {pos}");
                let expected = if pos < SEGMENT_HEADER_LEN {
                    // Header damage is reported at the header field that fails.
                    assert!(
                        offset < SEGMENT_HEADER_LEN as u64,
                        "byte {pos}: offset {offset}"
                    );
                    continue;
                } else {
                    records
                        .iter()
                        .find(|(s, e)| (*s..*e).contains(&pos))
                        .unwrap()
                        .0
                };
                assert_eq!(offset, expected as u64, "byte {pos}");
            }
            other => panic!("byte {pos}: expected corruption, got {other}"),
        }
    }
}

#[test]
fn a_second_writer_is_refused_and_a_reader_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, mem) = mem();
    let file: Arc<dyn Storage> = Arc::new(FileStorage::new());
    for (storage, dir) in [
        (mem, PathBuf::from("data")),
        (file, tmp.path().join("data")),
    ] {
        let clock = clock();
        let a = Engine::open(&dir, options(Arc::clone(&storage), &clock)).unwrap();
        create(&a, "s1");
        let err = Engine::open(&dir, options(Arc::clone(&storage), &clock)).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another process"));
        let r = Engine::open_read_only(&dir, options(Arc::clone(&storage), &clock)).unwrap();
        assert_eq!(r.last_lsn(), Lsn(1));
        assert!(matches!(
            r.execute(Command::Pause(id("s1"))).unwrap_err(),
            Error::ReadOnly
        ));
        a.close().unwrap();
        Engine::open(&dir, options(storage, &clock)).unwrap();
    }
}

#[test]
fn deleting_lock_while_a_writer_runs_does_not_let_a_second_writer_in() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, mem) = mem();
    let file: Arc<dyn Storage> = Arc::new(FileStorage::new());
    for (storage, dir) in [
        (mem, PathBuf::from("data")),
        (file, tmp.path().join("data")),
    ] {
        let clock = clock();
        let a = Engine::open(&dir, options(Arc::clone(&storage), &clock)).unwrap();
        create(&a, "s1");
        storage.remove_file(&dir.join("LOCK")).unwrap();
        assert!(!storage.exists(&dir.join("LOCK")).unwrap());
        let err = Engine::open(&dir, options(Arc::clone(&storage), &clock)).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        a.close().unwrap();
        drop(a);
        let b = Engine::open(&dir, options(Arc::clone(&storage), &clock)).unwrap();
        assert_eq!(b.last_lsn(), Lsn(1));
        b.close().unwrap();
    }
}

#[test]
fn a_failed_fsync_poisons_the_engine_and_a_reopen_recovers() {
    for kind in FaultKind::ALL {
        let (_, inner) = mem();
        let clock = clock();
        // Count the operations of this kind that opening and one command take...
        let probe = FaultStorage::new(
            Arc::clone(&inner),
            FaultPlan {
                kind,
                fail_at: u64::MAX,
                forever: false,
            },
        );
        let e = Engine::open("data", options(Arc::new(probe.clone()), &clock)).unwrap();
        create(&e, "s1");
        let after_open = probe.counted();
        activity(&e, "s1", "ok");
        let per_command = probe.counted() - after_open;
        e.close().unwrap();
        assert!(per_command > 0, "{kind:?} never happens in a command");
        // ...then fail the next command's first operation of that kind, forever.
        let faulty = FaultStorage::new(
            Arc::clone(&inner),
            FaultPlan {
                kind,
                fail_at: u64::MAX,
                forever: true,
            },
        );
        let e = Engine::open("data", options(Arc::new(faulty.clone()), &clock)).unwrap();
        let acked = e.last_lsn();
        let plan_at = faulty.counted() + 1;
        drop(e);
        let faulty = FaultStorage::new(
            Arc::clone(&inner),
            FaultPlan {
                kind,
                fail_at: plan_at,
                forever: true,
            },
        );
        let e = Engine::open("data", options(Arc::new(faulty.clone()), &clock)).unwrap();
        let err = e
            .execute(Command::RecordActivity {
                session: id("s1"),
                action: "fails".into(),
                details: None,
            })
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{kind:?}: {err}");
        let err = e.execute(Command::Pause(id("s1"))).unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{kind:?}: {err}");
        assert!(e.poisoned().is_some());
        drop(e);
        faulty.heal();
        let e = open(&inner, &clock);
        assert!(e.last_lsn() >= acked, "{kind:?}: acknowledged event lost");
        assert!(e.last_lsn() <= acked.next());
        activity(&e, "s1", "after recovery");
    }
}

/// A storage whose `sync_data` blocks until the test opens the gate, to make group commit
/// observable deterministically.
#[derive(Debug, Clone)]
struct Gated {
    gate: Arc<(Mutex<(bool, u64)>, Condvar)>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn StorageFile>,
    gate: Arc<(Mutex<(bool, u64)>, Condvar)>,
}

impl StorageFile for GatedFile {
    fn write_at(&mut self, o: u64, b: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(o, b)
    }
    fn read_at(&mut self, o: u64, b: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(o, b)
    }
    fn len(&mut self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&mut self, l: u64) -> std::io::Result<()> {
        self.inner.set_len(l)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        let (m, cv) = &*self.gate;
        let mut g = m.lock().unwrap();
        g.1 += 1;
        cv.notify_all();
        while !g.0 {
            g = cv.wait(g).unwrap();
        }
        drop(g);
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
}

impl Hooks for Gated {
    fn file(&self, inner: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        Box::new(GatedFile {
            inner,
            gate: Arc::clone(&self.gate),
        })
    }
}

#[test]
fn concurrent_writers_share_one_fsync_per_batch() {
    let (_, inner) = mem();
    let gate = Arc::new((Mutex::new((true, 0u64)), Condvar::new()));
    let storage: Arc<dyn Storage> = Arc::new(Hooked {
        inner,
        hooks: Gated {
            gate: Arc::clone(&gate),
        },
    });
    let clock = clock();
    let e = Arc::new(open(&storage, &clock));
    create(&e, "s1");
    let (m, cv) = &*gate;
    let syncs_before = {
        let mut g = m.lock().unwrap();
        g.0 = false;
        g.1
    };
    let stats_before = e.stats();
    // The first writer's fsync blocks at the gate...
    let first = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || activity(&e, "s1", "first"))
    };
    {
        let mut g = m.lock().unwrap();
        while g.1 == syncs_before {
            g = cv.wait(g).unwrap();
        }
    }
    // ...while 15 more queue up behind it.
    let pending: Vec<_> = (0..15)
        .map(|i| {
            e.submit(Command::RecordActivity {
                session: id("s1"),
                action: format!("w{i}"),
                details: None,
            })
        })
        .collect();
    while e.state().last_lsn < Lsn(1) {
        std::thread::sleep(Duration::from_millis(1));
    }
    {
        let mut g = m.lock().unwrap();
        g.0 = true;
        cv.notify_all();
    }
    first.join().unwrap();
    let lsns: Vec<Lsn> = pending.into_iter().map(|p| p.wait().unwrap().lsn).collect();
    assert_eq!(lsns, (3..18).map(Lsn).collect::<Vec<_>>());
    let syncs = m.lock().unwrap().1 - syncs_before;
    assert_eq!(syncs, 2, "16 commands should need exactly two fsyncs");
    // The engine's own counters saw the same: two appends of 1 and 15 records, two syncs,
    // after the create's append of one.
    let st = e.stats();
    assert_eq!(st.records - stats_before.records, 16);
    assert_eq!(st.appends - stats_before.appends, 2);
    assert_eq!(st.syncs - stats_before.syncs, 2);
    let mut sizes = vec![0; session_engine::engine::BATCH_BOUNDS.len() + 1];
    sizes[0] = 2; // the create, then "first"
    sizes[4] = 1; // the 15 queued behind it (8 < 15 <= 16)
    assert_eq!(st.batch_size.counts, sizes);
    assert_eq!(st.batch_size.sum, st.records);
    assert_eq!(st.append_latency_us.count(), st.appends);
}

#[test]
fn a_subscription_catches_up_then_goes_live_without_gaps_or_repeats() {
    let (_, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    for i in 0..50 {
        activity(&e, "s1", &format!("a{i}"));
    }
    let mut sub = e.subscribe(Lsn(10));
    let mut seen = Vec::new();
    while let Some(ev) = sub.try_recv().unwrap() {
        seen.push(ev.lsn);
    }
    assert_eq!(seen, (10..=51).map(Lsn).collect::<Vec<_>>());
    for i in 0..20 {
        activity(&e, "s1", &format!("b{i}"));
    }
    for want in 52..=71 {
        let ev = sub.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(ev.lsn, Lsn(want));
    }
    assert!(sub.try_recv().unwrap().is_none());
    e.close().unwrap();
    assert!(matches!(sub.recv(), Err(Error::Closed)));
}

#[test]
fn a_lagging_subscriber_is_cut_loose_and_catches_up_from_the_log() {
    let (_, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    let mut sub = e.subscribe(Lsn(1));
    assert_eq!(sub.try_recv().unwrap().unwrap().lsn, Lsn(1));
    // More batches than the subscriber's queue holds, while it reads nothing.
    let n = session_engine::engine::SUBSCRIBER_CAPACITY + 50;
    for i in 0..n {
        activity(&e, "s1", &format!("a{i}"));
    }
    assert_eq!(sub.fallbacks(), 0);
    let mut next = 2;
    while let Some(ev) = sub.try_recv().unwrap() {
        assert_eq!(ev.lsn, Lsn(next));
        next += 1;
    }
    assert_eq!(next as usize, n + 2);
    assert_eq!(
        sub.fallbacks(),
        1,
        "the fallback to the log is counted once"
    );
    // The writer letting go at close is no fallback.
    e.close().unwrap();
    assert!(matches!(sub.recv(), Err(Error::Closed)));
    assert_eq!(sub.fallbacks(), 1);
}

#[test]
fn a_damaged_snapshot_is_skipped_for_an_older_one_and_reported() {
    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    e.snapshot().unwrap();
    activity(&e, "s1", "x");
    let newest = e.snapshot().unwrap();
    activity(&e, "s1", "y");
    let live = e.state();
    e.close().unwrap();
    let path = Path::new("data/snapshots").join(session_engine::snapshot::snapshot_name(newest));
    let mut bytes = m.file_content(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    m.set_file_content(&path, bytes).unwrap();
    let e = open(&s, &clock);
    let r = e.recovery_report();
    assert_eq!(r.snapshot_lsn, Some(Lsn(1)));
    assert_eq!(r.skipped_snapshots.len(), 1);
    assert_eq!(r.skipped_snapshots[0].file, path);
    assert!(r.skipped_snapshots[0].reason.contains("checksum"));
    assert_eq!(*e.state(), *live);
}

#[test]
fn a_snapshot_taken_after_reopening_onto_an_empty_segment_is_used_by_the_next_open() {
    // A crash right after a new segment is created (header written, no record yet) leaves
    // an empty last segment; the snapshot's last record then sits in the segment before.
    use session_engine::wal::segment::{encode_header, segment_path};
    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "a");
    for i in 0..5 {
        activity(&e, "a", &format!("x{i}"));
    }
    e.snapshot().unwrap();
    e.close().unwrap();
    let mut empty = encode_header(Lsn(7), Lsn(1)).to_vec();
    empty.resize(8 * 1024, 0);
    m.set_file_content(&segment_path(Path::new("data/wal"), Lsn(7)), empty)
        .unwrap();
    let e = open(&s, &clock);
    assert_eq!(e.last_lsn(), Lsn(6));
    // Write the snapshot at LSN 6 anew from this engine's idea of where its last record is.
    let snap = Path::new("data/snapshots").join(session_engine::snapshot::snapshot_name(Lsn(6)));
    m.remove_file(&snap).unwrap();
    assert_eq!(e.snapshot().unwrap(), Lsn(6));
    let (h, _) =
        session_engine::snapshot::decode_snapshot(&snap, &m.file_content(&snap).unwrap()).unwrap();
    assert_eq!(h.position.segment, Lsn(1), "{:?}", h.position);
    assert!(h.position.offset > SEGMENT_HEADER_LEN as u64);
    activity(&e, "a", "after");
    let live = e.state();
    e.close().unwrap();
    let e = open(&s, &clock);
    let r = e.recovery_report();
    assert!(r.skipped_snapshots.is_empty(), "{:?}", r.skipped_snapshots);
    assert_eq!(r.snapshot_lsn, Some(Lsn(6)));
    assert_eq!(*e.state(), *live);
}

#[test]
fn repair_moves_damaged_bytes_aside_and_the_directory_opens_again() {
    let (m, s, seg) = small_log(10);
    let original = m.file_content(&seg).unwrap();
    let records = record_offsets(&original);
    let (start, end) = records[4];
    let mut bytes = original.clone();
    bytes[start + 22] ^= 0xff;
    m.set_file_content(&seg, bytes.clone()).unwrap();
    let clock = clock();
    let err = Engine::open("data", options(Arc::clone(&s), &clock)).unwrap_err();
    assert!(err.to_string().contains("repair"), "{err}");
    let report = session_engine::repair(Path::new("data"), Arc::clone(&s)).unwrap();
    assert_eq!(report.last_lsn, Lsn(4));
    assert_eq!(report.moved.len(), 1);
    let moved = &report.moved[0];
    assert_eq!(moved.file, seg);
    assert_eq!(moved.offset, start as u64);
    let saved = m.file_content(&moved.saved_to).unwrap();
    assert_eq!(saved.len(), records[9].1 - start);
    assert_eq!(
        saved[..],
        bytes[start..records[9].1],
        "the damaged bytes are kept as they were"
    );
    assert_ne!(saved[..end - start], original[start..end]);
    let e = open(&s, &clock);
    assert_eq!(e.last_lsn(), Lsn(4));
    activity(&e, "s1", "after repair");
    e.close().unwrap();
    let again = session_engine::repair(Path::new("data"), s).unwrap();
    assert!(again.was_clean());
}

#[test]
fn a_missing_middle_segment_is_an_lsn_gap() {
    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    for i in 0..200 {
        activity(&e, "s1", &format!("a rather long activity name number {i}"));
    }
    e.close().unwrap();
    let segs = segments(&m, "data");
    assert!(segs.len() >= 3);
    m.remove_file(&segs[1]).unwrap();
    let err = Engine::open("data", options(s, &clock)).unwrap_err();
    match err {
        Error::Corruption { file, reason, .. } => {
            assert_eq!(file, segs[2]);
            assert!(reason.contains("is missing"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn buffered_modes_are_durable_after_close() {
    for durability in [
        Durability::None,
        Durability::Interval(Duration::from_secs(3600)),
    ] {
        let (m, s) = mem();
        let clock = clock();
        let mut o = options(Arc::clone(&s), &clock);
        o.durability = durability;
        let e = Engine::open("data", o).unwrap();
        create(&e, "s1");
        for i in 0..10 {
            activity(&e, "s1", &format!("a{i}"));
        }
        e.close().unwrap();
        for seed in 0..10 {
            let crashed: Arc<dyn Storage> =
                Arc::new(m.crash(seed, session_engine::storage::CrashMode::Sectors));
            let e = open(&crashed, &clock);
            assert_eq!(e.last_lsn(), Lsn(11));
        }
    }
}

#[test]
fn the_watchdog_records_expiry_as_an_event() {
    let (_, s) = mem();
    let clock = clock();
    let mut o = options(Arc::clone(&s), &clock);
    o.watchdog_interval = Some(Duration::from_millis(5));
    let e = Engine::open("data", o).unwrap();
    create(&e, "s1");
    let s1 = e.state().session(&id("s1")).unwrap().clone();
    assert!(s1.is_active(clock_now(&clock)));
    clock.advance_secs(3601);
    // Between ticks, is_active() already knows from the clock.
    assert!(!s1.is_active(clock_now(&clock)));
    let mut sub = e.subscribe(Lsn(2));
    let ev = sub.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(ev.event.body.type_name(), "sessions_expired");
    assert_eq!(
        e.state().session(&id("s1")).unwrap().status(),
        Status::TimedOut
    );
}

fn clock_now(c: &session_engine::ManualClock) -> session_engine::Timestamp {
    use session_engine::Clock;
    c.now()
}

#[test]
fn verify_finds_damage_torn_tails_and_snapshots_that_disagree_with_the_log() {
    let (m, s, seg) = small_log(10);
    let clock = clock();
    {
        let e = open(&s, &clock);
        e.snapshot().unwrap();
        e.close().unwrap();
    }
    let report = session_engine::verify(Path::new("data"), &*s, |_| {}).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 10);
    assert_eq!(report.snapshots.len(), 1);

    // A snapshot whose checksums are fine but whose state is not the log's.
    let mut forged = session_engine::State::new();
    forged.last_lsn = Lsn(10);
    let snap_dir = Path::new("data/snapshots");
    let image = m.kill_image();
    image
        .remove_file(&snap_dir.join(session_engine::snapshot::snapshot_name(Lsn(10))))
        .unwrap();
    session_engine::snapshot::write_snapshot(&image, snap_dir, &forged, Default::default())
        .unwrap();
    let r = session_engine::verify(Path::new("data"), &image, |_| {}).unwrap();
    assert!(r.damage.is_none());
    assert!(
        r.snapshots[0].problem.as_ref().unwrap().contains("differs"),
        "{r:?}"
    );

    // A flipped byte in the middle of the log.
    let original = m.file_content(&seg).unwrap();
    let records = record_offsets(&original);
    let image = m.kill_image();
    let mut bytes = original.clone();
    bytes[records[3].0 + 25] ^= 4;
    image.set_file_content(&seg, bytes).unwrap();
    let r = session_engine::verify(Path::new("data"), &image, |_| {}).unwrap();
    let d = r.damage.unwrap();
    assert_eq!((d.file, d.offset), (seg.clone(), records[3].0 as u64));
    assert_eq!(r.last_lsn, Lsn(3));

    // A torn final record (and so no seal after it: a crash came before the close).
    let image = m.kill_image();
    let mut bytes = original.clone();
    let (start, _) = records[9];
    bytes[start + 5..].fill(0);
    image.set_file_content(&seg, bytes).unwrap();
    let r = session_engine::verify(Path::new("data"), &image, |_| {}).unwrap();
    assert!(r.damage.is_none());
    assert_eq!(r.torn_tail.unwrap().offset, start as u64);
    assert!(
        !r.snapshots.is_empty() && r.snapshots[0].problem.is_some(),
        "snapshot at 10 is beyond the log now"
    );
}

#[test]
fn a_power_cut_in_buffered_mode_loses_only_an_unsynced_suffix_and_still_opens() {
    let (m, s) = mem();
    let clock = clock();
    let mut o = options(Arc::clone(&s), &clock);
    o.durability = Durability::None;
    let e = Engine::open("data", o).unwrap();
    create(&e, "s1");
    e.sync().unwrap();
    for i in 0..40 {
        activity(&e, "s1", &format!("a{i}"));
    }
    let mut cut = 0;
    for seed in 0..200 {
        for mode in session_engine::storage::CrashMode::ALL {
            let crashed: Arc<dyn Storage> = Arc::new(m.crash(seed, mode));
            let r = Engine::open_read_only("data", options(Arc::clone(&crashed), &clock));
            let r = r.unwrap_or_else(|err| panic!("seed {seed} {mode:?}: {err}"));
            let n = r.last_lsn().0;
            assert!(n >= 1, "the synced create was lost");
            let state = r.state();
            let acts = &state.session(&id("s1")).unwrap().body.activity_log;
            assert_eq!(acts.len() as u64, n - 1);
            for (i, a) in acts.iter().enumerate() {
                assert_eq!(&*a.action, format!("a{i}"), "not a prefix");
            }
            if n < 41 {
                cut += 1;
            }
        }
    }
    assert!(
        cut > 0,
        "no crash image lost anything: the test is not testing"
    );
}

#[test]
fn reading_up_to_an_lsn_never_looks_at_what_follows_it() {
    // Records 1..=3, then what a reader racing the writer can see: a frame not yet written
    // (zeros) followed by one that is, from a later batch. Up to LSN 3, that is no concern.
    use session_engine::wal::record::FrameBuf;
    use session_engine::wal::segment::encode_header;
    let mut seg = encode_header(Lsn(1), Lsn::ZERO).to_vec();
    let mut b = FrameBuf::new();
    b.reset(true);
    for lsn in 1..=3 {
        b.begin(Lsn(lsn)).extend_from_slice(b"payload");
        b.finish().unwrap();
    }
    seg.extend_from_slice(b.bytes());
    seg.extend_from_slice(&[0u8; 27]); // where LSN 4 will be
    let mut later = FrameBuf::new();
    later.reset(true);
    later.begin(Lsn(5)).extend_from_slice(b"payload");
    later.finish().unwrap();
    seg.extend_from_slice(later.bytes());
    seg.resize(4096, 0);
    let m = MemStorage::new();
    m.create_dir_all(Path::new("data/wal")).unwrap();
    m.set_file_content(Path::new("data/wal/00000000000000000001.wal"), seg)
        .unwrap();
    let reader = session_engine::wal::LogReader::new(Arc::new(m), Path::new("data/wal"));
    let mut seen = Vec::new();
    reader
        .for_each(Lsn(1), Lsn(3), |lsn, _| {
            seen.push(lsn);
            Ok(true)
        })
        .unwrap();
    assert_eq!(seen, [Lsn(1), Lsn(2), Lsn(3)]);
    // Reading on past LSN 3 does report it.
    assert!(reader.for_each(Lsn(1), Lsn(9), |_, _| Ok(true)).is_err());
}

#[test]
fn readers_racing_a_writer_on_the_real_file_system_never_see_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::new());
    let clock = clock();
    // Durable batches carry SYNCED_BEFORE, so a stale view of one could pass for damage
    // before a durable write.
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 1 << 20;
    let e = Engine::open(&dir, o).unwrap();
    create(&e, "s1");
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..1500 {
                activity(&e, "s1", &format!("activity number {i}"));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let reader = session_engine::wal::LogReader::new(Arc::clone(&storage), &dir.join("wal"));
        let mut rounds = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds < 3 {
            reader
                .for_each(Lsn(1), Lsn(u64::MAX), |_, _| Ok(true))
                .unwrap_or_else(|err| panic!("round {rounds}: {err}"));
            let r = Engine::open_read_only(&dir, options(Arc::clone(&storage), &clock))
                .unwrap_or_else(|err| panic!("round {rounds}: {err}"));
            drop(r);
            rounds += 1;
        }
    });
}

#[test]
fn reading_the_log_shares_repeated_strings_between_events() {
    let (_, mem) = mem();
    let clock = clock();
    let e = Engine::open(Path::new("data"), options(mem, &clock)).unwrap();
    create(&e, "s1");
    activity(&e, "s1", "tool_use");
    activity(&e, "s1", "tool_use");
    let mut seen = Vec::new();
    e.read_log(Lsn(2), Lsn(3), |_, ev| {
        match ev.body {
            session_engine::EventBody::ActivityRecorded {
                session, action, ..
            } => seen.push((session, action)),
            other => panic!("unexpected event {other:?}"),
        }
        Ok(true)
    })
    .unwrap();
    let [(s1, a1), (s2, a2)] = &seen[..] else {
        panic!("read {} events", seen.len());
    };
    assert_eq!((&**a1, &**a2), ("tool_use", "tool_use"));
    // One allocation per distinct string, not one per event.
    assert!(Arc::ptr_eq(a1, a2), "action names decoded twice");
    assert!(
        std::ptr::eq(s1.as_str(), s2.as_str()),
        "session ids decoded twice"
    );
    // Outside one read, nothing is kept: a second read decodes afresh.
    let mut again = None;
    e.read_log(Lsn(2), Lsn(2), |_, ev| {
        again = Some(ev);
        Ok(true)
    })
    .unwrap();
    match again.map(|ev| ev.body) {
        Some(session_engine::EventBody::ActivityRecorded { action, .. }) => {
            assert!(!Arc::ptr_eq(&action, a1), "the table outlived the read")
        }
        other => panic!("unexpected {other:?}"),
    }
}
