//! Adoption of seed 003 tracker files (`<agent>_sessions.json`): `import` keeps every
//! field, so the chain file the engine writes back is equal, as a JSON value, to the file
//! read; `chain --link` then goes on as seed 003's tracker would; bad input is refused
//! with a typed error and changes nothing.
//!
//! Files "as the tracker writes them" come from `tests/fixtures/seed003_tracker.py`, the
//! seed's own `SessionTracker` code run by `python3` (those tests say so and pass without
//! checking anything when `python3` is missing), and from hand-written fixtures in
//! exactly the tracker's format, which always run.
#![allow(clippy::unwrap_used)]

use session_engine_testkit as common;

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use session_engine::event::{ImportedChain, ImportedLink};
use session_engine::import::seed003::{ChainFileError, MAX_CHAIN_FILE_BYTES};
use session_engine::storage::Storage;
use session_engine::{
    AgentId, Command, Error, FileStorage, JsonText, Lsn, ManualClock, SessionManager, Timestamp,
    codec,
};

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

/// A temporary place: `data/` (the engine's), `src/` (where the other tool wrote).
struct Place {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    src: PathBuf,
    storage: Arc<dyn Storage>,
    clock: ManualClock,
}

fn place() -> Place {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    Place {
        data,
        src,
        _tmp: tmp,
        storage: Arc::new(FileStorage::new()),
        clock: clock(),
    }
}

impl Place {
    fn open(&self) -> SessionManager {
        SessionManager::open(&self.data, manager_options(&self.storage, &self.clock)).unwrap()
    }

    fn chain_file(&self, agent: &str) -> PathBuf {
        self.data
            .join("chains")
            .join(format!("{agent}_sessions.json"))
    }

    fn write_src(&self, name: &str, text: &str) -> PathBuf {
        let p = self.src.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn json_of(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e})", path.display()))
}

/// `python3`, if this machine has it.
fn python() -> Option<&'static str> {
    let ok = Process::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("python3 is not available: skipping the check against seed 003's own code");
    }
    ok.then_some("python3")
}

fn tracker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/seed003_tracker.py")
}

/// Runs seed 003's tracker (`tests/fixtures/seed003_tracker.py`); returns its stdout.
fn tracker(py: &str, args: &[&str]) -> String {
    let o = Process::new(py)
        .arg(tracker_script())
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "seed 003's tracker {args:?} failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A prompt with what a real one may hold: quotes, backslashes, newlines, tabs, a
/// carriage return, an escape sequence, accents, a symbol and an emoji (which Python's
/// `json.dump` writes as `\u` escapes, the emoji as a surrogate pair).
fn rich_text(n: usize) -> String {
    let unit = "Héllo \"Claude\" \\ ✓ 😀\n\tline\r\u{1b}[0m ";
    unit.chars().cycle().take(n).collect()
}

/// [`rich_text`] without the carriage return and the escape: the engine's `chain --link`
/// refuses control characters other than newline and tab (seed 003 takes any), so the
/// turns both sides make after an import use this.
fn plain_rich_text(n: usize) -> String {
    rich_text(n * 2)
        .chars()
        .filter(|c| !matches!(c, '\r' | '\u{1b}'))
        .take(n)
        .collect()
}

/// The updates the tracker makes: three turns, the second at a time with zero
/// microseconds (`isoformat()` then writes no fraction), long and rich texts, metadata of
/// every JSON kind including a float that needs 17 digits (which serde_json reads wrong
/// without its `float_roundtrip` feature) and the largest u64, and none.
fn spec(agent: &str) -> Value {
    json!({
        "agent": agent,
        "nows": ["2025-11-08T10:30:00.123456", "2025-11-08T10:31:00", "2025-11-08T10:32:00.000001"],
        "updates": [
            ["0190a4b6-7c3d-7e00-8000-000000000001", rich_text(300), rich_text(250),
             {"tokens": 10, "cost": 0.10200000000000001, "ratio": 1e-7, "big": 18446744073709551615u64,
              "neg": -5, "nested": {"a": [1, 2.5, null, true, "x"]}, "empty": {}}],
            ["0190a4b6-7c3d-7e00-8000-000000000002", "Prompt 2", "Response 2", null],
            ["0190a4b6-7c3d-7e00-8000-000000000003", "", "", ["a", 1]],
        ]
    })
}

/// A file exactly as seed 003's tracker writes one (`json.dump(data, f, indent=2)`),
/// written by hand: a `created_at` without microseconds, non-ASCII as `\u` escapes, a
/// float, `metadata` null.
const HAND_WRITTEN: &str = r#"{
  "agent_id": "hand-agent",
  "current_session_id": "s-2",
  "interaction_count": 2,
  "sessions": [
    {
      "session_id": "s-1",
      "created_at": "2025-11-08T10:30:00",
      "interaction_count": 1,
      "last_prompt": "Caf\u00e9 \ud83d\ude00 \"quoted\"\nnext",
      "last_response": "Hello! How can I help?",
      "metadata": {
        "tokens": 10,
        "cost": 0.10200000000000001,
        "tags": [
          "a",
          "b"
        ]
      }
    },
    {
      "session_id": "s-2",
      "created_at": "2025-11-08T10:31:05.000123",
      "interaction_count": 2,
      "last_prompt": "P2",
      "last_response": "R2",
      "metadata": null
    }
  ]
}"#;

