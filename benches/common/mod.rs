//! Shared setup for the criterion benchmarks: engine options on real files, the session
//! activities every benchmark writes, logs of a given size, and the quick mode CI uses.
//!
//! `SESSION_ENGINE_BENCH_QUICK=1` shrinks every data set and every measurement so that
//! `.ci/bench-quick` can check in seconds that the benchmarks still run; its figures mean
//! nothing.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use session_engine::{
    Command, Durability, Engine, FileStorage, JsonText, NewSession, Options, SessionId, SystemClock,
};

/// Whether the benchmarks run in quick mode.
pub fn quick() -> bool {
    std::env::var("SESSION_ENGINE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `full` normally, `small` in quick mode.
pub fn size(full: u64, small: u64) -> u64 {
    if quick() { small } else { full }
}

/// Criterion settings: few samples (durable appends run at disk speed, and data sets of a
/// million events take seconds to build), and tiny ones in quick mode.
pub fn criterion() -> Criterion {
    let c = Criterion::default().sample_size(10).without_plots();
    if quick() {
        c.warm_up_time(Duration::from_millis(20))
            .measurement_time(Duration::from_millis(50))
    } else {
        c.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
    }
}

/// Options for a benchmark: real files, the system clock, no watchdog, and no automatic
/// snapshots (the snapshot benchmarks take theirs explicitly).
pub fn options(durability: Durability) -> Options {
    Options {
        durability,
        snapshot_every: 0,
        watchdog_interval: None,
        storage: Arc::new(FileStorage::new()),
        clock: Arc::new(SystemClock),
        ..Options::default()
    }
}

/// The id of session number `n`.
pub fn session(n: u64) -> SessionId {
    SessionId::new(&format!("bench-session-{n:08}")).unwrap()
}

/// JSON details of activity `i`, padded to about `bytes` bytes.
pub fn details(i: u64, bytes: usize) -> JsonText {
    let mut s = format!(
        "{{\"tool\":\"Edit\",\"file\":\"src/module_{:04}/handler_{:03}.rs\",\"tokens\":{},\"note\":\"",
        i % 9973,
        i % 997,
        (i * 37) % 5000
    );
    while s.len() + 2 < bytes {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s.push_str("\"}");
    JsonText::parse(&s).unwrap()
}

/// Activity `i` of session `s`, an event of about 200 bytes.
pub fn activity(s: &SessionId, i: u64) -> Command {
    activity_sized(s, i, 150)
}

/// Activity `i` of session `s` with details of about `bytes` bytes.
pub fn activity_sized(s: &SessionId, i: u64, bytes: usize) -> Command {
    Command::RecordActivity {
        session: s.clone(),
        action: "tool_use".into(),
        details: Some(details(i, bytes)),
    }
}

/// The command that creates session `n`, without a timeout.
pub fn create(n: u64) -> Command {
    Command::CreateSession(Box::new(NewSession {
        id: Some(session(n)),
        timeout_secs: 0,
        ..NewSession::default()
    }))
}

/// Runs `cmds` pipelined (a window of submitted commands), waiting for all of them.
pub fn pipeline(engine: &Engine, cmds: impl Iterator<Item = Command>) {
    let mut window = VecDeque::with_capacity(4096);
    for c in cmds {
        window.push_back(engine.submit(c));
        if window.len() >= 4096 {
            window.pop_front().unwrap().wait().unwrap();
        }
    }
    for p in window {
        p.wait().unwrap();
    }
}

/// Opens an engine in `dir` with `sessions` sessions of `per_session` activities each
/// (interleaved), written fast (buffered, pipelined) and synced.
pub fn populated(dir: &Path, durability: Durability, sessions: u64, per_session: u64) -> Engine {
    let engine = Engine::open(dir, options(durability)).unwrap();
    pipeline(&engine, (0..sessions).map(create));
    pipeline(
        &engine,
        (0..sessions * per_session).map(|i| activity(&session(i % sessions), i)),
    );
    engine.sync().unwrap();
    engine
}

/// Writes a closed log in `dir`: `sessions` sessions of `per_session` activities, with a
/// snapshot `tail` events before the end when `tail` is `Some`.
pub fn build_log(dir: &Path, sessions: u64, per_session: u64, tail: Option<u64>) {
    let total = sessions * per_session;
    let before = tail.map_or(total, |t| total.saturating_sub(t));
    let engine = Engine::open(dir, options(Durability::None)).unwrap();
    pipeline(&engine, (0..sessions).map(create));
    pipeline(
        &engine,
        (0..before).map(|i| activity(&session(i % sessions), i)),
    );
    if tail.is_some() {
        engine.snapshot().unwrap();
        pipeline(
            &engine,
            (before..total).map(|i| activity(&session(i % sessions), i)),
        );
    }
    engine.close().unwrap();
}

/// A temporary directory for a benchmark's data, on the disk of the working directory
/// (`target/`), not on a RAM-backed `/tmp`.
pub fn tempdir() -> tempfile::TempDir {
    std::fs::create_dir_all("target/bench-data").unwrap();
    tempfile::tempdir_in("target/bench-data").unwrap()
}
