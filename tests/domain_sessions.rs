//! The session domain: seed 001's ClaudeSession and SessionManager test lists and its
//! integration tests, in this engine's terms, plus seed 000's command history,
//! statistics and checkpoints, clones, and point-in-time state.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use session_engine::manager::ListFilter;
use session_engine::{
    Command, CommandRun, Error, EventBody, Lsn, NewSession, SessionConfig, SessionId, Status,
    Timestamp,
};

fn named(id: &str) -> NewSession {
    NewSession {
        id: Some(SessionId::new(id).unwrap()),
        ..NewSession::default()
    }
}

fn with_timeout(id: &str, secs: u64) -> NewSession {
    NewSession {
        timeout_secs: secs,
        ..named(id)
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(T0 + secs)
}

// ---- ClaudeSession (seed 001) ----

#[test]
fn sessions_get_unique_time_ordered_ids() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let a = m.create_session(NewSession::default()).unwrap();
    let c = m.create_session(NewSession::default()).unwrap();
    assert_ne!(a.session_id(), c.session_id());
    for s in [&a, &c] {
        let u = uuid::Uuid::parse_str(s.session_id().as_str()).unwrap();
        assert_eq!(u.get_version_num(), 7, "{}", s.session_id());
    }
    assert!(a.session_id() < c.session_id(), "v7 ids sort by creation");
    // A caller's own id is kept.
    let mine = m.create_session(named("abc123")).unwrap();
    assert_eq!(mine.session_id().as_str(), "abc123");
}

#[test]
fn creation_and_activity_timestamps_are_tracked() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("abc123")).unwrap();
    assert_eq!(s.created_at().unwrap(), at(0));
    assert_eq!(s.last_activity().unwrap(), at(0));
    clock.advance_secs(5);
    s.record_activity("user_input", json!({"message": "Hello"}).into())
        .unwrap();
    assert_eq!(s.created_at().unwrap(), at(0));
    assert_eq!(s.last_activity().unwrap(), at(5));
    let snap = s.snapshot().unwrap();
    assert_eq!(snap.body.activity_log.len(), 1);
    assert_eq!(snap.body.activity_log[0].timestamp, at(5));
    assert_eq!(&*snap.body.activity_log[0].action, "user_input");
    assert_eq!(
        snap.body.activity_log[0].details.text().unwrap().to_value(),
        json!({"message": "Hello"})
    );
}

