//! Seed 002's agents per session: which of its twelve agent types are active in a
//! session, how often each was activated and restarted, and when it last changed.
//!
//! The agents are not part of the session's serde form (so a session file, a bundle's
//! session and a state without agents keep their bytes): state schema 4 stores them
//! after the transcripts (see `codec`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ApplyError, State, Status, fail};
use crate::event::AgentAction;
use crate::types::{JsonText, SessionId, Timestamp};

/// Seed 002's twelve agent types, in its order, with the capabilities it lists.
pub const AGENT_TYPES: [(&str, &[&str]); 12] = [
    (
        "ORCHESTRATOR",
        &["master-orchestrator", "smart-orchestrator"],
    ),
    ("FRONTEND", &["frontend-architecture", "UI/UX design"]),
    ("BACKEND", &["backend-services", "API development"]),
    ("DATABASE", &["database-architect", "schema design"]),
    ("API", &["api-integration-specialist", "external services"]),
    (
        "MIDDLEWARE",
        &["middleware-specialist", "integration patterns"],
    ),
    ("DEVOPS", &["devops-deployment", "CI/CD automation"]),
    (
        "SECURITY",
        &["security-architecture", "vulnerability scanning"],
    ),
    ("PERFORMANCE", &["performance-optimization", "monitoring"]),
    ("QUALITY", &["quality-assurance", "testing frameworks"]),
    ("DOCUMENTATION", &["technical-documentation", "API docs"]),
    ("MONITORING", &["monitoring-observability", "alerting"]),
];

/// The agent type `name` names, in its canonical (upper case) spelling; `None` when it is
/// not one of [`AGENT_TYPES`]. Case does not matter (`backend` is `BACKEND`).
pub fn agent_type(name: &str) -> Option<&'static str> {
    AGENT_TYPES
        .iter()
        .map(|(t, _)| *t)
        .find(|t| t.eq_ignore_ascii_case(name))
}

/// One agent type of a session, once it was activated at least once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Whether it is active.
    pub active: bool,
    /// How many times it was activated.
    pub activations: u64,
    /// How many times it was restarted.
    pub restarts: u64,
    /// When it last changed.
    pub changed_at: Timestamp,
    /// The configuration given with its last activation or restart.
    pub config: Option<JsonText>,
}

/// A session's agents, by agent type.
pub type Agents = BTreeMap<String, Agent>;

/// What state schema 4 stores of the agents: each session's, both in order.
pub type AgentsPart = Vec<(SessionId, Vec<(String, Agent)>)>;

/// Why `action` does not fit an agent that is (`Some(true)`) or is not active (`None`:
/// never activated), or `None` when it fits.
pub fn refusal(current: Option<&Agent>, action: AgentAction) -> Option<&'static str> {
    let active = current.is_some_and(|a| a.active);
    match action {
        AgentAction::Activated if active => Some("the agent is already active"),
        AgentAction::Deactivated | AgentAction::Restarted if !active => {
            Some("the agent is not active")
        }
        _ => None,
    }
}

/// Why a session with `status` takes no agent change, or `None` when it does.
pub fn status_refusal(status: Status) -> Option<String> {
    match status {
        Status::Active | Status::Paused => None,
        other => Some(format!("it is {other}")),
    }
}

impl State {
    /// The agents of session `id` (none when no agent was ever activated in it).
    pub fn agents_of(&self, id: &SessionId) -> Option<&Arc<Agents>> {
        self.agents.get(id)
    }

    pub(super) fn apply_agent(
        &mut self,
        at: Timestamp,
        session: &SessionId,
        kind: &str,
        action: AgentAction,
        config: &Option<JsonText>,
    ) -> Result<(), ApplyError> {
        let Some(s) = self.sessions.get(session) else {
            return fail(format!("session {session} does not exist"));
        };
        if let Some(reason) = status_refusal(s.body.status) {
            return fail(format!("session {session}: no agent change: {reason}"));
        }
        if agent_type(kind) != Some(kind) {
            return fail(format!("{kind:?} is not an agent type"));
        }
        let current = self.agents.get(session).and_then(|a| a.get(kind));
        if let Some(reason) = refusal(current, action) {
            return fail(format!("agent {kind} of {session}: {reason}"));
        }
        let agents = Arc::make_mut(self.agents.entry(session.clone()).or_default());
        let a = agents.entry(kind.to_owned()).or_insert(Agent {
            active: false,
            activations: 0,
            restarts: 0,
            changed_at: at,
            config: None,
        });
        a.changed_at = at;
        match action {
            AgentAction::Activated => {
                a.active = true;
                a.activations += 1;
                a.config = config.clone();
            }
            AgentAction::Deactivated => a.active = false,
            AgentAction::Restarted => {
                a.restarts += 1;
                if config.is_some() {
                    a.config = config.clone();
                }
            }
        }
        Ok(())
    }

    /// The agents as state schema 4 stores them.
    pub(crate) fn agents_part(&self) -> AgentsPart {
        self.agents
            .iter()
            .map(|(id, a)| {
                (
                    id.clone(),
                    a.iter().map(|(t, a)| (t.clone(), a.clone())).collect(),
                )
            })
            .collect()
    }

    /// Puts back the agents a state schema 4 snapshot stores after the transcripts.
    pub(crate) fn attach_agents(&mut self, part: AgentsPart) -> Result<(), ApplyError> {
        for (id, agents) in part {
            if !self.sessions.contains_key(&id) {
                return fail(format!("agents of {id}, which has no session"));
            }
            if agents.is_empty() {
                return fail(format!("an empty list of agents for {id}"));
            }
            let mut map = Agents::new();
            for (t, a) in agents {
                if agent_type(&t) != Some(t.as_str()) {
                    return fail(format!("{t:?} is not an agent type"));
                }
                if map.insert(t.clone(), a).is_some() {
                    return fail(format!("agent {t} of {id} given twice"));
                }
            }
            if self.agents.insert(id.clone(), Arc::new(map)).is_some() {
                return fail(format!("agents of {id} given twice"));
            }
        }
        Ok(())
    }
}
