//! Export bundles: round trips into the same and another engine, id clashes, damaged,
//! foreign and malformed bundles, narrowing of multi-session events.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use session_engine::event::{MAX_IMPORT_DEPTH, SessionCreated};
use session_engine::export::{BUNDLE_VALUE_WRAPPING, BundleError, events_checksum};
use session_engine::state::Origin;
use session_engine::storage::SplitMix64;
use session_engine::types::MAX_JSON_DEPTH;
use session_engine::{
    Bundle, CommandRun, Error, Event, EventBody, NewSession, Session, SessionId, SessionManager,
    Status, Timestamp, codec, parse_bundle,
};

fn named(id: &str) -> NewSession {
    NewSession {
        id: Some(SessionId::new(id).unwrap()),
        ..NewSession::default()
    }
}

/// A session with a bit of everything in its history.
fn busy_session(m: &SessionManager, clock: &session_engine::ManualClock, id: &str) {
    let s = m.create_session(named(id)).unwrap();
    s.record_activity("user_input", Some(json!({"message": "Hello"})))
        .unwrap();
    clock.advance_secs(3);
    s.set_metadata("user", json!("alice")).unwrap();
    s.save_checkpoint(Some("safe")).unwrap();
    s.record_command(CommandRun::failed(
        "risky",
        "boom",
        Duration::from_millis(9),
    ))
    .unwrap();
    s.restore_checkpoint(None).unwrap();
    s.log_decision("retry", "it failed", Some("give up"))
        .unwrap();
    s.remove_metadata("user").unwrap();
    s.pause().unwrap();
}

fn without_origin(s: &Session) -> Session {
    let mut s = s.clone();
    s.origin = None;
    s
}

