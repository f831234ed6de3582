//! The projection files, read the way a reader of the seeds' formats reads them: seed 001's
//! `registry.json` and `session_<id>.json`, the archive, the per-session logs (seed 001's
//! ToolkitLogger tests in this engine's terms), and log rotation.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use session_engine::manager::ListFilter;
use session_engine::state::LogLevel;
use session_engine::{
    CommandRun, JsonText, NewSession, ProjectionOptions, SessionConfig, SessionId, SessionManager,
};

fn named(id: &str) -> NewSession {
    NewSession {
        id: Some(SessionId::new(id).unwrap()),
        ..NewSession::default()
    }
}

/// Seed 001's timestamp: `2025-11-08T10:30:00Z`.
fn assert_seed_timestamp(v: &Value, expected_secs_after_t0: i64) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp {v} is not a string"));
    assert_eq!(s.len(), 20, "{s}");
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
        .unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(t.and_utc().timestamp(), T0 + expected_secs_after_t0, "{s}");
    // A reader that uses RFC 3339 gets the same instant in UTC.
    let r = chrono::DateTime::parse_from_rfc3339(s).unwrap();
    assert_eq!(r.offset().local_minus_utc(), 0);
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

#[test]
fn session_files_follow_seed_001_field_by_field() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m
            .create_session(NewSession {
                name: Some("analysis".into()),
                metadata: vec![("branch".into(), JsonText::string("main").unwrap())],
                ..named("abc123")
            })
            .unwrap();
        clock.advance_secs(5);
        s.record_activity("user_input", json(json!({"message": "Hello"})))
            .unwrap();
        clock.advance_secs(310);
        s.record_activity("api_call", None).unwrap();
        s.set_metadata("user", json!("alice@example.com")).unwrap();
        m.save_session(&s).unwrap();

        let f = b.json("sessions/session_abc123.json");
        // Seed 001's fields, with their types.
        assert_eq!(f["session_id"], json!("abc123"));
        assert_seed_timestamp(&f["created_at"], 0);
        assert_seed_timestamp(&f["last_activity"], 315);
        assert_eq!(f["status"], json!("active"));
        assert!(f["timeout_seconds"].is_u64());
        assert_eq!(f["timeout_seconds"], json!(3600));
        assert_eq!(
            f["metadata"],
            json!({"branch": "main", "user": "alice@example.com"})
        );
        let log = f["activity_log"].as_array().unwrap();
        assert_eq!(log.len(), 2);
        for entry in log {
            assert_eq!(keys(entry), set(&["action", "timestamp", "details"]));
            assert!(entry["action"].is_string());
            assert!(entry["details"].is_object());
        }
        assert_eq!(log[0]["action"], json!("user_input"));
        assert_seed_timestamp(&log[0]["timestamp"], 5);
        assert_eq!(log[0]["details"], json!({"message": "Hello"}));
        assert_eq!(
            log[1]["details"],
            json!({}),
            "no details is an empty object"
        );
        // The fields this engine adds, documented at `SessionFile`.
        let seed = set(&[
            "session_id",
            "created_at",
            "last_activity",
            "status",
            "timeout_seconds",
            "metadata",
            "activity_log",
        ]);
        let added: BTreeSet<String> = keys(&f).difference(&seed).cloned().collect();
        assert_eq!(
            added,
            set(&[
                "name",
                "agent",
                "working_dir",
                "config",
                "command_history",
                "decisions",
                "checkpoints"
            ]),
            "{}",
            b.name
        );
        assert_eq!(f["name"], json!("analysis"));
        assert_eq!(f["agent"], Value::Null);
        assert_eq!(
            f["config"],
            json!({"timeout": 300.0, "max_retries": 3, "retry_delay": 1.0,
                   "heartbeat_interval": 30.0, "enable_logging": true,
                   "log_level": "INFO", "auto_save_interval": 60.0})
        );
        m.close().unwrap();
    }
}

