//! Resumed sessions as seed 003 chain links.
//!
//! `claude --resume` (and `--continue`) writes the turns that follow into a new transcript
//! under a new session id. What the new file holds tells which session it continues: its
//! first record's `parentUuid` names the last record of the earlier session (a record of
//! another file), a compaction's `logicalParentUuid` may name one, and the history copied
//! over keeps the earlier `sessionId`. [`link_resumed`] turns that into the seed 003
//! chain of the conversation, with the engine's own `ChainLinked` events (no new event):
//! the chain that already holds the earlier session (the one where it is current first)
//! gets the new one as its next link; when no chain holds it, a chain `claude-<first
//! session id>` is started with the first session of the line and then each session that
//! continues it, oldest first.
//!
//! A `summary` record's `leafUuid` is not taken as a continuation: Claude Code writes
//! summaries that title other sessions into the files of new ones. Subagent transcripts
//! are never chain links (they belong to their session, see `subagent_of`).
//!
//! It is decided from the state alone, so it can run again at any time: a session already
//! in a chain is never linked twice, and a run killed between two links is completed by
//! the next. (A chain that was reset no longer holds its sessions: they are linked again
//! the next time an import brings something new.)

use std::path::Path;

use serde::Serialize;

use crate::command::Command;
use crate::engine::Engine;
use crate::error::Result;
use crate::state::{RefKind, State, Transcript};
use crate::types::{AgentId, JsonText, SessionId};

use super::events::Layout;

/// Most sessions followed back from one transcript (a longer line of resumes is linked
/// from its oldest `MAX_RESUME_DEPTH` sessions).
pub const MAX_RESUME_DEPTH: usize = 1024;

/// One chain link [`link_resumed`] made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainedLink {
    /// The chain's agent.
    pub agent: AgentId,
    /// The Claude Code session id linked.
    pub session_id: String,
    /// The session it continues (`None` for the first link of a new chain).
    pub continues: Option<String>,
    /// The engine session holding its transcript (`None` for a first session whose
    /// transcript is not imported: only the records continuing it name it).
    pub transcript: Option<SessionId>,
}

/// The Claude Code session id of a transcript: its file's name without `.jsonl` (a
/// rewritten file's later versions are the same session).
pub fn claude_id(t: &Transcript) -> Option<String> {
    let name = Path::new(&t.opened.source).file_name()?.to_str()?;
    Some(name.strip_suffix(".jsonl").unwrap_or(name).to_string())
}

/// The session's own transcript (not a subagent's, not a replaced version) whose Claude
/// Code id is `id`.
fn transcript_named<'a>(state: &'a State, id: &str) -> Option<(&'a SessionId, &'a Transcript)> {
    state
        .claude
        .iter()
        .filter(|(_, t)| t.opened.layout == Layout::Session && t.replaced_by.is_none())
        .find(|(_, t)| claude_id(t).as_deref() == Some(id))
        .map(|(s, t)| (s, &**t))
}

/// The Claude Code session the transcript continues, if its records say it continues
/// another one: the first, in file order, of a `parentUuid` or `logicalParentUuid` held
/// by another session's transcript, or a `sessionId` of another session.
pub fn continues(state: &State, t: &Transcript) -> Option<String> {
    if t.opened.layout != Layout::Session {
        return None;
    }
    let own = claude_id(t)?;
    if let Some(first) = &t.claude_session
        && *first != own
    {
        return Some(first.clone());
    }
    for (kind, target) in &t.refs {
        let other = match kind {
            RefKind::Parent | RefKind::LogicalParent => state
                .transcript_with_uuid(target)
                .and_then(|s| state.transcript(s))
                .filter(|u| u.opened.layout == Layout::Session)
                .and_then(|u| claude_id(u)),
            RefKind::SessionId => Some(target.clone()),
            RefKind::SummaryLeaf => None,
        };
        if let Some(o) = other
            && o != own
        {
            return Some(o);
        }
    }
    None
}

/// The chain holding Claude Code session `id` as a link: one where it is current first,
/// then the first by agent id.
fn chain_holding(state: &State, id: &str) -> Option<AgentId> {
    let mut any = None;
    for (agent, c) in &state.chains {
        if c.current_session_id.as_deref() == Some(id) {
            return Some(agent.clone());
        }
        if any.is_none() && c.sessions.iter().any(|l| &*l.session_id == id) {
            any = Some(agent.clone());
        }
    }
    any
}

fn metadata(transcript: Option<&SessionId>, continues: Option<&str>) -> Result<JsonText> {
    JsonText::from_value(&serde_json::json!({
        "source": "claude import",
        "transcript": transcript.map(|t| t.as_str()),
        "continues": continues,
    }))
}

/// Links every imported session that continues another into its chain (see the module
/// documentation), oldest first; returns the links made.
pub fn link_resumed(engine: &Engine) -> Result<Vec<ChainedLink>> {
    let state = engine.state();
    // The transcripts that continue another session, oldest first.
    let mut todo: Vec<(Option<crate::types::Timestamp>, String)> = state
        .claude
        .values()
        .filter(|t| t.replaced_by.is_none() && continues(&state, t).is_some())
        .filter_map(|t| Some((t.first_timestamp, claude_id(t)?)))
        .collect();
    drop(state);
    todo.sort();
    let mut made = Vec::new();
    for (_, id) in todo {
        let state = engine.state();
        if chain_holding(&state, &id).is_some() {
            continue;
        }
        // Back from `id` to a session in a chain, or to the first of the line.
        let mut line = vec![id.clone()];
        let mut agent = None;
        while line.len() < MAX_RESUME_DEPTH {
            let last = &line[line.len() - 1];
            let Some(prev) = transcript_named(&state, last).and_then(|(_, t)| continues(&state, t))
            else {
                break;
            };
            if line.contains(&prev) {
                break; // a loop of sessions naming each other
            }
            if let Some(a) = chain_holding(&state, &prev) {
                agent = Some((a, prev));
                break;
            }
            line.push(prev);
        }
        let (agent, mut before) = match agent {
            Some((a, prev)) => (a, Some(prev)),
            None => {
                let first = &line[line.len() - 1];
                match AgentId::new(&format!("claude-{first}")) {
                    Ok(a) => (a, None),
                    Err(_) => continue, // an id that makes no agent id: not chained
                }
            }
        };
        for sid in line.into_iter().rev() {
            // The first session of a line may not be imported (its file deleted): it is
            // the chain's first link all the same, named by the records continuing it.
            let transcript = transcript_named(&state, &sid).map(|(s, _)| s.clone());
            engine.execute(Command::LinkChain {
                agent: agent.clone(),
                external_id: sid.clone(),
                prompt: String::new(),
                response: String::new(),
                metadata: Some(metadata(transcript.as_ref(), before.as_deref())?),
            })?;
            made.push(ChainedLink {
                agent: agent.clone(),
                session_id: sid.clone(),
                continues: before.clone(),
                transcript,
            });
            before = Some(sid);
        }
    }
    Ok(made)
}
