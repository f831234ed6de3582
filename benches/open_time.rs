//! Open time as the log grows, with a recent snapshot (1,000 events before the end): the
//! snapshot is loaded and only the tail is replayed. The log holds activities of 1,000
//! sessions, so the snapshot (the whole state) grows with it too.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use session_engine::{Durability, Engine};

fn open_time(c: &mut Criterion) {
    let sizes: &[u64] = if common::quick() {
        &[2_000, 10_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    let sessions = 1_000;
    let mut g = c.benchmark_group("open_with_recent_snapshot");
    for &events in sizes {
        let dir = common::tempdir();
        common::build_log(dir.path(), sessions, events / sessions, Some(1_000));
        g.bench_function(BenchmarkId::from_parameter(events), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let e = Engine::open(dir.path(), common::options(Durability::Always)).unwrap();
                    total += t.elapsed();
                    assert!(e.recovery_report().snapshot_lsn.is_some());
                    e.close().unwrap();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = open_time }
criterion_main!(benches);
