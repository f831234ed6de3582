//! `exec`, `runs`, `cancel`, `health`, `logs`: supervised runs (issue 17) from the command line.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::args::{Cli, ExecArgs};
use crate::output::Out;
use session_engine::run::{EndedBy, ExitKind, Limits, RetryPolicy, Run, RunId, RunStatus, Stream};
use session_engine::{
    CancelTarget, ClaudeRequest, Error, ExecRequest, RunFilter, SessionId, supervisor,
};

fn run_id(s: &str) -> Result<RunId> {
    Ok(s.parse::<RunId>()?)
}

fn invalid(field: &'static str, reason: String) -> anyhow::Error {
    Error::InvalidInput { field, reason }.into()
}

/// One run as JSON (the protocol's form).
pub fn run_json(r: &Run) -> Value {
    session_engine::protocol::run_json(r)
}

/// The limits and retry policy `exec`'s flags give.
fn limits(a: &ExecArgs) -> Result<(Limits, RetryPolicy)> {
    let timeout_ms = match a.timeout {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 && t <= 31_536_000.0 => {
            Some((t * 1000.0).ceil() as u64)
        }
        Some(t) => {
            return Err(invalid(
                "timeout",
                format!("{t} is not a number of seconds from 0 to a year"),
            ));
        }
    };
    let max_memory_bytes = match a.max_memory {
        None => None,
        Some(mb) => Some(
            mb.checked_mul(1 << 20)
                .ok_or_else(|| invalid("max-memory", format!("{mb} MiB is too large")))?,
        ),
    };
    let limits = Limits {
        timeout_ms,
        max_memory_bytes,
        max_cpu_secs: a.max_cpu,
        max_output_bytes: a.max_output,
        grace_ms: a.grace_ms,
    };
    let retry = RetryPolicy {
        max_retries: a.retries,
        retry_delay_ms: a.retry_delay_ms,
        safe_to_repeat: a.safe_to_repeat,
    };
    Ok((limits, retry))
}

/// The exit status of a run: its program's, 128+N for a signal, 127 when it never started.
fn exit_status(run: &Run) -> u8 {
    match run.exit {
        Some(ExitKind::Code(c)) => c.clamp(0, 255) as u8,
        Some(ExitKind::Signal(s)) => (128 + s).clamp(0, 255) as u8,
        None => 127,
    }
}

/// `exec`: the program's exit status, 128+N for a signal, 127 when it never started.
pub fn exec(cli: &Cli, out: &mut Out, a: &ExecArgs) -> Result<u8> {
    if a.claude.is_none() && (a.resume || a.claude_program.is_some()) {
        // clap does not apply `requires` here (the program is a trailing list).
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--resume and --claude-program require --claude PROMPT",
            )
            .exit();
    }
    if let Some(prompt) = &a.claude {
        return exec_claude(cli, out, a, prompt);
    }
    let (limits, retry) = limits(a)?;
    let (program, args) = a
        .command
        .split_first()
        .ok_or_else(|| invalid("program", "no program was given".into()))?;
    let manager = cli.open_write()?;
    let sink: supervisor::OutputSink = Arc::new(|stream, bytes| {
        let _ = match stream {
            Stream::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(bytes).and_then(|_| o.flush())
            }
            Stream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    });
    let req = ExecRequest {
        session: a.id.clone(),
        program: program.clone(),
        args: args.to_vec(),
        cwd: None,
        env: Vec::new(),
        limits,
        retry,
        on_output: Some(sink),
        cgroup: !a.no_cgroup,
    };
    let handle = manager.exec(req)?;
    let id = handle.id();
    eprintln!("session-engine: run {id} started");
    let run = handle.wait()?;
    // The status names a timeout or a cancel; a resource limit is said on its own.
    let limit = match run.ended_by {
        Some(EndedBy::Memory) => " (ended by its memory limit)",
        Some(EndedBy::Cpu) => " (ended by its CPU limit)",
        _ => "",
    };
    eprintln!("session-engine: run {id} {}{limit}", run.status.as_str());
    Ok(exit_status(&run))
}

