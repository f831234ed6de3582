//! Reconciling, at a writable open, the runs no supervisor finished.

use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::Result;
use crate::event::EventBody;
use crate::run::{Run, RunId, is_secret_name};

use super::stop::Stopper;
use super::{TICK, cancel_path, cgroup, clear_cancel, os, record};

/// Why run `run`, found unfinished at an open, may not be repeated; `None` when it may:
/// its policy says it is safe to repeat, it has attempts left under its retry policy,
/// and its environment held no secret (the log holds its spec redacted, so it could not
/// be repeated as asked). A cancel asked for it is the caller's check.
pub(crate) fn not_repeatable(run: &Run) -> Option<&'static str> {
    let retry = &run.spec.retry;
    if !retry.safe_to_repeat {
        Some("it is not safe to repeat")
    } else if run.attempts >= retry.max_retries.saturating_add(1) {
        Some("it has no attempt left")
    } else if run.spec.env.iter().any(|(k, _)| is_secret_name(k)) {
        Some("its environment held a secret, which the log does not keep")
    } else {
        None
    }
}

/// Whether a cancel of run `id` was asked for by file (`runs/<id>.cancel`).
pub(crate) fn cancel_requested(root: &std::path::Path, id: RunId) -> bool {
    std::fs::symlink_metadata(cancel_path(root, id)).is_ok_and(|m| m.is_file())
}

/// Finishes, at a writable open, every run no supervisor finished: a process still the
/// one recorded (same pid, start time and boot id) is killed with its group (SIGTERM,
/// the run's grace period, SIGKILL); then the run is recorded as interrupted unless it
/// may be repeated ([`not_repeatable`]): then as cancelled when a cancel was asked for
/// it, else as recovering (`RunRecovering`: it waits for its next attempt, see
/// `SessionManager::resume_runs`). Returns the runs left recovering, in id
/// order.
pub(crate) fn reconcile(engine: &Engine) -> Result<Vec<RunId>> {
    let state = engine.state();
    let boot = os::boot_id();
    let root = engine.paths().root.clone();
    let mut recovering = Vec::new();
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
        let body = if let Some(why) = not_repeatable(run) {
            EventBody::RunInterrupted {
                run: run.id,
                reason: format!("{reason}; it is not repeated: {why}"),
                cancelled: false,
            }
        } else if cancel_requested(&root, run.id) {
            // It could have been repeated: the cancel is what ends it.
            EventBody::RunInterrupted {
                run: run.id,
                reason: format!("{reason}; a cancel was asked for it: it is not repeated"),
                cancelled: true,
            }
        } else {
            recovering.push(run.id);
            EventBody::RunRecovering {
                run: run.id,
                reason: format!(
                    "{reason}; it is safe to repeat: attempt {} will be started when the \
                     runs are resumed",
                    run.attempts + 1
                ),
            }
        };
        let ended = !matches!(body, EventBody::RunRecovering { .. });
        record(engine, body)?;
        if ended {
            // A cancel asked for a run left recovering is `resume_runs`'s to honour.
            clear_cancel(&root, run.id);
        }
    }
    Ok(recovering)
}
