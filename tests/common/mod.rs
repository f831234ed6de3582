//! Shared helpers for the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod checks;
pub mod model;
pub mod workload;

use std::path::Path;
use std::sync::Arc;

use session_engine::storage::{MemStorage, Storage};
use session_engine::{
    Command, Durability, Engine, JsonText, ManualClock, NewSession, Options, SessionId, Timestamp,
};

/// 2025-11-08T10:30:00Z, the seeds' example time.
pub const T0: i64 = 1_762_597_800;

pub fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_secs(T0))
}

/// Options for deterministic tests: manual clock, no watchdog, no automatic snapshots.
pub fn options(storage: Arc<dyn Storage>, clock: &ManualClock) -> Options {
    Options {
        durability: Durability::Always,
        segment_bytes: 8 * 1024,
        snapshot_every: 0,
        keep_snapshots: 3,
        max_batch: 64,
        watchdog_interval: None,
        storage,
        clock: Arc::new(clock.clone()),
    }
}

pub fn mem() -> (Arc<MemStorage>, Arc<dyn Storage>) {
    let m = Arc::new(MemStorage::new());
    let s: Arc<dyn Storage> = m.clone();
    (m, s)
}

pub fn open(storage: &Arc<dyn Storage>, clock: &ManualClock) -> Engine {
    Engine::open("data", options(Arc::clone(storage), clock)).unwrap()
}

pub fn id(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

pub fn create(engine: &Engine, s: &str) -> SessionId {
    let c = engine
        .execute(Command::CreateSession(Box::new(NewSession {
            id: Some(id(s)),
            ..NewSession::default()
        })))
        .unwrap();
    match c.outcome {
        session_engine::Outcome::Session(id) => id,
        o => panic!("unexpected outcome {o:?}"),
    }
}

pub fn activity(engine: &Engine, s: &str, action: &str) -> session_engine::Committed {
    engine
        .execute(Command::RecordActivity {
            session: id(s),
            action: action.into(),
            details: Some(JsonText::parse(&format!("{{\"n\":\"{action}\"}}")).unwrap()),
        })
        .unwrap()
}

pub fn segments(storage: &MemStorage, dir: &str) -> Vec<std::path::PathBuf> {
    storage
        .list_dir(&Path::new(dir).join("wal"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .map(|n| Path::new(dir).join("wal").join(n))
        .collect()
}
