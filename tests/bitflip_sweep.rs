//! Bit-flip sweep: single bits flipped at seeded random offsets of the segments and
//! snapshots of a realistic data directory. Every flip must end in one of:
//!
//! * a refusal to open naming the damaged file and an offset at or before the flipped
//!   byte, at the start of the damaged record (header damage: within the header);
//! * an open that falls back to an older snapshot or a full replay and reports the
//!   skipped snapshot, with the state unchanged;
//! * in a cleanly closed log (sealed), never a cut of a record: a flip in the seal a clean
//!   close writes, or in the zeros after it, is a reported cut that loses nothing;
//! * in a log left by a crash (a process kill before the close, so no seal after the last
//!   write), a flip inside the final write batch only is a reported torn-tail cut that loses
//!   exactly the records from the damaged one on, all of them inside that one batch (which
//!   is bounded by `max_batch`); nothing before it is ever cut;
//! * for a flip in bytes an open does not read (records before the snapshot it starts
//!   from, an older snapshot), an unchanged state, with `verify` reporting the damage at
//!   the right place.
//!
//! Never a silently changed or lost record: `verify` reports every flip, and every state
//! an open produces is compared with the reference model.
//!
//! `SESSION_ENGINE_SWEEP_SCALE=N` flips N times as many bits.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::model::Model;
use common::workload::*;
use session_engine::storage::{MemStorage, SplitMix64, Storage};
use session_engine::wal::record::decode_frame;
use session_engine::wal::segment::SEGMENT_HEADER_LEN;
use session_engine::{Engine, Error, Lsn};

/// One frame's place in a segment: a record, or a seal (whose `lsn` is the next
/// record's).
#[derive(Clone, Copy, Debug)]
struct Rec {
    start: usize,
    end: usize,
    lsn: u64,
    batch_first: u64,
    seal: bool,
}

/// A segment's layout.
#[derive(Debug)]
struct Seg {
    path: PathBuf,
    len: usize,
    first_lsn: u64,
    records: Vec<Rec>,
}

impl Seg {
    fn records_end(&self) -> usize {
        self.records.last().map_or(SEGMENT_HEADER_LEN, |r| r.end)
    }
}

struct Fixture {
    base: MemStorage,
    settings: Settings,
    segments: Vec<Seg>,
    /// Snapshot files, newest first, with their LSNs.
    snapshots: Vec<(u64, PathBuf, usize)>,
    /// The model after each LSN.
    history: BTreeMap<u64, Model>,
    last_lsn: u64,
    last_batch_first: u64,
    /// Whether the log was closed cleanly (sealed) rather than left by a process kill.
    sealed: bool,
}

/// The sequential workload's directory, with snapshots (the open reads only the log's
/// tail) or without (the open replays every record), closed cleanly.
fn fixture(with_snapshots: bool) -> Fixture {
    fixture_ended(with_snapshots, true)
}

