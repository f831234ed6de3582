//! W16 and W17: reading a session's history, the targets of issue 15 that W4, W5 and W7
//! do not cover (history moved out of memory and read from the log on demand).
//!
//! * W16 `history-read`: one session's whole history (10k activities, one of four
//!   sessions written interleaved) read through the library's public API, against
//!   `serde_json` reading the same activities from the session's projection file
//!   (`sessions/session_<id>.json`, seed 001's format, written by the engine's own
//!   projector from the same log).
//! * W17 `show-1m`: the whole process time of `session-engine --data-dir D show ID` (the
//!   binary as [`crate::cli::locate`] finds it) on a directory of 1M activities against
//!   one of 10k, both with a snapshot near the end of the log and the same session shown.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use session_engine::{Durability, Engine, ManagerOptions, SessionId, SessionManager};

use crate::cli;
use crate::workload::{
    activity, create, engine_options, engine_with_sessions, fill, fresh_dir, median, rate, remove,
    session_id,
};
use crate::{Config, Section, Unit, group};

/// The workloads' ids and their `--only` names.
pub const NAMES: [(&str, &str); 2] = [("W16", "history-read"), ("W17", "show-1m")];

/// Whether W17, which runs the `session-engine` binary, is selected.
pub fn needs_cli(cfg: &Config) -> bool {
    cfg.wants_named("W17", "show-1m")
}

// ---------------------------------------------------------------------------------------
// W16: one session's whole history.

/// Issue 15's target for W16: the engine reads a session's history at least this many
/// times as fast as `serde_json` reads it from the seeds' JSON file.
const W16_TARGET: f64 = 0.5;

/// What a reader of the history looked at: activities, and bytes of their actions and
/// details (so that no reader can skip the data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Digest {
    activities: u64,
    bytes: u64,
}

/// The session's history through the library's public API: the history reader
/// (`Engine::history`), every activity oldest first (action, timestamp and details).
/// Commands and decisions come from the published state; activities' details are read
/// from the log (state schema 5, issue 15's first step).
fn engine_read(e: &Engine, id: &SessionId) -> Digest {
    let history = e.history(id).expect("the session's history");
    let mut d = Digest::default();
    let mut stamps = 0i64;
    for a in history.activities().iter() {
        let a = a.expect("an activity").value;
        d.activities += 1;
        d.bytes += (a.action.len() + a.details.text().map_or(0, |j| j.as_str().len())) as u64;
        stamps ^= a.timestamp.0;
    }
    std::hint::black_box(stamps);
    d
}

/// Seed 001's session file as a reader of the format takes it: the activity log, with
/// `details` kept as JSON text (checked, not built into a tree), like the engine's.
#[derive(Deserialize)]
struct SeedFileRaw<'a> {
    session_id: &'a str,
    #[serde(borrow)]
    activity_log: Vec<SeedActivityRaw<'a>>,
}

#[derive(Deserialize)]
struct SeedActivityRaw<'a> {
    action: String,
    timestamp: String,
    #[serde(borrow)]
    details: &'a RawValue,
}

/// The same with `details` parsed into `serde_json::Value` (what Python's `json.load`
/// of the seeds does).
#[derive(Deserialize)]
struct SeedFileValue {
    session_id: String,
    activity_log: Vec<SeedActivityValue>,
}

#[derive(Deserialize)]
struct SeedActivityValue {
    action: String,
    timestamp: String,
    details: serde_json::Value,
}

/// Reads the file and parses it, details as text.
fn serde_raw(path: &Path) -> Digest {
    let bytes = std::fs::read(path).expect("read the session file");
    let f: SeedFileRaw = serde_json::from_slice(&bytes).expect("seed 001's format");
    std::hint::black_box(f.session_id);
    let mut d = Digest::default();
    for a in &f.activity_log {
        d.activities += 1;
        d.bytes += (a.action.len() + a.details.get().len()) as u64;
        std::hint::black_box(&a.timestamp);
    }
    d
}

/// Reads the file and parses it, details as `Value`s.
fn serde_value(path: &Path) -> Digest {
    let bytes = std::fs::read(path).expect("read the session file");
    let f: SeedFileValue = serde_json::from_slice(&bytes).expect("seed 001's format");
    std::hint::black_box(&f.session_id);
    let mut d = Digest::default();
    for a in &f.activity_log {
        d.activities += 1;
        d.bytes += (a.action.len() + usize::from(a.details.is_object())) as u64;
        std::hint::black_box(&a.timestamp);
    }
    d
}

