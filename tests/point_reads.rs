//! Point reads by LSN (`LogBackend::read_lsns`, `Engine::events_at`): the same records as
//! the sequential reader, on a log that grows, with damage reported at its place, LSNs the
//! log does not have refused, and, on the file log, one segment's bytes read per record
//! (its sparse index), proven by counting the bytes read through `Storage`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use session_engine::backend::{FileLog, LogBackend, MemLog, ReadFn};
use session_engine::storage::{
    Bytes, FileKind, FileStat, LockGuard, OpenMode, SplitMix64, StorageFile,
};
use session_engine::wal::{INDEX_CACHE_SEGMENTS, INDEX_STRIDE};
use session_engine::{Command, Engine, Error, FileStorage, JsonText, Lsn, Storage};

/// One record as a reader hands it on: `(place, offset, lsn, payload)`.
type Rec = (PathBuf, u64, Lsn, Vec<u8>);

fn sequential(log: &dyn LogBackend, from: Lsn, to: Lsn) -> Vec<Rec> {
    let mut out = Vec::new();
    log.read(from, to, &mut |p, o, l, b| {
        out.push((p.to_path_buf(), o, l, b.to_vec()));
        Ok(true)
    })
    .unwrap();
    out
}

fn at(log: &dyn LogBackend, lsns: &[Lsn]) -> Result<Vec<Rec>, (Vec<Rec>, Error)> {
    let mut out = Vec::new();
    match log.read_lsns(lsns, &mut |p, o, l, b| {
        out.push((p.to_path_buf(), o, l, b.to_vec()));
        Ok(true)
    }) {
        Ok(()) => Ok(out),
        Err(e) => Err((out, e)),
    }
}

fn file_log(storage: &Arc<dyn Storage>, dir: &Path, segment_bytes: u64) -> FileLog {
    FileLog::new(
        Arc::clone(storage),
        &dir.join("wal"),
        &dir.join("quarantine"),
        segment_bytes,
    )
}

/// Appends `n` activities to session `s` of `e` (created first when `create`), pipelined
/// in groups, with details of varying length.
fn fill(e: &Engine, s: &str, n: usize, create_it: bool) {
    if create_it {
        create(e, s);
    }
    let mut i = 0;
    while i < n {
        let group: Vec<_> = (i..n.min(i + 32))
            .map(|k| {
                e.submit(Command::RecordActivity {
                    session: id(s),
                    action: format!("step {k}"),
                    details: Some(
                        JsonText::parse(&format!("{{\"pad\":\"{}\"}}", "x".repeat(k % 97)))
                            .unwrap(),
                    ),
                })
            })
            .collect();
        for p in group {
            p.wait().unwrap();
        }
        i = n.min(i + 32);
    }
}

fn segment_count(storage: &dyn Storage, dir: &Path) -> usize {
    storage
        .list_dir(&dir.join("wal"))
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".wal"))
        .count()
}

fn random_lsns(rng: &mut SplitMix64, last: u64, n: usize) -> Vec<Lsn> {
    let mut v: Vec<u64> = (0..n).map(|_| 1 + rng.below(last)).collect();
    v.sort_unstable();
    v.dedup();
    v.into_iter().map(Lsn).collect()
}

