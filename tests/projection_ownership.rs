//! The engine writes, replaces and removes only files it created (issue 13, ownership):
//! another tool's files stop the open or are left alone, its own files that another
//! program changed or that it no longer wants are moved aside (never lost), and a power
//! cut never makes its own files look foreign.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;
use session_engine::storage::{CrashMode, MemStorage, OpenMode, Storage};
use session_engine::{Error, NewSession, ProjectionOptions, SessionId, SessionManager};

/// amplihack's `sessions/registry.json`, as its `SessionManager._save_session_registry`
/// writes it (`json.dump(..., indent=2)`).
const AMPLIHACK_REGISTRY: &str = r#"{
  "sessions": {
    "claude_session_1733100000_ab12cd34": {
      "name": "x",
      "created_at": 1733100000.5,
      "last_accessed": 1733100001.25,
      "status": "saved",
      "config": {
        "timeout": 300.0,
        "max_retries": 3,
        "retry_delay": 1.0,
        "heartbeat_interval": 30.0,
        "enable_logging": true,
        "log_level": "INFO",
        "auto_save_interval": 60.0,
        "session_name": "x"
      },
      "metadata": {}
    }
  },
  "updated_at": 1733100002.0
}"#;

/// One of amplihack's `sessions/<id>.json` files.
const AMPLIHACK_SESSION: &str = r#"{
  "session_id": "claude_session_1733100000_ab12cd34",
  "state": {
    "session_id": "claude_session_1733100000_ab12cd34",
    "start_time": 1733100000.5,
    "last_activity": 1733100001.25,
    "is_active": false,
    "command_count": 1,
    "error_count": 0,
    "last_error": null,
    "metadata": {}
  },
  "config": {
    "timeout": 300.0,
    "max_retries": 3,
    "retry_delay": 1.0,
    "heartbeat_interval": 30.0,
    "enable_logging": true,
    "log_level": "INFO",
    "auto_save_interval": 60.0,
    "session_name": "x"
  },
  "command_history": [],
  "statistics": {},
  "saved_at": 1733100002.0,
  "metadata": {}
}"#;

/// A chain file of seed 003's `SessionTracker._save_sessions`.
const SEED_003_CHAIN: &str = r#"{
  "agent_id": "py-agent",
  "current_session_id": "sess-2",
  "interaction_count": 2,
  "sessions": [
    {
      "session_id": "sess-1",
      "created_at": "2025-11-08T10:30:00.123456",
      "interaction_count": 1,
      "last_prompt": "hi",
      "last_response": "hello",
      "metadata": {}
    },
    {
      "session_id": "sess-2",
      "created_at": "2025-11-08T10:31:00.000001",
      "interaction_count": 1,
      "last_prompt": "more",
      "last_response": "sure",
      "metadata": null
    }
  ]
}"#;

fn named(id: &str) -> NewSession {
    NewSession {
        id: Some(SessionId::new(id).unwrap()),
        ..NewSession::default()
    }
}

/// Writes `data` at `rel`, creating its folders, as another program would.
fn plant(b: &Backend, rel: &str, data: &[u8]) {
    if let Some(parent) = Path::new(rel).parent() {
        b.storage
            .create_dir_all(&b.path(&parent.to_string_lossy()))
            .unwrap();
    }
    b.write(rel, data);
}

fn open_err(b: &Backend, clock: &session_engine::ManualClock) -> Error {
    SessionManager::open(&b.dir, manager_options(&b.storage, clock)).unwrap_err()
}

fn foreign_files(e: &Error) -> Vec<PathBuf> {
    match e {
        Error::ForeignFiles { files } => files.clone(),
        other => panic!("expected ForeignFiles, got {other:?}"),
    }
}

/// Everything under the data directory except the log's own folders and lock.
fn all_files(b: &Backend) -> Vec<(String, Vec<u8>)> {
    b.files_under(".")
        .into_iter()
        .filter(|(p, _)| !(p.starts_with("wal/") || p.starts_with("snapshots/") || p == "LOCK"))
        .collect()
}