/// A tracker file another version of the tool (or a person) changed: unknown keys at the
/// top and in entries, a `current_session_id` that is not the newest link, counts that
/// do not match the entries, a prompt past 200 characters, times with an offset and with
/// nanoseconds.
const EDITED: &str = r#"{
  "agent_id": "edited-agent",
  "schema": 2,
  "current_session_id": "e-1",
  "interaction_count": 41,
  "sessions": [
    {
      "session_id": "e-1",
      "created_at": "2025-11-08T12:30:00+02:00",
      "interaction_count": 40,
      "last_prompt": "PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPP",
      "last_response": "R",
      "metadata": {"z": 1, "a": 2},
      "model": "opus",
      "usage": {"input": 1200, "output": 80}
    },
    {
      "session_id": "e-2",
      "created_at": "2025-11-08 10:31:00.123456789",
      "interaction_count": 7,
      "last_prompt": "P",
      "last_response": "R",
      "metadata": null,
      "note": null
    }
  ],
  "host": {"name": "box", "pid": 4242}
}"#;

/// Imports `path`, then checks that the chain file the engine wrote for `agent` is equal
/// to the file at `original` as a JSON value, after the import, after a reopen (replay),
/// after a snapshot and a reopen from it, and after a full rebuild of the projections.
fn assert_round_trips(p: &Place, path: &Path, originals: &[(&str, PathBuf)]) {
    let expected: Vec<(String, Value)> = originals
        .iter()
        .map(|(a, f)| (a.to_string(), json_of(f)))
        .collect();
    let py = python();
    let check = |when: &str| {
        for ((agent, want), (_, original)) in expected.iter().zip(originals) {
            let written = p.chain_file(agent);
            assert_eq!(&json_of(&written), want, "{agent}, {when}");
            // serde_json reads both files; Python, the tracker's reader, must agree too
            // (a float one bit off would look equal to serde_json if it read both wrong).
            if let Some(py) = py {
                tracker(
                    py,
                    &[
                        "same",
                        original.to_str().unwrap(),
                        written.to_str().unwrap(),
                    ],
                );
            }
        }
    };
    let m = p.open();
    let report = m.import_chains(path).unwrap();
    let mut agents: Vec<&str> = report.imported.iter().map(|a| a.as_str()).collect();
    agents.sort();
    let mut want: Vec<&str> = originals.iter().map(|(a, _)| *a).collect();
    want.sort();
    assert_eq!(agents, want);
    check("just imported");
    m.close().unwrap();
    for (agent, _) in &expected {
        std::fs::remove_file(p.chain_file(agent)).unwrap();
    }
    let m = p.open();
    m.flush_projections().unwrap();
    check("rewritten after a reopen that replayed the log");
    m.engine().snapshot().unwrap();
    m.close().unwrap();
    std::fs::remove_dir_all(p.data.join("chains")).unwrap();
    let m = p.open();
    assert!(m.engine().recovery_report().snapshot_lsn.is_some());
    m.flush_projections().unwrap();
    check("rewritten after a reopen from a snapshot");
    m.rebuild_projections().unwrap();
    check("after rebuild-projections");
    m.close().unwrap();
}

#[test]
fn files_written_by_seed_003s_tracker_are_written_back_equal() {
    let Some(py) = python() else { return };
    let p = place();
    let src = p.src.to_str().unwrap();
    tracker(py, &["write", src, &spec("py-agent").to_string()]);
    tracker(py, &["write", src, &spec("other.agent_2").to_string()]);
    let file = p.src.join("py-agent_sessions.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("\"created_at\": \"2025-11-08T10:31:00\","),
        "the tracker wrote a time without microseconds: {text}"
    );
    assert!(
        text.contains("\\ud83d\\ude00"),
        "the tracker escaped the emoji"
    );
    // Another version of the tool added keys; the tracker still wrote the file.
    tracker(
        py,
        &[
            "edit",
            p.src.join("other.agent_2_sessions.json").to_str().unwrap(),
            r#"{"top": {"version": "2.1", "interaction_count": 99},
                "entries": {"1": {"tool": {"name": "claude", "args": ["-p"]}}}}"#,
        ],
    );
    assert_round_trips(
        &p,
        &p.src,
        &[
            ("py-agent", file),
            ("other.agent_2", p.src.join("other.agent_2_sessions.json")),
        ],
    );
}