/// `exec --claude`: one Claude Code turn. Prints the answer's text (with `--json`, the
/// whole turn as one object); the exit status is the program's, and 1 when it exited 0
/// but no link could be recorded (its answer was malformed or an error).
fn exec_claude(cli: &Cli, out: &mut Out, a: &ExecArgs, prompt: &str) -> Result<u8> {
    let (limits, retry) = limits(a)?;
    let manager = cli.open_write()?;
    let stderr: supervisor::OutputSink = Arc::new(|_, bytes| {
        let _ = std::io::stderr().lock().write_all(bytes);
    });
    let req = ClaudeRequest {
        program: a.claude_program.clone(),
        resume: a.resume,
        limits,
        retry,
        on_stderr: Some(stderr),
        cgroup: !a.no_cgroup,
        ..ClaudeRequest::new(&a.id, prompt)
    };
    let handle = manager.exec_claude(req)?;
    let id = handle.run().id();
    eprintln!("session-engine: run {id} started");
    let turn = handle.wait()?;
    let run = &turn.run;
    eprintln!("session-engine: run {id} {}", run.status.as_str());
    match (&turn.linked, &turn.no_link) {
        (Some(n), _) => eprintln!(
            "session-engine: linked {} into agent {}'s chain (interaction {n})",
            turn.answer.as_ref().map_or("", |a| a.session_id.as_str()),
            turn.agent
        ),
        (None, Some(why)) => eprintln!("session-engine: no link recorded: {why}"),
        (None, None) => {}
    }
    if cli.json {
        let answer = turn.answer.as_ref();
        out.json(&json!({
            "run": run_json(run),
            "agent": turn.agent.as_str(),
            "resumed": turn.resumed,
            "linked": turn.linked.is_some(),
            "interaction_count": turn.linked,
            "no_link": turn.no_link,
            "session_id": answer.map(|a| a.session_id.as_str()),
            "subtype": answer.map(|a| a.subtype.as_str()),
            "is_error": answer.map(|a| a.is_error),
            "result": answer.and_then(|a| a.result.as_deref()),
            "total_cost_usd": answer.and_then(|a| a.total_cost_usd),
            "num_turns": answer.and_then(|a| a.num_turns),
            "duration_ms": answer.and_then(|a| a.duration_ms),
        }))?;
    } else if let Some(text) = turn.answer.as_ref().and_then(|a| a.result.as_deref()) {
        if text.ends_with('\n') {
            out.line(text.strip_suffix('\n').unwrap_or(text))?;
        } else {
            out.line(text)?;
        }
    }
    Ok(match exit_status(run) {
        0 if turn.linked.is_none() => 1,
        n => n,
    })
}

/// `runs`.
pub fn runs(
    cli: &Cli,
    out: &mut Out,
    run: Option<&str>,
    session: Option<&str>,
    status: Option<&str>,
) -> Result<u8> {
    let manager = cli.open_read()?;
    if let Some(r) = run {
        let r = manager.run(run_id(r)?)?;
        out.json(&run_json(&r))?;
        return Ok(0);
    }
    let filter = RunFilter {
        session: session.map(SessionId::new).transpose()?,
        status: status.map(|s| s.parse::<RunStatus>()).transpose()?,
    };
    let runs = manager.runs(&filter);
    if cli.json {
        out.json(&Value::Array(runs.iter().map(|r| run_json(r)).collect()))?;
    } else {
        for r in runs {
            let exit = match r.exit {
                Some(ExitKind::Code(c)) => c.to_string(),
                Some(ExitKind::Signal(s)) => format!("signal {s}"),
                None => "-".into(),
            };
            out.line(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.id,
                r.session,
                r.status.as_str(),
                r.attempts,
                exit,
                r.spec.program
            ))?;
        }
    }
    Ok(0)
}

/// `runs --resume`: starts the next attempt of every run this open left `recovering`
/// (see `SessionManager::resume_runs`), waits for each to end and prints `RUN<TAB>STATUS`
/// per run (`--json`: an array). Exits 0 when every run resumed completed, 5 otherwise
/// (refused by its end, as `cancel` is); none to resume is a success that says so on
/// stderr.
pub fn resume(cli: &Cli, out: &mut Out) -> Result<u8> {
    let manager = cli.open_write()?;
    let handles = manager.resume_runs_with_handles()?;
    if handles.is_empty() {
        eprintln!("session-engine: no run to resume");
    }
    let mut ended = Vec::new();
    for h in handles {
        let id = h.id();
        eprintln!("session-engine: run {id} resumed");
        ended.push(h.wait()?);
    }
    if cli.json {
        out.json(&Value::Array(
            ended
                .iter()
                .map(|r| json!({"id": r.id.0, "status": r.status.as_str()}))
                .collect(),
        ))?;
    } else {
        for r in &ended {
            out.line(&format!("{}\t{}", r.id, r.status.as_str()))?;
        }
    }
    if ended.iter().any(|r| r.status != RunStatus::Completed) {
        return Ok(5);
    }
    Ok(0)
}

