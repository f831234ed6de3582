//! What an event is about: its type name, the sessions and agent chains it changes, and
//! the same event narrowed to or re-addressed for one session.

use super::{AmplihackAdoption, EventBody, MAX_IMPORT_DEPTH, run_event};
use crate::claude::events::ClaudeEvent;
use crate::types::{AgentId, SessionId};

/// The pattern of every event about one session named by its `session` field, binding
/// that field to `$s` (by reference or by mutable reference, as the match needs).
macro_rules! one_session {
    ($s:ident) => {
        EventBody::ActivityRecorded { session: $s, .. }
            | EventBody::MetadataSet { session: $s, .. }
            | EventBody::MetadataRemoved { session: $s, .. }
            | EventBody::StatusChanged { session: $s, .. }
            | EventBody::CommandRecorded { session: $s, .. }
            | EventBody::CheckpointSaved { session: $s, .. }
            | EventBody::CheckpointRestored { session: $s, .. }
            | EventBody::DecisionLogged { session: $s, .. }
            | EventBody::SessionImported { session: $s, .. }
            | EventBody::SessionCloned { session: $s, .. }
            | EventBody::AgentChanged { session: $s, .. }
    };
}

impl EventBody {
    /// How many levels of imports the event holds (0 for everything but an import),
    /// counting no further than `MAX_IMPORT_DEPTH + 1`.
    pub fn import_depth(&self) -> usize {
        fn depth(body: &EventBody, limit: usize) -> usize {
            match body {
                EventBody::SessionImported { events, .. } if limit > 0 => {
                    1 + events
                        .iter()
                        .map(|e| depth(&e.body, limit - 1))
                        .max()
                        .unwrap_or(0)
                }
                EventBody::SessionImported { .. } => 1,
                _ => 0,
            }
        }
        depth(self, MAX_IMPORT_DEPTH + 1)
    }

