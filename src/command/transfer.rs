//! Sessions that come from elsewhere: export bundles, clones, amplihack adoption.

use super::{
    Decision, MAX_IMPORT_EVENTS, MAX_INITIAL_METADATA, MAX_TIMEOUT_SECS, Outcome, long,
    non_empty_short, session, short, validate_config,
};
use crate::error::{Error, Result};
use crate::event::{AmplihackAdoption, Event, EventBody};
use crate::state::{State, Status};
use crate::types::{Lsn, SessionId, Timestamp};

/// A bundle's session, under its own id or a fresh one if that is taken; its history must replay on its own.
pub(super) fn import_bundle(
    state: &State,
    now: Timestamp,
    original: SessionId,
    events: Vec<Event>,
) -> Decision {
    if events.len() > MAX_IMPORT_EVENTS {
        return Err(Error::invalid(
            "bundle",
            format!("more than {MAX_IMPORT_EVENTS} events"),
        ));
    }
    let id = if state.session(&original).is_some() {
        loop {
            let id = SessionId::generate();
            if state.session(&id).is_none() {
                break id;
            }
        }
    } else {
        original.clone()
    };
    let body = EventBody::SessionImported {
        session: id.clone(),
        original,
        events,
    };
    if body.import_depth() > crate::event::MAX_IMPORT_DEPTH {
        return Err(Error::invalid(
            "bundle",
            format!(
                "importing it would nest imports more than {} levels deep",
                crate::event::MAX_IMPORT_DEPTH
            ),
        ));
    }
    // The imported history must replay on its own; try it on a scratch state.
    let mut scratch = State::new();
    scratch
        .apply(
            Lsn(1),
            &Event {
                at: now,
                body: body.clone(),
            },
        )
        .map_err(|e| Error::invalid("bundle", format!("its events do not replay: {e}")))?;
    Ok((Some(body), Outcome::Session(id)))
}

/// An amplihack runtime directory's sessions, all new to the engine.
pub(super) fn adopt_amplihack(state: &State, adoption: Box<AmplihackAdoption>) -> Decision {
    if adoption.sessions.is_empty() {
        return Err(Error::invalid("adoption", "it holds no session"));
    }
    if adoption.sessions.len() > MAX_IMPORT_EVENTS {
        return Err(Error::invalid(
            "adoption",
            format!("more than {MAX_IMPORT_EVENTS} sessions"),
        ));
    }
    long("source", &adoption.source)?;
    let mut seen = std::collections::BTreeSet::new();
    for a in &adoption.sessions {
        if state.session(&a.session).is_some() {
            return Err(Error::AlreadyExists {
                kind: "session",
                id: a.session.to_string(),
            });
        }
        if !seen.insert(&a.session) {
            return Err(Error::invalid(
                "adoption",
                format!("session {} is adopted twice", a.session),
            ));
        }
        check_adopted(a)?;
    }
    let ids: Vec<SessionId> = adoption
        .sessions
        .iter()
        .map(|a| a.session.clone())
        .collect();
    Ok((
        Some(EventBody::SessionsAdopted(adoption)),
        Outcome::Sessions(ids),
    ))
}

/// A copy of a session, active, under a new id.
pub(super) fn clone_session(
    state: &State,
    source: SessionId,
    new_id: Option<SessionId>,
) -> Decision {
    let s = session(state, &source)?;
    let id = match new_id {
        Some(id) => {
            if state.session(&id).is_some() {
                return Err(Error::AlreadyExists {
                    kind: "session",
                    id: id.to_string(),
                });
            }
            id
        }
        None => loop {
            let id = SessionId::generate();
            if state.session(&id).is_none() {
                break id;
            }
        },
    };
    let mut data = (**s).clone();
    data.body.status = Status::Active;
    data.origin = None;
    Ok((
        Some(EventBody::SessionCloned {
            session: id.clone(),
            source,
            data: Box::new(data),
        }),
        Outcome::Session(id),
    ))
}

/// The limits every session's fields obey, applied to an adopted one.
pub(crate) fn check_adopted(a: &crate::event::AdoptedSession) -> Result<()> {
    short("name", &a.name)?;
    if a.timeout_secs > MAX_TIMEOUT_SECS {
        return Err(Error::invalid(
            "timeout",
            format!(
                "{} seconds is over the limit of {MAX_TIMEOUT_SECS}",
                a.timeout_secs
            ),
        ));
    }
    validate_config(&a.config)?;
    if a.metadata.len() > MAX_INITIAL_METADATA {
        return Err(Error::invalid(
            "metadata",
            format!("more than {MAX_INITIAL_METADATA} keys"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in &a.metadata {
        non_empty_short("metadata key", k)?;
        if !seen.insert(k) {
            return Err(Error::invalid("metadata key", format!("{k:?} given twice")));
        }
    }
    if a.commands.len() > MAX_IMPORT_EVENTS {
        return Err(Error::invalid(
            "command history",
            format!("more than {MAX_IMPORT_EVENTS} commands"),
        ));
    }
    for c in &a.commands {
        short("command", &c.command)?;
        if let Some(e) = &c.error {
            long("error", e)?;
        }
    }
    if let Some(log) = &a.log
        && log.len() > crate::wal::MAX_PAYLOAD_LEN
    {
        return Err(Error::invalid("log", "is larger than a log record"));
    }
    Ok(())
}
