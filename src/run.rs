//! The vocabulary of supervised runs (issue 17): what a run asks for, the steps it goes
//! through as events, and what the state keeps of it.
//!
//! A run is an external program the engine starts for a session and supervises (see
//! `supervisor`). Every step is an event, recorded before the next step begins: the
//! request (before the process exists), `started`, output chunks, `exited` (or `spawn
//! failed`), and `interrupted` when a reopen finds a run no supervisor finished (or
//! `recovering`, event schema 6, when it is safe to repeat: see `supervisor::reconcile`
//! and `SessionManager::resume_runs`). The state
//! keeps each run's status and counters, never its output bytes (those are in the
//! per-run log file `runs/<id>.log` and in the output events).
//!
//! Encoded as event schema 3 and state schema 3 (see `codec`; `EndedBy::Memory` is event
//! schema 5): variants and fields are only ever appended.

use serde::{Deserialize, Serialize};

use crate::types::{SessionId, Timestamp};

/// Most bytes one output event carries.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Default output cap (head plus tail kept): 8 MiB.
pub const DEFAULT_MAX_OUTPUT: u64 = 8 << 20;
/// Default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE_MS: u64 = 2_000;
/// What replaces the value of a redacted environment variable.
pub const REDACTED: &str = "[redacted]";

/// A run's id: dense, from 1, in request order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId(pub u64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for RunId {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<RunId> {
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(RunId(n)),
            _ => Err(crate::error::Error::invalid(
                "run",
                format!("{s:?} is not a run id (a number from 1)"),
            )),
        }
    }
}

/// Resource limits of one run. `None`: no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time, in milliseconds, before the watchdog ends the run (`timeout`).
    pub timeout_ms: Option<u64>,
    /// Address space of each process (RLIMIT_AS), in bytes.
    pub max_memory_bytes: Option<u64>,
    /// CPU time of each process (RLIMIT_CPU), in seconds.
    pub max_cpu_secs: Option<u64>,
    /// Output kept (head plus tail, stdout and stderr together), in bytes;
    /// `None` is [`DEFAULT_MAX_OUTPUT`].
    pub max_output_bytes: Option<u64>,
    /// Between SIGTERM and SIGKILL, in milliseconds; `None` is [`DEFAULT_GRACE_MS`].
    pub grace_ms: Option<u64>,
}

impl Limits {
    /// The output cap in force.
    pub fn output_cap(&self) -> u64 {
        self.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT)
    }

    /// The grace period in force.
    pub fn grace_ms(&self) -> u64 {
        self.grace_ms.unwrap_or(DEFAULT_GRACE_MS)
    }

    /// Checks every limit is usable: non-zero, and within what the kernel takes.
    pub fn validate(&self) -> crate::error::Result<()> {
        let bad = |what: &str, v: u64, max: u64| {
            if v == 0 || v > max {
                Err(crate::error::Error::invalid(
                    "limit",
                    format!("{what} must be from 1 to {max}, not {v}"),
                ))
            } else {
                Ok(())
            }
        };
        if let Some(v) = self.timeout_ms {
            bad("the timeout (ms)", v, 365 * 24 * 3_600_000)?;
        }
        if let Some(v) = self.max_memory_bytes {
            bad("the memory limit (bytes)", v, 1 << 50)?;
        }
        if let Some(v) = self.max_cpu_secs {
            bad("the CPU limit (s)", v, 365 * 24 * 3_600)?;
        }
        if let Some(v) = self.max_output_bytes {
            bad("the output cap (bytes)", v, 1 << 40)?;
        }
        if let Some(v) = self.grace_ms {
            bad("the grace period (ms)", v, 3_600_000)?;
        }
        Ok(())
    }
}

/// When a failed attempt is tried again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts after the first one (seed 000/004 `max_retries`).
    pub max_retries: u32,
    /// Delay before the first retry, in milliseconds, doubled each time, with jitter
    /// (seed 000 `retry_delay`).
    pub retry_delay_ms: u64,
    /// Whether the program may run again after a restart interrupted it (default: no):
    /// a writable open then leaves the run `recovering` (when it has attempts left under
    /// `max_retries`, no secret in its environment and no cancel asked) and
    /// `SessionManager::resume_runs` starts its next attempt.
    pub safe_to_repeat: bool,
}

/// What a run asks for, as recorded (the environment's secrets redacted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The program (a path, or a name looked up in `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The working directory (`None`: the engine process's).
    pub cwd: Option<String>,
    /// Environment variables set on top of the engine process's.
    pub env: Vec<(String, String)>,
    /// Its limits.
    pub limits: Limits,
    /// Its retry policy.
    pub retry: RetryPolicy,
}