#[test]
fn the_added_lists_have_their_documented_entries() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    s.record_command(
        CommandRun::failed("build", "exit 1", Duration::from_millis(1500))
            .with_args(json!({"target": "all"})),
    )
    .unwrap();
    s.record_command(CommandRun::succeeded("ls", Duration::ZERO))
        .unwrap();
    s.log_decision("use rust", "safety", None).unwrap();
    s.save_checkpoint(Some("before")).unwrap();
    flush(&m);
    let f = b.json("sessions/session_s.json");
    assert_eq!(
        f["command_history"][0],
        json!({"command": "build", "args": {"target": "all"}, "timestamp": "2025-11-08T10:30:00Z",
               "success": false, "error": "exit 1", "duration_ms": 1500})
    );
    assert_eq!(f["command_history"][1]["args"], json!({}));
    assert_eq!(f["command_history"][1]["error"], Value::Null);
    assert_eq!(
        f["decisions"][0],
        json!({"what": "use rust", "why": "safety", "alternatives": null,
               "timestamp": "2025-11-08T10:30:00Z"})
    );
    assert_eq!(
        f["checkpoints"][0],
        json!({"index": 0, "label": "before", "created_at": "2025-11-08T10:30:00Z"})
    );
    assert!(
        f.get("origin").is_none(),
        "origin only for imports and clones"
    );
    m.clone_session("s", Some("c")).unwrap();
    flush(&m);
    assert_eq!(
        b.json("sessions/session_c.json")["origin"],
        json!({"cloned": {"source": "s"}})
    );
}

#[test]
fn every_status_is_written_as_documented() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    m.create_session(named("active")).unwrap();
    m.create_session(named("paused")).unwrap().pause().unwrap();
    m.create_session(named("ended")).unwrap().end().unwrap();
    m.create_session(NewSession {
        timeout_secs: 1,
        ..named("timed_out")
    })
    .unwrap();
    m.create_session(named("archived"))
        .unwrap()
        .archive()
        .unwrap();
    clock.advance_secs(2);
    m.expire_idle().unwrap();
    flush(&m);
    let reg = b.json("sessions/registry.json");
    for st in ["active", "paused", "ended", "timed_out"] {
        assert_eq!(
            b.json(&format!("sessions/session_{st}.json"))["status"],
            json!(st)
        );
        assert_eq!(reg["sessions"][st]["status"], json!(st));
    }
    assert_eq!(
        b.json("sessions/archive/session_archived.json")["status"],
        json!("archived")
    );
    assert_eq!(reg["sessions"]["archived"]["status"], json!("archived"));
}

#[test]
fn a_timeout_that_passed_while_no_writer_ran_is_recorded_at_the_next_open() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        m.create_session(NewSession {
            timeout_secs: 1,
            ..named("idle")
        })
        .unwrap();
        m.create_session(named("busy")).unwrap();
        m.close().unwrap();
        clock.advance_secs(2);
        // No watchdog ran in between (the test engines have none): the next open records
        // the expiry before anything reads or decides on the session.
        let m = b.open(&clock);
        flush(&m);
        let file = b.json("sessions/session_idle.json");
        let reg = b.json("sessions/registry.json");
        assert_eq!(file["status"], json!("timed_out"), "{}", b.name);
        assert_eq!(reg["sessions"]["idle"]["status"], json!("timed_out"));
        assert_eq!(reg["sessions"]["busy"]["status"], json!("active"));
        let idle = m.get_session("idle").unwrap();
        assert!(!idle.is_active());
        assert!(idle.record_activity("x", None).is_err());
        m.close().unwrap();
    }
}