#[test]
fn a_session_times_out_after_its_inactivity_timeout() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(with_timeout("t", 60)).unwrap();
    clock.advance_secs(59);
    assert!(s.is_active());
    clock.advance_secs(1);
    // Right between watchdog ticks: the status is still recorded as active.
    assert!(!s.is_active());
    assert_eq!(s.status().unwrap(), Status::Active);
    let err = s.record_activity("late", None).unwrap_err();
    assert!(matches!(err, Error::InvalidState { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    // The watchdog's tick records the expiry as an event.
    let expired = m.expire_idle().unwrap();
    assert_eq!(expired, vec![s.session_id().clone()]);
    assert_eq!(s.status().unwrap(), Status::TimedOut);
    assert!(m.expire_idle().unwrap().is_empty());
    // A session with timeout 0 never times out.
    let forever = m.create_session(with_timeout("forever", 0)).unwrap();
    clock.advance_secs(10 * 365 * 86_400);
    assert!(forever.is_active());
}

#[test]
fn the_watchdog_records_expiry_on_its_own() {
    let b = Backend::mem();
    let clock = clock();
    let mut o = manager_options(&b.storage, &clock);
    o.engine.watchdog_interval = Some(Duration::from_millis(5));
    let m = session_engine::SessionManager::open(&b.dir, o).unwrap();
    let s = m.create_session(with_timeout("w", 60)).unwrap();
    clock.advance_secs(61);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.status().unwrap() != Status::TimedOut {
        assert!(std::time::Instant::now() < deadline, "watchdog never fired");
        std::thread::sleep(Duration::from_millis(5));
    }
    m.close().unwrap();
}

#[test]
fn is_active_follows_the_status() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    assert!(s.is_active());
    s.pause().unwrap();
    assert!(!s.is_active());
    assert_eq!(s.status().unwrap(), Status::Paused);
    s.resume().unwrap();
    assert!(s.is_active());
    s.end().unwrap();
    assert!(!s.is_active());
    assert_eq!(s.status().unwrap(), Status::Ended);
    // Transitions that make no sense are refused.
    assert!(matches!(s.pause(), Err(Error::InvalidState { .. })));
    assert!(matches!(s.end(), Err(Error::InvalidState { .. })));
}

#[test]
fn metadata_can_be_set_read_and_removed() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    s.set_metadata("user", json!("alice@example.com")).unwrap();
    s.set_metadata("limits", json!({"tokens": 10, "tags": ["a", "b"]}))
        .unwrap();
    assert_eq!(
        s.get_metadata("user").unwrap(),
        Some(json!("alice@example.com"))
    );
    assert_eq!(
        s.get_metadata("limits").unwrap(),
        Some(json!({"tokens": 10, "tags": ["a", "b"]}))
    );
    assert_eq!(s.get_metadata("missing").unwrap(), None);
    assert_eq!(
        s.get_metadata_or("missing", json!("default")).unwrap(),
        json!("default")
    );
    s.set_metadata("user", json!("bob")).unwrap();
    assert_eq!(s.get_metadata("user").unwrap(), Some(json!("bob")));
    s.remove_metadata("user").unwrap();
    assert_eq!(s.get_metadata("user").unwrap(), None);
    assert!(matches!(
        s.remove_metadata("user"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.set_metadata("", json!(1)),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(s.metadata().unwrap().len(), 1);
}

#[test]
fn activity_on_an_inactive_session_is_refused_and_changes_nothing() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    for stop in [
        |s: &session_engine::ClaudeSession| s.pause(),
        |s: &session_engine::ClaudeSession| s.end(),
        |s: &session_engine::ClaudeSession| s.archive(),
    ] {
        if s.status().unwrap() != Status::Active {
            s.resume().unwrap();
        }
        stop(&s).unwrap();
        let before = m.state();
        let err = s.record_activity("x", None).unwrap_err();
        assert!(matches!(err, Error::InvalidState { .. }), "{err}");
        assert!(err.is_refusal());
        let err = s
            .record_command(CommandRun::succeeded("ls", Duration::from_millis(1)))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidState { .. }), "{err}");
        assert_eq!(*m.state(), *before, "a refused command changed the state");
    }
}