pub fn w16(cfg: &Config) -> Section {
    const SESSIONS: u64 = 4;
    let n = cfg.n(10_000, 1_000);
    let rounds = cfg.reps * 4;
    let root = &cfg.dir;
    let mut sec = Section::new(
        "W16",
        format!(
            "reading one session's whole history of {} activities (one of {SESSIONS} sessions \
             written interleaved) through the library, against serde_json reading the same \
             activities from its seed-001 file ({rounds} interleaved rounds, page cache warm)",
            group(n as f64)
        ),
    );
    let d = fresh_dir(root, "w16");
    eprintln!("W16: building a log of {SESSIONS} sessions × {n} activities");
    let e = engine_with_sessions(&d, Durability::None, SESSIONS);
    fill(&e, SESSIONS, n);
    e.close().unwrap();
    // The seeds' file of the same session, written by the engine's own projector.
    let id = session_id(0);
    let m = SessionManager::open(
        &d,
        ManagerOptions::with_engine(engine_options(Durability::None)),
    )
    .unwrap();
    m.flush_projections().unwrap();
    let file = m.session_file(id.as_str()).unwrap();
    m.close().unwrap();
    drop(m);
    let file_bytes = std::fs::metadata(&file).expect("the session file").len();

    // Per round: the engine's first read after an (untimed) open, its second read, and
    // the two serde_json readings, all as activities per second.
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut want = None;
    for _ in 0..rounds {
        let e = Engine::open(&d, engine_options(Durability::Always)).unwrap();
        let t = Instant::now();
        let first = engine_read(&e, &id);
        let el_first = t.elapsed();
        let t = Instant::now();
        let again = engine_read(&e, &id);
        let el_again = t.elapsed();
        e.close().unwrap();
        let t = Instant::now();
        let raw = serde_raw(&file);
        let el_raw = t.elapsed();
        let t = Instant::now();
        let value = serde_value(&file);
        let el_value = t.elapsed();
        // Every reader saw the same activities (the Value reader counts no details bytes).
        let w = *want.get_or_insert(first);
        assert_eq!(w.activities, n);
        assert_eq!(first, w);
        assert_eq!(again, w);
        assert_eq!(raw, w);
        assert_eq!(value.activities, n);
        for (r, el) in rates.iter_mut().zip([el_first, el_again, el_raw, el_value]) {
            r.push(rate(n, el));
        }
    }
    remove(&d);
    let paired = |a: usize, b: usize| {
        let mut v: Vec<f64> = rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect();
        median(&mut v)
    };
    let med = |i: usize| median(&mut rates[i].clone());
    let details = want.map_or(0, |w| w.bytes);
    sec.row(
        "engine: first read after Engine::open, Engine::history(id).activities()",
        med(0),
        Unit::Rate,
        None,
    );
    sec.note(format!(
        "{:.1} MiB of actions and details",
        details as f64 / (1 << 20) as f64
    ));
    sec.row(
        "engine: the same read again on the same open engine",
        med(1),
        Unit::Rate,
        Some(paired(0, 1)),
    );
    sec.row(
        "serde_json: read sessions/session_<id>.json, parse activity_log, details as raw text",
        med(2),
        Unit::Rate,
        Some(paired(0, 2)),
    );
    sec.note(format!(
        "file of {:.1} MiB, written by the engine's projector",
        file_bytes as f64 / (1 << 20) as f64
    ));
    sec.row(
        "serde_json: the same, details parsed into serde_json::Value",
        med(3),
        Unit::Rate,
        Some(paired(0, 3)),
    );
    sec.check(
        "W16 engine history read ÷ serde_json reading the seeds' file (details as text)",
        paired(0, 2),
        W16_TARGET,
        true,
    );
    sec
}

// ---------------------------------------------------------------------------------------
// W17: `show` as the directory grows.

/// Issue 15's target for W17: `show` on the large directory takes at most this many times
/// as long as on the small one.
const W17_TARGET: f64 = 2.0;

/// The session W17 shows, the same in every directory.
const SHOWN: &str = "bench-show";

/// Activities of the shown session.
const SHOWN_ACTIVITIES: u64 = 100;

/// Builds a data directory of `n` activities: [`SHOWN_ACTIVITIES`] in session [`SHOWN`],
/// written first (an old session: deep in the log), then the rest round-robin over 1,000
/// other sessions, with a snapshot `tail` activities before the end.
fn build_show_dir(dir: &Path, n: u64, tail: u64) {
    const SESSIONS: u64 = 1_000;
    let e = engine_with_sessions(dir, Durability::None, SESSIONS);
    let shown = SessionId::new(SHOWN).unwrap();
    e.execute(create(&shown)).unwrap();
    let mut window = std::collections::VecDeque::new();
    let snapshot_at = n.saturating_sub(tail).max(SHOWN_ACTIVITIES);
    for i in 0..n {
        if i == snapshot_at {
            for p in window.drain(..) {
                let p: session_engine::Pending = p;
                p.wait().unwrap();
            }
            e.snapshot().unwrap();
        }
        let sid = if i < SHOWN_ACTIVITIES {
            shown.clone()
        } else {
            session_id(i % SESSIONS)
        };
        window.push_back(e.submit(activity(&sid, i)));
        if window.len() >= 4096 {
            window.pop_front().unwrap().wait().unwrap();
        }
    }
    for p in window {
        p.wait().unwrap();
    }
    e.close().unwrap();
}

