//! A reference model of the engine's state: plain `BTreeMap`s and `Vec`s, written from the
//! documented rules (seed 001's session manager, seed 003's chains, `command.rs`'s limits),
//! independent of the engine's `State`, `decide` and `apply`.
//!
//! The crash, fault and fuzz tests apply the same commands to the model and to the engine,
//! and compare the engine's answers and its recovered state (projected with
//! [`Model::from_state`]) with the model.
#![allow(dead_code)]

use std::collections::BTreeMap;

use session_engine::state::{Details, LogLevel};
use session_engine::{Command, Error, SessionConfig, State, Status};

/// Microseconds since the epoch, as the engine stamps events.
pub type Micros = i64;

const MAX_SHORT: usize = 1024;
const MAX_LONG: usize = 64 * 1024;
const MAX_TIMEOUT: u64 = 100 * 365 * 24 * 3600;
const CHAIN_CHARS: usize = 200;

/// A session's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MStatus {
    Active,
    Paused,
    Ended,
    TimedOut,
    Archived,
}

/// A recorded command: (command, args, at, success, error, duration_ms).
pub type MCommand = (String, Option<String>, Micros, bool, Option<String>, u64);

/// What a checkpoint saves.
#[derive(Clone, Debug, PartialEq)]
pub struct MBody {
    pub status: MStatus,
    pub metadata: BTreeMap<String, String>,
    /// (action, details, at)
    pub activities: Vec<(String, Option<String>, Micros)>,
    pub commands: Vec<MCommand>,
    /// (what, why, alternatives, at)
    pub decisions: Vec<(String, String, Option<String>, Micros)>,
    pub command_errors: u64,
}

/// A saved checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct MCheckpoint {
    pub label: Option<String>,
    pub at: Micros,
    pub body: MBody,
}

/// A session.
#[derive(Clone, Debug, PartialEq)]
pub struct MSession {
    pub name: String,
    pub agent: Option<String>,
    pub working_dir: Option<String>,
    pub created_at: Micros,
    pub last_activity: Micros,
    pub timeout_secs: u64,
    /// timeout, max_retries, retry_delay, heartbeat_interval, enable_logging, log level,
    /// auto_save_interval.
    pub config: (f64, u32, f64, f64, bool, String, f64),
    pub body: MBody,
    pub checkpoints: Vec<MCheckpoint>,
    /// ("cloned" | "imported", id)
    pub origin: Option<(String, String)>,
}

/// One link of an agent's chain.
#[derive(Clone, Debug, PartialEq)]
pub struct MLink {
    pub external_id: String,
    pub at: Micros,
    pub interaction: u64,
    pub prompt: String,
    pub response: String,
    pub metadata: Option<String>,
}

/// An agent's chain.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MChain {
    pub current: Option<String>,
    pub interactions: u64,
    pub links: Vec<MLink>,
}

/// The whole model.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Model {
    pub last_lsn: u64,
    pub sessions: BTreeMap<String, MSession>,
    pub chains: BTreeMap<String, MChain>,
}

/// What the engine must answer to a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Accepted, one event appended.
    Appended,
    /// Accepted, nothing to do (no event).
    Nothing,
    /// Refused with an error of this kind (`Error::kind`).
    Refused(&'static str),
}

impl Expect {
    /// Whether the engine's answer `got` is this one.
    pub fn matches(&self, got: &Result<session_engine::Committed, Error>) -> bool {
        match (self, got) {
            (Expect::Appended, Ok(c)) => c.appended,
            (Expect::Nothing, Ok(c)) => !c.appended,
            (Expect::Refused(kind), Err(e)) => e.kind() == *kind,
            _ => false,
        }
    }
}

fn status_of(s: Status) -> MStatus {
    match s {
        Status::Active => MStatus::Active,
        Status::Paused => MStatus::Paused,
        Status::Ended => MStatus::Ended,
        Status::TimedOut => MStatus::TimedOut,
        Status::Archived => MStatus::Archived,
    }
}

fn level_name(l: LogLevel) -> String {
    format!("{l:?}")
}

fn config_of(c: &SessionConfig) -> (f64, u32, f64, f64, bool, String, f64) {
    (
        c.timeout,
        c.max_retries,
        c.retry_delay,
        c.heartbeat_interval,
        c.enable_logging,
        level_name(c.log_level),
        c.auto_save_interval,
    )
}

