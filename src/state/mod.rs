//! The in-memory state: sessions, their checkpoints, the registry and agent chains — a
//! pure function of the log.
//!
//! Architecture invariants:
//! * [`State::apply`] does no I/O and reads no clock; the only time it knows is the event's
//!   `at`. Replaying the same events always yields an equal state.
//! * `apply` never panics on any event; an event that does not fit the state (which
//!   validation in `command` prevents for everything the engine writes) is an error, and
//!   recovery reports it as corruption at the record's file and offset.
//! * Cloning a `State` is cheap (persistent maps and vectors with structural sharing): the
//!   writer validates a batch on a clone and publishes it only once the batch is durable,
//!   and a snapshot serialises a clone while appends go on.

pub(crate) mod agents;
mod bounded;
pub(crate) mod chain;
mod claude;
mod runs;
mod session;
pub(crate) use session::decoding_state;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventBody, run_event};
use crate::run::{Run, RunId};
use crate::types::{AgentId, Lsn, SessionId, Timestamp};

pub use agents::{AGENT_TYPES, Agent, Agents, AgentsPart, agent_type};
pub use chain::{Chain, ChainLink, ChainSummary, LinkAsRead};
pub use claude::{EMPTY_PREFIX_HASH, MAX_REFS, RefKind, Transcript, TranscriptLink, chain_hash};
pub use session::{
    Activity, Adoption, AmplihackDocuments, Checkpoint, CommandRecord, Decision, Details, LogLevel,
    Origin, Session, SessionBody, SessionConfig, Statistics, Status,
};

/// An event that does not fit the state it is applied to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError(pub String);

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, ApplyError> {
    Err(ApplyError(msg.into()))
}

/// Everything the log describes, as of [`State::last_lsn`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// LSN of the last applied event.
    pub last_lsn: Lsn,
    /// Every session, archived ones included, by id.
    #[serde(deserialize_with = "bounded::ord_map")]
    pub sessions: imbl::OrdMap<SessionId, Arc<Session>>,
    /// Agent session chains, by agent id.
    #[serde(deserialize_with = "bounded::ord_map")]
    pub chains: imbl::OrdMap<AgentId, Arc<Chain>>,
    /// Supervised runs, by id. Not part of the state's serde form: state schema 3 stores
    /// them after it (see `codec`), so a state without runs encodes as before.
    #[serde(skip)]
    pub runs: imbl::OrdMap<RunId, Arc<Run>>,
    /// Imported Claude Code transcripts, by engine session. Not part of the state's serde
    /// form: state schema 4 stores them after the runs (see `codec`).
    #[serde(skip)]
    pub claude: imbl::OrdMap<SessionId, Arc<Transcript>>,
    /// Seed 002's agents of each session that had one activated. Not part of the state's
    /// serde form: state schema 4 stores them after the transcripts (see `codec`).
    #[serde(skip)]
    pub agents: imbl::OrdMap<SessionId, Arc<Agents>>,
}

impl State {
    /// An empty state.
    pub fn new() -> State {
        State::default()
    }

    /// A session by id.
    pub fn session(&self, id: &SessionId) -> Option<&Arc<Session>> {
        self.sessions.get(id)
    }

    /// An agent's chain.
    pub fn chain(&self, agent: &AgentId) -> Option<&Arc<Chain>> {
        self.chains.get(agent)
    }

    /// Fails unless no session `id` exists (for the events that bring one into being).
    fn absent(&self, id: &SessionId) -> Result<(), ApplyError> {
        if self.sessions.contains_key(id) {
            return fail(format!("session {id} already exists"));
        }
        Ok(())
    }

    /// A session about to be changed. An adopted session stops being pristine: every
    /// caller changes it (an event that then does not fit fails, and its state is dropped).
    fn session_mut(&mut self, id: &SessionId) -> Result<&mut Session, ApplyError> {
        match self.sessions.get_mut(id) {
            Some(s) => {
                let s = Arc::make_mut(s);
                if let Some(Origin::Adopted(a)) = &mut s.origin {
                    a.pristine = false;
                }
                Ok(s)
            }
            None => fail(format!("session {id} does not exist")),
        }
    }

    /// Applies the event recorded at `lsn`. `lsn` must follow [`State::last_lsn`].
    pub fn apply(&mut self, lsn: Lsn, event: &Event) -> Result<(), ApplyError> {
        if lsn != self.last_lsn.next() {
            return fail(format!(
                "event LSN {lsn} does not follow the state's LSN {}",
                self.last_lsn
            ));
        }
        self.apply_body(Some(lsn), event.at, &event.body)?;
        self.last_lsn = lsn;
        Ok(())
    }

