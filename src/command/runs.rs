//! Supervised runs: requesting one, recording its later steps (see [`crate::run`]).

use super::{Decision, Outcome, refuse, session};
use crate::event::EventBody;
use crate::state::{State, Status};
use crate::types::{SessionId, Timestamp};

/// A run of a session that is not archived, its spec checked; the event holds the spec
/// with its secrets redacted.
pub(super) fn request(state: &State, id: SessionId, spec: Box<crate::run::RunSpec>) -> Decision {
    let s = session(state, &id)?;
    if s.body.status == Status::Archived {
        return Err(refuse(&id, "run a program in", "the session is archived"));
    }
    crate::run::check_spec(&spec)?;
    let run = state.next_run_id();
    Ok((
        Some(EventBody::RunRequested {
            run,
            session: id,
            spec: Box::new(spec.redacted()),
        }),
        Outcome::Run(run),
    ))
}

/// A later step of a run, refused unless it fits the run's status.
pub(super) fn record_step(state: &State, body: Box<EventBody>, now: Timestamp) -> Decision {
    crate::run::check_step(state, &body, now)?;
    Ok((Some(*body), Outcome::Done))
}
