//! The `session-engine` binary as a user runs it: `apply` fed a file of JSON lines (the
//! protocol of `session_engine::protocol`), or kept running as a child that answers one
//! line at a time. Only the binary's public interface is used (its flags, the protocol,
//! its exit status, and the projection files it leaves, in seed 001's documented format),
//! so these workloads keep measuring the product whatever its internals become.
//!
//! Which binary: `--cli PATH`, else the environment variable `SESSION_ENGINE_BIN`, else
//! `session-engine` in the directory of the running `compare` (where
//! `cargo build --release --bin session-engine` puts it when both share a target
//! directory).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::workload::{action, details_text};

/// The environment variable naming the binary.
pub const BIN_ENV: &str = "SESSION_ENGINE_BIN";

/// Finds the binary (see the module documentation). Panics with what to do when there is
/// none: a benchmark that silently skipped its workloads would be worse.
pub fn locate(flag: Option<&Path>) -> PathBuf {
    let from_env = std::env::var_os(BIN_ENV).map(PathBuf::from);
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("session-engine")));
    let (path, how) = match (flag, from_env) {
        (Some(p), _) => (p.to_path_buf(), "--cli"),
        (None, Some(p)) => (p, BIN_ENV),
        (None, None) => (
            sibling.unwrap_or_else(|| PathBuf::from("session-engine")),
            "next to compare",
        ),
    };
    assert!(
        path.is_file(),
        "no session-engine binary at {} ({how}): build it with \
         `cargo build --release --bin session-engine` (in the same target directory as \
         compare), or name it with --cli PATH or {BIN_ENV}",
        path.display()
    );
    path
}

/// A line describing the binary for the run's header, with a warning when it looks older
/// than the library's sources it was built from (`cargo run -p session-engine-compare`
/// rebuilds the library for `compare`, not the binary).
pub fn describe(bin: &Path) -> String {
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let newest_src = newest_mtime(&src);
    let stale = match (built, newest_src) {
        (Some(b), Some(s)) => s > b,
        _ => false,
    };
    format!(
        "{} ({version}){}",
        bin.display(),
        if stale {
            "; **warning: older than the sources in src/, rebuild it with \
             `cargo build --release --bin session-engine`**"
        } else {
            ""
        }
    )
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(m) = e.metadata() else { continue };
        let t = if m.is_dir() {
            newest_mtime(&e.path())
        } else {
            m.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The protocol line that creates session `id` (no timeout: a run can be long).
pub fn create_line(id: &str) -> String {
    format!("{{\"op\":\"create\",\"id\":\"{id}\",\"timeout\":0}}\n")
}

/// The protocol line of activity `i` in session `id`: the same action and details as
/// every other system of the program writes (`workload::details_text`).
pub fn activity_line(id: &str, i: u64) -> String {
    format!(
        "{{\"op\":\"activity\",\"id\":\"{id}\",\"action\":\"{}\",\"details\":{}}}\n",
        action(i),
        details_text(i)
    )
}

/// `--durability` of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Always,
    None,
}

impl Durability {
    fn arg(self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::None => "none",
        }
    }
}

fn command(bin: &Path, data_dir: &Path, durability: Durability) -> Command {
    let mut c = Command::new(bin);
    c.arg("--data-dir")
        .arg(data_dir)
        .arg("--durability")
        .arg(durability.arg())
        .env_remove("SESSION_ENGINE_DIR")
        .env_remove("RUST_LOG");
    c
}

/// What one `apply` run did.
pub struct ApplyRun {
    /// From just before the process was started until it exited (or was stopped): with
    /// `apply`, the projection files are complete when it exits.
    pub total: Duration,
    /// From the start until the first answer line arrived (the process started, opened
    /// the data directory and committed the first command).
    pub first_answer: Option<Duration>,
    /// From the start until the last answer line arrived: every command durable (in the
    /// chosen mode) and acknowledged.
    pub last_answer: Option<Duration>,
    /// Answer lines that said `"ok":true`.
    pub ok: u64,
    /// Stopped at the deadline, so `total` is a lower bound.
    pub stopped: bool,
}

