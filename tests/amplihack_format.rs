//! The projection format chosen per data directory (`--projections seed|amplihack`,
//! recorded at the first writable open, changed only by a rebuild) and the `amplihack`
//! format's files, read the way amplihack's toolkit reads them.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use session_engine::projection::pyjson;
use session_engine::projection::{ProjectionFormat, ProjectionOptions};
use session_engine::{
    CommandRun, Error, JsonText, ManagerOptions, NewSession, SessionConfig, SessionId,
    SessionManager,
};

fn projections(format: Option<ProjectionFormat>) -> ProjectionOptions {
    ProjectionOptions {
        format,
        ..fast_projections()
    }
}

fn amplihack() -> ProjectionOptions {
    projections(Some(ProjectionFormat::Amplihack))
}

fn open_as(
    b: &Backend,
    clock: &session_engine::ManualClock,
    format: Option<ProjectionFormat>,
) -> session_engine::Result<SessionManager> {
    SessionManager::open(
        &b.dir,
        ManagerOptions {
            engine: options(std::sync::Arc::clone(&b.storage), clock),
            projections: Some(projections(format)),
        },
    )
}

fn named(id: &str, name: &str) -> NewSession {
    NewSession {
        id: Some(SessionId::new(id).unwrap()),
        name: Some(name.into()),
        ..NewSession::default()
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("{v} is not an object"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Seconds since the epoch, as amplihack writes times.
fn secs(after_t0: f64) -> f64 {
    T0 as f64 + after_t0
}

/// The file's bytes are what `json.dumps(value, indent=2, sort_keys=True,
/// ensure_ascii=False)` writes for its value: keys sorted at every level, two spaces.
fn assert_written_as_amplihack_writes(b: &Backend, rel: &str) -> Value {
    let bytes = b.read(rel);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    fn sorted(v: &Value) -> bool {
        match v {
            Value::Object(m) => {
                m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b) && m.values().all(sorted)
            }
            Value::Array(a) => a.iter().all(sorted),
            _ => true,
        }
    }
    assert!(sorted(&v), "{rel}: keys not sorted");
    assert!(
        !bytes.ends_with(b"\n"),
        "{rel}: amplihack writes no final newline"
    );
    assert!(
        String::from_utf8_lossy(&bytes).starts_with("{\n  \""),
        "{rel}: not indented by 2"
    );
    assert_eq!(pyjson::to_pretty_sorted(&v).unwrap(), bytes, "{rel}");
    v
}

#[test]
fn the_first_writable_open_records_the_format_and_a_different_one_is_refused() {
    for b in Backend::both() {
        let clock = clock();
        let m = open_as(&b, &clock, Some(ProjectionFormat::Amplihack)).unwrap();
        m.create_session(named("a1", "one")).unwrap();
        m.close().unwrap();
        assert_eq!(
            b.json("projection-format.json")["projections"],
            "amplihack",
            "{}",
            b.name
        );
        let before: Vec<_> = [
            "sessions/a1.json",
            "sessions/registry.json",
            "projection-format.json",
        ]
        .iter()
        .map(|r| b.read(r))
        .collect();
        match open_as(&b, &clock, Some(ProjectionFormat::Seed)) {
            Err(e @ Error::ProjectionFormatMismatch { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("amplihack") && msg.contains("rebuild-projections"),
                    "{msg}"
                );
            }
            other => panic!("{}: {other:?}", b.name),
        }
        let after: Vec<_> = [
            "sessions/a1.json",
            "sessions/registry.json",
            "projection-format.json",
        ]
        .iter()
        .map(|r| b.read(r))
        .collect();
        assert_eq!(before, after, "{}: a refused open changed files", b.name);
        assert!(!b.exists("sessions/session_a1.json"), "{}", b.name);
        // Without a request the recorded format is used.
        let m = open_as(&b, &clock, None).unwrap();
        assert_eq!(m.projection_format(), Some(ProjectionFormat::Amplihack));
        m.create_session(named("a2", "two")).unwrap();
        m.close().unwrap();
        assert!(b.exists("sessions/a2.json"), "{}", b.name);
    }
}

#[test]
fn a_new_directory_is_seed_by_default() {
    let b = Backend::mem();
    let clock = clock();
    let m = open_as(&b, &clock, None).unwrap();
    m.create_session(named("s1", "one")).unwrap();
    m.close().unwrap();
    assert_eq!(b.json("projection-format.json")["projections"], "seed");
    assert!(b.exists("sessions/session_s1.json"));
    assert!(!b.exists("sessions/s1.json"));
    assert!(matches!(
        open_as(&b, &clock, Some(ProjectionFormat::Amplihack)),
        Err(Error::ProjectionFormatMismatch { .. })
    ));
}

#[test]
fn rebuild_as_changes_the_format_and_moves_the_old_files_aside() {
    for b in Backend::both() {
        let clock = clock();
        let m = open_as(&b, &clock, None).unwrap();
        let s = m.create_session(named("s1", "one")).unwrap();
        s.record_activity("user_input", Some(json!({"m": 1})))
            .unwrap();
        let old = m.create_session(named("old", "two")).unwrap();
        old.archive().unwrap();
        m.flush_projections().unwrap();
        let seed_file = b.read("sessions/session_s1.json");
        let seed_log = b.read("logs/session_s1.log");
        let r = m
            .rebuild_projections_as(ProjectionFormat::Amplihack)
            .unwrap();
        assert_eq!(m.projection_format(), Some(ProjectionFormat::Amplihack));
        m.close().unwrap();
        assert!(r.moved_aside >= 5, "{}: {r:?}", b.name);
        // Nothing of the old format is deleted: it is out of the new format's way, in the
        // attic.
        let attic = b.attic();
        let kept = |rel: &str| attic.iter().find(|(p, _)| p == rel).map(|(_, b)| b.clone());
        assert_eq!(
            kept("sessions/session_s1.json"),
            Some(seed_file),
            "{}",
            b.name
        );
        assert_eq!(kept("logs/session_s1.log"), Some(seed_log), "{}", b.name);
        assert!(
            kept("sessions/archive/session_old.json").is_some(),
            "{}",
            b.name
        );
        assert!(kept("sessions/registry.json").is_some(), "{}", b.name);
        assert!(!b.exists("sessions/session_s1.json"), "{}", b.name);
        assert!(!b.exists("logs/session_s1.log"), "{}", b.name);
        // The new format's files, and its record.
        assert_eq!(b.json("projection-format.json")["projections"], "amplihack");
        assert_eq!(b.json("sessions/s1.json")["session_id"], "s1");
        assert!(
            b.exists(&format!("sessions/archive/old_{T0}.json")),
            "{}",
            b.name
        );
        assert!(b.exists("logs/s1.log"), "{}", b.name);
        // Opening again needs no flag, and the old one is now refused.
        assert!(matches!(
            open_as(&b, &clock, Some(ProjectionFormat::Seed)),
            Err(Error::ProjectionFormatMismatch { .. })
        ));
        let m = open_as(&b, &clock, None).unwrap();
        assert_eq!(m.projection_format(), Some(ProjectionFormat::Amplihack));
        m.close().unwrap();
    }
}

#[test]
fn session_files_hold_what_amplihacks_session_manager_serialises() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open_with(&clock, amplihack());
        let s = m
            .create_session(NewSession {
                metadata: vec![("user".into(), JsonText::string("alice").unwrap())],
                config: SessionConfig {
                    max_retries: 5,
                    timeout: 120.5,
                    ..SessionConfig::default()
                },
                ..named("claude_session_1762597800_0a1b2c3d", "code analysis")
            })
            .unwrap();
        clock.advance_secs(2);
        s.record_activity("user_input", None).unwrap();
        s.record_command(
            CommandRun::failed("cargo test", "2 tests failed", Duration::from_millis(8123))
                .with_args(json!({"release": true})),
        )
        .unwrap();
        clock.advance_secs(3);
        s.record_command(CommandRun::succeeded(
            "cargo build",
            Duration::from_millis(250),
        ))
        .unwrap();
        s.save_checkpoint(Some("cp")).unwrap();
        m.close().unwrap();
        let id = "claude_session_1762597800_0a1b2c3d";
        let v = assert_written_as_amplihack_writes(&b, &format!("sessions/{id}.json"));
        assert_eq!(
            keys(&v),
            set(&[
                "session_id",
                "state",
                "config",
                "command_history",
                "statistics",
                "saved_at",
                "metadata"
            ])
        );
        assert_eq!(v["session_id"], id);
        assert_eq!(
            v["state"],
            json!({
                "session_id": id, "start_time": secs(0.0), "last_activity": secs(5.0),
                "is_active": true, "command_count": 2, "error_count": 1,
                "last_error": "2 tests failed", "metadata": {}
            }),
            "{}",
            b.name
        );
        let config = json!({
            "timeout": 120.5, "max_retries": 5, "retry_delay": 1.0, "heartbeat_interval": 30.0,
            "enable_logging": true, "log_level": "INFO", "session_id": id,
            "auto_save_interval": 60.0
        });
        assert_eq!(v["config"], config);
        // Floats stay floats, integers integers: SessionConfig(**config) and Python's
        // arithmetic see what amplihack itself would have written.
        assert!(v["config"]["retry_delay"].is_f64() && v["config"]["max_retries"].is_u64());
        assert_eq!(
            v["command_history"],
            json!([
                {"command": "cargo test", "timestamp": secs(2.0), "kwargs": {"release": true},
                 "result": "error", "duration": 8.123, "error": "2 tests failed"},
                {"command": "cargo build", "timestamp": secs(5.0), "kwargs": {},
                 "result": "success", "duration": 0.25}
            ])
        );
        assert_eq!(
            v["statistics"],
            json!({
                "session_id": id, "uptime": 5.0, "command_count": 2, "error_count": 1,
                "error_rate": 0.5, "is_active": true, "checkpoints": 1,
                "last_activity": secs(5.0), "time_since_activity": 0.0
            })
        );
        assert_eq!(v["saved_at"], json!(secs(5.0)));
        let entry = json!({
            "name": "code analysis", "created_at": secs(0.0), "last_accessed": secs(5.0),
            "last_saved": secs(5.0), "status": "active", "config": config,
            "metadata": {"user": "alice"}
        });
        assert_eq!(v["metadata"], entry);
        let r = assert_written_as_amplihack_writes(&b, "sessions/registry.json");
        assert_eq!(r, json!({"sessions": {id: entry}, "updated_at": secs(5.0)}));
        assert!(
            !b.exists(&format!("sessions/session_{id}.json")),
            "{}",
            b.name
        );
    }
}