/// Whether an environment variable's value is a secret: its name contains `TOKEN`,
/// `SECRET`, `KEY`, `PASSWORD`, `PASSWD`, `CREDENTIAL` or `AUTH` (any case).
pub fn is_secret_name(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "KEY",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "AUTH",
    ]
    .iter()
    .any(|w| up.contains(w))
}

impl RunSpec {
    /// The spec as the log records it: secret values replaced by [`REDACTED`].
    pub fn redacted(&self) -> RunSpec {
        let mut s = self.clone();
        for (k, v) in &mut s.env {
            if is_secret_name(k) {
                *v = REDACTED.to_string();
            }
        }
        s
    }
}

/// Which output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitKind {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// The limit (or request) that ended a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndedBy {
    /// The wall-clock timeout.
    Timeout,
    /// A cancel request.
    Cancel,
    /// RLIMIT_CPU (SIGXCPU, or SIGKILL at the hard limit).
    Cpu,
    /// The memory limit held by the attempt's cgroup v2 `memory.max`: the kernel's OOM
    /// killer killed a process of the cgroup (its `memory.events` counts an `oom_kill`)
    /// and the attempt failed. Event schema 5 (a `RunExited` holding it is written as
    /// schema 5). Under RLIMIT_AS (no cgroup, or no memory controller) an allocation
    /// past the limit fails inside the program, which ends as it chooses: that is not
    /// attributable, and such a run has no `ended_by`.
    Memory,
}

/// Resource use of the leader process, from `wait4`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// User CPU time, microseconds.
    pub user_us: u64,
    /// System CPU time, microseconds.
    pub sys_us: u64,
    /// Peak resident set, KiB.
    pub max_rss_kb: u64,
}

/// A process started (event body of `RunStarted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The run.
    pub run: RunId,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The leader's pid.
    pub pid: u32,
    /// Its process group (equal to the pid: each run leads its own group).
    pub pgid: u32,
    /// `/proc/<pid>/stat` field 22 (clock ticks after boot), so a reused pid is told apart.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

/// An attempt ended (event body of `RunExited`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exited {
    /// The run.
    pub run: RunId,
    /// Attempt number.
    pub attempt: u32,
    /// How the leader ended.
    pub exit: ExitKind,
    /// What ended it, when the supervisor or a limit did.
    pub ended_by: Option<EndedBy>,
    /// Wall-clock time from start to the group being empty, milliseconds.
    pub duration_ms: u64,
    /// The leader's resource use.
    pub usage: Usage,
    /// Bytes the attempt wrote (stdout and stderr).
    pub output_bytes: u64,
    /// Bytes of it not kept (between head and tail): exact.
    pub output_dropped: u64,
    /// Whether another attempt follows.
    pub retry: bool,
}

/// A run's status (seed 004's, plus `pending` and `interrupted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    /// Requested; no process yet.
    Pending,
    /// A process runs.
    Running,
    /// Exited 0.
    Completed,
    /// Exited otherwise, or could not start.
    Failed,
    /// Ended by a cancel request.
    Cancelled,
    /// Ended by its timeout.
    Timeout,
    /// Between a failed attempt and the next.
    Recovering,
    /// Its supervisor stopped before it finished (found at a reopen).
    Interrupted,
}

impl RunStatus {
    /// The lowercase name (`"running"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Timeout => "timeout",
            RunStatus::Recovering => "recovering",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// Whether no supervisor works on it any more.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RunStatus::Pending | RunStatus::Running | RunStatus::Recovering
        )
    }
}

impl std::str::FromStr for RunStatus {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| crate::error::Error::invalid("status", format!("no run status {s:?}")))
    }
}

/// What the state keeps of a run: status and counters, no output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Its id.
    pub id: RunId,
    /// The session it runs for.
    pub session: SessionId,
    /// What it runs (redacted).
    pub spec: RunSpec,
    /// Its status.
    pub status: RunStatus,
    /// Attempts started (or failed to start).
    pub attempts: u32,
    /// When it was requested.
    pub requested_at: Timestamp,
    /// When its last attempt started.
    pub started_at: Option<Timestamp>,
    /// When it reached a final status.
    pub ended_at: Option<Timestamp>,
    /// The last attempt's process.
    pub process: Option<Started>,
    /// The last attempt's end.
    pub exit: Option<ExitKind>,
    /// What ended the last attempt, if the supervisor or a limit did.
    pub ended_by: Option<EndedBy>,
    /// The last attempt's duration, milliseconds.
    pub duration_ms: u64,
    /// The last attempt's resource use.
    pub usage: Usage,
    /// Output events recorded (all attempts).
    pub output_chunks: u64,
    /// Output bytes kept (all attempts).
    pub output_kept: u64,
    /// Output bytes dropped by the cap (all attempts).
    pub output_dropped: u64,
    /// Why it failed to start or was interrupted.
    pub error: Option<String>,
    /// When its last output event was recorded (any attempt), from the events' own
    /// times. Outside the run's serde form: state schema 4 stores it after the runs.
    #[serde(skip)]
    pub last_output_at: Option<Timestamp>,
}

