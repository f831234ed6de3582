//! The binary encoding of events (record payloads) and of the state (snapshot payloads).
//!
//! This is the only module that names `bincode`, so the dependency can be replaced without
//! touching anything else. Every payload starts with a one-byte schema version followed by
//! the `bincode` 2 "standard" encoding (little-endian, variable-length integers) of the
//! serde data model of [`Event`] or [`State`]:
//!
//! ```text
//! event payload    = [schema: u8] ++ bincode(Event)   schema 1, or 2 for an import of
//!                                                      chains or an adoption, 3 for a run,
//!                                                      4 for a Claude Code transcript,
//!                                                      5 for a run ended by memory.max,
//!                                                      6 for a run left recovering
//! snapshot payload = [1] ++ bincode(State)
//!                  | [2] ++ bincode(State) ++ bincode(ChainsAsRead)
//!                  | [3] ++ bincode(State) ++ bincode(ChainsAsRead) ++ bincode(Vec<Run>)
//!                  | [4] ++ (schema 3's parts) ++ bincode(Vec<(RunId, Timestamp)>)
//!                        ++ bincode(Vec<(SessionId, Transcript)>)
//!                        ++ bincode(Vec<(SessionId, Vec<(String, Agent)>)>)
//! ```
//!
//! Version history (kept in step with `docs/format.md`):
//! * event schema 1, state schema 1: the first release.
//! * event schema 2: adds `EventBody::ChainsImported` (an import of seed 003 tracker
//!   files) and `EventBody::SessionsAdopted` (an adoption of an amplihack runtime
//!   directory). Both only append a variant, so the version-2 types decode version-1
//!   payloads unchanged. A payload is written with the lowest version that holds it
//!   ([`event_schema_of`]): every other event is still written as schema 1, byte for
//!   byte, so a log without imports reads in older builds, and one with them is refused
//!   there as a version they do not support rather than as damage. A schema 1 payload
//!   holding a schema 2 variant is refused.
//! * state schema 2: `[2] ++ bincode(State) ++ bincode(ChainsAsRead)`: the state may hold
//!   adopted sessions (`Origin::Adopted`), and after it come what imported chain files
//!   held that the state's serde form skips (`ChainLink::as_read`, `Chain::extra`:
//!   unknown keys, exact `created_at` texts; possibly none). Written only when a state
//!   holds either ([`state_schema_of`]); a state without them is still written as schema
//!   1, byte for byte.
//! * event schema 3: appends the run events (`RunRequested` to `RunInterrupted`, see
//!   `run`); only they are written as schema 3. State schema 3 appends the runs
//!   (`Vec<run::Run>` in id order) after schema 2's parts; written only when the state
//!   has a run.
//! * event schema 4: appends `RunContained` (how an attempt is contained: its cgroup v2,
//!   or the fallback to its process group and why) and `EventBody::ClaudeTranscript` (an
//!   imported Claude Code transcript: a file opened as a session, or its next bytes)
//!   and `EventBody::AgentChanged` (seed 002's agent of a session activated, deactivated
//!   or restarted); only they are written as schema 4.
//! * event schema 5: appends `run::EndedBy::Memory` (an attempt ended by its cgroup's
//!   `memory.max`); only a `RunExited` holding it is written as schema 5, every other
//!   event as before, byte for byte. A schema 1 to 4 payload holding it is refused.
//! * event schema 6: appends `EventBody::RunRecovering` (a run no supervisor finished,
//!   left `recovering` at a writable open because it is safe to repeat); only it is
//!   written as schema 6, every other event as before, byte for byte. A schema 1 to 5
//!   payload holding it is refused.
//! * state schema 4: appends, after schema 3's parts, the runs' last output times
//!   (`Run::last_output_at`, which the run's serde form skips: `(run, time)` of each run
//!   with one, in id order), the transcripts (`Vec<(SessionId, Transcript)>` in id
//!   order) and the sessions' agents (`Vec<(SessionId, Vec<(type, Agent)>)>`, both in
//!   order); written only when a run has a last output time or the state holds a
//!   transcript or an agent, so any other state is still schema 3 or lower, byte for
//!   byte.
//! * state schema 5: an activity's details may be `Details::InLog(lsn)` (variant 2 of
//!   the details' encoding, then the LSN of the `activity_recorded` event that holds
//!   them; variants 0 and 1 are schemas 1 to 4's `Option` tags, so `None` and `Inline`
//!   encode as before). No part is added. Written only when some session (or a
//!   checkpoint of one) has details in the log, so any other state is still schema 4 or
//!   lower, byte for byte; a schema 1 to 4 payload holding `InLog` is refused.
//!   No event carries `InLog` details: a clone's event carries its session's details
//!   (the writer reads them from the log), and encoding an event that holds `InLog` is
//!   refused ([`EncodeError::Unencodable`]), so the event schemas are unchanged.
//!
//! Decoding is strict: trailing bytes are an error, and allocations are bounded by the
//! input's length, so arbitrary bytes give a [`DecodeError`], never a panic or a huge
//! allocation (the `fuzz/` targets check this).

