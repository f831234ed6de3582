//! Adopting an amplihack runtime directory (`import DIR`): every document becomes engine
//! state and is written back as it was; the engine keeps what it does not model once it
//! changes a session; bad input is refused whole and changes nothing.
//!
//! `tests/fixtures/amplihack_runtime/` is a directory as amplihack writes it (Python's
//! `json.dumps(indent=2, sort_keys=True, ensure_ascii=False)`, `time.time()` floats,
//! `LogEntry` lines): an active session with unknown keys, a count of 150 commands over
//! its last 100, non-ASCII metadata and a log; a timed-out one; an archived one; one that
//! only the registry names; one that only has a file; a dated log and a temporary file
//! that are not adopted. `tests/amplihack_real.rs` does the same with files the real
//! toolkit writes.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use session_engine::projection::{ProjectionFormat, ProjectionOptions};
use session_engine::state::{LogLevel, Origin};
use session_engine::{
    CommandRun, Error, ManagerOptions, ManualClock, SessionId, SessionManager, Status, Timestamp,
};

const A: &str = "claude_session_1762597800_0a1b2c3d";
const B: &str = "claude_session_1762597900_1b2c3d4e";
const C: &str = "claude_session_1762598000_2c3d4e5f";
const D: &str = "claude_session_1762598100_3d4e5f60";
const E: &str = "claude_session_1762598200_4e5f6071";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/amplihack_runtime")
}

/// The fixture's files, by path relative to it.
fn fixture_files() -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type().unwrap().is_dir() {
                walk(root, &r, out);
            } else {
                out.insert(r, std::fs::read(e.path()).unwrap());
            }
        }
    }
    walk(&fixture_dir(), "", &mut out);
    out
}

/// A backend whose data directory holds the fixture, with `edit` applied to its files.
fn runtime(
    b: &Backend,
    edit: impl FnOnce(&mut BTreeMap<String, Vec<u8>>),
) -> BTreeMap<String, Vec<u8>> {
    let mut files = fixture_files();
    edit(&mut files);
    for (rel, bytes) in &files {
        let path = b.path(rel);
        b.storage.create_dir_all(path.parent().unwrap()).unwrap();
        b.write(rel, bytes);
    }
    files
}

/// The files under `sessions/` and `logs/` (the engine's own, `toolkit.log` and moved-aside
/// files left out).
fn amplihack_files(b: &Backend) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for dir in ["sessions", "sessions/archive", "logs"] {
        for name in b.list(dir) {
            let rel = format!("{dir}/{name}");
            if b.storage.list_dir(&b.path(&rel)).is_ok() || name == "toolkit.log" {
                continue;
            }
            out.insert(rel.clone(), b.read(&rel));
        }
    }
    out
}

fn options_for(b: &Backend, clock: &ManualClock) -> ManagerOptions {
    ManagerOptions {
        engine: options(Arc::clone(&b.storage), clock),
        projections: Some(ProjectionOptions {
            format: None,
            ..fast_projections()
        }),
    }
}

fn adopt(
    b: &Backend,
    clock: &ManualClock,
    source: &Path,
) -> session_engine::Result<(SessionManager, Vec<SessionId>)> {
    session_engine::import::adopt_amplihack(&b.dir, options_for(b, clock), source)
}

fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn micros(secs: f64) -> Timestamp {
    Timestamp((secs * 1e6).round() as i64)
}

fn json_of(files: &BTreeMap<String, Vec<u8>>, rel: &str) -> Value {
    serde_json::from_slice(&files[rel]).unwrap()
}

#[test]
fn adopting_in_place_writes_every_file_back_as_it_was() {
    for b in Backend::both() {
        let before = runtime(&b, |_| {});
        let clock = clock();
        let (m, ids) = adopt(&b, &clock, &b.dir).unwrap();
        assert_eq!(ids, [A, B, C, D, E].map(sid), "{}", b.name);
        assert_eq!(m.projection_format(), Some(ProjectionFormat::Amplihack));
        m.flush_projections().unwrap();
        m.close().unwrap();
        let after = amplihack_files(&b);
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "{}: files added or gone",
            b.name
        );
        for (rel, bytes) in &before {
            assert!(after[rel] == *bytes, "{}: {rel} changed", b.name);
        }
        // A rebuild from the log writes the same files again.
        let m = SessionManager::open(&b.dir, options_for(&b, &clock)).unwrap();
        m.rebuild_projections().unwrap();
        m.close().unwrap();
        assert_eq!(
            amplihack_files(&b),
            before,
            "{}: a rebuild changed them",
            b.name
        );
    }
}