#[test]
fn random_lsns_across_many_small_segments_are_the_sequential_readers_records() {
    let (_, storage) = mem();
    let clock = clock();
    let dir = Path::new("data");
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 4096;
    let e = Engine::open(dir, o).unwrap();
    fill(&e, "s1", 3000, true);
    let last = e.last_lsn();
    assert!(segment_count(&*storage, dir) > 60, "many segments");
    let log = file_log(&storage, dir, 4096);
    let all = sequential(&log, Lsn(1), last);
    assert_eq!(all.len() as u64, last.0);
    let mut rng = SplitMix64::new(15);
    for round in 0..40 {
        let lsns = random_lsns(&mut rng, last.0, 1 + round % 25);
        let want: Vec<Rec> = lsns.iter().map(|l| all[l.0 as usize - 1].clone()).collect();
        assert_eq!(at(&log, &lsns).unwrap(), want, "round {round}: {lsns:?}");
        // A fresh log (no index yet) gives the same.
        assert_eq!(at(&file_log(&storage, dir, 4096), &lsns).unwrap(), want);
    }
    // The first and last record of every segment, and every record of one segment.
    let every: Vec<Lsn> = (1..=last.0).map(Lsn).collect();
    assert_eq!(at(&log, &every).unwrap(), all);
    assert!(log.indexed_segments() <= INDEX_CACHE_SEGMENTS);
    // The engine's decoded form matches `read_log` and stops when asked to.
    let lsns = random_lsns(&mut rng, last.0, 50);
    let mut by_lsn = Vec::new();
    e.events_at(&lsns, |l, ev| {
        by_lsn.push((l, ev));
        Ok(true)
    })
    .unwrap();
    let mut seq = Vec::new();
    e.read_log(Lsn(1), last, |l, ev| {
        if lsns.contains(&l) {
            seq.push((l, ev));
        }
        Ok(true)
    })
    .unwrap();
    assert_eq!(by_lsn, seq);
    let mut n = 0;
    e.events_at(&lsns, |_, _| {
        n += 1;
        Ok(n < 3)
    })
    .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn memory_log_and_the_default_method_give_the_same_records_and_errors() {
    /// A backend with only `open` and `read`: it gets the trait's default `read_lsns`.
    #[derive(Debug)]
    struct ReadOnly(FileLog);
    impl LogBackend for ReadOnly {
        fn open(
            &self,
            start: session_engine::backend::StartPoint,
            writable: bool,
            sink: &mut dyn session_engine::backend::RecordSink,
        ) -> session_engine::Result<session_engine::backend::Opened> {
            self.0.open(start, writable, sink)
        }
        fn read(&self, from: Lsn, to: Lsn, f: &mut ReadFn<'_>) -> session_engine::Result<()> {
            self.0.read(from, to, f)
        }
    }

    let clock = clock();
    let mem_log = MemLog::new();
    let mut o = options(Arc::new(session_engine::MemStorage::new()), &clock);
    o.log = Some(Arc::new(mem_log.clone()));
    let e = Engine::open("m", o).unwrap();
    fill(&e, "s1", 300, true);
    let last = e.last_lsn();
    let all = sequential(&mem_log, Lsn(1), last);
    let lsns = [Lsn(1), Lsn(2), Lsn(3), Lsn(77), Lsn(200), last];
    let want: Vec<Rec> = lsns.iter().map(|l| all[l.0 as usize - 1].clone()).collect();
    assert_eq!(at(&mem_log, &lsns).unwrap(), want);
    let (got, err) = at(&mem_log, &[Lsn(5), Lsn(last.0 + 1)]).unwrap_err();
    assert_eq!(got, vec![all[4].clone()]);
    assert!(
        matches!(err, Error::LsnOutOfRange { requested, last: l } if requested == last.next() && l == last),
        "{err}"
    );
    drop(e);

    let (_, storage) = mem();
    let dir = Path::new("data");
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 4096;
    let e = Engine::open(dir, o).unwrap();
    fill(&e, "s1", 300, true);
    let last = e.last_lsn();
    let file = file_log(&storage, dir, 4096);
    let default = ReadOnly(file_log(&storage, dir, 4096));
    let all = sequential(&file, Lsn(1), last);
    let want: Vec<Rec> = lsns.iter().map(|l| all[l.0 as usize - 1].clone()).collect();
    assert_eq!(at(&file, &lsns).unwrap(), want);
    assert_eq!(at(&default, &lsns).unwrap(), want);
    for log in [&file as &dyn LogBackend, &default] {
        let (got, err) = at(log, &[Lsn(5), Lsn(last.0 + 3)]).unwrap_err();
        assert_eq!(got, vec![all[4].clone()]);
        assert!(
            matches!(err, Error::LsnOutOfRange { requested, .. } if requested == Lsn(last.0 + 3)),
            "{err}"
        );
    }
    // The file log knows where the log ends.
    let (_, err) = at(&file, &[Lsn(last.0 + 3)]).unwrap_err();
    assert!(
        matches!(err, Error::LsnOutOfRange { last: l, .. } if l == last),
        "{err}"
    );
}

#[test]
fn lsns_the_log_does_not_have_are_typed_errors() {
    let (mem, storage) = mem();
    let clock = clock();
    let dir = Path::new("data");
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 4096;
    let e = Engine::open(dir, o).unwrap();
    fill(&e, "s1", 400, true);
    let last = e.last_lsn();
    for log in [
        &file_log(&storage, dir, 4096) as &dyn LogBackend,
        &MemLog::new(),
    ] {
        for bad in [&[Lsn::ZERO][..], &[Lsn(3), Lsn(2)], &[Lsn(3), Lsn(3)]] {
            let (got, err) = at(log, bad).unwrap_err();
            assert!(got.is_empty());
            assert!(matches!(err, Error::InvalidInput { .. }), "{bad:?}: {err}");
        }
    }
    // Past the end: the engine refuses before reading, the log after the ones before.
    for beyond in [last.next(), Lsn(last.0 + 1000), Lsn(u64::MAX)] {
        let err = e.events_at(&[Lsn(1), beyond], |_, _| Ok(true)).unwrap_err();
        assert!(
            matches!(err, Error::LsnOutOfRange { requested, last: l } if requested == beyond && l == last),
            "{err}"
        );
        let (got, err) = at(&file_log(&storage, dir, 4096), &[Lsn(1), beyond]).unwrap_err();
        assert_eq!(got.len(), 1);
        assert!(
            matches!(err, Error::LsnOutOfRange { requested, last: l } if requested == beyond && l == last),
            "{err}"
        );
    }
    // An empty log has no LSN at all.
    let empty = file_log(&storage, Path::new("nowhere"), 4096);
    let (_, err) = at(&empty, &[Lsn(1)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LsnOutOfRange {
                last: Lsn::ZERO,
                ..
            }
        ),
        "{err}"
    );
    drop(e);

    // A hole: a middle segment removed. An LSN in it is corruption naming the segment
    // after the hole, and so is an LSN of that segment (its header names the missing one),
    // while LSNs before the hole are still read.
    let segs = segments(&mem, "data");
    let log = file_log(&storage, dir, 4096);
    let all = sequential(&log, Lsn(1), last);
    let first_of = |p: &Path| {
        session_engine::wal::segment::parse_segment_name(p.file_name().unwrap().to_str().unwrap())
            .unwrap()
    };
    let (gone, after) = (&segs[3], &segs[4]);
    let (gone_first, after_first) = (first_of(gone), first_of(after));
    // Indexed before the segment goes: the reads after it must still see the hole.
    at(&log, &[Lsn(1), Lsn(gone_first.0 - 1), gone_first]).unwrap();
    storage.remove_file(gone).unwrap();
    for log in [log, file_log(&storage, dir, 4096)] {
        assert_eq!(at(&log, &[Lsn(2)]).unwrap(), vec![all[1].clone()]);
        let in_hole = Lsn(gone_first.0 + 1);
        let (got, err) = at(&log, &[Lsn(2), in_hole]).unwrap_err();
        assert_eq!(got, vec![all[1].clone()]);
        match err {
            Error::Corruption { file, offset, .. } => {
                assert_eq!(
                    (&file, offset),
                    (after, 16),
                    "names the segment after the hole"
                )
            }
            other => panic!("{other}"),
        }
        let (_, err) = at(&log, &[after_first]).unwrap_err();
        assert!(
            matches!(&err, Error::Corruption { file, offset: 24, .. } if file == after),
            "{err}"
        );
    }
}

/// Flips one bit of the payload of the record at `lsn`, found by the sequential reader.
fn flip_payload(storage: &Arc<dyn Storage>, log: &dyn LogBackend, lsn: Lsn) -> (PathBuf, u64) {
    let r = sequential(log, lsn, lsn).remove(0);
    let (path, offset) = (r.0, r.1);
    let mut f = storage.open(&path, OpenMode::ReadWrite).unwrap();
    let at = offset + 20 + r.3.len() as u64 / 2;
    let mut b = [0u8; 1];
    f.read_at(at, &mut b).unwrap();
    f.write_at(at, &[b[0] ^ 0x08]).unwrap();
    (path, offset)
}

#[test]
fn a_bit_flip_in_a_record_read_by_lsn_is_corruption_at_its_segment_and_offset() {
    let (_, storage) = mem();
    let clock = clock();
    let dir = Path::new("data");
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 16 * 1024;
    let e = Engine::open(dir, o).unwrap();
    fill(&e, "s1", 600, true);
    let last = e.last_lsn();
    drop(e); // sealed: even the last batch is proven durable
    assert!((3..INDEX_CACHE_SEGMENTS).contains(&segment_count(&*storage, dir)));
    let warm = file_log(&storage, dir, 16 * 1024);
    let all = sequential(&warm, Lsn(1), last);
    // Indexes of every segment, made before the damage.
    at(&warm, &(1..=last.0).map(Lsn).collect::<Vec<_>>()).unwrap();
    // A record in the middle of a middle segment, and the log's last record.
    for victim in [Lsn(last.0 / 2), last] {
        let (path, offset) = flip_payload(&storage, &warm, victim);
        let before = Lsn(victim.0 - 1);
        for log in [&warm, &file_log(&storage, dir, 16 * 1024)] {
            // The record before it is still served; the damaged one never is.
            let (got, err) = at(log, &[before, victim]).unwrap_err();
            assert_eq!(got, vec![all[before.0 as usize - 1].clone()]);
            match &err {
                Error::Corruption {
                    file, offset: o, ..
                } => {
                    assert_eq!((file, *o), (&path, offset), "{err}")
                }
                other => panic!("{victim}: {other}"),
            }
            // The sequential reader reports the same place.
            let mut seq_err = None;
            if let Err(e) = log.read(victim, victim, &mut |_, _, _, _| Ok(true)) {
                seq_err = Some(e);
            }
            assert!(
                matches!(&seq_err, Some(Error::Corruption { file, offset: o, .. }) if *file == path && *o == offset),
                "{seq_err:?}"
            );
            // The engine's API: the same.
            let err = session_engine::backend::read_events_at(log, &[victim], |_, _| Ok(true))
                .unwrap_err();
            assert!(matches!(&err, Error::Corruption { file, .. } if *file == path));
        }
        // Restore the bit for the next victim.
        flip_payload_at(&storage, &path, offset, all[victim.0 as usize - 1].3.len());
        assert_eq!(
            at(&warm, &[victim]).unwrap(),
            vec![all[victim.0 as usize - 1].clone()]
        );
    }
    // Repaired, the log opens and serves both records again.
    let e = Engine::open(dir, {
        let mut o = options(Arc::clone(&storage), &clock);
        o.segment_bytes = 16 * 1024;
        o
    })
    .unwrap();
    let mut n = 0;
    e.events_at(&[Lsn(1), last], |_, _| {
        n += 1;
        Ok(true)
    })
    .unwrap();
    assert_eq!(n, 2);
}

fn flip_payload_at(storage: &Arc<dyn Storage>, path: &Path, offset: u64, len: usize) {
    let mut f = storage.open(path, OpenMode::ReadWrite).unwrap();
    let at = offset + 20 + len as u64 / 2;
    let mut b = [0u8; 1];
    f.read_at(at, &mut b).unwrap();
    f.write_at(at, &[b[0] ^ 0x08]).unwrap();
}

#[test]
fn reads_by_lsn_follow_a_log_that_grows_on_the_real_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::new());
    let clock = clock();
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 8 * 1024;
    let e = Engine::open(&dir, o).unwrap();
    create(&e, "s1");
    let log = file_log(&storage, &dir, 8 * 1024);
    let (tx, rx) = std::sync::mpsc::channel::<Lsn>();
    let mut known = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..1200 {
                let c = activity(&e, "s1", &format!("activity number {i}"));
                tx.send(c.lsn).unwrap();
            }
            drop(tx);
        });
        let mut rng = SplitMix64::new(7);
        // Each record is read by LSN as soon as it is committed, usually past what the
        // active segment's index covers, while the writer goes on appending (and rolling
        // over to new segments); with it, a few earlier ones.
        for lsn in rx {
            let mut lsns = random_lsns(&mut rng, lsn.0, 3);
            lsns.retain(|l| *l < lsn);
            lsns.push(lsn);
            let got = at(&log, &lsns).unwrap_or_else(|(_, err)| panic!("{lsn}: {err}"));
            assert_eq!(got.iter().map(|r| r.2).collect::<Vec<_>>(), lsns);
            known.extend(got);
        }
    });
    let last = e.last_lsn();
    assert!(segment_count(&*storage, &dir) > 10);
    let all = sequential(&log, Lsn(1), last);
    for r in known {
        assert_eq!(all[r.2.0 as usize - 1], r, "{}", r.2);
    }
    // After the writer is gone, an index made while a segment was the last one still
    // finds every record (and knows where the log ends).
    drop(e);
    let every: Vec<Lsn> = (1..=last.0).map(Lsn).collect();
    assert_eq!(at(&log, &every).unwrap(), all);
    let (_, err) = at(&log, &[last.next()]).unwrap_err();
    assert!(
        matches!(err, Error::LsnOutOfRange { last: l, .. } if l == last),
        "{err}"
    );
}

