//! Golden data directories: one per released format version, committed under
//! `tests/golden/`, replayed by every build.
//!
//! `tests/golden/v<N>/` holds a data directory written by format N (several segments, a
//! snapshot, every event type) and `expected_state.json`, the state it must replay to.
//! Each was produced by `golden_workload` below with the build of its day (format 2 adds
//! segment headers that chain to their predecessor and the seal a clean close writes);
//! the newest one is regenerated only when a new format version is introduced (then as
//! `v<N+1>/`, keeping the older ones), with `UPDATE_GOLDEN=1 cargo test --test golden --
//! --ignored`.
//!
//! `tests/golden/v2-schemas/` holds the payload schemas format 2 gained after its release
//! (event schemas 1 to 5, state schemas 1 to 4), written by `schemas_workload`: an event of
//! every `EventBody` variant (and every `ended_by` and agent action), one snapshot of each
//! state schema, `expected_state.json` and `expected_parts.json` (what the state's serde
//! form skips: runs, their last output times, transcripts, agents and imported chains'
//! as-read fields). It is replayed from each of its snapshots and from its log alone, and
//! this build must still write it byte for byte. The generator writes it only when it is
//! absent; a later schema gets a golden directory of its own (every event and state schema
//! up to the newest must appear in some golden directory, or a test fails).
//!
//! `tests/golden/v2-schema6/` holds event schema 6 (`RunRecovering`: runs a reopen left
//! recovering, one repeated to its end, one cancelled while it waited), written by
//! `schema6_workload` (`regenerate_golden_schema6`, only when absent), with a snapshot
//! while a run is recovering; replayed and written byte for byte as the others.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use session_engine::claude::events::ClaudeEvent;
use session_engine::codec::{NEWEST_EVENT_SCHEMA_VERSION, NEWEST_STATE_SCHEMA_VERSION};
use session_engine::event::AgentAction;
use session_engine::run::{
    EndedBy, ExitKind, Exited, Limits, RetryPolicy, RunId, RunSpec, Started, Stream, Usage,
};
use session_engine::storage::{MemStorage, Storage};
use session_engine::{
    AgentId, Command, Engine, EventBody, FileStorage, JsonText, Lsn, NewSession, SessionConfig,
    State,
};

/// Every released format's golden directory.
const VERSIONS: [&str; 2] = ["v1", "v2"];
/// The format this build writes.
const CURRENT: &str = "v2";

fn golden_dir(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(version)
}