#[test]
fn adopted_sessions_map_onto_the_engines_sessions() {
    let b = Backend::mem();
    let files = runtime(&b, |_| {});
    let clock = clock();
    let (m, _) = adopt(&b, &clock, &b.dir).unwrap();
    let st = m.state();
    m.close().unwrap();
    let a = st.session(&sid(A)).unwrap();
    let doc = json_of(&files, &format!("sessions/{A}.json"));
    assert_eq!(&*a.name, "refactor the parser");
    assert_eq!(a.status(), Status::Active);
    assert_eq!(a.created_at, micros(1762597800.1234567));
    assert_eq!(a.last_activity, micros(1762597912.9876543));
    assert_eq!(
        a.timeout_secs, 0,
        "amplihack's timeout runs only while a session runs"
    );
    assert_eq!(a.config.timeout, 300.0);
    assert_eq!(a.body.commands.len(), 100);
    let failed = doc["command_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "error")
        .count();
    assert_eq!(a.body.command_errors as usize, failed);
    let c0 = &a.body.commands[0];
    assert_eq!(&*c0.command, "step 0");
    assert_eq!(c0.timestamp, micros(1762597810.5));
    assert_eq!(
        c0.args.as_ref().unwrap().to_value(),
        json!({"i": 0, "path": "src/0.py"})
    );
    assert_eq!(c0.duration_ms, 100);
    let c5 = &a.body.commands[5];
    assert!(!c5.success && c5.error.as_deref() == Some("Command 'step 5' timed out after 0.5s"));
    assert_eq!(
        a.get_metadata("nested").unwrap().to_value(),
        json!({"é": ["ü", 1, 2.5, null, true]})
    );
    assert_eq!(
        a.get_metadata("ratio").unwrap().to_value(),
        json!(0.30000000000000004)
    );
    assert!(matches!(&a.origin, Some(Origin::Adopted(x)) if x.pristine && x.log));
    let timed_out = st.session(&sid(B)).unwrap();
    assert_eq!(timed_out.status(), Status::TimedOut);
    assert_eq!(timed_out.config.log_level, LogLevel::Debug);
    assert_eq!(st.session(&sid(C)).unwrap().status(), Status::Archived);
    assert_eq!(
        st.session(&sid(C)).unwrap().config.log_level,
        LogLevel::Warning
    );
    let only_registry = st.session(&sid(D)).unwrap();
    assert_eq!(&*only_registry.name, "never saved");
    assert_eq!(only_registry.status(), Status::Active);
    assert_eq!(only_registry.body.commands.len(), 0);
    let only_file = st.session(&sid(E)).unwrap();
    assert_eq!(
        only_file.status(),
        Status::Ended,
        "is_active false, no timeout message"
    );
    assert_eq!(&*only_file.name, "stopped");
    // The files each adoption took over, for the ownership manifest.
    let layout = session_engine::projection::Layout::new(&b.dir, ProjectionFormat::Amplihack);
    let taken = |id: &str| layout.adopted_files(st.session(&sid(id)).unwrap());
    let registry = b.path("sessions/registry.json");
    assert_eq!(
        taken(A),
        [
            b.path(&format!("sessions/{A}.json")),
            registry.clone(),
            b.path(&format!("logs/{A}.log"))
        ]
    );
    assert_eq!(
        taken(C),
        [
            b.path(&format!("sessions/archive/{C}_1762599999.json")),
            registry.clone()
        ]
    );
    assert_eq!(taken(D), [registry]);
    // The dated log and the temporary file were left alone.
    assert!(b.exists(&format!("logs/{A}_20251108.log")));
    assert!(b.exists(&format!("sessions/.{A}.json.k2j3h4.tmp")));
}

#[test]
fn a_change_rewrites_an_adopted_session_and_keeps_what_the_engine_does_not_model() {
    for b in Backend::both() {
        let files = runtime(&b, |_| {});
        let clock = ManualClock::new(Timestamp::from_secs(1_762_598_000));
        let (m, _) = adopt(&b, &clock, &b.dir).unwrap();
        m.flush_projections().unwrap();
        let a = m.get_session(A).unwrap();
        a.record_command(
            CommandRun::failed("new step", "it broke", Duration::from_millis(1500))
                .with_args(json!({"x": 1})),
        )
        .unwrap();
        for id in [D, B] {
            m.get_session(id)
                .unwrap()
                .set_metadata("touched", json!(true))
                .unwrap();
        }
        m.close().unwrap();
        let orig = json_of(&files, &format!("sessions/{A}.json"));
        let now = b.json(&format!("sessions/{A}.json"));
        let t = 1_762_598_000.0;
        // What amplihack wrote and the engine has no field for: as it was.
        assert_eq!(
            now["extra_top_level"], orig["extra_top_level"],
            "{}",
            b.name
        );
        assert_eq!(
            now["config"], orig["config"],
            "config is never changed by the engine"
        );
        assert!(now["config"]["timeout"].is_u64() && now["config"]["session_id"].is_null());
        assert_eq!(now["state"]["start_time"], orig["state"]["start_time"]);
        assert_eq!(now["state"]["metadata"], json!({"phase": "review"}));
        assert_eq!(now["metadata"]["tool_version"], "0.9.1");
        // What the change moved: counted on top of what the file counted.
        assert_eq!(now["state"]["command_count"], 151);
        assert_eq!(
            now["state"]["error_count"],
            orig["state"]["error_count"].as_u64().unwrap() + 1
        );
        assert_eq!(now["state"]["last_error"], "it broke");
        assert_eq!(now["state"]["last_activity"], json!(t));
        assert_eq!(now["state"]["is_active"], true);
        let history = now["command_history"].as_array().unwrap();
        assert_eq!(history.len(), 100);
        assert_eq!(
            history[..99],
            orig["command_history"].as_array().unwrap()[1..],
            "the adopted entries as they were"
        );
        assert_eq!(
            history[99],
            json!({"command": "new step", "timestamp": t, "kwargs": {"x": 1}, "result": "error",
                   "duration": 1.5, "error": "it broke"})
        );
        assert_eq!(now["statistics"]["command_count"], 151);
        assert_eq!(now["statistics"]["checkpoints"], 0);
        assert_eq!(now["statistics"]["time_since_activity"], 0.0);
        assert_eq!(now["saved_at"], json!(t));
        assert_eq!(now["metadata"]["status"], "active");
        assert_eq!(
            now["metadata"]["created_at"],
            orig["metadata"]["created_at"]
        );
        // The registry: the changed entries rewritten, the others and its own keys kept.
        let registry = b.json("sessions/registry.json");
        let orig_registry = json_of(&files, "sessions/registry.json");
        assert_eq!(registry["schema_hint"], "amplihack");
        assert_ne!(registry["updated_at"], orig_registry["updated_at"]);
        // The one amplihack timed out shows it, with amplihack's message.
        assert_eq!(registry["sessions"][B]["status"], "timed_out");
        assert_eq!(
            registry["sessions"][B]["config"],
            orig_registry["sessions"][B]["config"]
        );
        let timed_out = b.json(&format!("sessions/{B}.json"));
        assert_eq!(
            timed_out["state"]["last_error"],
            "Session timeout after 120.0s"
        );
        assert_eq!(timed_out["state"]["is_active"], false);
        assert_eq!(timed_out["metadata"]["metadata"], json!({"touched": true}));
        assert_eq!(registry["sessions"][A]["status"], "active");
        assert_eq!(registry["sessions"][A]["tool_version"], "0.9.1");
        assert_eq!(registry["sessions"][A]["last_accessed"], json!(t));
        assert_eq!(registry["sessions"][D]["metadata"]["touched"], true);
        assert!(
            registry["sessions"].get(E).is_none(),
            "it had no entry and did not change"
        );
        // The session only the registry named has a file once it changed; the others are
        // as they were.
        assert_eq!(
            b.json(&format!("sessions/{D}.json"))["metadata"]["name"],
            "never saved"
        );
        for rel in [
            format!("sessions/{E}.json"),
            format!("sessions/archive/{C}_1762599999.json"),
        ] {
            assert!(b.read(&rel) == files[&rel], "{}: {rel}", b.name);
        }
        // The log: amplihack's lines, then the engine's.
        let log = String::from_utf8(b.read(&format!("logs/{A}.log"))).unwrap();
        let orig_log = String::from_utf8(files[&format!("logs/{A}.log")].clone()).unwrap();
        assert!(log.starts_with(&orig_log), "{}: {log}", b.name);
        let added: Vec<Value> = log[orig_log.len()..]
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(added.len(), 1, "{}: {log}", b.name);
        assert_eq!(added[0]["operation"], "command_recorded");
        assert_eq!(added[0]["error"], "it broke");
    }
}

#[test]
fn adopting_another_directory_leaves_it_alone_and_writes_the_same_files_here() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("amplihack");
    let src = Backend::file();
    let mut b = Backend::file();
    b.dir = src.dir.parent().unwrap().join("engine");
    let mut s = Backend::file();
    s.dir = source.clone();
    let before = runtime(&s, |_| {});
    let clock = clock();
    let (m, ids) = adopt(&b, &clock, &source).unwrap();
    assert_eq!(ids.len(), 5);
    m.close().unwrap();
    assert_eq!(amplihack_files(&s), before, "the source changed");
    let written = amplihack_files(&b);
    for (rel, bytes) in &before {
        let adopted =
            rel.ends_with(".json") && !rel.contains(".tmp") || rel == &format!("logs/{A}.log");
        assert_eq!(written.get(rel) == Some(bytes), adopted, "{rel}");
    }
}