#[test]
fn an_exported_session_imports_into_another_engine_unchanged() {
    for a in Backend::both() {
        let clock = clock();
        let ma = a.open(&clock);
        busy_session(&ma, &clock, "abc123");
        let path = a.path("exports/abc123.bundle.json");
        let bundle = ma.export_session("abc123", &path).unwrap();
        assert_eq!(bundle.session_id.as_str(), "abc123");
        let original = ma.get_session("abc123").unwrap().snapshot().unwrap();
        assert_eq!(
            a.list("exports"),
            ["abc123.bundle.json"],
            "no temporary left"
        );

        // Another engine on the same storage, in another directory.
        let other = a.dir.with_file_name("other");
        let mb = SessionManager::open(&other, manager_options(&a.storage, &clock)).unwrap();
        let imported = mb.import_session(&path).unwrap();
        assert_eq!(imported.session_id().as_str(), "abc123");
        let copy = imported.snapshot().unwrap();
        assert_eq!(without_origin(&copy), *original, "{}", a.name);
        assert_eq!(
            copy.origin,
            Some(Origin::Imported {
                original: SessionId::new("abc123").unwrap()
            })
        );
        assert_eq!(copy.status(), Status::Paused);
        // The imported history is in the other engine's log, so its projections and its
        // point-in-time view work as for any session.
        flush(&mb);
        let f: Value = serde_json::from_slice(
            &a.storage
                .read(&other.join("sessions/session_abc123.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(f["status"], json!("paused"));
        assert_eq!(f["origin"], json!({"imported": {"original": "abc123"}}));
        assert_eq!(f["activity_log"].as_array().unwrap().len(), 1);
        let log = String::from_utf8(
            a.storage
                .read(&other.join("logs/session_abc123.log"))
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        let events: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events[0]["event"], json!("session_imported"));
        assert_eq!(events.len(), 1 + bundle.events.len());
        assert!(events[1..].iter().all(|l| l["sub"].is_u64()));
        assert_eq!(events[1]["event"], json!("session_created"));
        // Re-exporting the imported session carries its history on.
        let again = mb.export_bundle("abc123").unwrap();
        let third = a.dir.with_file_name("third");
        let mc = SessionManager::open(&third, manager_options(&a.storage, &clock)).unwrap();
        let c = mc.import_bundle(again).unwrap();
        assert_eq!(without_origin(&c.snapshot().unwrap()), *original);
        for m in [ma, mb, mc] {
            m.close().unwrap();
        }
    }
}

#[test]
fn importing_a_session_that_exists_gives_it_a_new_id() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    busy_session(&m, &clock, "s");
    let bytes = m.export_bundle("s").unwrap().to_json().unwrap();
    let copy = m.import_bytes(&bytes).unwrap();
    assert_ne!(copy.session_id().as_str(), "s");
    assert_eq!(
        copy.snapshot().unwrap().origin,
        Some(Origin::Imported {
            original: SessionId::new("s").unwrap()
        })
    );
    let original = m.get_session("s").unwrap().snapshot().unwrap();
    let mut c = without_origin(&copy.snapshot().unwrap());
    c.id = original.id.clone();
    assert_eq!(c, *original);
    // The copy is a session of its own.
    copy.resume().unwrap();
    copy.record_activity("more", None).unwrap();
    assert_eq!(
        m.get_session("s").unwrap().status().unwrap(),
        Status::Paused
    );
}

#[test]
fn a_damaged_bundle_is_refused_and_changes_nothing() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    busy_session(&m, &clock, "s");
    let path = b.path("s.bundle");
    m.export_session("s", &path).unwrap();
    let good = b.read("s.bundle");
    let target =
        SessionManager::open(Path::new("target"), manager_options(&b.storage, &clock)).unwrap();
    let before = target.state();

    // An edited value inside the events.
    let text = String::from_utf8(good.clone()).unwrap();
    let edited = text.replacen("user_input", "user_inpux", 1);
    assert_ne!(edited, text);
    b.write("s.bundle", edited.as_bytes());
    let err = target.import_session(&path).unwrap_err();
    match &err {
        Error::InvalidBundle {
            path: Some(p),
            reason: BundleError::ChecksumMismatch { .. },
        } => assert_eq!(p, &path),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_refusal());
    assert_eq!(err.kind(), "invalid_bundle");
    assert!(err.to_string().contains("damaged"), "{err}");

    // A truncated file.
    b.write("s.bundle", &good[..good.len() / 2]);
    assert!(matches!(
        target.import_session(&path),
        Err(Error::InvalidBundle {
            reason: BundleError::NotJson { .. },
            ..
        })
    ));
    // A missing file is "not found", naming it.
    match target.import_session(b.path("missing.bundle")) {
        Err(Error::NotFound {
            kind: "bundle file",
            id,
        }) => assert!(id.ends_with("missing.bundle")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(*target.state(), *before);
    assert_eq!(target.last_lsn(), session_engine::Lsn::ZERO);
    // The intact bundle still imports.
    b.write("s.bundle", &good);
    target.import_session(&path).unwrap();
}

#[test]
fn foreign_files_are_refused_with_what_they_are() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    busy_session(&m, &clock, "s");
    flush(&m);
    type Expect = fn(&BundleError) -> bool;
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (b.read("sessions/session_s.json"), |e| {
            matches!(e, BundleError::Foreign { found: None })
        }),
        (b.read("sessions/registry.json"), |e| {
            matches!(e, BundleError::Foreign { found: None })
        }),
        (b.read("logs/session_s.log"), |e| {
            matches!(e, BundleError::NotJson { .. })
        }),
        (
            br#"{"format": "tar", "version": 1}"#.to_vec(),
            |e| matches!(e, BundleError::Foreign { found: Some(f) } if f == "tar"),
        ),
        (br#"[{"format": "session-engine-bundle"}]"#.to_vec(), |e| {
            matches!(e, BundleError::Foreign { found: None })
        }),
        (
            br#"{"format": "session-engine-bundle", "version": 2, "events": []}"#.to_vec(),
            |e| matches!(e, BundleError::UnsupportedVersion { found: 2 }),
        ),
        (b"\x89PNG\r\n\x1a\n".to_vec(), |e| {
            matches!(e, BundleError::NotJson { .. })
        }),
        (Vec::new(), |e| matches!(e, BundleError::NotJson { .. })),
    ];
    let lsn = m.last_lsn();
    for (bytes, expected) in cases {
        match m.import_bytes(&bytes) {
            Err(Error::InvalidBundle { path: None, reason }) => {
                assert!(expected(&reason), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(m.last_lsn(), lsn);
}

/// A bundle with a correct checksum around `events`.
fn bundle_json(session: &str, events: &Value, count: usize) -> Vec<u8> {
    bundle_text(session, &serde_json::to_string(events).unwrap(), count)
}

/// A bundle with a correct checksum around the `events` text.
fn bundle_text(session: &str, events: &str, count: usize) -> Vec<u8> {
    format!(
        r#"{{"format":"session-engine-bundle","version":1,"event_schema":1,"session_id":"{session}",
            "exported_at":"2025-11-08T10:30:00Z","source_lsn":9,"event_count":{count},
            "checksum":"{}","events":{events}}}"#,
        events_checksum(events.as_bytes())
    )
    .into_bytes()
}

#[test]
fn a_bundle_that_breaks_the_rules_is_malformed_even_with_a_good_checksum() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    busy_session(&m, &clock, "s");
    m.create_session(named("t")).unwrap();
    let good = m.export_bundle("s").unwrap();
    let events = serde_json::to_value(&good.events).unwrap();
    let n = good.events.len();
    // The reference: the same construction with untouched events is accepted.
    parse_bundle(&bundle_json("s", &events, n)).unwrap();

    let mut first_missing = events.clone();
    first_missing.as_array_mut().unwrap().remove(0);
    let mut foreign_event = events.clone();
    foreign_event.as_array_mut().unwrap().push(json!({
        "at": 1, "body": {"ActivityRecorded": {"session": "t", "action": "x", "details": null}}
    }));
    let mut control_chars = events.clone();
    control_chars[1]["body"]["ActivityRecorded"]["action"] = json!("bell\u{7}");
    let mut no_replay = events.clone();
    no_replay.as_array_mut().unwrap().push(json!({
        "at": 1, "body": {"CheckpointRestored": {"session": "s", "index": 7}}
    }));
    let mut bad_id = events.clone();
    bad_id[0]["body"]["SessionCreated"]["session"] = json!("../../etc");
    let cases = [
        ("s", first_missing, n - 1, "first event"),
        ("s", foreign_event, n + 1, "alone"),
        ("s", control_chars, n, "control"),
        ("s", no_replay, n + 1, "replay"),
        ("s", events.clone(), n + 3, "event_count"),
        ("t", events.clone(), n, "first event"),
        ("s", bad_id, n, "do not decode"),
        ("s", json!([]), 0, "no events"),
    ];
    let lsn = m.last_lsn();
    for (session, events, count, why) in cases {
        let bytes = bundle_json(session, &events, count);
        match parse_bundle(&bytes) {
            Err(BundleError::Malformed { reason }) => {
                assert!(reason.contains(why), "{why}: {reason}")
            }
            other => panic!("{why}: unexpected {other:?}"),
        }
        assert!(matches!(
            m.import_bytes(&bytes),
            Err(Error::InvalidBundle { .. })
        ));
    }
    assert_eq!(m.last_lsn(), lsn);
}

#[test]
fn multi_session_events_are_narrowed_to_the_exported_session() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    m.create_session(named("a")).unwrap();
    m.create_session(named("b")).unwrap();
    clock.advance_secs(40 * 86_400);
    assert_eq!(m.cleanup_old_sessions(30).unwrap().len(), 2);
    let bundle = m.export_bundle("a").unwrap();
    let last = &bundle.events.last().unwrap().body;
    assert_eq!(
        *last,
        EventBody::SessionsArchived {
            sessions: vec![SessionId::new("a").unwrap()]
        }
    );
    // It imports into an engine that has never heard of "b".
    let (_, s2) = mem();
    let m2 = SessionManager::open("elsewhere", manager_options(&s2, &clock)).unwrap();
    let a = m2.import_bundle(bundle).unwrap();
    assert_eq!(a.status().unwrap(), Status::Archived);
    assert!(m2.get_session("b").is_err());
}

