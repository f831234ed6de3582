//! Activities' details live in the log (state schema 5): the state keeps each activity's
//! action, time and the LSN of its `activity_recorded` event, and a session's history
//! reads the details from the log on demand. A snapshot no longer holds them; damage to
//! them in the log is reported, with its file and offset, when the history is read.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use session_engine::codec::{encode_state, state_schema_of};
use session_engine::state::Details;
use session_engine::{
    Command, Engine, Error, FileStorage, JsonText, NewSession, Options, SessionId,
};

fn id(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn create(e: &Engine, name: &str) {
    e.execute(Command::CreateSession(Box::new(NewSession {
        id: Some(id(name)),
        ..NewSession::default()
    })))
    .unwrap();
}

fn activity(e: &Engine, session: &str, action: &str, details: Option<&str>) {
    e.execute(Command::RecordActivity {
        session: id(session),
        action: action.into(),
        details: details.map(|d| JsonText::parse(d).unwrap()),
    })
    .unwrap();
}

/// 1 KiB of details for activity `i`.
fn kib(i: usize) -> String {
    format!(r#"{{"i":{i},"text":"{}"}}"#, "x".repeat(1000))
}

#[test]
fn a_snapshot_of_1000_activities_of_1_kib_details_holds_no_details() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Options::default()).unwrap();
    create(&e, "s");
    for i in 0..1000 {
        activity(&e, "s", "tool_use", Some(&kib(i)));
    }
    let state = e.state();
    let s = state.session(&id("s")).unwrap();
    assert!(s.body.activity_log.iter().all(|a| a.details.is_in_log()));
    assert_eq!(state_schema_of(&state), 5);
    let mut bytes = Vec::new();
    encode_state(&state, &mut bytes).unwrap();
    // The details alone are over 1 MB; an activity in the state is a few bytes.
    assert!(bytes.len() < 100_000, "{} bytes", bytes.len());
    // And the history reads every one of them back, oldest or newest first.
    let h = e.history(&id("s")).unwrap();
    let all: Vec<_> = h.activities().iter().map(|a| a.unwrap()).collect();
    assert_eq!(all.len(), 1000);
    for (i, a) in all.iter().enumerate() {
        assert_eq!(a.index, i);
        assert_eq!(a.value.details.text().unwrap().as_str(), kib(i));
    }
    let newest: Vec<_> = h.activities().iter().rev().map(|a| a.unwrap()).collect();
    assert_eq!(newest.len(), 1000);
    assert_eq!(newest[0].value.details.text().unwrap().as_str(), kib(999));
    assert_eq!(newest[999].value.details.text().unwrap().as_str(), kib(0));
    e.close().unwrap();
}

#[test]
fn a_state_without_details_in_the_log_keeps_its_older_schema() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Options::default()).unwrap();
    create(&e, "s");
    activity(&e, "s", "no_details", None);
    let state = e.state();
    assert_eq!(
        state.session(&id("s")).unwrap().body.activity_log[0].details,
        Details::None
    );
    assert_eq!(state_schema_of(&state), 1);
    e.close().unwrap();
}