#[test]
fn an_amplihack_runtime_directory_stops_the_open_and_is_left_byte_for_byte() {
    for b in Backend::both() {
        let clock = clock();
        b.storage.create_dir_all(&b.dir).unwrap();
        plant(&b, "sessions/registry.json", AMPLIHACK_REGISTRY.as_bytes());
        plant(
            &b,
            "sessions/claude_session_1733100000_ab12cd34.json",
            AMPLIHACK_SESSION.as_bytes(),
        );
        let before = all_files(&b);
        let e = open_err(&b, &clock);
        assert_eq!(
            foreign_files(&e),
            vec![b.path("sessions/registry.json")],
            "{}",
            b.name
        );
        let msg = e.to_string();
        assert!(msg.contains("registry.json"), "{msg}");
        assert!(msg.contains("session-engine import"), "{msg}");
        assert!(msg.contains("--data-dir"), "{msg}");
        assert_eq!(e.kind(), "foreign_files");
        // Nothing of the projections was written: no manifest, no marker, no new files.
        assert_eq!(all_files(&b), before, "{}", b.name);
        // And it stays refused, every time.
        foreign_files(&open_err(&b, &clock));
        assert_eq!(all_files(&b), before, "{}", b.name);
    }
}

#[test]
fn a_seed_003_chain_file_at_the_first_open_stops_it() {
    for b in Backend::both() {
        let clock = clock();
        b.storage.create_dir_all(&b.dir).unwrap();
        plant(
            &b,
            "chains/py-agent_sessions.json",
            SEED_003_CHAIN.as_bytes(),
        );
        let e = open_err(&b, &clock);
        assert_eq!(
            foreign_files(&e),
            vec![b.path("chains/py-agent_sessions.json")],
            "{}",
            b.name
        );
        assert_eq!(
            b.read("chains/py-agent_sessions.json"),
            SEED_003_CHAIN.as_bytes()
        );
        assert!(!b.exists("projections.manifest"));
    }
}

#[test]
fn a_chain_file_of_another_tool_is_never_replaced_by_the_next_link() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        m.create_session(named("s1")).unwrap();
        flush(&m);
        m.close().unwrap();
        // The seed 003 tracker writes its file after the engine's first open: not a path
        // the state has, so the directory opens.
        plant(
            &b,
            "chains/py-agent_sessions.json",
            SEED_003_CHAIN.as_bytes(),
        );
        let m = b.open(&clock);
        flush(&m);
        // The link is committed; its projection is refused, naming the file.
        m.chain("py-agent")
            .unwrap()
            .update_session("sess-3", "p", "r", None)
            .unwrap();
        let e = m.flush_projections().unwrap_err();
        assert_eq!(
            foreign_files(&e),
            vec![b.path("chains/py-agent_sessions.json")]
        );
        let st = m.projection_status().unwrap();
        assert!(st.is_behind() && st.last_error.is_some());
        assert!(st.last_error.unwrap().contains("py-agent_sessions.json"));
        let agent = session_engine::AgentId::new("py-agent").unwrap();
        assert_eq!(m.state().chain(&agent).unwrap().sessions.len(), 1);
        m.close().unwrap();
        assert_eq!(
            b.read("chains/py-agent_sessions.json"),
            SEED_003_CHAIN.as_bytes(),
            "{}",
            b.name
        );
        // Now the state names that path: the next open stops.
        foreign_files(&open_err(&b, &clock));
        assert_eq!(
            b.read("chains/py-agent_sessions.json"),
            SEED_003_CHAIN.as_bytes()
        );
    }
}

#[test]
fn a_rebuild_leaves_foreign_files_it_does_not_write_untouched() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        for i in 0..3 {
            let s = m.create_session(named(&format!("s{i}"))).unwrap();
            s.record_activity("work", None).unwrap();
        }
        m.chain("agent")
            .unwrap()
            .update_session("e", "p", "r", None)
            .unwrap();
        flush(&m);
        plant(&b, "sessions/session_foreign.json", b"{\"theirs\": true}");
        plant(
            &b,
            "chains/py-agent_sessions.json",
            SEED_003_CHAIN.as_bytes(),
        );
        let r = m.rebuild_projections().unwrap();
        assert_eq!(r.moved_aside, 0, "{}", b.name);
        assert_eq!((r.sessions, r.chains), (3, 1));
        m.close().unwrap();
        // A reopen (its check and catch-up) leaves them too.
        let m = b.open(&clock);
        flush(&m);
        m.rebuild_projections().unwrap();
        m.close().unwrap();
        assert_eq!(
            b.read("sessions/session_foreign.json"),
            b"{\"theirs\": true}"
        );
        assert_eq!(
            b.read("chains/py-agent_sessions.json"),
            SEED_003_CHAIN.as_bytes()
        );
        assert!(b.attic().is_empty(), "{}: {:?}", b.name, b.attic());
    }
}

