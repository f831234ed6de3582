//! A session's history read on demand: its activities, commands and decisions, by index,
//! in ranges, oldest or newest first, now or as of an LSN.
//!
//! [`History`] is the one way callers read a session's history (the service's paged
//! listings, the command line's `history`, export's checks). Get one from
//! [`SessionManager::history`](crate::SessionManager::history) /
//! [`SessionManager::history_at`](crate::SessionManager::history_at), a
//! [`ClaudeSession::history`](crate::ClaudeSession::history) handle, or
//! [`Engine::history`](crate::Engine::history) / [`Engine::history_at`](crate::Engine::history_at).
//!
//! # Where the items are; what callers may rely on
//!
//! Commands and decisions are read from the session's in-memory state (the `imbl`
//! vectors of [`SessionBody`]). Activities keep only their action, time and the LSN of
//! the `activity_recorded` event that holds their details ([`Details::InLog`], state
//! schema 5): their details are read from the log when the activities are asked for, in
//! batches of up to [`READ_BATCH`] records, LSNs ascending, through the log backend's point
//! reads ([`LogBackend::read_lsns`]); each record is checked to be the `activity_recorded`
//! event of that session with that action and time. Activities the state got another way
//! (an old snapshot, a bundle's import) hold their details in memory ([`Details::Inline`]).
//! What a `History` promises holds for both:
//!
//! * **A consistent view.** A `History` is the session's history as of one LSN
//!   ([`History::as_of`]): the latest durable state when it was taken, or the LSN asked for.
//!   Later commits do not change it.
//! * **Order and indices.** Each kind is indexed from 0, oldest first (the order of the
//!   log). Within one `History` an index always names the same item. Across views, new
//!   items only add indices at the end, except that restoring a checkpoint returns the
//!   session's history to the checkpoint's: the items recorded after it are no longer in
//!   the views that follow (they are still in the log, and in views as of earlier LSNs).
//! * **Counts are free.** [`Entries::len`] never reads the items.
//! * **Items are results.** Each item is a [`Result`]. A log-backed read can fail: damage
//!   is [`Error::Corruption`] naming the file and offset, an unreadable file
//!   [`Error::Io`]; an item is never skipped or served as different content. Treat the
//!   first `Err` as the end of the read (the iterator may or may not go on after it).
//! * **Ranges are checked.** [`Entries::range`] refuses a range that ends past
//!   [`Entries::len`] or starts after it ends with [`Error::InvalidInput`] (before
//!   anything is read); an empty range in bounds (`len..len` included) is an empty
//!   iterator. [`Entries::page`] is the clamped form for paging (an offset past the end
//!   gives nothing).
//! * **Newest first** is `.rev()` on any iterator: it is double-ended and knows its length.
//!
//! ```
//! use session_engine::manager::{ManagerOptions, SessionManager};
//! use session_engine::{Lsn, NewSession};
//!
//! let dir = tempfile::tempdir()?;
//! let manager = SessionManager::open(dir.path(), ManagerOptions::default())?;
//! let session = manager.create_session(NewSession::default())?;
//! let id = session.session_id().to_string();
//! let mut first = Lsn::ZERO;
//! for step in ["plan", "edit", "test", "commit"] {
//!     let lsn = session.record_activity(step, None)?;
//!     if step == "edit" {
//!         first = lsn;
//!     }
//! }
//!
//! let history = manager.history(&id)?;
//! let activities = history.activities();
//! assert_eq!(activities.len(), 4);
//! // A range by index, oldest first; each item is a `Result` (a read of the log can fail).
//! let middle: Vec<String> = activities
//!     .range(1..3)?
//!     .map(|e| e.map(|e| e.value.action.to_string()))
//!     .collect::<session_engine::Result<_>>()?;
//! assert_eq!(middle, ["edit", "test"]);
//! // Newest first, with the indices kept.
//! let newest: Vec<(usize, String)> = activities
//!     .iter()
//!     .rev()
//!     .take(2)
//!     .map(|e| e.map(|e| (e.index, e.value.action.to_string())))
//!     .collect::<session_engine::Result<_>>()?;
//! assert_eq!(newest, [(3, "commit".to_string()), (2, "test".to_string())]);
//! // A range past the end is refused, not cut.
//! assert!(activities.range(2..5).is_err());
//! // As of an LSN: right after the "edit" activity was recorded.
//! let then = manager.history_at(&id, first)?;
//! assert_eq!(then.as_of(), first);
//! assert_eq!(then.activities().len(), 2);
//! assert_eq!(then.commands().len(), 0);
//! manager.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::iter::FusedIterator;
use std::ops::{Bound, Range, RangeBounds};
use std::sync::Arc;

