//! `session-engine`: an embedded, crash-safe, event-sourced session engine for AI coding
//! agents.
//!
//! Every session action is a [`Command`] that the engine validates against the current
//! [`State`] and turns into an [`Event`], appended to a checksummed write-ahead log and
//! made durable (with group commit) before the caller is answered. The state is a pure
//! function of the log, rebuilt at open from the newest snapshot plus the log's tail.
//!
//! Start with [`Engine::open`]; see `ARCHITECTURE.md` for the map of the code and
//! `docs/format.md` for the bytes on disk.

#![warn(missing_docs)]

pub mod backend;
pub mod claude;
pub mod clock;
pub mod codec;
pub mod command;
pub mod engine;
pub mod error;
pub mod event;
pub mod export;
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
pub use manager::{
    CancelTarget, Cancelled, ChainImport, ClaudeHandle, ClaudeRequest, ClaudeSession, ClaudeTurn,
    CommandRun, ExecRequest, ListFilter, ManagerOptions, RunFilter, RunHandle, RunOutput,
    SessionManager, SessionTracker,
};
pub use projection::{ProjectionOptions, ProjectionStatus, Projector, RebuildReport};
pub use state::{Chain, Session, SessionConfig, State, Status};
pub use storage::{FileStorage, MemStorage, Storage};
pub use types::{AgentId, JsonText, Lsn, SessionId, Timestamp};