#[test]
fn an_index_made_before_the_active_segment_grew_is_extended_from_its_end() {
    let (_, storage) = mem();
    let clock = clock();
    let dir = Path::new("data");
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 64 * 1024;
    let e = Engine::open(dir, o).unwrap();
    fill(&e, "s1", 10, true);
    let log = file_log(&storage, dir, 64 * 1024);
    let first = e.last_lsn();
    let (_, err) = at(&log, &[first.next()]).unwrap_err();
    assert!(matches!(err, Error::LsnOutOfRange { last, .. } if last == first));
    for round in 0..6 {
        fill(&e, "s1", 20 + round * 7, false);
        let last = e.last_lsn();
        let all = sequential(&log, Lsn(1), last);
        let lsns = [Lsn(1), Lsn(first.0), Lsn(last.0 - 1), last];
        let want: Vec<Rec> = lsns.iter().map(|l| all[l.0 as usize - 1].clone()).collect();
        assert_eq!(at(&log, &lsns).unwrap(), want, "round {round}");
    }
    assert_eq!(segment_count(&*storage, dir), 1);
}

// ---- The cost: a storage that counts the bytes read from each file ----

#[derive(Debug, Default)]
struct Counts {
    /// Bytes read per file: through `Storage::read` (the whole file) and `read_at`.
    whole: HashMap<PathBuf, u64>,
    ranged: HashMap<PathBuf, u64>,
}