#[test]
fn details_come_back_after_a_reopen_from_a_snapshot_in_checkpoints_restores_and_clones() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Options::default()).unwrap();
    create(&e, "a");
    activity(&e, "a", "one", Some(r#"{"n":1}"#));
    e.execute(Command::SaveCheckpoint {
        session: id("a"),
        label: None,
    })
    .unwrap();
    activity(&e, "a", "two", Some(r#"{"n":2}"#));
    e.execute(Command::Clone {
        source: id("a"),
        new_id: Some(id("b")),
    })
    .unwrap();
    e.execute(Command::RestoreCheckpoint {
        session: id("a"),
        index: Some(0),
    })
    .unwrap();
    activity(&e, "b", "three", Some(r#"{"n":3}"#));
    e.snapshot().unwrap();
    e.close().unwrap();
    let e = Engine::open(dir.path(), Options::default()).unwrap();
    assert!(e.recovery_report().snapshot_lsn.is_some());
    let read = |s: &str| -> Vec<(String, String)> {
        let h = e.history(&id(s)).unwrap();
        h.activities()
            .iter()
            .map(|a| {
                let a = a.unwrap().value;
                (a.action.to_string(), a.details.text().unwrap().to_string())
            })
            .collect()
    };
    let p = |a: &str, d: &str| (a.to_string(), d.to_string());
    assert_eq!(read("a"), [p("one", r#"{"n":1}"#)]);
    assert_eq!(
        read("b"),
        [
            p("one", r#"{"n":1}"#),
            p("two", r#"{"n":2}"#),
            p("three", r#"{"n":3}"#)
        ]
    );
    // An export carries the details themselves, the clone's included.
    let bundle = session_engine::export::Bundle::export(&e, &id("b")).unwrap();
    let json = String::from_utf8(bundle.to_json().unwrap()).unwrap();
    assert!(json.contains(r#"{"n":2}"#), "{json}");
    e.close().unwrap();
}

/// The segment holding `needle`, and the needle's offset in it.
fn find(wal: &Path, needle: &[u8]) -> (std::path::PathBuf, usize) {
    for entry in std::fs::read_dir(wal).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            return (path, at);
        }
    }
    panic!("no segment holds the needle");
}

#[test]
fn a_bit_flipped_in_details_in_the_log_is_reported_when_the_history_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Options::default()).unwrap();
    create(&e, "s");
    for i in 0..10 {
        let d = format!(r#"{{"marker":"needle-{i:02}"}}"#);
        activity(&e, "s", "step", Some(&d));
    }
    e.snapshot().unwrap();
    e.close().unwrap();
    // Damage inside the details of the fourth activity (the open reads nothing before
    // the snapshot's last record).
    let (segment, at) = find(&dir.path().join("wal"), b"needle-03");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[at + 2] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    let report = session_engine::verify(dir.path(), &FileStorage::new(), |_| {}).unwrap();
    let damage = report.damage.expect("verify finds the flip");

    let e = Engine::open_read_only(dir.path(), Options::default()).unwrap();
    assert!(
        e.recovery_report().snapshot_lsn.is_some(),
        "opened from the snapshot"
    );
    // Counts are in the state: no read.
    let h = e.history(&id("s")).unwrap();
    assert_eq!(h.activities().len(), 10);
    let read: Result<Vec<_>, Error> = h.activities().iter().map(|a| a.map(|a| a.value)).collect();
    match read {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!((&file, offset), (&damage.file, damage.offset));
            assert_eq!(file, segment);
            assert!(offset < at as u64);
        }
        other => panic!("expected corruption at the flip, got {other:?}"),
    }
    // Newest first meets it too; nothing is ever served with different content.
    let back: Vec<_> = h.activities().iter().rev().collect();
    assert!(
        back.iter()
            .any(|a| matches!(a, Err(Error::Corruption { .. })))
    );
    for a in back.iter().flatten() {
        assert!(a.value.details.text().unwrap().as_str().contains("needle-"));
        assert!(
            !a.value
                .details
                .text()
                .unwrap()
                .as_str()
                .contains("needle-03")
        );
    }
    assert!(matches!(
        e.state_with_details(),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn a_clone_submitted_behind_activities_carries_their_details_whatever_the_batches() {
    // The activities and the clone are queued together, so the writer usually decides
    // them in one batch: the clone's details then come from the batch, not the log.
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Options::default()).unwrap();
    create(&e, "src");
    for round in 0..5 {
        let mut pending: Vec<_> = (0..20)
            .map(|i| {
                e.submit(Command::RecordActivity {
                    session: id("src"),
                    action: format!("r{round}-{i}"),
                    details: Some(JsonText::parse(&format!(r#"{{"r":{round},"i":{i}}}"#)).unwrap()),
                })
            })
            .collect();
        let copy = format!("copy-{round}");
        pending.push(e.submit(Command::Clone {
            source: id("src"),
            new_id: Some(id(&copy)),
        }));
        for p in pending {
            p.wait().unwrap();
        }
        let h = e.history(&id(&copy)).unwrap();
        let got: Vec<String> = h
            .activities()
            .iter()
            .map(|a| a.unwrap().value.details.text().unwrap().to_string())
            .collect();
        let want: Vec<String> = (0..=round)
            .flat_map(|r| (0..20).map(move |i| format!(r#"{{"r":{r},"i":{i}}}"#)))
            .collect();
        assert_eq!(got, want, "round {round}");
        // The clone holds them in memory: its event carried them.
        let state = e.state();
        let s = state.session(&id(&copy)).unwrap();
        assert!(!s.has_details_in_log());
    }
    e.close().unwrap();
}
