//! Importing Claude Code transcripts: a transcript opens as a new session; each piece
//! must continue its transcript exactly where the imported bytes end.

use super::{Decision, Outcome, long};
use crate::claude::events::{ClaudeEvent, PIECE_BYTES};
use crate::error::Error;
use crate::event::EventBody;
use crate::state::State;

/// Most bytes of the text fields of a piece's record references, together.
const MAX_REFS_TEXT: usize = 64 * 1024;

pub(super) fn decide(state: &State, e: Box<ClaudeEvent>) -> Decision {
    match &*e {
        ClaudeEvent::Opened(o) => {
            if state.session(&o.session).is_some() {
                return Err(Error::AlreadyExists {
                    kind: "session",
                    id: o.session.to_string(),
                });
            }
            long("source", &o.source)?;
            for (field, v) in [
                ("cwd", &o.cwd),
                ("parent", &o.parent),
                ("reason", &o.reason),
            ] {
                if let Some(v) = v {
                    long(field, v)?;
                }
            }
            match &o.replaces {
                None if o.version != 1 => {
                    return Err(Error::invalid("version", "a first version is version 1"));
                }
                None => {}
                Some(prev) => {
                    let Some(p) = state.transcript(prev) else {
                        return Err(Error::not_found("transcript", prev));
                    };
                    if p.replaced_by.is_some() {
                        return Err(Error::InvalidState {
                            session: prev.to_string(),
                            op: "replace a transcript",
                            reason: "a newer version replaced it already".into(),
                        });
                    }
                    if o.version != p.opened.version.saturating_add(1) {
                        return Err(Error::invalid(
                            "version",
                            format!("version {} follows version {}", o.version, p.opened.version),
                        ));
                    }
                }
            }
        }
        ClaudeEvent::Piece(p) => {
            let Some(t) = state.transcript(&p.session) else {
                return Err(Error::not_found("transcript", &p.session));
            };
            if p.offset != t.offset {
                return Err(Error::InvalidState {
                    session: p.session.to_string(),
                    op: "import transcript bytes",
                    reason: format!(
                        "{} bytes are imported; a piece at offset {} does not continue them",
                        t.offset, p.offset
                    ),
                });
            }
            if p.bytes.is_empty() || p.bytes.len() > PIECE_BYTES + 1 {
                return Err(Error::invalid(
                    "piece",
                    format!("{} bytes (1 to {PIECE_BYTES} and a newline)", p.bytes.len()),
                ));
            }
            if p.refs.is_some() && p.problem.is_some() {
                return Err(Error::invalid("piece", "a record has no problem"));
            }
            if let Some(r) = &p.refs {
                let text: usize = [
                    &r.kind,
                    &r.subtype,
                    &r.uuid,
                    &r.parent_uuid,
                    &r.logical_parent_uuid,
                    &r.leaf_uuid,
                    &r.session_id,
                ]
                .iter()
                .filter_map(|v| v.as_ref().map(String::len))
                .sum();
                if text > MAX_REFS_TEXT {
                    return Err(Error::invalid("piece", "record ids longer than 64 KiB"));
                }
            }
            if let Some(problem) = &p.problem {
                long("problem", problem)?;
            }
        }
    }
    let session = e.session().clone();
    Ok((
        Some(EventBody::ClaudeTranscript(e)),
        Outcome::Session(session),
    ))
}
