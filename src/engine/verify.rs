//! Offline verification of a whole data directory, read-only.
//!
//! Replays every record from LSN 1 (checking frames, LSN density, segment headers and
//! continuity, payload decoding and that every event applies), and checks every snapshot:
//! its checksums, and that its state equals the state replayed from the log at its LSN.
//! Takes no lock, so it works while a writer is appending (a record being written shows as
//! a torn tail).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::snapshot;
use crate::state::State;
use crate::storage::Storage;
use crate::types::Lsn;
use crate::wal::{self, StartPoint, TornTail};

use super::Paths;

/// The verdict on one snapshot file.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SnapshotCheck {
    /// The file.
    pub file: PathBuf,
    /// The LSN in its name.
    pub lsn: Lsn,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
}

/// Damage found in the log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset of the damage.
    pub offset: u64,
    /// What rule the bytes break.
    pub reason: String,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Log segments checked.
    pub segments: usize,
    /// Records checked.
    pub records: u64,
    /// LSN of the last valid record.
    pub last_lsn: Lsn,
    /// A torn write at the very end of the log (what `open` would cut), if any.
    pub torn_tail: Option<TornTail>,
    /// The first damage in the log, if any (verification of the log stops there).
    pub damage: Option<Damage>,
    /// Every snapshot's verdict.
    pub snapshots: Vec<SnapshotCheck>,
}

impl VerifyReport {
    /// True when nothing at all is wrong: no damage, no torn tail, every snapshot good.
    pub fn is_intact(&self) -> bool {
        self.damage.is_none()
            && self.torn_tail.is_none()
            && self.snapshots.iter().all(|s| s.problem.is_none())
    }
}

/// Verifies the data directory `dir`. `progress` is called with each record's LSN.
/// Errors are only for what stops verification from running at all (a missing directory,
/// an I/O error); damage is reported in the [`VerifyReport`].
pub fn verify(
    dir: &Path,
    storage: &dyn Storage,
    mut progress: impl FnMut(Lsn),
) -> Result<VerifyReport> {
    let paths = Paths::new(dir);
    paths.check_exists(storage)?;
    let mut report = VerifyReport::default();

    // Decode every snapshot first; those that decode are compared with the replay.
    let mut expected: BTreeMap<Lsn, Vec<(usize, State)>> = BTreeMap::new();
    for (lsn, path) in snapshot::list_snapshots(storage, &paths.snapshots)?
        .into_iter()
        .rev()
    {
        let idx = report.snapshots.len();
        let problem = match storage.read(&path) {
            Err(e) => Some(format!("cannot read: {e}")),
            Ok(bytes) => match snapshot::decode_snapshot(&path, &bytes) {
                Err(e) => Some(e.to_string()),
                Ok((h, _)) if h.lsn != lsn => Some(format!(
                    "its name says LSN {lsn}, its header says {}",
                    h.lsn
                )),
                Ok((_, state)) => {
                    expected.entry(lsn).or_default().push((idx, state));
                    None
                }
            },
        };
        report.snapshots.push(SnapshotCheck {
            file: path,
            lsn,
            problem,
        });
    }

    let mut state = State::new();
    // A snapshot of a state schema before 5 holds every activity's details in memory,
    // where the replay refers to the records: it is compared with a second replay that
    // keeps them in memory too (`State::apply_inline`), kept only while such a snapshot
    // is still ahead.
    let inline_until = expected
        .iter()
        .filter(|(_, list)| {
            list.iter()
                .any(|(_, s)| !s.sessions.values().any(|x| x.has_details_in_log()))
        })
        .map(|(lsn, _)| *lsn)
        .max();
    let mut inline = inline_until.map(|_| State::new());
    let mut compare = |state: &State, inline: Option<&State>, report: &mut VerifyReport| {
        if let Some(list) = expected.remove(&state.last_lsn) {
            for (idx, snap) in list {
                let in_memory = !snap.sessions.values().any(|x| x.has_details_in_log());
                let replayed = match inline {
                    Some(i) if in_memory => i,
                    _ => state,
                };
                if snap != *replayed {
                    report.snapshots[idx].problem = Some(format!(
                        "its state differs from the log replayed to LSN {}",
                        state.last_lsn
                    ));
                }
            }
        }
    };
    compare(&state, inline.as_ref(), &mut report);
    let mut records = 0u64;
    let result = crate::intern::scope(|| {
        wal::recover(
            storage,
            &paths.wal,
            &paths.quarantine,
            StartPoint::default(),
            false,
            |path, offset, lsn, payload| {
                let event = super::recover::decode_record(path, offset, lsn, payload)?;
                super::recover::apply_record(&mut state, path, offset, lsn, &event)?;
                if let Some(i) = &mut inline {
                    i.apply_inline(lsn, &event).map_err(|e| {
                        Error::corruption(path, offset, format!("record {lsn}: {e}"))
                    })?;
                }
                records += 1;
                compare(&state, inline.as_ref(), &mut report);
                if inline_until.is_some_and(|u| lsn >= u) {
                    inline = None;
                }
                progress(lsn);
                Ok(())
            },
        )
    });
    report.records = records;
    report.last_lsn = state.last_lsn;
    match result {
        Ok(rec) => {
            report.segments = rec.segments.len();
            report.torn_tail = rec.torn;
        }
        Err(Error::Corruption {
            file,
            offset,
            reason,
        }) => {
            report.segments = wal::list_segments_lenient(storage, &paths.wal)?.len();
            report.damage = Some(Damage {
                file,
                offset,
                reason,
            });
        }
        Err(Error::UnsupportedVersion {
            file,
            found,
            supported,
        }) => {
            report.damage = Some(Damage {
                file,
                offset: 8,
                reason: format!(
                    "format version {found} is newer than this build reads ({supported}); \
                     upgrade session-engine"
                ),
            });
        }
        Err(e) => return Err(e),
    }
    // Snapshots beyond the verified log could not be compared.
    for (lsn, list) in expected {
        for (idx, _) in list {
            if report.snapshots[idx].problem.is_none() {
                report.snapshots[idx].problem = Some(format!(
                    "it is at LSN {lsn}, beyond the last valid record (LSN {})",
                    report.last_lsn
                ));
            }
        }
    }
    Ok(report)
}