use std::fmt;
use std::io::Write;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};

use crate::event::{Event, EventBody};
use crate::state::{Origin, Session, State};

/// Schema version of the payload of every event but an import of chains or an adoption
/// (and so of every event a bundle, which carries one session's events, can hold).
pub const EVENT_SCHEMA_VERSION: u8 = 1;
/// The newest event schema, which this build reads; only imports and adoptions need it.
pub const NEWEST_EVENT_SCHEMA_VERSION: u8 = 6;
/// Schema version of a snapshot payload whose state holds no imported chain fields and
/// no adopted session.
pub const STATE_SCHEMA_VERSION: u8 = 1;
/// The newest state schema, which this build reads; written when a state needs it.
pub const NEWEST_STATE_SCHEMA_VERSION: u8 = 5;

fn session_needs_2(s: &Session) -> bool {
    matches!(s.origin, Some(Origin::Adopted(_)))
}

/// The lowest event schema that can express `body` (an import's events included).
pub fn event_schema_of(body: &EventBody) -> u8 {
    match body {
        EventBody::RunRecovering { .. } => 6,
        EventBody::RunExited(e) if e.ended_by == Some(crate::run::EndedBy::Memory) => 5,
        EventBody::RunContained { .. }
        | EventBody::ClaudeTranscript(_)
        | EventBody::AgentChanged { .. } => 4,
        b if b.is_run() => 3,
        EventBody::ChainsImported { .. } | EventBody::SessionsAdopted(_) => 2,
        EventBody::SessionImported { events, .. } => events
            .iter()
            .map(|e| event_schema_of(&e.body))
            .max()
            .unwrap_or(EVENT_SCHEMA_VERSION),
        EventBody::SessionCloned { data, .. } if session_needs_2(data) => 2,
        _ => EVENT_SCHEMA_VERSION,
    }
}

/// The lowest state schema that can express `state`.
pub fn state_schema_of(state: &State) -> u8 {
    if state.sessions.values().any(|s| s.has_details_in_log()) {
        5
    } else if state.runs.values().any(|r| r.last_output_at.is_some())
        || !state.claude.is_empty()
        || !state.agents.is_empty()
    {
        4
    } else if !state.runs.is_empty() {
        3
    } else if state.sessions.values().any(|s| session_needs_2(s)) || state.has_chains_as_read() {
        2
    } else {
        STATE_SCHEMA_VERSION
    }
}

/// Most bytes a decoded event may claim (bounds allocations while decoding).
const EVENT_DECODE_LIMIT: usize = 64 << 20;

type EventConfig = Configuration<LittleEndian, Varint, Limit<EVENT_DECODE_LIMIT>>;

fn event_config() -> EventConfig {
    bincode::config::standard().with_limit::<EVENT_DECODE_LIMIT>()
}

/// A payload that does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// An event or a state that could not be encoded: the writer refuses the command (nothing
/// is appended) and a snapshot is not written. Never a panic.
#[derive(Debug)]
#[non_exhaustive]
pub enum EncodeError {
    /// Writing the encoding out failed (a snapshot's file): the operating system's error.
    Io(std::io::Error),
    /// The value has no encoding (the encoder refused it).
    Unencodable(String),
}

impl EncodeError {
    fn from_bincode(what: &str, e: bincode::error::EncodeError) -> EncodeError {
        match e {
            bincode::error::EncodeError::Io { inner, .. } => EncodeError::Io(inner),
            other => EncodeError::Unencodable(format!("cannot encode {what}: {other}")),
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Io(e) => write!(f, "cannot write the encoding: {e}"),
            EncodeError::Unencodable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EncodeError::Io(e) => Some(e),
            EncodeError::Unencodable(_) => None,
        }
    }
}