#[test]
fn adoptions_survive_a_snapshot_and_a_full_replay() {
    let b = Backend::file();
    let before = runtime(&b, |_| {});
    let clock = clock();
    let (m, _) = adopt(&b, &clock, &b.dir).unwrap();
    let state = (*m.state()).clone();
    m.engine().snapshot().unwrap();
    m.close().unwrap();
    let m = SessionManager::open(&b.dir, options_for(&b, &clock)).unwrap();
    assert!(m.engine().recovery_report().snapshot_lsn.is_some());
    assert_eq!(*m.state(), state);
    m.close().unwrap();
    std::fs::remove_dir_all(b.path("snapshots")).unwrap();
    let m = SessionManager::open(&b.dir, options_for(&b, &clock)).unwrap();
    assert_eq!(*m.state(), state);
    m.rebuild_projections().unwrap();
    m.close().unwrap();
    assert_eq!(amplihack_files(&b), before);
}

#[test]
fn an_adopted_session_exports_and_imports_as_a_bundle() {
    let b = Backend::mem();
    runtime(&b, |_| {});
    let clock = clock();
    let (m, _) = adopt(&b, &clock, &b.dir).unwrap();
    let bundle = m.export_bundle(A).unwrap();
    assert_eq!(bundle.events.len(), 1);
    let bytes = bundle.to_json().unwrap();
    m.close().unwrap();
    let other = Backend::mem();
    let m = other.open(&clock);
    let s = m.import_bytes(&bytes).unwrap();
    let snap = s.snapshot().unwrap();
    assert_eq!(snap.body.commands.len(), 100);
    assert_eq!(&*snap.name, "refactor the parser");
    assert!(matches!(&snap.origin, Some(Origin::Imported { original }) if original.as_str() == A));
    m.close().unwrap();
}

