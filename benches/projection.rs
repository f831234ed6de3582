//! Projection throughput: how fast the projector turns committed events into the JSON
//! files the seeds' tools read (`sessions/session_<id>.json`, `registry.json`,
//! `logs/session_<id>.log`).
//!
//! * `projection/live`: activities spread over 100 sessions are committed (buffered,
//!   pipelined) and the clock stops when `flush_projections` says every file shows them:
//!   events per second through the engine and the projector together.
//! * `projection/rebuild`: `rebuild_projections` on a log of N sessions of 10 activities,
//!   every file rewritten from the state: sessions per second.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use session_engine::{Durability, ManagerOptions, SessionManager};

fn manager(dir: &std::path::Path) -> SessionManager {
    SessionManager::open(
        dir,
        ManagerOptions::with_engine(common::options(Durability::None)),
    )
    .unwrap()
}

fn projection(c: &mut Criterion) {
    let mut g = c.benchmark_group("projection");
    let sessions = 100;
    for &events in if common::quick() {
        &[1_000u64][..]
    } else {
        &[10_000, 100_000][..]
    } {
        g.throughput(Throughput::Elements(events));
        g.bench_function(BenchmarkId::new("live", events), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = common::tempdir();
                    let m = manager(dir.path());
                    common::pipeline(m.engine(), (0..sessions).map(common::create));
                    m.flush_projections().unwrap();
                    let t = Instant::now();
                    common::pipeline(
                        m.engine(),
                        (0..events).map(|i| common::activity(&common::session(i % sessions), i)),
                    );
                    m.flush_projections().unwrap();
                    total += t.elapsed();
                    m.close().unwrap();
                }
                total
            })
        });
    }
    for &n in if common::quick() {
        &[100u64][..]
    } else {
        &[1_000, 10_000][..]
    } {
        let dir = common::tempdir();
        common::build_log(dir.path(), n, 10, None);
        let m = manager(dir.path());
        m.flush_projections().unwrap();
        g.throughput(Throughput::Elements(n));
        g.bench_function(
            BenchmarkId::new("rebuild_sessions_of_10_activities", n),
            |b| b.iter(|| m.rebuild_projections().unwrap()),
        );
        m.close().unwrap();
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = projection }
criterion_main!(benches);