#[test]
fn hand_written_and_edited_tracker_files_are_written_back_equal() {
    let p = place();
    let hand = p.write_src("hand-agent_sessions.json", HAND_WRITTEN);
    let edited = p.write_src("edited-agent_sessions.json", EDITED);
    assert_round_trips(
        &p,
        &p.src,
        &[
            ("hand-agent", hand.clone()),
            ("edited-agent", edited.clone()),
        ],
    );
    // The key order of the file is kept, unknown keys after seed 003's own.
    let text = std::fs::read_to_string(p.chain_file("edited-agent")).unwrap();
    let at = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
    assert!(at("agent_id") < at("current_session_id"));
    assert!(at("sessions") < at("schema") && at("schema") < at("host"));
    assert!(at("metadata") < at("model") && at("model") < at("usage"));
    // What the tracker API shows is what the file said, not what the links imply.
    let m = p.open();
    let t = m.chain("edited-agent").unwrap();
    assert_eq!(t.get_current_session().as_deref(), Some("e-1"));
    assert_eq!(t.interaction_count(), 41);
    let links = t.get_session_chain();
    let read: Value = serde_json::from_str(EDITED).unwrap();
    let long = read["sessions"][0]["last_prompt"].as_str().unwrap();
    assert!(long.len() > 200);
    assert_eq!(&*links[0].last_prompt, long, "not truncated again");
    assert_eq!(links[1].interaction_count, 7);
    assert_eq!(
        links[0].created_at,
        Timestamp::from_secs(1_762_597_800),
        "+02:00 is taken into account"
    );
    let h = m.chain("hand-agent").unwrap();
    assert_eq!(h.get_current_session().as_deref(), Some("s-2"));
    assert!(h.validate_session("s-1"));
    assert_eq!(
        h.get_session_chain()[0]
            .metadata
            .as_ref()
            .unwrap()
            .to_value(),
        json!({"tokens": 10, "cost": 0.10200000000000001, "tags": ["a", "b"]})
    );
    m.close().unwrap();
}

#[test]
fn links_after_an_import_go_on_as_seed_003s_tracker_does() {
    let p = place();
    p.write_src("hand-agent_sessions.json", HAND_WRITTEN);
    p.write_src("edited-agent_sessions.json", EDITED);
    let m = p.open();
    m.import_chains(&p.src).unwrap();
    let long = "x".repeat(300);
    for agent in ["hand-agent", "edited-agent"] {
        m.chain(agent)
            .unwrap()
            .update_session("next", &long, &long, Some(json!({"k": 1})))
            .unwrap();
    }
    m.flush_projections().unwrap();
    let hand = json_of(&p.chain_file("hand-agent"));
    assert_eq!(hand["interaction_count"], 3, "the file's count plus one");
    assert_eq!(hand["current_session_id"], "next");
    let new = &hand["sessions"][2];
    assert_eq!(new["interaction_count"], 3);
    assert_eq!(new["last_prompt"].as_str().unwrap().len(), 200);
    assert_eq!(new["last_response"].as_str().unwrap().len(), 200);
    assert_eq!(new["created_at"], "2025-11-08T10:30:00.000000");
    // The imported links stay as they were read.
    let read: Value = serde_json::from_str(HAND_WRITTEN).unwrap();
    assert_eq!(hand["sessions"][0], read["sessions"][0]);
    assert_eq!(hand["sessions"][1], read["sessions"][1]);
    let edited = json_of(&p.chain_file("edited-agent"));
    assert_eq!(edited["interaction_count"], 42, "41 in the file, plus one");
    assert_eq!(edited["sessions"][2]["interaction_count"], 42);
    assert_eq!(edited["current_session_id"], "next");
    assert_eq!(edited["schema"], 2, "unknown keys stay after a link");
    // A reset empties the chain as seed 003's reset does: its four keys, nothing else.
    m.chain("edited-agent").unwrap().reset().unwrap();
    m.flush_projections().unwrap();
    assert_eq!(
        json_of(&p.chain_file("edited-agent")),
        json!({"agent_id": "edited-agent", "current_session_id": null,
               "interaction_count": 0, "sessions": []})
    );
    m.close().unwrap();
}

#[test]
fn the_engine_and_seed_003s_tracker_agree_after_more_turns() {
    let Some(py) = python() else { return };
    let p = place();
    let src = p.src.to_str().unwrap();
    tracker(py, &["write", src, &spec("py-agent").to_string()]);
    let m = p.open();
    m.import_chains(p.src.join("py-agent_sessions.json"))
        .unwrap();
    // The same two turns, in the tracker and in the engine.
    let turns = json!([
        ["ext-4", plain_rich_text(201), "short", {"turn": 4}],
        ["ext-5", "p5", plain_rich_text(199), null],
    ]);
    let more = json!({"agent": "py-agent",
                      "nows": ["2025-11-09T08:00:00.5", "2025-11-09T08:00:01"],
                      "updates": turns});
    tracker(py, &["continue", src, &more.to_string()]);
    let t = m.chain("py-agent").unwrap();
    for turn in turns.as_array().unwrap() {
        t.update_session(
            turn[0].as_str().unwrap(),
            turn[1].as_str().unwrap(),
            turn[2].as_str().unwrap(),
            (!turn[3].is_null()).then(|| turn[3].clone()),
        )
        .unwrap();
    }
    m.flush_projections().unwrap();
    let mut ours = json_of(&p.chain_file("py-agent"));
    let mut theirs = json_of(&p.src.join("py-agent_sessions.json"));
    // Only the times of the new turns differ (each side's own clock).
    for v in [&mut ours, &mut theirs] {
        for i in [3, 4] {
            v["sessions"][i]["created_at"] = Value::Null;
        }
    }
    assert_eq!(ours, theirs);
    // And the tracker loads the engine's file as its own.
    let summary: Value = serde_json::from_str(&tracker(
        py,
        &[
            "summary",
            p.data.join("chains").to_str().unwrap(),
            "py-agent",
        ],
    ))
    .unwrap();
    assert_eq!(
        summary,
        serde_json::to_value(t.get_chain_summary()).unwrap()
    );
    assert_eq!(summary["total_interactions"], 5);
    m.close().unwrap();
}

