//! Agent session chains: seed 003's `SessionTracker` tests in this engine's terms, and its
//! chain file.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};
use session_engine::Error;

#[test]
fn a_new_tracker_is_empty() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let t = m.chain("test-agent").unwrap();
    assert_eq!(t.agent_id().as_str(), "test-agent");
    assert_eq!(t.get_current_session(), None);
    assert!(t.get_session_chain().is_empty());
    assert_eq!(t.interaction_count(), 0);
    let summary = serde_json::to_value(t.get_chain_summary()).unwrap();
    assert_eq!(
        summary,
        json!({"agent_id": "test-agent", "total_sessions": 0, "total_interactions": 0})
    );
    assert!(m.agents().is_empty(), "looking at a chain creates nothing");
}

#[test]
fn update_session_appends_a_link_and_makes_it_current() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let t = m.chain("test-agent").unwrap();
    t.update_session(
        "session-123",
        "Hello Claude",
        "Hello! How can I help?",
        Some(json!({"tokens": 10})),
    )
    .unwrap();
    assert_eq!(t.get_current_session().as_deref(), Some("session-123"));
    assert_eq!(t.interaction_count(), 1);
    let chain = t.get_session_chain();
    assert_eq!(chain.len(), 1);
    assert_eq!(&*chain[0].session_id, "session-123");
    assert_eq!(&*chain[0].last_prompt, "Hello Claude");
    assert_eq!(&*chain[0].last_response, "Hello! How can I help?");
    assert_eq!(
        chain[0].metadata.as_ref().unwrap().to_value()["tokens"],
        json!(10)
    );
    assert_eq!(
        chain[0].created_at,
        session_engine::Timestamp::from_secs(T0)
    );
}

#[test]
fn a_chain_keeps_its_links_in_order() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let t = m.chain("test-agent").unwrap();
    for i in 0..5 {
        t.update_session(
            &format!("session-{i}"),
            &format!("Prompt {i}"),
            &format!("Response {i}"),
            None,
        )
        .unwrap();
    }
    let chain = t.get_session_chain();
    assert_eq!(chain.len(), 5);
    assert_eq!(&*chain[0].session_id, "session-0");
    assert_eq!(&*chain[4].session_id, "session-4");
    assert_eq!(
        chain
            .iter()
            .map(|l| l.interaction_count)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(t.get_current_session().as_deref(), Some("session-4"));
}

#[test]
fn chains_persist_across_close_and_reopen() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let t = m.chain("persist-test").unwrap();
        t.update_session("session-1", "Test", "Response", None)
            .unwrap();
        t.update_session("session-2", "Test2", "Response2", None)
            .unwrap();
        m.close().unwrap();
        let m = b.open(&clock);
        let t2 = m.chain("persist-test").unwrap();
        assert_eq!(
            t2.get_current_session().as_deref(),
            Some("session-2"),
            "{}",
            b.name
        );
        assert_eq!(t2.get_session_chain().len(), 2);
        assert_eq!(t2.interaction_count(), 2);
        m.close().unwrap();
    }
}

#[test]
fn validate_session_says_whether_an_id_is_in_the_chain() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let t = m.chain("test-agent").unwrap();
    t.update_session("valid-session", "Test", "Response", None)
        .unwrap();
    assert!(t.validate_session("valid-session"));
    assert!(!t.validate_session("invalid-session"));
}

#[test]
fn reset_empties_the_chain_and_the_log_keeps_the_history() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let t = m.chain("test-agent").unwrap();
    t.update_session("session-1", "Test", "Response", None)
        .unwrap();
    t.reset().unwrap();
    assert_eq!(t.get_current_session(), None);
    assert!(t.get_session_chain().is_empty());
    assert_eq!(t.interaction_count(), 0);
    assert!(!t.validate_session("session-1"));
    let mut linked = 0;
    m.engine()
        .read_log(session_engine::Lsn(1), m.last_lsn(), |_, e| {
            linked += usize::from(e.body.type_name() == "chain_linked");
            Ok(true)
        })
        .unwrap();
    assert_eq!(linked, 1);
    t.update_session("session-2", "again", "ok", None).unwrap();
    assert_eq!(t.interaction_count(), 1);
}

