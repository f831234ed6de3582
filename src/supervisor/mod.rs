//! The process supervisor (issue 17): runs a program for a session, every step an event.
//!
//! One thread supervises one run: it spawns each attempt in its own process group (the
//! `process-wrap` crate's `ProcessGroup`, with `Rlimits` setting RLIMIT_AS and RLIMIT_CPU
//! before `exec`), records `started`, captures stdout and stderr into `runs/<id>.log` and
//! output events (head and tail above the cap), enforces the wall-clock timeout and
//! cancel requests (SIGTERM to the group, the grace period, SIGKILL), and records
//! `exited` only once the leader is reaped (`wait4`, with its resource use) and no live
//! process of the group is left (a process still in the group after the leader exits is
//! terminated the same way). `reconcile` runs at every writable open of a
//! `SessionManager`: a run no supervisor finished is killed if its process is still the
//! one recorded (same pid, start time and boot id) and recorded as interrupted, or as
//! recovering when it is safe to repeat (`SessionManager::resume_runs` then supervises it
//! from its next attempt).

mod attempt;
mod capture;
mod cgroup;
pub(crate) mod os;
mod recovery;
mod spawn;
mod stop;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::command::Command;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::EventBody;
use crate::run::{ExitKind, Run, RunId, RunSpec, Stream, Usage};

use attempt::run_attempt;
pub(crate) use recovery::{cancel_requested, cgroup_choices, reconcile};
use spawn::SMALL_STACK;
pub(crate) use spawn::spawn_thread;

/// Receives a run's output as it comes (both streams, every byte, the cap aside).
pub type OutputSink = Arc<dyn Fn(Stream, &[u8]) + Send + Sync>;

/// How often the supervisor looks at its cancel flag, deadlines and the process group.
pub(super) const TICK: Duration = Duration::from_millis(20);

/// The folder of run log files, under the data directory.
pub const RUNS_DIR: &str = "runs";

/// Where run `id`'s log file is.
pub fn log_path(root: &Path, id: RunId) -> PathBuf {
    root.join(RUNS_DIR).join(format!("{id}.log"))
}

/// Where a request to cancel run `id` from another process is left: the supervisor
/// that runs it looks for this file and removes it.
pub fn cancel_path(root: &Path, id: RunId) -> PathBuf {
    root.join(RUNS_DIR).join(format!("{id}.cancel"))
}

/// Asks whichever process supervises run `id` in data directory `root` to cancel it:
/// creates `runs/<id>.cancel` (new, 0600, never through a link; `runs/` too, 0700, when
/// a pending run's supervisor has not made it yet). The caller checks the run is
/// unfinished first; a request already there is not an error.
pub fn request_cancel(root: &Path, id: RunId) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = cancel_path(root, id);
    ensure_runs_dir(root).map_err(|e| Error::io("request a cancel", root.join(RUNS_DIR), e))?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("request a cancel", path, e)),
    }
}

/// Whether a cancel of `id` was asked for, by flag or by file.
pub(super) fn cancel_asked(root: &Path, job: &Job) -> bool {
    job.cancel.load(Ordering::SeqCst)
        || std::fs::symlink_metadata(cancel_path(root, job.id)).is_ok_and(|m| m.is_file())
}

/// Removes a cancel request the supervisor has acted on (a regular file only: what
/// `request_cancel` creates).
pub(crate) fn clear_cancel(root: &Path, id: RunId) {
    let path = cancel_path(root, id);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Finds `program` as `exec` would: a path with a `/` as it is, a name in `PATH`.
/// Refuses what does not exist or is not an executable file.
pub(crate) fn resolve_program(program: &str, cwd: Option<&Path>) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = match cwd {
            Some(dir) if !program.starts_with('/') => dir.join(program),
            _ => PathBuf::from(program),
        };
        if !p.exists() {
            return Err(Error::not_found("program", program));
        }
        if !executable(&p) {
            return Err(Error::invalid(
                "program",
                format!("{program} is not an executable file"),
            ));
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| Error::not_found("program", program))
}

