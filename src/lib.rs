//! `session-engine`: an embedded, crash-safe, event-sourced session engine for AI coding
//! agents.
//!
//! Every session action is a [`Command`] that the engine validates against the current
//! [`State`] and turns into an [`Event`], appended to a checksummed write-ahead log and
//! made durable (with group commit) before the caller is answered. The state is a pure
//! function of the log, rebuilt at open from the newest snapshot plus the log's tail.
//!
//! Start with [`SessionManager`] (sessions, agents, chains, the JSON projection files the
//! seeds' tools read) or, one level down, [`Engine`] (commands, subscriptions, the log);
//! see `ARCHITECTURE.md` for the map of the code and `docs/format.md` for the bytes on
//! disk.
//!
//! # Embedding
//!
//! A [`SessionManager`] owns one data directory: [`SessionManager::open`] takes its
//! writer lock (a second writer gets [`Error::Locked`]), recovers the state from the
//! newest snapshot and the log, and starts writing the projection files in the
//! background. Every call that changes something returns only once its event is durable
//! (with the default [`Durability::Always`], after `fdatasync`); an answered event
//! survives a crash. [`SessionManager::close`] waits for the queued commands and writes
//! the remaining projections; the next open sees everything answered before it.
//!
//! ```
//! use session_engine::{ManagerOptions, NewSession, Options, SessionManager, Status};
//!
//! # fn main() -> session_engine::Result<()> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let options = ManagerOptions::with_engine(Options::default());
//! let manager = SessionManager::open(dir.path(), options.clone())?;
//! let session = manager.create_session(NewSession::default())?;
//! let lsn = session.record_activity("user_input", Some(serde_json::json!({"message": "Hello"})))?;
//! assert_eq!(manager.last_lsn(), lsn); // durable once answered
//! let id = session.session_id().clone();
//! manager.close()?;
//!
//! // Reopened, the state is replayed from the log.
//! let manager = SessionManager::open(dir.path(), options)?;
//! let again = manager.get_session(id.as_str())?;
//! assert_eq!(again.status()?, Status::Active);
//! assert_eq!(again.snapshot()?.body.activity_log.len(), 1);
//! // The seeds' JSON file for it was written by the close.
//! assert!(manager.session_file(id.as_str())?.exists());
//! // Bad input is a typed error and changes nothing.
//! assert!(matches!(
//!     manager.get_session("../escape"),
//!     Err(session_engine::Error::InvalidInput { .. })
//! ));
//! assert_eq!(manager.last_lsn(), lsn);
//! manager.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! The test doubles (`storage::MemStorage`, `storage::FaultStorage`, the seeded
//! `storage::SplitMix64`) are behind the `test-util` feature.

#![warn(missing_docs)]

pub mod backend;
pub mod claude;
mod clock;
pub mod codec;
pub mod command;
pub mod engine;
mod error;
pub mod event;
pub mod export;
pub mod history;
pub mod import;
mod intern;
mod isotime;
pub mod manager;
pub mod projection;
pub mod protocol;
pub mod run;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod supervisor;
pub mod types;
pub mod wal;

pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{Command, Committed, NewSession, Outcome};
pub use engine::{
    CommittedEvent, Durability, Engine, EngineStats, Options, Paths, Pending, RecoveryReport,
    RepairReport, Subscription, VerifyReport, read_log, repair, verify,
};
pub use error::{Error, Result};
pub use event::{Event, EventBody};
pub use export::{Bundle, BundleError, parse_bundle};
pub use history::History;
pub use manager::{
    CancelTarget, Cancelled, ChainImport, ClaudeHandle, ClaudeRequest, ClaudeSession, ClaudeTurn,
    CommandRun, ExecRequest, ListFilter, ManagerOptions, RunFilter, RunHandle, RunOutput,
    SessionManager, SessionTracker,
};
pub use projection::{ProjectionOptions, ProjectionStatus, Projector, RebuildReport};
pub use state::{Chain, Session, SessionConfig, State, Status};
#[cfg(any(test, feature = "test-util"))]
pub use storage::MemStorage;
pub use storage::{FileStorage, Storage};
pub use types::{AgentId, JsonText, Lsn, SessionId, Timestamp};
