//! `claude follow`: importing the same paths again and again, opening only what changed.

use std::path::PathBuf;

use super::{Check, ImportRun, import_file};
use crate::claude::resume::link_resumed;
use crate::engine::Engine;
use crate::storage::Storage;

/// How long a file's stat version must have stayed the same before a full check that
/// finds nothing new lets [`Follower`] skip the file while its stat stays the same (longer
/// than any file system's timestamp granularity: FAT's is 2 s, ext4's a clock tick).
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps what is needed to import the same paths again and again cheaply (`claude
/// follow`): a file whose stat version did not change is not opened, and a file checked
/// in full once is checked quickly afterwards ([`Check::Quick`]), while it grows.
///
/// A quick check looks only at the last imported line, so a file that changed without
/// growing is checked in full: when its stat version changed while its length did not
/// grow (a rewrite of the same length that kept its last line), and once more when the
/// version has stayed the same for [`SETTLE`] after it last changed. That second check is
/// for a write in the same tick of the file system's clock as the stat before it, which
/// leaves the modification time, and so the version, unchanged (git's "racily clean"
/// files): a check that starts [`SETTLE`] after the version was first seen reads every
/// such write, and any later write moves the modification time. Only then is the file
/// skipped while its stat stays the same. A storage that knows no stat version gets a
/// check every poll (quick while the file grows, else full).
#[derive(Debug)]
pub struct Follower {
    seen: std::collections::HashMap<PathBuf, Seen>,
    settle: std::time::Duration,
}

impl Default for Follower {
    fn default() -> Follower {
        Follower::new()
    }
}

/// What a [`Follower`] knows of a file since it last looked.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// The stat version and length of the file when it was last looked at.
    version: Option<u64>,
    len: u64,
    /// When that version (and length) was first seen.
    since: std::time::Instant,
    /// Whether a full check that started [`SETTLE`] after `since` found nothing new.
    settled: bool,
}

impl Follower {
    /// A follower that has seen nothing.
    pub fn new() -> Follower {
        Follower::with_settle(SETTLE)
    }

    /// A follower that waits `settle` instead of [`SETTLE`] (a storage whose stat
    /// versions change with every write, or a test).
    pub fn with_settle(settle: std::time::Duration) -> Follower {
        Follower {
            seen: std::collections::HashMap::new(),
            settle,
        }
    }

    /// Imports what is new under `paths` (every file, the first time; afterwards those
    /// whose stat changed, and the unsettled ones as the type's documentation says).
    /// Then links resumed sessions into chains ([`link_resumed`]) when a file was
    /// imported.
    pub fn poll(&mut self, engine: &Engine, storage: &dyn Storage, paths: &[PathBuf]) -> ImportRun {
        let mut found = crate::claude::find_transcripts(storage, paths);
        let files = std::mem::take(&mut found.files);
        let mut run = ImportRun {
            found,
            ..ImportRun::default()
        };
        for path in files {
            let stat = storage.stat(&path).ok().flatten();
            let now = stat.as_ref().map(|s| (s.version, s.len));
            let started = std::time::Instant::now();
            let prev = self.seen.get(&path).copied();
            let same = matches!((prev, now), (Some(p), Some((Some(v), l)))
                if p.version == Some(v) && p.len == l);
            let check = match (prev, now) {
                (Some(p), _) if same && p.settled => continue,
                // Not settled yet: wait until the version is old enough.
                (Some(p), _) if same && started.duration_since(p.since) < self.settle => {
                    continue;
                }
                // Grown: appended to, the last imported line is enough to check.
                (Some(p), Some((_, l))) if l > p.len => Check::Quick,
                // Changed without growing, or settling: only the whole prefix tells.
                _ => Check::Full,
            };
            match import_file(engine, storage, &path, check) {
                Ok(r) => {
                    if let Some((version, len)) = now {
                        let since = match prev {
                            Some(p) if same => p.since,
                            _ => started,
                        };
                        let settled = same
                            && check == Check::Full
                            && r.bytes == 0
                            && !r.opened
                            && started.duration_since(since) >= self.settle;
                        self.seen.insert(
                            path,
                            Seen {
                                version,
                                len,
                                since,
                                settled,
                            },
                        );
                    }
                    run.files.push(r);
                }
                Err(e) => {
                    self.seen.remove(&path);
                    run.failed.push((path, e));
                }
            }
        }
        if run.files.iter().any(|f| f.bytes > 0 || f.opened) {
            match link_resumed(engine) {
                Ok(links) => run.chained = links,
                Err(e) => run.chain_error = Some(e),
            }
        }
        run
    }
}

/// Imports what is new in every transcript under `paths`, checking each in full.
pub fn import_paths(engine: &Engine, storage: &dyn Storage, paths: &[PathBuf]) -> ImportRun {
    Follower::new().poll(engine, storage, paths)
}