fn set_json(files: &mut BTreeMap<String, Vec<u8>>, rel: &str, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&files[rel]).unwrap();
    edit(&mut v);
    files.insert(rel.to_string(), serde_json::to_vec_pretty(&v).unwrap());
}

#[test]
fn bad_input_is_refused_whole_and_changes_nothing() {
    let a_file = format!("sessions/{A}.json");
    type Edit = Box<dyn Fn(&mut BTreeMap<String, Vec<u8>>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "malformed JSON",
            Box::new(move |f| {
                f.insert(format!("sessions/{B}.json"), b"{\"session_id\": ".to_vec());
            }),
            "malformed JSON",
        ),
        (
            "NaN, which Python writes for float('nan')",
            Box::new(|f| {
                f.insert(
                    format!("sessions/{E}.json"),
                    br#"{"saved_at": NaN}"#.to_vec(),
                );
            }),
            "malformed JSON",
        ),
        (
            "an array",
            Box::new(|f| {
                f.insert(format!("sessions/{E}.json"), b"[]".to_vec());
            }),
            "not a JSON object",
        ),
        (
            "an id that is not a safe file name",
            Box::new(|f| {
                f.insert("sessions/has space.json".into(), b"{}".to_vec());
            }),
            "session id",
        ),
        (
            "a session_id that is not the file's",
            Box::new({
                let a_file = a_file.clone();
                move |f| set_json(f, &a_file, |v| v["session_id"] = json!("someone_else"))
            }),
            "session_id",
        ),
        (
            "an integer past 64 bits",
            Box::new(|f| {
                f.insert(
                    format!("sessions/{E}.json"),
                    br#"{"saved_at": 123456789012345678901234}"#.to_vec(),
                );
            }),
            "64 bits",
        ),
        (
            "a config value of the wrong type",
            Box::new({
                let a_file = a_file.clone();
                move |f| set_json(f, &a_file, |v| v["config"]["timeout"] = json!("soon"))
            }),
            "config.timeout must be a number",
        ),
        (
            "an unknown log level",
            Box::new({
                let a_file = a_file.clone();
                move |f| set_json(f, &a_file, |v| v["config"]["log_level"] = json!("LOUD"))
            }),
            "log_level",
        ),
        (
            "a command without its name",
            Box::new({
                let a_file = a_file.clone();
                move |f| {
                    set_json(f, &a_file, |v| {
                        v["command_history"][3] = json!({"result": "success"})
                    })
                }
            }),
            "command_history[3].command must be a string",
        ),
        (
            "a log whose last line is incomplete",
            Box::new(|f| {
                f.insert(
                    format!("logs/{A}.log"),
                    b"{\"level\": \"INFO\"}\n{\"lev".to_vec(),
                );
            }),
            "incomplete",
        ),
        (
            "an archive file without a time",
            Box::new(|f| {
                f.insert("sessions/archive/notime.json".into(), b"{}".to_vec());
            }),
            "archive file name",
        ),
        (
            "a session both live and archived",
            Box::new(|f| {
                f.insert(
                    format!("sessions/archive/{A}_1762599999.json"),
                    b"{}".to_vec(),
                );
            }),
            "is also in",
        ),
        (
            "a registry entry that is not an object",
            Box::new(|f| {
                set_json(f, "sessions/registry.json", |v| {
                    v["sessions"][D] = json!("x")
                })
            }),
            "must be an object",
        ),
        (
            "a registry without sessions",
            Box::new(|f| {
                set_json(f, "sessions/registry.json", |v| {
                    v.as_object_mut().unwrap().remove("sessions");
                })
            }),
            "sessions must be an object",
        ),
        (
            "a session document over the 1 MiB a JSON value may have",
            Box::new(|f| {
                let big = "x".repeat(1 << 20);
                f.insert(
                    format!("sessions/{E}.json"),
                    format!(r#"{{"saved_at": 1.0, "pad": "{big}"}}"#).into_bytes(),
                );
            }),
            "over the limit",
        ),
        (
            "a name with a control character",
            Box::new(|f| {
                set_json(f, "sessions/registry.json", |v| {
                    v["sessions"][D]["name"] = json!("a\u{1}b")
                })
            }),
            "control characters",
        ),
    ];
    for (what, edit, needle) in cases {
        for b in Backend::both() {
            let files = runtime(&b, &edit);
            let clock = clock();
            match adopt(&b, &clock, &b.dir) {
                Err(e @ Error::InvalidImport { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
                    assert!(msg.contains("nothing was imported"), "{msg}");
                }
                Err(other) => panic!("{what} ({}): {other:?}", b.name),
                Ok(_) => panic!("{what} ({}): accepted", b.name),
            }
            assert_eq!(
                amplihack_files(&b),
                files,
                "{what} ({}): files changed",
                b.name
            );
            assert!(!b.exists("wal"), "{what} ({}): the engine opened", b.name);
        }
    }
}

#[test]
fn symbolic_links_are_refused() {
    for link_what in ["file", "sessions folder", "log"] {
        let b = Backend::file();
        let elsewhere = b.dir.parent().unwrap().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let mut s = Backend::file();
        s.dir = elsewhere.clone();
        runtime(&s, |_| {});
        runtime(&b, |_| {});
        match link_what {
            "file" => {
                let p = b.path(&format!("sessions/{B}.json"));
                std::fs::remove_file(&p).unwrap();
                std::os::unix::fs::symlink(elsewhere.join(format!("sessions/{B}.json")), &p)
                    .unwrap();
            }
            "log" => {
                let p = b.path(&format!("logs/{A}.log"));
                std::fs::remove_file(&p).unwrap();
                std::os::unix::fs::symlink(elsewhere.join(format!("logs/{A}.log")), &p).unwrap();
            }
            _ => {
                std::fs::remove_dir_all(b.path("sessions")).unwrap();
                std::os::unix::fs::symlink(elsewhere.join("sessions"), b.path("sessions")).unwrap();
            }
        }
        let clock = clock();
        match adopt(&b, &clock, &b.dir) {
            Err(e @ Error::InvalidImport { .. }) => {
                assert!(e.to_string().contains("symbolic link"), "{link_what}: {e}")
            }
            other => panic!("{link_what}: {:?}", other.map(|(_, ids)| ids)),
        }
        assert!(!b.exists("wal"), "{link_what}");
    }
}

#[test]
fn a_second_adoption_of_the_same_sessions_is_refused_and_changes_nothing() {
    let b = Backend::file();
    runtime(&b, |_| {});
    let clock = clock();
    let (m, _) = adopt(&b, &clock, &b.dir).unwrap();
    let lsn = m.last_lsn();
    m.close().unwrap();
    let files = amplihack_files(&b);
    match adopt(&b, &clock, &b.dir) {
        Err(Error::AlreadyExists {
            kind: "session",
            id,
        }) => assert_eq!(id, A),
        other => panic!("{:?}", other.map(|(_, ids)| ids)),
    }
    assert_eq!(amplihack_files(&b), files);
    let m = SessionManager::open(&b.dir, options_for(&b, &clock)).unwrap();
    assert_eq!(m.last_lsn(), lsn);
    m.close().unwrap();
}

#[test]
fn adopting_in_place_in_the_seed_format_is_refused() {
    let b = Backend::mem();
    let files = runtime(&b, |_| {});
    let clock = clock();
    let mut o = options_for(&b, &clock);
    o.projections.as_mut().unwrap().format = Some(ProjectionFormat::Seed);
    match session_engine::import::adopt_amplihack(&b.dir, o, &b.dir) {
        Err(e @ Error::InvalidImport { .. }) => {
            assert!(e.to_string().contains("amplihack projection format"), "{e}")
        }
        other => panic!("{:?}", other.map(|(_, ids)| ids)),
    }
    assert_eq!(amplihack_files(&b), files);
}

#[test]
fn sessions_adopted_into_a_seed_directory_are_projected_in_the_seed_format() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Backend::file();
    s.dir = tmp.path().join("amplihack");
    runtime(&s, |_| {});
    let clock = clock();
    let mut b2 = Backend::file();
    b2.dir = tmp.path().join("engine");
    // The directory is in the seed format already.
    SessionManager::open(&b2.dir, options_for(&b2, &clock))
        .unwrap()
        .close()
        .unwrap();
    let (m, ids) = adopt(&b2, &clock, &s.dir).unwrap();
    assert_eq!(m.projection_format(), Some(ProjectionFormat::Seed));
    assert_eq!(ids.len(), 5);
    m.close().unwrap();
    let f = b2.json(&format!("sessions/session_{A}.json"));
    assert_eq!(f["name"], "refactor the parser");
    assert_eq!(f["origin"], json!({"adopted": {"from": "amplihack"}}));
    assert_eq!(f["command_history"].as_array().unwrap().len(), 100);
    assert!(b2.exists(&format!("sessions/archive/session_{C}.json")));
    let lines = b2.log_lines(&format!("logs/session_{A}.log"));
    assert_eq!(lines[0]["event"], "sessions_adopted");
    assert_eq!(lines[0]["details"]["commands"], 100);
}