/// What a refused import must leave as it was.
#[derive(Debug, PartialEq)]
struct Everything {
    lsn: Lsn,
    agents: Vec<AgentId>,
    /// Every file under `data/chains/`, with its bytes.
    files: Vec<(String, Vec<u8>)>,
}

fn everything(p: &Place, m: &SessionManager) -> Everything {
    m.flush_projections().unwrap();
    let dir = p.data.join("chains");
    let mut files = Vec::new();
    if dir.exists() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            files.push((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            ));
        }
    }
    files.sort();
    Everything {
        lsn: m.last_lsn(),
        agents: m.agents(),
        files,
    }
}

fn nested(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

/// `HAND_WRITTEN` with one change.
fn hand_with(from: &str, to: &str) -> String {
    assert!(HAND_WRITTEN.contains(from), "{from}");
    HAND_WRITTEN.replacen(from, to, 1)
}

#[test]
fn bad_tracker_files_are_refused_with_a_typed_error_and_change_nothing() {
    let p = place();
    let m = p.open();
    // Something to compare with: an engine chain and its file.
    m.chain("engine-agent")
        .unwrap()
        .update_session("x", "p", "r", None)
        .unwrap();
    let before = everything(&p, &m);
    let field = |f: &str| {
        let f = f.to_string();
        move |r: &ChainFileError| matches!(r, ChainFileError::Field { field, .. } if *field == f)
    };
    type Check = Box<dyn Fn(&ChainFileError) -> bool>;
    let cases: Vec<(&str, String, Check)> = vec![
        (
            "truncated",
            HAND_WRITTEN[..200].to_string(),
            Box::new(|r| matches!(r, ChainFileError::NotJson { .. })),
        ),
        (
            "not json",
            "agent_id: x".into(),
            Box::new(|r| matches!(r, ChainFileError::NotJson { .. })),
        ),
        (
            "a repeated key",
            hand_with(
                "\"interaction_count\": 2,",
                "\"interaction_count\": 2, \"interaction_count\": 3,",
            ),
            Box::new(
                |r| matches!(r, ChainFileError::NotJson { reason } if reason.contains("duplicate key")),
            ),
        ),
        ("not an object", "[]".into(), Box::new(field("the file"))),
        (
            "no agent_id",
            hand_with("\"agent_id\": \"hand-agent\",", ""),
            Box::new(field("agent_id")),
        ),
        (
            "no interaction_count",
            hand_with("\"interaction_count\": 2,", ""),
            Box::new(field("interaction_count")),
        ),
        (
            "no sessions",
            HAND_WRITTEN
                .split("\"sessions\"")
                .next()
                .unwrap()
                .trim_end()
                .trim_end_matches(',')
                .to_string()
                + "}",
            Box::new(field("sessions")),
        ),
        (
            "an entry without last_response",
            hand_with("\"last_response\": \"R2\",", ""),
            Box::new(field("sessions[1].last_response")),
        ),
        (
            "an entry without metadata",
            hand_with(",\n      \"metadata\": null", ""),
            Box::new(field("sessions[1].metadata")),
        ),
        (
            "a count that is a string",
            hand_with("\"interaction_count\": 2,", "\"interaction_count\": \"2\","),
            Box::new(field("interaction_count")),
        ),
        (
            "a negative count",
            hand_with("\"interaction_count\": 2,", "\"interaction_count\": -2,"),
            Box::new(field("interaction_count")),
        ),
        (
            "a float count",
            hand_with("\"interaction_count\": 1,", "\"interaction_count\": 1.0,"),
            Box::new(field("sessions[0].interaction_count")),
        ),
        (
            "a boolean current id",
            hand_with(
                "\"current_session_id\": \"s-2\"",
                "\"current_session_id\": true",
            ),
            Box::new(field("current_session_id")),
        ),
        (
            "a number session id",
            hand_with("\"session_id\": \"s-1\"", "\"session_id\": 1"),
            Box::new(field("sessions[0].session_id")),
        ),
        (
            "an empty session id",
            hand_with("\"session_id\": \"s-1\"", "\"session_id\": \"\""),
            Box::new(field("sessions[0].session_id")),
        ),
        (
            "sessions an object",
            hand_with("\"sessions\": [", "\"sessions\": {\"a\": [")
                .replacen("  ]\n}", "  ]}\n}", 1),
            Box::new(field("sessions")),
        ),
        (
            "an entry a string",
            hand_with("\"sessions\": [", "\"sessions\": [\"s-0\","),
            Box::new(field("sessions[0]")),
        ),
        (
            "a created_at that is not a time",
            hand_with("\"2025-11-08T10:30:00\"", "\"yesterday\""),
            Box::new(field("sessions[0].created_at")),
        ),
        (
            "a created_at that is a number",
            hand_with("\"2025-11-08T10:30:00\"", "1762597800"),
            Box::new(field("sessions[0].created_at")),
        ),
        (
            "metadata nested past the limit",
            hand_with(
                "\"metadata\": null",
                &format!("\"metadata\": {}", nested(65)),
            ),
            Box::new(
                |r| matches!(r, ChainFileError::NotJson { reason } if reason.contains("nested more than 64")),
            ),
        ),
        (
            "an unknown key nested past the limit",
            hand_with(
                "\"interaction_count\": 2,",
                &format!("\"interaction_count\": 2, \"x\": {},", nested(65)),
            ),
            Box::new(field("x")),
        ),
        (
            "an unknown key in an entry over 1 MiB",
            hand_with(
                "\"metadata\": null",
                &format!("\"metadata\": null, \"blob\": \"{}\"", "b".repeat(1 << 20)),
            ),
            Box::new(field("sessions[1].blob")),
        ),
        (
            "a prompt over 64 KiB",
            hand_with("\"P2\"", &format!("\"{}\"", "p".repeat(65 * 1024))),
            Box::new(field("sessions[1].last_prompt")),
        ),
        (
            "an integer wider than 64 bits",
            hand_with("\"metadata\": null", "\"metadata\": 18446744073709551616"),
            Box::new(
                |r| matches!(r, ChainFileError::Unrepresentable { reason } if reason.contains("18446744073709551616")),
            ),
        ),
        (
            "a NaN (Python writes them)",
            hand_with("\"metadata\": null", "\"metadata\": NaN"),
            Box::new(|r| matches!(r, ChainFileError::NotJson { .. })),
        ),
        (
            "an unsafe agent id",
            hand_with(
                "\"agent_id\": \"hand-agent\"",
                "\"agent_id\": \"../hand-agent\"",
            ),
            Box::new(
                |r| matches!(r, ChainFileError::UnsafeAgentId { agent_id, .. } if agent_id == "../hand-agent"),
            ),
        ),
        (
            "an agent id the name does not say",
            hand_with("\"agent_id\": \"hand-agent\"", "\"agent_id\": \"other\""),
            Box::new(
                |r| matches!(r, ChainFileError::AgentMismatch { file_agent, agent_id } if file_agent == "hand-agent" && agent_id == "other"),
            ),
        ),
    ];
    for (what, text, check) in &cases {
        let file = p.write_src("hand-agent_sessions.json", text);
        let err = m.import_chains(&file).unwrap_err();
        match &err {
            Error::InvalidChainFile { path, reason } => {
                assert_eq!(path, &file, "{what}");
                assert!(check(reason), "{what}: {reason:?}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(err.is_refusal(), "{what}");
        assert!(
            err.to_string().contains("hand-agent_sessions.json"),
            "{what}: {err}"
        );
        assert_eq!(everything(&p, &m), before, "{what} changed something");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            *text,
            "{what}: the file"
        );
        std::fs::remove_file(&file).unwrap();
    }
    // Too large.
    let big = p.src.join("hand-agent_sessions.json");
    std::fs::write(&big, vec![b' '; MAX_CHAIN_FILE_BYTES as usize + 1]).unwrap();
    let err = m.import_chains(&big).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidChainFile { reason: ChainFileError::TooLarge { bytes }, .. } if *bytes == MAX_CHAIN_FILE_BYTES + 1),
        "{err:?}"
    );
    std::fs::remove_file(&big).unwrap();
    // A symbolic link, to a good file: refused, not followed.
    let good = p.write_src("good.json", HAND_WRITTEN);
    let link = p.src.join("hand-agent_sessions.json");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let err = m.import_chains(&link).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidChainFile { reason: ChainFileError::NotARegularFile { .. }, path } if *path == link),
        "{err:?}"
    );
    assert!(err.to_string().contains("symbolic link"), "{err}");
    // In a directory, a linked entry refuses the whole import, the good files with it.
    p.write_src("edited-agent_sessions.json", EDITED);
    let err = m.import_chains(&p.src).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidChainFile { reason: ChainFileError::NotARegularFile { .. }, path } if *path == link),
        "{err:?}"
    );
    // So does a bad file.
    std::fs::remove_file(&link).unwrap();
    p.write_src("hand-agent_sessions.json", "{");
    assert!(matches!(
        m.import_chains(&p.src).unwrap_err(),
        Error::InvalidChainFile {
            reason: ChainFileError::NotJson { .. },
            ..
        }
    ));
    // A missing file; a directory without tracker files.
    assert!(matches!(
        m.import_chains(p.src.join("nobody_sessions.json"))
            .unwrap_err(),
        Error::NotFound { .. }
    ));
    let empty = p.src.join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        m.import_chains(&empty).unwrap_err(),
        Error::NotFound { .. }
    ));
    // An agent with another chain in the engine: refused, not merged.
    let clash = p.write_src(
        "engine-agent_sessions.json",
        &HAND_WRITTEN.replacen("hand-agent", "engine-agent", 1),
    );
    assert!(matches!(
        m.import_chains(&clash).unwrap_err(),
        Error::AlreadyExists { kind: "chain", id } if id == "engine-agent"
    ));
    assert_eq!(everything(&p, &m), before, "the refusals changed something");
    m.close().unwrap();
}