/// Seconds from the command line as a duration: finite, from 0 to `max`.
fn seconds(field: &'static str, s: f64, max: f64) -> Result<Duration> {
    if s.is_finite() && (0.0..=max).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(invalid(
            field,
            format!("{s} is not a number of seconds from 0 to {max}"),
        ))
    }
}

/// `cancel RUN | --all`: asks the supervising process (see
/// `SessionManager::cancel_runs`), then waits for each run to be recorded as ended (its
/// grace period and `wait` seconds more). Exits 0 only when every targeted run ended
/// cancelled; `--all` with no unfinished run is a success that says so.
pub fn cancel(cli: &Cli, out: &mut Out, run: Option<&str>, all: bool, wait: f64) -> Result<u8> {
    let wait = seconds("wait", wait, 3600.0)?;
    let target = match (run, all) {
        (Some(r), false) => CancelTarget::Run(run_id(r)?),
        (None, true) => CancelTarget::All,
        _ => return Err(invalid("run", "give a run id or --all, not both".into())),
    };
    let manager = cli.open_read()?;
    let got = manager.cancel_runs(target, wait)?;
    if cli.json {
        out.json(&Value::Array(
            got.iter()
                .map(|c| json!({"id": c.run.0, "status": c.status.as_str()}))
                .collect(),
        ))?;
    } else if all && got.is_empty() {
        out.line("no unfinished run to cancel")?;
    } else {
        for c in &got {
            if all {
                out.line(&format!("{}\t{}", c.run, c.status.as_str()))?;
            } else {
                out.line(c.status.as_str())?;
            }
        }
    }
    let failed: Vec<String> = got
        .iter()
        .filter(|c| c.status != RunStatus::Cancelled)
        .map(|c| {
            if c.status.is_final() {
                format!("run {} ended {} first", c.run, c.status.as_str())
            } else {
                format!(
                    "run {} is still {} (is its supervisor running?)",
                    c.run,
                    c.status.as_str()
                )
            }
        })
        .collect();
    if !failed.is_empty() {
        out.flush()?;
        // Refused by the runs' state (as a cancel of a finished run is): exit 5.
        eprintln!("error: not cancelled: {}", failed.join("; "));
        return Ok(5);
    }
    Ok(0)
}

/// `health`: seed 004's metrics over the runs, by this machine's clock.
pub fn health(cli: &Cli, out: &mut Out, stale_after: f64) -> Result<u8> {
    let stale_after = seconds("stale-after", stale_after, 31_536_000.0)?;
    let manager = cli.open_read()?;
    let h = manager.run_health(stale_after);
    if cli.json {
        out.json(&serde_json::to_value(&h)?)?;
        return Ok(0);
    }
    let stale = if h.stale_runs.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = h.stale_runs.iter().map(u64::to_string).collect();
        format!(" (runs {})", ids.join(", "))
    };
    out.line(&format!("runs: {}", h.total_sessions))?;
    out.line(&format!("healthy: {}", h.healthy_sessions))?;
    out.line(&format!(
        "stale: {}{stale} (no output for {} s)",
        h.stale_sessions,
        h.stale_after_ms as f64 / 1000.0
    ))?;
    out.line(&format!(
        "average peak memory: {:.1} MiB",
        h.average_memory_usage as f64 / (1u64 << 20) as f64
    ))?;
    let by: Vec<String> = h
        .sessions_by_status
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    out.line(&format!("by status: {}", by.join(", ")))?;
    Ok(0)
}

/// `logs`: the run's log file; with `follow`, new bytes until the run has ended.
pub fn logs(cli: &Cli, out: &mut Out, run: &str, follow: bool) -> Result<u8> {
    let id = run_id(run)?;
    let manager = cli.open_read()?;
    manager.run(id)?;
    let path = manager.run_log_path(id);
    drop(manager);
    out.flush()?;
    let mut pos = 0u64;
    let print_new = |pos: &mut u64| -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // Never through a link, regular files only (as `SessionManager::run_output`).
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !f.metadata()?.is_file() {
            return Err(anyhow::anyhow!("{} is not a regular file", path.display()));
        }
        f.seek(SeekFrom::Start(*pos))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        *pos += buf.len() as u64;
        let mut o = std::io::stdout().lock();
        o.write_all(&buf)?;
        o.flush()?;
        Ok(())
    };
    loop {
        let done = !follow || cli.open_read()?.run(id)?.status.is_final();
        print_new(&mut pos)?;
        if done {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
