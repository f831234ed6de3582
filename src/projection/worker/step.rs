//! When and how the projector writes: the pass gate, the next wake-up, one step (sync the
//! log, write the files, the checkpoint), retries with backoff, publishing the status.

use std::io;
use std::time::{Duration, Instant};

use super::manifest;
use super::{MAX_RETRY_DELAY, Projection};
use crate::engine::Durability;
use crate::error::Error;
use crate::projection::Failure;

impl Projection {
    /// The earliest the next pass over the dirty files may start (`None`: no limit): no
    /// sooner than `coalesce_factor` times what the last pass took after it started, when
    /// that is longer than `flush_interval`. What [`Projection::gate`] does for one big
    /// file this does for many small ones: when thousands of files change round after
    /// round (10,000 sessions loaded in turns), each pass rewrites all of them, so passes
    /// are spaced by their cost; the projector spends at most about 1/`coalesce_factor`
    /// of its time writing while events keep coming, and each file collects the changes
    /// of that time into one rewrite. A waiter or the close still writes at once.
    pub(super) fn pass_gate(&self) -> Option<Instant> {
        let (start, took) = self.last_pass?;
        let wait = took.saturating_mul(self.options.coalesce_factor);
        (wait > self.options.flush_interval).then(|| start + wait)
    }

    pub(super) fn urgent(&self) -> bool {
        self.urgent > self.projected
    }

    pub(super) fn checkpoint_wanted(&self) -> bool {
        self.marker < self.received
    }

    pub(super) fn next_wake(&self) -> Option<Instant> {
        if let Some(t) = self.retry_at {
            return Some(t);
        }
        if self.urgent() && (self.has_file_work() || self.checkpoint_wanted()) {
            return Some(Instant::now());
        }
        let files = self
            .dirty_since
            .map(|t| t + self.options.flush_interval)
            .into_iter()
            .chain(self.gated_until)
            .min()
            .map(|t| self.pass_gate().map_or(t, |g| g.max(t)))
            .filter(|_| self.has_file_work());
        let checkpoint = self
            .checkpoint_wanted()
            .then(|| self.last_checkpoint + self.options.checkpoint_interval);
        match (files, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes whatever is due (everything when `finishing` or a waiter asked).
    pub(super) fn step(&mut self, finishing: bool) {
        let now = Instant::now();
        if !finishing && self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let urgent = finishing || self.urgent();
        let checkpoint_due = self.checkpoint_wanted()
            && (urgent || now >= self.last_checkpoint + self.options.checkpoint_interval);
        let files_due = self.has_file_work()
            && (urgent
                || self.retry_at.is_some()
                || self.absorbed_since_flush >= self.options.max_batch_events
                || (self.pass_gate().is_none_or(|t| now >= t)
                    && (self.gated_until.is_some_and(|t| now >= t)
                        || self
                            .dirty_since
                            .is_some_and(|t| now >= t + self.options.flush_interval))));
        if !files_due && !checkpoint_due {
            return;
        }
        // The state is taken before the log is synced: the sync then makes everything it
        // shows durable, while commands that commit meanwhile wait for the next step.
        let state = self.engine.state();
        let mut result = self.sync_log();
        let synced = result.is_ok();
        if synced && files_due {
            let start = Instant::now();
            result = self.flush_files(&state, urgent);
            self.last_pass = Some((start, start.elapsed()));
        }
        // A file that failed stays dirty and holds the watermark below its change: the
        // marker can still move up to it.
        if synced && checkpoint_due {
            let checkpointed = self.checkpoint();
            if result.is_ok() {
                result = checkpointed;
            }
        }
        // What was written may have moved the watermark.
        self.projected = self.projected.max(self.watermark());
        match result {
            Ok(()) => self.succeeded(),
            Err(f) => self.failed(f),
        }
    }

    /// In the buffered durability modes the published state may hold events that are not
    /// durable yet; the log is synced first so that projection files (and the marker) never
    /// reflect events a crash could still take back.
    pub(super) fn sync_log(&self) -> Result<(), Failure> {
        if self.engine.options().durability == Durability::Always {
            return Ok(());
        }
        match self.engine.sync() {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(Failure {
                op: "sync the log before projecting",
                path: self.engine.paths().wal.clone(),
                kind: io::ErrorKind::Other,
                message: e.to_string(),
            }),
        }
    }

    pub(super) fn succeeded(&mut self) {
        self.retry_at = None;
        self.blocked_by_foreign = false;
        if self.consecutive_failures > 0 {
            self.consecutive_failures = 0;
            self.shared.update(|p| {
                p.failure = None;
                p.status.consecutive_failures = 0;
                p.status.last_error = None;
            });
        }
    }

    pub(super) fn failed(&mut self, f: Failure) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.blocked_by_foreign = f.op == manifest::FOREIGN_OP;
        self.dirs_ready = false;
        let shift = self.consecutive_failures.saturating_sub(1).min(16);
        let delay = self
            .options
            .retry_delay
            .saturating_mul(1 << shift)
            .min(MAX_RETRY_DELAY);
        self.retry_at = Some(Instant::now() + delay);
        let err = f.to_error();
        tracing::warn!(
            error = %err,
            attempt = self.consecutive_failures,
            retry_in_ms = delay.as_millis() as u64,
            "projection write failed; will retry"
        );
        let give_up = self.consecutive_failures >= self.options.max_retries.max(1);
        let n = self.consecutive_failures;
        self.shared.update(|p| {
            p.status.failures += 1;
            p.status.consecutive_failures = n;
            p.status.last_error = Some(err.to_string());
            if give_up {
                p.failure = Some(f);
                p.failure_seq += 1;
            }
        });
    }

    pub(super) fn publish(&mut self) {
        // Absorbing events never lowers the watermark (their changes come after it), so
        // it is computed again only once files were written; `projected` says the same.
        if self.is_clean() {
            self.projected = self.projected.max(self.received);
        }
        let (projected, received, marker) = (self.projected, self.received, self.marker);
        self.shared.update(|p| {
            p.status.projected = projected;
            p.status.received = received;
            p.status.marker = marker;
        });
    }

    /// Drains and flushes after the engine closed; retries up to `max_retries` times.
    pub(super) fn finish(&mut self) {
        loop {
            self.step(true);
            // Nothing left to write ends it, even after a failure that left nothing owed
            // (a format switch that could not be recorded): a pass would do nothing and
            // never clear the failure.
            if self.is_clean() && self.marker >= self.received {
                break;
            }
            // A foreign file stays until somebody moves it: the next open tries again.
            if self.consecutive_failures >= self.options.max_retries.max(1)
                || self.blocked_by_foreign
            {
                break;
            }
            let wait = self.retry_at.map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(Instant::now())
            });
            std::thread::sleep(wait);
        }
        // What the manifest learnt last (a failed write's records included) is durable
        // after a clean close.
        if let Err(f) = self.commit_manifest(true, false) {
            tracing::warn!(error = %f.to_error(), "projections: cannot write the manifest");
        }
        self.publish();
        self.shared.update(|p| p.status.running = false);
    }
}