    /// Applies the event recorded at `lsn` as [`State::apply`] does, but keeps an
    /// activity's details in memory ([`Details::Inline`]) rather than the record's LSN: the
    /// state of state schemas before 5, to compare with their snapshots.
    pub(crate) fn apply_inline(&mut self, lsn: Lsn, event: &Event) -> Result<(), ApplyError> {
        if lsn != self.last_lsn.next() {
            return fail(format!(
                "event LSN {lsn} does not follow the state's LSN {}",
                self.last_lsn
            ));
        }
        self.apply_body(None, event.at, &event.body)?;
        self.last_lsn = lsn;
        Ok(())
    }

    /// Applies the event recorded at `lsn` to a scratch state holding only some of the
    /// log's events (a point-in-time view of one session): `lsn` must be above
    /// [`State::last_lsn`], not right after it, so that activities refer to their real
    /// records.
    pub(crate) fn apply_at(&mut self, lsn: Lsn, event: &Event) -> Result<(), ApplyError> {
        if lsn <= self.last_lsn {
            return fail(format!(
                "event LSN {lsn} is not above the state's LSN {}",
                self.last_lsn
            ));
        }
        self.apply_body(Some(lsn), event.at, &event.body)?;
        self.last_lsn = lsn;
        Ok(())
    }

