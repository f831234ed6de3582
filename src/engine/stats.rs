//! The writer's counters, for monitoring (the service exports them at `/metrics`):
//! records appended, appends (one per group commit), log syncs, the group-commit size and
//! the time each append took until durable, and how long the open took. Kept in atomics
//! that the writer thread updates after each batch; reading them never stops the writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (µs) of the append-latency buckets; a last bucket holds the rest.
pub const APPEND_BOUNDS_US: [u64; 14] = [
    25, 50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800,
];

/// Upper bounds (records) of the group-commit-size buckets; a last bucket holds the rest.
pub const BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram with fixed bounds: `counts[i]` holds the observations `v` with
/// `bounds[i - 1] < v <= bounds[i]`, and its last element those above every bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// The upper bound of each bucket but the last.
    pub bounds: &'static [u64],
    /// Observations per bucket (not cumulative), `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
    /// The sum of every observation, in the histogram's unit.
    pub sum: u64,
}

impl Histogram {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What [`Engine::stats`](crate::Engine::stats) returns: counts since this engine opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStats {
    /// Records (events) appended to the log.
    pub records: u64,
    /// Appends: one per batch of records written together (a group commit).
    pub appends: u64,
    /// Syncs of the log (fdatasync on the file log), whatever asked for them.
    pub syncs: u64,
    /// Records per append.
    pub batch_size: Histogram,
    /// Time from the start of an append to its records being durable as the durability
    /// mode asks (with `Always`, the write and the sync), in µs.
    pub append_latency_us: Histogram,
    /// How long the open took: recovery (snapshot and replay of the log's tail) included.
    pub open_time: Duration,
    /// Records replayed at the open, after the snapshot.
    pub replayed: u64,
    /// Records other writers appended to the log, taken in by [`Engine::catch_up`](crate::Engine::catch_up).
    pub caught_up: u64,
    /// Batches a remote log refused because another writer appended first, with nothing
    /// of them stored (their commands refused with `LogConflict`, the engine still
    /// writable).
    pub conflicts: u64,
}

#[derive(Debug)]
struct AtomicHistogram<const N: usize> {
    bounds: &'static [u64; N],
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl<const N: usize> AtomicHistogram<N> {
    fn new(bounds: &'static [u64; N]) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=N).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    fn read(&self) -> Histogram {
        Histogram {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// The live counters, in the engine's shared part.
#[derive(Debug)]
pub(crate) struct StatsCell {
    records: AtomicU64,
    appends: AtomicU64,
    syncs: AtomicU64,
    batch_size: AtomicHistogram<11>,
    append_latency_us: AtomicHistogram<14>,
    open_time_us: AtomicU64,
    replayed: AtomicU64,
    caught_up: AtomicU64,
    conflicts: AtomicU64,
}

impl StatsCell {
    pub(crate) fn new() -> StatsCell {
        StatsCell {
            records: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            batch_size: AtomicHistogram::new(&BATCH_BOUNDS),
            append_latency_us: AtomicHistogram::new(&APPEND_BOUNDS_US),
            open_time_us: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
        }
    }

    /// An append of `records` records that took `took` until durable.
    pub(crate) fn appended(&self, records: u64, took: Duration) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.batch_size.observe(records);
        self.append_latency_us
            .observe(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// `records` records of other writers taken in by a catch-up.
    pub(crate) fn caught_up(&self, records: u64) {
        self.caught_up.fetch_add(records, Ordering::Relaxed);
    }

    /// A batch refused by a conflict, nothing of it stored.
    pub(crate) fn conflicted(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn synced(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn opened(&self, took: Duration, replayed: u64) {
        self.open_time_us.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.replayed.store(replayed, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> EngineStats {
        EngineStats {
            records: self.records.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            batch_size: self.batch_size.read(),
            append_latency_us: self.append_latency_us.read(),
            open_time: Duration::from_micros(self.open_time_us.load(Ordering::Relaxed)),
            replayed: self.replayed.load(Ordering::Relaxed),
            caught_up: self.caught_up.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_upper_bound() {
        let h = AtomicHistogram::new(&BATCH_BOUNDS);
        for v in [1, 2, 3, 16, 17, 1024, 1025, 5000] {
            h.observe(v);
        }
        let r = h.read();
        let mut want = vec![0; BATCH_BOUNDS.len() + 1];
        want[0] = 1; // 1
        want[1] = 1; // 2
        want[2] = 1; // 3 (<= 4)
        want[4] = 1; // 16
        want[5] = 1; // 17 (<= 32)
        want[10] = 1; // 1024
        want[11] = 2; // 1025, 5000
        assert_eq!(r.counts, want);
        assert_eq!(r.count(), 8);
        assert_eq!(r.sum, 1 + 2 + 3 + 16 + 17 + 1024 + 1025 + 5000);
    }
}