#[test]
fn clones_and_timed_out_sessions_export_too() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    busy_session(&m, &clock, "s");
    let c = m.clone_session("s", Some("c")).unwrap();
    c.set_metadata("cloned", json!(true)).unwrap();
    m.create_session(NewSession {
        timeout_secs: 5,
        ..named("idle")
    })
    .unwrap();
    clock.advance_secs(6);
    m.expire_idle().unwrap();
    let (_, s2) = mem();
    let m2 = SessionManager::open("elsewhere", manager_options(&s2, &clock)).unwrap();
    for id in ["c", "idle"] {
        let bundle = m.export_bundle(id).unwrap();
        let bytes = bundle.to_json().unwrap();
        assert_eq!(parse_bundle(&bytes).unwrap(), bundle);
        let imported = m2.import_bytes(&bytes).unwrap();
        let original = m.get_session(id).unwrap().snapshot().unwrap();
        assert_eq!(
            without_origin(&imported.snapshot().unwrap()),
            without_origin(&original)
        );
    }
    assert_eq!(
        m2.get_session("idle").unwrap().status().unwrap(),
        Status::TimedOut
    );
}

#[test]
fn export_works_read_only_while_the_writer_holds_the_directory() {
    let b = Backend::file();
    let clock = clock();
    let m = b.open(&clock);
    busy_session(&m, &clock, "s");
    let ro =
        SessionManager::open_read_only(&b.dir, options(Arc::clone(&b.storage), &clock)).unwrap();
    let out = b.dir.with_file_name("s.bundle");
    let bundle = ro.export_session("s", &out).unwrap();
    let live = m.export_bundle("s").unwrap();
    assert_eq!(
        (&bundle.session_id, &bundle.events),
        (&live.session_id, &live.events)
    );
    let read = Bundle::read_from(&*b.storage, &out).unwrap();
    assert_eq!(read.events, bundle.events);
    assert!(matches!(ro.import_session(&out), Err(Error::ReadOnly)));
    assert!(matches!(
        ro.export_bundle("nope"),
        Err(Error::NotFound { .. })
    ));
    ro.close().unwrap();
    m.close().unwrap();
}

