//! Recording one activity in a session that already has 1,000: the engine (one
//! checksummed log record, fsync'd, group commit) against the seeds' approach (rewrite the
//! whole `session_<id>.json` per action: temporary file, fsync, rename), on the same disk
//! in the same run. Then the projection lag under load: how long after a commit the
//! projection files reflect it, and how many LSNs they trail by.
//!
//! Run with `cargo bench --bench activity_vs_json_rewrite`. Files go under
//! `CARGO_TARGET_TMPDIR` (the `target/` disk), or `BENCH_DIR` if set; `/tmp` may be a
//! memory file system where fsync costs nothing. Timings are printed, never asserted.

#![allow(clippy::unwrap_used)]

use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use session_engine::{
    ClaudeSession, Durability, Lsn, ManagerOptions, NewSession, Options, ProjectionOptions,
    SessionManager,
};

const PRIOR: usize = 1_000;

fn bench_root() -> PathBuf {
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    fs::create_dir_all(&base).unwrap();
    base
}

fn engine_options() -> Options {
    Options {
        durability: Durability::Always,
        watchdog_interval: None,
        snapshot_every: 0,
        ..Options::default()
    }
}

/// A manager in a fresh directory with one session holding `PRIOR` activities.
fn engine_with_session(
    dir: &Path,
    projections: Option<ProjectionOptions>,
) -> (SessionManager, ClaudeSession) {
    let m = SessionManager::open(
        dir,
        ManagerOptions {
            engine: engine_options(),
            projections,
        },
    )
    .unwrap();
    let s = m.create_session(NewSession::default()).unwrap();
    for i in 0..PRIOR {
        s.record_activity("user_input", Some(json!({"message": "Hello", "n": i})))
            .unwrap();
    }
    m.flush_projections().unwrap();
    (m, s)
}

/// The seeds' approach: the whole session as a JSON document, rewritten per action.
struct JsonRewrite {
    path: PathBuf,
    tmp: PathBuf,
    doc: Value,
    n: usize,
}

impl JsonRewrite {
    fn new(dir: &Path) -> JsonRewrite {
        fs::create_dir_all(dir).unwrap();
        let log: Vec<Value> = (0..PRIOR)
            .map(|i| {
                json!({"action": "user_input", "timestamp": "2025-11-08T10:30:05Z",
                       "details": {"message": "Hello", "n": i}})
            })
            .collect();
        let doc = json!({
            "session_id": "abc123", "created_at": "2025-11-08T10:30:00Z",
            "last_activity": "2025-11-08T10:35:15Z", "status": "active",
            "timeout_seconds": 3600, "metadata": {"user": "alice@example.com"},
            "activity_log": log,
        });
        JsonRewrite {
            path: dir.join("session_abc123.json"),
            tmp: dir.join("session_abc123.json.tmp"),
            doc,
            n: PRIOR,
        }
    }

    /// Appends one activity and rewrites the file: temporary file, fsync, rename. The
    /// oldest entry is dropped so the session stays at `PRIOR` prior activities however
    /// many iterations run.
    fn record(&mut self) {
        self.n += 1;
        let log = self.doc["activity_log"].as_array_mut().unwrap();
        log.remove(0);
        log.push(
            json!({"action": "user_input", "timestamp": "2025-11-08T10:35:15Z",
                        "details": {"message": "Hello", "n": self.n}}),
        );
        let bytes = serde_json::to_vec_pretty(&self.doc).unwrap();
        let mut f = File::create(&self.tmp).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::rename(&self.tmp, &self.path).unwrap();
    }
}

fn record_one(s: &ClaudeSession, n: &mut usize) {
    *n += 1;
    black_box(
        s.record_activity("user_input", Some(json!({"message": "Hello", "n": *n})))
            .unwrap(),
    );
}

