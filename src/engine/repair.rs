//! Explicit repair: moves damaged bytes aside so a damaged directory opens again.
//!
//! Repair replays the whole log from LSN 1. At the first damage it cuts the log there:
//! the damaged bytes and everything after them in that segment are copied into
//! `quarantine/` and zeroed in place, and every later segment is moved into `quarantine/`
//! whole. Snapshots that are damaged or describe LSNs the repaired log no longer has are
//! moved aside too. Nothing is deleted: every moved range is named in the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::snapshot;
use crate::state::State;
use crate::storage::Storage;
use crate::types::Lsn;
use crate::wal::{self, StartPoint, segment::SEGMENT_HEADER_LEN, segment::nonzero_end};

use super::Paths;

/// One thing repair moved aside.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Moved {
    /// The damaged file.
    pub file: PathBuf,
    /// Offset of the first byte moved (0 for a whole file).
    pub offset: u64,
    /// Number of bytes moved.
    pub bytes: u64,
    /// Where they are now.
    pub saved_to: PathBuf,
    /// The damage that caused the move.
    pub reason: String,
}

/// What [`repair`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Everything moved aside, in order.
    pub moved: Vec<Moved>,
    /// LSN of the last record of the repaired log.
    pub last_lsn: Lsn,
}

impl RepairReport {
    /// Whether the directory was intact (nothing moved).
    pub fn was_clean(&self) -> bool {
        self.moved.is_empty()
    }
}

fn move_aside(storage: &dyn Storage, paths: &Paths, file: &Path) -> Result<PathBuf> {
    crate::storage::create_dir_durable(storage, &paths.quarantine)
        .map_err(|e| Error::io("create quarantine directory", &paths.quarantine, e))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut n = 0u32;
    let target = loop {
        let t = paths.quarantine.join(format!("{name}.{n}.moved"));
        if !storage
            .exists(&t)
            .map_err(|e| Error::io("check quarantine file", &t, e))?
        {
            break t;
        }
        n += 1;
    };
    storage
        .rename(file, &target)
        .map_err(|e| Error::io("move file to quarantine", file, e))?;
    storage
        .sync_dir(&paths.quarantine)
        .map_err(|e| Error::io("sync quarantine directory", &paths.quarantine, e))?;
    if let Some(dir) = file.parent() {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    Ok(target)
}

/// Cuts the log at `offset` of segment `file`: see the module documentation.
fn cut_log(
    storage: &dyn Storage,
    paths: &Paths,
    file: &Path,
    offset: u64,
    reason: &str,
    report: &mut RepairReport,
) -> Result<()> {
    let segments = wal::list_segments_lenient(storage, &paths.wal)?;
    let Some(idx) = segments.iter().position(|p| p == file) else {
        return Err(Error::corruption(
            file,
            offset,
            format!("{reason}; repair cannot handle damage outside the log segments"),
        ));
    };
    let mut later_from = idx + 1;
    if (offset as usize) < SEGMENT_HEADER_LEN {
        later_from = idx;
    } else {
        let bytes = storage
            .read(file)
            .map_err(|e| Error::io("read segment", file, e))?;
        let start = (offset as usize).min(bytes.len());
        let end = start + nonzero_end(&bytes[start..]);
        if end > start {
            // `start` is `offset` here: the damage starts inside the file.
            let saved_to = wal::zero_aside(
                storage,
                &paths.quarantine,
                file,
                bytes,
                offset,
                end as u64,
                "zero damaged bytes",
            )?;
            report.moved.push(Moved {
                file: file.to_path_buf(),
                offset,
                bytes: (end - start) as u64,
                saved_to,
                reason: reason.to_string(),
            });
        }
    }
    for seg in segments.iter().skip(later_from) {
        let bytes = storage
            .read(seg)
            .map(|b| b.len() as u64)
            .unwrap_or_default();
        let saved_to = move_aside(storage, paths, seg)?;
        report.moved.push(Moved {
            file: seg.clone(),
            offset: 0,
            bytes,
            saved_to,
            reason: if seg == file {
                reason.to_string()
            } else {
                format!("follows the damage in {}", file.display())
            },
        });
    }
    Ok(())
}

/// Repairs the data directory `dir`. Takes the writer lock, so it fails with
/// [`Error::Locked`] while an engine has the directory open.
pub fn repair(dir: &Path, storage: Arc<dyn Storage>) -> Result<RepairReport> {
    let paths = Paths::new(dir);
    paths.check_exists(&*storage)?;
    let _lock = match storage
        .try_lock(&paths.lock)
        .map_err(|e| Error::io("lock data directory", &paths.lock, e))?
    {
        Some(g) => g,
        None => return Err(Error::Locked { path: paths.lock }),
    };
    let mut report = RepairReport::default();
    // Each round fixes the first damage; a round can only remove log bytes, so the number
    // of rounds is bounded by the number of segments plus the torn tail.
    let max_rounds = wal::list_segments_lenient(&*storage, &paths.wal)?.len() + 2;
    let mut last_lsn = Lsn::ZERO;
    let mut done = false;
    for _ in 0..max_rounds {
        let mut state = State::new();
        let r = crate::intern::scope(|| {
            wal::recover(
                &*storage,
                &paths.wal,
                &paths.quarantine,
                StartPoint::default(),
                true,
                |path, offset, lsn, payload| {
                    super::replay_record(&mut state, path, offset, lsn, payload)
                },
            )
        });
        match r {
            Ok(rec) => {
                if let Some(t) = rec.torn
                    && let Some(saved_to) = t.saved_to
                {
                    report.moved.push(Moved {
                        file: t.file,
                        offset: t.offset,
                        bytes: t.bytes,
                        saved_to,
                        reason: t.reason,
                    });
                }
                last_lsn = rec.last_lsn;
                done = true;
                break;
            }
            Err(Error::Corruption {
                file,
                offset,
                reason,
            }) => cut_log(&*storage, &paths, &file, offset, &reason, &mut report)?,
            Err(e) => return Err(e),
        }
    }
    if !done {
        return Err(Error::corruption(
            &paths.wal,
            0,
            "repair did not converge; the log directory needs manual inspection",
        ));
    }
    for (lsn, path) in snapshot::list_snapshots(&*storage, &paths.snapshots)? {
        let reason = match storage.read(&path) {
            Err(e) => Some(format!("cannot read: {e}")),
            Ok(bytes) => match snapshot::decode_snapshot(&path, &bytes) {
                Err(e) => Some(e.to_string()),
                Ok((h, _)) if h.lsn != lsn => Some("its name and header disagree".into()),
                Ok(_) if lsn > last_lsn => Some(format!(
                    "it is at LSN {lsn}, beyond the repaired log's end ({last_lsn})"
                )),
                Ok(_) => None,
            },
        };
        if let Some(reason) = reason {
            let bytes = storage.read(&path).map(|b| b.len() as u64).unwrap_or(0);
            let saved_to = move_aside(&*storage, &paths, &path)?;
            report.moved.push(Moved {
                file: path,
                offset: 0,
                bytes,
                saved_to,
                reason,
            });
        }
    }
    report.last_lsn = last_lsn;
    Ok(report)
}
