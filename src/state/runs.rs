//! How run events change the state: each run's status and counters (see `run`).

use std::sync::Arc;

use super::{ApplyError, State, fail};
use crate::event::EventBody;
use crate::run::{EndedBy, ExitKind, MAX_CHUNK, Run, RunHealth, RunId, RunStatus};
use crate::types::Timestamp;

impl State {
    /// A run by id.
    pub fn run(&self, id: RunId) -> Option<&Arc<Run>> {
        self.runs.get(&id)
    }

    /// The id the next requested run gets.
    pub fn next_run_id(&self) -> RunId {
        RunId(self.runs.keys().next_back().map_or(1, |r| r.0 + 1))
    }

    /// Runs no supervisor has finished (pending, running or recovering).
    pub fn unfinished_runs(&self) -> impl Iterator<Item = &Arc<Run>> {
        self.runs.values().filter(|r| !r.status.is_final())
    }

    /// Seed 004's health metrics over the runs at `now`: a running run is stale when it
    /// has shown no sign of life (start or output event) for more than `stale_after_ms`.
    /// Pure: the time is the caller's.
    pub fn run_health(&self, now: Timestamp, stale_after_ms: u64) -> RunHealth {
        let mut by_status: std::collections::BTreeMap<&'static str, u64> =
            RunStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let (mut healthy, mut stale_runs) = (0, Vec::new());
        let (mut rss_sum, mut rss_n, mut cpu) = (0u64, 0u64, 0u64);
        for r in self.runs.values() {
            *by_status.entry(r.status.as_str()).or_insert(0) += 1;
            if r.is_stale(now, stale_after_ms) {
                stale_runs.push(r.id.0);
            } else if r.status == RunStatus::Running {
                healthy += 1;
            }
            if r.exit.is_some() {
                rss_sum = rss_sum.saturating_add(r.usage.max_rss_kb.saturating_mul(1024));
                rss_n += 1;
            }
            cpu = cpu.saturating_add(r.usage.user_us.saturating_add(r.usage.sys_us));
        }
        RunHealth {
            total_sessions: self.runs.len() as u64,
            healthy_sessions: healthy,
            stale_sessions: stale_runs.len() as u64,
            average_memory_usage: rss_sum.checked_div(rss_n).unwrap_or(0),
            sessions_by_status: by_status,
            stale_runs,
            stale_after_ms,
            at: now.0,
            total_cpu_us: cpu,
        }
    }

    /// The last output times state schema 4 stores: `(run, time)` of every run with one,
    /// in id order.
    pub(crate) fn runs_last_output(&self) -> Vec<(RunId, Timestamp)> {
        self.runs
            .values()
            .filter_map(|r| r.last_output_at.map(|t| (r.id, t)))
            .collect()
    }

    /// Puts back the last output times a state schema 4 snapshot stores.
    pub(crate) fn attach_runs_last_output(
        &mut self,
        times: Vec<(RunId, Timestamp)>,
    ) -> Result<(), ApplyError> {
        let mut prev = None;
        for (id, t) in times {
            if prev.is_some_and(|p| p >= id) {
                return fail("last output times out of run id order");
            }
            prev = Some(id);
            let Some(r) = self.runs.get_mut(&id) else {
                return fail(format!("a last output time names no run ({id})"));
            };
            Arc::make_mut(r).last_output_at = Some(t);
        }
        Ok(())
    }

    fn run_mut(&mut self, id: RunId, allowed: &[RunStatus]) -> Result<&mut Run, ApplyError> {
        let Some(r) = self.runs.get_mut(&id) else {
            return fail(format!("run {id} does not exist"));
        };
        if !allowed.contains(&r.status) {
            return fail(format!("run {id} is {}", r.status.as_str()));
        }
        Ok(Arc::make_mut(r))
    }

