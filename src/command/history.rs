//! A session's history: commands run, checkpoints, decisions.

use super::{
    Decision, Outcome, long, non_empty_short, refuse, require_active, require_not_archived,
    session, short,
};
use crate::error::Error;
use crate::event::EventBody;
use crate::state::State;
use crate::types::{JsonText, SessionId, Timestamp};

/// A command run, in an active session.
// The fields of `Command::RecordCommand`, one for one.
#[allow(clippy::too_many_arguments)]
pub(super) fn record_command(
    state: &State,
    now: Timestamp,
    id: SessionId,
    command: String,
    args: Option<JsonText>,
    success: bool,
    error: Option<String>,
    duration_ms: u64,
) -> Decision {
    non_empty_short("command", &command)?;
    if let Some(e) = &error {
        long("error", e)?;
    }
    require_active(session(state, &id)?, now, "record a command in")?;
    Ok((
        Some(EventBody::CommandRecorded {
            session: id,
            command: command.into(),
            args,
            success,
            error,
            duration_ms,
        }),
        Outcome::Done,
    ))
}

/// A checkpoint of a session that is not archived; the outcome is its index.
pub(super) fn save_checkpoint(state: &State, id: SessionId, label: Option<String>) -> Decision {
    if let Some(l) = &label {
        short("label", l)?;
    }
    let s = session(state, &id)?;
    require_not_archived(s, "save a checkpoint of")?;
    let index = u32::try_from(s.checkpoints.len())
        .map_err(|_| refuse(&id, "save a checkpoint of", "too many checkpoints"))?;
    Ok((
        Some(EventBody::CheckpointSaved { session: id, label }),
        Outcome::Checkpoint(index),
    ))
}

/// Returns a session to a checkpoint (default: its last).
pub(super) fn restore_checkpoint(state: &State, id: SessionId, index: Option<u32>) -> Decision {
    let s = session(state, &id)?;
    require_not_archived(s, "restore")?;
    let count = s.checkpoints.len();
    let index = match index {
        Some(i) => i,
        None => match count.checked_sub(1) {
            Some(last) => last as u32,
            None => return Err(refuse(&id, "restore", "it has no checkpoint")),
        },
    };
    if index as usize >= count {
        return Err(Error::not_found(
            "checkpoint",
            format!("{index} in session {id} (it has {count})"),
        ));
    }
    Ok((
        Some(EventBody::CheckpointRestored { session: id, index }),
        Outcome::Checkpoint(index),
    ))
}

/// A decision, in an active session.
pub(super) fn log_decision(
    state: &State,
    now: Timestamp,
    id: SessionId,
    what: String,
    why: String,
    alternatives: Option<String>,
) -> Decision {
    if what.trim().is_empty() {
        return Err(Error::invalid("what", "must not be empty"));
    }
    long("what", &what)?;
    long("why", &why)?;
    if let Some(a) = &alternatives {
        long("alternatives", a)?;
    }
    require_active(session(state, &id)?, now, "log a decision in")?;
    Ok((
        Some(EventBody::DecisionLogged {
            session: id,
            what,
            why,
            alternatives,
        }),
        Outcome::Done,
    ))
}
