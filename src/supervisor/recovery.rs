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

/// The end of the reason `reconcile` records in a `RunRecovering` of a run whose next
/// attempt is `attempt`.
fn resume_note(attempt: u32) -> String {
    format!("it is safe to repeat: attempt {attempt} will be started when the runs are resumed")
}

/// Whether run `run`, recovering, was left so by an earlier `reconcile` (its last step
/// is a `RunRecovering`) rather than by its supervisor between two attempts (a retry's
/// `RunExited` or `RunSpawnFailed`, the supervisor dead in the backoff), told from the
/// state alone:
/// * no attempt yet: only `RunRecovering` makes a run recovering before its first one;
/// * no error: a retry's `RunExited` leaves none (`RunStarted` clears it), while
///   `RunRecovering` always records its reason;
/// * an error and the last attempt started (`process` is of attempt `attempts`): its
///   `RunExited` recorded no error, so the error is a later `RunRecovering`'s;
/// * an error and the last attempt failed to start (`RunSpawnFailed` recorded its error):
///   reconciled since only if the error is the reason `reconcile` records, which ends
///   with [`resume_note`] of the next attempt (a spawn error never does).
fn already_reconciled(run: &Run) -> bool {
    if run.status != crate::run::RunStatus::Recovering {
        return false;
    }
    if run.attempts == 0 {
        return true;
    }
    let Some(error) = run.error.as_deref() else {
        return false;
    };
    match &run.process {
        Some(p) if p.attempt == run.attempts => true,
        _ => error.ends_with(&resume_note(run.attempts + 1)),
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
/// `SessionManager::resume_runs`). A run an earlier open already left recovering
/// ([`already_reconciled`]) is not recorded again (every CLI command is an open), unless
/// a cancel was asked for it or processes were left in its cgroups (then its new reason
/// is recorded). Returns the runs left recovering, in id order, those included.
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
        if left == 0 && already_reconciled(run) && !cancel_requested(&root, run.id) {
            // Its `RunRecovering` is recorded: it still waits for `resume_runs`.
            recovering.push(run.id);
            continue;
        }
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
                reason: format!("{reason}; {}", resume_note(run.attempts + 1)),
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

/// Whether each of `runs` asked for a cgroup per attempt (`ExecRequest::cgroup`), as its
/// log shows: the supervisor records `RunContained` before `RunStarted` of every attempt
/// of a run that asked for one (its cgroup or the fallback's reason), and never for one
/// that did not (`exec --no-cgroup`). The run's first started attempt decides; a run
/// that never started has no record of its choice and gets the default (true). The
/// choice is in neither the spec nor the state (their encodings would change), so this
/// reads the log from its start up to the first started attempt of the last of `runs`
/// to start: only `SessionManager::resume_runs` asks, for the runs it resumes.
pub(crate) fn cgroup_choices(
    engine: &Engine,
    runs: &[RunId],
) -> Result<std::collections::BTreeMap<RunId, bool>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut undecided: BTreeSet<RunId> = runs.iter().copied().collect();
    let mut contained: BTreeSet<(RunId, u32)> = BTreeSet::new();
    let mut choices: BTreeMap<RunId, bool> = BTreeMap::new();
    if !undecided.is_empty() {
        engine.read_log(crate::types::Lsn(1), engine.last_lsn(), |_, event| {
            match &event.body {
                EventBody::RunContained { run, attempt, .. } if undecided.contains(run) => {
                    contained.insert((*run, *attempt));
                }
                EventBody::RunStarted(s) if undecided.remove(&s.run) => {
                    choices.insert(s.run, contained.contains(&(s.run, s.attempt)));
                }
                _ => {}
            }
            Ok(!undecided.is_empty())
        })?;
    }
    for id in runs {
        choices.entry(*id).or_insert(true);
    }
    Ok(choices)
}
