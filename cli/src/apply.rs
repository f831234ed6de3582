//! `apply`: the JSON-lines scripting and bulk-load interface.
//!
//! A reader thread parses each stdin line and submits it to the engine at once, so lines
//! that arrive together are validated in order and share one fsync (group commit). The
//! main thread answers in input order, each answer only once its command is durable, and
//! flushes stdout before it waits for anything, so a caller that sends one line and waits
//! for its answer is never kept waiting. The line protocol is documented in
//! `session_engine::protocol`.

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use crossbeam_channel::{TryRecvError, bounded};
use session_engine::protocol::{self, MAX_LINE_LEN};
use session_engine::{Error, Pending};

use crate::args::Cli;
use crate::output::Out;

enum Item {
    Submitted(Pending),
    /// A command run on the reader's thread, with its answer.
    Done(session_engine::Result<session_engine::Committed>),
    Refused(Error),
    /// A run op: answered once every line before it is, then `done` lets the reader
    /// go on, so it sees the effects of the lines before it and none after.
    RunOp(protocol::Request, crossbeam_channel::Sender<()>),
}

/// Reads one line (without its newline) into `buf`, keeping at most `max` bytes and
/// discarding the rest. Returns `None` at the end of input, `Some(too_long)` otherwise.
fn read_line_bounded(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = max.saturating_sub(buf.len());
        if part.len() > room {
            too_long = true;
        }
        buf.extend_from_slice(&part[..part.len().min(room)]);
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(too_long));
        }
    }
}

fn parse(raw: &[u8], too_long: bool) -> Result<protocol::Request, Error> {
    if too_long {
        return Err(Error::InvalidInput {
            field: "line",
            reason: format!("longer than the limit of {MAX_LINE_LEN} bytes"),
        });
    }
    let line = std::str::from_utf8(raw).map_err(|e| Error::InvalidInput {
        field: "line",
        reason: format!("not UTF-8: {e}"),
    })?;
    protocol::parse_request(line)
}

/// Whether an error means the engine itself failed (rather than refusing one command).
fn engine_failed(e: &Error) -> bool {
    !e.is_refusal()
}

pub fn run(cli: &Cli, out: &mut Out) -> Result<u8> {
    let mut options = cli.options();
    options.watchdog_interval = Some(Duration::from_secs(1));
    let manager = Arc::new(cli.open_write_with(options)?);
    let (tx, rx) = bounded::<Item>(manager.engine().options().max_batch.max(1) * 4);
    // How many items the main thread has answered and flushed to stdout, stored when it
    // goes idle: while it equals the number the reader has sent, the main thread has
    // nothing left to write and writes nothing until the reader sends more.
    let flushed = Arc::new(AtomicU64::new(0));
    // Detached, so that a closed stdout can end the command even while the reader is
    // blocked on an idle stdin.
    let reader = {
        let manager = Arc::clone(&manager);
        let flushed = Arc::clone(&flushed);
        std::thread::spawn(move || -> io::Result<()> {
            let stdin = io::stdin();
            let mut r = io::BufReader::with_capacity(1 << 16, stdin.lock());
            let mut buf = Vec::new();
            let mut answer = String::with_capacity(64);
            let mut sent: u64 = 0;
            while let Some(too_long) = read_line_bounded(&mut r, &mut buf, MAX_LINE_LEN)? {
                let item = match parse(&buf, too_long) {
                    // Nothing more has arrived: the line is run on this thread (a lone
                    // writer's command runs its own batch, `Engine::execute`), which
                    // saves waking the writer thread for a caller that writes one line
                    // and waits for its answer. Lines that arrived together are
                    // submitted, so they share one sync.
                    Ok(protocol::Request::Command(cmd)) if r.buffer().is_empty() => {
                        match manager.engine().execute(cmd) {
                            // Every earlier answer is out: this thread writes this one
                            // itself, saving the caller a wake of the main thread.
                            Ok(c) if flushed.load(Ordering::Acquire) == sent => {
                                answer.clear();
                                protocol::write_answer_ok(&c, &mut answer);
                                answer.push('\n');
                                let mut stdout = io::stdout().lock();
                                stdout.write_all(answer.as_bytes())?;
                                stdout.flush()?;
                                continue;
                            }
                            done => Item::Done(done),
                        }
                    }
                    Ok(protocol::Request::Command(cmd)) => {
                        Item::Submitted(manager.engine().submit(cmd))
                    }
                    Ok(req) => {
                        let (done_tx, done_rx) = bounded(1);
                        if tx.send(Item::RunOp(req, done_tx)).is_err() || done_rx.recv().is_err() {
                            break;
                        }
                        sent += 1;
                        continue;
                    }
                    Err(e) => Item::Refused(e),
                };
                if tx.send(item).is_err() {
                    break;
                }
                sent += 1;
            }
            Ok(())
        })
    };
    let mut failure: Option<String> = None;
    let mut resumed = Vec::new();
    let answered = answer_all(&manager, &rx, &flushed, out, &mut failure, &mut resumed);
    drop(rx);
    if let Err(e) = answered {
        manager.close()?;
        return Err(e);
    }
    match reader.join() {
        // Kept as the `io::Error` itself, so that a closed stdout is still recognised.
        Ok(r) => r.map_err(|e| anyhow::Error::from(e).context("apply's stdin reader"))?,
        Err(_) => return Err(anyhow!("the stdin reader panicked")),
    }
    out.flush()?;
    // The runs a `resume_runs` line started are supervised by this process: it ends only
    // with them (closing the engine under them would kill them).
    for h in resumed {
        if let Err(e) = h.wait() {
            note_failure(&e, &mut failure);
        }
    }
    manager.close()?;
    match failure {
        Some(cause) => Err(anyhow!(
            "the engine failed while applying commands: {cause}"
        )),
        None => Ok(0),
    }
}

