//! Issue 12's defects of the log itself, each reproduced as a user met it: acknowledged
//! records lost to a bit flip in the final batch of a cleanly closed log (1), a missing
//! middle segment that a snapshot covers (3), `verify` calling a write in progress a torn
//! record (7), and the temporary file of a failed segment creation left on a full disk (9).
#![allow(clippy::unwrap_used)]

use session_engine_testkit as common;

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use session_engine::storage::{OpenMode, Storage, StorageFile};
use session_engine::{Engine, Error, FileStorage, Lsn};

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

fn cli(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Process::new(BIN);
    c.env_remove("SESSION_ENGINE_DIR")
        .env_remove("RUST_LOG")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn only_segment(data: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.pop().unwrap()
}

/// Flips one bit in the middle of the written part of `seg`; returns the byte's offset.
fn flip_middle(seg: &Path) -> usize {
    let mut bytes = std::fs::read(seg).unwrap();
    let written = session_engine::wal::segment::nonzero_end(&bytes);
    let at = (session_engine::wal::segment::SEGMENT_HEADER_LEN + written) / 2;
    bytes[at] ^= 0x08;
    std::fs::write(seg, bytes).unwrap();
    at
}

/// Every reader and the next writer refuse the damaged log with exit 7, naming the
/// segment; nothing is rewritten without the damaged batch's records.
fn assert_refused_everywhere(data: &Path, seg: &Path, id: &str) {
    let name = seg.display().to_string();
    for args in [
        vec!["list"],
        vec!["show", id],
        vec!["replay"],
        vec!["verify"],
        vec!["activity", id, "after the flip"],
    ] {
        let o = cli(data, &args, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(7), "{args:?} must refuse: {err}");
        assert!(err.contains(&name), "{args:?}: {err}");
    }
}

#[test]
fn a_bit_flip_in_the_final_batch_of_a_cleanly_closed_log_is_refused_not_cut() {
    for (durability, n) in [("always", 300), ("none", 20_000)] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut input = String::from("{\"op\":\"create\",\"id\":\"s1\"}\n");
        for i in 0..n {
            input.push_str(&format!(
                "{{\"op\":\"activity\",\"id\":\"s1\",\"action\":\"step {i}\"}}\n"
            ));
        }
        let o = cli(&data, &["--durability", durability, "apply"], Some(&input));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let answers = String::from_utf8(o.stdout).unwrap();
        assert_eq!(answers.lines().count(), n + 1);
        assert!(answers.lines().all(|l| l.starts_with("{\"ok\":true")));
        let seg = only_segment(&data);
        let before = std::fs::read(data.join("sessions/session_s1.json")).unwrap();
        flip_middle(&seg);
        assert_refused_everywhere(&data, &seg, "s1");
        // The projection still shows every acknowledged activity: nothing rewrote it.
        assert_eq!(
            std::fs::read(data.join("sessions/session_s1.json")).unwrap(),
            before,
            "{durability}"
        );
    }
}

/// A log whose writer was killed (no clean close) may lose its last batch to damage, and
/// only that: the batch is bounded, and anything before it is refused.
#[test]
fn after_a_crash_damage_can_cut_only_the_final_batch() {
    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    for i in 0..20 {
        activity(&e, "s1", &format!("a{i}"));
    }
    let (m, s) = killed(&m, e);
    let seg = segments(&m, "data")[0].clone();
    let original = m.file_content(&seg).unwrap();
    let records = record_ranges(&original);
    assert_eq!(records.len(), 21);
    // The final record (its own batch): a torn write, cut and reported.
    let image = Arc::new(m.kill_image());
    let mut bytes = original.clone();
    bytes[records[20].0 + 30] ^= 1;
    image.set_file_content(&seg, bytes).unwrap();
    let e = Engine::open("data", options(image.clone(), &clock)).unwrap();
    assert_eq!(e.last_lsn(), Lsn(20));
    assert!(e.recovery_report().torn_tail.is_some());
    drop(e);
    // The record before it: the final batch was written after a sync, so refused.
    let image = Arc::new(m.kill_image());
    let mut bytes = original.clone();
    bytes[records[19].0 + 30] ^= 1;
    image.set_file_content(&seg, bytes).unwrap();
    match Engine::open("data", options(image, &clock)) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!((file, offset), (seg.clone(), records[19].0 as u64));
        }
        other => panic!("{:?}", other.map(|_| "an open engine")),
    }
    // The next writer seals what it recovered: from then on damage there is refused.
    let e = Engine::open("data", options(Arc::clone(&s), &clock)).unwrap();
    assert!(e.recovery_report().torn_tail.is_none());
    drop(e);
    let (m, _) = (m, s);
    let image = Arc::new(m.kill_image());
    let mut bytes = m.file_content(&seg).unwrap();
    bytes[records[20].0 + 30] ^= 1;
    image.set_file_content(&seg, bytes).unwrap();
    assert!(matches!(
        Engine::open("data", options(image, &clock)),
        Err(Error::Corruption { .. })
    ));
}