#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Storage>,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Box<dyn StorageFile>,
    path: PathBuf,
    counts: Arc<Mutex<Counts>>,
}

impl StorageFile for CountingFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        *self
            .counts
            .lock()
            .unwrap()
            .ranged
            .entry(self.path.clone())
            .or_default() += n as u64;
        Ok(n)
    }
    fn len(&mut self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.inner.sync_all()
    }
}

impl Storage for Counting {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        self.inner.create_dir_all(p)
    }
    fn list_dir(&self, p: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(p)
    }
    fn exists(&self, p: &Path) -> io::Result<bool> {
        self.inner.exists(p)
    }
    fn kind(&self, p: &Path) -> io::Result<Option<FileKind>> {
        self.inner.kind(p)
    }
    fn open(&self, p: &Path, m: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(CountingFile {
            inner: self.inner.open(p, m)?,
            path: p.to_path_buf(),
            counts: Arc::clone(&self.counts),
        }))
    }
    fn read(&self, p: &Path) -> io::Result<Bytes> {
        let b = self.inner.read(p)?;
        *self
            .counts
            .lock()
            .unwrap()
            .whole
            .entry(p.to_path_buf())
            .or_default() += b.len() as u64;
        Ok(b)
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.inner.rename(a, b)
    }
    fn rename_noreplace(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.inner.rename_noreplace(a, b)
    }
    fn stat(&self, p: &Path) -> io::Result<Option<FileStat>> {
        self.inner.stat(p)
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        self.inner.remove_file(p)
    }
    fn sync_dir(&self, p: &Path) -> io::Result<()> {
        self.inner.sync_dir(p)
    }
    fn sync_fs(&self, p: &Path) -> io::Result<()> {
        self.inner.sync_fs(p)
    }
    fn try_lock(&self, p: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.inner.try_lock(p)
    }
    fn is_locked(&self, p: &Path) -> io::Result<bool> {
        self.inner.is_locked(p)
    }
    fn drop_cached(&self, p: &Path, r: std::ops::Range<u64>) -> io::Result<()> {
        self.inner.drop_cached(p, r)
    }
}

