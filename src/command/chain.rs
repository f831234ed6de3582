//! Agent chains: links, resets (decided in `decide` itself), and chains imported from
//! seed 003 tracker files.

use super::{Decision, MAX_LONG_TEXT, MAX_SHORT_TEXT, Outcome, long, non_empty_short};
use crate::error::{Error, Result};
use crate::event::{CHAIN_ENTRY_KEYS, CHAIN_FILE_KEYS, EventBody, ImportedChain};
use crate::state::{State, chain::truncate_chain_text};
use crate::types::{AgentId, JsonText};

/// A link added to an agent's chain.
pub(super) fn link(
    state: &State,
    agent: AgentId,
    external_id: String,
    prompt: String,
    response: String,
    metadata: Option<JsonText>,
) -> Decision {
    non_empty_short("external session id", &external_id)?;
    if state
        .chain(&agent)
        .is_some_and(|c| c.interaction_count == u64::MAX)
    {
        return Err(Error::invalid(
            "chain",
            format!(
                "the interaction count of chain {agent} is {}, which cannot go up",
                u64::MAX
            ),
        ));
    }
    let prompt = truncate_chain_text(&prompt);
    let response = truncate_chain_text(&response);
    long("prompt", &prompt)?;
    long("response", &response)?;
    Ok((
        Some(EventBody::ChainLinked {
            agent,
            external_id,
            prompt,
            response,
            metadata,
        }),
        Outcome::Done,
    ))
}

/// Chains imported from seed 003 tracker files (see [`check_imported_chains`]).
pub(super) fn import(state: &State, chains: Vec<ImportedChain>) -> Decision {
    check_imported_chains(state, &chains)?;
    let agents = chains.iter().map(|c| c.agent.clone()).collect();
    Ok((
        Some(EventBody::ChainsImported { chains }),
        Outcome::Chains(agents),
    ))
}

/// The rules on imported chains: agents new to the engine and given once, each chain
/// within [`check_imported_chain`]'s limits.
fn check_imported_chains(state: &State, chains: &[ImportedChain]) -> Result<()> {
    if chains.is_empty() {
        return Err(Error::invalid("chain import", "it holds no chain"));
    }
    let mut agents = std::collections::BTreeSet::new();
    for c in chains {
        if state.chain(&c.agent).is_some() {
            return Err(Error::AlreadyExists {
                kind: "chain",
                id: c.agent.to_string(),
            });
        }
        if !agents.insert(&c.agent) {
            return Err(Error::invalid(
                "chain import",
                format!("chain {} is given twice", c.agent),
            ));
        }
        check_imported_chain(c).map_err(|e| match e {
            Error::InvalidInput { field, reason } => Error::InvalidInput {
                field,
                reason: format!("chain {}: {reason}", c.agent),
            },
            other => other,
        })?;
    }
    Ok(())
}

/// The limits on one imported chain, those `chain --link` applies: ids non-empty, at most
/// [`MAX_SHORT_TEXT`] bytes and without control characters; prompts and responses at
/// most [`MAX_LONG_TEXT`] bytes, keeping any character the file held (the JSON files
/// escape them); keys beyond seed 003's unique, at most [`MAX_SHORT_TEXT`] bytes, and
/// none of its own. The error's reason names the place (`sessions[3]: ...`).
pub(crate) fn check_imported_chain(c: &ImportedChain) -> Result<()> {
    let at = |place: &str, e: Error| match e {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field,
            reason: format!("{place}: {reason}"),
        },
        other => other,
    };
    if let Some(id) = &c.current_session_id {
        non_empty_short("current_session_id", id).map_err(|e| at("current_session_id", e))?;
    }
    check_extra_keys(&c.extra, &CHAIN_FILE_KEYS).map_err(|e| at("top level", e))?;
    for (i, l) in c.links.iter().enumerate() {
        let here = |e| at(&format!("sessions[{i}]"), e);
        non_empty_short("session_id", &l.session_id).map_err(here)?;
        if let Some(t) = &l.created_at_text {
            non_empty_short("created_at", t).map_err(here)?;
        }
        for (field, text) in [
            ("last_prompt", &l.last_prompt),
            ("last_response", &l.last_response),
        ] {
            if text.len() > MAX_LONG_TEXT {
                return Err(here(Error::invalid(
                    field,
                    format!("is {} bytes long; the limit is {MAX_LONG_TEXT}", text.len()),
                )));
            }
        }
        check_extra_keys(&l.extra, &CHAIN_ENTRY_KEYS).map_err(here)?;
    }
    Ok(())
}

fn check_extra_keys(extra: &[(String, JsonText)], known: &[&str]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in extra {
        if k.len() > MAX_SHORT_TEXT {
            return Err(Error::invalid(
                "key",
                format!("is {} bytes long; the limit is {MAX_SHORT_TEXT}", k.len()),
            ));
        }
        if known.contains(&k.as_str()) {
            return Err(Error::invalid(
                "key",
                format!("{k:?} is one of seed 003's own fields, not an extra one"),
            ));
        }
        if !seen.insert(k) {
            return Err(Error::invalid("key", format!("{k:?} is given twice")));
        }
    }
    Ok(())
}
