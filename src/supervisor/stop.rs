//! Stopping a process group: SIGTERM, the grace period, SIGKILL (and the cgroup's `cgroup.kill`).

use std::time::{Duration, Instant};

use super::{cgroup, os};

/// Terminates group `pgid` (and the attempt's cgroup, if it has one): SIGTERM now,
/// SIGKILL (`cgroup.kill`) once `grace` has passed.
pub(super) struct Stopper {
    pub(super) pgid: u32,
    pub(super) grace: Duration,
    pub(super) term_at: Option<Instant>,
    pub(super) killed: bool,
    pub(super) cgroup: Option<cgroup::Cgroup>,
}

impl Stopper {
    pub(super) fn new(pgid: u32, grace: Duration, cgroup: Option<cgroup::Cgroup>) -> Stopper {
        Stopper {
            pgid,
            grace,
            term_at: None,
            killed: false,
            cgroup,
        }
    }

    pub(super) fn stop(&mut self) {
        if self.term_at.is_none() {
            os::signal_group(self.pgid, libc::SIGTERM);
            if let Some(c) = &self.cgroup {
                c.signal(libc::SIGTERM);
                c.signal(libc::SIGCONT);
            }
            // A stopped process acts on SIGTERM only once continued.
            os::signal_group(self.pgid, libc::SIGCONT);
            self.term_at = Some(Instant::now());
        }
    }

    pub(super) fn tick(&mut self) {
        if let Some(t) = self.term_at
            && !self.killed
            && t.elapsed() >= self.grace
        {
            self.kill_now();
        }
    }

    pub(super) fn kill_now(&mut self) {
        os::signal_group(self.pgid, libc::SIGKILL);
        if let Some(c) = &self.cgroup {
            c.kill();
        }
        self.killed = true;
    }

    /// Whether no live process of the group, nor any in the cgroup, is left.
    pub(super) fn empty(&self) -> bool {
        os::group_members(self.pgid).is_empty()
            && self.cgroup.as_ref().is_none_or(|c| c.members().is_empty())
    }

    /// Removes the attempt's cgroup (once its processes are gone).
    pub(super) fn release(&mut self) {
        if let Some(c) = self.cgroup.take() {
            if !c.members().is_empty() {
                c.kill();
            }
            c.remove();
        }
    }
}