impl Counting {
    fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

#[test]
fn reading_one_record_of_a_twenty_segment_log_reads_one_segment_then_one_span() {
    const SEG: u64 = 64 * 1024;
    let (_, mem_storage) = mem();
    let clock = clock();
    let dir = Path::new("data");
    let mut o = options(Arc::clone(&mem_storage), &clock);
    o.segment_bytes = SEG;
    let e = Engine::open(dir, o).unwrap();
    create(&e, "s1");
    while segment_count(&*mem_storage, dir) < 20 {
        fill(&e, "s1", 500, false);
    }
    let last = e.last_lsn();
    drop(e);
    let segs: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = mem_storage
            .list_dir(&dir.join("wal"))
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".wal"))
            .map(|n| dir.join("wal").join(n))
            .collect();
        v.sort();
        v
    };
    assert!(segs.len() >= 20);
    let all = sequential(&file_log(&mem_storage, dir, SEG), Lsn(1), last);
    let longest_frame = all.iter().map(|r| 20 + r.3.len() as u64).max().unwrap();
    let per_segment = all.iter().filter(|r| r.0 == segs[10]).count() as u64;
    assert!(
        per_segment > 4 * INDEX_STRIDE,
        "{per_segment} records per segment: the index must matter"
    );

    let counting = Arc::new(Counting {
        inner: Arc::clone(&mem_storage),
        counts: Arc::default(),
    });
    let storage: Arc<dyn Storage> = counting.clone();
    let log = file_log(&storage, dir, SEG);
    // A record in the middle of segment 10.
    let in_ten: Vec<&Rec> = all.iter().filter(|r| r.0 == segs[10]).collect();
    let target = in_ten[in_ten.len() / 2].2;
    counting.take();
    assert_eq!(
        at(&log, &[target]).unwrap(),
        vec![all[target.0 as usize - 1].clone()]
    );
    let c = counting.take();
    // The first read scans segment 10 once (its whole file) and then reads one span of
    // it; no other file is read at all.
    let seg_len = mem_storage.stat(&segs[10]).unwrap().unwrap().len;
    assert_eq!(c.whole.keys().collect::<Vec<_>>(), vec![&segs[10]], "{c:?}");
    assert_eq!(c.whole[&segs[10]], seg_len);
    assert_eq!(
        c.ranged.keys().collect::<Vec<_>>(),
        vec![&segs[10]],
        "{c:?}"
    );
    assert!(c.ranged[&segs[10]] <= INDEX_STRIDE * longest_frame, "{c:?}");

    // A nearby record: no scan, one span of at most INDEX_STRIDE records.
    let near = Lsn(target.0 + 3);
    assert_eq!(
        at(&log, &[near]).unwrap(),
        vec![all[near.0 as usize - 1].clone()]
    );
    let c = counting.take();
    assert!(c.whole.is_empty(), "{c:?}");
    assert_eq!(
        c.ranged.keys().collect::<Vec<_>>(),
        vec![&segs[10]],
        "{c:?}"
    );
    assert!(c.ranged[&segs[10]] <= INDEX_STRIDE * longest_frame, "{c:?}");
    assert!(c.ranged[&segs[10]] < seg_len / 4, "{c:?}");

    // Records of another segment read only that one; the first segment's records too.
    for k in [0, 19] {
        let r = all.iter().find(|r| r.0 == segs[k]).unwrap();
        assert_eq!(at(&log, &[r.2]).unwrap(), vec![r.clone()]);
        let c = counting.take();
        assert_eq!(c.whole.keys().collect::<Vec<_>>(), vec![&segs[k]], "{c:?}");
        assert_eq!(c.ranged.keys().collect::<Vec<_>>(), vec![&segs[k]], "{c:?}");
    }
    assert_eq!(log.indexed_segments(), 3);
}

