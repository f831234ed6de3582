//! Seed 002's agents per session: activate, deactivate, restart (each an event), the
//! rules that refuse a change, replay and snapshots, and state schema 4's agents part.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use session_engine::codec::{decode_state, encode_state};
use session_engine::event::AgentAction;
use session_engine::state::{AGENT_TYPES, agent_type};
use session_engine::{Error, EventBody, Lsn, NewSession, SessionId, SessionManager};

fn named(id: &str) -> NewSession {
    NewSession {
        id: Some(SessionId::new(id).unwrap()),
        ..NewSession::default()
    }
}

fn agent_events(m: &SessionManager) -> Vec<(String, AgentAction)> {
    let mut out = Vec::new();
    m.engine()
        .read_log(Lsn(1), m.last_lsn(), |_, e| {
            if let EventBody::AgentChanged {
                agent_type, action, ..
            } = &e.body
            {
                out.push((agent_type.clone(), *action));
            }
            Ok(true)
        })
        .unwrap();
    out
}

#[test]
fn the_twelve_agent_types_of_seed_002_are_known_in_any_case() {
    assert_eq!(AGENT_TYPES.len(), 12);
    assert_eq!(agent_type("backend"), Some("BACKEND"));
    assert_eq!(agent_type("Monitoring"), Some("MONITORING"));
    assert_eq!(agent_type("backend-services"), None);
    assert_eq!(agent_type(""), None);
}

#[test]
fn each_action_is_an_event_and_the_session_keeps_its_agents() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m.create_session(named("s")).unwrap();
        assert!(s.agents().unwrap().is_empty());
        let l1 = s
            .activate_agent("backend", Some(&json!({"max_memory_mb": 512})))
            .unwrap();
        clock.advance_secs(5);
        let l2 = s.restart_agent("BACKEND", None).unwrap();
        let l3 = s.activate_agent("security", None).unwrap();
        let l4 = s.deactivate_agent("backend").unwrap();
        let l5 = s.activate_agent("backend", None).unwrap();
        assert!(l1 < l2 && l2 < l3 && l3 < l4 && l4 < l5);
        assert_eq!(
            agent_events(&m),
            vec![
                ("BACKEND".into(), AgentAction::Activated),
                ("BACKEND".into(), AgentAction::Restarted),
                ("SECURITY".into(), AgentAction::Activated),
                ("BACKEND".into(), AgentAction::Deactivated),
                ("BACKEND".into(), AgentAction::Activated),
            ]
        );
        let agents = s.agents().unwrap();
        assert_eq!(agents.len(), 2);
        let (t, a) = &agents[0];
        assert_eq!(t, "BACKEND");
        assert!(a.active);
        assert_eq!((a.activations, a.restarts), (2, 1));
        assert_eq!(a.config, None, "the last activation had no configuration");
        let (t, a) = &agents[1];
        assert_eq!(t, "SECURITY");
        assert!(a.active);
        assert_eq!((a.activations, a.restarts), (1, 0));
        // Replay after reopening gives the same state, agents included.
        let live = m.state();
        m.close().unwrap();
        let m = b.open(&clock);
        assert_eq!(*m.state(), *live, "{}", b.name);
        assert_eq!(m.get_session("s").unwrap().agents().unwrap(), agents);
        m.close().unwrap();
    }
}

#[test]
fn a_snapshot_keeps_the_agents_and_reopening_from_it_gives_the_same_state() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m.create_session(named("s")).unwrap();
        s.activate_agent("devops", Some(&json!({"retry_attempts": 3})))
            .unwrap();
        s.activate_agent("quality", None).unwrap();
        s.deactivate_agent("quality").unwrap();
        m.engine().snapshot().unwrap();
        let live = m.state();
        m.close().unwrap();
        let m = b.open(&clock);
        assert_eq!(*m.state(), *live, "{}", b.name);
        let agents = m.get_session("s").unwrap().agents().unwrap();
        assert_eq!(agents.len(), 2);
        assert_eq!(
            agents[0].1.config.as_ref().unwrap().as_str(),
            r#"{"retry_attempts":3}"#
        );
        assert!(!agents[1].1.active);
        m.close().unwrap();
    }
}

