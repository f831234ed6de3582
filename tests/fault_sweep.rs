//! I/O-error sweep: a workload runs on `FaultStorage` over `MemStorage`, and the Nth
//! operation of a kind (EIO, ENOSPC, short write, failed fsync) fails, once or forever, for
//! every N the workload reaches. The engine must answer with typed errors, poison itself
//! after a failed log write or fsync (and then acknowledge nothing more), and never
//! acknowledge what is not durable: on the healed storage, and after a power cut right
//! after the failure, recovery yields the model of a prefix of the commands that contains
//! every acknowledged one, and new writes work and survive.
//!
//! `SESSION_ENGINE_SWEEP_SCALE=N` checks N power-cut images per fault point instead of one.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::workload::*;
use session_engine::storage::{CrashMode, FaultKind, FaultPlan, FaultStorage, MemStorage, Storage};

#[derive(Debug, Default)]
struct Tally {
    points: u64,
    fired: u64,
    failed_answers: u64,
    opens_failed: u64,
    images: u64,
}

fn plan(kind: FaultKind, fail_at: u64, forever: bool) -> FaultPlan {
    FaultPlan {
        kind,
        fail_at,
        forever,
    }
}

/// Operations of `kind` a complete run of `script` performs.
fn count_ops(script: &[Step], settings: Settings, kind: FaultKind) -> u64 {
    let mem = Arc::new(MemStorage::new());
    let fs = FaultStorage::new(mem.clone(), plan(kind, u64::MAX, false));
    let storage: Arc<dyn Storage> = Arc::new(fs.clone());
    let mut r = Runner::new(storage, Some(mem), settings);
    assert!(r.run(script));
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    r.close();
    fs.counted()
}

fn sweep(name: &str, script: &[Step], settings: Settings) -> Tally {
    let mut tally = Tally::default();
    for kind in FaultKind::ALL {
        let total = count_ops(script, settings, kind);
        for forever in [false, true] {
            for n in 1..=total {
                let ctx =
                    || format!("{name}: {kind:?} at operation {n} of {total}, forever {forever}");
                with_context(ctx, || {
                    let mem = Arc::new(MemStorage::new());
                    let fs = FaultStorage::new(mem.clone(), plan(kind, n, forever));
                    let storage: Arc<dyn Storage> = Arc::new(fs.clone());
                    let mut run = Runner::new(storage, Some(mem.clone()), settings);
                    run.run(script);
                    run.close();
                    tally.fired += u64::from(fs.fired());
                    tally.failed_answers +=
                        run.failures.iter().filter(|f| f.contains("Cmd")).count() as u64;
                    tally.opens_failed += run
                        .failures
                        .iter()
                        .filter(|f| f.starts_with("open"))
                        .count() as u64;
                    // A power cut right after the failure: nothing acknowledged may be lost.
                    for seed in 0..scale() {
                        let mode = CrashMode::ALL[(n + seed) as usize % 4];
                        let image = Arc::new(mem.crash(n * 31 + seed, mode));
                        let mut f = run.fork(image);
                        assert!(
                            f.open(),
                            "recovery after a power cut failed: {:?}",
                            f.failures
                        );
                        f.close();
                        tally.images += 1;
                    }
                    // The disk heals and the process reopens the directory.
                    fs.heal();
                    let mut f = run.fork(mem);
                    assert!(
                        f.open(),
                        "reopen on the healed disk failed: {:?}",
                        f.failures
                    );
                    f.next_writes_survive("fault");
                    f.close();
                });
                tally.points += 1;
            }
        }
        eprintln!("{name}: {kind:?}: {total} operations, each failed once and forever");
    }
    eprintln!("{name}: {tally:?}");
    tally
}

#[test]
fn every_io_error_during_a_sequential_workload_is_reported_and_loses_nothing_acknowledged() {
    let t = sweep("sequential", &sequential_script(), Settings::default());
    assert!(
        t.fired > 0 && t.failed_answers > 0 && t.opens_failed > 0,
        "{t:?}"
    );
}

#[test]
fn every_io_error_during_concurrent_writers_is_reported_and_loses_nothing_acknowledged() {
    let t = sweep("concurrent", &concurrent_script(4, 12), Settings::default());
    assert!(t.fired > 0 && t.failed_answers > 0, "{t:?}");
}

/// Syncs a complete run of `script` performs on `MemStorage`.
fn count_syncs(script: &[Step], settings: Settings) -> u64 {
    let mem = Arc::new(MemStorage::new());
    let mut r = Runner::new(mem.clone(), Some(mem.clone()), settings);
    assert!(r.run(script));
    r.close();
    mem.sync_count()
}

/// Linux after a write-back error ("fsyncgate"): the failed fsync marks the pages clean,
/// so their content stays visible but is never written, and a later fsync succeeds
/// without saving it. The engine poisons itself and acknowledges nothing more. Checked
/// here: a power cut right after the failure, and (`restart`) a new process on the same
/// machine that reads the lost records back from the page cache, writes after them, and
/// then loses power.
fn fsyncgate_sweep(name: &str, script: &[Step], settings: Settings, restart: bool) -> u64 {
    let total = count_syncs(script, settings);
    let mut points = 0;
    for n in 0..total {
        with_context(
            || format!("{name}: sync {n} of {total} fails and loses its data"),
            || {
                let mem = Arc::new(MemStorage::new());
                mem.fail_sync_losing_data(n);
                let mut run = Runner::new(mem.clone(), Some(mem.clone()), settings);
                run.run(script);
                run.close();
                for seed in 0..scale() {
                    let mode = CrashMode::ALL[(n + seed) as usize % 4];
                    let image = Arc::new(mem.crash(n * 7 + seed, mode));
                    let mut f = run.fork(image);
                    assert!(f.open(), "power cut after the failure: {:?}", f.failures);
                    f.next_writes_survive("after-failed-fsync");
                    f.close();
                }
                if restart {
                    // Concurrent runs sync a varying number of times: a failure that did
                    // not fire during the run must not fire in the new process.
                    mem.fail_sync_losing_data(u64::MAX);
                    let mut f = run.fork(mem);
                    assert!(f.open(), "restart after the failure: {:?}", f.failures);
                    f.next_writes_survive("fsyncgate");
                    f.close();
                }
            },
        );
        points += 1;
    }
    eprintln!("{name}: a failed fsync losing its data at each of {points} syncs");
    points
}

#[test]
fn a_failed_fsync_that_drops_the_unsynced_pages_loses_nothing_acknowledged_in_a_power_cut() {
    let settings = Settings::default();
    assert!(fsyncgate_sweep("sequential", &sequential_script(), settings, false) > 100);
    assert!(fsyncgate_sweep("concurrent", &concurrent_script(4, 12), settings, false) > 20);
}

/// "fsyncgate" followed by a restart on the same machine: the failed fsync left the lost
/// records visible in the page cache. The new writer drops the log tail's cached pages
/// before reading it (`Storage::drop_cached`), so it sees what the device holds, cuts the
/// torn tail there, and what it appends survives a later power cut.
#[test]
fn a_restarted_process_after_a_failed_fsync_that_dropped_pages_loses_nothing_acknowledged() {
    let settings = Settings::default();
    assert!(fsyncgate_sweep("sequential", &sequential_script(), settings, true) > 100);
    assert!(fsyncgate_sweep("concurrent", &concurrent_script(4, 12), settings, true) > 20);
}