#[test]
fn parsing_mutated_bundles_never_panics() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    busy_session(&m, &clock, "s");
    let good = m.export_bundle("s").unwrap().to_json().unwrap();
    let mut rng = SplitMix64::new(42);
    let mut accepted = 0;
    for _ in 0..2000 {
        let mut bytes = good.clone();
        for _ in 0..=rng.below(3) {
            if bytes.is_empty() {
                break;
            }
            let i = rng.below(bytes.len() as u64) as usize;
            match rng.below(3) {
                0 => bytes[i] = rng.next_u64() as u8,
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.truncate(i),
            }
        }
        if let Ok(bundle) = parse_bundle(&bytes) {
            // Only changes outside the checksummed events can pass, and then the events
            // are exactly the exported ones.
            assert_eq!(bundle.events, parse_bundle(&good).unwrap().events);
            accepted += 1;
        }
    }
    assert!(accepted < 2000);
}

#[test]
fn imports_nest_at_most_eight_levels_and_the_ninth_is_refused_unchanged() {
    // Export an imported session and import it again, over and over: each round wraps the
    // history in one more import.
    let clock = clock();
    let b = Backend::mem();
    let m = b.open(&clock);
    busy_session(&m, &clock, "s0");
    let mut id = "s0".to_owned();
    for level in 1..=MAX_IMPORT_DEPTH {
        let bundle = m.export_bundle(&id).unwrap();
        id = m.import_bundle(bundle).unwrap().session_id().to_string();
        let first = m.export_bundle(&id).unwrap().events[0].body.clone();
        assert_eq!(first.import_depth(), level);
    }
    // The deepest bundle still parses (it is what this engine exports) ...
    let parsed = parse_bundle(&m.export_bundle(&id).unwrap().to_json().unwrap()).unwrap();
    let before = m.state();
    // ... but importing it would nest one level too deep.
    match m.import_bundle(parsed) {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "bundle");
            assert!(reason.contains("nest"), "{reason}");
        }
        other => panic!(
            "expected InvalidInput, got {:?}",
            other.map(|s| s.session_id().clone())
        ),
    }
    assert_eq!(*m.state(), *before);
    m.close().unwrap();
    // Everything that was accepted replays.
    let m = b.open(&clock);
    assert_eq!(*m.state(), *before);
    m.close().unwrap();
}

fn leaf_event() -> Event {
    Event {
        at: Timestamp(0),
        body: EventBody::SessionCreated(Box::new(SessionCreated {
            session: id("n"),
            name: "n".into(),
            agent: None,
            working_dir: None,
            timeout_secs: 0,
            config: Default::default(),
            metadata: vec![],
        })),
    }
}

fn wrapped(e: Event, levels: usize) -> Event {
    (0..levels).fold(e, |e, _| Event {
        at: Timestamp(0),
        body: EventBody::SessionImported {
            session: id("n"),
            original: id("n"),
            events: vec![e],
        },
    })
}