/// [`fixture`], closed cleanly (`sealed`) or as a process kill before the close leaves it.
fn fixture_ended(with_snapshots: bool, sealed: bool) -> Fixture {
    let mem = Arc::new(MemStorage::new());
    let settings = Settings {
        keep_snapshots: 3,
        snapshot_every: if with_snapshots { 16 } else { 0 },
        ..Settings::default()
    };
    let mut run = Runner::new(mem.clone(), Some(mem.clone()), settings);
    let mut history = BTreeMap::new();
    history.insert(0, run.model.clone());
    let script: Vec<Step> = sequential_script()
        .into_iter()
        .filter(|s| with_snapshots || !matches!(s, Step::Snapshot))
        .collect();
    for step in script {
        assert!(run.run(std::slice::from_ref(&step)));
        history.insert(run.model.last_lsn, run.model.clone());
    }
    assert!(run.failures.is_empty());
    let base = if sealed {
        run.close();
        mem.kill_image()
    } else {
        let image = mem.kill_image();
        run.close();
        image
    };
    let wal = Path::new("data/wal");
    let mut segments = Vec::new();
    for name in base.list_dir(wal).unwrap() {
        let path = wal.join(&name);
        let bytes = base.file_content(&path).unwrap();
        let mut records = Vec::new();
        let mut pos = SEGMENT_HEADER_LEN;
        while let Ok(f) = decode_frame(&bytes[pos..]) {
            records.push(Rec {
                start: pos,
                end: pos + f.len,
                lsn: f.lsn.0,
                batch_first: f.batch_first().0,
                seal: f.seal,
            });
            pos += f.len;
        }
        assert!(bytes[pos..].iter().all(|&b| b == 0));
        segments.push(Seg {
            path,
            len: bytes.len(),
            first_lsn: name[..20].parse().unwrap(),
            records,
        });
    }
    let snap_dir = Path::new("data/snapshots");
    let mut snapshots: Vec<(u64, PathBuf, usize)> = base
        .list_dir(snap_dir)
        .unwrap()
        .into_iter()
        .map(|n| {
            let p = snap_dir.join(&n);
            let len = base.file_content(&p).unwrap().len();
            (n[..20].parse().unwrap(), p, len)
        })
        .collect();
    snapshots.sort_by_key(|s| std::cmp::Reverse(s.0));
    let last = segments
        .iter()
        .flat_map(|s| s.records.iter())
        .rfind(|r| !r.seal)
        .copied()
        .unwrap();
    let final_frame = segments.last().unwrap().records.last().copied().unwrap();
    assert_eq!(
        final_frame.seal, sealed,
        "a clean close seals the log, a kill leaves it unsealed"
    );
    let seals = segments
        .iter()
        .flat_map(|s| s.records.iter())
        .filter(|r| r.seal)
        .count();
    assert_eq!(
        seals,
        1 + usize::from(sealed),
        "the workload's reopen left a seal inside the log"
    );
    assert!(segments.len() >= 4);
    if with_snapshots {
        assert!(snapshots.len() >= 2);
        assert!(
            snapshots[0].0 < last.lsn,
            "the newest snapshot should not be at the end"
        );
    } else {
        assert!(snapshots.is_empty());
    }
    Fixture {
        base,
        settings,
        segments,
        snapshots,
        history,
        last_lsn: last.lsn,
        last_batch_first: last.batch_first,
        sealed,
    }
}

/// What a flip must lead to.
#[derive(Debug)]
enum Want {
    /// Refusal naming `file`, with the offset in `offsets`: the start of the damaged record
    /// for a flip in the records, a header field for a flip in a segment header.
    Refused {
        file: PathBuf,
        offsets: std::ops::Range<u64>,
    },
    /// Open succeeds with this state, reporting a torn tail at this offset (if any) and
    /// these skipped snapshots.
    Opens {
        lsn: u64,
        torn_at: Option<(PathBuf, u64)>,
        skipped: Vec<PathBuf>,
        /// Where `verify` must find the damage the open did not read.
        unread: Option<Unread>,
    },
}

#[derive(Debug)]
enum Unread {
    Log(PathBuf, u64),
    Snapshot(PathBuf),
}

#[derive(Debug, Default)]
struct Tally {
    flips: u64,
    refused: u64,
    torn_cuts: u64,
    tail_cuts_losing_nothing: u64,
    snapshot_fallbacks: u64,
    unread_found_by_verify: u64,
    /// Flips the open did not read that the history read reported at their place.
    history_reads_refused: u64,
}