use crate::backend::LogBackend;
use crate::error::{Error, Result};
use crate::event::EventBody;
use crate::state::{Activity, CommandRecord, Decision, Details, Session, SessionBody};
use crate::types::{Lsn, SessionId};

/// Most activities whose details one read of the log fetches (one
/// [`LogBackend::read_lsns`] call).
pub const READ_BATCH: usize = 64;

/// One session's history as of one LSN (see the [module documentation](self) for what a
/// caller may rely on).
#[derive(Clone)]
pub struct History {
    session: SessionId,
    as_of: Lsn,
    body: SessionBody,
    /// Where details in the log are read; `None` for a body in memory whole.
    log: Option<Arc<dyn LogBackend>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("session", &self.session)
            .field("as_of", &self.as_of)
            .field("activities", &self.body.activity_log.len())
            .field("commands", &self.body.commands.len())
            .field("decisions", &self.body.decisions.len())
            .field("log", &self.log.is_some())
            .finish()
    }
}

impl History {
    /// The history of session `s` as it is in a state as of `as_of`, its details in the
    /// log read from `log`.
    pub(crate) fn of_session(s: &Session, as_of: Lsn, log: Arc<dyn LogBackend>) -> History {
        History::of_session_body(s, &s.body, as_of, log)
    }

    /// The history of `body`, a body of session `s` (its own or a checkpoint's), with its
    /// details in the log read from `log`.
    pub(crate) fn of_session_body(
        s: &Session,
        body: &SessionBody,
        as_of: Lsn,
        log: Arc<dyn LogBackend>,
    ) -> History {
        History {
            session: s.id.clone(),
            as_of,
            body: body.clone(),
            log: Some(log),
        }
    }

    /// A history held in memory whole: a session value carried by an event (a clone's
    /// or an import's session, which carry their details), read with no log. `as_of` is the LSN the caller reads it at. An
    /// activity whose details are in the log ([`Details::InLog`]) has no log to be read
    /// from here: reading it is [`Error::InvalidInput`] (field `history`).
    pub fn of_body(session: SessionId, as_of: Lsn, body: &SessionBody) -> History {
        History {
            session,
            as_of,
            body: body.clone(),
            log: None,
        }
    }

    /// The body with every activity's details read from the log (held in memory: for
    /// export and audits, never kept in the state).
    pub(crate) fn resolved_body(&self) -> Result<SessionBody> {
        let mut body = self.body.clone();
        body.activity_log = self
            .activities()
            .iter()
            .map(|e| e.map(|e| e.value))
            .collect::<Result<_>>()?;
        Ok(body)
    }

    /// The session's id.
    pub fn session_id(&self) -> &SessionId {
        &self.session
    }

    /// The LSN this history is as of: every event up to it and none after.
    pub fn as_of(&self) -> Lsn {
        self.as_of
    }