#[test]
fn a_payload_with_imports_nested_far_too_deep_is_a_decode_error_not_a_stack_overflow() {
    let leaf = codec::event_to_vec(&leaf_event()).unwrap();
    let one = codec::event_to_vec(&wrapped(leaf_event(), 1)).unwrap();
    // The events vector is the import's last field, so each level adds the same prefix.
    assert!(one.ends_with(&leaf[1..]));
    let level = &one[1..one.len() - (leaf.len() - 1)];
    let payload = |depth: usize| {
        let mut p = vec![one[0]];
        for _ in 0..depth {
            p.extend_from_slice(level);
        }
        p.extend_from_slice(&leaf[1..]);
        p
    };
    // The deepest nesting allowed decodes to the nested event.
    assert_eq!(
        codec::decode_event(&payload(MAX_IMPORT_DEPTH)).unwrap(),
        wrapped(leaf_event(), MAX_IMPORT_DEPTH)
    );
    // One more level, or a million (a few MiB, inside one record's limit), is refused.
    for depth in [MAX_IMPORT_DEPTH + 1, 1_000_000] {
        let err = codec::decode_event(&payload(depth)).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
    }
    // The same rule holds for bundles, whose events are JSON.
    for (depth, ok) in [(MAX_IMPORT_DEPTH, true), (MAX_IMPORT_DEPTH + 1, false)] {
        let events = serde_json::to_value(vec![wrapped(leaf_event(), depth)]).unwrap();
        let r = parse_bundle(&bundle_json("n", &events, 1));
        assert_eq!(r.is_ok(), ok, "depth {depth}: {:?}", r.err());
    }
}

/// A JSON value `depth` containers deep (arrays and objects in turn around a number).
fn nested(depth: usize) -> Value {
    // (Not `json!([v])`: the macro copies an interpolated value, which is quadratic here.)
    (0..depth).fold(json!(0), |v, i| {
        if i % 2 == 0 {
            Value::Array(vec![v])
        } else {
            Value::Object([("k".to_owned(), v)].into_iter().collect())
        }
    })
}

/// The text of [`nested`]`(depth)`, built without a `Value` (so any depth is cheap).
fn nested_text(depth: usize) -> String {
    let mut open = String::new();
    let mut close = String::new();
    for i in (0..depth).rev() {
        if i % 2 == 0 {
            open.push('[');
            close.insert(0, ']');
        } else {
            open.push_str("{\"k\":");
            close.insert(0, '}');
        }
    }
    format!("{open}0{close}")
}

/// The deepest details `s` accepts for an activity (searching up to 200 levels): every
/// depth up to it must be accepted, and the next one refused as invalid input.
fn deepest_accepted_details(s: &session_engine::ClaudeSession) -> usize {
    let mut deepest = 0;
    for depth in 1..=200 {
        match s.record_activity("probe", Some(nested(depth))) {
            Ok(_) => deepest = depth,
            Err(Error::InvalidInput { reason, .. }) => {
                assert!(reason.contains("nested"), "depth {depth}: {reason}");
                break;
            }
            Err(e) => panic!("depth {depth}: {e}"),
        }
    }
    deepest
}

/// Issue 12, defect 6: details the engine accepted made a bundle that did not parse
/// (serde_json's recursion limit, reached by the bundle's wrapping around the details).
#[test]
fn export_then_import_works_for_the_deepest_details_the_engine_accepts() {
    let clock = clock();
    let b = Backend::mem();
    let m = b.open(&clock);
    let s = m.create_session(named("deep")).unwrap();
    let deepest = deepest_accepted_details(&s);
    assert!(deepest >= 32, "{deepest}");
    let bytes = m.export_bundle("deep").unwrap().to_json().unwrap();
    let bundle = parse_bundle(&bytes).unwrap_or_else(|e| {
        panic!("the bundle of a session with details {deepest} levels deep does not parse: {e}")
    });
    assert_eq!(bundle, m.export_bundle("deep").unwrap());
    let (_, s2) = mem();
    let m2 = SessionManager::open("elsewhere", manager_options(&s2, &clock)).unwrap();
    let copy = m2.import_bytes(&bytes).unwrap().snapshot().unwrap();
    let original = m.get_session("deep").unwrap().snapshot().unwrap();
    assert_eq!(without_origin(&copy), without_origin(&original));
    assert_eq!(
        copy.body
            .activity_log
            .last()
            .unwrap()
            .details
            .text()
            .unwrap()
            .to_value(),
        nested(deepest)
    );
}

