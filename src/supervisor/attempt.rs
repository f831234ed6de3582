//! One attempt of a run: its cgroup, its process, its capture threads, and the loop that
//! watches it to its end.

use std::fs::File;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use process_wrap::std::ChildWrapper;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::EventBody;
use crate::run::{EndedBy, ExitKind, Exited, RunId, Started, Stream, Usage};

use super::spawn::{reader, retry_transient, spawn, spawn_thread};
use super::stop::Stopper;
use super::{Job, Msg, RUNS_DIR, SMALL_STACK, TICK, cancel_asked, capture, cgroup, os, record};
use capture::Capture;

/// The attempt's cgroup, when asked for and one can be made; else why not.
pub(super) fn attempt_cgroup(
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
pub(super) fn run_attempt(
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
pub(super) fn start_threads(
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

pub(super) fn watch(
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
                // The run's log file first: what the caller is shown is in it, even if
                // this process is killed the next moment.
                capture.push(log, stream, &bytes).map_err(io_err)?;
                if let Some(sink) = &job.sink {
                    sink(stream, &bytes);
                }
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
pub(super) fn limit_that_ended(
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
