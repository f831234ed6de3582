//! The JSON-lines command protocol: one command per line in, one answer per line out.
//!
//! This is what `session-engine apply` reads and writes, and what a script or a service
//! sends. It lives in the library so that every front end parses the same way and so the
//! parser can be fuzzed.
//!
//! # Input lines
//!
//! Each line is one JSON object with an `op` field. Session ids may be given as `id` or
//! `session_id`.
//!
//! | `op`         | fields                                                                   |
//! |--------------|--------------------------------------------------------------------------|
//! | `create`     | `id`?, `name`?, `timeout`? (seconds, default 3600), `agent`?, `working_dir`?, `meta`? (object), `config`? (object of `SessionConfig` fields) |
//! | `activity`   | `id`, `action`, `details`? (any JSON)                                    |
//! | `meta`       | `id`, `key`, `value` (any JSON; sets the key)                            |
//! | `unmeta`     | `id`, `key` (removes the key)                                            |
//! | `pause`, `resume`, `end`, `archive` | `id`                                              |
//! | `checkpoint` | `id`, `label`?                                                           |
//! | `restore`    | `id`, `index`? (default: the last checkpoint)                            |
//! | `decision`   | `id`, `what`, `why`, `alternatives`?                                     |
//! | `command`    | `id`, `command`, `args`? (any JSON), `success` (bool), `error`?, `duration_ms`? |
//! | `chain_link` | `agent`, `external_id` (or `link`), `prompt`?, `response`?, `metadata`?  |
//! | `chain_reset`| `agent`                                                                  |
//! | `cleanup`    | `max_age_days`                                                           |
//! | `clone`      | `id` (the source), `new_id`?                                             |
//! | `expire`     | (none): record now the expiry of every session idle past its timeout     |
//! | `runs`       | `run`? (a run id: that run only), `id`? (a session: its runs), `status`? |
//! | `cancel`     | `run` (a run id) or `all: true`; `wait`? (seconds after the grace period, default 10) |
//! | `health`     | `stale_after`? (seconds, default 300)                                    |
//! | `exec`       | `id`, `program`, `args`? (array of strings), `cwd`?, `env`? (object of strings), `timeout_ms`?, `retries`?, `retry_delay_ms`? (default 1000), `max_memory_mb`?, `max_cpu_secs`?, `max_output_bytes`?, `grace_ms`?, `safe_to_repeat`?, `cgroup`? (default true) |
//! | `logs`       | `run`, `offset`? (bytes, default 0), `limit`? (bytes, default 64 KiB, at most 1 MiB) |
//! | `resume_runs`| (none): start the next attempt of every run a restart left `recovering` |
//!
//! The last six are the supervised runs' operations ([`parse_request`] reads them;
//! [`parse_line`] refuses them, as they are no engine command): `runs`, `health` and
//! `logs` read, `cancel` asks the run's supervisor (see `SessionManager::cancel_runs`) and
//! waits, `resume_runs` starts the runs safe to repeat that the open left recovering
//! (`SessionManager::resume_runs`) and answers at once with their ids (the CLI's `apply`
//! then ends only once they have ended; it resumes nothing unless asked), `exec` runs a
//! program (no shell: `program` is a path or a name looked up in
//! `PATH`, `args` its arguments) as `SessionManager::exec` does and answers once the run
//! has ended; its output goes to the run's log (read it with `logs`), not to the answers.
//! The limits are checked as the library checks them (each from 1 to its maximum).
//! Unknown fields are refused, so a typo does not silently do something else, and so is a
//! key given twice in any object of the line, the line's own or one inside a JSON value
//! (`details`, `value`, `args`, `meta`, `metadata`, `config`): which one was meant is not
//! known, and a JSON value would silently keep only the last. JSON values obey the engine's
//! limits (at most [`MAX_JSON_DEPTH`](crate::types::MAX_JSON_DEPTH) levels of arrays and
//! objects, `MAX_JSON_LEN` bytes).
//! A refused line is answered like any bad line (`"kind":"invalid_input"`) and the next
//! line is read.
//!
//! # Answers
//!
//! ```text
//! {"ok":true,"lsn":17}                     the command is durable at LSN 17
//! {"ok":true,"lsn":18,"id":"0190a4..."}    create and clone also give the session id
//! {"ok":true,"lsn":19,"index":0}           checkpoint and restore give the index
//! {"ok":true,"lsn":20,"archived":3}        cleanup gives how many sessions it archived
//! {"ok":false,"error":"session not found: x","kind":"not_found"}
//! {"ok":true,"runs":[{"id":1,"status":"completed",...}]}   runs ("run":{...} for one)
//! {"ok":true,"cancelled":[{"id":2,"status":"cancelled"}]}  cancel, every run cancelled
//! {"ok":false,"error":"not cancelled: ...","kind":"not_cancelled","cancelled":[...]}
//! {"ok":true,"health":{"totalSessions":3,"healthySessions":1,...}}
//! {"ok":true,"run":{"id":3,"status":"failed","exit_code":1,...}}  exec, once the run ended
//! {"ok":true,"run":3,"offset":0,"length":6,"next_offset":6,"total_bytes":6,
//!  "complete":true,"encoding":"utf-8","output":"hello\n"}    logs ("base64" if not UTF-8)
//! {"ok":true,"resumed":[4,7]}              resume_runs, the runs it started again
//! ```
//!
//! `lsn` is the LSN of the command's record; a command with nothing to do (a cleanup that
//! archived nothing) answers with the last LSN at the time and `"appended":false`.

