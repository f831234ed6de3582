//! Supervised runs through the manager: `exec`, the run handle, `runs`, `run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::SessionManager;
use crate::command::{Command, Outcome};
use crate::error::{Error, Result};
use crate::run::{Limits, RetryPolicy, Run, RunId, RunSpec, RunStatus};
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
    thread: std::thread::JoinHandle<Result<Arc<Run>>>,
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
            .unwrap_or_else(|_| Err(Error::invalid("run", "its supervisor thread panicked")))
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
        };
        let inner = Arc::clone(&self.inner);
        let thread = std::thread::Builder::new()
            .name(format!("run-{id}"))
            .spawn(move || supervisor::supervise(inner.engine(), job))
            .map_err(|e| Error::io("start a supervisor thread", "", e))?;
        Ok(RunHandle { id, cancel, thread })
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

    /// Where run `id`'s log file is (stdout and stderr in arrival order, head and tail
    /// above the cap, with a line saying how many bytes were dropped).
    pub fn run_log_path(&self, id: RunId) -> PathBuf {
        supervisor::log_path(self.data_dir(), id)
    }
}