#[test]
fn the_history_holds_the_last_100_commands_and_the_counts_all_of_them() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open_with(&clock, amplihack());
    let s = m.create_session(named("many", "many")).unwrap();
    for i in 0..150 {
        let run = if i % 50 == 0 {
            CommandRun::failed(format!("c{i}"), format!("e{i}"), Duration::ZERO)
        } else {
            CommandRun::succeeded(format!("c{i}"), Duration::ZERO)
        };
        s.record_command(run).unwrap();
    }
    m.close().unwrap();
    let v = b.json("sessions/many.json");
    let history = v["command_history"].as_array().unwrap();
    assert_eq!(history.len(), 100);
    assert_eq!(history[0]["command"], "c50");
    assert_eq!(history[99]["command"], "c149");
    assert_eq!(history[50]["error"], "e100");
    assert_eq!(v["state"]["command_count"], 150);
    assert_eq!(v["state"]["error_count"], 3);
    assert_eq!(v["state"]["last_error"], "e100");
    assert_eq!(v["statistics"]["error_rate"], json!(3.0 / 150.0));
}

#[test]
fn only_an_active_session_is_active_and_every_status_is_shown_as_it_is() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open_with(&clock, amplihack());
    let mk = |id: &str, timeout: u64| {
        m.create_session(NewSession {
            timeout_secs: timeout,
            ..named(id, id)
        })
        .unwrap()
    };
    let active = mk("active", 0);
    mk("paused", 0).pause().unwrap();
    mk("ended", 0).end().unwrap();
    mk("archived", 0).archive().unwrap();
    mk("idle", 60);
    clock.advance_secs(61);
    assert_eq!(m.expire_idle().unwrap().len(), 1);
    active.record_activity("x", None).unwrap();
    m.close().unwrap();
    let registry = b.json("sessions/registry.json");
    assert_eq!(
        keys(&registry["sessions"]),
        set(&["active", "paused", "ended", "idle"]),
        "amplihack drops archived sessions from its registry"
    );
    for (id, status) in [
        ("active", "active"),
        ("paused", "paused"),
        ("ended", "ended"),
        ("idle", "timed_out"),
    ] {
        let f = b.json(&format!("sessions/{id}.json"));
        let active = id == "active";
        assert_eq!(f["state"]["is_active"], active, "{id}");
        assert_eq!(f["statistics"]["is_active"], active, "{id}");
        assert_eq!(f["metadata"]["status"], status, "{id}");
        assert_eq!(registry["sessions"][id]["status"], status, "{id}");
    }
    assert_eq!(
        b.json("sessions/idle.json")["state"]["last_error"],
        "Session timeout after 60.0s"
    );
    let archived = format!("sessions/archive/archived_{T0}.json");
    let a = b.json(&archived);
    assert_eq!(a["state"]["is_active"], false);
    assert_eq!(a["metadata"]["status"], "archived");
    assert!(!b.exists("sessions/archived.json"));
}

