//! Supervised runs through the manager: `exec`, the run handle, `runs`, `run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::SessionManager;
use crate::command::{Command, Outcome};
use crate::error::{Error, Result};
use crate::run::{Limits, RetryPolicy, Run, RunHealth, RunId, RunSpec, RunStatus};
use crate::state::State;
use crate::supervisor::{self, Job, OutputSink};
use crate::types::SessionId;

/// What to run, for [`SessionManager::exec`].
#[derive(Clone)]
pub struct ExecRequest {
    /// The session the run belongs to.
    pub session: String,
    /// The program: a path, or a name looked up in `PATH`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its working directory (`None`: this process's).
    pub cwd: Option<PathBuf>,
    /// Variables set on top of this process's environment (secret values are redacted
    /// in the log: see [`crate::run::is_secret_name`]).
    pub env: Vec<(String, String)>,
    /// Its limits.
    pub limits: Limits,
    /// Its retry policy.
    pub retry: RetryPolicy,
    /// Receives the output live, if given.
    pub on_output: Option<OutputSink>,
    /// Each attempt in a cgroup v2 of its own where this process may create one (default
    /// true; where it cannot, the fallback to the process group alone is recorded, as
    /// `run_contained`). False records no `run_contained` step.
    pub cgroup: bool,
}

impl std::fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecRequest")
            .field("session", &self.session)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field(
                "env_names",
                &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("limits", &self.limits)
            .field("retry", &self.retry)
            .field("on_output", &self.on_output.is_some())
            .field("cgroup", &self.cgroup)
            .finish()
    }
}

impl ExecRequest {
    /// A request to run `program args` for `session`, no limits but the default output
    /// cap, no retries.
    pub fn new(session: &str, program: &str, args: &[&str]) -> ExecRequest {
        ExecRequest {
            session: session.to_string(),
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: None,
            env: Vec::new(),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            on_output: None,
            cgroup: true,
        }
    }
}

/// A run in progress: wait for it or cancel it. Dropping the handle leaves the run
/// supervised to its end.
pub struct RunHandle {
    id: RunId,
    cancel: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<Result<Arc<Run>>>>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle").field("id", &self.id).finish()
    }
}

impl RunHandle {
    /// The run's id.
    pub fn id(&self) -> RunId {
        self.id
    }

    /// Asks the supervisor to end the run (SIGTERM to its group, SIGKILL after the grace
    /// period); it is then recorded as `cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// A flag that cancels the run when set (for a signal handler or another thread).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Waits for the run's end; returns it as recorded. An error means a step could not
    /// be recorded (the run's processes were killed).
    pub fn wait(self) -> Result<Arc<Run>> {
        self.thread
            .join()
            .ok()
            .flatten()
            .unwrap_or_else(|| Err(Error::invalid("run", "its supervisor thread panicked")))
    }
}

/// Which runs [`SessionManager::cancel_runs`] cancels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelTarget {
    /// This run, which must be unfinished.
    Run(RunId),
    /// Every unfinished run (pending, running or recovering) at the time of the call.
    All,
}

/// A run [`SessionManager::cancel_runs`] asked to cancel, as it was when the wait ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancelled {
    /// The run.
    pub run: RunId,
    /// Its status then: `Cancelled` when the cancel took effect; another final status
    /// when the run ended otherwise first; an unfinished one when the wait ran out (no
    /// process supervises it, or it is still being stopped).
    pub status: RunStatus,
}

/// What [`SessionManager::run_output`] reads when no length is given: 64 KiB.
pub const DEFAULT_OUTPUT_READ: u64 = 64 << 10;

/// The most [`SessionManager::run_output`] reads at once: 1 MiB.
pub const MAX_OUTPUT_READ: u64 = 1 << 20;

/// A byte range of a run's log file, as [`SessionManager::run_output`] read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutput {
    /// The run.
    pub run: RunId,
    /// Where the range starts in the log.
    pub offset: u64,
    /// The bytes read (fewer than asked for at the end of the log).
    pub bytes: Vec<u8>,
    /// The log's length at the time of the read.
    pub total_bytes: u64,
    /// Whether the run had ended before the read and the range reaches the log's end:
    /// there is nothing more to read.
    pub complete: bool,
}

impl RunOutput {
    /// The offset just past the range: where the next read starts.
    pub fn next_offset(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// Which runs [`SessionManager::runs`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this session's.
    pub session: Option<SessionId>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
}

impl SessionManager {
    /// Starts `req`'s program for its session under supervision and returns at once with
    /// its handle; the request is durable first. A program that does not exist or is not
    /// executable, a working directory that is not one, an invalid limit or an unknown
    /// session is refused with nothing recorded; a spawn that fails after that is
    /// recorded (`run_spawn_failed`, status `failed`).
    pub fn exec(&self, req: ExecRequest) -> Result<RunHandle> {
        self.exec_with(req, None)
    }