/// Text is acceptable: at most `max` bytes, no control characters but newline and tab.
fn text_ok(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

fn non_empty_short_ok(s: &str) -> bool {
    !s.trim().is_empty() && text_ok(s, MAX_SHORT)
}

const INVALID: Expect = Expect::Refused("invalid_input");
const NOT_FOUND: Expect = Expect::Refused("not_found");
const STATE: Expect = Expect::Refused("invalid_state");
const EXISTS: Expect = Expect::Refused("already_exists");

impl MSession {
    fn expired(&self, now: Micros) -> bool {
        self.body.status == MStatus::Active
            && self.timeout_secs > 0
            && now
                >= self.last_activity.saturating_add(
                    (self.timeout_secs.min(i64::MAX as u64) as i64).saturating_mul(1_000_000),
                )
    }

    /// Active and not past its timeout: what recording work requires.
    fn require_active(&self, now: Micros) -> Result<(), Expect> {
        if self.body.status != MStatus::Active || self.expired(now) {
            Err(STATE)
        } else {
            Ok(())
        }
    }

    fn require_not_archived(&self) -> Result<(), Expect> {
        if self.body.status == MStatus::Archived {
            Err(STATE)
        } else {
            Ok(())
        }
    }
}

impl Model {
    /// An empty model.
    pub fn new() -> Model {
        Model::default()
    }

    fn session(&self, id: &str) -> Result<&MSession, Expect> {
        self.sessions.get(id).ok_or(NOT_FOUND)
    }

    /// Applies `cmd` at time `now` and says what the engine must answer. A refused command
    /// or one with nothing to do changes nothing.
    pub fn apply(&mut self, cmd: &Command, now: Micros) -> Expect {
        match self.decide_and_apply(cmd, now) {
            Ok(true) => {
                self.last_lsn += 1;
                Expect::Appended
            }
            Ok(false) => Expect::Nothing,
            Err(e) => e,
        }
    }

    /// What `apply` would answer, without changing the model.
    pub fn expect(&self, cmd: &Command, now: Micros) -> Expect {
        self.clone().apply(cmd, now)
    }

    /// `Ok(true)`: applied with an event; `Ok(false)`: nothing to do; `Err`: refused.
    fn decide_and_apply(&mut self, cmd: &Command, now: Micros) -> Result<bool, Expect> {
        match cmd {
            Command::CreateSession(new) => {
                let id = new
                    .id
                    .as_ref()
                    .expect("the model needs explicit session ids")
                    .to_string();
                if self.sessions.contains_key(&id) {
                    return Err(EXISTS);
                }
                let name = new.name.clone().unwrap_or_else(|| id.clone());
                if !text_ok(&name, MAX_SHORT)
                    || new.agent.as_deref().is_some_and(|a| !text_ok(a, MAX_SHORT))
                    || new
                        .working_dir
                        .as_deref()
                        .is_some_and(|w| !text_ok(w, MAX_LONG))
                    || new.timeout_secs > MAX_TIMEOUT
                {
                    return Err(INVALID);
                }
                let c = &new.config;
                for v in [
                    c.timeout,
                    c.retry_delay,
                    c.heartbeat_interval,
                    c.auto_save_interval,
                ] {
                    if !(v.is_finite() && (0.0..=MAX_TIMEOUT as f64).contains(&v)) {
                        return Err(INVALID);
                    }
                }
                if c.max_retries > 1000 || new.metadata.len() > 1024 {
                    return Err(INVALID);
                }
                let mut metadata = BTreeMap::new();
                for (k, v) in &new.metadata {
                    if !non_empty_short_ok(k) || metadata.contains_key(k) {
                        return Err(INVALID);
                    }
                    metadata.insert(k.clone(), v.as_str().to_string());
                }
                self.sessions.insert(
                    id,
                    MSession {
                        name,
                        agent: new.agent.clone(),
                        working_dir: new.working_dir.clone(),
                        created_at: now,
                        last_activity: now,
                        timeout_secs: new.timeout_secs,
                        config: config_of(c),
                        body: MBody {
                            status: MStatus::Active,
                            metadata,
                            activities: Vec::new(),
                            commands: Vec::new(),
                            decisions: Vec::new(),
                            command_errors: 0,
                        },
                        checkpoints: Vec::new(),
                        origin: None,
                    },
                );
                Ok(true)
            }
            Command::RecordActivity {
                session,
                action,
                details,
            } => {
                if !non_empty_short_ok(action) {
                    return Err(INVALID);
                }
                self.session(session.as_str())?.require_active(now)?;
                let s = self.sessions.get_mut(session.as_str()).expect("checked");
                s.body.activities.push((
                    action.clone(),
                    details.as_ref().map(|d| d.as_str().to_string()),
                    now,
                ));
                s.last_activity = now;
                Ok(true)
            }
            Command::SetMetadata {
                session,
                key,
                value,
            } => {
                if !non_empty_short_ok(key) {
                    return Err(INVALID);
                }
                self.session(session.as_str())?.require_not_archived()?;
                let s = self.sessions.get_mut(session.as_str()).expect("checked");
                s.body
                    .metadata
                    .insert(key.clone(), value.as_str().to_string());
                Ok(true)
            }
            Command::RemoveMetadata { session, key } => {
                let s = self.session(session.as_str())?;
                s.require_not_archived()?;
                if !s.body.metadata.contains_key(key) {
                    return Err(NOT_FOUND);
                }
                let s = self.sessions.get_mut(session.as_str()).expect("checked");
                s.body.metadata.remove(key);
                Ok(true)
            }
            Command::Pause(id) => self.transition(id.as_str(), MStatus::Paused, now),
            Command::Resume(id) => self.transition(id.as_str(), MStatus::Active, now),
            Command::End(id) => self.transition(id.as_str(), MStatus::Ended, now),
            Command::Archive(id) => {
                self.session(id.as_str())?.require_not_archived()?;
                let s = self.sessions.get_mut(id.as_str()).expect("checked");
                s.body.status = MStatus::Archived;
                Ok(true)
            }
            Command::CleanupOldSessions { max_age_days } => {
                let cutoff =
                    now.saturating_sub(i64::from(*max_age_days).saturating_mul(86_400_000_000));
                let mut any = false;
                for s in self.sessions.values_mut() {
                    if s.body.status != MStatus::Archived && s.last_activity < cutoff {
                        s.body.status = MStatus::Archived;
                        any = true;
                    }
                }
                Ok(any)
            }
            Command::ExpireIdle => {
                let mut any = false;
                for s in self.sessions.values_mut() {
                    if s.expired(now) {
                        s.body.status = MStatus::TimedOut;
                        any = true;
                    }
                }
                Ok(any)
            }
            Command::RecordCommand {
                session,
                command,
                args,
                success,
                error,
                duration_ms,
            } => {
                if !non_empty_short_ok(command)
                    || error.as_deref().is_some_and(|e| !text_ok(e, MAX_LONG))
                {
                    return Err(INVALID);
                }
                self.session(session.as_str())?.require_active(now)?;
                let s = self.sessions.get_mut(session.as_str()).expect("checked");
                s.body.commands.push((
                    command.clone(),
                    args.as_ref().map(|a| a.as_str().to_string()),
                    now,
                    *success,
                    error.clone(),
                    *duration_ms,
                ));
                if !success {
                    s.body.command_errors += 1;
                }
                s.last_activity = now;
                Ok(true)
            }
            Command::SaveCheckpoint { session, label } => {
                if label.as_deref().is_some_and(|l| !text_ok(l, MAX_SHORT)) {
                    return Err(INVALID);
                }
                self.session(session.as_str())?.require_not_archived()?;
                let s = self.sessions.get_mut(session.as_str()).expect("checked");
                let body = s.body.clone();
                s.checkpoints.push(MCheckpoint {
                    label: label.clone(),
                    at: now,
                    body,
                });
                Ok(true)
            }
            Command::RestoreCheckpoint { session, index } => {
                let s = self.session(session.as_str())?;
                s.require_not_archived()?;
                let index = match index {
                    Some(i) => *i as usize,
                    None if s.checkpoints.is_empty() => return Err(STATE),
                    None => s.checkpoints.len() - 1,
                };
                if index >= s.checkpoints.len() {
                    return Err(NOT_FOUND);
                }
                let s = self.sessions.get_mut(session.as_str()).expect("checked");
                s.body = s.checkpoints[index].body.clone();
                s.last_activity = now;
                Ok(true)
            }
            Command::LogDecision {
                session,
                what,
                why,
                alternatives,
            } => {
                if what.trim().is_empty()
                    || !text_ok(what, MAX_LONG)
                    || !text_ok(why, MAX_LONG)
                    || alternatives
                        .as_deref()
                        .is_some_and(|a| !text_ok(a, MAX_LONG))
                {
                    return Err(INVALID);
                }
                self.session(session.as_str())?.require_active(now)?;
                let s = self.sessions.get_mut(session.as_str()).expect("checked");
                s.body
                    .decisions
                    .push((what.clone(), why.clone(), alternatives.clone(), now));
                s.last_activity = now;
                Ok(true)
            }
            Command::LinkChain {
                agent,
                external_id,
                prompt,
                response,
                metadata,
            } => {
                let prompt: String = prompt.chars().take(CHAIN_CHARS).collect();
                let response: String = response.chars().take(CHAIN_CHARS).collect();
                if !non_empty_short_ok(external_id)
                    || !text_ok(&prompt, MAX_LONG)
                    || !text_ok(&response, MAX_LONG)
                {
                    return Err(INVALID);
                }
                let chain = self.chains.entry(agent.to_string()).or_default();
                chain.interactions += 1;
                chain.links.push(MLink {
                    external_id: external_id.clone(),
                    at: now,
                    interaction: chain.interactions,
                    prompt,
                    response,
                    metadata: metadata.as_ref().map(|m| m.as_str().to_string()),
                });
                chain.current = Some(external_id.clone());
                Ok(true)
            }
            Command::ResetChain(agent) => {
                self.chains.insert(agent.to_string(), MChain::default());
                Ok(true)
            }
            Command::Clone { source, new_id } => {
                let mut copy = self.session(source.as_str())?.clone();
                let id = new_id
                    .as_ref()
                    .expect("the model needs explicit session ids")
                    .to_string();
                if self.sessions.contains_key(&id) {
                    return Err(EXISTS);
                }
                copy.body.status = MStatus::Active;
                copy.created_at = now;
                copy.last_activity = now;
                copy.origin = Some(("cloned".into(), source.to_string()));
                self.sessions.insert(id, copy);
                Ok(true)
            }
            other => panic!("the model does not cover {other:?}"),
        }
    }

    /// A user-requested status change: pause an active session; resume one that is not
    /// active; end one that is active, paused or timed out. Resuming counts as activity.
    fn transition(&mut self, id: &str, to: MStatus, now: Micros) -> Result<bool, Expect> {
        let from = self.session(id)?.body.status;
        let ok = match to {
            MStatus::Paused => from == MStatus::Active,
            MStatus::Active => from != MStatus::Active,
            MStatus::Ended => matches!(from, MStatus::Active | MStatus::Paused | MStatus::TimedOut),
            _ => false,
        };
        if !ok {
            return Err(STATE);
        }
        let s = self.sessions.get_mut(id).expect("checked");
        s.body.status = to;
        if to == MStatus::Active {
            s.last_activity = now;
        }
        Ok(true)
    }

    /// The engine's latest state in the model's terms, with the activities' details read
    /// from its log (a damaged record is the read's error, naming its place).
    pub fn from_engine(engine: &session_engine::Engine) -> session_engine::Result<Model> {
        Ok(Model::from_state(&engine.state_with_details()?))
    }

    /// The state in the model's terms, for comparison: details still in the log are
    /// shown by their LSN (compare a state with its details, [`Model::from_engine`], with
    /// a model built by commands).
    pub fn from_state(state: &State) -> Model {
        let body = |b: &session_engine::state::SessionBody| MBody {
            status: status_of(b.status),
            metadata: b
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().to_string()))
                .collect(),
            activities: b
                .activity_log
                .iter()
                .map(|a| {
                    (
                        a.action.to_string(),
                        match &a.details {
                            Details::None => None,
                            Details::Inline(d) => Some(d.as_str().to_string()),
                            // Only a state read with its details (`from_engine`) compares
                            // with a model built by commands.
                            Details::InLog(lsn) => Some(format!("<details in the log at {lsn}>")),
                        },
                        a.timestamp.0,
                    )
                })
                .collect(),
            commands: b
                .commands
                .iter()
                .map(|c| {
                    (
                        c.command.to_string(),
                        c.args.as_ref().map(|a| a.as_str().to_string()),
                        c.timestamp.0,
                        c.success,
                        c.error.as_deref().map(str::to_string),
                        c.duration_ms,
                    )
                })
                .collect(),
            decisions: b
                .decisions
                .iter()
                .map(|d| {
                    (
                        d.what.to_string(),
                        d.why.to_string(),
                        d.alternatives.as_deref().map(str::to_string),
                        d.timestamp.0,
                    )
                })
                .collect(),
            command_errors: b.command_errors,
        };
        let sessions = state
            .sessions
            .iter()
            .map(|(id, s)| {
                (
                    id.to_string(),
                    MSession {
                        name: s.name.to_string(),
                        agent: s.agent.as_deref().map(str::to_string),
                        working_dir: s.working_dir.as_deref().map(str::to_string),
                        created_at: s.created_at.0,
                        last_activity: s.last_activity.0,
                        timeout_secs: s.timeout_secs,
                        config: config_of(&s.config),
                        body: body(&s.body),
                        checkpoints: s
                            .checkpoints
                            .iter()
                            .map(|c| MCheckpoint {
                                label: c.label.as_deref().map(str::to_string),
                                at: c.created_at.0,
                                body: body(&c.body),
                            })
                            .collect(),
                        origin: s.origin.as_ref().map(|o| match o {
                            session_engine::state::Origin::Cloned { source } => {
                                ("cloned".to_string(), source.to_string())
                            }
                            session_engine::state::Origin::Imported { original } => {
                                ("imported".to_string(), original.to_string())
                            }
                            // The model's workloads never adopt.
                            session_engine::state::Origin::Adopted(_) => {
                                ("adopted".to_string(), String::new())
                            }
                        }),
                    },
                )
            })
            .collect();
        let chains = state
            .chains
            .iter()
            .map(|(agent, c)| {
                (
                    agent.to_string(),
                    MChain {
                        current: c.current_session_id.as_deref().map(str::to_string),
                        interactions: c.interaction_count,
                        links: c
                            .sessions
                            .iter()
                            .map(|l| MLink {
                                external_id: l.session_id.to_string(),
                                at: l.created_at.0,
                                interaction: l.interaction_count,
                                prompt: l.last_prompt.to_string(),
                                response: l.last_response.to_string(),
                                metadata: l.metadata.as_ref().map(|m| m.as_str().to_string()),
                            })
                            .collect(),
                    },
                )
            })
            .collect();
        Model {
            last_lsn: state.last_lsn.0,
            sessions,
            chains,
        }
    }

    /// The part of the model owned by a lane of a concurrent workload: the sessions and
    /// chains whose ids start with `prefix`.
    pub fn owned(&self, prefix: &str) -> (BTreeMap<String, MSession>, BTreeMap<String, MChain>) {
        (
            self.sessions
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            self.chains
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Replaces the part owned by `prefix` with `other`'s.
    pub fn overlay(&mut self, prefix: &str, other: &Model) {
        self.sessions.retain(|k, _| !k.starts_with(prefix));
        self.chains.retain(|k, _| !k.starts_with(prefix));
        let (s, c) = other.owned(prefix);
        self.sessions.extend(s);
        self.chains.extend(c);
    }

    /// A short description of the first difference from `other`, for failure messages.
    pub fn diff(&self, other: &Model) -> String {
        if self.last_lsn != other.last_lsn {
            return format!("last LSN {} vs {}", self.last_lsn, other.last_lsn);
        }
        for (k, v) in &self.sessions {
            match other.sessions.get(k) {
                None => return format!("session {k} missing on the right"),
                Some(o) if o != v => return format!("session {k}: {v:?}\n  vs {o:?}"),
                _ => {}
            }
        }
        for k in other.sessions.keys() {
            if !self.sessions.contains_key(k) {
                return format!("session {k} missing on the left");
            }
        }
        if self.chains != other.chains {
            return format!("chains {:?}\n  vs {:?}", self.chains, other.chains);
        }
        "equal".into()
    }
}