#[test]
fn importing_a_file_twice_changes_nothing_the_second_time() {
    let p = place();
    let file = p.write_src("hand-agent_sessions.json", HAND_WRITTEN);
    let m = p.open();
    let first = m.import_chains(&file).unwrap();
    assert_eq!(first.imported, vec![AgentId::new("hand-agent").unwrap()]);
    let lsn = m.last_lsn();
    assert_eq!(first.lsn, Some(lsn));
    let again = m.import_chains(&file).unwrap();
    assert!(again.imported.is_empty() && again.lsn.is_none());
    assert_eq!(again.unchanged, vec![AgentId::new("hand-agent").unwrap()]);
    assert_eq!(m.last_lsn(), lsn, "nothing appended");
    // Once the chain moved on, the old file is no longer the chain: refused.
    m.chain("hand-agent")
        .unwrap()
        .update_session("s-3", "p", "r", None)
        .unwrap();
    assert!(matches!(
        m.import_chains(&file).unwrap_err(),
        Error::AlreadyExists { .. }
    ));
    m.close().unwrap();
}

#[test]
fn a_tracker_file_in_the_data_directory_is_adopted_and_a_different_one_is_left_alone() {
    let p = place();
    let m = p.open();
    // The engine's own chain, whose file sits next to the foreign one.
    m.chain("engine-agent")
        .unwrap()
        .update_session("x", "p", "r", Some(json!({"k": 0.10200000000000001})))
        .unwrap();
    m.flush_projections().unwrap();
    let own = std::fs::read(p.chain_file("engine-agent")).unwrap();
    let lsn = m.last_lsn();
    // Seed 003's tracker pointed at the data directory's chains/ (or a copy put there).
    // (Written after the open: today's open would remove it as stale; with the ownership
    // manifest, the open refuses and says to import it.)
    let chains = p.data.join("chains");
    let theirs = chains.join("hand-agent_sessions.json");
    std::fs::write(&theirs, HAND_WRITTEN).unwrap();
    let r = m.import_chains(&chains).unwrap();
    assert_eq!(r.imported, vec![AgentId::new("hand-agent").unwrap()]);
    assert_eq!(r.unchanged, vec![AgentId::new("engine-agent").unwrap()]);
    assert_eq!(r.lsn, Some(lsn.next()), "one record for the import");
    assert_eq!(std::fs::read(p.chain_file("engine-agent")).unwrap(), own);
    // The file is the engine's now: its rendering, equal as a JSON value.
    let now = std::fs::read_to_string(&theirs).unwrap();
    assert_ne!(now, HAND_WRITTEN, "rewritten by the projector");
    assert_eq!(
        serde_json::from_str::<Value>(&now).unwrap(),
        serde_json::from_str::<Value>(HAND_WRITTEN).unwrap()
    );
    // A file elsewhere whose chain file path holds a different file is refused, and both
    // files are left as they are.
    let other = EDITED.replace("edited-agent", "taken-agent");
    std::fs::write(chains.join("taken-agent_sessions.json"), &other).unwrap();
    let outside = p.write_src(
        "taken-agent_sessions.json",
        &other.replace("\"host\"", "\"hostname\""),
    );
    let before = std::fs::read(&outside).unwrap();
    let err = m.import_chains(&outside).unwrap_err();
    match &err {
        Error::InvalidChainFile {
            path,
            reason: ChainFileError::TargetTaken { target },
        } => {
            assert_eq!(path, &outside);
            assert_eq!(target, &chains.join("taken-agent_sessions.json"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(chains.join("taken-agent_sessions.json")).unwrap(),
        other
    );
    assert_eq!(std::fs::read(&outside).unwrap(), before);
    assert!(
        m.chain("taken-agent")
            .unwrap()
            .get_session_chain()
            .is_empty()
    );
    m.close().unwrap();
}

#[test]
fn a_count_at_the_largest_integer_cannot_go_up() {
    let p = place();
    let file = p.write_src(
        "hand-agent_sessions.json",
        &hand_with(
            "\"interaction_count\": 2,",
            "\"interaction_count\": 18446744073709551615,",
        ),
    );
    let m = p.open();
    m.import_chains(&file).unwrap();
    let t = m.chain("hand-agent").unwrap();
    assert_eq!(t.interaction_count(), u64::MAX);
    let lsn = m.last_lsn();
    assert!(matches!(
        t.update_session("s-3", "p", "r", None).unwrap_err(),
        Error::InvalidInput { field: "chain", .. }
    ));
    assert_eq!(m.last_lsn(), lsn);
    m.close().unwrap();
}

fn link(session_id: &str) -> ImportedLink {
    ImportedLink {
        session_id: session_id.into(),
        created_at: Timestamp::from_secs(T0),
        created_at_text: None,
        interaction_count: 1,
        last_prompt: "p".into(),
        last_response: "r".into(),
        metadata: None,
        extra: vec![],
    }
}

fn imported(agent: &str, links: Vec<ImportedLink>) -> ImportedChain {
    ImportedChain {
        agent: AgentId::new(agent).unwrap(),
        current_session_id: links.last().map(|l| l.session_id.clone()),
        interaction_count: links.len() as u64,
        links,
        extra: vec![],
    }
}

#[test]
fn the_import_command_checks_what_it_is_given() {
    let (_, s) = mem();
    let clock = clock();
    let m = SessionManager::open("data", manager_options(&s, &clock)).unwrap();
    let e = m.engine();
    let refused = |cmd: Command| {
        let lsn = e.last_lsn();
        let err = e.execute(cmd).unwrap_err();
        assert!(err.is_refusal(), "{err:?}");
        assert_eq!(e.last_lsn(), lsn);
        err
    };
    refused(Command::ImportChains { chains: vec![] });
    refused(Command::ImportChains {
        chains: vec![imported("a", vec![]), imported("a", vec![])],
    });
    let mut c = imported("a", vec![link("s")]);
    c.extra = vec![("sessions".into(), JsonText::parse("1").unwrap())];
    refused(Command::ImportChains { chains: vec![c] });
    let mut l = link("s");
    l.extra = vec![
        ("k".into(), JsonText::parse("1").unwrap()),
        ("k".into(), JsonText::parse("2").unwrap()),
    ];
    refused(Command::ImportChains {
        chains: vec![imported("a", vec![l])],
    });
    refused(Command::ImportChains {
        chains: vec![imported("a", vec![link(&"s".repeat(2000))])],
    });
    // Two chains in one record; then neither may be imported again.
    e.execute(Command::ImportChains {
        chains: vec![imported("a", vec![link("s")]), imported("b", vec![])],
    })
    .unwrap();
    assert_eq!(m.agents().len(), 2);
    let err = refused(Command::ImportChains {
        chains: vec![imported("c", vec![]), imported("b", vec![])],
    });
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert!(m.chain("c").unwrap().get_session_chain().is_empty());
    m.close().unwrap();
}

#[test]
fn only_an_import_is_written_in_the_new_schemas() {
    // Event schema 2 only for the import; everything else byte for byte as schema 1.
    let event = |body| session_engine::Event {
        at: Timestamp::from_secs(T0),
        body,
    };
    let import = event(session_engine::EventBody::ChainsImported {
        chains: vec![imported("a", vec![link("s")])],
    });
    let bytes = codec::event_to_vec(&import).unwrap();
    assert_eq!(bytes[0], 2);
    assert_eq!(codec::decode_event(&bytes).unwrap(), import);
    let mut as_v1 = bytes.clone();
    as_v1[0] = 1;
    let err = codec::decode_event(&as_v1).unwrap_err().to_string();
    assert!(
        err.contains("event schema 1 has no chains_imported event"),
        "{err}"
    );
    let reset = event(session_engine::EventBody::ChainReset {
        agent: AgentId::new("a").unwrap(),
    });
    assert_eq!(codec::event_to_vec(&reset).unwrap()[0], 1);
    let mut future = codec::event_to_vec(&reset).unwrap();
    future[0] = codec::NEWEST_EVENT_SCHEMA_VERSION + 1;
    assert!(
        codec::decode_event(&future)
            .unwrap_err()
            .to_string()
            .contains(&format!(
                "reads up to {}",
                codec::NEWEST_EVENT_SCHEMA_VERSION
            ))
    );

    // State schema 2 only when a chain holds what only it stores.
    let mut st = session_engine::State::new();
    st.apply(Lsn(1), &import).unwrap();
    let mut plain = Vec::new();
    codec::encode_state(&st, &mut plain).unwrap();
    assert_eq!(
        plain[0], 1,
        "an import rendered as the engine would needs nothing more"
    );
    let mut l = link("s");
    l.created_at_text = Some("2025-11-08T10:30:00".into());
    l.extra = vec![("model".into(), JsonText::parse("\"opus\"").unwrap())];
    let mut c = imported("b", vec![link("r"), l]);
    c.extra = vec![("host".into(), JsonText::parse("{\"pid\":1}").unwrap())];
    st.apply(
        Lsn(2),
        &event(session_engine::EventBody::ChainsImported { chains: vec![c] }),
    )
    .unwrap();
    let mut rich = Vec::new();
    codec::encode_state(&st, &mut rich).unwrap();
    assert_eq!(rich[0], 2);
    let back = codec::decode_state(&rich).unwrap();
    assert_eq!(back, st);
    let file = |s: &session_engine::State| {
        serde_json::to_value(session_engine::projection::ChainFile::of(
            s.chain(&AgentId::new("b").unwrap()).unwrap(),
        ))
        .unwrap()
    };
    assert_eq!(file(&back), file(&st));
    assert_eq!(
        file(&back)["sessions"][1]["created_at"],
        "2025-11-08T10:30:00"
    );
    assert_eq!(file(&back)["sessions"][1]["model"], "opus");
    assert_eq!(file(&back)["host"]["pid"], 1);
    // A cut anywhere is a decode error, never a panic.
    for n in 0..rich.len() {
        assert!(codec::decode_state(&rich[..n]).is_err(), "cut at {n}");
    }
    let mut trailing = rich.clone();
    trailing.push(0);
    assert!(codec::decode_state(&trailing).is_err());
}

// ---- the command line ----

fn cli(data: &Path, args: &[&str]) -> std::process::Output {
    Process::new(BIN)
        .env_remove("SESSION_ENGINE_DIR")
        .env_remove("RUST_LOG")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn status(o: &std::process::Output) -> (i32, String, String) {
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn import_on_the_command_line_exits_with_the_documented_statuses() {
    let p = place();
    let hand = p.write_src("hand-agent_sessions.json", HAND_WRITTEN);
    let s = |f: &Path| f.to_str().unwrap().to_owned();
    // A tracker file: prints the agent; the chain file equals the file.
    let (code, out, err) = status(&cli(&p.data, &["import", &s(&hand)]));
    assert_eq!((code, out.as_str()), (0, "hand-agent\n"), "{err}");
    assert_eq!(json_of(&p.chain_file("hand-agent")), json_of(&hand));
    let (code, out, _) = status(&cli(&p.data, &["chain", "hand-agent"]));
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json_of(&hand));
    // Again: nothing to do, said on stderr.
    let (code, out, err) = status(&cli(&p.data, &["import", &s(&hand)]));
    assert_eq!((code, out.as_str()), (0, ""));
    assert!(
        err.contains("already imported (unchanged): hand-agent"),
        "{err}"
    );
    // A directory, with --json.
    let dir = p.src.join("more");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("edited-agent_sessions.json"), EDITED).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a tracker file").unwrap();
    let (code, out, err) = status(&cli(&p.data, &["--json", "import", &s(&dir)]));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["imported"], json!(["edited-agent"]));
    assert_eq!(v["unchanged"], json!([]));
    // Then a link goes on from the file's count.
    let (code, _, err) = status(&cli(
        &p.data,
        &[
            "chain",
            "edited-agent",
            "--link",
            "next",
            "--prompt",
            "p",
            "--response",
            "r",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    let c = json_of(&p.chain_file("edited-agent"));
    assert_eq!(c["interaction_count"], 42);
    assert_eq!(c["current_session_id"], "next");

    // What a refusal must leave as it was: the log's events and the chain files.
    let log = || status(&cli(&p.data, &["replay"])).1;
    let files = || {
        let mut v: Vec<_> = std::fs::read_dir(p.data.join("chains"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let refused = |args: &[&str], code: i32, needle: &str| {
        let (log_before, files_before) = (log(), files());
        let (c, out, err) = status(&cli(&p.data, args));
        assert_eq!(c, code, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        assert_eq!(log(), log_before, "{args:?} appended to the log");
        assert_eq!(files(), files_before, "{args:?} changed a chain file");
    };
    let bad = p.write_src("bad_sessions.json", "{\"agent_id\": \"bad\"");
    refused(&["import", &s(&bad)], 4, "not valid JSON");
    let missing = p.write_src(
        "bad_sessions.json",
        &HAND_WRITTEN.replacen("hand-agent", "bad", 1).replacen(
            "\"last_response\": \"R2\",",
            "",
            1,
        ),
    );
    refused(
        &["import", &s(&missing)],
        4,
        "sessions[1].last_response is missing",
    );
    let link = p.src.join("linked_sessions.json");
    std::os::unix::fs::symlink(&hand, &link).unwrap();
    refused(&["import", &s(&link)], 4, "symbolic link");
    refused(
        &["import", &s(&p.src.join("nobody_sessions.json"))],
        3,
        "not found",
    );
    // The chain moved on since its file was read: importing the file again is refused.
    refused(
        &["import", &s(&dir.join("edited-agent_sessions.json"))],
        5,
        "chain already exists: edited-agent",
    );
    // The chain's file path holds a different file (foreign to the engine).
    let foreign = EDITED.replace("edited-agent", "taken-agent");
    std::fs::write(p.chain_file("taken-agent"), &foreign).unwrap();
    let taken = p.write_src(
        "taken-agent_sessions.json",
        &foreign.replace("\"host\"", "\"hostname\""),
    );
    refused(&["import", &s(&taken)], 5, "already holds a different file");
    let empty = p.src.join("empty");
    std::fs::create_dir(&empty).unwrap();
    refused(&["import", &s(&empty)], 4, "or hold seed 003 tracker files");
    // Bundles still import as before.
    let (code, _, err) = status(&cli(&p.data, &["create", "--id", "s1"]));
    assert_eq!(code, 0, "{err}");
    let bundle = p.src.join("s1.bundle.json");
    assert_eq!(status(&cli(&p.data, &["export", "s1", &s(&bundle)])).0, 0);
    let other = p.src.join("other-data");
    let (code, out, err) = status(&cli(&other, &["import", &s(&bundle)]));
    assert_eq!((code, out.as_str()), (0, "s1\n"), "{err}");
}