    /// [`SessionManager::exec`] with a hook called before each attempt.
    pub(crate) fn exec_with(
        &self,
        req: ExecRequest,
        on_attempt: Option<Arc<dyn Fn(u32) + Send + Sync>>,
    ) -> Result<RunHandle> {
        let session = SessionId::new(&req.session)?;
        if let Some(dir) = &req.cwd
            && !dir.is_dir()
        {
            return Err(Error::not_found("working directory", dir.display()));
        }
        req.limits.validate()?;
        if self.state().session(&session).is_none() {
            return Err(Error::not_found("session", &session));
        }
        supervisor::resolve_program(&req.program, req.cwd.as_deref())?;
        let spec = RunSpec {
            program: req.program,
            args: req.args,
            cwd: req
                .cwd
                .map(|d| d.to_str().map(str::to_string))
                .map(|d| d.ok_or_else(|| Error::invalid("cwd", "it is not UTF-8")))
                .transpose()?,
            env: req.env,
            limits: req.limits,
            retry: req.retry,
        };
        let c = self.inner.execute(Command::RequestRun {
            session,
            spec: Box::new(spec.clone()),
        })?;
        let Outcome::Run(id) = c.outcome else {
            return Err(Error::invalid("run", "the engine answered no run id"));
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            id,
            spec,
            cancel: Arc::clone(&cancel),
            sink: req.on_output,
            on_attempt,
            cgroup: req.cgroup,
            first_attempt: 1,
            resumed: false,
        };
        let inner = Arc::clone(&self.inner);
        let thread = match supervisor::spawn_thread(format!("run-{id}"), None, move || {
            supervisor::supervise(inner.engine(), job)
        }) {
            Ok(t) => t,
            Err(e) => {
                // No supervisor: the run must not stay pending. Its failure to start is
                // its one step.
                self.inner.execute(Command::RecordRunStep(Box::new(
                    crate::event::EventBody::RunSpawnFailed {
                        run: id,
                        attempt: 1,
                        error: format!("cannot start its supervisor thread: {e}"),
                        retry: false,
                    },
                )))?;
                return Err(Error::io("start a supervisor thread", "", e));
            }
        };
        Ok(RunHandle { id, cancel, thread })
    }

    /// Starts the next attempt of every run this manager's open left `recovering` (a run
    /// no supervisor finished that is safe to repeat: see [`RetryPolicy::safe_to_repeat`]
    /// and `docs/format.md`, `run_recovering`), each supervised as a retry is: its own
    /// recorded steps (`run_started` of attempt n+1, output, `run_exited`), its output
    /// appended to its log file, the attempts after it as its retry policy allows.
    /// Returns the runs resumed, in id order, at once (see
    /// [`SessionManager::resume_runs_with_handles`] to wait for them). Each run gets a
    /// cgroup per attempt only if its `exec` asked for one ([`ExecRequest::cgroup`], as
    /// the log shows: a `run_contained` before its first started attempt; a run that
    /// never started gets the default), which costs a read of the log from its start up
    /// to the first attempt of the last run resumed. Each run is
    /// resumed once: a second call resumes nothing. A run with a cancel asked for it
    /// (`runs/<id>.cancel`) is recorded `cancelled` instead. A read-only manager is
    /// [`Error::ReadOnly`].
    pub fn resume_runs(&self) -> Result<Vec<RunId>> {
        Ok(self
            .resume_runs_with_handles()?
            .iter()
            .map(RunHandle::id)
            .collect())
    }

