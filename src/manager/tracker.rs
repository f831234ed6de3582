//! [`SessionTracker`]: seed 003's tracker of one agent's chain of Claude Code session ids.
//!
//! Claude Code's `--resume` answers every turn with a new session id; the chain records
//! them in order, with the turn's prompt and response truncated to 200 characters, so the
//! next turn can resume the newest one.

use std::sync::Arc;

use serde_json::Value;

use super::Inner;
use crate::command::Command;
use crate::error::Result;
use crate::state::{Chain, ChainLink, ChainSummary};
use crate::types::{AgentId, JsonText, Lsn};

/// One agent's session chain (seed 003 `SessionTracker`). Holds only the agent id; reads
/// see the latest durable state. The chain file is `chains/<agent>_sessions.json`.
#[derive(Clone)]
pub struct SessionTracker {
    inner: Arc<Inner>,
    agent: AgentId,
}

impl std::fmt::Debug for SessionTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTracker")
            .field("agent_id", &self.agent)
            .finish()
    }
}

impl SessionTracker {
    pub(super) fn new(inner: Arc<Inner>, agent: AgentId) -> SessionTracker {
        SessionTracker { inner, agent }
    }

    /// The agent.
    pub fn agent_id(&self) -> &AgentId {
        &self.agent
    }

    /// The chain as of the latest durable state (empty if the agent has none yet).
    pub fn chain(&self) -> Arc<Chain> {
        self.inner
            .state()
            .chain(&self.agent)
            .cloned()
            .unwrap_or_else(|| Arc::new(Chain::new(self.agent.clone())))
    }

    /// Seed 003 `update_session(new_session_id, prompt, response, metadata)`: appends a
    /// link and makes it current.
    pub fn update_session(
        &self,
        new_session_id: &str,
        prompt: &str,
        response: &str,
        metadata: Option<Value>,
    ) -> Result<Lsn> {
        let metadata = metadata.as_ref().map(JsonText::from_value).transpose()?;
        Ok(self
            .inner
            .execute(Command::LinkChain {
                agent: self.agent.clone(),
                external_id: new_session_id.to_owned(),
                prompt: prompt.to_owned(),
                response: response.to_owned(),
                metadata,
            })?
            .lsn)
    }

    /// Seed 003 `get_current_session()`.
    pub fn get_current_session(&self) -> Option<String> {
        self.chain()
            .current_session_id
            .as_deref()
            .map(str::to_owned)
    }

    /// Seed 003 `get_session_chain()`: every link, oldest first.
    pub fn get_session_chain(&self) -> Vec<ChainLink> {
        self.chain().sessions.iter().cloned().collect()
    }

    /// Seed 003 `interaction_count`.
    pub fn interaction_count(&self) -> u64 {
        self.chain().interaction_count
    }

    /// Seed 003 `get_chain_summary()`.
    pub fn get_chain_summary(&self) -> ChainSummary {
        self.chain().summary()
    }

    /// Seed 003 `validate_session(session_id)`: whether the id is in the chain.
    pub fn validate_session(&self, session_id: &str) -> bool {
        self.chain().contains(session_id)
    }

    /// Seed 003 `reset()`: empties the chain (the log keeps the old links).
    pub fn reset(&self) -> Result<Lsn> {
        Ok(self
            .inner
            .execute(Command::ResetChain(self.agent.clone()))?
            .lsn)
    }
}