impl ApplyRun {
    /// Commands acknowledged per second, from the first answer to the last: the rate a
    /// caller sees once the process is up (start-up and open are not counted, as a
    /// peer's open is not).
    pub fn ack_rate(&self) -> f64 {
        match (self.first_answer, self.last_answer) {
            (Some(a), Some(b)) if self.ok > 1 && b > a => {
                (self.ok - 1) as f64 / (b - a).as_secs_f64()
            }
            _ => f64::NAN,
        }
    }
}

/// Runs `session-engine --data-dir DIR --durability D apply` with `input` (a file of JSON
/// lines) as its standard input, reading its answers through a pipe as they come. Stops
/// it (SIGKILL) if it has not exited after `deadline`. Panics if it fails or refuses a
/// line: every line the workloads send is valid.
pub fn apply_file(
    bin: &Path,
    data_dir: &Path,
    durability: Durability,
    input: &Path,
    deadline: Duration,
) -> ApplyRun {
    let stdin = std::fs::File::open(input).expect("open the input file");
    let t = Instant::now();
    let mut child = command(bin, data_dir, durability)
        .arg("apply")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start session-engine apply");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    // The answers are read as they come; their end (the pipe closing) is the process
    // exiting, or stopping its output just before it does.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let answers = std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 16, stdout);
        let mut line = String::new();
        let (mut n, mut ok, mut first, mut last, mut first_bad) = (0u64, 0u64, None, None, None);
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            last = Some(t.elapsed());
            first = first.or(last);
            n += 1;
            if line.starts_with("{\"ok\":true") {
                ok += 1;
            } else if first_bad.is_none() {
                first_bad = Some(line.clone());
            }
            line.clear();
        }
        let _ = done_tx.send(());
        (n, ok, first, last, first_bad)
    });
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        s
    });
    let stopped = done_rx.recv_timeout(deadline).is_err();
    if stopped {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for session-engine apply");
    let total = t.elapsed();
    let (answers, ok, first_answer, last_answer, first_bad) =
        answers.join().expect("answer reader");
    let stderr = errors.join().expect("stderr reader");
    if !stopped {
        assert!(
            status.success(),
            "session-engine apply failed ({status}): {stderr}"
        );
        assert_eq!(
            answers, ok,
            "session-engine apply refused a line: {first_bad:?}; stderr: {stderr}"
        );
    }
    ApplyRun {
        total,
        first_answer,
        last_answer,
        ok,
        stopped,
    }
}

/// A running `session-engine apply` that is sent one line at a time, each answered before
/// the next is sent: a script driving the engine through a pipe.
pub struct ApplyChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl ApplyChild {
    /// Starts `apply` on `data_dir`.
    pub fn start(bin: &Path, data_dir: &Path, durability: Durability) -> ApplyChild {
        let mut child = command(bin, data_dir, durability)
            .arg("apply")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start session-engine apply");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        ApplyChild {
            child,
            stdin,
            stdout,
            line: String::new(),
        }
    }

    /// Sends `line` (ending in a newline) and waits for its answer; panics unless it is
    /// `"ok":true`.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("apply running");
        stdin.write_all(line.as_bytes()).expect("write to apply");
        self.line.clear();
        let n = self.stdout.read_line(&mut self.line).expect("read answer");
        assert!(
            n > 0 && self.line.starts_with("{\"ok\":true"),
            "apply answered {:?} to {line:?}",
            self.line
        );
    }

    /// Closes its input and waits for it to exit (projection files complete).
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let s = self.child.wait().expect("wait for apply");
        assert!(s.success(), "session-engine apply failed: {s}");
    }
}

impl Drop for ApplyChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The number of activities in session `id`'s projection file (`sessions/session_<id>.json`
/// under `data_dir`, seed 001's format), by parsing it. `None` when it is missing.
pub fn projected_activities(data_dir: &Path, id: &str) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct SessionFile {
        session_id: String,
        activity_log: Vec<serde::de::IgnoredAny>,
    }
    let bytes = std::fs::read(data_dir.join("sessions").join(format!("session_{id}.json"))).ok()?;
    let f: SessionFile = serde_json::from_slice(&bytes).expect("a session file that parses");
    assert_eq!(f.session_id, id);
    Some(f.activity_log.len())
}