/// The workload that wrote `tests/golden/v1/data`: every event type, deterministic ids
/// and clock, 2 KiB segments so it spans several, and a snapshot in the middle.
fn golden_workload(storage: Arc<dyn Storage>) -> State {
    let clock = clock();
    let mut o = options(storage, &clock);
    o.segment_bytes = 4096;
    let e = Engine::open("data", o).unwrap();
    let run = |c: Command| e.execute(c).unwrap();
    run(Command::CreateSession(Box::new(NewSession {
        id: Some(id("alpha")),
        name: Some("code analysis".into()),
        timeout_secs: 3600,
        agent: Some("analyzer".into()),
        working_dir: Some("/project".into()),
        config: SessionConfig {
            max_retries: 5,
            timeout: 1800.0,
            ..SessionConfig::default()
        },
        metadata: vec![(
            "user".into(),
            JsonText::string("alice@example.com").unwrap(),
        )],
    })));
    for i in 0..12 {
        clock.advance_secs(7);
        run(Command::RecordActivity {
            session: id("alpha"),
            action: "user_input".into(),
            details: Some(
                JsonText::parse(&format!(r#"{{"message":"turn {i}","n":{i}}}"#)).unwrap(),
            ),
        });
    }
    run(Command::SetMetadata {
        session: id("alpha"),
        key: "branch".into(),
        value: JsonText::string("main").unwrap(),
    });
    run(Command::SaveCheckpoint {
        session: id("alpha"),
        label: Some("before refactor".into()),
    });
    run(Command::RecordCommand {
        session: id("alpha"),
        command: "cargo test".into(),
        args: Some(JsonText::parse(r#"["--release"]"#).unwrap()),
        success: false,
        error: Some("2 tests failed".into()),
        duration_ms: 8123,
    });
    run(Command::LogDecision {
        session: id("alpha"),
        what: "roll back".into(),
        why: "tests failed".into(),
        alternatives: Some("fix forward".into()),
    });
    e.snapshot().unwrap();
    run(Command::RestoreCheckpoint {
        session: id("alpha"),
        index: None,
    });
    run(Command::RemoveMetadata {
        session: id("alpha"),
        key: "user".into(),
    });
    run(Command::CreateSession(Box::new(NewSession {
        id: Some(id("beta")),
        timeout_secs: 60,
        ..NewSession::default()
    })));
    run(Command::Pause(id("beta")));
    run(Command::Resume(id("beta")));
    clock.advance_secs(120);
    run(Command::ExpireIdle);
    run(Command::Resume(id("beta")));
    run(Command::End(id("beta")));
    run(Command::Archive(id("beta")));
    run(Command::Clone {
        source: id("alpha"),
        new_id: Some(id("alpha-copy")),
    });
    for i in 0..3 {
        run(Command::LinkChain {
            agent: AgentId::new("claude-agent").unwrap(),
            external_id: format!("ext-{i}"),
            prompt: format!("prompt {i}"),
            response: format!("response {i}"),
            metadata: Some(JsonText::parse(&format!(r#"{{"tokens":{i}}}"#)).unwrap()),
        });
    }
    run(Command::ResetChain(AgentId::new("other-agent").unwrap()));
    let mut exported = Vec::new();
    e.read_log(Lsn(1), e.last_lsn(), |_, ev| {
        if ev.body.touches(&id("alpha-copy")) {
            exported.push(ev);
        }
        Ok(true)
    })
    .unwrap();
    run(Command::Import {
        original: id("gamma"),
        events: exported
            .into_iter()
            .map(|ev| session_engine::Event {
                at: ev.at,
                body: ev.body.readdressed(&id("alpha-copy"), &id("gamma")),
            })
            .collect(),
    });
    clock.advance_secs(40 * 86_400);
    run(Command::CleanupOldSessions { max_age_days: 30 });
    // Activities' details are in the log (state schema 5): the expected state holds
    // them, read through the engine.
    let state = e.state_with_details().unwrap();
    e.close().unwrap();
    state
}

/// The golden directory of the payload schemas that format 2 gained after its release.
const SCHEMAS: &str = "v2-schemas";
/// The golden directory of event schema 6 (`RunRecovering`).
const SCHEMA6: &str = "v2-schema6";
/// The golden directory of state schema 5 (activities' details in the log).
const SCHEMA5: &str = "v2-schema5";
/// Every golden directory the replay tests open.
const DIRECTORIES: [&str; 5] = [VERSIONS[0], VERSIONS[1], SCHEMAS, SCHEMA6, SCHEMA5];
/// The event types that came after `tests/golden/v2-schemas/` (which cannot hold them),
/// each held by `tests/golden/v2-schema6/`.
const SCHEMA6_EVENT_TYPES: &[&str] = &["run_recovering"];
/// The event schemas `tests/golden/v2-schemas/` holds (it must never hold fewer).
const SCHEMAS_EVENT_SCHEMAS: u8 = 5;
/// The state schemas among its snapshots.
const SCHEMAS_STATE_SCHEMAS: u8 = 4;

/// Every `EventBody` variant (and `ClaudeEvent` variant) by the name the log gives it.
/// The match has no wildcard, so a new variant does not compile until it is listed here,
/// and [`ALL_EVENT_TYPES`] then asks for a golden that holds it.
fn event_type(b: &EventBody) -> &'static str {
    match b {
        EventBody::SessionCreated(_) => "session_created",
        EventBody::ActivityRecorded { .. } => "activity_recorded",
        EventBody::MetadataSet { .. } => "metadata_set",
        EventBody::MetadataRemoved { .. } => "metadata_removed",
        EventBody::StatusChanged { .. } => "status_changed",
        EventBody::SessionsExpired { .. } => "sessions_expired",
        EventBody::SessionsArchived { .. } => "sessions_archived",
        EventBody::CommandRecorded { .. } => "command_recorded",
        EventBody::CheckpointSaved { .. } => "checkpoint_saved",
        EventBody::CheckpointRestored { .. } => "checkpoint_restored",
        EventBody::DecisionLogged { .. } => "decision_logged",
        EventBody::ChainLinked { .. } => "chain_linked",
        EventBody::ChainReset { .. } => "chain_reset",
        EventBody::SessionImported { .. } => "session_imported",
        EventBody::SessionCloned { .. } => "session_cloned",
        EventBody::ChainsImported { .. } => "chains_imported",
        EventBody::SessionsAdopted(_) => "sessions_adopted",
        EventBody::RunRequested { .. } => "run_requested",
        EventBody::RunStarted(_) => "run_started",
        EventBody::RunOutput { .. } => "run_output",
        EventBody::RunExited(e) => match e.ended_by {
            None => "run_exited",
            Some(EndedBy::Timeout) => "run_exited/timeout",
            Some(EndedBy::Cancel) => "run_exited/cancel",
            Some(EndedBy::Cpu) => "run_exited/cpu",
            Some(EndedBy::Memory) => "run_exited/memory",
        },
        EventBody::RunSpawnFailed { .. } => "run_spawn_failed",
        EventBody::RunInterrupted { .. } => "run_interrupted",
        EventBody::RunContained { .. } => "run_contained",
        EventBody::ClaudeTranscript(e) => match **e {
            ClaudeEvent::Opened(_) => "claude_opened",
            ClaudeEvent::Piece(_) => "claude_piece",
        },
        EventBody::AgentChanged { action, .. } => match action {
            AgentAction::Activated => "agent_changed/activated",
            AgentAction::Deactivated => "agent_changed/deactivated",
            AgentAction::Restarted => "agent_changed/restarted",
        },
        EventBody::RunRecovering { .. } => "run_recovering",
    }
}

/// What [`event_type`] names up to event schema 5: `tests/golden/v2-schemas/` holds an
/// event of each (the later ones are [`SCHEMA6_EVENT_TYPES`]).
const ALL_EVENT_TYPES: &[&str] = &[
    "session_created",
    "activity_recorded",
    "metadata_set",
    "metadata_removed",
    "status_changed",
    "sessions_expired",
    "sessions_archived",
    "command_recorded",
    "checkpoint_saved",
    "checkpoint_restored",
    "decision_logged",
    "chain_linked",
    "chain_reset",
    "session_imported",
    "session_cloned",
    "chains_imported",
    "sessions_adopted",
    "run_requested",
    "run_started",
    "run_output",
    "run_exited",
    "run_exited/timeout",
    "run_exited/cancel",
    "run_exited/cpu",
    "run_exited/memory",
    "run_spawn_failed",
    "run_interrupted",
    "run_contained",
    "claude_opened",
    "claude_piece",
    "agent_changed/activated",
    "agent_changed/deactivated",
    "agent_changed/restarted",
];

/// A seed 003 tracker file with what the engine's rendering does not reproduce (unknown
/// keys, `created_at` texts in other forms): its import needs event and state schema 2.
const TRACKER_FILE: &str = r#"{
  "agent_id": "imported-agent",
  "current_session_id": "imp-2",
  "interaction_count": 2,
  "sessions": [
    {
      "session_id": "imp-1",
      "created_at": "2025-11-08T10:30:00",
      "interaction_count": 1,
      "last_prompt": "first prompt",
      "last_response": "first response",
      "metadata": {"tokens": 12},
      "model": "opus"
    },
    {
      "session_id": "imp-2",
      "created_at": "2025-11-08T12:30:00+02:00",
      "interaction_count": 2,
      "last_prompt": "second prompt",
      "last_response": "second response",
      "metadata": {}
    }
  ],
  "host": {"name": "build-1"}
}"#;

/// The start of a Claude Code transcript: a record, one that names it as its parent, a
/// line that is not JSON, JSON that is not an object, a summary that links out of the
/// file, and an incomplete last line (not imported yet). One `uuid` only: when this golden
/// was made, a transcript's hashed sets were written in the hasher's order, which is not
/// deterministic, so the snapshot holds no transcript with two (they are written sorted
/// since: `state::claude`'s `sorted_set`).
const TRANSCRIPT: &str = concat!(
    r#"{"type":"user","uuid":"u1","sessionId":"c0ffee00-0000-4000-8000-000000000001","timestamp":"2025-11-08T10:30:00.000Z","cwd":"/project","message":{"role":"user","content":"hello"}}"#,
    "\n",
    r#"{"type":"system","subtype":"note","parentUuid":"u1","sessionId":"c0ffee00-0000-4000-8000-000000000001","timestamp":"2025-11-08T10:30:05.250Z"}"#,
    "\n",
    "not json at all\n",
    "[1,2,3]\n",
    r#"{"type":"summary","summary":"greeting","leafUuid":"elsewhere"}"#,
    "\n",
    r#"{"type":"assistant","uuid":"a1""#,
);

/// What is appended to [`TRANSCRIPT`] after the last snapshot: the incomplete line's end,
/// a branch at `u1`, a record linking out of the file and one of another session.
const TRANSCRIPT_MORE: &str = concat!(
    r#","parentUuid":"u1","timestamp":"2025-11-08T10:30:07.000Z"}"#,
    "\n",
    r#"{"type":"user","uuid":"u2","parentUuid":"u1","sessionId":"c0ffee00-0000-4000-8000-000000000001","timestamp":"2025-11-08T10:31:00.000Z"}"#,
    "\n",
    r#"{"type":"user","uuid":"u3","parentUuid":"a1","logicalParentUuid":"gone","sessionId":"c0ffee00-0000-4000-8000-000000000002"}"#,
    "\n",
);

/// A subagent's transcript in the nested layout.
const SUBAGENT_TRANSCRIPT: &str = concat!(
    r#"{"type":"user","uuid":"s1","isSidechain":true,"sessionId":"c0ffee00-0000-4000-8000-000000000001","timestamp":"2025-11-08T10:30:10.000Z","cwd":"/project"}"#,
    "\n",
);

/// A run spec (the `TOKEN` variable's value is redacted in the log).
fn spec(program: &str, args: &[&str]) -> Box<RunSpec> {
    Box::new(RunSpec {
        program: program.into(),
        args: args.iter().map(|a| (*a).into()).collect(),
        cwd: Some("/project".into()),
        env: vec![
            ("LANG".into(), "C".into()),
            ("API_TOKEN".into(), "s3cret".into()),
        ],
        limits: Limits {
            timeout_ms: Some(60_000),
            max_memory_bytes: Some(64 << 20),
            max_cpu_secs: Some(10),
            max_output_bytes: Some(1 << 20),
            grace_ms: Some(500),
        },
        retry: RetryPolicy {
            max_retries: 2,
            retry_delay_ms: 100,
            safe_to_repeat: true,
        },
    })
}

fn started(run: u64, attempt: u32) -> EventBody {
    let pid = 4000 + (run as u32) * 10 + attempt;
    EventBody::RunStarted(Box::new(Started {
        run: RunId(run),
        attempt,
        pid,
        pgid: pid,
        start_time: 100_000 + run * 100 + u64::from(attempt),
        boot_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
    }))
}

fn exited(
    run: u64,
    attempt: u32,
    exit: ExitKind,
    ended_by: Option<EndedBy>,
    output: u64,
    retry: bool,
) -> EventBody {
    EventBody::RunExited(Box::new(Exited {
        run: RunId(run),
        attempt,
        exit,
        ended_by,
        duration_ms: 1_000 + run * 10,
        usage: Usage {
            user_us: 2_000 * run,
            sys_us: 500 * run,
            max_rss_kb: 1_024 + run,
        },
        output_bytes: output,
        output_dropped: 0,
        retry,
    }))
}

fn output(run: u64, attempt: u32, stream: Stream, offset: u64, bytes: &[u8]) -> EventBody {
    EventBody::RunOutput {
        run: RunId(run),
        attempt,
        stream,
        offset,
        bytes: bytes.to_vec(),
    }
}

fn contained(run: u64, attempt: u32, cgroup: bool) -> EventBody {
    EventBody::RunContained {
        run: RunId(run),
        attempt,
        cgroup: cgroup.then(|| format!("/sys/fs/cgroup/session-engine/run-{run}-{attempt}")),
        memory_max: cgroup,
        fallback: (!cgroup).then(|| "no cgroup v2 delegated to this user".into()),
    }
}

/// What `claude import` commits for each phase of files (each a list of transcript files
/// and their content, imported in order): the importer runs on an engine of its own, and
/// the golden workload executes its events one command at a time (the importer submits
/// a file's pieces together, so their batches, and the frames' batch fields, depend on
/// timing).
fn transcript_imports(phases: &[Vec<(&Path, Vec<u8>)>]) -> Vec<Vec<ClaudeEvent>> {
    use session_engine::claude::import::{Check, import_file};
    let (m, storage) = mem();
    let e = Engine::open("data", options(Arc::clone(&storage), &clock())).unwrap();
    let mut out = Vec::new();
    for files in phases {
        let from = e.last_lsn().next();
        for (path, bytes) in files {
            storage.create_dir_all(path.parent().unwrap()).unwrap();
            m.set_file_content(path, bytes.clone()).unwrap();
            import_file(&e, &*storage, path, Check::Full).unwrap();
        }
        let mut events = Vec::new();
        e.read_log(from, e.last_lsn(), |_, ev| {
            if let EventBody::ClaudeTranscript(c) = ev.body {
                events.push(*c);
            }
            Ok(true)
        })
        .unwrap();
        out.push(events);
    }
    e.close().unwrap();
    out
}

/// The workload that wrote `tests/golden/v2-schemas/data`: every event type of every
/// event schema (and every `ended_by` and agent action), with snapshots after the events
/// that need state schemas 1, 2, 3 and 4 (one of each). Deterministic: ids, clock, run
/// processes (the supervisor's steps are recorded as it would record them, with fixed
/// pids and boot id), transcript paths (files in a memory storage, see
/// [`transcript_imports`]) and one record per write batch (every command on its own).
fn schemas_workload(storage: Arc<dyn Storage>) -> State {
    let clock = clock();
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 4096;
    o.keep_snapshots = 8;
    let e = Engine::open("data", o).unwrap();
    let run = |c: Command| e.execute(c).unwrap();
    let step = |b: EventBody| {
        e.execute(Command::RecordRunStep(Box::new(b))).unwrap();
    };
    // Event schema 1, state schema 1.
    run(Command::CreateSession(Box::new(NewSession {
        id: Some(id("alpha")),
        name: Some("schemas".into()),
        timeout_secs: 0,
        agent: Some("analyzer".into()),
        working_dir: Some("/project".into()),
        config: SessionConfig {
            max_retries: 4,
            ..SessionConfig::default()
        },
        metadata: vec![("user".into(), JsonText::string("bob").unwrap())],
    })));
    clock.advance_secs(3);
    run(Command::RecordActivity {
        session: id("alpha"),
        action: "api_call".into(),
        details: Some(JsonText::parse(r#"{"endpoint":"/v1"}"#).unwrap()),
    });
    run(Command::SetMetadata {
        session: id("alpha"),
        key: "branch".into(),
        value: JsonText::string("main").unwrap(),
    });
    run(Command::SaveCheckpoint {
        session: id("alpha"),
        label: Some("start".into()),
    });
    run(Command::RecordCommand {
        session: id("alpha"),
        command: "make".into(),
        args: Some(JsonText::parse(r#"["all"]"#).unwrap()),
        success: true,
        error: None,
        duration_ms: 42,
    });
    run(Command::LogDecision {
        session: id("alpha"),
        what: "keep going".into(),
        why: "it built".into(),
        alternatives: None,
    });
    run(Command::RestoreCheckpoint {
        session: id("alpha"),
        index: Some(0),
    });
    run(Command::RemoveMetadata {
        session: id("alpha"),
        key: "user".into(),
    });
    run(Command::CreateSession(Box::new(NewSession {
        id: Some(id("beta")),
        timeout_secs: 60,
        ..NewSession::default()
    })));
    run(Command::Pause(id("beta")));
    run(Command::Resume(id("beta")));
    clock.advance_secs(120);
    run(Command::ExpireIdle);
    run(Command::Resume(id("beta")));
    run(Command::End(id("beta")));
    run(Command::Archive(id("beta")));
    run(Command::LinkChain {
        agent: AgentId::new("claude-agent").unwrap(),
        external_id: "ext-1".into(),
        prompt: "prompt".into(),
        response: "response".into(),
        metadata: None,
    });
    run(Command::ResetChain(AgentId::new("claude-agent").unwrap()));
    run(Command::Clone {
        source: id("alpha"),
        new_id: Some(id("alpha-copy")),
    });
    run(Command::CreateSession(Box::new(NewSession {
        id: Some(id("old")),
        timeout_secs: 0,
        ..NewSession::default()
    })));
    clock.advance_secs(40 * 86_400);
    run(Command::RecordActivity {
        session: id("alpha"),
        action: "user_input".into(),
        details: None,
    });
    run(Command::RecordActivity {
        session: id("alpha-copy"),
        action: "user_input".into(),
        details: None,
    });
    run(Command::CleanupOldSessions { max_age_days: 30 });
    let mut exported = Vec::new();
    e.read_log(Lsn(1), e.last_lsn(), |_, ev| {
        if ev.body.touches(&id("alpha-copy")) {
            exported.push(ev);
        }
        Ok(true)
    })
    .unwrap();
    run(Command::Import {
        original: id("gamma"),
        events: exported
            .into_iter()
            .map(|ev| session_engine::Event {
                at: ev.at,
                body: ev.body.readdressed(&id("alpha-copy"), &id("gamma")),
            })
            .collect(),
    });
    e.snapshot().unwrap();
    // Event schema 2, state schema 2: seed 003 chains with what only schema 2 stores, an
    // amplihack directory's sessions.
    let chain = session_engine::import::seed003::parse_chain_file(
        Some("imported-agent_sessions.json"),
        TRACKER_FILE.as_bytes(),
    )
    .unwrap();
    run(Command::ImportChains {
        chains: vec![chain],
    });
    let mut adoption = session_engine::import::amplihack::read_runtime_dir(
        &FileStorage::new(),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/amplihack_runtime"),
    )
    .unwrap()
    .adoption;
    adoption.source = "amplihack_runtime".into();
    run(Command::AdoptAmplihack(Box::new(adoption)));
    e.snapshot().unwrap();
    // Event schema 3, state schema 3: runs that never printed.
    let request = |program: &str, args: &[&str]| {
        clock.advance_secs(1);
        run(Command::RequestRun {
            session: id("alpha"),
            spec: spec(program, args),
        })
    };
    request("/bin/true", &[]);
    step(started(1, 1));
    step(exited(1, 1, ExitKind::Code(0), None, 0, false));
    request("sh", &["-c", "sleep 100"]);
    step(EventBody::RunSpawnFailed {
        run: RunId(2),
        attempt: 1,
        error: "fork: resource temporarily unavailable".into(),
        retry: true,
    });
    step(started(2, 2));
    step(exited(
        2,
        2,
        ExitKind::Signal(9),
        Some(EndedBy::Timeout),
        0,
        false,
    ));
    request("/bin/false", &[]);
    step(started(3, 1));
    step(exited(3, 1, ExitKind::Code(1), None, 0, true));
    step(EventBody::RunInterrupted {
        run: RunId(3),
        reason: "cancelled before attempt 2".into(),
        cancelled: true,
    });
    request("/no/such/program", &[]);
    step(EventBody::RunSpawnFailed {
        run: RunId(4),
        attempt: 1,
        error: "No such file or directory (os error 2)".into(),
        retry: false,
    });
    request("sleep", &["5"]);
    step(started(5, 1));
    step(EventBody::RunInterrupted {
        run: RunId(5),
        reason: "no supervisor finished it (the engine restarted)".into(),
        cancelled: false,
    });
    e.snapshot().unwrap();
    // Event schemas 4 and 5, state schema 4: contained runs that print, one ended by its
    // memory limit, transcripts, agents.
    request("sh", &["-c", "echo out; echo err >&2; exec big"]);
    step(contained(6, 1, true));
    step(started(6, 1));
    clock.advance_secs(1);
    step(output(6, 1, Stream::Stdout, 0, b"out\n"));
    step(output(6, 1, Stream::Stderr, 4, b"err\n"));
    step(exited(
        6,
        1,
        ExitKind::Signal(9),
        Some(EndedBy::Memory),
        8,
        false,
    ));
    request("sh", &["-c", "sleep 100"]);
    step(contained(7, 1, false));
    step(started(7, 1));
    step(exited(
        7,
        1,
        ExitKind::Signal(15),
        Some(EndedBy::Cancel),
        0,
        false,
    ));
    request("sh", &["-c", "while :; do :; done"]);
    step(started(8, 1));
    step(output(8, 1, Stream::Stdout, 0, b"spinning\n"));
    step(exited(
        8,
        1,
        ExitKind::Signal(24),
        Some(EndedBy::Cpu),
        9,
        false,
    ));
    let project = Path::new("/claude/projects/-project");
    let main = project.join("c0ffee00-0000-4000-8000-000000000001.jsonl");
    let sub = project.join("c0ffee00-0000-4000-8000-000000000001/subagents/agent-5a6b7c8d.jsonl");
    let whole = [TRANSCRIPT, TRANSCRIPT_MORE].concat().into_bytes();
    // The file rewritten: a second version that replaces the first.
    let mut rewritten = whole.clone();
    rewritten[10] = b'X';
    let imports = transcript_imports(&[
        vec![
            (&main, TRANSCRIPT.as_bytes().to_vec()),
            (&sub, SUBAGENT_TRANSCRIPT.as_bytes().to_vec()),
        ],
        vec![(&main, whole)],
        vec![(&main, rewritten)],
    ]);
    let claude = |events: &[ClaudeEvent]| {
        for c in events {
            run(Command::Claude(Box::new(c.clone())));
        }
    };
    claude(&imports[0]);
    let agent = |action: AgentAction, config: Option<&str>| {
        clock.advance_secs(2);
        run(Command::ChangeAgent {
            session: id("alpha"),
            agent_type: "orchestrator".into(),
            action,
            config: config.map(|c| JsonText::parse(c).unwrap()),
        })
    };
    agent(AgentAction::Activated, Some(r#"{"depth":2}"#));
    agent(AgentAction::Restarted, None);
    agent(AgentAction::Deactivated, None);
    agent(AgentAction::Activated, None);
    e.snapshot().unwrap();
    // After the last snapshot: more of each, replayed from the log by every open.
    agent(AgentAction::Restarted, Some(r#"{"depth":3}"#));
    run(Command::RecordActivity {
        session: id("alpha"),
        action: "after_snapshots".into(),
        details: None,
    });
    request("/bin/echo", &["done"]);
    step(contained(9, 1, true));
    step(started(9, 1));
    step(output(9, 1, Stream::Stdout, 0, b"done\n"));
    step(exited(9, 1, ExitKind::Code(0), None, 5, false));
    claude(&imports[1]);
    let replaces = imports[2]
        .iter()
        .any(|c| matches!(c, ClaudeEvent::Opened(o) if o.version == 2 && o.replaces.is_some()));
    assert!(replaces, "{:?}", imports[2]);
    claude(&imports[2]);
    // Activities' details are in the log (state schema 5): the expected state holds
    // them, read through the engine.
    let state = e.state_with_details().unwrap();
    e.close().unwrap();
    state
}

/// The workload that wrote `tests/golden/v2-schema6/data`: event schema 6. A run safe to
/// repeat, killed in its first attempt, left recovering by a reopen (`RunRecovering`),
/// a snapshot while it waits (state schema 4), then its second attempt to its end; a run
/// that never started left recovering and then cancelled while it waited; activities
/// enough for several segments. Deterministic as [`schemas_workload`].
fn schema6_workload(storage: Arc<dyn Storage>) -> State {
    let clock = clock();
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 4096;
    o.keep_snapshots = 8;
    let e = Engine::open("data", o).unwrap();
    let run = |c: Command| e.execute(c).unwrap();
    let step = |b: EventBody| {
        e.execute(Command::RecordRunStep(Box::new(b))).unwrap();
    };
    run(Command::CreateSession(Box::new(NewSession {
        id: Some(id("alpha")),
        name: Some("schema6".into()),
        ..NewSession::default()
    })));
    let activities = |n: u32| {
        for i in 0..n {
            clock.advance_secs(1);
            run(Command::RecordActivity {
                session: id("alpha"),
                action: format!("step_{i}"),
                details: Some(
                    JsonText::parse(r#"{"padding":"0123456789abcdef0123456789abcdef"}"#).unwrap(),
                ),
            });
        }
    };
    let safe = |script: &str| {
        clock.advance_secs(1);
        run(Command::RequestRun {
            session: id("alpha"),
            spec: Box::new(RunSpec {
                program: "sh".into(),
                args: vec!["-c".into(), script.into()],
                cwd: None,
                env: vec![("LANG".into(), "C".into())],
                limits: Limits::default(),
                retry: RetryPolicy {
                    max_retries: 1,
                    retry_delay_ms: 100,
                    safe_to_repeat: true,
                },
            }),
        })
    };
    activities(20);
    safe("echo again");
    step(started(1, 1));
    step(output(1, 1, Stream::Stdout, 0, b"again\n"));
    step(EventBody::RunRecovering {
        run: RunId(1),
        reason: "its supervisor stopped; process 4011 (group 4011) was still running and was \
                 killed; it is safe to repeat: attempt 2 will be started when the runs are \
                 resumed"
            .into(),
    });
    safe("sleep 1");
    step(EventBody::RunRecovering {
        run: RunId(2),
        reason: "its supervisor stopped before the next attempt started; it is safe to \
                 repeat: attempt 1 will be started when the runs are resumed"
            .into(),
    });
    e.snapshot().unwrap();
    // After the snapshot: replayed from the log by every open.
    activities(20);
    step(started(1, 2));
    step(output(1, 2, Stream::Stdout, 0, b"again\n"));
    step(exited(1, 2, ExitKind::Code(0), None, 6, false));
    step(EventBody::RunInterrupted {
        run: RunId(2),
        reason: "cancelled while it waited to be repeated after a restart".into(),
        cancelled: true,
    });
    // Activities' details are in the log (state schema 5): the expected state holds
    // them, read through the engine.
    let state = e.state_with_details().unwrap();
    e.close().unwrap();
    state
}

/// The workload that wrote `tests/golden/v2-schema5/`: activities whose details are in the
/// log (state schema 5), some without details, a checkpoint and its restore (the
/// checkpoint keeps the activities' log positions), a clone (its event carries the
/// details), activities in the clone, a snapshot, and activities after it.
fn schema5_workload(storage: Arc<dyn Storage>) -> State {
    let clock = clock();
    let mut o = options(Arc::clone(&storage), &clock);
    o.segment_bytes = 4096;
    let e = Engine::open("data", o).unwrap();
    let run = |c: Command| e.execute(c).unwrap();
    for name in ["alpha", "gamma"] {
        run(Command::CreateSession(Box::new(NewSession {
            id: Some(id(name)),
            name: Some("schema5".into()),
            ..NewSession::default()
        })));
    }
    let activities = |session: &str, from: u32, n: u32| {
        for i in from..from + n {
            clock.advance_secs(1);
            let details = (i % 4 != 3).then(|| {
                JsonText::parse(&format!(r#"{{"step":{i},"padding":"0123456789abcdef"}}"#)).unwrap()
            });
            run(Command::RecordActivity {
                session: id(session),
                action: format!("step_{i}"),
                details,
            });
        }
    };
    activities("alpha", 0, 12);
    activities("gamma", 0, 3);
    run(Command::SaveCheckpoint {
        session: id("alpha"),
        label: Some("twelve".into()),
    });
    activities("alpha", 12, 8);
    run(Command::Clone {
        source: id("alpha"),
        new_id: Some(id("beta")),
    });
    run(Command::RestoreCheckpoint {
        session: id("alpha"),
        index: Some(0),
    });
    activities("beta", 100, 6);
    activities("alpha", 200, 4);
    e.snapshot().unwrap();
    // After the snapshot: replayed from the log by every open.
    activities("alpha", 300, 5);
    activities("beta", 400, 5);
    let state = e.state_with_details().unwrap();
    e.close().unwrap();
    state
}

fn state_json(s: &State) -> serde_json::Value {
    serde_json::to_value(s).unwrap()
}

/// What the state's serde form skips and snapshots store apart: the runs (with their last
/// output times), the transcripts, the agents and imported chains' as-read fields.
fn parts_json(s: &State) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = s
        .runs
        .values()
        .map(|r| serde_json::json!({"run": &**r, "last_output_at": r.last_output_at}))
        .collect();
    let transcripts: Vec<serde_json::Value> = s
        .claude
        .iter()
        .map(|(id, t)| {
            // Sets and counts by uuid are hashed: their order is not the state's.
            let mut t = serde_json::to_value(&**t).unwrap();
            let uuids = t["uuids"].as_array_mut().unwrap();
            uuids.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            let children: std::collections::BTreeMap<String, serde_json::Value> =
                serde_json::from_value(t["children"].take()).unwrap();
            t["children"] = serde_json::to_value(children).unwrap();
            serde_json::json!([id, t])
        })
        .collect();
    let agents: Vec<serde_json::Value> = s
        .agents
        .iter()
        .map(|(id, a)| serde_json::json!([id, &**a]))
        .collect();
    let chains: Vec<serde_json::Value> = s
        .chains
        .values()
        .map(|c| {
            let links: Vec<serde_json::Value> = c
                .sessions
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.as_read.as_ref().map(|a| serde_json::json!([i, &**a])))
                .collect();
            serde_json::json!({"agent": c.agent_id, "extra": c.extra, "links": links})
        })
        .collect();
    serde_json::json!({
        "runs": runs,
        "transcripts": transcripts,
        "agents": agents,
        "chains_as_read": chains,
    })
}

/// Copies the golden data directory into a temporary directory (opening writes a lock
/// file, and a writable open may cut a tail).
fn golden_copy(version: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&golden_dir(version).join("data"), &tmp.path().join("data"));
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn expected(version: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(golden_dir(version).join("expected_state.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `expected_parts.json` (see [`parts_json`]), for a directory that has one.
fn expected_parts(version: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(golden_dir(version).join("expected_parts.json")).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

/// Asserts that `e`'s state is the golden directory `v`'s expected one.
fn assert_expected(e: &Engine, v: &str) {
    // The state with its activities' details read from the log, as the golden's
    // `expected_state.json` holds them.
    let state = e.state_with_details().unwrap();
    assert_eq!(state_json(&state), expected(v), "{v}");
    if let Some(parts) = expected_parts(v) {
        assert_eq!(
            parts_json(&state),
            parts,
            "{v}: the parts apart from the state"
        );
    }
}

/// Names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The schema byte of every record's payload in golden directory `v`'s log (read as
/// `docs/format.md` lays it out: a frame's payload starts 20 bytes after the frame).
fn event_schemas(v: &str) -> Vec<u8> {
    let wal = golden_dir(v).join("data/wal");
    let mut out = Vec::new();
    for n in names(&wal) {
        let bytes = std::fs::read(wal.join(n)).unwrap();
        for (start, end) in record_ranges(&bytes) {
            let len = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap()) as usize;
            assert_eq!(start + 20 + len, end, "{v}: a frame's length");
            out.push(bytes[start + 20]);
        }
    }
    out
}

/// The state schema (the payload's first byte, after the 64-byte header) of each of
/// golden directory `v`'s snapshots, with the LSN its name gives, in LSN order.
fn state_schemas(v: &str) -> Vec<(Lsn, u8)> {
    let dir = golden_dir(v).join("data/snapshots");
    names(&dir)
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            assert_eq!(&bytes[..8], b"SESSNAP\0", "{v}: {n}");
            let lsn = n.strip_suffix(".snap").unwrap().parse().unwrap();
            (Lsn(lsn), bytes[64])
        })
        .collect()
}

#[test]
fn every_golden_directory_replays_to_its_expected_state_from_its_snapshot_and_in_full() {
    for v in DIRECTORIES {
        let tmp = golden_copy(v);
        let dir = tmp.path().join("data");
        let storage: Arc<dyn Storage> = Arc::new(FileStorage::new());
        let clock = clock();
        let e = Engine::open_read_only(&dir, options(Arc::clone(&storage), &clock)).unwrap();
        assert!(
            e.recovery_report().snapshot_lsn.is_some(),
            "{v}: the golden snapshot was not used"
        );
        assert!(e.recovery_report().torn_tail.is_none(), "{v}");
        assert!(e.recovery_report().segments > 1, "{v}");
        assert_expected(&e, v);
        drop(e);
        std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
        let e = Engine::open(&dir, options(Arc::clone(&storage), &clock)).unwrap();
        assert_eq!(e.recovery_report().snapshot_lsn, None, "{v}");
        assert_expected(&e, v);
        // A writer goes on in the current format (a format 1 log gets a new segment: its
        // last one cannot hold a seal), and the log verifies intact.
        e.execute(Command::CreateSession(Box::new(NewSession {
            id: Some(id("after-upgrade")),
            ..NewSession::default()
        })))
        .unwrap();
        let last = e.last_lsn();
        e.close().unwrap();
        let r = session_engine::verify(&dir, &FileStorage::new(), |_| {}).unwrap();
        assert!(r.is_intact() && r.last_lsn == last, "{v}: {r:?}");
        let e = Engine::open(&dir, options(storage, &clock)).unwrap();
        assert_eq!(e.last_lsn(), last, "{v}");
    }
}

#[test]
fn every_golden_directory_verifies_intact() {
    for v in DIRECTORIES {
        let r = session_engine::verify(&golden_dir(v).join("data"), &FileStorage::new(), |_| {})
            .unwrap();
        assert!(r.is_intact(), "{v}: {r:?}");
    }
}

#[test]
fn the_schemas_golden_replays_from_each_of_its_snapshots_one_of_each_state_schema() {
    let snapshots = state_schemas(SCHEMAS);
    let schemas: Vec<u8> = snapshots.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        schemas,
        (1..=SCHEMAS_STATE_SCHEMAS).collect::<Vec<u8>>(),
        "one snapshot of each state schema, in order"
    );
    for (lsn, schema) in snapshots {
        let tmp = golden_copy(SCHEMAS);
        let dir = tmp.path().join("data");
        for n in names(&dir.join("snapshots")) {
            if n != format!("{:020}.snap", lsn.0) {
                std::fs::remove_file(dir.join("snapshots").join(n)).unwrap();
            }
        }
        let clock = clock();
        let e =
            Engine::open_read_only(&dir, options(Arc::new(FileStorage::new()), &clock)).unwrap();
        let r = e.recovery_report();
        assert_eq!(r.snapshot_lsn, Some(lsn), "state schema {schema}: {r:?}");
        assert!(
            r.skipped_snapshots.is_empty(),
            "state schema {schema}: {r:?}"
        );
        assert!(r.replayed > 0, "state schema {schema}: {r:?}");
        assert_expected(&e, SCHEMAS);
    }
}

#[test]
fn the_schemas_golden_holds_every_event_schema_and_every_event_type() {
    let schemas = event_schemas(SCHEMAS);
    for s in 1..=SCHEMAS_EVENT_SCHEMAS {
        assert!(schemas.contains(&s), "no event of schema {s}");
    }
    let tmp = golden_copy(SCHEMAS);
    let clock = clock();
    let e = Engine::open_read_only(
        tmp.path().join("data"),
        options(Arc::new(FileStorage::new()), &clock),
    )
    .unwrap();
    let mut types = std::collections::BTreeSet::new();
    let mut n = 0;
    e.read_log(Lsn(1), e.last_lsn(), |_, ev| {
        types.insert(event_type(&ev.body));
        n += 1;
        Ok(true)
    })
    .unwrap();
    assert_eq!(n, schemas.len(), "every record decodes, once");
    for t in ALL_EVENT_TYPES {
        assert!(types.contains(t), "no {t} event");
    }
    assert_eq!(types.len(), ALL_EVENT_TYPES.len(), "{types:?}");
}

#[test]
fn the_schema6_golden_holds_event_schema_6_and_its_event_types() {
    let schemas = event_schemas(SCHEMA6);
    assert!(schemas.contains(&6), "no event of schema 6: {schemas:?}");
    let tmp = golden_copy(SCHEMA6);
    let clock = clock();
    let e = Engine::open_read_only(
        tmp.path().join("data"),
        options(Arc::new(FileStorage::new()), &clock),
    )
    .unwrap();
    let mut types = std::collections::BTreeSet::new();
    e.read_log(Lsn(1), e.last_lsn(), |_, ev| {
        types.insert(event_type(&ev.body));
        Ok(true)
    })
    .unwrap();
    for t in SCHEMA6_EVENT_TYPES {
        assert!(types.contains(t), "no {t} event");
        assert!(!ALL_EVENT_TYPES.contains(t), "{t} is listed twice");
    }
    // Its snapshot holds a run recovering; replayed past it, the run is completed.
    assert_eq!(state_schemas(SCHEMA6).len(), 1);
    let runs = &expected_parts(SCHEMA6).unwrap()["runs"];
    assert_eq!(runs[0]["run"]["status"], "Completed", "{runs}");
    assert_eq!(runs[0]["run"]["attempts"], 2, "{runs}");
    assert_eq!(runs[1]["run"]["status"], "Cancelled", "{runs}");
}

/// A newer event or state schema fails here until a golden directory holds it.
#[test]
fn every_event_and_state_schema_this_build_reads_has_a_golden() {
    let events: Vec<u8> = DIRECTORIES.iter().flat_map(|v| event_schemas(v)).collect();
    let states: Vec<u8> = DIRECTORIES
        .iter()
        .flat_map(|v| state_schemas(v))
        .map(|(_, s)| s)
        .collect();
    for s in 1..=NEWEST_EVENT_SCHEMA_VERSION {
        assert!(
            events.contains(&s),
            "no golden holds an event of schema {s}"
        );
    }
    for s in 1..=NEWEST_STATE_SCHEMA_VERSION {
        assert!(
            states.contains(&s),
            "no golden holds a snapshot of state schema {s}"
        );
    }
}

/// Asserts that `m` holds, under `data/`, exactly golden directory `v`'s files, except
/// that a snapshot this build writes with state schema 5 (its activities' details in the
/// log) where the golden's holds them in an older schema is not compared byte for byte:
/// it must read back, with the log, to the golden's expected state instead (the
/// `v2-schema5` golden holds schema 5's bytes).
fn assert_golden_bytes(m: &Arc<MemStorage>, v: &str) {
    let golden = golden_dir(v).join("data");
    let mut rewritten = Vec::new();
    for sub in ["wal", "snapshots"] {
        let names = m.list_dir(&Path::new("data").join(sub)).unwrap();
        let on_disk = self::names(&golden.join(sub));
        assert_eq!(names, on_disk, "{v}: {sub}/ differs");
        for n in names {
            let ours = m
                .file_content(&Path::new("data").join(sub).join(&n))
                .unwrap();
            let theirs = std::fs::read(golden.join(sub).join(&n)).unwrap();
            if sub == "snapshots" && ours.get(64) == Some(&5) && theirs.get(64) < Some(&5) {
                rewritten.push(n);
                continue;
            }
            assert!(
                ours == theirs,
                "{sub}/{n}: this build writes different bytes than {v}"
            );
        }
    }
    for n in rewritten {
        // This build's snapshot alone, with the golden's log: the expected state.
        let copy = Arc::new(MemStorage::new());
        for sub in ["wal", "snapshots"] {
            let dir = Path::new("data").join(sub);
            copy.create_dir_all(&dir).unwrap();
            for f in m.list_dir(&dir).unwrap() {
                if sub == "snapshots" && f != n {
                    continue;
                }
                let bytes = m.file_content(&dir.join(&f)).unwrap();
                write_mem(&copy, &dir.join(&f), &bytes);
            }
        }
        let clock = clock();
        let e = Engine::open_read_only("data", options(copy, &clock)).unwrap();
        assert_eq!(
            e.recovery_report().snapshot_lsn,
            Some(Lsn(n.strip_suffix(".snap").unwrap().parse().unwrap())),
            "{v}: {n}"
        );
        assert_expected(&e, v);
    }
}

/// Writes `bytes` as the file `path` of `m`.
fn write_mem(m: &Arc<MemStorage>, path: &Path, bytes: &[u8]) {
    session_engine::storage::write_atomic(&**m, path, bytes).unwrap();
}

#[test]
fn this_build_writes_exactly_the_golden_bytes_of_the_current_format() {
    let m = Arc::new(MemStorage::new());
    let state = golden_workload(m.clone());
    assert_eq!(state_json(&state), expected(CURRENT));
    assert_golden_bytes(&m, CURRENT);
}

#[test]
fn this_build_writes_exactly_the_golden_bytes_of_every_schema() {
    let m = Arc::new(MemStorage::new());
    let state = schemas_workload(m.clone());
    assert_eq!(state_json(&state), expected(SCHEMAS));
    assert_eq!(Some(parts_json(&state)), expected_parts(SCHEMAS));
    assert_golden_bytes(&m, SCHEMAS);
}

#[test]
fn this_build_writes_exactly_the_golden_bytes_of_schema6() {
    let m = Arc::new(MemStorage::new());
    let state = schema6_workload(m.clone());
    assert_eq!(state_json(&state), expected(SCHEMA6));
    assert_eq!(Some(parts_json(&state)), expected_parts(SCHEMA6));
    assert_golden_bytes(&m, SCHEMA6);
}

#[test]
fn this_build_writes_exactly_the_golden_bytes_of_schema5() {
    let m = Arc::new(MemStorage::new());
    let state = schema5_workload(m.clone());
    assert_eq!(state_json(&state), expected(SCHEMA5));
    assert_golden_bytes(&m, SCHEMA5);
}

#[test]
fn the_schema5_golden_holds_state_schema_5_and_details_in_the_log() {
    assert_eq!(
        state_schemas(SCHEMA5)
            .iter()
            .map(|(_, s)| *s)
            .collect::<Vec<_>>(),
        [5],
        "one snapshot, of state schema 5"
    );
    // The events are as before: a clone's event carries its session's details.
    let events = event_schemas(SCHEMA5);
    assert!(events.iter().all(|&s| s == 1), "{events:?}");
    // Opened from its snapshot, the details are read from the log (the clone holds those
    // it was cloned with, and refers to the records of its own).
    let tmp = golden_copy(SCHEMA5);
    let clock = clock();
    let e = Engine::open_read_only(
        tmp.path().join("data"),
        options(Arc::new(FileStorage::new()), &clock),
    )
    .unwrap();
    assert!(e.recovery_report().snapshot_lsn.is_some());
    let beta = e.history(&id("beta")).unwrap();
    let a: Vec<_> = beta.activities().iter().map(|x| x.unwrap().value).collect();
    assert_eq!(a.len(), 20 + 6 + 5);
    assert_eq!(
        a[0].details.text().map(JsonText::as_str),
        Some(r#"{"step":0,"padding":"0123456789abcdef"}"#)
    );
    assert_eq!(&*a[20].action, "step_100");
}

/// Writes `m`'s data directory and `state` as the golden directory `root`.
fn write_golden(m: &MemStorage, state: &State, root: &Path) {
    let _ = std::fs::remove_dir_all(root);
    for sub in ["wal", "snapshots"] {
        let dir = root.join("data").join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        for n in m.list_dir(&Path::new("data").join(sub)).unwrap() {
            let bytes = m
                .file_content(&Path::new("data").join(sub).join(&n))
                .unwrap();
            std::fs::write(dir.join(n), bytes).unwrap();
        }
    }
    let text = serde_json::to_string_pretty(&state_json(state)).unwrap();
    std::fs::write(root.join("expected_state.json"), text + "\n").unwrap();
}

#[test]
#[ignore = "regenerates the current format's golden directory; run with UPDATE_GOLDEN=1 only for a new format"]
fn regenerate_golden_current() {
    if std::env::var("UPDATE_GOLDEN").as_deref() != Ok("1") {
        return;
    }
    let m = Arc::new(MemStorage::new());
    let state = golden_workload(m.clone());
    write_golden(&m, &state, &golden_dir(CURRENT));
}

/// Writes the golden directory `name` from `workload` (and its `expected_parts.json`)
/// when `UPDATE_GOLDEN=1` and the directory is absent: released goldens are never
/// rewritten, a new schema gets a directory of its own.
fn regenerate_parts_golden(name: &str, workload: fn(Arc<dyn Storage>) -> State) {
    if std::env::var("UPDATE_GOLDEN").as_deref() != Ok("1") {
        return;
    }
    let root = golden_dir(name);
    if root.exists() {
        return;
    }
    let m = Arc::new(MemStorage::new());
    let state = workload(m.clone());
    write_golden(&m, &state, &root);
    let text = serde_json::to_string_pretty(&parts_json(&state)).unwrap();
    std::fs::write(root.join("expected_parts.json"), text + "\n").unwrap();
}

#[test]
#[ignore = "writes tests/golden/v2-schemas/ when it is absent; run with UPDATE_GOLDEN=1"]
fn regenerate_golden_schemas() {
    regenerate_parts_golden(SCHEMAS, schemas_workload);
}

#[test]
#[ignore = "writes tests/golden/v2-schema6/ when it is absent; run with UPDATE_GOLDEN=1"]
fn regenerate_golden_schema6() {
    regenerate_parts_golden(SCHEMA6, schema6_workload);
}

#[test]
#[ignore = "writes tests/golden/v2-schema5/ when it is absent; run with UPDATE_GOLDEN=1"]
fn regenerate_golden_schema5() {
    regenerate_parts_golden(SCHEMA5, schema5_workload);
}