#[test]
fn a_registry_larger_than_a_json_value_may_be_is_adopted_entry_by_entry() {
    let b = Backend::mem();
    let entries: serde_json::Map<String, Value> = (0..4000)
        .map(|i| {
            (
                format!("claude_session_{}_{i:08x}", 1_762_597_800 + i),
                json!({"name": format!("task {i}"), "created_at": 1_762_597_800.5 + i as f64,
                       "last_accessed": 1_762_597_900.25, "status": "created",
                       "config": {"timeout": 300.0, "max_retries": 3, "retry_delay": 1.0,
                                  "heartbeat_interval": 30.0, "enable_logging": true,
                                  "log_level": "INFO", "session_id": null,
                                  "auto_save_interval": 60.0},
                       "metadata": {"i": i}}),
            )
        })
        .collect();
    let registry = session_engine::projection::pyjson::to_pretty_sorted(
        &json!({"sessions": entries, "updated_at": 1_762_599_999.5}),
    )
    .unwrap();
    assert!(registry.len() > 1 << 20);
    b.storage.create_dir_all(&b.path("sessions")).unwrap();
    b.write("sessions/registry.json", &registry);
    let clock = clock();
    let (m, ids) = adopt(&b, &clock, &b.dir).unwrap();
    assert_eq!(ids.len(), 4000);
    m.close().unwrap();
    assert!(b.read("sessions/registry.json") == registry);
    assert_eq!(
        b.list("sessions"),
        ["archive", "registry.json"],
        "no file for a session that had none"
    );
}