#[test]
fn the_watchdog_of_a_running_engine_shows_a_timeout_in_the_files() {
    let b = Backend::mem();
    let clock = clock();
    let mut o = manager_options(&b.storage, &clock);
    o.engine.watchdog_interval = Some(Duration::from_millis(5));
    let m = SessionManager::open(&b.dir, o).unwrap();
    m.create_session(NewSession {
        timeout_secs: 1,
        ..named("idle")
    })
    .unwrap();
    flush(&m);
    assert_eq!(
        b.json("sessions/session_idle.json")["status"],
        json!("active")
    );
    clock.advance_secs(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while m.get_session("idle").unwrap().status().unwrap() != session_engine::Status::TimedOut {
        assert!(
            std::time::Instant::now() < deadline,
            "the watchdog never ran"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    flush(&m);
    assert_eq!(
        b.json("sessions/session_idle.json")["status"],
        json!("timed_out")
    );
    assert_eq!(
        b.json("sessions/registry.json")["sessions"]["idle"]["status"],
        json!("timed_out")
    );
}

#[test]
fn the_registry_lists_every_session_in_seed_001_format() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        m.create_session(named("abc123")).unwrap();
        clock.advance_secs(60);
        m.create_session(NewSession {
            timeout_secs: 7200,
            ..named("def456")
        })
        .unwrap();
        m.archive_session("def456").unwrap();
        flush(&m);
        let reg = b.json("sessions/registry.json");
        assert_eq!(keys(&reg), set(&["sessions"]));
        let sessions = &reg["sessions"];
        assert_eq!(keys(sessions), set(&["abc123", "def456"]));
        for (id, created, status, timeout) in [
            ("abc123", 0, "active", 3600),
            ("def456", 60, "archived", 7200),
        ] {
            let e = &sessions[id];
            assert_eq!(
                keys(e),
                set(&[
                    "created_at",
                    "status",
                    "timeout_seconds",
                    "name",
                    "last_activity"
                ])
            );
            assert_seed_timestamp(&e["created_at"], created);
            assert_eq!(e["status"], json!(status));
            assert_eq!(e["timeout_seconds"], json!(timeout));
            assert!(e["timeout_seconds"].is_u64());
            assert_eq!(e["name"], json!(id));
        }
        m.close().unwrap();
    }
}

#[test]
fn archiving_moves_the_session_file_and_resuming_moves_it_back() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m.create_session(named("old789")).unwrap();
        s.record_activity("a", None).unwrap();
        flush(&m);
        assert!(b.exists("sessions/session_old789.json"));
        assert!(!b.exists("sessions/archive/session_old789.json"));
        m.archive_session("old789").unwrap();
        flush(&m);
        assert!(!b.exists("sessions/session_old789.json"), "{}", b.name);
        let f = b.json("sessions/archive/session_old789.json");
        assert_eq!(f["status"], json!("archived"));
        assert_eq!(f["activity_log"].as_array().unwrap().len(), 1);
        assert_eq!(
            m.session_file("old789").unwrap(),
            b.path("sessions/archive/session_old789.json")
        );
        m.resume_session("old789").unwrap();
        flush(&m);
        assert!(b.exists("sessions/session_old789.json"));
        assert!(!b.exists("sessions/archive/session_old789.json"));
        m.close().unwrap();
    }
}

#[test]
fn the_registry_stays_in_sync_with_the_session_files() {
    let b = Backend::file();
    let clock = clock();
    let m = b.open(&clock);
    for i in 0..12 {
        let s = m.create_session(named(&format!("s{i:02}"))).unwrap();
        match i % 4 {
            0 => drop(s.pause().unwrap()),
            1 => drop(s.end().unwrap()),
            2 => m.archive_session(s.session_id().as_str()).unwrap(),
            _ => drop(s.record_activity("x", None).unwrap()),
        }
    }
    clock.advance_secs(90 * 86_400);
    m.create_session(named("fresh")).unwrap();
    m.cleanup_old_sessions(30).unwrap();
    flush(&m);
    let reg = b.json("sessions/registry.json");
    let registry: BTreeSet<String> = keys(&reg["sessions"]);
    let mut files = BTreeSet::new();
    for (dir, archived) in [("sessions", false), ("sessions/archive", true)] {
        for name in b.list(dir) {
            let Some(id) = name
                .strip_prefix("session_")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let f = b.json(&format!("{dir}/{name}"));
            assert_eq!(f["session_id"], json!(id));
            assert_eq!(f["status"], reg["sessions"][id]["status"], "{id}");
            assert_eq!(f["status"] == json!("archived"), archived, "{id} in {dir}");
            assert!(files.insert(id.to_string()), "{id} in both places");
        }
    }
    assert_eq!(registry, files);
    assert_eq!(registry.len(), m.list_sessions(ListFilter::default()).len());
    m.close().unwrap();
}