impl Run {
    /// Its last sign of life: the later of its last attempt's start and its last output
    /// event (`None` before any attempt started).
    pub fn last_activity(&self) -> Option<Timestamp> {
        self.started_at.max(self.last_output_at)
    }

    /// Whether it is running and has shown no sign of life ([`Run::last_activity`]) for
    /// more than `stale_after_ms` at `now` (seed 004's stale session).
    pub fn is_stale(&self, now: Timestamp, stale_after_ms: u64) -> bool {
        self.status == RunStatus::Running
            && self.last_activity().is_some_and(|t| {
                now.0.saturating_sub(t.0) > (stale_after_ms as i64).saturating_mul(1000)
            })
    }
}

/// Default time without output after which a running run is stale: 5 minutes, as
/// seed 004's health check.
pub const DEFAULT_STALE_AFTER_MS: u64 = 300_000;

/// Seed 004's `getSessionHealthMetrics` over the runs (a run is seed 004's session);
/// the JSON form uses the seed's field names.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunHealth {
    /// Every run recorded.
    pub total_sessions: u64,
    /// Running runs that are not stale.
    pub healthy_sessions: u64,
    /// Running runs with no output (nor start) for more than `stale_after_ms`.
    pub stale_sessions: u64,
    /// Mean peak resident set, in bytes, of the runs with a recorded end of an attempt
    /// (`wait4`'s `ru_maxrss` of the last attempt's leader); 0 when there is none.
    pub average_memory_usage: u64,
    /// Runs per status, every status present (0 when none has it).
    pub sessions_by_status: std::collections::BTreeMap<&'static str, u64>,
    /// The stale runs' ids, in id order.
    pub stale_runs: Vec<u64>,
    /// The threshold used, milliseconds.
    pub stale_after_ms: u64,
    /// The time the health was judged at (microseconds since the epoch).
    pub at: i64,
    /// User and system CPU time of the runs' last attempts' leaders, microseconds.
    pub total_cpu_us: u64,
}

impl RunStatus {
    /// Every status, in declaration order.
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Timeout,
        RunStatus::Recovering,
        RunStatus::Interrupted,
    ];
}

/// The rules on a run's request: a program, a bounded size, usable limits.
pub(crate) fn check_spec(spec: &RunSpec) -> crate::error::Result<()> {
    use crate::error::Error;
    if spec.program.is_empty() || spec.program.contains('\0') {
        return Err(Error::invalid("program", "it is empty or holds a NUL byte"));
    }
    let size = spec.program.len()
        + spec.cwd.as_ref().map_or(0, String::len)
        + spec.args.iter().map(String::len).sum::<usize>()
        + spec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > crate::command::MAX_LONG_TEXT * 4 {
        return Err(Error::invalid(
            "program",
            "its program, arguments, directory and environment exceed 256 KiB",
        ));
    }
    if spec
        .args
        .iter()
        .chain(spec.cwd.iter())
        .any(|a| a.contains('\0'))
    {
        return Err(Error::invalid("args", "an argument holds a NUL byte"));
    }
    if spec
        .env
        .iter()
        .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        return Err(Error::invalid(
            "env",
            "a variable's name is empty or holds '=' or NUL, or its value holds NUL",
        ));
    }
    spec.limits.validate()
}

/// The rule on a later step of a run: it is a run event other than a request, and it
/// applies to the run as it is.
pub(crate) fn check_step(
    state: &crate::state::State,
    body: &crate::event::EventBody,
    now: crate::types::Timestamp,
) -> crate::error::Result<()> {
    use crate::error::Error;
    use crate::event::{Event, EventBody};
    let run = match body {
        EventBody::RunStarted(s) => s.run,
        EventBody::RunExited(e) => e.run,
        EventBody::RunOutput { run, .. }
        | EventBody::RunSpawnFailed { run, .. }
        | EventBody::RunInterrupted { run, .. }
        | EventBody::RunContained { run, .. }
        | EventBody::RunRecovering { run, .. } => *run,
        _ => {
            return Err(Error::invalid(
                "run step",
                format!("{} is not a step of a run", body.type_name()),
            ));
        }
    };
    if state.run(run).is_none() {
        return Err(Error::not_found("run", run));
    }
    let mut probe = state.clone();
    let event = Event {
        at: now,
        body: body.clone(),
    };
    probe
        .apply(state.last_lsn.next(), &event)
        .map_err(|e| Error::InvalidState {
            session: format!("run {run}"),
            op: "record a step of",
            reason: e.0,
        })
}
