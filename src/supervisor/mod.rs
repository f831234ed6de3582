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
//! one recorded (same pid, start time and boot id) and recorded as interrupted.

mod capture;
mod cgroup;
pub(crate) mod os;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use process_wrap::std::{ChildWrapper, CommandWrap, ProcessGroup};

use crate::command::Command;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::EventBody;
use crate::run::{EndedBy, ExitKind, Exited, Run, RunId, RunSpec, Started, Stream, Usage};

use capture::Capture;

/// Receives a run's output as it comes (both streams, every byte, the cap aside).
pub type OutputSink = Arc<dyn Fn(Stream, &[u8]) + Send + Sync>;

/// How often the supervisor looks at its cancel flag, deadlines and the process group.
const TICK: Duration = Duration::from_millis(20);

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
fn cancel_asked(root: &Path, job: &Job) -> bool {
    job.cancel.load(Ordering::SeqCst)
        || std::fs::symlink_metadata(cancel_path(root, job.id)).is_ok_and(|m| m.is_file())
}

/// Removes a cancel request the supervisor has acted on (a regular file only: what
/// `request_cancel` creates).
fn clear_cancel(root: &Path, id: RunId) {
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
fn ensure_runs_dir(root: &Path) -> std::io::Result<()> {
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
fn create_log(root: &Path, id: RunId) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    ensure_runs_dir(root)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(log_path(root, id))
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
}

enum Msg {
    Out(Stream, Vec<u8>),
    Eof,
    Exit(std::io::Result<(ExitKind, Usage)>),
}

fn record(engine: &Engine, body: EventBody) -> Result<()> {
    engine.execute(Command::RecordRunStep(Box::new(body)))?;
    Ok(())
}

fn jitter(n: u64) -> u64 {
    // A little randomness from the clock and the thread, enough to spread retries.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    if n == 0 { 0 } else { t % n }
}

/// Supervises `job` to its end. Returns the run as last recorded.
pub(crate) fn supervise(engine: &Engine, job: Job) -> Result<Arc<Run>> {
    let root = engine.paths().root.clone();
    let mut log = match create_log(&root, job.id) {
        Ok(f) => Some(f),
        Err(e) => {
            record(
                engine,
                EventBody::RunSpawnFailed {
                    run: job.id,
                    attempt: 1,
                    error: format!("cannot create the run's log file: {e}"),
                    retry: false,
                },
            )?;
            None
        }
    };
    if let Some(log) = log.as_mut() {
        let retry = &job.spec.retry;
        let mut attempt = 1;
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

/// Whether a failure of `fork`, `pipe`, `clone` or `exec` is for want of a resource that
/// other processes or threads give back when they end (EAGAIN: the process or thread
/// limit; ENOMEM; EMFILE, ENFILE: the descriptor limits; EINTR), so trying again shortly
/// may succeed, as a shell retries a `fork`.
pub(crate) fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::EINTR)
    )
}

/// The pauses between tries of an operation that failed for want of a resource:
/// about 2 s in all.
pub(crate) const RESOURCE_RETRY_MS: [u64; 10] = [5, 10, 20, 40, 80, 160, 320, 500, 500, 500];

