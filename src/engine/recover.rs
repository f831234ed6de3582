//! Rebuilding the state at open: the newest usable snapshot, then the log after it,
//! each record decoded and applied at its place.

use std::path::Path;

use crate::backend::{LogBackend, LogWriter, StartPoint};
use crate::codec;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::snapshot::{self};
use crate::state::State;
use crate::storage::Storage;
use crate::types::Lsn;

use super::{Paths, RecoveryReport};

/// Decodes the record `lsn` found at `offset` of `path` and applies it to `state`; a record
/// that does not decode or apply is corruption at that place (open, verify and repair
/// all replay this way; open decodes and applies on two threads, see [`super::replay`]).
pub(crate) fn replay_record(
    state: &mut State,
    path: &Path,
    offset: u64,
    lsn: Lsn,
    payload: &[u8],
) -> Result<()> {
    let event = decode_record(path, offset, lsn, payload)?;
    apply_record(state, path, offset, lsn, &event)
}

/// [`replay_record`]'s first half: the event of record `lsn`.
pub(super) fn decode_record(path: &Path, offset: u64, lsn: Lsn, payload: &[u8]) -> Result<Event> {
    codec::decode_record(path, offset, lsn, payload)
}

/// [`replay_record`]'s second half: applies the event of record `lsn` to `state`.
pub(super) fn apply_record(
    state: &mut State,
    path: &Path,
    offset: u64,
    lsn: Lsn,
    event: &Event,
) -> Result<()> {
    state.apply(lsn, event).map_err(|e| {
        Error::corruption(
            path,
            offset,
            format!("record {lsn} does not apply to the state: {e}"),
        )
    })
}

/// The state recovery rebuilt, what it found, and the log's writer (writable opens).
pub(super) type Recovered = (State, RecoveryReport, Option<Box<dyn LogWriter>>);

/// Loads the newest usable snapshot and replays the log after it; a writable open gets
/// the log's writer.
pub(super) fn recover_state(
    storage: &dyn Storage,
    log: &dyn LogBackend,
    paths: &Paths,
    read_only: bool,
) -> Result<Recovered> {
    // A snapshot's log position is only a hint: recovery checks it and walks the log when
    // it is wrong, and finds a log that ends before the snapshot either way.
    let (snap, skipped) = snapshot::load_newest(storage, &paths.snapshots)?;
    for s in &skipped {
        tracing::warn!(file = %s.file.display(), reason = %s.reason, "skipped a snapshot");
    }
    let (state, start, snapshot_lsn, snapshot_file) = match snap {
        Some((h, st, path)) => (
            st,
            StartPoint {
                lsn: h.lsn,
                position: Some(h.position),
            },
            Some(h.lsn),
            Some(path),
        ),
        None => (State::new(), StartPoint::default(), None, None),
    };
    let (state, opened) = std::thread::scope(|scope| {
        let mut replay = super::replay::Replay::new(scope, state);
        let read = log.open(start, !read_only, &mut replay);
        replay.finish(read)
    })?;
    let r = opened.recovery;
    let report = RecoveryReport {
        snapshot_lsn,
        snapshot_file,
        skipped_snapshots: skipped,
        replayed: r.replayed,
        last_lsn: r.last_lsn,
        segments: r.files,
        torn_tail: r.torn,
    };
    Ok((state, report, opened.writer))
}
