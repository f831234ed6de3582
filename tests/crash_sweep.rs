//! Power-loss sweep: a workload runs on `MemStorage` with `Durability::Always`, the machine
//! "dies" at every one of its syncs in turn, and each power-cut image (many seeds, every
//! `CrashMode`) must recover to the reference model of a prefix of the submitted commands
//! that contains every acknowledged one; then new writes must work and survive. For some
//! images the recovery itself is cut at each of its syncs, and the second recovery is
//! checked the same way.
//!
//! Sized for CI; `SESSION_ENGINE_SWEEP_SCALE=N` runs N times as many seeds per point.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::workload::*;
use session_engine::storage::{CrashMode, MemStorage, Storage};

#[derive(Debug, Default)]
struct Tally {
    points: u64,
    images: u64,
    torn: u64,
    double_points: u64,
    kills: u64,
}

fn seed_of(point: u64, seed: u64, mode: CrashMode) -> u64 {
    point
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(seed.wrapping_mul(1_000_003))
        .wrapping_add(mode as u64)
}

/// Syncs a complete run of `script` performs.
fn count_syncs(script: &[Step], settings: Settings) -> u64 {
    let m = Arc::new(MemStorage::new());
    let mut r = Runner::new(m.clone(), Some(m.clone()), settings);
    assert!(r.run(script), "the workload does not run: {:?}", r.failures);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    r.close();
    let segments = m.list_dir(Path::new("data/wal")).unwrap().len();
    let snapshots = m.list_dir(Path::new("data/snapshots")).unwrap().len();
    assert!(
        segments >= 4,
        "the workload should roll over segments: {segments}"
    );
    assert!(snapshots >= 1, "the workload should take snapshots");
    eprintln!(
        "workload: {} records, {segments} segments, {} syncs",
        r.model.last_lsn,
        m.sync_count()
    );
    m.sync_count()
}

/// Cuts the recovery of `image` at each of its syncs, then checks the recovery of a power
/// cut of that half-recovered image.
fn crash_during_recovery(run: &Runner, image: &MemStorage, seed: u64, tally: &mut Tally) {
    let probe = Arc::new(image.kill_image());
    let mut f = run.fork(probe.clone());
    assert!(f.open());
    f.close();
    let syncs = probe.sync_count();
    for k in 0..syncs {
        let half = Arc::new(image.kill_image());
        half.halt_after_syncs(k);
        let mut f = run.fork(half.clone());
        let opened = f.open();
        assert!(
            !opened,
            "recovery halted at sync {k} of {syncs} still opened"
        );
        for mode in CrashMode::ALL {
            let again = Arc::new(half.crash(seed ^ k, mode));
            with_context(
                || format!("recovery cut at sync {k} of {syncs}, then {mode:?}"),
                || {
                    let mut g = run.fork(again);
                    assert!(g.open(), "second recovery failed: {:?}", g.failures);
                },
            );
        }
        tally.double_points += 1;
    }
}

fn sweep(name: &str, script: &[Step], settings: Settings, seeds: u64) -> Tally {
    let total = count_syncs(script, settings);
    let mut tally = Tally::default();
    for point in 0..=total {
        let m = Arc::new(MemStorage::new());
        m.halt_after_syncs(point);
        let mut run = Runner::new(m.clone(), Some(m.clone()), settings);
        run.stop_on_halt = true;
        run.run(script);
        for seed in 0..seeds {
            for mode in CrashMode::ALL {
                let s = seed_of(point, seed, mode);
                let image = Arc::new(m.crash(s, mode));
                with_context(
                    || format!("{name}: crash at sync {point} of {total}, seed {s}, {mode:?}"),
                    || {
                        let mut f = run.fork(image.clone());
                        assert!(f.open(), "recovery failed: {:?}", f.failures);
                        let torn = f
                            .engine
                            .as_ref()
                            .unwrap()
                            .recovery_report()
                            .torn_tail
                            .is_some();
                        if torn {
                            tally.torn += 1;
                        }
                        if seed == 0 && (torn || mode == CrashMode::Sectors) {
                            f.close();
                            crash_during_recovery(&run, &image, s, &mut tally);
                            f = run.fork(image.clone());
                            assert!(f.open());
                        }
                        f.next_writes_survive("crash");
                        f.close();
                    },
                );
                tally.images += 1;
            }
        }
        // The same point as a process kill: the machine keeps running, a new process
        // opens the directory and works, and then the power fails.
        run.close();
        m.restart_process();
        with_context(
            || format!("{name}: process killed at sync {point} of {total}"),
            || {
                let mut f = run.fork(m.clone());
                assert!(f.open(), "recovery after a kill failed: {:?}", f.failures);
                f.next_writes_survive("kill");
                f.close();
            },
        );
        tally.kills += 1;
        tally.points += 1;
    }
    eprintln!(
        "{name}: {} crash points (every sync of the workload), {seeds} seeds x {} modes: {} \
         power-cut images recovered and checked, {} with a torn tail cut; {} crash points \
         inside recoveries; {} process kills followed by new writes and a power cut",
        tally.points,
        CrashMode::ALL.len(),
        tally.images,
        tally.torn,
        tally.double_points,
        tally.kills
    );
    tally
}

#[test]
fn every_power_cut_during_a_sequential_workload_recovers_every_acknowledged_command() {
    let t = sweep(
        "sequential",
        &sequential_script(),
        Settings::default(),
        2 * scale(),
    );
    assert!(t.points > 100, "the workload should sync often: {t:?}");
    assert!(
        t.torn > 0,
        "no image had a torn tail: the sweep is not testing"
    );
}

#[test]
fn every_power_cut_during_concurrent_writers_recovers_every_acknowledged_command() {
    let t = sweep(
        "concurrent",
        &concurrent_script(4, 12),
        Settings::default(),
        2 * scale(),
    );
    assert!(t.points > 20, "{t:?}");
}