/// A cleanly closed log of at least three segments, with a snapshot after the second
/// and one record after the snapshot; returns its segments.
fn segments_under_a_snapshot() -> (
    Arc<session_engine::storage::MemStorage>,
    Arc<dyn Storage>,
    session_engine::ManualClock,
    Vec<PathBuf>,
) {
    let (m, s) = mem();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    for i in 0..200 {
        activity(&e, "s1", &format!("a rather long activity name number {i}"));
    }
    e.snapshot().unwrap();
    activity(&e, "s1", "after the snapshot");
    e.close().unwrap();
    let segs = segments(&m, "data");
    assert!(segs.len() >= 3, "{segs:?}");
    (m, s, clock, segs)
}

#[test]
fn a_deleted_middle_segment_that_a_snapshot_covers_is_refused_by_open_and_every_history_read() {
    let (m, s, clock, segs) = segments_under_a_snapshot();
    let missing = segs[1].clone();
    m.remove_file(&missing).unwrap();
    let missing_name = missing.file_name().unwrap().to_string_lossy().into_owned();
    let check = |r: Result<(), Error>, what: &str| match r {
        Err(Error::Corruption { file, reason, .. }) => {
            assert_eq!(file, segs[2], "{what}");
            assert!(
                reason.contains(&missing_name) && reason.contains("missing"),
                "{what}: {reason}"
            );
        }
        other => panic!("{what}: {other:?}"),
    };
    check(
        Engine::open("data", options(Arc::clone(&s), &clock)).map(|_| ()),
        "a writable open",
    );
    check(
        Engine::open_read_only("data", options(Arc::clone(&s), &clock)).map(|_| ()),
        "a read-only open",
    );
    // A reader of the log itself (replay, export, subscriptions, point-in-time reads).
    let reader = session_engine::wal::LogReader::new(Arc::clone(&s), Path::new("data/wal"));
    check(
        reader.for_each(Lsn(1), Lsn(u64::MAX), |_, _| Ok(true)),
        "a log reader",
    );
    let v = session_engine::verify(Path::new("data"), &*s, |_| {}).unwrap();
    let d = v.damage.expect("verify reports the gap");
    assert_eq!(d.file, segs[2]);
}

/// A middle segment cut short: the open, which starts from the snapshot, does not read it
/// (the state it builds is right), but every read of the history refuses it, naming the
/// segment, instead of skipping from its last whole record to the next segment.
#[test]
fn a_truncated_middle_segment_is_refused_by_every_read_of_the_history() {
    let (m, _, clock, segs) = segments_under_a_snapshot();
    for cut_at_a_record_boundary in [false, true] {
        let image = Arc::new(m.kill_image());
        let mut bytes = m.file_content(&segs[1]).unwrap();
        let records = record_ranges(&bytes);
        let mid = records[records.len() / 2];
        bytes.truncate(if cut_at_a_record_boundary {
            mid.0
        } else {
            mid.0 + 7
        });
        image.set_file_content(&segs[1], bytes).unwrap();
        let st: Arc<dyn Storage> = image.clone();
        let reader = session_engine::wal::LogReader::new(Arc::clone(&st), Path::new("data/wal"));
        let mut seen = 0u64;
        match reader.for_each(Lsn(1), Lsn(u64::MAX), |_, _| {
            seen += 1;
            Ok(true)
        }) {
            Err(Error::Corruption { file, .. }) => {
                assert!(file == segs[1] || file == segs[2], "{file:?}");
            }
            other => panic!("{cut_at_a_record_boundary}: read {seen} records: {other:?}"),
        }
        let e = Engine::open_read_only("data", options(Arc::clone(&st), &clock)).unwrap();
        assert!(matches!(
            e.session_at(&id("s1"), Lsn(150)),
            Err(Error::Corruption { .. })
        ));
        drop(e);
        let v = session_engine::verify(Path::new("data"), &*st, |_| {}).unwrap();
        assert!(v.damage.is_some(), "{v:?}");
    }
}

#[test]
fn verify_tells_a_write_in_progress_from_a_torn_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::new());
    let clock = clock();
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 4 << 20;
    let e = Engine::open(&dir, o).unwrap();
    create(&e, "s1");
    // The writer streams until verify has read the live log several times (however slow
    // either side is on a loaded machine), with a cap so a stuck verify cannot keep it
    // going forever.
    const RUNS: usize = 8;
    let done = AtomicBool::new(false);
    let runs = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut i = 0;
            while runs.load(Ordering::SeqCst) < RUNS && i < 200_000 {
                activity(
                    &e,
                    "s1",
                    &format!("streaming activity {i} {}", "x".repeat(i % 300)),
                );
                i += 1;
            }
            done.store(true, Ordering::SeqCst);
        });
        while !done.load(Ordering::SeqCst) {
            let r = session_engine::verify(&dir, &*storage, |_| {}).unwrap();
            assert!(
                r.damage.is_none() && r.torn_tail.is_none(),
                "run {}: a healthy log being written reported {r:?}",
                runs.load(Ordering::SeqCst)
            );
            runs.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert!(
        runs.load(Ordering::SeqCst) >= RUNS,
        "verify ran only {} times while the writer streamed",
        runs.load(Ordering::SeqCst)
    );
    e.close().unwrap();
}

