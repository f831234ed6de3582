//! Durable appends from 1, 4, 16 and 64 threads sharing one engine: the group commit.
//!
//! Every thread calls `execute` in a loop on its own session; each call returns only once
//! its event is durable. The throughput is events per second over all threads.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use session_engine::Durability;

fn concurrent_writers(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_writers");
    g.throughput(Throughput::Elements(1));
    for writers in [1u64, 4, 16, 64] {
        let dir = common::tempdir();
        let engine = common::populated(dir.path(), Durability::Always, writers, 0);
        let mut next = 0u64;
        g.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |b, &writers| {
                b.iter_custom(|iters| {
                    // Spread `iters` events over the writers; the wall time of the whole
                    // spread is the cost of `iters` events.
                    let per = iters.div_ceil(writers);
                    let base = next;
                    next += per * writers;
                    let t = Instant::now();
                    std::thread::scope(|s| {
                        for w in 0..writers {
                            let engine = &engine;
                            s.spawn(move || {
                                let sid = common::session(w);
                                for k in 0..per {
                                    engine
                                        .execute(common::activity(&sid, base + w * per + k))
                                        .unwrap();
                                }
                            });
                        }
                    });
                    let el = t.elapsed();
                    Duration::from_secs_f64(
                        el.as_secs_f64() * iters as f64 / (per * writers) as f64,
                    )
                })
            },
        );
        engine.close().unwrap();
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = concurrent_writers }
criterion_main!(benches);