    /// [`SessionManager::resume_runs`], with the handle of each run resumed.
    pub fn resume_runs_with_handles(&self) -> Result<Vec<RunHandle>> {
        if self.engine().is_read_only() {
            return Err(Error::ReadOnly);
        }
        let waiting =
            std::mem::take(&mut *self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        // Each run is contained as its `exec` asked (`--no-cgroup` honoured).
        let cgroups = match supervisor::cgroup_choices(self.engine(), &waiting) {
            Ok(c) => c,
            Err(e) => {
                let mut w = self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
                w.extend(&waiting);
                w.sort();
                return Err(e);
            }
        };
        let mut handles = Vec::new();
        for (i, id) in waiting.iter().enumerate() {
            let cgroup = cgroups.get(id).copied().unwrap_or(true);
            if let Err(e) = self.resume_one(*id, cgroup, &mut handles) {
                // The runs not reached wait for the next call.
                let mut w = self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
                w.extend(&waiting[i + 1..]);
                w.sort();
                return Err(e);
            }
        }
        Ok(handles)
    }

    fn resume_one(&self, id: RunId, cgroup: bool, handles: &mut Vec<RunHandle>) -> Result<()> {
        use crate::event::EventBody;
        let Some(run) = self.state().run(id).cloned() else {
            return Ok(());
        };
        if run.status != RunStatus::Recovering {
            return Ok(());
        }
        let step = |body: EventBody| self.inner.execute(Command::RecordRunStep(Box::new(body)));
        if supervisor::cancel_requested(self.data_dir(), id) {
            step(EventBody::RunInterrupted {
                run: id,
                reason: "cancelled while it waited to be repeated after a restart".into(),
                cancelled: true,
            })?;
            supervisor::clear_cancel(self.data_dir(), id);
            return Ok(());
        }
        let attempt = run.attempts + 1;
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            id,
            spec: run.spec.clone(),
            cancel: Arc::clone(&cancel),
            sink: None,
            on_attempt: None,
            cgroup,
            first_attempt: attempt,
            resumed: true,
        };
        let inner = Arc::clone(&self.inner);
        match supervisor::spawn_thread(format!("run-{id}"), None, move || {
            supervisor::supervise(inner.engine(), job)
        }) {
            Ok(thread) => {
                handles.push(RunHandle { id, cancel, thread });
                Ok(())
            }
            Err(e) => {
                // No supervisor: the run must not stay recovering.
                step(EventBody::RunSpawnFailed {
                    run: id,
                    attempt,
                    error: format!("cannot start its supervisor thread: {e}"),
                    retry: false,
                })?;
                Ok(())
            }
        }
    }

    /// Runs matching `filter`, in id order.
    pub fn runs(&self, filter: &RunFilter) -> Vec<Arc<Run>> {
        self.state()
            .runs
            .values()
            .filter(|r| filter.session.as_ref().is_none_or(|s| *s == r.session))
            .filter(|r| filter.status.is_none_or(|s| s == r.status))
            .cloned()
            .collect()
    }

    /// A run by id; [`Error::NotFound`] when there is none.
    pub fn run(&self, id: RunId) -> Result<Arc<Run>> {
        self.state()
            .run(id)
            .cloned()
            .ok_or_else(|| Error::not_found("run", id))
    }

