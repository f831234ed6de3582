//! The `claude` CLI as a supervised run (issue 17): `claude -p --output-format json`,
//! resumed from the agent's current chain link if asked, its answer parsed and its new
//! session id recorded as the next link of the agent's chain (seed 003's
//! `update_session`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::runs::{ExecRequest, RunHandle};
use super::{Inner, SessionManager};
use crate::claude::answer::{ClaudeAnswer, MAX_ANSWER_BYTES, parse_answer};
use crate::command::Command;
use crate::error::{Error, Result};
use crate::run::{Limits, RetryPolicy, Run, RunStatus, Stream};
use crate::supervisor::OutputSink;
use crate::types::{AgentId, JsonText, SessionId};

/// The environment variable naming the `claude` program (default: `claude` in `PATH`).
pub const CLAUDE_PROGRAM_ENV: &str = "SESSION_ENGINE_CLAUDE";

/// The `claude` program to run when none is given: `$SESSION_ENGINE_CLAUDE` if set and
/// not empty, else `claude` (looked up in `PATH`).
pub fn default_claude_program() -> String {
    std::env::var(CLAUDE_PROGRAM_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "claude".to_string())
}

/// One turn of Claude Code, for [`SessionManager::exec_claude`].
#[derive(Clone)]
pub struct ClaudeRequest {
    /// The session the run belongs to; its agent's chain gets the link.
    pub session: String,
    /// The prompt.
    pub prompt: String,
    /// Resume the agent's current chain link (`--resume <id>`); an error if there is none.
    pub resume: bool,
    /// The program (`None`: [`default_claude_program`]).
    pub program: Option<String>,
    /// Its working directory (`None`: this process's).
    pub cwd: Option<PathBuf>,
    /// Variables set on top of this process's environment.
    pub env: Vec<(String, String)>,
    /// Its limits.
    pub limits: Limits,
    /// Its retry policy (each attempt's answer replaces the previous one's).
    pub retry: RetryPolicy,
    /// Receives the program's stderr live (stdout is the answer, kept for parsing).
    pub on_stderr: Option<OutputSink>,
    /// A cgroup v2 per attempt where possible (see [`ExecRequest::cgroup`]).
    pub cgroup: bool,
}

impl ClaudeRequest {
    /// A turn with `prompt` for `session`, not resumed, no limits, no retries.
    pub fn new(session: &str, prompt: &str) -> ClaudeRequest {
        ClaudeRequest {
            session: session.to_string(),
            prompt: prompt.to_string(),
            resume: false,
            program: None,
            cwd: None,
            env: Vec::new(),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            on_stderr: None,
            cgroup: true,
        }
    }
}

/// The arguments given to `claude`: `-p --output-format json`, `--resume ID` when
/// resuming, then the prompt (after `--` when it starts with `-`, so it is never read as
/// an option).
pub fn claude_args(prompt: &str, resume: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = ["-p", "--output-format", "json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(id) = resume {
        args.push("--resume".into());
        args.push(id.to_string());
    }
    if prompt.starts_with('-') {
        args.push("--".into());
    }
    args.push(prompt.to_string());
    args
}

/// How a turn ended.
#[derive(Clone, Debug)]
pub struct ClaudeTurn {
    /// The run, as recorded.
    pub run: Arc<Run>,
    /// The agent whose chain the turn belongs to.
    pub agent: AgentId,
    /// The session id resumed, if any.
    pub resumed: Option<String>,
    /// The answer, when stdout held a well-formed one.
    pub answer: Option<ClaudeAnswer>,
    /// The chain's interaction count after the link, when one was recorded.
    pub linked: Option<u64>,
    /// Why no link was recorded, when none was.
    pub no_link: Option<String>,
}

/// A turn in progress; [`ClaudeHandle::wait`] ends it.
pub struct ClaudeHandle {
    run: RunHandle,
    inner: Arc<Inner>,
    stdout: Arc<Mutex<Answer>>,
    agent: AgentId,
    resumed: Option<String>,
    prompt: String,
}

impl std::fmt::Debug for ClaudeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaudeHandle")
            .field("run", &self.run.id())
            .finish()
    }
}

#[derive(Default)]
struct Answer {
    bytes: Vec<u8>,
    /// Bytes past [`MAX_ANSWER_BYTES`], not kept.
    over: u64,
}

impl ClaudeHandle {
    /// The run's handle (its id, cancel).
    pub fn run(&self) -> &RunHandle {
        &self.run
    }