#[test]
fn json_text_survives_the_round_trip_through_the_files() {
    let b = Backend::file();
    let clock = clock();
    let m = b.open(&clock);
    let tricky = json!({
        "quote": "she said \"hi\"", "newline": "a\nb", "unicode": "żółć ✓ 日本",
        "nested": {"list": [1, 2.5, -3, null, true], "empty": {}}, "big": 12345678901234u64
    });
    let s = m
        .create_session(NewSession {
            name: Some("naïve \"name\"".into()),
            ..named("s")
        })
        .unwrap();
    s.set_metadata("tricky", tricky.clone()).unwrap();
    s.set_metadata("clé", json!("valeur")).unwrap();
    s.record_activity("weird", json(tricky.clone())).unwrap();
    flush(&m);
    let f = b.json("sessions/session_s.json");
    assert_eq!(f["metadata"]["tricky"], tricky);
    assert_eq!(f["metadata"]["clé"], json!("valeur"));
    assert_eq!(f["activity_log"][0]["details"], tricky);
    assert_eq!(f["name"], json!("naïve \"name\""));
    let lines = b.log_lines("logs/session_s.log");
    assert_eq!(lines.last().unwrap()["details"]["details"], tricky);
    m.close().unwrap();
}

// ---- Per-session logs (seed 001's ToolkitLogger) ----

const LINE_FIELDS: [&str; 8] = [
    "timestamp",
    "level",
    "logger",
    "session_id",
    "event",
    "message",
    "lsn",
    "details",
];

#[test]
fn the_session_log_is_created_and_written_as_json_lines() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m.create_session(named("abc123")).unwrap();
        clock.advance_micros(5_000_123);
        s.record_activity("user_input", json(json!({"message": "Hello"})))
            .unwrap();
        s.set_metadata("user", json!("alice")).unwrap();
        s.record_command(
            CommandRun::failed("deploy", "permission denied", Duration::from_millis(7))
                .with_args(json!({"env": "prod"})),
        )
        .unwrap();
        s.log_decision(
            "Archive session",
            "Session timeout reached",
            Some("Extend timeout, delete session"),
        )
        .unwrap();
        s.save_checkpoint(Some("cp")).unwrap();
        s.pause().unwrap();
        flush(&m);
        let lines = b.log_lines("logs/session_abc123.log");
        let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            events,
            [
                "session_created",
                "activity_recorded",
                "metadata_set",
                "command_recorded",
                "decision_logged",
                "checkpoint_saved",
                "status_changed"
            ],
            "{}",
            b.name
        );
        let mut last_lsn = 0;
        for l in &lines {
            assert_eq!(keys(l), set(&LINE_FIELDS));
            assert_eq!(l["logger"], json!("session_engine.session"));
            assert_eq!(l["session_id"], json!("abc123"));
            assert!(l["message"].is_string());
            let lsn = l["lsn"].as_u64().unwrap();
            assert!(lsn > last_lsn, "lsn increases");
            last_lsn = lsn;
            let ts = l["timestamp"].as_str().unwrap();
            chrono::DateTime::parse_from_rfc3339(ts).unwrap();
            assert!(ts.ends_with('Z'));
        }
        assert_eq!(lines[1]["timestamp"], json!("2025-11-08T10:30:05.000123Z"));
        assert_eq!(lines[1]["level"], json!("INFO"));
        assert_eq!(
            lines[1]["details"],
            json!({"action": "user_input", "details": {"message": "Hello"}})
        );
        // log_error: a failed command is an ERROR line carrying the error text.
        assert_eq!(lines[3]["level"], json!("ERROR"));
        assert_eq!(lines[3]["details"]["error"], json!("permission denied"));
        assert_eq!(lines[3]["details"]["args"], json!({"env": "prod"}));
        assert!(
            lines[3]["message"]
                .as_str()
                .unwrap()
                .contains("permission denied")
        );
        // log_decision: what, why, alternatives for the audit trail.
        assert_eq!(
            lines[4]["details"],
            json!({"what": "Archive session", "why": "Session timeout reached",
                   "alternatives": "Extend timeout, delete session"})
        );
        assert_eq!(lines[6]["details"], json!({"status": "paused"}));
        m.close().unwrap();
    }
}

#[test]
fn expiry_and_multi_session_events_are_logged_in_each_session() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    for id in ["a", "b"] {
        m.create_session(NewSession {
            timeout_secs: 10,
            ..named(id)
        })
        .unwrap();
    }
    clock.advance_secs(11);
    m.expire_idle().unwrap();
    clock.advance_secs(40 * 86_400);
    m.cleanup_old_sessions(30).unwrap();
    flush(&m);
    for id in ["a", "b"] {
        let lines = b.log_lines(&format!("logs/session_{id}.log"));
        let tail: Vec<(&str, &str)> = lines[1..]
            .iter()
            .map(|l| (l["event"].as_str().unwrap(), l["level"].as_str().unwrap()))
            .collect();
        assert_eq!(
            tail,
            [
                ("sessions_expired", "WARNING"),
                ("sessions_archived", "INFO")
            ]
        );
    }
}