#[test]
fn invalid_session_ids_are_refused() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    for bad in ["", "../etc/passwd", "a/b", ".hidden", "-rf", "a b", "é"] {
        assert!(
            matches!(m.get_session(bad), Err(Error::InvalidInput { .. })),
            "{bad:?}"
        );
        assert!(SessionId::new(bad).is_err());
        assert!(matches!(
            m.clone_session("x", Some(bad)),
            Err(Error::InvalidInput { .. })
        ));
    }
    assert!(matches!(
        m.get_session(&"x".repeat(129)),
        Err(Error::InvalidInput { .. })
    ));
    m.create_session(named("dup")).unwrap();
    let lsn = m.last_lsn();
    assert!(matches!(
        m.create_session(named("dup")),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(m.last_lsn(), lsn);
}

#[test]
fn creation_validates_names_timeouts_and_config() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let bad = [
        NewSession {
            name: Some("x\u{7}y".into()),
            ..NewSession::default()
        },
        NewSession {
            timeout_secs: u64::MAX,
            ..NewSession::default()
        },
        NewSession {
            config: SessionConfig {
                retry_delay: -1.0,
                ..SessionConfig::default()
            },
            ..NewSession::default()
        },
    ];
    for new in bad {
        let err = m.create_session(new).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
    assert_eq!(m.last_lsn(), Lsn::ZERO);
    let s = m
        .create_session(NewSession {
            name: Some("analysis_task".into()),
            agent: Some("claude".into()),
            working_dir: Some("/project".into()),
            timeout_secs: 1800,
            config: SessionConfig {
                timeout: 1800.0,
                max_retries: 5,
                ..SessionConfig::default()
            },
            metadata: vec![(
                "branch".into(),
                session_engine::JsonText::string("main").unwrap(),
            )],
            ..NewSession::default()
        })
        .unwrap();
    let snap = s.snapshot().unwrap();
    assert_eq!(&*snap.name, "analysis_task");
    assert_eq!(snap.config.max_retries, 5);
    assert_eq!(s.get_metadata("branch").unwrap(), Some(json!("main")));
}

// ---- Command history, statistics, decisions (seed 000) ----

#[test]
fn command_history_and_statistics_count_what_was_recorded() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    s.record_command(
        CommandRun::succeeded("analyze_code", Duration::from_millis(120))
            .with_args(json!({"path": "/project"})),
    )
    .unwrap();
    clock.advance_secs(2);
    s.record_command(CommandRun::failed(
        "complex_operation",
        "boom",
        Duration::from_millis(5),
    ))
    .unwrap();
    s.record_command(CommandRun::succeeded(
        "safe_alternative",
        Duration::from_secs(1),
    ))
    .unwrap();
    s.record_activity("note", None).unwrap();
    s.save_checkpoint(None).unwrap();
    s.log_decision("Archive session", "timeout reached", Some("extend"))
        .unwrap();
    let history = s.get_command_history(2).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(&*history[0].command, "complex_operation");
    assert!(!history[0].success);
    assert_eq!(history[0].error.as_deref(), Some("boom"));
    assert_eq!(&*history[1].command, "safe_alternative");
    assert_eq!(history[1].duration_ms, 1000);
    let all = s.get_command_history(10).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[0].args.as_ref().unwrap().to_value(),
        json!({"path": "/project"})
    );
    clock.advance_secs(8);
    let st = s.get_statistics().unwrap();
    assert_eq!(st.command_count, 3);
    assert_eq!(st.error_count, 1);
    assert!((st.error_rate - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(st.activity_count, 1);
    assert_eq!(st.checkpoint_count, 1);
    assert_eq!(st.decision_count, 1);
    assert_eq!(st.uptime_secs, 10.0);
    assert_eq!(st.secs_since_activity, 8.0);
    assert!(st.is_active);
    let d = &s.snapshot().unwrap().body.decisions[0];
    assert_eq!((&*d.what, &*d.why), ("Archive session", "timeout reached"));
    assert_eq!(d.alternatives.as_deref(), Some("extend"));
    assert!(matches!(
        s.log_decision(" ", "why", None),
        Err(Error::InvalidInput { .. })
    ));
}

// ---- Checkpoints (seed 000) ----

#[test]
fn restoring_a_checkpoint_returns_the_session_to_it_and_the_log_keeps_everything() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m.create_session(named("s")).unwrap();
        assert!(matches!(
            s.restore_checkpoint(None),
            Err(Error::InvalidState { .. })
        ));
        s.record_activity("phase1", None).unwrap();
        s.set_metadata("phase", json!(1)).unwrap();
        assert_eq!(s.save_checkpoint(Some("safe")).unwrap(), 0);
        s.record_activity("risky", None).unwrap();
        s.set_metadata("phase", json!(2)).unwrap();
        s.set_metadata("scratch", json!(true)).unwrap();
        s.record_command(CommandRun::failed("op", "failed", Duration::ZERO))
            .unwrap();
        assert_eq!(s.save_checkpoint(None).unwrap(), 1);
        s.pause().unwrap();
        // Restore the last checkpoint (index 1), then the first one by index.
        assert_eq!(s.restore_checkpoint(None).unwrap(), 1);
        assert_eq!(s.status().unwrap(), Status::Active);
        assert_eq!(s.get_metadata("phase").unwrap(), Some(json!(2)));
        assert_eq!(s.restore_checkpoint(Some(0)).unwrap(), 0);
        let snap = s.snapshot().unwrap();
        assert_eq!(s.get_metadata("phase").unwrap(), Some(json!(1)));
        assert_eq!(s.get_metadata("scratch").unwrap(), None);
        assert_eq!(snap.body.activity_log.len(), 1);
        assert_eq!(snap.body.commands.len(), 0);
        assert_eq!(snap.body.command_errors, 0);
        assert_eq!(snap.checkpoints.len(), 2, "checkpoints themselves are kept");
        assert!(matches!(
            s.restore_checkpoint(Some(2)),
            Err(Error::NotFound { .. })
        ));
        s.record_command(CommandRun::succeeded("safe_alternative", Duration::ZERO))
            .unwrap();
        // The log still has the risky phase and both restores.
        let mut kinds = Vec::new();
        m.engine()
            .read_log(Lsn(1), m.last_lsn(), |_, e| {
                kinds.push(e.body.type_name());
                Ok(true)
            })
            .unwrap();
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "checkpoint_restored")
                .count(),
            2
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "activity_recorded").count(),
            2
        );
        // Replay after reopening gives the same state.
        let live = m.state();
        m.close().unwrap();
        let m = b.open(&clock);
        assert_eq!(*m.state(), *live, "{}", b.name);
        m.close().unwrap();
    }
}

// ---- SessionManager (seed 001) ----