/// Creates `runs/` (0700) if it is not there; refuses one that is not a folder (a link
/// or a file). Two processes creating it at once both succeed.
pub(super) fn ensure_runs_dir(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = root.join(RUNS_DIR);
    let not_a_folder = || {
        std::io::Error::other(format!(
            "{} is not a folder (a link or a file)",
            dir.display()
        ))
    };
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(not_a_folder()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match std::fs::symlink_metadata(&dir) {
                        Ok(m) if m.is_dir() => Ok(()),
                        _ => Err(not_a_folder()),
                    }
                }
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

/// Creates `runs/` (0700) if needed and the run's log file (0600, new, never through a
/// symbolic link).
pub(super) fn create_log(root: &Path, id: RunId) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    ensure_runs_dir(root)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(log_path(root, id))
}

/// Opens the log file of a run resumed after a reopen to append to it (created, 0600,
/// when its earlier attempts left none; never through a symbolic link, a regular file
/// only).
pub(super) fn append_log(root: &Path, id: RunId) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    ensure_runs_dir(root)?;
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(log_path(root, id))?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("the run log is not a regular file"));
    }
    Ok(f)
}

/// What one run's supervisor thread is given.
pub(crate) struct Job {
    pub id: RunId,
    pub spec: RunSpec,
    pub cancel: Arc<AtomicBool>,
    pub sink: Option<OutputSink>,
    /// Called with the attempt number before each attempt's process is spawned (so a
    /// caller that reads the output, as `exec_claude` does, keeps only the last one's).
    pub on_attempt: Option<Arc<dyn Fn(u32) + Send + Sync>>,
    /// Whether each attempt gets a cgroup v2 of its own where one can be made.
    pub cgroup: bool,
    /// The first attempt this supervisor starts: 1 for a new run; the one after those
    /// recorded for a run a reopen left recovering.
    pub first_attempt: u32,
    /// Whether the run is resumed after a reopen left it recovering (its log file, when
    /// its earlier attempts left one, is appended to).
    pub resumed: bool,
}

pub(super) enum Msg {
    Out(Stream, Vec<u8>),
    Eof,
    Exit(std::io::Result<(ExitKind, Usage)>),
}

pub(super) fn record(engine: &Engine, body: EventBody) -> Result<()> {
    engine.execute(Command::RecordRunStep(Box::new(body)))?;
    Ok(())
}

pub(super) fn jitter(n: u64) -> u64 {
    // A little randomness from the clock and the thread, enough to spread retries.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    if n == 0 { 0 } else { t % n }
}

/// Supervises `job` to its end. Returns the run as last recorded.
pub(crate) fn supervise(engine: &Engine, job: Job) -> Result<Arc<Run>> {
    let root = engine.paths().root.clone();
    let first = job.first_attempt.max(1);
    let opened = if job.resumed {
        append_log(&root, job.id)
    } else {
        create_log(&root, job.id)
    };
    let mut log = match opened {
        Ok(f) => Some(f),
        Err(e) => {
            record(
                engine,
                EventBody::RunSpawnFailed {
                    run: job.id,
                    attempt: first,
                    error: format!("cannot create the run's log file: {e}"),
                    retry: false,
                },
            )?;
            None
        }
    };
    if let Some(log) = log.as_mut() {
        let retry = &job.spec.retry;
        let mut attempt = first;
        if job.resumed && log.metadata().is_ok_and(|m| m.len() > 0) {
            // After what the earlier attempts wrote, as between retries.
            use std::io::Write;
            let _ = writeln!(
                log,
                "\n[session-engine: attempt {attempt}, resumed after a restart]"
            );
        }
        loop {
            let more = attempt <= retry.max_retries;
            if let Some(f) = &job.on_attempt {
                f(attempt);
            }
            let again = run_attempt(engine, &job, attempt, more, log)?;
            if !again {
                break;
            }
            let delay = retry
                .retry_delay_ms
                .saturating_mul(1 << (attempt - 1).min(16));
            let delay = delay + jitter(delay / 4 + 1);
            let until = Instant::now() + Duration::from_millis(delay);
            while Instant::now() < until && !cancel_asked(&root, &job) {
                std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
            }
            if cancel_asked(&root, &job) {
                record(
                    engine,
                    EventBody::RunInterrupted {
                        run: job.id,
                        reason: format!("cancelled before attempt {}", attempt + 1),
                        cancelled: true,
                    },
                )?;
                break;
            }
            attempt += 1;
            use std::io::Write;
            let _ = writeln!(log, "\n[session-engine: attempt {attempt}]");
        }
    }
    clear_cancel(&root, job.id);
    engine
        .state()
        .run(job.id)
        .cloned()
        .ok_or_else(|| Error::not_found("run", job.id))
}

#[cfg(test)]
mod tests;