#[test]
fn bad_changes_are_refused_with_a_typed_error_and_change_nothing() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    s.activate_agent("api", None).unwrap();
    let before = m.state();
    let lsn = m.last_lsn();
    let refused = [
        s.activate_agent("wizard", None),
        s.activate_agent("backend-services", None),
        s.activate_agent("", None),
    ];
    for r in refused {
        assert!(
            matches!(
                r,
                Err(Error::NotFound {
                    kind: "agent type",
                    ..
                })
            ),
            "{r:?}"
        );
    }
    for r in [
        s.activate_agent("API", None),
        s.deactivate_agent("frontend"),
        s.restart_agent("frontend", None),
    ] {
        assert!(matches!(r, Err(Error::InvalidState { .. })), "{r:?}");
    }
    // A session deleted under a handle (here: one never created) is not found.
    let r = m.engine().execute(session_engine::Command::ChangeAgent {
        session: SessionId::new("nope").unwrap(),
        agent_type: "api".into(),
        action: AgentAction::Activated,
        config: None,
    });
    assert!(
        matches!(
            r,
            Err(Error::NotFound {
                kind: "session",
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(m.last_lsn(), lsn);
    assert_eq!(*m.state(), *before);
    // Ended, archived: refused; paused: allowed.
    s.deactivate_agent("api").unwrap();
    s.pause().unwrap();
    s.activate_agent("api", None).unwrap();
    s.end().unwrap();
    let lsn = m.last_lsn();
    assert!(matches!(
        s.restart_agent("api", None),
        Err(Error::InvalidState { .. })
    ));
    s.archive().unwrap();
    assert!(matches!(
        s.deactivate_agent("api"),
        Err(Error::InvalidState { .. })
    ));
    assert_eq!(m.last_lsn(), Lsn(lsn.0 + 1), "only the archive was written");
    m.close().unwrap();
}

#[test]
fn agent_events_travel_in_an_export_bundle_and_replay_on_import() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    s.activate_agent("database", None).unwrap();
    s.restart_agent("database", Some(&json!({"timeout_seconds": 30})))
        .unwrap();
    let bundle = m.export_bundle("s").unwrap();
    let copy = m.import_bundle(bundle).unwrap();
    assert_ne!(copy.session_id().as_str(), "s");
    assert_eq!(copy.agents().unwrap(), s.agents().unwrap());
    m.close().unwrap();
}

#[test]
fn a_state_with_agents_is_state_schema_4_and_round_trips_one_without_is_unchanged() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let s = m.create_session(named("s")).unwrap();
    s.record_activity("work", None).unwrap();
    let mut plain = Vec::new();
    encode_state(&m.state(), &mut plain).unwrap();
    assert_eq!(plain[0], 1, "a state without agents stays schema 1");
    s.activate_agent("orchestrator", Some(&json!({"priority": 1})))
        .unwrap();
    let with = m.state();
    let mut bytes = Vec::new();
    encode_state(&with, &mut bytes).unwrap();
    assert_eq!(bytes[0], 4);
    let back = decode_state(&bytes).unwrap();
    assert_eq!(back, *with);
    assert_eq!(back.agents, with.agents);
    // The same state without its agents encodes as schema 1 again, byte for byte as
    // before the activation but for the last LSN.
    let mut without = (*with).clone();
    without.agents = Default::default();
    without.last_lsn = m.state().last_lsn;
    let mut again = Vec::new();
    encode_state(&without, &mut again).unwrap();
    assert_eq!(again[0], 1);
    // Damage to the agents part is refused, not a panic.
    let mut cut = bytes.clone();
    cut.pop();
    assert!(decode_state(&cut).is_err());
    m.close().unwrap();
}

#[test]
fn a_clone_carries_the_active_agents_of_its_source_as_agent_events() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s = m.create_session(named("src")).unwrap();
        s.activate_agent("backend", Some(&json!({"max_memory_mb": 512})))
            .unwrap();
        s.restart_agent("backend", None).unwrap();
        s.activate_agent("security", None).unwrap();
        s.activate_agent("quality", None).unwrap();
        s.deactivate_agent("quality").unwrap();
        let before = agent_events(&m).len();
        let source_agents = s.agents().unwrap();

        let c = m.clone_session("src", Some("copy")).unwrap();
        // The active agents, each one activation (with its configuration) in the copy;
        // the inactive one is not copied, and the source is unchanged.
        let agents = c.agents().unwrap();
        let names: Vec<&str> = agents.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["BACKEND", "SECURITY"], "{}", b.name);
        for (_, a) in &agents {
            assert!(a.active);
            assert_eq!((a.activations, a.restarts), (1, 0));
        }
        assert_eq!(
            agents[0].1.config.as_ref().unwrap().as_str(),
            r#"{"max_memory_mb":512}"#
        );
        assert_eq!(agents[1].1.config, None);
        assert_eq!(s.agents().unwrap(), source_agents);
        assert_eq!(
            agent_events(&m)[before..],
            [
                ("BACKEND".to_owned(), AgentAction::Activated),
                ("SECURITY".to_owned(), AgentAction::Activated),
            ]
        );
        // The copy's agents are its own.
        c.deactivate_agent("security").unwrap();
        let source_now = s.agents().unwrap();
        assert!(source_now.iter().any(|(t, a)| t == "SECURITY" && a.active));

        // A source without agents: the clone is its one event.
        m.create_session(named("bare")).unwrap();
        let lsn = m.last_lsn();
        let bare = m.clone_session("bare", Some("bare-copy")).unwrap();
        assert_eq!(m.last_lsn(), lsn.next());
        assert!(bare.agents().unwrap().is_empty());

        // Replay gives the same state.
        let live = m.state();
        m.close().unwrap();
        let m = b.open(&clock);
        assert_eq!(*m.state(), *live, "{}", b.name);
        m.close().unwrap();
    }
}