/// Writes the answers in input order until the reader is done.
fn answer_all(
    manager: &session_engine::SessionManager,
    rx: &crossbeam_channel::Receiver<Item>,
    flushed: &AtomicU64,
    out: &mut Out,
    failure: &mut Option<String>,
    resumed: &mut Vec<session_engine::RunHandle>,
) -> Result<()> {
    let mut line = String::with_capacity(64);
    let mut answered: u64 = 0;
    loop {
        let item = match rx.try_recv() {
            Ok(i) => i,
            Err(TryRecvError::Empty) => {
                out.flush()?;
                flushed.store(answered, Ordering::Release);
                match rx.recv() {
                    Ok(i) => i,
                    Err(_) => return Ok(()),
                }
            }
            Err(TryRecvError::Disconnected) => return Ok(()),
        };
        answered += 1;
        let answer = match item {
            Item::Refused(e) => Err(e),
            Item::RunOp(req, done) => {
                // Every line before it is answered (and so durable): it may take long
                // (`exec` answers once its run has ended; the reader waits for `done`, so
                // the lines after it are read only then).
                out.flush()?;
                let v = if matches!(req, protocol::Request::ResumeRuns) {
                    // Answered at once, as the protocol says; waited for at the end.
                    match manager.resume_runs_with_handles() {
                        Ok(handles) => {
                            let ids: Vec<u64> = handles.iter().map(|h| h.id().0).collect();
                            resumed.extend(handles);
                            serde_json::json!({"ok": true, "resumed": ids})
                        }
                        Err(e) => {
                            note_failure(&e, failure);
                            protocol::answer_err(&e)
                        }
                    }
                } else {
                    protocol::run_op(manager, &req).unwrap_or_else(|e| {
                        note_failure(&e, failure);
                        protocol::answer_err(&e)
                    })
                };
                out.json(&v)?;
                let _ = done.send(());
                continue;
            }
            Item::Submitted(p) => {
                if !p.is_ready() {
                    out.flush()?;
                }
                p.wait()
            }
            Item::Done(r) => r,
        };
        match answer {
            Ok(c) => {
                // The common answer, written without building a JSON value.
                line.clear();
                protocol::write_answer_ok(&c, &mut line);
                out.line(&line)?;
            }
            Err(e) => {
                note_failure(&e, failure);
                out.json(&protocol::answer_err(&e))?;
            }
        }
    }
}

/// Keeps the first error that means the engine itself failed.
fn note_failure(e: &Error, failure: &mut Option<String>) {
    if engine_failed(e) && failure.is_none() {
        *failure = Some(e.to_string());
    }
}