fn expectation(fx: &Fixture, file: &Path, byte: usize) -> Want {
    let newest_lsn = fx.snapshots.first().map_or(0, |s| s.0);
    if let Some(i) = fx.snapshots.iter().position(|(_, p, _)| p == file) {
        return if i == 0 {
            Want::Opens {
                lsn: fx.last_lsn,
                torn_at: None,
                skipped: vec![file.to_path_buf()],
                unread: None,
            }
        } else {
            Want::Opens {
                lsn: fx.last_lsn,
                torn_at: None,
                skipped: vec![],
                unread: Some(Unread::Snapshot(file.to_path_buf())),
            }
        };
    }
    let si = fx.segments.iter().position(|s| s.path == file).unwrap();
    let seg = &fx.segments[si];
    let is_last = si + 1 == fx.segments.len();
    // The segment the open starts reading in: the one holding the snapshot's next record.
    let start_seg = fx
        .segments
        .iter()
        .rposition(|s| s.first_lsn <= newest_lsn + 1)
        .unwrap();
    if byte < SEGMENT_HEADER_LEN {
        // Every header is checked at open; damage is reported at the failing field.
        return Want::Refused {
            file: file.to_path_buf(),
            offsets: 0..SEGMENT_HEADER_LEN as u64,
        };
    }
    let (damage_at, lsn) = match seg
        .records
        .iter()
        .find(|r| (r.start..r.end).contains(&byte))
    {
        Some(r) => (r.start as u64, Some(r)),
        None => (seg.records_end() as u64, None),
    };
    // The open reads every record after the snapshot (and the seals among them), and
    // checks that the snapshot's own last record is where the snapshot says.
    let read_at_open = match lsn {
        Some(r) if r.seal => r.lsn > newest_lsn,
        Some(r) => r.lsn > newest_lsn || (newest_lsn > 0 && r.lsn == newest_lsn),
        None => si >= start_seg,
    };
    let is_final_frame = lsn.is_some_and(|r| is_last && r.end == seg.records_end());
    if !read_at_open {
        return Want::Opens {
            lsn: fx.last_lsn,
            torn_at: None,
            skipped: vec![],
            unread: Some(Unread::Log(file.to_path_buf(), damage_at)),
        };
    }
    match lsn {
        // The snapshot's last record is not where the snapshot says: refused there.
        Some(r) if !r.seal && newest_lsn > 0 && r.lsn == newest_lsn => Want::Refused {
            file: file.to_path_buf(),
            offsets: damage_at..damage_at + 1,
        },
        // The seal a clean close wrote, damaged: nothing proves it, so it is cut, and no
        // record with it.
        Some(r) if r.seal && is_final_frame => Want::Opens {
            lsn: fx.last_lsn,
            torn_at: Some((file.to_path_buf(), damage_at)),
            skipped: vec![],
            unread: None,
        },
        // Only a log left by a crash may lose records, and only from its final batch.
        Some(r) if !fx.sealed && !r.seal && r.batch_first == fx.last_batch_first => Want::Opens {
            lsn: r.lsn - 1,
            torn_at: Some((file.to_path_buf(), damage_at)),
            skipped: vec![],
            unread: None,
        },
        None if is_last => Want::Opens {
            lsn: fx.last_lsn,
            torn_at: Some((file.to_path_buf(), damage_at)),
            skipped: vec![],
            unread: None,
        },
        // The start of the damaged record (or of the damaged zeros), at or before the
        // flipped byte.
        _ => Want::Refused {
            file: file.to_path_buf(),
            offsets: damage_at..damage_at + 1,
        },
    }
}