    /// Recorded activities, oldest first, their details resolved (read from the log).
    pub fn activities(&self) -> Entries<'_, Activity> {
        Entries::new("activities", self, &self.body.activity_log)
    }

    /// Recorded commands, oldest first.
    pub fn commands(&self) -> Entries<'_, CommandRecord> {
        Entries::new("commands", self, &self.body.commands)
    }

    /// Logged decisions, oldest first.
    pub fn decisions(&self) -> Entries<'_, Decision> {
        Entries::new("decisions", self, &self.body.decisions)
    }

    /// `batch` (activities of this history, in order) with every detail in the log read
    /// and checked: one point read of their records, LSNs ascending.
    fn resolve_activities(&self, batch: &[Arc<Activity>]) -> Result<Vec<Arc<Activity>>> {
        // (lsn, position in batch), sorted by LSN.
        let mut wanted: Vec<(Lsn, usize)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a.details {
                Details::InLog(lsn) => Some((lsn, i)),
                _ => None,
            })
            .collect();
        if wanted.is_empty() {
            return Ok(batch.to_vec());
        }
        let Some(log) = &self.log else {
            return Err(Error::invalid(
                "history",
                format!(
                    "an activity of session {} has its details in the log, and this history \
                     has no log to read them from",
                    self.session
                ),
            ));
        };
        wanted.sort_unstable();
        let mut lsns: Vec<Lsn> = wanted.iter().map(|w| w.0).collect();
        lsns.dedup();
        let mut out = batch.to_vec();
        let mut next = 0;
        log.read_lsns(&lsns, &mut |path, offset, lsn, payload| {
            let event = crate::codec::decode_record(path, offset, lsn, payload)?;
            let details = match event.body {
                EventBody::ActivityRecorded {
                    session,
                    action,
                    details: Some(details),
                } if session == self.session => Some((action, details)),
                _ => None,
            };
            while next < wanted.len() && wanted[next].0 == lsn {
                let i = wanted[next].1;
                let a = &batch[i];
                match &details {
                    Some((action, d)) if *action == a.action && event.at == a.timestamp => {
                        out[i] = Arc::new(Activity {
                            action: Arc::clone(&a.action),
                            timestamp: a.timestamp,
                            details: Details::Inline(d.clone()),
                        });
                    }
                    _ => {
                        return Err(Error::corruption(
                            path,
                            offset,
                            format!(
                                "record {lsn} is not the activity_recorded event (action {:?}, \
                                 with details) that session {}'s history names",
                                a.action, self.session
                            ),
                        ));
                    }
                }
                next += 1;
            }
            Ok(true)
        })?;
        if next < wanted.len() {
            return Err(Error::invalid(
                "history",
                format!("the log did not give record {}", wanted[next].0),
            ));
        }
        Ok(out)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::state::Activity {}
    impl Sealed for crate::state::CommandRecord {}
    impl Sealed for crate::state::Decision {}
}

/// What a history holds: [`Activity`], [`CommandRecord`] or [`Decision`].
pub trait Item: sealed::Sealed + Sized {
    /// `batch` (consecutive items of `history`) as a reader gets them: activities with
    /// their details read from the log.
    #[doc(hidden)]
    fn resolve(history: &History, batch: &[Arc<Self>]) -> Result<Vec<Arc<Self>>>;
}

impl Item for Activity {
    fn resolve(history: &History, batch: &[Arc<Self>]) -> Result<Vec<Arc<Self>>> {
        history.resolve_activities(batch)
    }
}

impl Item for CommandRecord {
    fn resolve(_: &History, batch: &[Arc<Self>]) -> Result<Vec<Arc<Self>>> {
        Ok(batch.to_vec())
    }
}

impl Item for Decision {
    fn resolve(_: &History, batch: &[Arc<Self>]) -> Result<Vec<Arc<Self>>> {
        Ok(batch.to_vec())
    }
}

/// One item of a history: its index (0-based, oldest first) and its value.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Entry<T> {
    /// Its index in its kind's list.
    pub index: usize,
    /// The item.
    pub value: Arc<T>,
}

/// One kind of a session's history (activities, commands or decisions).
#[derive(Debug)]
pub struct Entries<'h, T> {
    kind: &'static str,
    history: &'h History,
    items: &'h imbl::Vector<Arc<T>>,
}

impl<T> Clone for Entries<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Entries<'_, T> {}

impl<'h, T: Item> Entries<'h, T> {
    fn new(
        kind: &'static str,
        history: &'h History,
        items: &'h imbl::Vector<Arc<T>>,
    ) -> Entries<'h, T> {
        Entries {
            kind,
            history,
            items,
        }
    }

    fn iter_of(&self, front: usize, back: usize) -> Iter<'h, T> {
        Iter {
            history: self.history,
            items: self.items,
            front,
            back,
            buf_start: 0,
            buf: Vec::new(),
        }
    }

    /// How many there are (never reads the items).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The item at `index`, `Ok(None)` past the end.
    pub fn get(&self, index: usize) -> Result<Option<Entry<T>>> {
        let Some(v) = self.items.get(index) else {
            return Ok(None);
        };
        let value = T::resolve(self.history, std::slice::from_ref(v))?
            .pop()
            .unwrap_or_else(|| Arc::clone(v));
        Ok(Some(Entry { index, value }))
    }

    /// Every item, oldest first (`.rev()` for newest first).
    pub fn iter(&self) -> Iter<'h, T> {
        self.iter_of(0, self.items.len())
    }

    /// The items with indices in `range`, oldest first (`.rev()` for newest first). A
    /// range that ends past [`Entries::len`], or starts after it ends, is
    /// [`Error::InvalidInput`] (field `history range`); an empty range in bounds is an
    /// empty iterator.
    pub fn range(&self, range: impl RangeBounds<usize>) -> Result<Iter<'h, T>> {
        let r = self.checked(range)?;
        Ok(self.iter_of(r.start, r.end))
    }

    /// At most `limit` items from index `offset` on, oldest first: the clamped range for
    /// paging (an offset past the end gives nothing, a page past the end is cut).
    pub fn page(&self, offset: usize, limit: usize) -> Iter<'h, T> {
        let n = self.len();
        let front = offset.min(n);
        self.iter_of(front, front.saturating_add(limit).min(n))
    }

    fn checked(&self, range: impl RangeBounds<usize>) -> Result<Range<usize>> {
        let n = self.len();
        let start = match range.start_bound() {
            Bound::Included(&s) => Some(s),
            Bound::Excluded(&s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => Some(n),
        };
        match (start, end) {
            (Some(s), Some(e)) if s <= e && e <= n => Ok(s..e),
            _ => Err(Error::InvalidInput {
                field: "history range",
                reason: format!(
                    "{} is not within 0..{n}: the session has {n} {}",
                    show_range(start, end),
                    self.kind,
                ),
            }),
        }
    }
}

