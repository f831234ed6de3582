//! The commands that change a session or a chain: one function per command, each
//! committing one engine command on a freshly opened data directory (`write`) and printing
//! what the command answers.

use anyhow::Result;
use serde_json::json;

use crate::args::{ChainArgs, CommandArgs, CreateArgs};
use crate::output::Out;
use crate::{Cli, ErrorExt, loose_json, session_id, strict_json, write};
use session_engine::projection::ChainFile;
use session_engine::{AgentId, Command, Error, FileStorage, NewSession, Outcome};

/// `create`: prints the new session's id.
pub(crate) fn create(cli: &Cli, out: &mut Out, a: &CreateArgs) -> Result<u8> {
    let mut metadata = Vec::new();
    for kv in &a.meta {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::invalid_input("metadata", format!("{kv:?} is not KEY=VALUE")))?;
        metadata.push((k.to_string(), loose_json("meta", v)?));
    }
    let c = write(
        cli,
        Command::CreateSession(Box::new(NewSession {
            id: a.id.as_deref().map(session_id).transpose()?,
            name: a.name.clone(),
            timeout_secs: a.timeout,
            agent: a.agent.clone(),
            working_dir: a.working_dir.clone(),
            metadata,
            ..NewSession::default()
        })),
    )?;
    if let Outcome::Session(id) = c.outcome {
        out.line(id.as_str())?;
    }
    Ok(0)
}

/// `activity ID ACTION [DETAILS]`.
pub(crate) fn activity(cli: &Cli, id: &str, action: &str, details: Option<&str>) -> Result<u8> {
    let details = details.map(|d| strict_json("details", d)).transpose()?;
    write(
        cli,
        Command::RecordActivity {
            session: session_id(id)?,
            action: action.to_owned(),
            details,
        },
    )?;
    Ok(0)
}

/// `meta ID KEY [VALUE] [--remove]`: sets or removes a value, or prints it.
pub(crate) fn meta(
    cli: &Cli,
    out: &mut Out,
    id: &str,
    key: &str,
    value: Option<&str>,
    remove: bool,
) -> Result<u8> {
    let session = session_id(id)?;
    if remove {
        write(
            cli,
            Command::RemoveMetadata {
                session,
                key: key.to_owned(),
            },
        )?;
    } else if let Some(v) = value {
        write(
            cli,
            Command::SetMetadata {
                session,
                key: key.to_owned(),
                value: loose_json("value", v)?,
            },
        )?;
    } else {
        let manager = cli.open_read()?;
        let state = manager.state();
        let s = state
            .session(&session)
            .ok_or_else(|| Error::not_found_session(&session))?;
        let v = s.get_metadata(key).ok_or_else(|| Error::NotFound {
            kind: "metadata key",
            id: format!("{key:?} in session {session}"),
        })?;
        out.line(v.as_str())?;
    }
    Ok(0)
}

/// `checkpoint ID [--label L]`: prints the checkpoint's index.
pub(crate) fn checkpoint(cli: &Cli, out: &mut Out, id: &str, label: Option<&str>) -> Result<u8> {
    let c = write(
        cli,
        Command::SaveCheckpoint {
            session: session_id(id)?,
            label: label.map(str::to_owned),
        },
    )?;
    if let Outcome::Checkpoint(i) = c.outcome {
        out.line(&i.to_string())?;
    }
    Ok(0)
}

/// `restore ID [INDEX]`.
pub(crate) fn restore(cli: &Cli, out: &mut Out, id: &str, index: Option<u32>) -> Result<u8> {
    let c = write(
        cli,
        Command::RestoreCheckpoint {
            session: session_id(id)?,
            index,
        },
    )?;
    if cli.json
        && let Outcome::Checkpoint(i) = c.outcome
    {
        out.json(&json!({"restored": i, "lsn": c.lsn.0}))?;
    }
    Ok(0)
}

/// `decision ID WHAT WHY [--alternatives A]`.
pub(crate) fn decision(
    cli: &Cli,
    id: &str,
    what: &str,
    why: &str,
    alternatives: Option<&str>,
) -> Result<u8> {
    write(
        cli,
        Command::LogDecision {
            session: session_id(id)?,
            what: what.to_owned(),
            why: why.to_owned(),
            alternatives: alternatives.map(str::to_owned),
        },
    )?;
    Ok(0)
}

/// `command ID COMMAND ...`: records a command the session ran.
pub(crate) fn command(cli: &Cli, a: &CommandArgs) -> Result<u8> {
    let args = a
        .args
        .as_deref()
        .map(|s| strict_json("args", s))
        .transpose()?;
    write(
        cli,
        Command::RecordCommand {
            session: session_id(&a.id)?,
            command: a.command.clone(),
            args,
            success: a.error.is_none(),
            error: a.error.clone(),
            duration_ms: a.duration_ms,
        },
    )?;
    Ok(0)
}

/// `chain AGENT`: prints the chain (or its summary), or with `--link` / `--reset` changes it.
pub(crate) fn chain(cli: &Cli, out: &mut Out, a: &ChainArgs) -> Result<u8> {
    let agent = AgentId::new(&a.agent)?;
    if a.reset {
        write(cli, Command::ResetChain(agent))?;
    } else if let Some(link) = &a.link {
        if let Some(projects) = &a.projects {
            session_engine::claude::find_valid_transcript(&FileStorage::new(), projects, link)?;
        }
        write(
            cli,
            Command::LinkChain {
                agent,
                external_id: link.clone(),
                prompt: a.prompt.clone().unwrap_or_default(),
                response: a.response.clone().unwrap_or_default(),
                metadata: None,
            },
        )?;
    } else {
        let state = match cli.open_read() {
            Ok(m) => Some(m.state()),
            Err(e) if crate::missing_dir(&e) => None,
            Err(e) => return Err(e),
        };
        let chain = state
            .as_ref()
            .and_then(|s| s.chain(&agent).cloned())
            .map(|c| (*c).clone())
            .unwrap_or_else(|| session_engine::Chain::new(agent.clone()));
        if a.summary {
            out.json(&serde_json::to_value(chain.summary())?)?;
        } else {
            out.json(&serde_json::to_value(ChainFile::of(&chain))?)?;
        }
    }
    Ok(0)
}

/// `cleanup N`: archives the sessions idle for more than N days; prints how many.
pub(crate) fn cleanup(cli: &Cli, out: &mut Out, max_age_days: u32) -> Result<u8> {
    let c = write(cli, Command::CleanupOldSessions { max_age_days })?;
    let n = match &c.outcome {
        Outcome::Sessions(v) => v.len(),
        _ => 0,
    };
    out.line(&n.to_string())?;
    Ok(0)
}

/// `clone ID [NEW_ID]`: prints the copy's id.
pub(crate) fn clone(cli: &Cli, out: &mut Out, id: &str, new_id: Option<&str>) -> Result<u8> {
    let c = write(
        cli,
        Command::Clone {
            source: session_id(id)?,
            new_id: new_id.map(session_id).transpose()?,
        },
    )?;
    if let Outcome::Session(id) = c.outcome {
        out.line(id.as_str())?;
    }
    Ok(0)
}
