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
//! # The backing will change; what callers may rely on
//!
//! Today a `History` reads the session's in-memory state (the `imbl` vectors of
//! [`SessionBody`]), so no read fails. Issue 15 moves history out of memory into the log:
//! the state will keep each item's log position and a `History` will read the items from
//! the log when they are asked for. This API is the seam for that change, and what it
//! promises holds for both backings:
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

use crate::error::{Error, Result};
use crate::state::{Activity, CommandRecord, Decision, Session, SessionBody};
use crate::types::{Lsn, SessionId};

/// One session's history as of one LSN (see the [module documentation](self) for what a
/// caller may rely on).
#[derive(Clone, Debug)]
pub struct History {
    session: SessionId,
    as_of: Lsn,
    body: SessionBody,
}

impl History {
    /// The history of session `s` as it is in a state as of `as_of`.
    pub(crate) fn of_session(s: &Session, as_of: Lsn) -> History {
        History::of_body(s.id.clone(), as_of, &s.body)
    }

    /// A history held in memory whole: a session value carried by an event (a clone's
    /// inline session, its checkpoints' bodies), which stays in memory whatever backs the
    /// engine's own histories. `as_of` is the LSN the caller reads it at.
    pub fn of_body(session: SessionId, as_of: Lsn, body: &SessionBody) -> History {
        History {
            session,
            as_of,
            body: body.clone(),
        }
    }

    /// The session's id.
    pub fn session_id(&self) -> &SessionId {
        &self.session
    }

    /// The LSN this history is as of: every event up to it and none after.
    pub fn as_of(&self) -> Lsn {
        self.as_of
    }

    /// Recorded activities, oldest first.
    pub fn activities(&self) -> Entries<'_, Activity> {
        Entries::new("activities", &self.body.activity_log)
    }

    /// Recorded commands, oldest first.
    pub fn commands(&self) -> Entries<'_, CommandRecord> {
        Entries::new("commands", &self.body.commands)
    }

    /// Logged decisions, oldest first.
    pub fn decisions(&self) -> Entries<'_, Decision> {
        Entries::new("decisions", &self.body.decisions)
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
    items: &'h imbl::Vector<Arc<T>>,
}

impl<T> Clone for Entries<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Entries<'_, T> {}

impl<'h, T> Entries<'h, T> {
    fn new(kind: &'static str, items: &'h imbl::Vector<Arc<T>>) -> Entries<'h, T> {
        Entries { kind, items }
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
        Ok(self.items.get(index).map(|v| Entry {
            index,
            value: Arc::clone(v),
        }))
    }

    /// Every item, oldest first (`.rev()` for newest first).
    pub fn iter(&self) -> Iter<'h, T> {
        Iter {
            items: self.items,
            front: 0,
            back: self.items.len(),
        }
    }

    /// The items with indices in `range`, oldest first (`.rev()` for newest first). A
    /// range that ends past [`Entries::len`], or starts after it ends, is
    /// [`Error::InvalidInput`] (field `history range`); an empty range in bounds is an
    /// empty iterator.
    pub fn range(&self, range: impl RangeBounds<usize>) -> Result<Iter<'h, T>> {
        let r = self.checked(range)?;
        Ok(Iter {
            items: self.items,
            front: r.start,
            back: r.end,
        })
    }

    /// At most `limit` items from index `offset` on, oldest first: the clamped range for
    /// paging (an offset past the end gives nothing, a page past the end is cut).
    pub fn page(&self, offset: usize, limit: usize) -> Iter<'h, T> {
        let n = self.len();
        let front = offset.min(n);
        Iter {
            items: self.items,
            front,
            back: front.saturating_add(limit).min(n),
        }
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

impl<'h, T> IntoIterator for Entries<'h, T> {
    type Item = Result<Entry<T>>;
    type IntoIter = Iter<'h, T>;

    fn into_iter(self) -> Iter<'h, T> {
        self.iter()
    }
}

/// An iterator over a range of a history's items, oldest first; double-ended
/// (`.rev()`: newest first) and of known length.
#[derive(Debug)]
pub struct Iter<'h, T> {
    items: &'h imbl::Vector<Arc<T>>,
    front: usize,
    back: usize,
}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter {
            items: self.items,
            front: self.front,
            back: self.back,
        }
    }
}

impl<T> Iter<'_, T> {
    fn at(&self, index: usize) -> Result<Entry<T>> {
        match self.items.get(index) {
            Some(v) => Ok(Entry {
                index,
                value: Arc::clone(v),
            }),
            // Unreachable: a range is checked against the vector it iterates, which a
            // view never changes.
            None => Err(Error::InvalidInput {
                field: "history range",
                reason: format!("index {index} is past the end"),
            }),
        }
    }
}

impl<T> Iterator for Iter<'_, T> {
    type Item = Result<Entry<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        let i = self.front;
        self.front += 1;
        Some(self.at(i))
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

impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        Some(self.at(self.back))
    }

    fn nth_back(&mut self, n: usize) -> Option<Self::Item> {
        self.back = self.back.saturating_sub(n).max(self.front);
        self.next_back()
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

impl<T> FusedIterator for Iter<'_, T> {}

#[cfg(test)]
mod tests;