#[test]
fn an_archived_session_moves_back_when_it_is_resumed() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open_with(&clock, amplihack());
        let s = m
            .create_session(named("claude_session_1_0a1b2c3d", "x"))
            .unwrap();
        s.archive().unwrap();
        m.flush_projections().unwrap();
        let archived = format!("sessions/archive/claude_session_1_0a1b2c3d_{T0}.json");
        assert!(b.exists(&archived), "{}", b.name);
        assert!(!b.exists("sessions/claude_session_1_0a1b2c3d.json"));
        clock.advance_secs(100);
        s.resume().unwrap();
        m.close().unwrap();
        assert!(!b.exists(&archived), "{}", b.name);
        assert!(
            b.exists("sessions/claude_session_1_0a1b2c3d.json"),
            "{}",
            b.name
        );
        assert!(
            b.json("sessions/registry.json")["sessions"]["claude_session_1_0a1b2c3d"].is_object()
        );
    }
}

#[test]
fn ids_that_would_be_the_registry_or_the_toolkit_log_get_no_such_file() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open_with(&clock, amplihack());
    m.create_session(named("registry", "r")).unwrap();
    m.create_session(named("toolkit", "t")).unwrap();
    m.close().unwrap();
    let registry = b.json("sessions/registry.json");
    assert_eq!(keys(&registry["sessions"]), set(&["registry", "toolkit"]));
    assert!(b.exists("sessions/toolkit.json"));
    assert!(!b.exists("logs/toolkit.log"));
    assert!(b.exists("logs/registry.log"));
}