#[test]
fn the_chain_summary_follows_seed_003() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let t = m.chain("test-agent").unwrap();
    t.update_session("s1", "P1", "R1", None).unwrap();
    t.update_session("s2", "P2", "R2", None).unwrap();
    let summary = serde_json::to_value(t.get_chain_summary()).unwrap();
    assert_eq!(
        summary,
        json!({"agent_id": "test-agent", "total_sessions": 2, "total_interactions": 2,
               "first_session": "s1", "current_session": "s2", "session_ids": ["s1", "s2"]})
    );
}

#[test]
fn prompts_and_responses_are_truncated_to_200_characters() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let t = m.chain("a").unwrap();
    let long = "ż".repeat(500);
    t.update_session("s", &long, &long, None).unwrap();
    let link = &t.get_session_chain()[0];
    assert_eq!(link.last_prompt.chars().count(), 200);
    assert_eq!(link.last_response.chars().count(), 200);
}

#[test]
fn bad_agent_ids_and_session_ids_are_refused() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    for bad in ["", "../x", "a/b", "a b"] {
        assert!(
            matches!(m.chain(bad), Err(Error::InvalidInput { .. })),
            "{bad:?}"
        );
    }
    let t = m.chain("a").unwrap();
    assert!(matches!(
        t.update_session("", "p", "r", None),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(m.last_lsn(), session_engine::Lsn::ZERO);
}

#[test]
fn agents_have_independent_chains() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    m.chain("alpha")
        .unwrap()
        .update_session("a1", "p", "r", None)
        .unwrap();
    m.chain("beta")
        .unwrap()
        .update_session("b1", "p", "r", None)
        .unwrap();
    m.chain("alpha")
        .unwrap()
        .update_session("a2", "p", "r", None)
        .unwrap();
    m.chain("beta").unwrap().reset().unwrap();
    assert_eq!(m.chain("alpha").unwrap().get_session_chain().len(), 2);
    assert!(m.chain("beta").unwrap().get_session_chain().is_empty());
    let agents: Vec<String> = m.agents().iter().map(|a| a.to_string()).collect();
    assert_eq!(agents, ["alpha", "beta"]);
}

/// What seed 003's `_load_sessions` does with the file: `SessionInfo(**entry)` takes
/// exactly these keys, and `datetime.fromisoformat` parses `created_at`.
#[test]
fn the_chain_file_is_what_seed_003_reads() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let t = m.chain("test-agent").unwrap();
        t.update_session("s1", "P1", "R1", Some(json!({"tokens": 10})))
            .unwrap();
        clock.advance_micros(1_500_000);
        t.update_session("s2", "P2", "R2", None).unwrap();
        flush(&m);
        let f = b.json("chains/test-agent_sessions.json");
        let top: BTreeSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            top,
            BTreeSet::from([
                "agent_id",
                "current_session_id",
                "interaction_count",
                "sessions"
            ])
        );
        assert_eq!(f["agent_id"], json!("test-agent"));
        assert_eq!(f["current_session_id"], json!("s2"));
        assert_eq!(f["interaction_count"], json!(2));
        let sessions = f["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 2);
        for e in sessions {
            let k: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                k,
                BTreeSet::from([
                    "session_id",
                    "created_at",
                    "interaction_count",
                    "last_prompt",
                    "last_response",
                    "metadata"
                ]),
                "SessionInfo(**data) fails on any other key"
            );
            // `datetime.fromisoformat`: naive, microseconds, no offset.
            let ts = e["created_at"].as_str().unwrap();
            chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.6f").unwrap();
            assert!(!ts.ends_with('Z') && !ts.contains('+'), "{ts}");
        }
        assert_eq!(
            sessions[0]["created_at"],
            json!("2025-11-08T10:30:00.000000")
        );
        assert_eq!(
            sessions[1]["created_at"],
            json!("2025-11-08T10:30:01.500000")
        );
        assert_eq!(sessions[0]["metadata"], json!({"tokens": 10}));
        assert_eq!(sessions[1]["metadata"], Value::Null);
        assert_eq!(sessions[1]["last_prompt"], json!("P2"));
        // A reset is written too (seed 003's reset saves).
        t.reset().unwrap();
        flush(&m);
        let f = b.json("chains/test-agent_sessions.json");
        assert_eq!(f["current_session_id"], Value::Null);
        assert_eq!(f["interaction_count"], json!(0));
        assert_eq!(f["sessions"], json!([]));
        m.close().unwrap();
    }
}