#[test]
fn the_index_cache_is_bounded_by_segments() {
    let (_, storage) = mem();
    let clock = clock();
    let dir = Path::new("data");
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 4096;
    let e = Engine::open(dir, o).unwrap();
    create(&e, "s1");
    while segment_count(&*storage, dir) < INDEX_CACHE_SEGMENTS + 8 {
        fill(&e, "s1", 100, false);
    }
    let last = e.last_lsn();
    let log = file_log(&storage, dir, 4096);
    let all = sequential(&log, Lsn(1), last);
    let every: Vec<Lsn> = (1..=last.0).map(Lsn).collect();
    assert_eq!(at(&log, &every).unwrap(), all);
    assert_eq!(log.indexed_segments(), INDEX_CACHE_SEGMENTS);
    // Dropped indexes are made again when needed.
    assert_eq!(at(&log, &[Lsn(1)]).unwrap(), vec![all[0].clone()]);
    assert_eq!(log.indexed_segments(), INDEX_CACHE_SEGMENTS);
}

/// 151 records (`s1` and 150 activities) in 64 KiB segments, every one read by LSN so
/// that their segments are indexed; then what a writer's recovery leaves after cutting a
/// torn tail at LSN 100 (zeros from that record on, seal included), and a new engine
/// opened on it. Returns the engine, the log (whose indexes are now stale) and the
/// records as they were.
fn indexed_then_cut_at_100(storage: &Arc<dyn Storage>) -> (Engine, FileLog, Vec<Rec>) {
    let clock = clock();
    let dir = Path::new("data");
    let o = || {
        let mut o = options(Arc::clone(storage), &clock);
        o.segment_bytes = 64 * 1024;
        o
    };
    let e = Engine::open(dir, o()).unwrap();
    fill(&e, "s1", 150, true);
    drop(e);
    let log = file_log(storage, dir, 64 * 1024);
    let old = sequential(&log, Lsn(1), Lsn(151));
    assert_eq!(old.len(), 151);
    at(&log, &(1..=151).map(Lsn).collect::<Vec<_>>()).unwrap();
    let (path, cut) = (old[99].0.clone(), old[99].1);
    let len = storage.stat(&path).unwrap().unwrap().len;
    let mut f = storage.open(&path, OpenMode::ReadWrite).unwrap();
    f.write_at(cut, &vec![0u8; (len - cut) as usize]).unwrap();
    drop(f);
    (Engine::open(dir, o()).unwrap(), log, old)
}

