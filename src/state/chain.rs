//! Agent session chains (seed 003): Claude Code's `--resume` hands out a new session id
//! per turn, and a chain keeps the sequence of those ids for one agent.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ApplyError;
use crate::event::ImportedChain;
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
    /// What an imported file's entry held that the fields above do not render the same way
    /// (`None` for every link the engine made, and for imported entries it renders exactly).
    /// Not part of the state's serde form: snapshots store it apart (state schema 2, see
    /// `codec`).
    #[serde(skip)]
    pub as_read: Option<Arc<LinkAsRead>>,
}

/// The part of an imported chain entry that the engine's own rendering would not
/// reproduce, kept so that the file it writes back is equal to the file that was read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkAsRead {
    /// `created_at` exactly as the file had it, when [`crate::projection::schema::chain_timestamp`]
    /// of the parsed time differs (no microseconds, an offset, another precision).
    pub created_at: Option<String>,
    /// The entry's keys beyond seed 003's six, in file order.
    pub extra: Vec<(String, JsonText)>,
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
    /// An imported file's top-level keys beyond seed 003's four, in file order (empty
    /// unless imported; a reset drops them, as seed 003's own reset writes only its four).
    /// Not part of the state's serde form: snapshots store it apart (state schema 2).
    #[serde(skip)]
    pub extra: Vec<(String, JsonText)>,
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
            extra: Vec::new(),
        }
    }

    /// The chain an imported tracker file describes, every field as read.
    pub(super) fn imported(c: &ImportedChain) -> Chain {
        Chain {
            agent_id: c.agent.clone(),
            current_session_id: c.current_session_id.as_deref().map(Arc::from),
            interaction_count: c.interaction_count,
            sessions: c
                .links
                .iter()
                .map(|l| ChainLink {
                    session_id: Arc::from(l.session_id.as_str()),
                    created_at: l.created_at,
                    interaction_count: l.interaction_count,
                    last_prompt: Arc::from(l.last_prompt.as_str()),
                    last_response: Arc::from(l.last_response.as_str()),
                    metadata: l.metadata.clone(),
                    as_read: (l.created_at_text.is_some() || !l.extra.is_empty()).then(|| {
                        Arc::new(LinkAsRead {
                            created_at: l.created_at_text.clone(),
                            extra: l.extra.clone(),
                        })
                    }),
                })
                .collect(),
            extra: c.extra.clone(),
        }
    }

    /// Seed 003 `update_session`: the count goes up by one (from wherever it was, an
    /// imported count included) and the new link becomes current. A count at `u64::MAX`
    /// cannot go up: an error, never a wrap or a panic (`decide` refuses it first).
    pub(super) fn link(
        &mut self,
        external_id: &str,
        prompt: &str,
        response: &str,
        metadata: Option<JsonText>,
        at: Timestamp,
    ) -> Result<(), ApplyError> {
        self.interaction_count = self.interaction_count.checked_add(1).ok_or_else(|| {
            ApplyError(format!(
                "the interaction count of chain {} cannot go past {}",
                self.agent_id,
                u64::MAX
            ))
        })?;
        let id: Arc<str> = Arc::from(external_id);
        self.sessions.push_back(ChainLink {
            session_id: Arc::clone(&id),
            created_at: at,
            interaction_count: self.interaction_count,
            last_prompt: Arc::from(truncate_chain_text(prompt).as_str()),
            last_response: Arc::from(truncate_chain_text(response).as_str()),
            metadata,
            as_read: None,
        });
        self.current_session_id = Some(id);
        Ok(())
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

/// What state schema 2 stores after the state: the chains' `as_read` parts, which the
/// state's serde form skips (see `codec`). Written only when some chain has one.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChainsAsRead(pub(crate) Vec<ChainAsRead>);

/// One chain's [`Chain::extra`] and the `as_read` parts of its links, by position.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChainAsRead {
    pub(crate) agent: AgentId,
    pub(crate) extra: Vec<(String, JsonText)>,
    pub(crate) links: Vec<(u64, LinkAsRead)>,
}
