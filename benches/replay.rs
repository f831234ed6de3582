//! Replay: opening a log of 1M activities (1,000 sessions), with no snapshot (decode and
//! apply every record) and with a snapshot 1,000 events before the end (load the snapshot,
//! replay the tail).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use session_engine::{Durability, Engine};

fn replay(c: &mut Criterion) {
    let events = common::size(1_000_000, 10_000);
    let sessions = 1_000;
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(events));
    for (name, tail) in [
        ("no_snapshot", None),
        ("snapshot_1000_before_end", Some(1_000)),
    ] {
        let dir = common::tempdir();
        common::build_log(dir.path(), sessions, events / sessions, tail);
        g.bench_function(BenchmarkId::new(name, events), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let e = Engine::open(dir.path(), common::options(Durability::Always)).unwrap();
                    total += t.elapsed();
                    assert_eq!(e.state().sessions.len() as u64, sessions);
                    e.close().unwrap();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = replay }
criterion_main!(benches);
