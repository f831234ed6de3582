//! Reading the log: an engine's own (`Engine::read_log`, `Engine::events_at`,
//! `Engine::session_at`, `Engine::history`, `Engine::history_at`) and a data
//! directory's without an engine ([`read_log`]).

use std::path::Path;
use std::sync::Arc;

use super::{Engine, Options, Paths};
use crate::backend::{self, FileLog, LogBackend};
use crate::codec;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::history::History;
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

    /// Calls `f(lsn, event)` for the record at each of `lsns`, decoded, in order, until it
    /// returns `Ok(false)`: the point read of history by log position (an event's LSN is
    /// its place in the log). `lsns` must be strictly ascending, from 1 to
    /// [`Engine::last_lsn`]: an LSN past it is [`Error::LsnOutOfRange`], and `lsns` out of
    /// order or holding 0 is [`Error::InvalidInput`], before anything is read. Each record
    /// is checked as any read of the log checks it: damage is [`Error::Corruption`] naming
    /// its place, never a skipped or different event. On the file log, a record costs a
    /// read of at most 64 records (or about 1 MiB and the record) of its segment once that
    /// segment is indexed (one checked scan of the segment, the first time it is read; see
    /// [`LogBackend::read_lsns`]).
    ///
    /// ```
    /// # use session_engine::{Command, Engine, EventBody, Lsn, NewSession, Options, SessionId};
    /// let dir = tempfile::tempdir()?;
    /// let engine = Engine::open(dir.path(), Options::default())?;
    /// for name in ["a", "b", "c"] {
    ///     let new = NewSession { id: Some(SessionId::new(name)?), ..NewSession::default() };
    ///     engine.execute(Command::CreateSession(Box::new(new)))?;
    /// }
    /// let mut created = Vec::new();
    /// engine.events_at(&[Lsn(1), Lsn(3)], |lsn, event| {
    ///     if let EventBody::SessionCreated(new) = event.body {
    ///         created.push((lsn, new.session.to_string()));
    ///     }
    ///     Ok(true)
    /// })?;
    /// assert_eq!(created, [(Lsn(1), "a".to_string()), (Lsn(3), "c".to_string())]);
    /// assert!(matches!(
    ///     engine.events_at(&[Lsn(4)], |_, _| Ok(true)),
    ///     Err(session_engine::Error::LsnOutOfRange { .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn events_at(
        &self,
        lsns: &[Lsn],
        mut f: impl FnMut(Lsn, Event) -> Result<bool>,
    ) -> Result<()> {
        backend::check_ascending(lsns)?;
        let last = self.last_lsn();
        if let Some(&requested) = lsns.last()
            && requested > last
        {
            return Err(Error::LsnOutOfRange { requested, last });
        }
        codec::sharing_strings(|| backend::read_events_at(self.shared.log(), lsns, &mut f))
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
        self.read_log(Lsn(1), lsn, |n, event| {
            // A cleanup or watchdog event names other sessions too, which the scratch state
            // does not hold: apply it as it concerns this session only, at its own LSN (so
            // activities refer to their records).
            if let Some(body) = event.body.narrowed_to(id) {
                let wal = &self.shared.paths.wal;
                let event = Event { at: event.at, body };
                st.apply_at(n, &event)
                    .map_err(|e| Error::corruption(wal, 0, e.to_string()))?;
            }
            Ok(true)
        })?;
        Ok(st.session(id).map(|s| (**s).clone()))
    }

    /// Session `id`'s history (activities, commands, decisions) as of the latest durable
    /// state: a consistent view, read on demand (see [`crate::history`] for what a caller
    /// may rely on while its backing moves from memory to the log). An unknown session is
    /// [`Error::NotFound`].
    pub fn history(&self, id: &SessionId) -> Result<History> {
        let state = self.state();
        let s = state.session(id).ok_or_else(|| Error::NotFound {
            kind: "session",
            id: id.to_string(),
        })?;
        Ok(History::of_session(
            s,
            state.last_lsn,
            Arc::clone(&self.shared.log),
        ))
    }

    /// The history of session `s` of a state as of `as_of` (one this engine published),
    /// read through this engine's log: for readers that hold a state already (the
    /// projector renders the state it took).
    pub fn history_of(&self, s: &Session, as_of: Lsn) -> History {
        History::of_session(s, as_of, Arc::clone(&self.shared.log))
    }

    /// The history of `body`, session `s`'s own or one of its checkpoints', as of `as_of`,
    /// read through this engine's log.
    pub fn history_of_body(
        &self,
        s: &Session,
        body: &crate::state::SessionBody,
        as_of: Lsn,
    ) -> History {
        History::of_session_body(s, body, as_of, Arc::clone(&self.shared.log))
    }

    /// A copy of session `s` (of a state as of `as_of` this engine published) with every
    /// activity's details, in its body and its checkpoints', read from the log and held
    /// in memory: for export and audits, never kept in the state. Damage in the log is
    /// [`Error::Corruption`] naming its place.
    pub fn session_with_details(&self, s: &Session, as_of: Lsn) -> Result<Session> {
        if !s.has_details_in_log() {
            return Ok(s.clone());
        }
        let log = &self.shared.log;
        let mut out = s.clone();
        out.body = History::of_session(s, as_of, Arc::clone(log)).resolved_body()?;
        for cp in out.checkpoints.iter_mut() {
            cp.body =
                History::of_session_body(s, &cp.body, as_of, Arc::clone(log)).resolved_body()?;
        }
        Ok(out)
    }

    /// The latest durable state with every activity's details read from the log and held
    /// in memory (see [`Engine::session_with_details`]): for tests and audits, a second
    /// copy of the history in memory.
    pub fn state_with_details(&self) -> Result<State> {
        let mut state = (*self.state()).clone();
        let as_of = state.last_lsn;
        let ids: Vec<SessionId> = state
            .sessions
            .iter()
            .filter(|(_, s)| s.has_details_in_log())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(s) = state.sessions.get(&id) {
                let resolved = self.session_with_details(s, as_of)?;
                state.sessions.insert(id, Arc::new(resolved));
            }
        }
        Ok(state)
    }

    /// Session `id`'s history as it was right after record `lsn` (the point-in-time view of
    /// [`Engine::session_at`]). An `lsn` past the log's end is [`Error::LsnOutOfRange`]; a
    /// session that did not exist yet at `lsn` is [`Error::NotFound`] (`<id> at LSN <lsn>`).
    pub fn history_at(&self, id: &SessionId, lsn: Lsn) -> Result<History> {
        match self.session_at(id, lsn)? {
            Some(s) => Ok(History::of_session(&s, lsn, Arc::clone(&self.shared.log))),
            None => Err(Error::NotFound {
                kind: "session",
                id: format!("{id} at LSN {lsn}"),
            }),
        }
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