fn check_flip(fx: &Fixture, file: &Path, byte: usize, bit: u8, tally: &mut Tally) {
    let image = Arc::new(fx.base.kill_image());
    let mut bytes = image.file_content(file).unwrap();
    bytes[byte] ^= 1 << bit;
    image.set_file_content(file, bytes).unwrap();
    let storage: Arc<dyn Storage> = image.clone();
    let want = expectation(fx, file, byte);

    // Offline verification reports every flip, wherever it is.
    let report = session_engine::verify(Path::new("data"), &*storage, |_| {}).unwrap();
    assert!(!report.is_intact(), "verify missed the flip: {want:?}");

    let clock = session_engine::ManualClock::new(session_engine::Timestamp::from_secs(
        START_SECS + 10 * 86_400,
    ));
    let opened = Engine::open(
        "data",
        workload_options(storage.clone(), &clock, fx.settings),
    );
    match (&want, opened) {
        (
            Want::Refused { file, offsets },
            Err(Error::Corruption {
                file: f, offset, ..
            }),
        ) => {
            assert_eq!(&f, file, "{want:?}");
            assert!(offsets.contains(&offset), "offset {offset}: {want:?}");
            let damage = report.damage.as_ref().expect("verify agrees");
            assert_eq!((&damage.file, damage.offset), (&f, offset));
            tally.refused += 1;
        }
        (
            Want::Opens {
                lsn,
                torn_at,
                skipped,
                unread,
            },
            Ok(e),
        ) => {
            let expected = &fx.history[lsn];
            // Activities' details are read from the log: damage the open did not read is
            // met when the history is read, reported at its place, never served.
            let history_read = match (Model::from_engine(&e), unread) {
                (Ok(got), _) => {
                    assert!(got == *expected, "{want:?}: {}", expected.diff(&got));
                    true
                }
                (
                    Err(Error::Corruption {
                        file: f, offset, ..
                    }),
                    Some(Unread::Log(file, off)),
                ) => {
                    assert_eq!((&f, offset), (file, *off), "{want:?}");
                    tally.history_reads_refused += 1;
                    false
                }
                (Err(err), _) => panic!("{want:?}: the history does not read: {err}"),
            };
            let r = e.recovery_report();
            let torn = r.torn_tail.as_ref().map(|t| (t.file.clone(), t.offset));
            assert_eq!(&torn, torn_at, "{want:?}");
            if let Some(t) = &r.torn_tail {
                assert!(t.offset <= byte as u64 && t.saved_to.is_some());
                if *lsn == fx.last_lsn {
                    tally.tail_cuts_losing_nothing += 1;
                } else {
                    // A cut of acknowledged records: only after a crash, and only inside
                    // the final batch.
                    assert!(!fx.sealed, "a sealed log lost records: {want:?}");
                    assert!(*lsn + 1 >= fx.last_batch_first, "{want:?}");
                    assert!(
                        fx.last_lsn - fx.last_batch_first < fx.settings.max_batch as u64,
                        "{want:?}"
                    );
                    tally.torn_cuts += 1;
                }
            }
            let skipped_files: Vec<PathBuf> =
                r.skipped_snapshots.iter().map(|s| s.file.clone()).collect();
            assert_eq!(&skipped_files, skipped, "{want:?}");
            tally.snapshot_fallbacks += skipped.len() as u64;
            match unread {
                Some(Unread::Log(f, off)) => {
                    let d = report.damage.as_ref().expect("verify finds unread damage");
                    assert_eq!((&d.file, d.offset), (f, *off));
                    tally.unread_found_by_verify += 1;
                }
                Some(Unread::Snapshot(f)) => {
                    let s = report.snapshots.iter().find(|s| &s.file == f).unwrap();
                    assert!(s.problem.is_some(), "verify misses the snapshot flip");
                    tally.unread_found_by_verify += 1;
                }
                None => {}
            }
            // The cut is made once: a reopen finds a clean log with the same state.
            e.close().unwrap();
            let again =
                Engine::open("data", workload_options(storage, &clock, fx.settings)).unwrap();
            assert!(again.recovery_report().torn_tail.is_none());
            if history_read {
                assert!(Model::from_engine(&again).unwrap() == *expected);
            }
        }
        (want, got) => panic!("expected {want:?}, got {:?}", got.map(|_| "an open engine")),
    }
    tally.flips += 1;
}

/// Flips `flips` seeded random bits, uniformly over the bytes of the fixture's segments
/// and snapshots.
fn random_flips(fx: &Fixture, flips: u64, seed: u64) -> Tally {
    let mut files: Vec<(PathBuf, usize)> = fx
        .segments
        .iter()
        .map(|s| (s.path.clone(), s.len))
        .collect();
    files.extend(fx.snapshots.iter().map(|(_, p, len)| (p.clone(), *len)));
    let total: usize = files.iter().map(|(_, len)| len).sum();
    let mut rng = SplitMix64::new(seed);
    let mut tally = Tally::default();
    for i in 0..flips {
        let mut at = rng.below(total as u64) as usize;
        let bit = rng.below(8) as u8;
        let (file, _) = files
            .iter()
            .find(|(_, len)| {
                if at < *len {
                    true
                } else {
                    at -= len;
                    false
                }
            })
            .unwrap();
        with_context(
            || {
                format!(
                    "flip {i} (seed {seed}): bit {bit} of byte {at} of {}",
                    file.display()
                )
            },
            || check_flip(fx, file, at, bit, &mut tally),
        );
    }
    eprintln!(
        "{} bits flipped in {} segments and {} snapshots ({total} bytes): {tally:?}",
        tally.flips,
        fx.segments.len(),
        fx.snapshots.len()
    );
    tally
}