/// Appends the payload encoding of `event` to `out`.
pub fn encode_event(event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if let EventBody::SessionCloned { data, .. } = &event.body
        && data.has_details_in_log()
    {
        return Err(EncodeError::Unencodable(
            "a clone's session must carry its activities' details, not their log positions".into(),
        ));
    }
    out.push(event_schema_of(&event.body));
    bincode::serde::encode_into_std_write(event, out, bincode::config::standard())
        .map(|_| ())
        .map_err(|e| EncodeError::from_bincode("event", e))
}

/// The payload encoding of `event`.
pub fn event_to_vec(event: &Event) -> Result<Vec<u8>, EncodeError> {
    let mut v = Vec::with_capacity(128);
    encode_event(event, &mut v)?;
    Ok(v)
}

/// Runs `f` with string sharing on for the events and states this thread decodes in it:
/// each distinct session id, agent id, action or command name is allocated once and
/// shared by every event (and state entry) that names it, instead of once per event.
/// Replay, verification, repair, snapshot loads and [`crate::Engine::read_log`] decode
/// this way. Calls nest; the table is dropped when the outermost returns.
pub fn sharing_strings<R>(f: impl FnOnce() -> R) -> R {
    crate::intern::scope(f)
}

/// Decodes the payload of record `lsn`, found at `offset` of the segment `path`: the one
/// decoding path of every reader of the log, so a record that does not decode is always
/// reported as corruption at its real place.
pub fn decode_record(
    path: &std::path::Path,
    offset: u64,
    lsn: crate::types::Lsn,
    payload: &[u8],
) -> crate::error::Result<Event> {
    decode_event(payload)
        .map_err(|e| crate::error::Error::corruption(path, offset, format!("record {lsn}: {e}")))
}

/// Decodes an event payload.
pub fn decode_event(payload: &[u8]) -> Result<Event, DecodeError> {
    let Some((&version, body)) = payload.split_first() else {
        return Err(DecodeError("empty event payload".into()));
    };
    match version {
        1..=NEWEST_EVENT_SCHEMA_VERSION => {
            // Schemas 2 to 6 only add variants at the end, so all decode with today's
            // types.
            let (event, used): (Event, usize) =
                bincode::serde::decode_from_slice(body, event_config())
                    .map_err(|e| DecodeError(format!("event does not decode: {e}")))?;
            if used != body.len() {
                return Err(DecodeError(format!(
                    "event payload has {} trailing bytes",
                    body.len() - used
                )));
            }
            let needs = event_schema_of(&event.body);
            if needs > version {
                return Err(DecodeError(format!(
                    "event schema {version} has no {} event (schema {needs} added it)",
                    event.body.type_name()
                )));
            }
            Ok(event)
        }
        v => Err(DecodeError(format!(
            "event schema version {v} is not supported (this build reads up to \
             {NEWEST_EVENT_SCHEMA_VERSION})"
        ))),
    }
}

/// Writes the snapshot payload encoding of `state` into `out`: state schema 1 unless it
/// holds an adopted session or a chain holds fields of an imported file, which only
/// schema 2 stores.
pub fn encode_state(state: &State, out: &mut impl Write) -> Result<(), EncodeError> {
    let version = state_schema_of(state);
    out.write_all(&[version]).map_err(EncodeError::Io)?;
    bincode::serde::encode_into_std_write(state, &mut *out, bincode::config::standard())
        .map_err(|e| EncodeError::from_bincode("state", e))?;
    if version >= 2 {
        let parts = state.chains_as_read().unwrap_or_default();
        bincode::serde::encode_into_std_write(&parts, &mut *out, bincode::config::standard())
            .map_err(|e| EncodeError::from_bincode("imported chain fields", e))?;
    }
    if version >= 3 {
        let runs: Vec<&crate::run::Run> = state.runs.values().map(|r| &**r).collect();
        bincode::serde::encode_into_std_write(&runs, &mut *out, bincode::config::standard())
            .map_err(|e| EncodeError::from_bincode("runs", e))?;
    }
    if version >= 4 {
        let times = state.runs_last_output();
        bincode::serde::encode_into_std_write(&times, &mut *out, bincode::config::standard())
            .map_err(|e| EncodeError::from_bincode("runs' last output times", e))?;
        let transcripts: Vec<(&crate::types::SessionId, &crate::state::Transcript)> =
            state.claude.iter().map(|(id, t)| (id, &**t)).collect();
        bincode::serde::encode_into_std_write(&transcripts, &mut *out, bincode::config::standard())
            .map_err(|e| EncodeError::from_bincode("transcripts", e))?;
        let agents = state.agents_part();
        bincode::serde::encode_into_std_write(&agents, out, bincode::config::standard())
            .map_err(|e| EncodeError::from_bincode("agents", e))?;
    }
    Ok(())
}