    /// Waits for the run's end, then, if it completed (exit 0) with a well-formed answer
    /// that is not an error, records the answer's `session_id` as the next link of the
    /// agent's chain, with the prompt, the answer's text and, as metadata, the run id,
    /// subtype, cost, turns, duration and usage. An error means a step could not be
    /// recorded; a turn that ended without a link says why in [`ClaudeTurn::no_link`].
    pub fn wait(self) -> Result<ClaudeTurn> {
        let run = self.run.wait()?;
        let (bytes, over) = {
            let mut a = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut a.bytes), a.over)
        };
        let parsed = if over > 0 {
            Err(format!(
                "the answer is more than {MAX_ANSWER_BYTES} bytes long ({over} bytes more)"
            ))
        } else {
            parse_answer(&bytes)
                .map_err(|e| format!("the answer is not Claude Code's JSON result: {e}"))
        };
        let mut turn = ClaudeTurn {
            run: Arc::clone(&run),
            agent: self.agent.clone(),
            resumed: self.resumed.clone(),
            answer: parsed.as_ref().ok().cloned(),
            linked: None,
            no_link: None,
        };
        let why = if run.status != RunStatus::Completed {
            Some(format!(
                "the run {}{}",
                run.status.as_str(),
                match run.exit {
                    Some(crate::run::ExitKind::Code(c)) => format!(" (exit code {c})"),
                    Some(crate::run::ExitKind::Signal(s)) => format!(" (signal {s})"),
                    None => String::new(),
                }
            ))
        } else {
            match &parsed {
                Err(e) => Some(e.clone()),
                Ok(a) if a.is_error => Some(format!(
                    "Claude Code answered an error (subtype {}{})",
                    a.subtype,
                    a.result
                        .as_deref()
                        .map(|r| format!(": {}", crate::state::chain::truncate_chain_text(r)))
                        .unwrap_or_default()
                )),
                Ok(_) => None,
            }
        };
        if let Some(why) = why {
            turn.no_link = Some(why);
            return Ok(turn);
        }
        let Ok(answer) = parsed else {
            return Ok(turn);
        };
        let metadata = JsonText::from_value(&serde_json::json!({
            "run": run.id.0,
            "subtype": answer.subtype,
            "total_cost_usd": answer.total_cost_usd,
            "num_turns": answer.num_turns,
            "duration_ms": answer.duration_ms,
            "usage": answer.usage,
        }))
        .ok();
        let linked = self.inner.execute(Command::LinkChain {
            agent: self.agent.clone(),
            external_id: answer.session_id.clone(),
            prompt: self.prompt.clone(),
            response: answer.result.clone().unwrap_or_default(),
            metadata,
        });
        match linked {
            Ok(_) => {
                turn.linked = self
                    .inner
                    .state()
                    .chain(&self.agent)
                    .map(|c| c.interaction_count);
            }
            // The answer's id broke a rule of links (too long, control characters).
            Err(Error::InvalidInput { field, reason }) => {
                turn.no_link = Some(format!("the chain refused the link: {field}: {reason}"));
            }
            Err(e) => return Err(e),
        }
        Ok(turn)
    }
}

impl SessionManager {
    /// Runs one Claude Code turn for `req.session` under supervision (every step recorded,
    /// limits and timeout as [`SessionManager::exec`]): `claude -p --output-format json
    /// [--resume <current link>] PROMPT` (see [`claude_args`]). The session must belong
    /// to an agent, and, with `resume`, that agent's chain must have a current link;
    /// otherwise it is refused with nothing recorded ([`Error::InvalidState`]).
    pub fn exec_claude(&self, req: ClaudeRequest) -> Result<ClaudeHandle> {
        let session = SessionId::new(&req.session)?;
        let state = self.state();
        let s = state
            .session(&session)
            .ok_or_else(|| Error::not_found("session", &session))?;
        let agent = match s.agent.as_deref() {
            Some(a) => AgentId::new(a)?,
            None => {
                return Err(Error::InvalidState {
                    session: session.to_string(),
                    op: "run claude for",
                    reason: "the session belongs to no agent (create it with an agent), so \
                             there is no chain to link the answer to"
                        .into(),
                });
            }
        };
        let resumed = if req.resume {
            let current = state
                .chain(&agent)
                .and_then(|c| c.current_session_id.as_deref().map(str::to_string));
            Some(current.ok_or_else(|| Error::InvalidState {
                session: session.to_string(),
                op: "resume claude for",
                reason: format!("agent {agent}'s chain has no current link to resume"),
            })?)
        } else {
            None
        };
        let stdout = Arc::new(Mutex::new(Answer::default()));
        let sink: OutputSink = {
            let stdout = Arc::clone(&stdout);
            let stderr = req.on_stderr.clone();
            Arc::new(move |stream, bytes: &[u8]| match stream {
                Stream::Stdout => {
                    let mut a = stdout.lock().unwrap_or_else(|e| e.into_inner());
                    let room = MAX_ANSWER_BYTES.saturating_sub(a.bytes.len());
                    let keep = room.min(bytes.len());
                    a.bytes.extend_from_slice(&bytes[..keep]);
                    a.over += (bytes.len() - keep) as u64;
                }
                Stream::Stderr => {
                    if let Some(f) = &stderr {
                        f(stream, bytes);
                    }
                }
            })
        };
        let reset: Arc<dyn Fn(u32) + Send + Sync> = {
            let stdout = Arc::clone(&stdout);
            Arc::new(move |_| {
                *stdout.lock().unwrap_or_else(|e| e.into_inner()) = Answer::default();
            })
        };
        let exec = ExecRequest {
            session: req.session,
            program: req.program.unwrap_or_else(default_claude_program),
            args: claude_args(&req.prompt, resumed.as_deref()),
            cwd: req.cwd,
            env: req.env,
            limits: req.limits,
            retry: req.retry,
            on_output: Some(sink),
            cgroup: req.cgroup,
        };
        let run = self.exec_with(exec, Some(reset))?;
        Ok(ClaudeHandle {
            run,
            inner: Arc::clone(&self.inner),
            stdout,
            agent,
            resumed,
            prompt: req.prompt,
        })
    }
}
