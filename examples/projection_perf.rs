//! The cost of the JSON projections, measured through [`SessionManager`] with its default
//! projection options, on the real file system in a temporary directory (issue 13).
//!
//! ```text
//! nice cargo run --release --example projection_perf [-- bulk|many|all [max activities]]
//! ```
//!
//! * **bulk**: activities submitted into ONE session (pipelined, `Durability::None`), 10k,
//!   100k and 1M of them (up to `max activities`); time per activity until the
//!   acknowledgements and until every projection file is complete (close returned), the
//!   ratio of the largest to 10k, and the largest projection lag seen while writing
//!   (events committed but not yet in every file, and the age of the oldest of them,
//!   sampled every millisecond; an event's age counts from when its command was
//!   submitted).
//! * **many**: 10,000 sessions of 10 activities, `Durability::None` and `Always`,
//!   pipelined; time until every projection file is complete.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_engine::{
    Command, Durability, FileStorage, JsonText, ManagerOptions, NewSession, Options, Pending,
    SessionId, SessionManager, SystemClock,
};

/// Commands in flight at once, at most.
const WINDOW: usize = 4096;

fn details(i: u64) -> String {
    format!(
        "{{\"tool\":\"Edit\",\"file\":\"src/module_{:04}/handler_{:03}.rs\",\"lines\":[{},{}],\
         \"ok\":true,\"tokens\":{},\"note\":\"applied suggested change {:08x}\"}}",
        i % 9973,
        i % 997,
        i % 400,
        i % 400 + 17,
        (i * 37) % 5000,
        i.wrapping_mul(0x9E37_79B9)
    )
}

fn activity(session: &SessionId, i: u64) -> Command {
    Command::RecordActivity {
        session: session.clone(),
        action: ["tool_use", "user_input", "api_call", "file_edit"][(i % 4) as usize].to_owned(),
        details: Some(JsonText::parse(&details(i)).unwrap()),
    }
}

fn create(session: &SessionId) -> Command {
    Command::CreateSession(Box::new(NewSession {
        id: Some(session.clone()),
        timeout_secs: 0,
        ..NewSession::default()
    }))
}

fn open(dir: &Path, durability: Durability) -> SessionManager {
    let engine = Options {
        durability,
        snapshot_every: 0,
        watchdog_interval: None,
        storage: Arc::new(FileStorage::new()),
        clock: Arc::new(SystemClock),
        ..Options::default()
    };
    SessionManager::open(dir, ManagerOptions::with_engine(engine)).unwrap()
}

/// Submits `cmds` with at most [`WINDOW`] in flight; `on_submit(i)` runs before each.
fn pipeline(m: &SessionManager, cmds: Vec<Command>, mut on_submit: impl FnMut(usize)) {
    let mut inflight: VecDeque<Pending> = VecDeque::with_capacity(WINDOW);
    for (i, c) in cmds.into_iter().enumerate() {
        if inflight.len() == WINDOW {
            inflight.pop_front().unwrap().wait().unwrap();
        }
        on_submit(i);
        inflight.push_back(m.engine().submit(c));
    }
    for p in inflight {
        p.wait().unwrap();
    }
}

struct Bulk {
    n: u64,
    acked: Duration,
    complete: Duration,
    max_lag_events: u64,
    max_lag_ms: f64,
}