    pub(super) fn apply_run(&mut self, at: Timestamp, body: &EventBody) -> Result<(), ApplyError> {
        use RunStatus::*;
        match body {
            EventBody::RunRequested { run, session, spec } => {
                if *run != self.next_run_id() {
                    return fail(format!("run {run} is not the next run id"));
                }
                if self.sessions.get(session).is_none() {
                    return fail(format!("session {session} does not exist"));
                }
                self.runs.insert(
                    *run,
                    Arc::new(Run {
                        id: *run,
                        session: session.clone(),
                        spec: (**spec).clone(),
                        status: Pending,
                        attempts: 0,
                        requested_at: at,
                        started_at: None,
                        ended_at: None,
                        process: None,
                        exit: None,
                        ended_by: None,
                        duration_ms: 0,
                        usage: Default::default(),
                        output_chunks: 0,
                        output_kept: 0,
                        output_dropped: 0,
                        error: None,
                        last_output_at: None,
                    }),
                );
            }
            EventBody::RunStarted(s) => {
                let r = self.run_mut(s.run, &[Pending, Recovering])?;
                if s.attempt != r.attempts + 1 {
                    return fail(format!(
                        "run {} has no attempt {} to start",
                        s.run, s.attempt
                    ));
                }
                r.attempts = s.attempt;
                r.status = Running;
                r.started_at = Some(at);
                r.process = Some((**s).clone());
                r.exit = None;
                r.ended_by = None;
                r.error = None;
            }
            EventBody::RunOutput {
                run,
                attempt,
                bytes,
                ..
            } => {
                let r = self.run_mut(*run, &[Running])?;
                if *attempt != r.attempts || bytes.len() > MAX_CHUNK {
                    return fail(format!("run {run}: an output chunk that does not fit"));
                }
                r.output_chunks += 1;
                r.output_kept += bytes.len() as u64;
                r.last_output_at = Some(at);
            }
            EventBody::RunExited(e) => {
                let r = self.run_mut(e.run, &[Running])?;
                if e.attempt != r.attempts {
                    return fail(format!(
                        "run {} has no attempt {} running",
                        e.run, e.attempt
                    ));
                }
                r.status = match (e.retry, e.ended_by, e.exit) {
                    (true, _, _) => Recovering,
                    (false, Some(EndedBy::Timeout), _) => Timeout,
                    (false, Some(EndedBy::Cancel), _) => Cancelled,
                    (false, _, ExitKind::Code(0)) => Completed,
                    (false, _, _) => Failed,
                };
                r.exit = Some(e.exit);
                r.ended_by = e.ended_by;
                r.duration_ms = e.duration_ms;
                r.usage = e.usage;
                r.output_dropped += e.output_dropped;
                if r.status.is_final() {
                    r.ended_at = Some(at);
                }
            }
            EventBody::RunSpawnFailed {
                run,
                attempt,
                error,
                retry,
            } => {
                let r = self.run_mut(*run, &[Pending, Recovering])?;
                if *attempt != r.attempts + 1 {
                    return fail(format!("run {run} has no attempt {attempt} to start"));
                }
                r.attempts = *attempt;
                r.status = if *retry { Recovering } else { Failed };
                r.error = Some(error.clone());
                if !retry {
                    r.ended_at = Some(at);
                }
            }
            EventBody::RunInterrupted {
                run,
                reason,
                cancelled,
            } => {
                let r = self.run_mut(*run, &[Pending, Running, Recovering])?;
                r.status = if *cancelled { Cancelled } else { Interrupted };
                r.error = Some(reason.clone());
                r.ended_at = Some(at);
            }
            EventBody::RunRecovering { run, reason } => {
                // Waits for its next attempt (event schema 6): its attempts so far stay.
                let r = self.run_mut(*run, &[Pending, Running, Recovering])?;
                r.status = Recovering;
                r.error = Some(reason.clone());
            }
            EventBody::RunContained { run, attempt, .. } => {
                // Recorded between the spawn and `RunStarted`: the state keeps no more
                // of it than the check (the log has it).
                let r = self.run_mut(*run, &[Pending, Recovering])?;
                if *attempt != r.attempts + 1 {
                    return fail(format!("run {run} has no attempt {attempt} starting"));
                }
            }
            other => return fail(format!("{} is not a run event", other.type_name())),
        }
        Ok(())
    }

    /// Puts the runs a state schema 3 snapshot stores after the state back in.
    pub(crate) fn attach_runs(&mut self, runs: Vec<Run>) -> Result<(), ApplyError> {
        for r in runs {
            if self.sessions.get(&r.session).is_none() {
                return fail(format!("run {} names no session", r.id));
            }
            if self.runs.insert(r.id, Arc::new(r)).is_some() {
                return fail("a run is stored twice");
            }
        }
        Ok(())
    }
}