/// One run of the binary with `args` (after `--data-dir dir`, when given): its whole
/// process time, whether it was stopped at `deadline` (SIGKILL; the time is then a lower
/// bound), and its standard output. Panics if it fails.
fn run_timed(bin: &Path, dir: Option<&Path>, args: &[&str], deadline: Duration) -> CliRun {
    let mut c = std::process::Command::new(bin);
    if let Some(d) = dir {
        c.arg("--data-dir").arg(d);
    }
    c.args(args)
        .env_remove("SESSION_ENGINE_DIR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = c.spawn().expect("start session-engine");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        let _ = done_tx.send(());
        v
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let stopped = done_rx.recv_timeout(deadline).is_err();
    if stopped {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for session-engine");
    let total = t.elapsed();
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    if !stopped {
        assert!(
            status.success(),
            "session-engine {args:?} failed ({status}): {stderr}"
        );
    }
    CliRun {
        total,
        stopped,
        stdout,
    }
}

struct CliRun {
    total: Duration,
    stopped: bool,
    stdout: Vec<u8>,
}

/// Checks that `show` printed the shown session with all its activities.
fn check_shown(out: &[u8]) {
    #[derive(Deserialize)]
    struct Shown {
        session_id: String,
        activity_log: Vec<serde::de::IgnoredAny>,
    }
    let s: Shown = serde_json::from_slice(out).expect("`show` prints the session as JSON");
    assert_eq!(s.session_id, SHOWN);
    assert_eq!(s.activity_log.len() as u64, SHOWN_ACTIVITIES);
}

pub fn w17(cfg: &Config) -> Section {
    let bin = cli::locate(cfg.cli.as_deref());
    let sizes = [cfg.n(10_000, 1_000), cfg.n(1_000_000, 100_000)];
    let reps = cfg.reps.max(3);
    let root = &cfg.dir;
    let mut sec = Section::new(
        "W17",
        format!(
            "`session-engine show` of one session ({SHOWN_ACTIVITIES} activities) on a data \
             directory of {} and of {} activities (1,000 other sessions, a snapshot near the \
             end of the log): whole process time ({reps} runs each after one untimed run, \
             page cache warm)",
            group(sizes[0] as f64),
            group(sizes[1] as f64)
        ),
    );
    // What every command pays whatever the directory: start the process and exit.
    let mut floor = Vec::new();
    for _ in 0..reps {
        let r = run_timed(&bin, None, &["--version"], cfg.deadline);
        floor.push(r.total.as_secs_f64() * 1e3);
    }
    // Per size: the median process time, whether a run was stopped, in-process open time.
    let mut med = Vec::new();
    let mut stopped = false;
    for &n in &sizes {
        let d = fresh_dir(root, "w17");
        eprintln!("W17: building a data directory of {n} activities");
        build_show_dir(&d, n, (n / 10).min(1_000));
        let r = run_timed(&bin, Some(&d), &["show", SHOWN], cfg.deadline);
        if !r.stopped {
            check_shown(&r.stdout);
        }
        let mut ts = Vec::new();
        let mut stopped_here = r.stopped;
        for _ in 0..reps {
            let r = run_timed(&bin, Some(&d), &["show", SHOWN], cfg.deadline);
            if r.stopped {
                stopped_here = true;
            } else {
                check_shown(&r.stdout);
            }
            ts.push(r.total.as_secs_f64() * 1e3);
        }
        // The open `show` does (read-only), in this process.
        let mut opens = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let e = Engine::open_read_only(&d, engine_options(Durability::Always)).unwrap();
            opens.push(t.elapsed().as_secs_f64() * 1e3);
            e.close().unwrap();
        }
        let ms = median(&mut ts);
        let open_ms = median(&mut opens);
        let base = *med.first().unwrap_or(&ms);
        sec.row(
            format!("`show`, directory of {} activities", group(n as f64)),
            ms,
            Unit::Ms,
            (!med.is_empty()).then(|| base / ms),
        );
        sec.note(format!(
            "in-process Engine::open_read_only of the same directory: {open_ms:.2} ms{}",
            if stopped_here {
                format!("; a run was stopped at {} s", cfg.deadline.as_secs())
            } else {
                String::new()
            }
        ));
        // A stopped run at the large size makes the ratio a lower bound (see the check).
        stopped = stopped_here;
        med.push(ms);
        remove(&d);
    }
    sec.row_plain(
        "`session-engine --version`: process start and exit",
        median(&mut floor),
        Unit::Ms,
    );
    sec.check_bounded(
        format!(
            "W17 show at {} ÷ at {} activities (whole process)",
            group(sizes[1] as f64),
            group(sizes[0] as f64)
        ),
        med[1] / med[0],
        W17_TARGET,
        false,
        stopped,
    );
    sec
}