#[test]
fn logging_follows_the_session_config() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let quiet = m
        .create_session(NewSession {
            config: SessionConfig {
                enable_logging: false,
                ..SessionConfig::default()
            },
            ..named("quiet")
        })
        .unwrap();
    let errors_only = m
        .create_session(NewSession {
            config: SessionConfig {
                log_level: LogLevel::Error,
                ..SessionConfig::default()
            },
            ..named("errors")
        })
        .unwrap();
    for s in [&quiet, &errors_only] {
        s.record_activity("a", None).unwrap();
        s.record_command(CommandRun::failed("x", "bad", Duration::ZERO))
            .unwrap();
    }
    flush(&m);
    assert!(!b.exists("logs/session_quiet.log"));
    assert!(b.exists("sessions/session_quiet.json"));
    let lines = b.log_lines("logs/session_errors.log");
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["session_created", "command_recorded"],
        "the creation always starts the log"
    );
}

#[test]
fn log_rotation_works_if_configured() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open_with(
            &clock,
            ProjectionOptions {
                log_max_bytes: Some(2048),
                ..fast_projections()
            },
        );
        let s = m.create_session(named("r")).unwrap();
        for i in 0..60 {
            s.record_activity("step", json(json!({"i": i}))).unwrap();
            if i % 7 == 0 {
                flush(&m);
            }
        }
        flush(&m);
        let mut parts: Vec<(u64, String)> = b
            .list("logs/archive")
            .into_iter()
            .map(|n| {
                let num = n
                    .strip_prefix("session_r.")
                    .and_then(|n| n.strip_suffix(".log"))
                    .unwrap()
                    .parse()
                    .unwrap();
                (num, n)
            })
            .collect();
        parts.sort();
        assert!(parts.len() >= 2, "{}: {parts:?}", b.name);
        let mut lsns = Vec::new();
        for (_, name) in &parts {
            assert!(b.read(&format!("logs/archive/{name}")).len() <= 2048 + 1024);
            for l in b.log_lines(&format!("logs/archive/{name}")) {
                lsns.push(l["lsn"].as_u64().unwrap());
            }
        }
        for l in b.log_lines("logs/session_r.log") {
            lsns.push(l["lsn"].as_u64().unwrap());
        }
        assert_eq!(lsns, (1..=61).collect::<Vec<_>>(), "no gap, no repeat");
        m.close().unwrap();
        // Reopening continues the current part without repeating lines.
        let m = b.open_with(
            &clock,
            ProjectionOptions {
                log_max_bytes: Some(2048),
                ..fast_projections()
            },
        );
        m.get_session("r")
            .unwrap()
            .record_activity("after", None)
            .unwrap();
        flush(&m);
        let mut lsns = Vec::new();
        let mut names = b.list("logs/archive");
        names.sort_by_key(|n| {
            n.trim_start_matches("session_r.")
                .trim_end_matches(".log")
                .parse::<u64>()
                .unwrap()
        });
        for name in names {
            for l in b.log_lines(&format!("logs/archive/{name}")) {
                lsns.push(l["lsn"].as_u64().unwrap());
            }
        }
        for l in b.log_lines("logs/session_r.log") {
            lsns.push(l["lsn"].as_u64().unwrap());
        }
        assert_eq!(lsns, (1..=62).collect::<Vec<_>>());
        m.close().unwrap();
    }
}

/// `ManagerOptions::default()`, as the library's example opens a directory: the seed
/// format's files are written, as the tools the engine replaces expect.
#[test]
fn the_default_manager_options_write_the_projection_files() {
    let dir = tempfile::tempdir().unwrap();
    let m =
        session_engine::SessionManager::open(dir.path(), session_engine::ManagerOptions::default())
            .unwrap();
    let s = m
        .create_session(session_engine::NewSession::default())
        .unwrap();
    s.record_activity("user_input", Some(json!({"message": "Hello"})))
        .unwrap();
    let id = s.session_id().to_string();
    m.close().unwrap();
    let file = dir.path().join(format!("sessions/session_{id}.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v["activity_log"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(dir.path().join("sessions/registry.json").exists());
}
