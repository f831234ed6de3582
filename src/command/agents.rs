//! Seed 002's agents per session: activate, deactivate, restart one of its agent types.

use super::{Decision, Outcome, refuse, session};
use crate::error::Error;
use crate::event::{AgentAction, EventBody};
use crate::state::{State, agent_type, agents};
use crate::types::{JsonText, SessionId};

pub(super) fn change(
    state: &State,
    id: SessionId,
    kind: String,
    action: AgentAction,
    config: Option<JsonText>,
) -> Decision {
    let op = match action {
        AgentAction::Activated => "activate an agent",
        AgentAction::Deactivated => "deactivate an agent",
        AgentAction::Restarted => "restart an agent",
    };
    let s = session(state, &id)?;
    let Some(kind) = agent_type(&kind) else {
        return Err(Error::not_found("agent type", kind));
    };
    if let Some(reason) = agents::status_refusal(s.body.status) {
        return Err(refuse(&id, op, reason));
    }
    if config.is_some() && action == AgentAction::Deactivated {
        return Err(Error::invalid(
            "config",
            "a deactivation takes no configuration",
        ));
    }
    let current = state.agents_of(&id).and_then(|a| a.get(kind));
    if let Some(reason) = agents::refusal(current, action) {
        return Err(refuse(&id, op, format!("{kind}: {reason}")));
    }
    Ok((
        Some(EventBody::AgentChanged {
            session: id.clone(),
            agent_type: kind.to_owned(),
            action,
            config,
        }),
        Outcome::Session(id),
    ))
}
