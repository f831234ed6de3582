//! Reading the log: an engine's own (`Engine::read_log`, `Engine::session_at`) and a data
//! directory's without an engine ([`read_log`]).

use std::path::Path;
use std::sync::Arc;

use super::{Engine, Options, Paths};
use crate::backend::{self, FileLog, LogBackend};
use crate::codec;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::state::{Session, State};
use crate::types::{Lsn, SessionId};

impl Engine {
    /// Calls `f` for each record with `from <= lsn <= to`, decoded, in order, until it
    /// returns `Ok(false)`.
    pub fn read_log(
        &self,
        from: Lsn,
        to: Lsn,
        mut f: impl FnMut(Lsn, Event) -> Result<bool>,
    ) -> Result<()> {
        codec::sharing_strings(|| backend::read_events(self.shared.log(), from, to, &mut f))
    }

    /// The session as it was right after record `lsn` (point-in-time, for audits): replays
    /// the events that concern it. `None` if it did not exist yet.
    pub fn session_at(&self, id: &SessionId, lsn: Lsn) -> Result<Option<Session>> {
        let last = self.last_lsn();
        if lsn > last {
            return Err(Error::LsnOutOfRange {
                requested: lsn,
                last,
            });
        }
        let mut st = State::new();
        let mut n = Lsn::ZERO;
        self.read_log(Lsn(1), lsn, |_, event| {
            // A cleanup or watchdog event names other sessions too, which the scratch state
            // does not hold: apply it as it concerns this session only.
            if let Some(body) = event.body.narrowed_to(id) {
                n = n.next();
                let wal = &self.shared.paths.wal;
                let event = Event { at: event.at, body };
                st.apply(n, &event)
                    .map_err(|e| Error::corruption(wal, 0, e.to_string()))?;
            }
            Ok(true)
        })?;
        Ok(st.session(id).map(|s| (**s).clone()))
    }
}

/// Reads the events of the data directory `dir`'s log, without opening an engine: no lock,
/// no replay, nothing written, so it works while another process writes (the CLI's
/// `replay`, audits). Calls `f(lsn, event)` for each record with `from <= lsn <= to`, in
/// order, until it returns `Ok(false)`; damage, a hole, or a record that does not decode
/// is an error naming its place. Reads `options.log` when set, else the directory's
/// write-ahead log.
pub fn read_log(
    dir: impl AsRef<Path>,
    options: &Options,
    from: Lsn,
    to: Lsn,
    f: impl FnMut(Lsn, Event) -> Result<bool>,
) -> Result<()> {
    let paths = Paths::new(dir.as_ref());
    let log: Arc<dyn LogBackend> = match &options.log {
        Some(log) => Arc::clone(log),
        None => Arc::new(FileLog::new(
            Arc::clone(&options.storage),
            &paths.wal,
            &paths.quarantine,
            options.segment_bytes,
        )),
    };
    codec::sharing_strings(|| backend::read_events(&*log, from, to, f))
}