fn decode_limited<const LIMIT: usize, T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(body, bincode::config::standard().with_limit::<LIMIT>())
}

/// Decodes a `T` from the start of `body` with a decoder limit of a few times its length
/// (see [`decode_state`]), sharing repeated strings.
fn decode_bounded<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    crate::intern::scope(|| match body.len() {
        n if n <= 1 << 20 => decode_limited::<{ 1 << 22 }, T>(body),
        n if n <= 1 << 26 => decode_limited::<{ 1 << 28 }, T>(body),
        n if n <= 1 << 30 => decode_limited::<{ 1 << 32 }, T>(body),
        _ => decode_limited::<{ 1 << 40 }, T>(body),
    })
}

/// Decodes a snapshot payload.
pub fn decode_state(payload: &[u8]) -> Result<State, DecodeError> {
    let Some((&version, body)) = payload.split_first() else {
        return Err(DecodeError("empty snapshot payload".into()));
    };
    match version {
        1..=NEWEST_STATE_SCHEMA_VERSION => {
            // Schema 5 only adds a value (`Details::InLog`), no part: it decodes as 4 does.
            // Every sequence and map visitor caps its preallocation (serde's own, and the
            // state's in `state::bounded`). Strings are allocated at their claimed length
            // before they are read, so the decoder's limit, which counts the bytes of
            // every string, must bound them: the text of a real state is at most its
            // payload, so a limit of a few times the payload's size never refuses one.
            // A state repeats its action names in every activity: decoding shares them.
            let (mut state, mut used): (State, usize) =
                crate::state::decoding_state(|| decode_bounded(body))
                    .map_err(|e| DecodeError(format!("state does not decode: {e}")))?;
            if version >= 2 {
                let rest = body.get(used..).unwrap_or_default();
                let (parts, n): (crate::state::chain::ChainsAsRead, usize) = decode_bounded(rest)
                    .map_err(|e| {
                    DecodeError(format!("imported chain fields do not decode: {e}"))
                })?;
                state
                    .attach_chains_as_read(parts)
                    .map_err(|e| DecodeError(format!("imported chain fields: {e}")))?;
                used += n;
            }
            if version >= 3 {
                let rest = body.get(used..).unwrap_or_default();
                let (runs, n): (Vec<crate::run::Run>, usize) = decode_bounded(rest)
                    .map_err(|e| DecodeError(format!("runs do not decode: {e}")))?;
                state
                    .attach_runs(runs)
                    .map_err(|e| DecodeError(format!("runs: {e}")))?;
                used += n;
            }
            if version >= 4 {
                let rest = body.get(used..).unwrap_or_default();
                let (times, n): (Vec<(crate::run::RunId, crate::types::Timestamp)>, usize) =
                    decode_bounded(rest).map_err(|e| {
                        DecodeError(format!("runs' last output times do not decode: {e}"))
                    })?;
                state
                    .attach_runs_last_output(times)
                    .map_err(|e| DecodeError(format!("runs' last output times: {e}")))?;
                used += n;
                let rest = body.get(used..).unwrap_or_default();
                let (transcripts, n): (
                    Vec<(crate::types::SessionId, crate::state::Transcript)>,
                    usize,
                ) = decode_bounded(rest)
                    .map_err(|e| DecodeError(format!("transcripts do not decode: {e}")))?;
                state
                    .attach_transcripts(transcripts)
                    .map_err(|e| DecodeError(format!("transcripts: {e}")))?;
                used += n;
                let rest = body.get(used..).unwrap_or_default();
                let (agents, n): (crate::state::AgentsPart, usize) = decode_bounded(rest)
                    .map_err(|e| DecodeError(format!("agents do not decode: {e}")))?;
                state
                    .attach_agents(agents)
                    .map_err(|e| DecodeError(format!("agents: {e}")))?;
                used += n;
            }
            if used != body.len() {
                return Err(DecodeError(format!(
                    "snapshot payload has {} trailing bytes",
                    body.len() - used
                )));
            }
            if state_schema_of(&state) > version {
                return Err(DecodeError(format!(
                    "an adopted session, a run, a run's last output time, a transcript or \
                     details in the log is not part of state schema {version}"
                )));
            }
            Ok(state)
        }
        v => Err(DecodeError(format!(
            "state schema version {v} is not supported (this build reads up to \
             {NEWEST_STATE_SCHEMA_VERSION})"
        ))),
    }
}

#[cfg(test)]
mod tests;