fn bulk(root: &Path, n: u64) -> Bulk {
    let dir = root.join(format!("bulk-{n}"));
    let m = open(&dir, Durability::None);
    let s = SessionId::new("bulk").unwrap();
    pipeline(&m, vec![create(&s)], |_| {});
    m.flush_projections().unwrap();
    let first = m.last_lsn().0 + 1;
    let cmds: Vec<Command> = (0..n).map(|i| activity(&s, i)).collect();
    // When each LSN's command was submitted (ns since t0, +1; 0: not yet).
    let submitted: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let done = AtomicBool::new(false);
    let (mut max_events, mut max_ms) = (0u64, 0f64);
    let t0 = Instant::now();
    let mut acked = Duration::ZERO;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            pipeline(&m, cmds, |i| {
                submitted[i].store(t0.elapsed().as_nanos() as u64 + 1, Ordering::Release);
            });
            acked = t0.elapsed();
            done.store(true, Ordering::Release);
        });
        while !done.load(Ordering::Acquire) {
            let committed = m.last_lsn().0;
            let projected = m.projection_status().map_or(0, |st| st.projected.0);
            let events = committed.saturating_sub(projected.max(first - 1));
            max_events = max_events.max(events);
            if events > 0 {
                let idx = (projected.max(first - 1) + 1 - first) as usize;
                let at = submitted.get(idx).map_or(0, |a| a.load(Ordering::Acquire));
                if at > 0 {
                    let age = (t0.elapsed().as_nanos() as u64).saturating_sub(at - 1);
                    max_ms = max_ms.max(age as f64 / 1e6);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    m.close().unwrap();
    let complete = t0.elapsed();
    let st = m.projection_status().unwrap();
    assert!(!st.is_behind(), "{st:?}");
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
    Bulk {
        n,
        acked,
        complete,
        max_lag_events: max_events,
        max_lag_ms: max_ms,
    }
}

fn many(root: &Path, durability: Durability, sessions: u64, per: u64) -> (Duration, Duration) {
    let dir = root.join(format!("many-{durability:?}"));
    let m = open(&dir, durability);
    let mut cmds = Vec::new();
    let ids: Vec<SessionId> = (0..sessions)
        .map(|i| SessionId::new(&format!("s{i:05}")).unwrap())
        .collect();
    for id in &ids {
        cmds.push(create(id));
    }
    for round in 0..per {
        for (k, id) in ids.iter().enumerate() {
            cmds.push(activity(id, round * sessions + k as u64));
        }
    }
    let t0 = Instant::now();
    pipeline(&m, cmds, |_| {});
    let acked = t0.elapsed();
    m.close().unwrap();
    let complete = t0.elapsed();
    assert!(!m.projection_status().unwrap().is_behind());
    // Every session file is there and holds its activities.
    let sessions_dir = dir.join("sessions");
    for id in ids.iter().step_by(997) {
        let bytes = std::fs::read(sessions_dir.join(format!("session_{id}.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["activity_log"].as_array().map(Vec::len),
            Some(per as usize),
            "{id}"
        );
    }
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
    (acked, complete)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("all", String::as_str);
    let max: u64 = args.get(1).map_or(1_000_000, |s| s.parse().unwrap());
    let root = tempfile::tempdir().unwrap();
    if matches!(what, "bulk" | "all") {
        let mut base = None;
        for n in [10_000u64, 100_000, 1_000_000] {
            if n > max {
                break;
            }
            let b = bulk(root.path(), n);
            let per = b.complete.as_secs_f64() * 1e6 / b.n as f64;
            let base_per = *base.get_or_insert(per);
            println!(
                "bulk n={} acked_s={:.3} complete_s={:.3} us_per_activity={:.2} \
                 ratio_to_10k={:.2} max_lag_events={} max_lag_ms={:.0}",
                b.n,
                b.acked.as_secs_f64(),
                b.complete.as_secs_f64(),
                per,
                per / base_per,
                b.max_lag_events,
                b.max_lag_ms
            );
        }
    }
    if matches!(what, "many" | "all") {
        for d in [Durability::None, Durability::Always] {
            let (acked, complete) = many(root.path(), d, 10_000, 10);
            println!(
                "many sessions=10000 per=10 durability={d:?} acked_s={:.3} complete_s={:.3} \
                 events_per_s={:.0}",
                acked.as_secs_f64(),
                complete.as_secs_f64(),
                110_000.0 / complete.as_secs_f64()
            );
        }
    }
}