    /// Cancels runs, wherever they are supervised (this process or another): leaves a
    /// cancel request for each (`runs/<id>.cancel`, which the supervisor acts on within
    /// a tick: SIGTERM to the run's group, its grace period, SIGKILL), then waits until
    /// each is recorded as ended, for at most the longest grace period of them and
    /// `wait` more. Returns the targeted runs in id order with their status at the end.
    /// `CancelTarget::Run` of an unknown run is [`Error::NotFound`], of a finished one
    /// [`Error::InvalidState`]; `CancelTarget::All` skips finished runs and returns an
    /// empty list when none is unfinished. A read-only manager reopens the data
    /// directory to see the runs' progress.
    pub fn cancel_runs(&self, target: CancelTarget, wait: Duration) -> Result<Vec<Cancelled>> {
        let state = self.state();
        let targets: Vec<Arc<Run>> = match target {
            CancelTarget::Run(id) => {
                let r = state.run(id).ok_or_else(|| Error::not_found("run", id))?;
                if r.status.is_final() {
                    return Err(Error::InvalidState {
                        session: format!("run {id}"),
                        op: "cancel",
                        reason: format!("it is {}", r.status.as_str()),
                    });
                }
                vec![Arc::clone(r)]
            }
            CancelTarget::All => state.unfinished_runs().cloned().collect(),
        };
        drop(state);
        // A run left recovering by this manager's open and not resumed has no supervisor
        // to act on a request: it ends cancelled here and now.
        let mut unsupervised = Vec::new();
        {
            let mut waiting = self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.retain(|id| {
                let ours = targets.iter().any(|r| r.id == *id);
                if ours {
                    unsupervised.push(*id);
                }
                !ours
            });
        }
        for (i, id) in unsupervised.iter().enumerate() {
            let done = self.inner.execute(Command::RecordRunStep(Box::new(
                crate::event::EventBody::RunInterrupted {
                    run: *id,
                    reason: "cancelled while it waited to be repeated after a restart".into(),
                    cancelled: true,
                },
            )));
            if let Err(e) = done {
                let mut waiting = self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
                waiting.extend(&unsupervised[i..]);
                waiting.sort();
                return Err(e);
            }
        }
        for r in targets.iter().filter(|r| !unsupervised.contains(&r.id)) {
            supervisor::request_cancel(self.data_dir(), r.id)?;
        }
        let grace = targets
            .iter()
            .map(|r| r.spec.limits.grace_ms())
            .max()
            .unwrap_or(0);
        let until = Instant::now() + Duration::from_millis(grace) + wait;
        loop {
            let now = self.fresh_state()?;
            let status: Vec<Cancelled> = targets
                .iter()
                .map(|r| Cancelled {
                    run: r.id,
                    status: now.run(r.id).map_or(r.status, |r| r.status),
                })
                .collect();
            if status.iter().all(|c| c.status.is_final()) || Instant::now() >= until {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Seed 004's `getSessionHealthMetrics` over the runs, now by the manager's clock:
    /// a running run is stale when neither its start nor an output event was recorded
    /// in the last `stale_after` (seed 004: 5 minutes,
    /// [`crate::run::DEFAULT_STALE_AFTER_MS`]). An output of a run above its cap is
    /// recorded at its end, so a run writing only past its head counts as silent.
    pub fn run_health(&self, stale_after: Duration) -> RunHealth {
        let ms = u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX);
        self.state().run_health(self.now(), ms)
    }

    /// The state as it is now: this manager's when it writes (its runs are recorded
    /// through it), a fresh read-only open's otherwise.
    fn fresh_state(&self) -> Result<Arc<State>> {
        if !self.engine().is_read_only() {
            return Ok(self.state());
        }
        let m = SessionManager::open_read_only(self.data_dir(), self.engine().options().clone())?;
        Ok(m.state())
    }

    /// Reads `length` bytes (at most [`MAX_OUTPUT_READ`]) at `offset` of run `id`'s log
    /// file (what `logs RUN` prints: stdout and stderr in arrival order). A log not written
    /// yet is empty. An unknown run is [`Error::NotFound`]; a length of 0 or above the
    /// maximum, or an offset past the log's end, [`Error::InvalidInput`]. The log is never
    /// read through a symbolic link, and only when it is a regular file in a real `runs`
    /// folder (else an [`Error::Io`]).
    pub fn run_output(&self, id: RunId, offset: u64, length: u64) -> Result<RunOutput> {
        if length == 0 || length > MAX_OUTPUT_READ {
            return Err(Error::invalid(
                "limit",
                format!("{length} bytes is not from 1 to {MAX_OUTPUT_READ}"),
            ));
        }
        // The status before the read: a run final then has its whole log written.
        let finished = self
            .fresh_state()?
            .run(id)
            .ok_or_else(|| Error::not_found("run", id))?
            .status
            .is_final();
        let path = supervisor::log_path(self.data_dir(), id);
        let (total_bytes, bytes) =
            read_range(self.data_dir(), &path, offset, length).map_err(|e| match e {
                ReadError::PastEnd(total) => Error::invalid(
                    "offset",
                    format!("{offset} is past the end of the output ({total} bytes)"),
                ),
                ReadError::Io(e) => Error::io("read a run log", &path, e),
            })?;
        let complete = finished && offset + bytes.len() as u64 == total_bytes;
        Ok(RunOutput {
            run: id,
            offset,
            bytes,
            total_bytes,
            complete,
        })
    }

    /// Where run `id`'s log file is (stdout and stderr in arrival order, head and tail
    /// above the cap, with a line saying how many bytes were dropped).
    pub fn run_log_path(&self, id: RunId) -> PathBuf {
        supervisor::log_path(self.data_dir(), id)
    }
}

enum ReadError {
    PastEnd(u64),
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// The log's length and `length` bytes of it at `offset`; `(0, [])` when there is no log
/// (or no `runs` folder) yet. Never through a link; regular files only.
fn read_range(
    root: &std::path::Path,
    path: &std::path::Path,
    offset: u64,
    length: u64,
) -> std::result::Result<(u64, Vec<u8>), ReadError> {
    use std::io::ErrorKind;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    // No log yet (the run has not started, or wrote nothing): an empty range at 0.
    let nothing_yet = || {
        if offset == 0 {
            Ok((0, Vec::new()))
        } else {
            Err(ReadError::PastEnd(0))
        }
    };
    match std::fs::symlink_metadata(root.join(supervisor::RUNS_DIR)) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(std::io::Error::other("the runs folder is not a directory").into()),
        Err(e) if e.kind() == ErrorKind::NotFound => return nothing_yet(),
        Err(e) => return Err(e.into()),
    }
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return nothing_yet(),
        Err(e) => return Err(e.into()),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("the run log is not a regular file").into());
    }
    let total = meta.len();
    if offset > total {
        return Err(ReadError::PastEnd(total));
    }
    let want = usize::try_from(length.min(total - offset)).unwrap_or(usize::MAX);
    let mut bytes = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match f.read_at(&mut bytes[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    bytes.truncate(got);
    Ok((total, bytes))
}
