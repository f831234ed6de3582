//! The events every system writes: session activities of about 200 bytes, built the same
//! way for the engine (as commands), for the raw loops (as the engine's own frame bytes)
//! and for the peers (as rows, keys and values).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use session_engine::wal::FrameBuf;
use session_engine::{
    Command, Durability, Engine, Event, EventBody, FileStorage, JsonText, Lsn, NewSession, Options,
    SessionId, SystemClock, Timestamp,
};

/// The id of session number `n`.
pub fn session_id(n: u64) -> SessionId {
    SessionId::new(&format!("bench-session-{n:08}")).expect("a valid session id")
}

/// The JSON details of activity `i`: about 150 bytes, varying with `i` like real tool
/// calls do, so no system can win by compressing identical rows.
pub fn details_text(i: u64) -> String {
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

/// The JSON details of activity `i` padded to about `bytes` bytes (at least
/// [`details_text`]'s): its fields plus an `output` string of hex digits that varies with
/// `i`, like a tool's captured output.
pub fn details_sized(i: u64, bytes: usize) -> String {
    let mut s = details_text(i);
    s.pop();
    s.push_str(",\"output\":\"");
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    while s.len() + 2 < bytes {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        s.push_str(&format!("{z:016x}"));
    }
    s.push_str("\"}");
    s
}

/// The action name of activity `i`.
pub fn action(i: u64) -> &'static str {
    ["tool_use", "user_input", "api_call", "file_edit"][(i % 4) as usize]
}

/// The engine command for activity `i` of `session`.
pub fn activity(session: &SessionId, i: u64) -> Command {
    Command::RecordActivity {
        session: session.clone(),
        action: action(i).to_owned(),
        details: Some(JsonText::parse(&details_text(i)).expect("valid JSON")),
    }
}

/// The engine command for activity `i` of `session` with details of about `bytes` bytes
/// ([`details_sized`]).
pub fn activity_sized(session: &SessionId, i: u64, bytes: usize) -> Command {
    Command::RecordActivity {
        session: session.clone(),
        action: action(i).to_owned(),
        details: Some(JsonText::parse(&details_sized(i, bytes)).expect("valid JSON")),
    }
}

/// The command that creates `session`, without a timeout (benchmarks can run long).
pub fn create(session: &SessionId) -> Command {
    Command::CreateSession(Box::new(NewSession {
        id: Some(session.clone()),
        timeout_secs: 0,
        ..NewSession::default()
    }))
}

/// The event the engine writes for activity `i`.
pub fn event(session: &SessionId, i: u64) -> Event {
    Event {
        at: Timestamp(1_762_597_800_000_000 + i as i64),
        body: EventBody::ActivityRecorded {
            session: session.clone(),
            action: action(i).into(),
            details: Some(JsonText::parse(&details_text(i)).expect("valid JSON")),
        },
    }
}

/// The payload bytes (the engine's encoding) of activity `i`.
pub fn payload(session: &SessionId, i: u64) -> Vec<u8> {
    session_engine::codec::event_to_vec(&event(session, i)).expect("encodable")
}

/// The whole frame (header and payload) the engine writes for activity `i` at `lsn`: the
/// bytes the raw loops write.
pub fn frame(session: &SessionId, i: u64, lsn: u64) -> Vec<u8> {
    let mut b = FrameBuf::new();
    let buf = b.begin(Lsn(lsn));
    session_engine::codec::encode_event(&event(session, i), buf).expect("encodable");
    b.finish().expect("small frame");
    b.bytes().to_vec()
}

/// Engine options for a benchmark: real files, the system clock, no watchdog and no
/// automatic snapshots (their cost is measured on its own).
pub fn engine_options(durability: Durability) -> Options {
    Options {
        durability,
        snapshot_every: 0,
        watchdog_interval: None,
        storage: Arc::new(FileStorage::new()),
        clock: Arc::new(SystemClock),
        ..Options::default()
    }
}

/// Opens an engine in `dir` and creates `sessions` sessions in it.
pub fn engine_with_sessions(dir: &Path, durability: Durability, sessions: u64) -> Engine {
    let engine = Engine::open(dir, engine_options(durability)).expect("open engine");
    let pending: Vec<_> = (0..sessions)
        .map(|n| engine.submit(create(&session_id(n))))
        .collect();
    for p in pending {
        p.wait().expect("create session");
    }
    engine
}

/// Fills an engine, fast (buffered and pipelined), with `per_session` activities in each of
/// `sessions` sessions, interleaved, then syncs. Returns the engine.
pub fn fill(engine: &Engine, sessions: u64, per_session: u64) {
    fill_with(engine, sessions, per_session, activity);
}

/// [`fill`] with the command of activity `i` of a session made by `make`.
pub fn fill_with(
    engine: &Engine,
    sessions: u64,
    per_session: u64,
    make: impl Fn(&SessionId, u64) -> Command,
) {
    let mut window = std::collections::VecDeque::new();
    for i in 0..per_session {
        for s in 0..sessions {
            window.push_back(engine.submit(make(&session_id(s), i * sessions + s)));
            if window.len() >= 4096 {
                window.pop_front().expect("non-empty").wait().expect("fill");
            }
        }
    }
    for p in window {
        p.wait().expect("fill");
    }
    engine.sync().expect("sync");
}

/// A fresh, empty directory `name` under `root`.
pub fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    // Unique names: a directory passed to `remove` stays until the run ends.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = root.join(format!("{name}-{n}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create benchmark directory");
    d
}

/// Scratch directories to delete when the run ends.
static TRASH: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Marks a benchmark directory for deletion at the end of the run ([`empty_trash`]).
///
/// Deleting hundreds of MiB in the middle of a run makes the next workload's fsyncs slow:
/// the file system discards the freed blocks (`discard` mount option) and journals the
/// frees while the next workload is being timed.
pub fn remove(dir: &Path) {
    TRASH
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_path_buf());
}

/// Deletes every directory passed to [`remove`].
pub fn empty_trash() {
    for d in TRASH.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Lets the disk settle before a timed workload: writes back everything dirty, then waits
/// a moment, so one workload's buffered writes are not flushed during the next one.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::sync()
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
}

/// The median of `xs` (not empty).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Events per second for `n` events in `d`.
pub fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}