    /// Applies an event body without LSN bookkeeping: `lsn` is the record's for an event
    /// of the log, `None` for an event carried inside one (an import's), whose activities
    /// keep their details in memory.
    fn apply_body(
        &mut self,
        lsn: Option<Lsn>,
        at: Timestamp,
        body: &EventBody,
    ) -> Result<(), ApplyError> {
        match body {
            EventBody::SessionCreated(c) => {
                self.absent(&c.session)?;
                let session = Session::created(c, at);
                self.sessions.insert(c.session.clone(), Arc::new(session));
            }
            EventBody::ActivityRecorded {
                session,
                action,
                details,
            } => {
                let s = self.session_mut(session)?;
                s.require_status(&[Status::Active], "record activity")?;
                s.body.activity_log.push_back(Arc::new(Activity {
                    action: Arc::clone(action),
                    timestamp: at,
                    details: match (details, lsn) {
                        (None, _) => Details::None,
                        (Some(_), Some(lsn)) => Details::InLog(lsn),
                        (Some(d), None) => Details::Inline(d.clone()),
                    },
                }));
                s.last_activity = at;
            }
            EventBody::MetadataSet {
                session,
                key,
                value,
            } => {
                let s = self.session_mut(session)?;
                s.require_not_archived("set metadata")?;
                s.body.metadata.insert(key.clone(), value.clone());
            }
            EventBody::MetadataRemoved { session, key } => {
                let s = self.session_mut(session)?;
                s.require_not_archived("remove metadata")?;
                if s.body.metadata.remove(key).is_none() {
                    return fail(format!("session {session} has no metadata key {key:?}"));
                }
            }
            EventBody::StatusChanged { session, status } => {
                let s = self.session_mut(session)?;
                s.change_status(*status, at)?;
            }
            EventBody::SessionsExpired { sessions } => {
                for id in sessions {
                    let s = self.session_mut(id)?;
                    s.require_status(&[Status::Active], "expire")?;
                    s.body.status = Status::TimedOut;
                }
            }
            EventBody::SessionsArchived { sessions } => {
                for id in sessions {
                    let s = self.session_mut(id)?;
                    s.require_not_archived("archive")?;
                    s.body.status = Status::Archived;
                }
            }
            EventBody::CommandRecorded {
                session,
                command,
                args,
                success,
                error,
                duration_ms,
            } => {
                let s = self.session_mut(session)?;
                s.require_status(&[Status::Active], "record a command in")?;
                s.body.commands.push_back(Arc::new(CommandRecord {
                    command: Arc::clone(command),
                    args: args.clone(),
                    timestamp: at,
                    success: *success,
                    error: error.as_deref().map(Arc::from),
                    duration_ms: *duration_ms,
                }));
                if !success {
                    s.body.command_errors += 1;
                }
                s.last_activity = at;
            }
            EventBody::CheckpointSaved { session, label } => {
                let s = self.session_mut(session)?;
                s.require_not_archived("save a checkpoint of")?;
                let index = u32::try_from(s.checkpoints.len())
                    .map_err(|_| ApplyError("too many checkpoints".into()))?;
                let body = s.body.clone();
                s.checkpoints.push_back(Checkpoint {
                    index,
                    label: label.as_deref().map(Arc::from),
                    created_at: at,
                    body,
                });
            }
            EventBody::CheckpointRestored { session, index } => {
                let s = self.session_mut(session)?;
                s.require_not_archived("restore")?;
                let Some(cp) = s.checkpoints.get(*index as usize) else {
                    return fail(format!("session {session} has no checkpoint {index}"));
                };
                s.body = cp.body.clone();
                s.last_activity = at;
            }
            EventBody::DecisionLogged {
                session,
                what,
                why,
                alternatives,
            } => {
                let s = self.session_mut(session)?;
                s.require_status(&[Status::Active], "log a decision in")?;
                s.body.decisions.push_back(Arc::new(Decision {
                    what: Arc::from(what.as_str()),
                    why: Arc::from(why.as_str()),
                    alternatives: alternatives.as_deref().map(Arc::from),
                    timestamp: at,
                }));
                s.last_activity = at;
            }
            EventBody::ChainLinked {
                agent,
                external_id,
                prompt,
                response,
                metadata,
            } => {
                let chain = self
                    .chains
                    .entry(agent.clone())
                    .or_insert_with(|| Arc::new(Chain::new(agent.clone())));
                Arc::make_mut(chain).link(external_id, prompt, response, metadata.clone(), at)?;
            }
            EventBody::ChainReset { agent } => {
                self.chains
                    .insert(agent.clone(), Arc::new(Chain::new(agent.clone())));
            }
            EventBody::SessionImported {
                session,
                original,
                events,
            } => {
                self.absent(session)?;
                let Some(first) = events.first() else {
                    return fail("an import carries no events");
                };
                if !first.body.creates(original) {
                    return fail("an import must start with the creation of the imported session");
                }
                for e in events {
                    if !e.body.touches(original) || e.body.sessions().len() != 1 {
                        return fail(format!(
                            "an imported {} event does not concern session {original} alone",
                            e.body.type_name()
                        ));
                    }
                    self.apply_body(None, e.at, &e.body.readdressed(original, session))?;
                }
                let s = self.session_mut(session)?;
                s.origin = Some(Origin::Imported {
                    original: original.clone(),
                });
            }
            EventBody::SessionsAdopted(adoption) => {
                for a in &adoption.sessions {
                    self.absent(&a.session)?;
                    let session = Session::adopted(a, at);
                    self.sessions.insert(a.session.clone(), Arc::new(session));
                }
            }
            EventBody::SessionCloned {
                session,
                source,
                data,
            } => {
                self.absent(session)?;
                let mut s = (**data).clone();
                s.id = session.clone();
                s.created_at = at;
                s.last_activity = at;
                s.origin = Some(Origin::Cloned {
                    source: source.clone(),
                });
                self.sessions.insert(session.clone(), Arc::new(s));
            }
            EventBody::ChainsImported { chains } => {
                // Checked in full before anything changes, so a failed apply leaves the
                // state as it was (the writer applies on a clone anyway).
                let mut seen = std::collections::BTreeSet::new();
                for c in chains {
                    if self.chains.contains_key(&c.agent) || !seen.insert(&c.agent) {
                        return fail(format!("chain {} already exists", c.agent));
                    }
                }
                for c in chains {
                    self.chains
                        .insert(c.agent.clone(), Arc::new(Chain::imported(c)));
                }
            }
            run_event!() => return self.apply_run(at, body),
            EventBody::ClaudeTranscript(e) => return self.apply_claude(at, e),
            EventBody::AgentChanged {
                session,
                agent_type,
                action,
                config,
            } => return self.apply_agent(at, session, agent_type, *action, config),
        }
        Ok(())
    }

    /// Whether some chain holds fields of an imported file that only state schema 2
    /// stores (see [`State::chains_as_read`]).
    pub(crate) fn has_chains_as_read(&self) -> bool {
        self.chains
            .values()
            .any(|c| !c.extra.is_empty() || c.sessions.iter().any(|l| l.as_read.is_some()))
    }

