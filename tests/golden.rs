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
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use session_engine::storage::{MemStorage, Storage};
use session_engine::{
    AgentId, Command, Engine, FileStorage, JsonText, Lsn, NewSession, SessionConfig, State,
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
    let state = (*e.state()).clone();
    e.close().unwrap();
    state
}

fn state_json(s: &State) -> serde_json::Value {
    serde_json::to_value(s).unwrap()
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

#[test]
fn every_golden_directory_replays_to_its_expected_state_from_its_snapshot_and_in_full() {
    for v in VERSIONS {
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
        assert_eq!(state_json(&e.state()), expected(v), "{v}");
        drop(e);
        std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
        let e = Engine::open(&dir, options(Arc::clone(&storage), &clock)).unwrap();
        assert_eq!(e.recovery_report().snapshot_lsn, None, "{v}");
        assert_eq!(state_json(&e.state()), expected(v), "{v}");
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
    for v in VERSIONS {
        let r = session_engine::verify(&golden_dir(v).join("data"), &FileStorage::new(), |_| {})
            .unwrap();
        assert!(r.is_intact(), "{v}: {r:?}");
    }
}

#[test]
fn this_build_writes_exactly_the_golden_bytes_of_the_current_format() {
    let m = Arc::new(MemStorage::new());
    let state = golden_workload(m.clone());
    assert_eq!(state_json(&state), expected(CURRENT));
    let golden = golden_dir(CURRENT).join("data");
    for sub in ["wal", "snapshots"] {
        let names = m.list_dir(&Path::new("data").join(sub)).unwrap();
        let mut on_disk: Vec<String> = std::fs::read_dir(golden.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        assert_eq!(names, on_disk, "{sub}/ differs");
        for n in names {
            let ours = m
                .file_content(&Path::new("data").join(sub).join(&n))
                .unwrap();
            let theirs = std::fs::read(golden.join(sub).join(&n)).unwrap();
            assert!(
                ours == theirs,
                "{sub}/{n}: this build writes different bytes than format {CURRENT}"
            );
        }
    }
}

#[test]
#[ignore = "regenerates the current format's golden directory; run with UPDATE_GOLDEN=1 only for a new format"]
fn regenerate_golden_current() {
    if std::env::var("UPDATE_GOLDEN").as_deref() != Ok("1") {
        return;
    }
    let m = Arc::new(MemStorage::new());
    let state = golden_workload(m.clone());
    let root = golden_dir(CURRENT);
    let _ = std::fs::remove_dir_all(&root);
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
    let text = serde_json::to_string_pretty(&state_json(&state)).unwrap();
    std::fs::write(root.join("expected_state.json"), text + "\n").unwrap();
}
