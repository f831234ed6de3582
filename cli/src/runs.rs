//! `exec`, `runs`, `cancel`, `logs`: supervised runs (issue 17) from the command line.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use crate::args::{Cli, ExecArgs};
use crate::output::Out;
use session_engine::run::{ExitKind, Limits, RetryPolicy, Run, RunId, RunStatus, Stream};
use session_engine::{ClaudeRequest, Error, ExecRequest, RunFilter, SessionId, supervisor};

fn run_id(s: &str) -> Result<RunId> {
    Ok(s.parse::<RunId>()?)
}

fn invalid(field: &'static str, reason: String) -> anyhow::Error {
    Error::InvalidInput { field, reason }.into()
}

/// One run as JSON.
pub fn run_json(r: &Run) -> Value {
    json!({
        "id": r.id.0,
        "session": r.session.as_str(),
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "program": r.spec.program,
        "args": r.spec.args,
        "cwd": r.spec.cwd,
        "exit_code": match r.exit { Some(ExitKind::Code(c)) => json!(c), _ => Value::Null },
        "signal": match r.exit { Some(ExitKind::Signal(s)) => json!(s), _ => Value::Null },
        "ended_by": r.ended_by.map(|e| format!("{e:?}").to_lowercase()),
        "pid": r.process.as_ref().map(|p| p.pid),
        "duration_ms": r.duration_ms,
        "user_cpu_us": r.usage.user_us,
        "sys_cpu_us": r.usage.sys_us,
        "max_rss_kb": r.usage.max_rss_kb,
        "output_chunks": r.output_chunks,
        "output_kept": r.output_kept,
        "output_dropped": r.output_dropped,
        "error": r.error,
    })
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
        safe_to_repeat: false,
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
    eprintln!("session-engine: run {id} {}", run.status.as_str());
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

/// `cancel`: asks the supervising process, then waits for the run to be recorded as
/// ended (at most its grace period and 10 s more).
pub fn cancel(cli: &Cli, out: &mut Out, run: &str) -> Result<u8> {
    let id = run_id(run)?;
    let manager = cli.open_read()?;
    let r = manager.run(id)?;
    if r.status.is_final() {
        return Err(Error::InvalidState {
            session: format!("run {id}"),
            op: "cancel",
            reason: format!("it is {}", r.status.as_str()),
        }
        .into());
    }
    supervisor::request_cancel(&cli.data_dir, id)?;
    let until =
        Instant::now() + Duration::from_millis(r.spec.limits.grace_ms()) + Duration::from_secs(10);
    drop(manager);
    loop {
        let r = cli.open_read()?.run(id)?;
        if r.status.is_final() {
            out.line(r.status.as_str())?;
            return Ok(0);
        }
        if Instant::now() > until {
            return Err(anyhow::anyhow!(
                "run {id} is still {} (is its supervisor running?)",
                r.status.as_str()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
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