#[test]
fn logs_are_amplihack_log_entries_and_appends_after_a_reopen_do_not_repeat_lines() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open_with(&clock, amplihack());
        let s = m.create_session(named("l1", "log")).unwrap();
        clock.advance_secs(1);
        s.record_command(CommandRun::failed(
            "make",
            "boom ü",
            Duration::from_millis(1500),
        ))
        .unwrap();
        m.close().unwrap();
        let m = b.open_with(&clock, amplihack());
        clock.advance_secs(1);
        m.get_session("l1")
            .unwrap()
            .record_activity("after", None)
            .unwrap();
        m.close().unwrap();
        let text = String::from_utf8(b.read("logs/l1.log")).unwrap();
        assert!(text.is_ascii(), "ensure_ascii: {text}");
        let lines = b.log_lines("logs/l1.log");
        assert_eq!(lines.len(), 3, "{}: {text}", b.name);
        for (i, l) in lines.iter().enumerate() {
            let order: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                order,
                [
                    "timestamp",
                    "level",
                    "message",
                    "session_id",
                    "component",
                    "operation",
                    "duration",
                    "metadata",
                    "error",
                    "traceback"
                ],
                "LogEntry's field order"
            );
            assert_eq!(l["session_id"], "l1");
            assert_eq!(l["timestamp"], json!(secs(i as f64)));
            assert_eq!(l["metadata"]["lsn"], json!(i + 1));
        }
        assert_eq!(lines[1]["level"], "ERROR");
        assert_eq!(lines[1]["duration"], json!(1.5));
        assert_eq!(lines[1]["error"], "boom ü");
        assert_eq!(lines[2]["operation"], "activity_recorded");
        // Each line is what Python's json.dumps writes for it.
        for (l, raw) in lines.iter().zip(text.lines()) {
            assert_eq!(pyjson::to_line(l).unwrap(), raw);
        }
    }
}

/// Every `amplihack` projection file: sessions, archive, registry, logs.
fn amplihack_files(b: &Backend) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["sessions", "sessions/archive", "logs"] {
        for name in b.list(dir) {
            let rel = format!("{dir}/{name}");
            if (name.ends_with(".json") || name.ends_with(".log")) && name != "toolkit.log" {
                out.push((rel.clone(), b.read(&rel)));
            }
        }
    }
    out
}

#[test]
fn after_a_power_cut_the_next_open_repairs_the_amplihack_files_from_the_log() {
    for seed in 0..12 {
        let b = Backend::mem();
        let mem = std::sync::Arc::clone(b.mem.as_ref().unwrap());
        let clock = clock();
        let m = b.open_with(&clock, amplihack());
        let s = m.create_session(named("c1", "crash")).unwrap();
        let t = m.create_session(named("c2", "crash too")).unwrap();
        m.flush_projections().unwrap();
        for i in 0..6 {
            clock.advance_secs(1);
            s.record_command(CommandRun::succeeded(format!("one{i}"), Duration::ZERO))
                .unwrap();
            t.record_activity("a", None).unwrap();
        }
        t.archive().unwrap();
        let image = mem.crash(seed, session_engine::storage::CrashMode::Whole);
        m.close().unwrap();
        let image: std::sync::Arc<dyn session_engine::Storage> = std::sync::Arc::new(image);
        let mut c = Backend::mem();
        c.storage = image;
        c.mem = None;
        let m = c.open_with(&clock, projections(None));
        assert_eq!(
            m.projection_format(),
            Some(ProjectionFormat::Amplihack),
            "seed {seed}"
        );
        m.flush_projections().unwrap();
        let repaired = amplihack_files(&c);
        m.rebuild_projections().unwrap();
        m.close().unwrap();
        assert_eq!(
            repaired,
            amplihack_files(&c),
            "seed {seed}: the files differ from a rebuild"
        );
        for (rel, bytes) in &repaired {
            if rel.ends_with(".json") {
                serde_json::from_slice::<Value>(bytes).unwrap_or_else(|e| panic!("{rel}: {e}"));
            }
        }
    }
}