#[test]
fn sessions_are_listed_all_by_status_and_active_only() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let ids = |v: Vec<Arc<session_engine::Session>>| {
        v.iter().map(|s| s.id.to_string()).collect::<Vec<_>>()
    };
    m.create_session(named("a-active")).unwrap();
    m.create_session(named("b-paused"))
        .unwrap()
        .pause()
        .unwrap();
    m.create_session(named("c-ended")).unwrap().end().unwrap();
    m.create_session(named("d-archived")).unwrap();
    m.archive_session("d-archived").unwrap();
    m.create_session(with_timeout("e-idle", 10)).unwrap();
    clock.advance_secs(11);
    assert_eq!(
        ids(m.list_sessions(ListFilter::default())),
        ["a-active", "b-paused", "c-ended", "d-archived", "e-idle"]
    );
    let by = |st| {
        ids(m.list_sessions(ListFilter {
            status: Some(st),
            active_only: false,
        }))
    };
    assert_eq!(by(Status::Active), ["a-active", "e-idle"]);
    assert_eq!(by(Status::Paused), ["b-paused"]);
    assert_eq!(by(Status::Ended), ["c-ended"]);
    assert_eq!(by(Status::Archived), ["d-archived"]);
    // `e-idle` is past its timeout: recorded as active, but not active.
    let active = ListFilter {
        status: None,
        active_only: true,
    };
    assert_eq!(ids(m.list_sessions(active)), ["a-active"]);
    m.expire_idle().unwrap();
    assert_eq!(by(Status::TimedOut), ["e-idle"]);
}

#[test]
fn archive_cleanup_and_resume_follow_the_seeds() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    m.create_session(named("old")).unwrap();
    m.create_session(named("old-ended")).unwrap().end().unwrap();
    clock.advance_secs(40 * 86_400);
    let fresh = m.create_session(named("fresh")).unwrap();
    assert!(matches!(
        m.archive_session("nope"),
        Err(Error::NotFound { .. })
    ));
    let archived = m.cleanup_old_sessions(30).unwrap();
    assert_eq!(
        archived.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["old", "old-ended"]
    );
    assert!(m.cleanup_old_sessions(30).unwrap().is_empty());
    assert_eq!(fresh.status().unwrap(), Status::Active);
    assert!(matches!(
        m.archive_session("old"),
        Err(Error::InvalidState { .. })
    ));
    // Resume brings an archived session back; an active one is returned unchanged.
    let old = m.resume_session("old").unwrap();
    assert_eq!(old.status().unwrap(), Status::Active);
    let lsn = m.last_lsn();
    m.resume_session("fresh").unwrap();
    assert_eq!(m.last_lsn(), lsn);
    // A session past its timeout whose expiry is not recorded yet is expired, then resumed.
    let idle = m.create_session(with_timeout("idle", 5)).unwrap();
    clock.advance_secs(6);
    assert!(!idle.is_active());
    m.resume_session("idle").unwrap();
    assert!(idle.is_active());
    assert!(matches!(
        m.resume_session("missing"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn loading_a_session_that_does_not_exist_is_not_found() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let err = m.get_session("missing").unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotFound {
                kind: "session",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "session not found: missing");
}

#[test]
fn a_missing_data_directory_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/.claude/runtime");
    let clock = clock();
    let storage: Arc<dyn session_engine::Storage> = Arc::new(session_engine::FileStorage::new());
    let m = session_engine::SessionManager::open(&dir, manager_options(&storage, &clock)).unwrap();
    let s = m.create_session(named("s")).unwrap();
    flush(&m);
    assert!(dir.join("sessions/session_s.json").exists());
    assert!(s.is_active());
    m.close().unwrap();
    // A read-only open of a directory that does not exist is an error, not a creation.
    let missing = tmp.path().join("nowhere");
    let err = session_engine::SessionManager::open_read_only(&missing, options(storage, &clock))
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!missing.exists());
}

#[test]
fn a_read_only_manager_reads_and_refuses_writes() {
    let b = Backend::file();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    s.record_activity("a", None).unwrap();
    let ro = session_engine::SessionManager::open_read_only(
        &b.dir,
        options(Arc::clone(&b.storage), &clock),
    )
    .unwrap();
    let r = ro.get_session("s").unwrap();
    assert_eq!(r.snapshot().unwrap().body.activity_log.len(), 1);
    assert!(matches!(r.record_activity("b", None), Err(Error::ReadOnly)));
    assert!(matches!(
        ro.create_session(NewSession::default()),
        Err(Error::ReadOnly)
    ));
    assert!(ro.projection_status().is_none());
    ro.close().unwrap();
    m.close().unwrap();
}