#[test]
fn a_foreign_file_appearing_where_the_engine_is_about_to_create_one_is_not_overwritten() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        m.create_session(named("s1")).unwrap();
        flush(&m);
        plant(&b, "sessions/session_s2.json", b"another program's s2");
        m.create_session(named("s2")).unwrap();
        let e = m.flush_projections().unwrap_err();
        assert_eq!(foreign_files(&e), vec![b.path("sessions/session_s2.json")]);
        assert_eq!(b.read("sessions/session_s2.json"), b"another program's s2");
        // The command is committed; once the other file is gone the projector catches up.
        assert!(m.state().session(&common::id("s2")).is_some());
        b.remove("sessions/session_s2.json");
        flush(&m);
        assert_eq!(
            b.json("sessions/session_s2.json")["session_id"],
            json!("s2")
        );
        m.close().unwrap();
    }
}

/// Puts another program's file at the target of the rename that would create `needle`,
/// just before the rename: the moment between the engine's look and its creation.
#[derive(Debug)]
struct PlantBeforeRename {
    storage: Arc<dyn Storage>,
    needle: &'static str,
    armed: AtomicBool,
}

impl Hooks for PlantBeforeRename {
    fn rename(&self, _from: &Path, to: &Path) -> std::io::Result<()> {
        if to.to_string_lossy().ends_with(self.needle) && self.armed.swap(false, Ordering::SeqCst) {
            let mut f = self.storage.open(to, OpenMode::CreateNew)?;
            f.write_at(0, b"planted")?;
        }
        Ok(())
    }
}

#[test]
fn a_foreign_file_planted_between_the_look_and_the_creation_is_not_overwritten() {
    for base in Backend::both() {
        let hooked = Arc::new(Hooked {
            inner: Arc::clone(&base.storage),
            hooks: PlantBeforeRename {
                storage: Arc::clone(&base.storage),
                needle: "sessions/session_s2.json",
                armed: false.into(),
            },
        });
        let mut b = Backend::mem();
        b.storage = hooked.clone();
        b.dir = base.dir.clone();
        let clock = clock();
        let m = b.open(&clock);
        m.create_session(named("s1")).unwrap();
        flush(&m);
        hooked.armed.store(true, Ordering::SeqCst);
        m.create_session(named("s2")).unwrap();
        let e = m.flush_projections().unwrap_err();
        assert_eq!(foreign_files(&e), vec![b.path("sessions/session_s2.json")]);
        assert_eq!(
            b.read("sessions/session_s2.json"),
            b"planted",
            "{}",
            base.name
        );
        // No temporary file is left behind, and the path is not the engine's.
        assert_eq!(
            b.list("sessions")
                .into_iter()
                .filter(|n| n.ends_with(".tmp"))
                .count(),
            0
        );
        m.close().unwrap();
        foreign_files(&open_err(&b, &clock));
    }
}

#[test]
fn an_own_file_changed_by_another_program_is_moved_aside_not_lost() {
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s1 = m.create_session(named("s1")).unwrap();
        s1.record_activity("first", None).unwrap();
        flush(&m);
        // Another program edits the engine's files while it runs ...
        let edited = b"{\"edited by\": \"someone else\"}".to_vec();
        b.write("sessions/session_s1.json", &edited);
        let mut log = b.read("logs/session_s1.log");
        log.extend_from_slice(b"a line another program appended\n");
        b.write("logs/session_s1.log", &log);
        s1.record_activity("second", None).unwrap();
        flush(&m);
        // ... the engine writes its own content again ...
        let f = b.json("sessions/session_s1.json");
        assert_eq!(f["activity_log"].as_array().unwrap().len(), 2, "{}", b.name);
        let lines = b.log_lines("logs/session_s1.log");
        assert_eq!(lines[0]["event"], json!("session_created"));
        assert_eq!(lines.last().unwrap()["details"]["action"], json!("second"));
        // ... and what the other program wrote is in the attic, byte for byte.
        let attic = b.attic();
        assert!(
            attic
                .iter()
                .any(|(p, bytes)| p == "sessions/session_s1.json" && *bytes == edited),
            "{}: {:?}",
            b.name,
            attic.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
        assert!(
            attic
                .iter()
                .any(|(p, bytes)| p == "logs/session_s1.log" && *bytes == log)
        );
        m.close().unwrap();

        // While the engine is closed, too.
        let registry = b"{\"sessions\": {}, \"edited\": 1}".to_vec();
        b.write("sessions/registry.json", &registry);
        let m = b.open(&clock);
        m.create_session(named("s2")).unwrap();
        flush(&m);
        assert!(b.json("sessions/registry.json")["sessions"]["s2"].is_object());
        assert!(
            b.attic()
                .iter()
                .any(|(p, bytes)| p == "sessions/registry.json" && *bytes == registry)
        );
        m.close().unwrap();
    }
}