    /// The chains' parts that the state's serde form skips (imported files' unknown keys
    /// and exact timestamps), for state schema 2; `None` when no chain has any.
    pub(crate) fn chains_as_read(&self) -> Option<chain::ChainsAsRead> {
        let mut out = Vec::new();
        for (agent, c) in &self.chains {
            let links: Vec<(u64, LinkAsRead)> = c
                .sessions
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.as_read.as_ref().map(|a| (i as u64, (**a).clone())))
                .collect();
            if !links.is_empty() || !c.extra.is_empty() {
                out.push(chain::ChainAsRead {
                    agent: agent.clone(),
                    extra: c.extra.clone(),
                    links,
                });
            }
        }
        (!out.is_empty()).then_some(chain::ChainsAsRead(out))
    }

    /// Puts back what [`State::chains_as_read`] took out; an error when it names a chain
    /// or a link the state does not have.
    pub(crate) fn attach_chains_as_read(
        &mut self,
        parts: chain::ChainsAsRead,
    ) -> Result<(), ApplyError> {
        for part in parts.0 {
            let Some(c) = self.chains.get_mut(&part.agent) else {
                return fail(format!(
                    "no chain {} to attach imported fields to",
                    part.agent
                ));
            };
            let c = Arc::make_mut(c);
            c.extra = part.extra;
            for (i, a) in part.links {
                let link = usize::try_from(i)
                    .ok()
                    .and_then(|i| c.sessions.get_mut(i))
                    .ok_or_else(|| ApplyError(format!("chain {} has no link {i}", part.agent)))?;
                link.as_read = Some(Arc::new(a));
            }
        }
        Ok(())
    }

    /// Sessions whose status is `status` (all sessions when `None`), in id order.
    pub fn list(&self, status: Option<Status>) -> impl Iterator<Item = &Arc<Session>> {
        self.sessions
            .values()
            .filter(move |s| status.is_none_or(|st| s.body.status == st))
    }

    /// Number of sessions per status.
    pub fn count_by_status(&self) -> std::collections::BTreeMap<Status, u64> {
        let mut m = std::collections::BTreeMap::new();
        for s in self.sessions.values() {
            *m.entry(s.body.status).or_insert(0) += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SessionCreated;
    use crate::types::JsonText;

    fn id(s: &str) -> SessionId {
        SessionId::new(s).unwrap()
    }

    fn created(s: &str) -> EventBody {
        EventBody::SessionCreated(Box::new(SessionCreated {
            session: id(s),
            name: s.into(),
            agent: None,
            working_dir: None,
            timeout_secs: 3600,
            config: SessionConfig::default(),
            metadata: vec![],
        }))
    }

    fn apply_all(bodies: Vec<EventBody>) -> Result<State, ApplyError> {
        let mut st = State::new();
        for (i, b) in bodies.into_iter().enumerate() {
            st.apply(
                Lsn(i as u64 + 1),
                &Event {
                    at: Timestamp::from_secs(1000 + i as i64),
                    body: b,
                },
            )?;
        }
        Ok(st)
    }

    #[test]
    fn checkpoint_restore_returns_the_restorable_state() {
        let st = apply_all(vec![
            created("a"),
            EventBody::ActivityRecorded {
                session: id("a"),
                action: "one".into(),
                details: None,
            },
            EventBody::MetadataSet {
                session: id("a"),
                key: "k".into(),
                value: JsonText::string("v1").unwrap(),
            },
            EventBody::CheckpointSaved {
                session: id("a"),
                label: Some("before".into()),
            },
            EventBody::ActivityRecorded {
                session: id("a"),
                action: "two".into(),
                details: None,
            },
            EventBody::MetadataSet {
                session: id("a"),
                key: "k".into(),
                value: JsonText::string("v2").unwrap(),
            },
            EventBody::StatusChanged {
                session: id("a"),
                status: Status::Paused,
            },
            EventBody::CheckpointRestored {
                session: id("a"),
                index: 0,
            },
        ])
        .unwrap();
        let s = st.session(&id("a")).unwrap();
        assert_eq!(s.body.activity_log.len(), 1);
        assert_eq!(s.body.status, Status::Active);
        assert_eq!(s.body.metadata.get("k").unwrap().as_str(), "\"v1\"");
        assert_eq!(s.checkpoints.len(), 1);
    }

    #[test]
    fn events_that_do_not_fit_are_errors_not_panics() {
        assert!(
            apply_all(vec![EventBody::ActivityRecorded {
                session: id("missing"),
                action: "x".into(),
                details: None,
            }])
            .is_err()
        );
        assert!(apply_all(vec![created("a"), created("a")]).is_err());
        assert!(
            apply_all(vec![
                created("a"),
                EventBody::CheckpointRestored {
                    session: id("a"),
                    index: 3
                }
            ])
            .is_err()
        );
        let mut st = State::new();
        let e = Event {
            at: Timestamp(0),
            body: created("a"),
        };
        assert!(st.apply(Lsn(2), &e).is_err(), "LSN gap accepted");
    }

    #[test]
    fn activity_on_an_inactive_session_is_refused() {
        let r = apply_all(vec![
            created("a"),
            EventBody::StatusChanged {
                session: id("a"),
                status: Status::Ended,
            },
            EventBody::ActivityRecorded {
                session: id("a"),
                action: "x".into(),
                details: None,
            },
        ]);
        assert!(r.is_err());
    }
}