#[test]
fn operations_after_close_are_refused() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    m.close().unwrap();
    m.close().unwrap();
    assert!(matches!(s.record_activity("x", None), Err(Error::Closed)));
    assert!(matches!(
        m.create_session(NewSession::default()),
        Err(Error::Closed)
    ));
    // Reads still see the last state.
    assert_eq!(s.status().unwrap(), Status::Active);
}

// ---- Integration (seed 001) ----

#[test]
fn create_close_reopen_keeps_every_detail_on_both_backends() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m.create_session(named("abc123")).unwrap();
        s.record_activity("user_input", json!({"message": "Hello"}).into())
            .unwrap();
        s.set_metadata("user", json!("alice@example.com")).unwrap();
        s.set_metadata("branch", json!("main")).unwrap();
        s.record_command(CommandRun::succeeded("ls", Duration::from_millis(3)))
            .unwrap();
        s.save_checkpoint(Some("cp")).unwrap();
        let live = m.state();
        m.close().unwrap();
        let m = b.open(&clock);
        assert_eq!(*m.state(), *live, "{}", b.name);
        let s = m.get_session("abc123").unwrap();
        assert_eq!(
            s.get_metadata("user").unwrap(),
            Some(json!("alice@example.com"))
        );
        assert_eq!(s.get_metadata("branch").unwrap(), Some(json!("main")));
        assert_eq!(s.get_command_history(10).unwrap().len(), 1);
        assert!(s.is_active());
        m.close().unwrap();
    }
}

#[test]
fn timeout_detection_works_across_close_and_reopen() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        m.create_session(with_timeout("t", 60)).unwrap();
        m.create_session(with_timeout("long", 3600)).unwrap();
        m.close().unwrap();
        clock.advance_secs(120);
        let m = b.open(&clock);
        let t = m.get_session("t").unwrap();
        assert!(!t.is_active(), "{}", b.name);
        assert!(m.get_session("long").unwrap().is_active());
        assert!(matches!(
            t.record_activity("x", None),
            Err(Error::InvalidState { .. })
        ));
        // The open recorded the expiry that happened while the directory was closed.
        assert_eq!(t.status().unwrap(), Status::TimedOut);
        assert_eq!(m.expire_idle().unwrap(), Vec::<SessionId>::new());
        m.close().unwrap();
        let m = b.open(&clock);
        assert_eq!(
            m.get_session("t").unwrap().status().unwrap(),
            Status::TimedOut
        );
        m.close().unwrap();
    }
}

#[test]
fn multiple_sessions_do_not_interfere_even_when_written_concurrently() {
    let b = Backend::file();
    let clock = clock();
    let m = b.open(&clock);
    let sessions: Vec<_> = (0..4)
        .map(|i| m.create_session(named(&format!("s{i}"))).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for (i, s) in sessions.iter().enumerate() {
            scope.spawn(move || {
                for n in 0..50 {
                    s.record_activity(&format!("work-{i}"), json!({"n": n}).into())
                        .unwrap();
                    if n % 10 == 0 {
                        s.set_metadata(&format!("k{i}"), json!(n)).unwrap();
                    }
                }
            });
        }
    });
    for (i, s) in sessions.iter().enumerate() {
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.body.activity_log.len(), 50);
        assert!(
            snap.body
                .activity_log
                .iter()
                .all(|a| *a.action == *format!("work-{i}"))
        );
        let ns: Vec<_> = snap
            .body
            .activity_log
            .iter()
            .map(|a| a.details.text().unwrap().to_value()["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (0..50).collect::<Vec<_>>(), "order kept per session");
        assert_eq!(snap.body.metadata.len(), 1);
        assert_eq!(s.get_metadata(&format!("k{i}")).unwrap(), Some(json!(40)));
    }
    m.close().unwrap();
}

// ---- Clone ----

