//! Appending one activity at a time, by durability mode and event size.
//!
//! Each iteration is one `execute` (validate, encode, append, and in `Always` an
//! `fdatasync`) from a single caller; the pipelined group measures `submit` with many
//! commands in flight, as the CLI and buffered callers use it.

#![allow(clippy::unwrap_used)]

mod common;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use session_engine::Durability;
use std::time::Duration;

fn append(c: &mut Criterion) {
    let modes = [
        ("always", Durability::Always),
        (
            "interval_10ms",
            Durability::Interval(Duration::from_millis(10)),
        ),
        ("none", Durability::None),
    ];
    let sizes: &[usize] = if common::quick() {
        &[200]
    } else {
        &[100, 200, 1_000, 4_000]
    };
    let mut g = c.benchmark_group("append_execute");
    g.throughput(Throughput::Elements(1));
    for (name, durability) in modes {
        for &bytes in sizes {
            let dir = common::tempdir();
            let engine = common::populated(dir.path(), durability, 1, 0);
            let s = common::session(0);
            let mut i = 0u64;
            g.bench_with_input(BenchmarkId::new(name, bytes), &bytes, |b, &bytes| {
                // The command is built outside the measured closure: only the engine's
                // work is timed.
                b.iter_batched(
                    || {
                        i += 1;
                        common::activity_sized(&s, i, bytes.saturating_sub(50))
                    },
                    |cmd| engine.execute(cmd).unwrap(),
                    BatchSize::SmallInput,
                )
            });
            engine.close().unwrap();
        }
    }
    g.finish();

    let mut g = c.benchmark_group("append_pipelined");
    let window = common::size(4096, 64);
    g.throughput(Throughput::Elements(window));
    for (name, durability) in modes {
        let dir = common::tempdir();
        let engine = common::populated(dir.path(), durability, 1, 0);
        let s = common::session(0);
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new(name, 200), |b| {
            b.iter_batched(
                || {
                    let start = i;
                    i += window;
                    (start..i)
                        .map(|k| common::activity(&s, k))
                        .collect::<Vec<_>>()
                },
                |cmds| common::pipeline(&engine, cmds.into_iter()),
                BatchSize::LargeInput,
            )
        });
        engine.close().unwrap();
    }
    g.finish();
}

criterion_group! { name = benches; config = common::criterion(); targets = append }
criterion_main!(benches);