#[test]
fn an_index_of_a_tail_that_was_cut_and_written_again_serves_the_new_records() {
    let (_, storage) = mem();
    let (e, log, old) = indexed_then_cut_at_100(&storage);
    assert_eq!(e.last_lsn(), Lsn(99));
    create(&e, "s2");
    for i in 0..80 {
        activity(&e, "s2", &format!("a different record {i}"));
    }
    let new = sequential(&log, Lsn(1), e.last_lsn());
    assert_ne!(new[120], old[120]);
    assert_eq!(new.len(), 180);
    // Past the stale index's end: not a scan from that stale end (which lands inside a
    // new record) but from the segment's start.
    assert_eq!(at(&log, &[Lsn(170)]).unwrap(), vec![new[169].clone()]);
    at(&log, &(1..=151).map(Lsn).collect::<Vec<_>>()).unwrap();
    let lsns = [
        Lsn(50),
        Lsn(99),
        Lsn(100),
        Lsn(101),
        Lsn(121),
        Lsn(151),
        Lsn(170),
    ];
    let want: Vec<Rec> = lsns.iter().map(|l| new[l.0 as usize - 1].clone()).collect();
    assert_eq!(at(&log, &lsns).unwrap(), want);
}

#[test]
fn an_index_of_a_tail_that_was_cut_is_not_served_past_the_new_end() {
    let (_, storage) = mem();
    let (e, log, _) = indexed_then_cut_at_100(&storage);
    activity(&e, "s1", "one more");
    assert_eq!(e.last_lsn(), Lsn(100));
    for lsn in [Lsn(101), Lsn(140), Lsn(152)] {
        let (_, err) = at(&log, &[lsn]).unwrap_err();
        assert!(
            matches!(err, Error::LsnOutOfRange { requested, last: Lsn(100) } if requested == lsn),
            "{lsn}: {err}"
        );
    }
    assert_eq!(
        at(&log, &[Lsn(100)]).unwrap(),
        sequential(&log, Lsn(100), Lsn(100))
    );
}