#[test]
fn an_own_file_rewritten_unchanged_is_not_moved_aside() {
    // The cheap check (stat version) falls back to the content: a file the engine wrote,
    // copied back over itself by another program, is still its own.
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        let s1 = m.create_session(named("s1")).unwrap();
        flush(&m);
        let same = b.read("sessions/session_s1.json");
        b.remove("sessions/session_s1.json");
        b.write("sessions/session_s1.json", &same);
        s1.record_activity("a", None).unwrap();
        flush(&m);
        assert!(b.attic().is_empty(), "{}: {:?}", b.name, b.attic());
        m.close().unwrap();
    }
}

#[test]
fn own_files_of_sessions_a_repair_took_away_are_moved_aside_not_deleted() {
    let b = Backend::mem();
    let mem = b.mem.clone().unwrap();
    let clock = clock();
    let m = b.open(&clock);
    for i in 0..3 {
        m.create_session(named(&format!("s{i}"))).unwrap();
        flush(&m);
    }
    m.close().unwrap();
    let s2_file = b.read("sessions/session_s2.json");
    let s2_log = b.read("logs/session_s2.log");
    // Damage the last record (the creation of s2): the repair moves it aside.
    let seg = segments(&mem, "data").pop().unwrap();
    let bytes = mem.file_content(&seg).unwrap();
    let (start, end) = *record_ranges(&bytes).last().unwrap();
    let mut damaged = bytes.clone();
    damaged[(start + end) / 2] ^= 0x40;
    mem.set_file_content(&seg, damaged).unwrap();
    session_engine::repair(&b.dir, Arc::clone(&b.storage)).unwrap();
    let m = b.open(&clock);
    flush(&m);
    assert!(m.state().session(&common::id("s2")).is_none());
    m.close().unwrap();
    assert!(!b.exists("sessions/session_s2.json"));
    assert!(!b.exists("logs/session_s2.log"));
    let attic = b.attic();
    assert!(attic.contains(&("sessions/session_s2.json".into(), s2_file)));
    assert!(attic.contains(&("logs/session_s2.log".into(), s2_log)));
    assert!(b.exists("sessions/session_s1.json"));
}

/// The workload of the power-cut sweep: every kind of file the projector creates.
fn creates(m: &SessionManager, n: usize) {
    for i in 0..n {
        let Ok(s) = m.create_session(named(&format!("s{i}"))) else {
            return;
        };
        let _ = s.record_activity("work", None);
        if i % 2 == 1 {
            let _ = m.archive_session(&format!("s{i}"));
        }
        let _ = m
            .chain(&format!("agent{}", i % 2))
            .and_then(|c| c.update_session(&format!("e{i}"), "p", "r", None));
        let _ = m.flush_projections();
    }
}

fn options_on(
    storage: &Arc<dyn Storage>,
    clock: &session_engine::ManualClock,
) -> session_engine::ManagerOptions {
    let mut o = manager_options(storage, clock);
    o.projections = Some(ProjectionOptions {
        max_retries: 1,
        retry_delay: Duration::from_millis(1),
        ..fast_projections()
    });
    o
}