/// Runs `op` until it succeeds, fails otherwise than [`transient`]ly, or has failed
/// transiently [`RESOURCE_RETRY_MS`]`.len() + 1` times, calling `pause` between tries.
pub(crate) fn retry_transient<T>(
    mut op: impl FnMut() -> std::io::Result<T>,
    mut pause: impl FnMut(Duration),
) -> std::io::Result<T> {
    let mut delays = RESOURCE_RETRY_MS.iter();
    loop {
        match op() {
            Err(e) if transient(&e) => match delays.next() {
                Some(ms) => pause(Duration::from_millis(*ms)),
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Starts a thread running `f`, trying again (see [`retry_transient`]) while the thread
/// limit refuses it. `stack` is its stack size (`None`: the default).
pub(crate) fn spawn_thread<T: Send + 'static>(
    name: String,
    stack: Option<usize>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<Option<T>>> {
    use std::sync::{Mutex, PoisonError};
    // A refused spawn drops the closure it was given: keep `f` outside it.
    let slot = Arc::new(Mutex::new(Some(f)));
    retry_transient(
        || {
            let slot = Arc::clone(&slot);
            let mut b = std::thread::Builder::new().name(name.clone());
            if let Some(size) = stack {
                b = b.stack_size(size);
            }
            b.spawn(move || {
                let f = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                f.map(|f| f())
            })
        },
        std::thread::sleep,
    )
}

/// Stack of the reader and waiter threads: they hold nothing big on it.
const SMALL_STACK: usize = 128 * 1024;

fn spawn(spec: &RunSpec, cg: Option<&cgroup::Cgroup>) -> std::io::Result<Box<dyn ChildWrapper>> {
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut w = CommandWrap::from(cmd);
    w.wrap(ProcessGroup::leader()).wrap(os::Rlimits {
        // memory.max holds the limit when the cgroup has it.
        memory: spec
            .limits
            .max_memory_bytes
            .filter(|_| !cg.is_some_and(|c| c.memory_max)),
        cpu: spec.limits.max_cpu_secs,
    });
    if let Some(c) = cg {
        let procs = std::ffi::CString::new(c.procs_path().into_os_string().into_encoded_bytes())
            .map_err(std::io::Error::other)?;
        w.wrap(os::JoinCgroup { procs });
    }
    w.spawn()
}

fn reader(
    id: RunId,
    mut r: impl Read + Send + 'static,
    stream: Stream,
    tx: Sender<Msg>,
) -> std::io::Result<()> {
    spawn_thread(format!("run-{id}-out"), Some(SMALL_STACK), move || {
        let mut buf = vec![0u8; crate::run::MAX_CHUNK];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(Msg::Out(stream, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(Msg::Eof);
    })
    .map(drop)
}

/// Terminates group `pgid` (and the attempt's cgroup, if it has one): SIGTERM now,
/// SIGKILL (`cgroup.kill`) once `grace` has passed.
struct Stopper {
    pgid: u32,
    grace: Duration,
    term_at: Option<Instant>,
    killed: bool,
    cgroup: Option<cgroup::Cgroup>,
}

impl Stopper {
    fn new(pgid: u32, grace: Duration, cgroup: Option<cgroup::Cgroup>) -> Stopper {
        Stopper {
            pgid,
            grace,
            term_at: None,
            killed: false,
            cgroup,
        }
    }

    fn stop(&mut self) {
        if self.term_at.is_none() {
            os::signal_group(self.pgid, libc::SIGTERM);
            if let Some(c) = &self.cgroup {
                c.signal(libc::SIGTERM);
                c.signal(libc::SIGCONT);
            }
            // A stopped process acts on SIGTERM only once continued.
            os::signal_group(self.pgid, libc::SIGCONT);
            self.term_at = Some(Instant::now());
        }
    }

    fn tick(&mut self) {
        if let Some(t) = self.term_at
            && !self.killed
            && t.elapsed() >= self.grace
        {
            self.kill_now();
        }
    }

    fn kill_now(&mut self) {
        os::signal_group(self.pgid, libc::SIGKILL);
        if let Some(c) = &self.cgroup {
            c.kill();
        }
        self.killed = true;
    }

    /// Whether no live process of the group, nor any in the cgroup, is left.
    fn empty(&self) -> bool {
        os::group_members(self.pgid).is_empty()
            && self.cgroup.as_ref().is_none_or(|c| c.members().is_empty())
    }

    /// Removes the attempt's cgroup (once its processes are gone).
    fn release(&mut self) {
        if let Some(c) = self.cgroup.take() {
            if !c.members().is_empty() {
                c.kill();
            }
            c.remove();
        }
    }
}

/// The attempt's cgroup, when asked for and one can be made; else why not.
fn attempt_cgroup(
    engine: &Engine,
    job: &Job,
    attempt: u32,
) -> (Option<cgroup::Cgroup>, Option<String>) {
    if !job.cgroup {
        return (None, None);
    }
    match cgroup::create(
        &engine.paths().root,
        job.id.0,
        attempt,
        job.spec.limits.max_memory_bytes,
    ) {
        Ok(c) => (Some(c), None),
        Err(why) => (None, Some(why)),
    }
}

/// Runs one attempt; true when another attempt should follow.
fn run_attempt(
    engine: &Engine,
    job: &Job,
    attempt: u32,
    may_retry: bool,
    log: &mut File,
) -> Result<bool> {
    let spec = &job.spec;
    let begun = Instant::now();
    let (mut cg, mut fallback) = attempt_cgroup(engine, job, attempt);
    let mut spawned = retry_transient(|| spawn(spec, cg.as_ref()), std::thread::sleep);
    if let Err(e) = &spawned
        && let Some(c) = cg.take()
    {
        // Perhaps the child could not join the cgroup: once more without it.
        c.remove();
        fallback = Some(format!(
            "the process could not be started in cgroup {} ({e})",
            c.dir.display()
        ));
        spawned = retry_transient(|| spawn(spec, None), std::thread::sleep);
    }
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            record(
                engine,
                EventBody::RunSpawnFailed {
                    run: job.id,
                    attempt,
                    error: e.to_string(),
                    retry: may_retry,
                },
            )?;
            return Ok(may_retry);
        }
    };
    let pid = child.id();
    let start_time = os::proc_stat(pid).map_or(0, |s| s.start_time);
    if job.cgroup {
        let memory_max = cg.as_ref().is_some_and(|c| c.memory_max);
        if fallback.is_none() && spec.limits.max_memory_bytes.is_some() && !memory_max {
            fallback = Some(
                "memory.max is not available in the run's cgroup (the memory controller is \
                 not enabled for it): RLIMIT_AS holds the memory limit"
                    .into(),
            );
        }
        let contained = record(
            engine,
            EventBody::RunContained {
                run: job.id,
                attempt,
                cgroup: cg.as_ref().map(|c| c.dir.display().to_string()),
                memory_max,
                fallback,
            },
        );
        if let Err(e) = contained {
            Stopper::new(pid, Duration::ZERO, cg).kill_now();
            return Err(e);
        }
    }
    // Bounded: a program that writes faster than its output is recorded waits on its
    // pipe, and the supervisor's memory stays bounded.
    let (tx, rx) = crossbeam_channel::bounded(64);
    let threads = start_threads(job.id, &mut *child, pid, tx);
    if let Err(e) = threads {
        // Not supervised, so not started: the attempt's process goes, then the failure
        // is recorded as the attempt's step.
        let mut stop = Stopper::new(pid, Duration::ZERO, cg);
        stop.kill_now();
        let _ = os::wait4(pid);
        let until = Instant::now() + Duration::from_secs(5);
        while !stop.empty() && Instant::now() < until {
            stop.kill_now();
            std::thread::sleep(TICK);
        }
        stop.release();
        record(
            engine,
            EventBody::RunSpawnFailed {
                run: job.id,
                attempt,
                error: format!("cannot start a thread to supervise it: {e}"),
                retry: may_retry,
            },
        )?;
        return Ok(may_retry);
    }
    let mut stop = Stopper::new(pid, Duration::from_millis(spec.limits.grace_ms()), cg);
    let started = record(
        engine,
        EventBody::RunStarted(Box::new(Started {
            run: job.id,
            attempt,
            pid,
            pgid: pid,
            start_time,
            boot_id: os::boot_id(),
        })),
    );
    if let Err(e) = started {
        stop.kill_now();
        return Err(e);
    }
    let watched = watch(engine, job, attempt, log, &rx, &mut stop, begun);
    if watched.is_err() {
        // Nothing more can be recorded: leave no process behind.
        stop.kill_now();
    }
    stop.release();
    match watched {
        Ok((exit, usage, ended_by, total, dropped)) => {
            let failed = ended_by.is_some() || exit != ExitKind::Code(0);
            let retry = may_retry
                && failed
                && !matches!(ended_by, Some(EndedBy::Cancel | EndedBy::Timeout));
            record(
                engine,
                EventBody::RunExited(Box::new(Exited {
                    run: job.id,
                    attempt,
                    exit,
                    ended_by,
                    duration_ms: begun.elapsed().as_millis() as u64,
                    usage,
                    output_bytes: total,
                    output_dropped: dropped,
                    retry,
                })),
            )?;
            drop(child);
            Ok(retry)
        }
        Err(e) => Err(e),
    }
}

/// Starts the two output readers, then the waiter (last, so that when one cannot be
/// started the caller is still the only one to reap `pid`).
fn start_threads(
    id: RunId,
    child: &mut dyn ChildWrapper,
    pid: u32,
    tx: Sender<Msg>,
) -> std::io::Result<()> {
    if let Some(o) = child.stdout().take() {
        reader(id, o, Stream::Stdout, tx.clone())?;
    }
    if let Some(e) = child.stderr().take() {
        reader(id, e, Stream::Stderr, tx.clone())?;
    }
    spawn_thread(format!("run-{id}-wait"), Some(SMALL_STACK), move || {
        let _ = tx.send(Msg::Exit(os::wait4(pid)));
    })
    .map(drop)
}

type Watched = (ExitKind, Usage, Option<EndedBy>, u64, u64);

fn watch(
    engine: &Engine,
    job: &Job,
    attempt: u32,
    log: &mut File,
    rx: &Receiver<Msg>,
    stop: &mut Stopper,
    begun: Instant,
) -> Result<Watched> {
    let spec = &job.spec;
    let io_err =
        |e: std::io::Error| Error::io("write a run's log", format!("{RUNS_DIR}/{}.log", job.id), e);
    let deadline = spec
        .limits
        .timeout_ms
        .map(|t| begun + Duration::from_millis(t));
    let mut capture = Capture::new(job.id, attempt, spec.limits.output_cap());
    let mut ended_by = None;
    let mut exit: Option<(ExitKind, Usage)> = None;
    let mut eofs = 0;
    let mut group_empty_at: Option<Instant> = None;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Msg::Out(stream, bytes)) => {
                if let Some(sink) = &job.sink {
                    sink(stream, &bytes);
                }
                capture.push(log, stream, &bytes).map_err(io_err)?;
            }
            Ok(Msg::Eof) => eofs += 1,
            Ok(Msg::Exit(r)) => {
                exit =
                    Some(r.map_err(|e| {
                        Error::io("wait for a run", format!("/proc/{}", stop.pgid), e)
                    })?)
            }
            Err(RecvTimeoutError::Timeout) => capture.flush(),
            Err(RecvTimeoutError::Disconnected) => {}
        }
        for body in capture.ready.drain(..) {
            record(engine, body)?;
        }
        if ended_by.is_none() {
            if cancel_asked(&engine.paths().root, job) {
                ended_by = Some(EndedBy::Cancel);
                stop.stop();
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                ended_by = Some(EndedBy::Timeout);
                stop.stop();
            }
        }
        stop.tick();
        if exit.is_some() {
            // The leader is reaped; what is left of its group goes the same way.
            if stop.empty() {
                let at = *group_empty_at.get_or_insert_with(Instant::now);
                // Output still in the pipes comes now; a process outside the group that
                // holds them open is not waited for long.
                if (eofs >= 2 || at.elapsed() > Duration::from_secs(1)) && rx.is_empty() {
                    break;
                }
            } else {
                stop.stop();
            }
        }
    }
    let (exit, usage) = exit.unwrap_or((ExitKind::Signal(libc::SIGKILL), Usage::default()));
    if ended_by.is_none() {
        // The group is reaped: the cgroup's counters are final.
        ended_by = limit_that_ended(exit, &spec.limits, stop.cgroup.as_ref());
    }
    let (total, dropped) = capture.finish(log).map_err(io_err)?;
    for body in capture.ready.drain(..) {
        record(engine, body)?;
    }
    Ok((exit, usage, ended_by, total, dropped))
}

/// The limit that ended an attempt the supervisor did not stop itself, once its group
/// is reaped: the cgroup's `memory.max` when the attempt failed and the OOM killer
/// killed a process of the cgroup (`memory.events` `oom_kill`; only a cgroup whose
/// `memory.max` holds the run's limit counts, an OOM kill by an outer limit is not the
/// run's); else RLIMIT_CPU when the run has a CPU limit and the leader died of SIGXCPU
/// or SIGKILL (the hard limit). RLIMIT_AS is never named: a refused allocation ends the
/// program as it chooses, which tells nothing certain.
fn limit_that_ended(
    exit: ExitKind,
    limits: &crate::run::Limits,
    cgroup: Option<&cgroup::Cgroup>,
) -> Option<EndedBy> {
    let failed = exit != ExitKind::Code(0);
    let oom_kills = cgroup
        .filter(|c| c.memory_max)
        .and_then(cgroup::Cgroup::oom_kills)
        .unwrap_or(0);
    if failed && oom_kills > 0 {
        Some(EndedBy::Memory)
    } else if limits.max_cpu_secs.is_some()
        && matches!(exit, ExitKind::Signal(s) if s == libc::SIGXCPU || s == libc::SIGKILL)
    {
        Some(EndedBy::Cpu)
    } else {
        None
    }
}

/// Finishes, at a writable open, every run no supervisor finished: a process still the
/// one recorded (same pid, start time and boot id) is killed with its group (SIGTERM,
/// the run's grace period, SIGKILL); then the run is recorded as interrupted. Returns
/// the runs reconciled.
pub(crate) fn reconcile(engine: &Engine) -> Result<Vec<RunId>> {
    let state = engine.state();
    let boot = os::boot_id();
    let mut done = Vec::new();
    for run in state.unfinished_runs() {
        let reason = match &run.process {
            Some(p) if run.status == crate::run::RunStatus::Running && p.boot_id == boot => {
                let leader = os::proc_stat(p.pid);
                let ours = leader.is_some_and(|s| s.start_time == p.start_time && s.state != 'Z');
                // Without its leader, the group's processes are the run's only if they
                // started after it (a group id is not reused while the group has members).
                let members: Vec<u32> = os::group_members(p.pgid)
                    .into_iter()
                    .filter(|(_, t)| *t >= p.start_time)
                    .map(|(pid, _)| pid)
                    .collect();
                let leader_foreign = leader.is_some() && !ours;
                if ours || (!leader_foreign && !members.is_empty()) {
                    let mut stop = Stopper::new(
                        p.pgid,
                        Duration::from_millis(run.spec.limits.grace_ms().min(5_000)),
                        None,
                    );
                    stop.stop();
                    let until = Instant::now() + stop.grace + Duration::from_secs(5);
                    while !os::group_members(p.pgid).is_empty() && Instant::now() < until {
                        stop.tick();
                        std::thread::sleep(TICK);
                    }
                    format!(
                        "its supervisor stopped; process {} (group {}) was still running and \
                         was killed",
                        p.pid, p.pgid
                    )
                } else {
                    format!("its supervisor stopped; process {} was gone", p.pid)
                }
            }
            Some(p) if run.status == crate::run::RunStatus::Running => format!(
                "its supervisor stopped; process {} ran before a reboot",
                p.pid
            ),
            _ => "its supervisor stopped before the next attempt started".to_string(),
        };
        // Processes that left the group but not the run's cgroup go too.
        let left = cgroup::clean_up_run(&engine.paths().root, run.id.0);
        let reason = if left > 0 {
            format!("{reason}; {left} process(es) left in its cgroup were killed")
        } else {
            reason
        };
        record(
            engine,
            EventBody::RunInterrupted {
                run: run.id,
                reason,
                cancelled: false,
            },
        )?;
        clear_cancel(&engine.paths().root, run.id);
        done.push(run.id);
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