fn show_range(start: Option<usize>, end: Option<usize>) -> String {
    let s = start.map_or_else(|| "past the largest index".to_string(), |s| s.to_string());
    let e = end.map_or_else(|| "past the largest index".to_string(), |e| e.to_string());
    format!("the range {s}..{e}")
}

impl<'h, T: Item> IntoIterator for Entries<'h, T> {
    type Item = Result<Entry<T>>;
    type IntoIter = Iter<'h, T>;

    fn into_iter(self) -> Iter<'h, T> {
        self.iter()
    }
}

/// An iterator over a range of a history's items, oldest first; double-ended
/// (`.rev()`: newest first) and of known length. It resolves items in batches of up to
/// [`READ_BATCH`] (one read of the log for the details of a batch of activities) and holds
/// at most one batch. After an `Err` it ends.
pub struct Iter<'h, T> {
    history: &'h History,
    items: &'h imbl::Vector<Arc<T>>,
    front: usize,
    back: usize,
    /// Resolved items `buf_start..buf_start + buf.len()`.
    buf_start: usize,
    buf: Vec<Arc<T>>,
}

impl<T> std::fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("front", &self.front)
            .field("back", &self.back)
            .finish()
    }
}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter {
            history: self.history,
            items: self.items,
            front: self.front,
            back: self.back,
            buf_start: self.buf_start,
            buf: self.buf.clone(),
        }
    }
}

impl<T: Item> Iter<'_, T> {
    /// Item `index` (within `front..back`), resolving the batch `batch` around it when it
    /// is not held. An error ends the iteration.
    fn at(&mut self, index: usize, batch: Range<usize>) -> Result<Entry<T>> {
        if !(self.buf_start..self.buf_start + self.buf.len()).contains(&index) {
            let raw: Vec<Arc<T>> = batch
                .clone()
                .filter_map(|k| self.items.get(k).cloned())
                .collect();
            match T::resolve(self.history, &raw) {
                Ok(v) if v.len() == batch.len() => {
                    self.buf_start = batch.start;
                    self.buf = v;
                }
                Ok(_) => {
                    // Unreachable: a range is checked against the vector it iterates,
                    // which a view never changes.
                    self.front = self.back;
                    return Err(Error::InvalidInput {
                        field: "history range",
                        reason: format!("index {index} is past the end"),
                    });
                }
                Err(e) => {
                    self.front = self.back;
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
        Ok(Entry {
            index,
            value: Arc::clone(&self.buf[index - self.buf_start]),
        })
    }
}

impl<T: Item> Iterator for Iter<'_, T> {
    type Item = Result<Entry<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        let i = self.front;
        self.front += 1;
        let batch = i..self.back.min(i.saturating_add(READ_BATCH));
        Some(self.at(i, batch))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back.saturating_sub(self.front);
        (n, Some(n))
    }

    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        self.front = self.front.saturating_add(n).min(self.back);
        self.next()
    }
}

impl<T: Item> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        let i = self.back;
        let batch = self.front.max((i + 1).saturating_sub(READ_BATCH))..i + 1;
        Some(self.at(i, batch))
    }

    fn nth_back(&mut self, n: usize) -> Option<Self::Item> {
        self.back = self.back.saturating_sub(n).max(self.front);
        self.next_back()
    }
}

impl<T: Item> ExactSizeIterator for Iter<'_, T> {}

impl<T: Item> FusedIterator for Iter<'_, T> {}

#[cfg(test)]
mod tests;