#[test]
fn a_power_cut_at_any_sync_never_makes_the_engines_own_files_look_foreign() {
    // Count the syncs of the workload, then cut the power at each of them.
    let clock = clock();
    let probe = Arc::new(MemStorage::new());
    let storage: Arc<dyn Storage> = probe.clone();
    let m = SessionManager::open("data", options_on(&storage, &clock)).unwrap();
    creates(&m, 4);
    m.close().unwrap();
    let total = probe.sync_count();
    assert!(total > 20, "{total} syncs");
    let mut images = 0;
    for halt in 0..total {
        let mem = Arc::new(MemStorage::new());
        mem.halt_after_syncs(halt);
        let storage: Arc<dyn Storage> = mem.clone();
        if let Ok(m) = SessionManager::open("data", options_on(&storage, &clock)) {
            creates(&m, 4);
            let _ = m.close();
        }
        for mode in [CrashMode::DurableOnly, CrashMode::ALL[(halt % 4) as usize]] {
            let image: Arc<dyn Storage> = Arc::new(mem.crash(halt, mode));
            images += 1;
            match SessionManager::open("data", manager_options(&image, &clock)) {
                Ok(m) => {
                    m.flush_projections().unwrap();
                    m.close().unwrap();
                }
                Err(e) => panic!("power cut at sync {halt} ({mode:?}): {e}"),
            }
        }
    }
    println!("{total} sync points, {images} crash images, all reopened");
}

#[test]
fn a_directory_written_without_a_manifest_has_its_own_files_adopted() {
    // An older release kept no manifest, but left its marker: the files of its state
    // are the engine's, adopted at the first open; others stay foreign.
    for b in Backend::both() {
        let clock = clock();
        let m = b.open(&clock);
        for i in 0..3 {
            m.create_session(named(&format!("s{i}"))).unwrap();
        }
        m.archive_session("s1").unwrap();
        m.chain("agent")
            .unwrap()
            .update_session("e", "p", "r", None)
            .unwrap();
        flush(&m);
        m.close().unwrap();
        b.remove("projections.manifest");
        plant(&b, "sessions/session_ghost.json", b"not the engine's");
        let before = projection_files(&b);
        let m = b.open(&clock);
        flush(&m);
        m.resume_session("s0")
            .unwrap()
            .record_activity("a", None)
            .unwrap();
        let r = m.rebuild_projections().unwrap();
        assert_eq!(r.moved_aside, 0, "{}", b.name);
        m.close().unwrap();
        assert_eq!(b.read("sessions/session_ghost.json"), b"not the engine's");
        assert!(b.attic().is_empty(), "{}: {:?}", b.name, b.attic());
        let after = projection_files(&b);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        );
        // Without a marker either, it would have been a fresh directory: refused.
        b.remove("projections.manifest");
        b.remove("projections.json");
        foreign_files(&open_err(&b, &clock));
    }
}

#[test]
fn a_manifest_of_a_newer_release_refuses_the_open() {
    let b = Backend::mem();
    let clock = clock();
    b.open(&clock).close().unwrap();
    let json = r#"{"format":"session-engine-manifest","version":99}"#;
    let line = format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()));
    b.write("projections.manifest", line.as_bytes());
    match open_err(&b, &clock) {
        Error::UnsupportedVersion { found, .. } => assert_eq!(found, 99),
        e => panic!("{e}"),
    }
}

#[test]
fn the_manifest_stays_proportional_to_the_files_not_to_the_writes() {
    let b = Backend::mem();
    let clock = clock();
    let m = b.open(&clock);
    let sessions: Vec<_> = (0..50)
        .map(|i| m.create_session(named(&format!("s{i}"))).unwrap())
        .collect();
    // 102 files (the registry, the marker, 50 session files and their logs), each
    // rewritten 60 times: about 6,000 records, past the 2 x 102 + 4,096 that has the
    // manifest rewritten whole.
    for round in 0..60 {
        for s in &sessions {
            s.record_activity("a", Some(json!({"round": round})))
                .unwrap();
        }
        flush(&m);
    }
    m.close().unwrap();
    let lines = b
        .read("projections.manifest")
        .iter()
        .filter(|&&c| c == b'\n')
        .count();
    assert!(lines <= 2 * 102 + 4096 + 110, "{lines} lines");
    let m = b.open(&clock);
    m.resume_session("s0")
        .unwrap()
        .record_activity("after", None)
        .unwrap();
    flush(&m);
    m.close().unwrap();
    assert!(b.attic().is_empty());
}