#[test]
fn every_flipped_bit_in_a_directory_with_snapshots_is_reported_never_silently_accepted() {
    let t = random_flips(&fixture(true), 2000 * scale(), 0xB17F11B5);
    assert!(
        t.refused > 0
            && t.tail_cuts_losing_nothing > 0
            && t.snapshot_fallbacks > 0
            && t.unread_found_by_verify > 0
            && t.history_reads_refused > 0
            && t.torn_cuts == 0,
        "the sweep should reach every outcome, and a sealed log loses nothing: {t:?}"
    );
}

#[test]
fn every_flipped_bit_in_a_log_replayed_in_full_is_refused_or_cut_never_silently_accepted() {
    let t = random_flips(&fixture(false), 2000 * scale(), 0x5EED_F11B);
    assert!(
        t.refused > 0 && t.torn_cuts == 0 && t.tail_cuts_losing_nothing > 0,
        "{t:?}"
    );
}

#[test]
fn every_flipped_bit_in_a_log_left_by_a_crash_loses_at_most_its_final_batch() {
    let t = random_flips(&fixture_ended(true, false), 1000 * scale(), 0xC4A5_F11B);
    assert!(t.refused > 0 && t.tail_cuts_losing_nothing > 0, "{t:?}");
    let t = random_flips(&fixture_ended(false, false), 1000 * scale(), 0xC4A5_F11C);
    assert!(t.refused > 0 && t.tail_cuts_losing_nothing > 0, "{t:?}");
}

/// Every bit of the final record, the final seal, the last segment's header and the newest
/// snapshot's header, exhaustively, in a cleanly closed log (every flip of the record is
/// refused: the seal proves it durable) and in one left by a crash (every flip of the
/// final record is a torn write, cut).
#[test]
fn every_bit_of_the_final_record_and_of_the_headers_is_checked() {
    for sealed in [true, false] {
        let fx = fixture_ended(true, sealed);
        let mut tally = Tally::default();
        let last = fx.segments.last().unwrap();
        let rec = *last.records.iter().rfind(|r| !r.seal).unwrap();
        let end = last.records_end();
        let mut targets: Vec<(PathBuf, usize)> = (rec.start..end)
            .chain(0..SEGMENT_HEADER_LEN)
            .map(|b| (last.path.clone(), b))
            .collect();
        targets.extend((0..64).map(|b| (fx.snapshots[0].1.clone(), b)));
        for (file, byte) in targets {
            for bit in 0..8 {
                with_context(
                    || format!("bit {bit} of byte {byte} of {}", file.display()),
                    || check_flip(&fx, &file, byte, bit, &mut tally),
                );
            }
        }
        let record_bits = 8 * (rec.end - rec.start) as u64;
        if sealed {
            assert_eq!(tally.torn_cuts, 0, "{tally:?}");
            assert_eq!(
                tally.tail_cuts_losing_nothing,
                8 * (end - rec.end) as u64,
                "every bit of the seal: {tally:?}"
            );
        } else {
            assert_eq!(end, rec.end, "a crash leaves no seal");
            assert_eq!(tally.torn_cuts, record_bits, "{tally:?}");
        }
        eprintln!(
            "every bit of the final record ({} bytes), {} bytes of seal after it, the last \
             segment's header and the newest snapshot's header ({}): {} flips: {tally:?}",
            rec.end - rec.start,
            end - rec.end,
            if sealed {
                "closed cleanly"
            } else {
                "left by a crash"
            },
            tally.flips
        );
    }
}

#[test]
fn the_fixture_opens_intact() {
    let fx = fixture(true);
    let storage: Arc<dyn Storage> = Arc::new(fx.base.kill_image());
    let report = session_engine::verify(Path::new("data"), &*storage, |_| {}).unwrap();
    assert!(report.is_intact(), "{report:?}");
    let clock = session_engine::ManualClock::new(session_engine::Timestamp::from_secs(START_SECS));
    let e = Engine::open("data", workload_options(storage, &clock, fx.settings)).unwrap();
    assert_eq!(e.last_lsn(), Lsn(fx.last_lsn));
    assert!(Model::from_engine(&e).unwrap() == fx.history[&fx.last_lsn]);
}
