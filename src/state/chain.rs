//! Agent session chains (seed 003): Claude Code's `--resume` hands out a new session id
//! per turn, and a chain keeps the sequence of those ids for one agent.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::types::{AgentId, JsonText, Timestamp};

/// Characters of prompt and response kept per link (seed 003 truncates to 200).
pub const CHAIN_TEXT_CHARS: usize = 200;

/// Truncates `s` to [`CHAIN_TEXT_CHARS`] characters.
pub fn truncate_chain_text(s: &str) -> String {
    s.chars().take(CHAIN_TEXT_CHARS).collect()
}

/// One link: an external session id and the turn that produced it (seed 003 `SessionInfo`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The external session id.
    pub session_id: Arc<str>,
    /// When it was linked.
    pub created_at: Timestamp,
    /// The chain's interaction count after this link (1-based).
    pub interaction_count: u64,
    /// The prompt, truncated.
    pub last_prompt: Arc<str>,
    /// The response, truncated.
    pub last_response: Arc<str>,
    /// Optional metadata.
    pub metadata: Option<JsonText>,
}

/// One agent's chain (seed 003 `SessionTracker`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    /// The agent.
    pub agent_id: AgentId,
    /// The newest external session id.
    pub current_session_id: Option<Arc<str>>,
    /// Interactions since the last reset.
    pub interaction_count: u64,
    /// The links, oldest first.
    #[serde(deserialize_with = "super::bounded::vector")]
    pub sessions: imbl::Vector<ChainLink>,
}

/// Seed 003's `get_chain_summary()`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChainSummary {
    /// The agent.
    pub agent_id: String,
    /// Number of links.
    pub total_sessions: u64,
    /// Interactions since the last reset.
    pub total_interactions: u64,
    /// The first external id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_session: Option<String>,
    /// The current external id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_session: Option<String>,
    /// Every external id, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_ids: Option<Vec<String>>,
}

impl Chain {
    /// An empty chain.
    pub fn new(agent_id: AgentId) -> Chain {
        Chain {
            agent_id,
            current_session_id: None,
            interaction_count: 0,
            sessions: imbl::Vector::new(),
        }
    }

    pub(super) fn link(
        &mut self,
        external_id: &str,
        prompt: &str,
        response: &str,
        metadata: Option<JsonText>,
        at: Timestamp,
    ) {
        self.interaction_count += 1;
        let id: Arc<str> = Arc::from(external_id);
        self.sessions.push_back(ChainLink {
            session_id: Arc::clone(&id),
            created_at: at,
            interaction_count: self.interaction_count,
            last_prompt: Arc::from(truncate_chain_text(prompt).as_str()),
            last_response: Arc::from(truncate_chain_text(response).as_str()),
            metadata,
        });
        self.current_session_id = Some(id);
    }

    /// Whether `external_id` is in the chain (seed 003 `validate_session`).
    pub fn contains(&self, external_id: &str) -> bool {
        self.sessions.iter().any(|l| &*l.session_id == external_id)
    }

    /// Seed 003's summary.
    pub fn summary(&self) -> ChainSummary {
        if self.sessions.is_empty() {
            return ChainSummary {
                agent_id: self.agent_id.to_string(),
                total_sessions: 0,
                total_interactions: 0,
                first_session: None,
                current_session: None,
                session_ids: None,
            };
        }
        ChainSummary {
            agent_id: self.agent_id.to_string(),
            total_sessions: self.sessions.len() as u64,
            total_interactions: self.interaction_count,
            first_session: self.sessions.front().map(|l| l.session_id.to_string()),
            current_session: self.current_session_id.as_deref().map(str::to_owned),
            session_ids: Some(
                self.sessions
                    .iter()
                    .map(|l| l.session_id.to_string())
                    .collect(),
            ),
        }
    }
}
