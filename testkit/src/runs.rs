//! Helpers of the supervisor's tests (issue 17): processes as `/proc` shows them, and a
//! data directory with session `s1` for the library's tests (the command line's tests
//! make theirs with their binary).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_engine::run::{Run, RunId};
use session_engine::{
    ExecRequest, ManagerOptions, ManualClock, NewSession, SessionId, SessionManager,
};

/// State (`/proc/<pid>/stat` field 3) and process group (field 5) of `pid`, if it exists.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (the command) is in parentheses and may hold anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(2)?.parse().ok()?))
}

/// Live (not zombie) processes of group `pgid`, from `/proc`.
pub fn group_left(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_state(*pid).is_some_and(|(s, g)| g == pgid && s != 'Z'))
        .collect()
}

/// Whether process `pid` is alive (not a zombie).
pub fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(s, _)| s != 'Z')
}

/// Waits up to 20 s for `pid` to be gone (its new parent may take a moment to reap it).
pub fn gone(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_secs(20);
    while alive(pid) {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGKILL to `pid` (a test's own leftover).
pub fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status();
}

/// Waits (up to 30 s) for a script to have written its pid and a newline to `path`.
pub fn read_pid(path: &Path) -> u32 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s.trim().parse().unwrap();
        }
        assert!(Instant::now() < until, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the open descriptors of `pid` name under `dir` (canonical paths).
pub fn fds_under(pid: u32, dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|p| p.starts_with(&dir))
                .collect()
        })
        .unwrap_or_default()
}

/// Opens a manager on `dir` (the default options; `clock`, if given, as its clock).
pub fn open_manager(dir: &Path, clock: Option<&ManualClock>) -> SessionManager {
    let mut o = ManagerOptions::default();
    if let Some(c) = clock {
        o.engine.clock = Arc::new(c.clone());
    }
    SessionManager::open(dir, o).unwrap()
}

/// A new data directory with session `s1`, and its manager.
pub fn setup_manager(clock: Option<&ManualClock>) -> (tempfile::TempDir, SessionManager) {
    let dir = tempfile::tempdir().unwrap();
    let m = open_manager(dir.path(), clock);
    m.create_session(NewSession {
        id: Some(SessionId::new("s1").unwrap()),
        ..NewSession::default()
    })
    .unwrap();
    (dir, m)
}

/// A run of `sh -c script` for session `s1`.
pub fn sh(script: &str) -> ExecRequest {
    ExecRequest::new("s1", "sh", &["-c", script])
}

/// The process group of run `id`'s last attempt.
pub fn pgid_of(m: &SessionManager, id: RunId) -> u32 {
    m.run(id).unwrap().process.as_ref().unwrap().pgid
}

/// Waits (at most 30 s) until run `id` satisfies `f`.
pub fn until(m: &SessionManager, id: RunId, f: impl Fn(&Run) -> bool) {
    let t = Instant::now();
    while !f(&m.run(id).unwrap()) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "run {id}: {:?}",
            m.run(id).unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the command line `bin` (a test's `env!("CARGO_BIN_EXE_session-engine")`) on
/// data directory `dir` with `args`, to its end.
pub fn cli(bin: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// A new data directory (`<tmp>/data`) with session `s1`, made by the command line `bin`.
pub fn cli_setup(bin: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let o = cli(bin, &dir, &["create", "--id", "s1"]);
    assert!(o.status.success(), "{o:?}");
    (tmp, dir)
}
