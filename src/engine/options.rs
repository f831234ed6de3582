//! How an engine is opened: [`Options`], [`Durability`], the limits, [`Paths`], and what
//! recovery reports ([`RecoveryReport`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{LogBackend, TornTail};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::snapshot::SkippedSnapshot;
use crate::storage::{FileStorage, Storage};
use crate::types::Lsn;

/// When an accepted command counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Answer only after `fdatasync`. Concurrent callers share fsyncs (group commit).
    Always,
    /// Answer after the write reaches the OS; sync at most this long after it.
    Interval(Duration),
    /// Answer after the write reaches the OS; sync only at rollover and close.
    None,
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// When a command counts as durable.
    pub durability: Durability,
    /// Size of each preallocated log segment, [`MIN_SEGMENT_BYTES`] to
    /// [`MAX_SEGMENT_BYTES`] (default [`DEFAULT_SEGMENT_BYTES`]).
    pub segment_bytes: u64,
    /// Take a snapshot automatically after this many events (0: never automatically;
    /// default [`DEFAULT_SNAPSHOT_EVERY`]).
    pub snapshot_every: u64,
    /// Snapshots to keep (older ones are the fallback for a damaged newer one).
    pub keep_snapshots: usize,
    /// Most commands the writer takes into one batch.
    pub max_batch: usize,
    /// A batch takes no more commands once its records reach this many bytes. With
    /// `max_batch`, it bounds what a torn write can cut from an `Always` log after a crash:
    /// the last batch, at most `max_batch` records and `max_batch_bytes` plus one record.
    pub max_batch_bytes: usize,
    /// How often the watchdog records the expiry of idle sessions (`None`: never).
    pub watchdog_interval: Option<Duration>,
    /// The file system.
    pub storage: Arc<dyn Storage>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The log. `None`: the write-ahead log in the data directory's `wal/`
    /// ([`crate::backend::FileLog`]), the default; another [`LogBackend`] (such as [`crate::backend::MemLog`])
    /// takes its place without any other change.
    pub log: Option<Arc<dyn LogBackend>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Always,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            keep_snapshots: 3,
            max_batch: 4096,
            max_batch_bytes: 256 << 10,
            watchdog_interval: Some(Duration::from_secs(1)),
            storage: Arc::new(FileStorage::new()),
            clock: Arc::new(SystemClock),
            log: None,
        }
    }
}

/// The default `Options::segment_bytes`: 16 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// The default `Options::snapshot_every`: 100,000 events.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;
/// Smallest accepted log segment (`Options::segment_bytes`): 4 KiB.
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Largest accepted log segment (`Options::segment_bytes`): 1 GiB.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Largest accepted batch (`Options::max_batch`).
pub const MAX_BATCH: usize = 1 << 20;
/// Largest accepted `Options::max_batch_bytes` (64 MiB).
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// Longest accepted sync interval or watchdog interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

impl Options {
    /// Checks the settings: intervals must lie between 1 ms and [`MAX_INTERVAL`] (a zero
    /// interval would spin, and a huge one overflow the clock); segments between 4 KiB and
    /// [`MAX_SEGMENT_BYTES`]; batches between 1 and [`MAX_BATCH`] commands.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(Error::invalid(
                "segment size",
                format!(
                    "{} bytes is not between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}",
                    self.segment_bytes
                ),
            ));
        }
        if !(1..=MAX_BATCH_BYTES).contains(&self.max_batch_bytes) {
            return Err(Error::invalid(
                "batch bytes",
                format!(
                    "{} is not between 1 and {MAX_BATCH_BYTES}",
                    self.max_batch_bytes
                ),
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.max_batch) {
            return Err(Error::invalid(
                "batch size",
                format!("{} is not between 1 and {MAX_BATCH}", self.max_batch),
            ));
        }
        let check = |field: &'static str, d: Duration| {
            if d < Duration::from_millis(1) || d > MAX_INTERVAL {
                Err(Error::invalid(
                    field,
                    format!("{d:?} is not between 1 ms and {MAX_INTERVAL:?}"),
                ))
            } else {
                Ok(())
            }
        };
        if let Durability::Interval(d) = self.durability {
            check("durability interval", d)?;
        }
        if let Some(w) = self.watchdog_interval {
            check("watchdog interval", w)?;
        }
        Ok(())
    }
}

/// The files of a data directory.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The data directory.
    pub root: PathBuf,
    /// Log segments.
    pub wal: PathBuf,
    /// Snapshots.
    pub snapshots: PathBuf,
    /// Damaged bytes moved aside by recovery and repair.
    pub quarantine: PathBuf,
    /// The writer lock file.
    pub lock: PathBuf,
}

impl Paths {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Paths {
        Paths {
            root: root.to_path_buf(),
            wal: root.join("wal"),
            snapshots: root.join("snapshots"),
            quarantine: root.join("quarantine"),
            lock: root.join("LOCK"),
        }
    }

    /// Fails with [`Error::NotFound`] when nothing is at `root` (for what only reads or
    /// repairs a data directory, which must not create one).
    pub(crate) fn check_exists(&self, storage: &dyn Storage) -> Result<()> {
        let exists = storage
            .exists(&self.root)
            .map_err(|e| Error::io("check data directory", &self.root, e))?;
        if !exists {
            return Err(Error::not_found("data directory", self.root.display()));
        }
        Ok(())
    }
}

/// What opening the directory found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RecoveryReport {
    /// LSN of the snapshot the state was loaded from.
    pub snapshot_lsn: Option<Lsn>,
    /// Its file.
    pub snapshot_file: Option<PathBuf>,
    /// Snapshots that were damaged or unusable and skipped.
    pub skipped_snapshots: Vec<SkippedSnapshot>,
    /// Records replayed after the snapshot.
    pub replayed: u64,
    /// LSN of the last record.
    pub last_lsn: Lsn,
    /// Number of log segments.
    pub segments: usize,
    /// The torn tail that was cut (or, read-only, found), if any.
    pub torn_tail: Option<TornTail>,
}