    /// The event's type name, as printed by `replay` (`"session_created"`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::SessionCreated(_) => "session_created",
            EventBody::ActivityRecorded { .. } => "activity_recorded",
            EventBody::MetadataSet { .. } => "metadata_set",
            EventBody::MetadataRemoved { .. } => "metadata_removed",
            EventBody::StatusChanged { .. } => "status_changed",
            EventBody::SessionsExpired { .. } => "sessions_expired",
            EventBody::SessionsArchived { .. } => "sessions_archived",
            EventBody::CommandRecorded { .. } => "command_recorded",
            EventBody::CheckpointSaved { .. } => "checkpoint_saved",
            EventBody::CheckpointRestored { .. } => "checkpoint_restored",
            EventBody::DecisionLogged { .. } => "decision_logged",
            EventBody::ChainLinked { .. } => "chain_linked",
            EventBody::ChainReset { .. } => "chain_reset",
            EventBody::SessionImported { .. } => "session_imported",
            EventBody::SessionCloned { .. } => "session_cloned",
            EventBody::ChainsImported { .. } => "chains_imported",
            EventBody::SessionsAdopted(_) => "sessions_adopted",
            EventBody::RunRequested { .. } => "run_requested",
            EventBody::RunStarted(_) => "run_started",
            EventBody::RunOutput { .. } => "run_output",
            EventBody::RunExited(_) => "run_exited",
            EventBody::RunSpawnFailed { .. } => "run_spawn_failed",
            EventBody::RunInterrupted { .. } => "run_interrupted",
            EventBody::RunContained { .. } => "run_contained",
            EventBody::ClaudeTranscript(e) => match **e {
                ClaudeEvent::Opened(_) => "claude_opened",
                ClaudeEvent::Piece(_) => "claude_piece",
            },
            EventBody::AgentChanged { .. } => "agent_changed",
            EventBody::RunRecovering { .. } => "run_recovering",
        }
    }

    /// Whether this event brings session `id` into being (created, imported, cloned or
    /// adopted alone).
    pub fn creates(&self, id: &SessionId) -> bool {
        match self {
            EventBody::SessionCreated(c) => c.session == *id,
            EventBody::SessionImported { session, .. }
            | EventBody::SessionCloned { session, .. } => session == id,
            EventBody::SessionsAdopted(a) => {
                matches!(a.sessions.as_slice(), [one] if one.session == *id)
            }
            EventBody::ClaudeTranscript(e) => {
                matches!(&**e, ClaudeEvent::Opened(o) if o.session == *id)
            }
            _ => false,
        }
    }

    /// The sessions this event changes (empty for chain events).
    pub fn sessions(&self) -> Vec<&SessionId> {
        match self {
            EventBody::SessionCreated(c) => vec![&c.session],
            one_session!(session) => vec![session],
            EventBody::SessionsExpired { sessions } | EventBody::SessionsArchived { sessions } => {
                sessions.iter().collect()
            }
            EventBody::SessionsAdopted(a) => a.sessions.iter().map(|s| &s.session).collect(),
            EventBody::ClaudeTranscript(e) => vec![e.session()],
            EventBody::ChainLinked { .. }
            | EventBody::ChainReset { .. }
            | EventBody::ChainsImported { .. } => Vec::new(),
            // Runs belong to a session but do not change it: no session file, bundle or
            // point-in-time view of a session holds them.
            run_event!() => Vec::new(),
        }
    }

    /// Whether this event changes session `id`.
    pub fn touches(&self, id: &SessionId) -> bool {
        match self {
            EventBody::SessionsExpired { sessions } | EventBody::SessionsArchived { sessions } => {
                sessions.contains(id)
            }
            EventBody::SessionsAdopted(a) => a.sessions.iter().any(|s| s.session == *id),
            _ => self.sessions().first().is_some_and(|s| *s == id),
        }
    }

    /// The event as it concerns session `id` alone: `None` when it does not touch `id`;
    /// a multi-session event (`SessionsExpired`, `SessionsArchived`) narrowed to `[id]`;
    /// any other event unchanged. Point-in-time replay and export bundles need events that
    /// stand on their own, without the other sessions a cleanup or watchdog tick named.
    pub fn narrowed_to(&self, id: &SessionId) -> Option<EventBody> {
        if !self.touches(id) {
            return None;
        }
        Some(match self {
            EventBody::SessionsExpired { .. } => EventBody::SessionsExpired {
                sessions: vec![id.clone()],
            },
            EventBody::SessionsArchived { .. } => EventBody::SessionsArchived {
                sessions: vec![id.clone()],
            },
            EventBody::SessionsAdopted(a) => {
                EventBody::SessionsAdopted(Box::new(AmplihackAdoption {
                    source: a.source.clone(),
                    sessions: a
                        .sessions
                        .iter()
                        .filter(|s| s.session == *id)
                        .cloned()
                        .collect(),
                }))
            }
            other => other.clone(),
        })
    }

    /// The agent chain this event changes, if it changes exactly one (a
    /// [`EventBody::ChainsImported`] may create several: see [`EventBody::agents`]).
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            EventBody::ChainLinked { agent, .. } | EventBody::ChainReset { agent } => Some(agent),
            EventBody::ChainsImported { chains } => match chains.as_slice() {
                [one] => Some(&one.agent),
                _ => None,
            },
            _ => None,
        }
    }

    /// Every agent chain this event changes (empty for session events).
    pub fn agents(&self) -> Vec<&AgentId> {
        match self {
            EventBody::ChainsImported { chains } => chains.iter().map(|c| &c.agent).collect(),
            other => other.agent().into_iter().collect(),
        }
    }

    /// The same event, re-addressed from session `from` to session `to` (used to import
    /// a session under a new id). Events about other sessions are returned unchanged.
    pub fn readdressed(&self, from: &SessionId, to: &SessionId) -> EventBody {
        let swap = |s: &SessionId| if s == from { to.clone() } else { s.clone() };
        let mut b = self.clone();
        match &mut b {
            EventBody::SessionCreated(c) => c.session = swap(&c.session),
            one_session!(session) => *session = swap(session),
            EventBody::SessionsExpired { sessions } | EventBody::SessionsArchived { sessions } => {
                for s in sessions.iter_mut() {
                    *s = swap(s);
                }
            }
            EventBody::SessionsAdopted(a) => {
                for s in a.sessions.iter_mut() {
                    s.session = swap(&s.session);
                }
            }
            EventBody::ClaudeTranscript(e) => {
                if e.session() == from {
                    **e = e.readdressed(to);
                }
            }
            EventBody::ChainLinked { .. }
            | EventBody::ChainReset { .. }
            | EventBody::ChainsImported { .. } => {}
            run_event!() => {}
        }
        b
    }

    /// Whether this is a run event (event schema 3, `RunContained` 4, `RunRecovering` 6).
    pub fn is_run(&self) -> bool {
        matches!(self, run_event!())
    }
}
