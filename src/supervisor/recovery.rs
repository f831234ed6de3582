//! Reconciling, at a writable open, the runs no supervisor finished.

use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::Result;
use crate::event::EventBody;
use crate::run::RunId;

use super::stop::Stopper;
use super::{TICK, cgroup, clear_cancel, os, record};

/// Finishes, at a writable open, every run no supervisor finished: a process still the
/// one recorded (same pid, start time and boot id) is killed with its group (SIGTERM,
/// the run's grace period, SIGKILL); then the run is recorded as interrupted. Returns
/// the runs reconciled.
pub(crate) fn reconcile(engine: &Engine) -> Result<Vec<RunId>> {
    let state = engine.state();
    let boot = os::boot_id();
    let mut done = Vec::new();
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
        record(
            engine,
            EventBody::RunInterrupted {
                run: run.id,
                reason,
                cancelled: false,
            },
        )?;
        clear_cancel(&engine.paths().root, run.id);
        done.push(run.id);
    }
    Ok(done)
}
