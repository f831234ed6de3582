//! Sessions: creation, activities, metadata, status changes, archiving, expiry.

use super::{
    Decision, MAX_INITIAL_METADATA, MAX_TIMEOUT_SECS, NewSession, Outcome, long, non_empty_short,
    refuse, require_active, require_not_archived, session, short, validate_config,
};
use crate::error::Error;
use crate::event::{EventBody, SessionCreated};
use crate::state::{State, Status};
use crate::types::{JsonText, SessionId, Timestamp};

/// A new session: its id free, its fields within the limits.
pub(super) fn create(state: &State, new: NewSession) -> Decision {
    let NewSession {
        id,
        name,
        timeout_secs,
        agent,
        working_dir,
        config,
        metadata,
    } = new;
    let id = match id {
        Some(id) => id,
        None => loop {
            let id = SessionId::generate();
            if state.session(&id).is_none() {
                break id;
            }
        },
    };
    if state.session(&id).is_some() {
        return Err(Error::AlreadyExists {
            kind: "session",
            id: id.to_string(),
        });
    }
    let name = name.unwrap_or_else(|| id.to_string());
    short("name", &name)?;
    if let Some(a) = &agent {
        short("agent", a)?;
    }
    if let Some(w) = &working_dir {
        long("working directory", w)?;
    }
    if timeout_secs > MAX_TIMEOUT_SECS {
        return Err(Error::invalid(
            "timeout",
            format!("{timeout_secs} seconds is over the limit of {MAX_TIMEOUT_SECS}"),
        ));
    }
    validate_config(&config)?;
    if metadata.len() > MAX_INITIAL_METADATA {
        return Err(Error::invalid(
            "metadata",
            format!("more than {MAX_INITIAL_METADATA} keys"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in &metadata {
        non_empty_short("metadata key", k)?;
        if !seen.insert(k) {
            return Err(Error::invalid("metadata key", format!("{k:?} given twice")));
        }
    }
    let body = EventBody::SessionCreated(Box::new(SessionCreated {
        session: id.clone(),
        name,
        agent,
        working_dir,
        timeout_secs,
        config,
        metadata,
    }));
    Ok((Some(body), Outcome::Session(id)))
}

/// An activity in an active session.
pub(super) fn record_activity(
    state: &State,
    now: Timestamp,
    id: SessionId,
    action: String,
    details: Option<JsonText>,
) -> Decision {
    non_empty_short("action", &action)?;
    require_active(session(state, &id)?, now, "record activity in")?;
    Ok((
        Some(EventBody::ActivityRecorded {
            session: id,
            action: action.into(),
            details,
        }),
        Outcome::Done,
    ))
}

/// A metadata value of a session that is not archived.
pub(super) fn set_metadata(state: &State, id: SessionId, key: String, value: JsonText) -> Decision {
    non_empty_short("metadata key", &key)?;
    require_not_archived(session(state, &id)?, "set metadata of")?;
    Ok((
        Some(EventBody::MetadataSet {
            session: id,
            key,
            value,
        }),
        Outcome::Done,
    ))
}

/// Removes a metadata key the session has.
pub(super) fn remove_metadata(state: &State, id: SessionId, key: String) -> Decision {
    let s = session(state, &id)?;
    require_not_archived(s, "remove metadata of")?;
    if s.get_metadata(&key).is_none() {
        return Err(Error::not_found(
            "metadata key",
            format!("{key:?} in session {id}"),
        ));
    }
    Ok((
        Some(EventBody::MetadataRemoved { session: id, key }),
        Outcome::Done,
    ))
}

/// Archives one session.
pub(super) fn archive(state: &State, id: SessionId) -> Decision {
    require_not_archived(session(state, &id)?, "archive")?;
    Ok((
        Some(EventBody::SessionsArchived {
            sessions: vec![id.clone()],
        }),
        Outcome::Sessions(vec![id]),
    ))
}

/// Archives every session idle for more than `max_age_days` (none: nothing to append).
pub(super) fn cleanup_old_sessions(state: &State, now: Timestamp, max_age_days: u32) -> Decision {
    let cutoff = Timestamp(
        now.0
            .saturating_sub(i64::from(max_age_days).saturating_mul(86_400_000_000)),
    );
    let old: Vec<SessionId> = state
        .sessions
        .values()
        .filter(|s| s.body.status != Status::Archived && s.last_activity < cutoff)
        .map(|s| s.id.clone())
        .collect();
    if old.is_empty() {
        return Ok((None, Outcome::Sessions(old)));
    }
    Ok((
        Some(EventBody::SessionsArchived {
            sessions: old.clone(),
        }),
        Outcome::Sessions(old),
    ))
}

/// Records the sessions whose timeout has passed (the watchdog's command).
pub(super) fn expire_idle(state: &State, now: Timestamp) -> Decision {
    let expired: Vec<SessionId> = state
        .sessions
        .values()
        .filter(|s| s.is_expired(now))
        .map(|s| s.id.clone())
        .collect();
    if expired.is_empty() {
        return Ok((None, Outcome::Sessions(expired)));
    }
    Ok((
        Some(EventBody::SessionsExpired {
            sessions: expired.clone(),
        }),
        Outcome::Sessions(expired),
    ))
}

pub(super) fn status_change(
    state: &State,
    id: SessionId,
    to: Status,
    op: &'static str,
) -> Decision {
    let s = session(state, &id)?;
    s.check_transition(to).map_err(|why| refuse(&id, op, why))?;
    Ok((
        Some(EventBody::StatusChanged {
            session: id,
            status: to,
        }),
        Outcome::Done,
    ))
}