#[test]
fn a_clone_copies_the_session_under_a_new_id_and_stands_alone() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let src = m.create_session(named("src")).unwrap();
        src.record_activity("a", None).unwrap();
        src.set_metadata("k", json!("v")).unwrap();
        src.save_checkpoint(Some("cp")).unwrap();
        src.end().unwrap();
        clock.advance_secs(10);
        let copy = m.clone_session("src", Some("copy")).unwrap();
        assert_eq!(copy.session_id().as_str(), "copy");
        let c = copy.snapshot().unwrap();
        assert_eq!(c.status(), Status::Active);
        assert_eq!(c.created_at, at(10));
        assert_eq!(c.body.activity_log.len(), 1);
        assert_eq!(c.checkpoints.len(), 1);
        assert_eq!(copy.get_metadata("k").unwrap(), Some(json!("v")));
        assert_eq!(
            c.origin,
            Some(session_engine::state::Origin::Cloned {
                source: SessionId::new("src").unwrap()
            })
        );
        // Changing one does not change the other.
        copy.set_metadata("k", json!("changed")).unwrap();
        assert_eq!(src.get_metadata("k").unwrap(), Some(json!("v")));
        assert_eq!(src.status().unwrap(), Status::Ended);
        let generated = m.clone_session("src", None).unwrap();
        assert_ne!(generated.session_id().as_str(), "src");
        assert!(matches!(
            m.clone_session("src", Some("copy")),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            m.clone_session("missing", None),
            Err(Error::NotFound { .. })
        ));
        let live = m.state();
        m.close().unwrap();
        let m = b.open(&clock);
        assert_eq!(*m.state(), *live);
        m.close().unwrap();
    }
}

// ---- Point-in-time ----

#[test]
fn the_state_of_a_session_as_of_any_lsn_is_available_for_audits() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let other = m.create_session(named("other")).unwrap();
    let s = m.create_session(named("s")).unwrap();
    let created = m.last_lsn();
    let l1 = s.record_activity("one", None).unwrap();
    other.record_activity("noise", None).unwrap();
    let l2 = s.set_metadata("k", json!(1)).unwrap();
    s.save_checkpoint(None).unwrap();
    let l3 = s.set_metadata("k", json!(2)).unwrap();
    let l4 = s.restore_checkpoint(None).unwrap();
    let _ = l4;
    let l5 = m.last_lsn();
    assert_eq!(m.session_at("s", Lsn(1)).unwrap(), None, "before creation");
    let at_created = m.session_at("s", created).unwrap().unwrap();
    assert!(at_created.body.activity_log.is_empty());
    assert_eq!(
        m.session_at("s", l1)
            .unwrap()
            .unwrap()
            .body
            .activity_log
            .len(),
        1
    );
    let meta = |lsn| {
        s.at(lsn)
            .unwrap()
            .unwrap()
            .get_metadata("k")
            .map(|v| v.to_value())
    };
    assert_eq!(meta(l1), None);
    assert_eq!(meta(l2), Some(json!(1)));
    assert_eq!(meta(l3), Some(json!(2)));
    assert_eq!(meta(l5), Some(json!(1)), "after the restore");
    assert_eq!(
        m.session_at("s", l5).unwrap().unwrap(),
        *s.snapshot().unwrap()
    );
    let err = m.session_at("s", Lsn(l5.get() + 1)).unwrap_err();
    assert!(matches!(err, Error::LsnOutOfRange { .. }), "{err}");
}

#[test]
fn point_in_time_state_survives_a_cleanup_that_archived_several_sessions() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    m.create_session(named("a")).unwrap();
    m.create_session(named("b")).unwrap();
    clock.advance_secs(3 * 86_400);
    assert_eq!(m.cleanup_old_sessions(1).unwrap().len(), 2);
    let a = m.session_at("a", m.last_lsn()).unwrap().unwrap();
    assert_eq!(a.status(), Status::Archived);
    let both_expire = m.engine();
    both_expire
        .execute(Command::Resume(SessionId::new("a").unwrap()))
        .unwrap();
    both_expire
        .execute(Command::Resume(SessionId::new("b").unwrap()))
        .unwrap();
    clock.advance_secs(2 * 3600);
    assert_eq!(m.expire_idle().unwrap().len(), 2);
    let b_state = m.session_at("b", m.last_lsn()).unwrap().unwrap();
    assert_eq!(b_state.status(), Status::TimedOut);
    let mut multi = 0;
    m.engine()
        .read_log(Lsn(1), m.last_lsn(), |_, e| {
            if matches!(&e.body, EventBody::SessionsArchived { sessions } | EventBody::SessionsExpired { sessions } if sessions.len() == 2)
            {
                multi += 1;
            }
            Ok(true)
        })
        .unwrap();
    assert_eq!(multi, 2, "the log holds multi-session events");
}
