//! The cost of taking a snapshot on demand (serialise the state, write, fsync, rename),
//! for 1,000, 10,000 and 100,000 sessions of 10 activities.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use session_engine::{Durability, Engine};

fn snapshot(c: &mut Criterion) {
    let sizes: &[u64] = if common::quick() {
        &[100, 1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let mut g = c.benchmark_group("snapshot");
    for &sessions in sizes {
        let dir = common::tempdir();
        common::build_log(dir.path(), sessions, 10, None);
        let engine = Engine::open(dir.path(), common::options(Durability::Always)).unwrap();
        let mut i = 0;
        g.bench_function(
            BenchmarkId::new("sessions_of_10_activities", sessions),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // A snapshot at an LSN that already has one is kept, not rewritten:
                        // commit one event (untimed) so each iteration writes a new one.
                        i += 1;
                        engine
                            .execute(common::activity(&common::session(0), i))
                            .unwrap();
                        let t = Instant::now();
                        engine.snapshot().unwrap();
                        total += t.elapsed();
                    }
                    total
                })
            },
        );
        engine.close().unwrap();
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = snapshot }
criterion_main!(benches);