#[test]
fn a_span_of_large_records_is_bounded_by_bytes_not_only_by_records() {
    const SEG: u64 = 8 << 20;
    let (_, mem_storage) = mem();
    let clock = clock();
    let dir = Path::new("data");
    let mut o = options(Arc::clone(&mem_storage), &clock);
    o.segment_bytes = SEG;
    let e = Engine::open(dir, o).unwrap();
    create(&e, "s1");
    for i in 0..40 {
        e.execute(Command::RecordActivity {
            session: id("s1"),
            action: format!("big {i}"),
            details: Some(
                JsonText::parse(&format!("{{\"pad\":\"{}\"}}", "y".repeat(150_000))).unwrap(),
            ),
        })
        .unwrap();
    }
    let last = e.last_lsn();
    drop(e);
    assert_eq!(segment_count(&*mem_storage, dir), 1);
    let all = sequential(&file_log(&mem_storage, dir, SEG), Lsn(1), last);
    let counting = Arc::new(Counting {
        inner: Arc::clone(&mem_storage),
        counts: Arc::default(),
    });
    let storage: Arc<dyn Storage> = counting.clone();
    let log = file_log(&storage, dir, SEG);
    at(&log, &[Lsn(2)]).unwrap();
    counting.take();
    for lsn in [Lsn(20), Lsn(35), last] {
        assert_eq!(
            at(&log, &[lsn]).unwrap(),
            vec![all[lsn.0 as usize - 1].clone()]
        );
        let c = counting.take();
        assert!(c.whole.is_empty(), "{c:?}");
        let read: u64 = c.ranged.values().sum();
        // Fewer than INDEX_STRIDE records, but no more than INDEX_SPAN_BYTES (1 MiB) and
        // a record: not the 6 MB of the 40 records.
        assert!(read < (1 << 20) + 200_000, "{lsn}: {read} bytes");
    }
}

#[test]
fn a_torn_tail_of_the_last_segment_ends_the_log_but_its_record_is_never_silently_missing() {
    let (_, storage) = mem();
    let clock = clock();
    let dir = Path::new("data");
    let e = Engine::open(dir, options(Arc::clone(&storage), &clock)).unwrap();
    fill(&e, "s1", 40, true);
    let last = e.last_lsn();
    drop(e);
    let log = file_log(&storage, dir, 8 * 1024);
    let all = sequential(&log, Lsn(1), last);
    at(&log, &[Lsn(1), last]).unwrap();
    // What a crash in the middle of the last write leaves: no seal after it, and the last
    // record damaged.
    let r = all.last().unwrap().clone();
    let seal_at = r.1 + 20 + r.3.len() as u64;
    let mut f = storage.open(&r.0, OpenMode::ReadWrite).unwrap();
    f.write_at(seal_at, &[0u8; 21]).unwrap();
    drop(f);
    flip_payload_at(&storage, &r.0, r.1, r.3.len());
    // The sequential reader ends the log before the torn record...
    assert_eq!(sequential(&log, Lsn(1), last).len() as u64, last.0 - 1);
    for log in [&log, &file_log(&storage, dir, 8 * 1024)] {
        // ...a point read of it is corruption at its place, not a missing record...
        let (got, err) = at(log, &[Lsn(last.0 - 1), last]).unwrap_err();
        assert_eq!(got, vec![all[last.0 as usize - 2].clone()]);
        assert!(
            matches!(&err, Error::Corruption { file, offset, .. } if *file == r.0 && *offset == r.1),
            "{err}"
        );
        // ...and past it the log has ended.
        let (_, err) = at(log, &[last.next()]).unwrap_err();
        assert!(
            matches!(err, Error::LsnOutOfRange { last: l, .. } if l.0 == last.0 - 1),
            "{err}"
        );
    }
}
