//! The files waiting to be written, with the oldest change each has not shown yet.

use std::collections::BTreeMap;

use crate::types::{AgentId, Lsn, SessionId};

/// The JSON files waiting to be rewritten, each with the LSN of its oldest change not
/// written yet (what the watermark, and so the marker, may not pass).
#[derive(Default)]
pub(super) struct Dirty {
    pub(super) sessions: BTreeMap<SessionId, Lsn>,
    pub(super) chains: BTreeMap<AgentId, Lsn>,
    pub(super) registry: Option<Lsn>,
}

impl Dirty {
    /// Session `id`'s file changed at `lsn` (an older change still unwritten wins).
    pub(super) fn session(&mut self, id: &SessionId, lsn: Lsn) {
        if !self.sessions.contains_key(id) {
            self.sessions.insert(id.clone(), lsn);
        }
    }

    /// The chain file of `agent` changed at `lsn`.
    pub(super) fn chain(&mut self, agent: &AgentId, lsn: Lsn) {
        if !self.chains.contains_key(agent) {
            self.chains.insert(agent.clone(), lsn);
        }
    }

    /// The registry changed at `lsn`.
    pub(super) fn registry(&mut self, lsn: Lsn) {
        self.registry.get_or_insert(lsn);
    }

    /// The oldest change not written yet.
    pub(super) fn oldest(&self) -> Option<Lsn> {
        self.sessions
            .values()
            .chain(self.chains.values())
            .chain(self.registry.iter())
            .min()
            .copied()
    }

    pub(super) fn clear(&mut self) {
        *self = Dirty::default();
    }
}

/// What a file of the projections is, for the cost of its last write.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum FileKey {
    Session(SessionId),
    Chain(AgentId),
    Registry,
}