mod answer;
mod claude_ops;
mod fast;
mod fields;
mod parse;
mod run_ops;

pub use answer::{
    answer_err, answer_ok, answer_run_op, event_json, run_json, run_op, write_answer_ok,
};
pub use claude_ops::{ClaudeOp, hits_json};
use fields::{Fields, type_name};
pub use parse::{parse_line, parse_request};

use crate::command::Command;
use crate::manager::CancelTarget;
use crate::run::{RunId, RunStatus};
use crate::types::SessionId;

/// Longest accepted input line, in bytes.
pub const MAX_LINE_LEN: usize = 4 << 20;

/// One input line: an engine command, or one of the supervised runs' operations, which a
/// front end answers through its `SessionManager` once every line before it is answered.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request {
    /// Every op but the run ops.
    Command(Command),
    /// `runs`: one run, or the runs of a session and/or a status, in id order.
    Runs {
        /// Only this run.
        run: Option<RunId>,
        /// Only this session's runs.
        session: Option<SessionId>,
        /// Only runs with this status.
        status: Option<RunStatus>,
    },
    /// `cancel`: see `SessionManager::cancel_runs`.
    Cancel {
        /// One run or all unfinished ones.
        target: CancelTarget,
        /// Milliseconds to wait after the longest grace period.
        wait_ms: u64,
    },
    /// `health`: seed 004's metrics (see `SessionManager::run_health`).
    Health {
        /// A running run silent for longer than this is stale, milliseconds.
        stale_after_ms: u64,
    },
    /// `claude_import`, `claude_show`, `claude_search`: Claude Code transcripts (see
    /// `protocol/claude_ops.rs`).
    Claude(ClaudeOp),
    /// `exec`: runs a program as `SessionManager::exec` does; answered once it has ended.
    Exec(Box<crate::ExecRequest>),
    /// `logs`: a byte range of a run's log (see `SessionManager::run_output`).
    Logs {
        /// The run.
        run: RunId,
        /// Where the range starts, bytes.
        offset: u64,
        /// How many bytes at most.
        limit: u64,
    },
    /// `resume_runs`: see `SessionManager::resume_runs`.
    ResumeRuns,
}

#[cfg(test)]
mod tests;