/// A segment file being created whose every write past the header (its zero fill) fails
/// with ENOSPC, like a full disk; sets its flag when it fails one.
#[derive(Debug)]
struct NoRoom(Box<dyn StorageFile>, Arc<AtomicBool>);

impl StorageFile for NoRoom {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        if offset >= session_engine::wal::segment::SEGMENT_HEADER_LEN as u64 {
            self.1.store(true, Ordering::SeqCst);
            return Err(std::io::Error::from_raw_os_error(28));
        }
        self.0.write_at(offset, buf)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_at(offset, buf)
    }
    fn len(&mut self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.0.sync_all()
    }
}

/// Once armed, every new segment's zero fill fails (see [`NoRoom`]).
#[derive(Debug, Default)]
struct FullDisk {
    armed: AtomicBool,
    opening_temp_segment: AtomicBool,
    flag: Arc<AtomicBool>,
}

impl Hooks for FullDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<()> {
        let temp_segment = mode != OpenMode::Read && path.to_string_lossy().ends_with(".wal.tmp");
        self.opening_temp_segment.store(
            temp_segment && self.armed.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        Ok(())
    }
    fn file(&self, file: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        if self.opening_temp_segment.swap(false, Ordering::SeqCst) {
            Box::new(NoRoom(file, Arc::clone(&self.flag)))
        } else {
            file
        }
    }
}

#[test]
fn a_failed_segment_preallocation_on_a_full_disk_leaves_no_temporary_file() {
    let (m, _) = mem();
    let hooked = Arc::new(Hooked {
        inner: m.clone() as Arc<dyn Storage>,
        hooks: FullDisk::default(),
    });
    let s: Arc<dyn Storage> = hooked.clone();
    let clock = clock();
    let e = open(&s, &clock);
    create(&e, "s1");
    hooked.hooks.armed.store(true, Ordering::SeqCst);
    // Records until the segment is full and the writer must make the next one.
    let mut refused = None;
    for i in 0..2000 {
        if let Err(err) = e.execute(activity_cmd_for("s1", i)) {
            refused = Some(err);
            break;
        }
    }
    let err = refused.expect("the disk filled up");
    assert!(hooked.hooks.flag.load(Ordering::SeqCst), "{err}");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let names = m.list_dir(Path::new("data/wal")).unwrap();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "a failed segment creation left its temporary file: {names:?}"
    );
    drop(e);
}

fn activity_cmd_for(id_: &str, i: usize) -> session_engine::Command {
    session_engine::Command::RecordActivity {
        session: id(id_),
        action: format!("filling the segment with activity {i}"),
        details: None,
    }
}

/// In the buffered modes, what a sync made durable (the interval timer's, or an explicit
/// `sync`) is sealed right after it: damage to it is refused, not cut, even when the
/// writer never closed.
#[test]
fn in_the_buffered_modes_damage_to_what_a_sync_made_durable_is_refused() {
    for interval in [true, false] {
        let (m, s) = mem();
        let clock = clock();
        let mut o = options(Arc::clone(&s), &clock);
        o.durability = if interval {
            session_engine::Durability::Interval(std::time::Duration::from_millis(2))
        } else {
            session_engine::Durability::None
        };
        let e = Engine::open("data", o.clone()).unwrap();
        create(&e, "s1");
        for i in 0..10 {
            activity(&e, "s1", &format!("a{i}"));
        }
        if interval {
            // The timer syncs, then syncs the seal too.
            std::thread::sleep(std::time::Duration::from_millis(100));
        } else {
            e.sync().unwrap();
        }
        let (m, _) = killed(&m, e);
        let seg = segments(&m, "data")[0].clone();
        let bytes = m.file_content(&seg).unwrap();
        let records = record_ranges(&bytes);
        assert_eq!(records.len(), 11);
        let last = records[10];
        let mut damaged = bytes.clone();
        damaged[last.0 + 25] ^= 1;
        let image = Arc::new(m.kill_image());
        image.set_file_content(&seg, damaged).unwrap();
        o.storage = image;
        match Engine::open("data", o) {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!((file, offset), (seg, last.0 as u64), "interval {interval}")
            }
            other => panic!("interval {interval}: {:?}", other.map(|_| "an open engine")),
        }
    }
}
