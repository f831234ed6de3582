//! The worst durable append latency while a snapshot of 100,000 sessions (10 activities
//! each) is being taken.
//!
//! Each iteration asks for a snapshot from another thread and, until it is on disk, runs
//! durable `execute` calls one after another, timing each. The figure criterion reports
//! is **the worst single append latency of the iteration**, not an average: it is what a
//! caller waits at most while the snapshot runs. The snapshot's own duration, the number
//! of appends it overlapped, and, as a control, the worst latency of as many appends
//! right after it with no snapshot running are printed to stderr.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use session_engine::Durability;

fn snapshot_stall(c: &mut Criterion) {
    let sessions = common::size(100_000, 1_000);
    let dir = common::tempdir();
    let engine = common::populated(dir.path(), Durability::Always, sessions, 10);
    let mut i = sessions * 10;
    let mut g = c.benchmark_group("append_during_snapshot");
    g.bench_function(format!("worst_latency_{sessions}_sessions"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let done = AtomicBool::new(false);
                let (worst, appends, snap) = std::thread::scope(|s| {
                    let snap = s.spawn(|| {
                        let t = Instant::now();
                        engine.snapshot().unwrap();
                        done.store(true, Ordering::SeqCst);
                        t.elapsed()
                    });
                    let mut worst = Duration::ZERO;
                    let mut appends = 0u64;
                    while !done.load(Ordering::SeqCst) || appends == 0 {
                        i += 1;
                        let t = Instant::now();
                        engine
                            .execute(common::activity(&common::session(i % sessions), i))
                            .unwrap();
                        worst = worst.max(t.elapsed());
                        appends += 1;
                    }
                    (worst, appends, snap.join().unwrap())
                });
                let mut control = Duration::ZERO;
                for _ in 0..appends {
                    i += 1;
                    let t = Instant::now();
                    engine
                        .execute(common::activity(&common::session(i % sessions), i))
                        .unwrap();
                    control = control.max(t.elapsed());
                }
                eprintln!(
                    "snapshot took {:.1} ms; {appends} appends during it, worst {:.2} ms; \
                     worst of {appends} appends without a snapshot {:.2} ms",
                    snap.as_secs_f64() * 1e3,
                    worst.as_secs_f64() * 1e3,
                    control.as_secs_f64() * 1e3
                );
                total += worst;
            }
            total
        })
    });
    g.finish();
    engine.close().unwrap();
}

criterion_group! { name = benches; config = common::criterion(); targets = snapshot_stall }
criterion_main!(benches);