fn activity(c: &mut Criterion) {
    let root = tempfile::tempdir_in(bench_root()).unwrap();
    let (m, s) = engine_with_session(&root.path().join("engine"), None);
    let mut n = PRIOR;
    c.bench_function("record_activity/engine/1000_prior", |b| {
        b.iter(|| record_one(&s, &mut n))
    });
    m.close().unwrap();

    let (m, s) = engine_with_session(
        &root.path().join("engine_proj"),
        Some(ProjectionOptions::default()),
    );
    let mut n = PRIOR;
    c.bench_function("record_activity/engine_with_projections/1000_prior", |b| {
        b.iter(|| record_one(&s, &mut n))
    });
    m.close().unwrap();

    let mut j = JsonRewrite::new(&root.path().join("json"));
    c.bench_function("record_activity/json_rewrite/1000_prior", |b| {
        b.iter(|| j.record())
    });
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The same comparison as a plain interleaved loop, to print medians and their ratio.
fn summary(_: &mut Criterion) {
    const N: usize = 300;
    let root = tempfile::tempdir_in(bench_root()).unwrap();
    let (m, s) = engine_with_session(&root.path().join("engine"), None);
    let mut j = JsonRewrite::new(&root.path().join("json"));
    let (mut engine, mut rewrite) = (Vec::with_capacity(N), Vec::with_capacity(N));
    let mut n = PRIOR;
    for _ in 0..N {
        let t = Instant::now();
        record_one(&s, &mut n);
        engine.push(t.elapsed());
        let t = Instant::now();
        j.record();
        rewrite.push(t.elapsed());
    }
    m.close().unwrap();
    let (e, r) = (median(&mut engine), median(&mut rewrite));
    let bytes = fs::metadata(&j.path).unwrap().len();
    println!(
        "\nsummary ({N} interleaved iterations, {PRIOR} prior activities, file {bytes} bytes):\n  \
         engine record_activity median {e:?} (p99 {:?})\n  \
         json rewrite per action median {r:?} (p99 {:?})\n  \
         ratio rewrite / engine = {:.2}",
        percentile(&engine, 0.99),
        percentile(&rewrite, 0.99),
        r.as_secs_f64() / e.as_secs_f64()
    );
}

/// Writers record activities as fast as the engine takes them for `LOAD`, while a
/// monitor samples the projector's progress; nobody asks the projector to hurry. The lag
/// of an LSN is the time from its commit until the projector reports that every file
/// (session files, logs, registry) reflects it.
fn projection_lag(_: &mut Criterion) {
    const WRITERS: usize = 4;
    const LOAD: Duration = Duration::from_secs(2);
    let root = tempfile::tempdir_in(bench_root()).unwrap();
    let options = ProjectionOptions::default();
    let m = Arc::new(
        SessionManager::open(
            root.path().join("lag"),
            ManagerOptions {
                engine: engine_options(),
                projections: Some(options.clone()),
            },
        )
        .unwrap(),
    );
    let sessions: Vec<ClaudeSession> = (0..WRITERS)
        .map(|_| {
            let s = m.create_session(NewSession::default()).unwrap();
            for i in 0..PRIOR {
                s.record_activity("user_input", Some(json!({"n": i})))
                    .unwrap();
            }
            s
        })
        .collect();
    m.flush_projections().unwrap();
    let start_lsn = m.last_lsn();
    let load_done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (m, load_done) = (Arc::clone(&m), Arc::clone(&load_done));
        std::thread::spawn(move || {
            let mut samples: Vec<(Instant, Lsn, Lsn)> = Vec::new();
            loop {
                let st = m.projection_status().unwrap();
                let last = m.last_lsn();
                samples.push((Instant::now(), st.projected, last));
                if load_done.load(Ordering::SeqCst) && st.projected >= last {
                    return samples;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let started = Instant::now();
    let commits: Vec<Vec<(Lsn, Instant)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter()
            .map(|s| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    let mut i = 0;
                    while started.elapsed() < LOAD {
                        i += 1;
                        let lsn = s
                            .record_activity("user_input", Some(json!({"n": i})))
                            .unwrap();
                        out.push((lsn, Instant::now()));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let load = started.elapsed();
    load_done.store(true, Ordering::SeqCst);
    let samples = monitor.join().unwrap();
    m.close().unwrap();

    let mut lags: Vec<Duration> = Vec::new();
    for (lsn, at) in commits.iter().flatten() {
        let seen = samples
            .iter()
            .find(|(t, projected, _)| *t >= *at && projected >= lsn)
            .map(|(t, _, _)| *t)
            .unwrap();
        lags.push(seen.saturating_duration_since(*at));
    }
    lags.sort();
    let mut behind: Vec<u64> = samples
        .iter()
        .filter(|(t, _, _)| t.duration_since(started) < load)
        .map(|(_, p, last)| last.get().saturating_sub(p.get().max(start_lsn.get())))
        .collect();
    behind.sort_unstable();
    let ops: usize = commits.iter().map(Vec::len).sum();
    println!(
        "\nprojection lag under load ({WRITERS} writers on sessions of {PRIOR}+ activities, \
         {ops} commits in {load:.2?} = {:.0} commits/s; flush_interval {:?}, \
         registry_interval {:?}):\n  \
         time from commit to projected: median {:.1?}, p99 {:.1?}, max {:.1?}\n  \
         LSNs the files trail the log by during the load (sampled every 0.2 ms): \
         median {}, p99 {}, max {}",
        ops as f64 / load.as_secs_f64(),
        options.flush_interval,
        options.registry_interval,
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().unwrap(),
        behind.get(behind.len() / 2).copied().unwrap_or(0),
        behind
            .get(((behind.len() as f64 - 1.0) * 0.99) as usize)
            .copied()
            .unwrap_or(0),
        behind.last().copied().unwrap_or(0),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = activity, summary, projection_lag
}
criterion_main!(benches);