mod generated {
    //! Documents with whatever else amplihack (or a later version, or a user) may have put
    //! in them: every one that is read comes back equal, and none makes the reader panic.
    use super::*;
    use proptest::prelude::*;
    use session_engine::projection::{Layout, ProjectionFormat};
    use session_engine::{Event, EventBody, Lsn, State};

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[a-zA-Zé ü😀\\n\"\\\\]{0,12}".prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_é]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Adopts the directory in `storage` the way the engine does and renders `rel` back.
    fn adopt_and_render(
        storage: &Arc<dyn session_engine::Storage>,
        id: &str,
    ) -> session_engine::Result<Value> {
        let read =
            session_engine::import::amplihack::read_runtime_dir(&**storage, Path::new("rt"))?;
        let mut state = State::new();
        state
            .apply(
                Lsn(1),
                &Event {
                    at: Timestamp(0),
                    body: EventBody::SessionsAdopted(Box::new(read.adoption)),
                },
            )
            .unwrap();
        let layout = Layout::new(Path::new("rt"), ProjectionFormat::Amplihack);
        let bytes = layout
            .render_session(state.session(&sid(id)).unwrap())
            .unwrap();
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    fn write(storage: &Arc<dyn session_engine::Storage>, rel: &str, bytes: &[u8]) {
        use session_engine::storage::OpenMode;
        let path = Path::new("rt").join(rel);
        storage.create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = storage.open(&path, OpenMode::CreateTruncate).unwrap();
        f.write_at(0, bytes).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

        #[test]
        fn unknown_keys_and_exact_numbers_come_back_as_they_were(
            top in proptest::collection::btree_map("x_[a-z]{1,6}", value(), 0..4),
            in_state in proptest::collection::btree_map("y_[a-z]{1,6}", value(), 0..3),
            start in 0.0f64..1e10,
            durations in proptest::collection::vec(0.0f64..1e4, 0..5),
            kwargs in value(),
        ) {
            let storage: Arc<dyn session_engine::Storage> = Arc::new(session_engine::MemStorage::new());
            let mut doc = json!({
                "session_id": "s1",
                "state": {"session_id": "s1", "start_time": start, "last_activity": start + 1.0,
                          "is_active": true, "command_count": durations.len(),
                          "error_count": 0, "last_error": null, "metadata": {}},
                "config": {"timeout": 300.0, "max_retries": 3, "retry_delay": 1.0,
                           "heartbeat_interval": 30.0, "enable_logging": true,
                           "log_level": "INFO", "session_id": null, "auto_save_interval": 60.0},
                "command_history": durations.iter().enumerate().map(|(i, d)| json!({
                    "command": format!("c{i}"), "timestamp": start + i as f64 / 3.0,
                    "kwargs": kwargs, "result": "success", "duration": d})).collect::<Vec<_>>(),
                "saved_at": start + 2.5,
                "metadata": {"name": "n"},
            });
            for (k, v) in top {
                doc[k] = v;
            }
            for (k, v) in in_state {
                doc["state"][k] = v;
            }
            write(&storage, "sessions/s1.json", &serde_json::to_vec_pretty(&doc).unwrap());
            prop_assert_eq!(adopt_and_render(&storage, "s1").unwrap(), doc);
        }

        #[test]
        fn no_file_makes_the_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..400) {
            let storage: Arc<dyn session_engine::Storage> = Arc::new(session_engine::MemStorage::new());
            write(&storage, "sessions/s1.json", &bytes);
            let _ = adopt_and_render(&storage, "s1");
            // A real document, cut short anywhere.
            let real = fixture_files()[&format!("sessions/{A}.json")].clone();
            let storage: Arc<dyn session_engine::Storage> = Arc::new(session_engine::MemStorage::new());
            write(&storage, &format!("sessions/{A}.json"), &real[..cut.min(real.len())]);
            let r = adopt_and_render(&storage, A);
            prop_assert!(r.is_err() || cut >= real.len());
        }
    }
}