/// The deepest case the engine can produce: details, a metadata value and command
/// arguments at the depth limit, saved in a checkpoint of a session that is then cloned
/// (a clone carries the session inline, checkpoints included: the deepest wrapping an event
/// gives a JSON value), inside the deepest chain of imports allowed. Every bundle of the
/// chain parses and imports, and the last one still parses whole with a stock JSON parser.
#[test]
fn details_at_the_depth_limit_round_trip_through_the_deepest_chain_of_imports() {
    let clock = clock();
    let b = Backend::mem();
    let m = b.open(&clock);
    let s = m.create_session(named("s0")).unwrap();
    let deepest = deepest_accepted_details(&s);
    assert_eq!(deepest, MAX_JSON_DEPTH);
    let value = nested(deepest);
    s.set_metadata("deep", value.clone()).unwrap();
    s.record_command(CommandRun::succeeded("c", Duration::ZERO).with_args(value.clone()))
        .unwrap();
    s.save_checkpoint(Some("deep")).unwrap();
    let cloned = m.clone_session("s0", Some("c")).unwrap();
    let original = without_origin(&cloned.snapshot().unwrap());
    let mut id = "c".to_owned();
    for level in 1..=MAX_IMPORT_DEPTH {
        let bytes = m.export_bundle(&id).unwrap().to_json().unwrap();
        let imported = m.import_bytes(&bytes).unwrap_or_else(|e| {
            panic!("level {level}: details {deepest} deep, bundle refused: {e}")
        });
        id = imported.session_id().to_string();
        let first = m.export_bundle(&id).unwrap().events[0].body.clone();
        assert_eq!(first.import_depth(), level);
        let copy = imported.snapshot().unwrap();
        assert_eq!(copy.body, original.body, "level {level}");
        assert_eq!(copy.checkpoints, original.checkpoints, "level {level}");
    }
    // The deepest bundle parses, with the engine's parser and whole with a stock one ...
    let bytes = m.export_bundle(&id).unwrap().to_json().unwrap();
    let parsed = parse_bundle(&bytes).unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap();
    // It is as deep as the documented wrapping says, and that is within serde_json's limit.
    assert_eq!(json_depth(&bytes), BUNDLE_VALUE_WRAPPING + MAX_JSON_DEPTH);
    assert!(json_depth(&bytes) <= 127);
    // ... and importing it is refused for the import nesting, not for its JSON.
    match m.import_bundle(parsed) {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "bundle");
            assert!(reason.contains("nest imports"), "{reason}");
        }
        other => panic!(
            "expected InvalidInput, got {:?}",
            other.map(|s| s.session_id().clone())
        ),
    }
    m.close().unwrap();
    let m = b.open(&clock);
    assert_eq!(
        m.get_session(&id).unwrap().snapshot().unwrap().body,
        original.body
    );
    m.close().unwrap();
}

/// The deepest nesting of arrays and objects in the JSON text `bytes`.
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in bytes {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth -= 1,
            _ => {}
        }
    }
    deepest
}

/// The events of a one-session bundle whose activity details are `details` (any text).
fn bundle_with_details(details: &str) -> Vec<u8> {
    let clock = clock();
    let m = Backend::mem().open(&clock);
    let s = m.create_session(named("s")).unwrap();
    s.record_activity("a", Some(json!("PLACEHOLDER"))).unwrap();
    let events = serde_json::to_string(&m.export_bundle("s").unwrap().events).unwrap();
    let events = events.replace("\"PLACEHOLDER\"", details);
    bundle_text("s", &events, 2)
}

/// Issue 12: JSON values in a bundle obey the input rules of every JSON value (depth limit,
/// no duplicate keys), and so does the bundle's own object.
#[test]
fn bundles_with_json_nested_past_the_limit_or_with_duplicate_keys_are_refused() {
    let ok = bundle_with_details(&nested_text(8));
    parse_bundle(&ok).unwrap();
    for (details, needle) in [
        (nested_text(65), "nested"),
        (nested_text(200), "nested"),
        (nested_text(10_000), "nested"),
        (r#"{"a":1,"a":2}"#.to_owned(), "duplicate key"),
        (
            r#"[{"x":{"a":1,"b":{},"a":1}}]"#.to_owned(),
            "duplicate key",
        ),
    ] {
        match parse_bundle(&bundle_with_details(&details)) {
            Err(BundleError::Malformed { reason }) => {
                assert!(
                    reason.contains(needle),
                    "{}: {reason}",
                    &details[..20.min(details.len())]
                )
            }
            other => panic!("{}: {other:?}", &details[..20.min(details.len())]),
        }
    }
    // A duplicate field of the bundle itself (both copies agreeing) is refused too.
    let text = String::from_utf8(ok).unwrap();
    let doubled = text.replacen("\"source_lsn\":9,", "\"source_lsn\":9,\"source_lsn\":9,", 1);
    assert_ne!(doubled, text);
    match parse_bundle(doubled.as_bytes()) {
        Err(BundleError::Malformed { reason }) => {
            assert!(reason.contains("source_lsn"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
