//! The library's one error type.
//!
//! Every variant is something a caller can act on: retry after an I/O error, run
//! `verify`/`repair` after corruption, fix the input after `InvalidInput`, reopen after
//! `Poisoned`. Messages name the file and byte offset where that matters and say what to do
//! next. `anyhow` belongs to the binary only.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::types::Lsn;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
///
/// `Error` is `Clone`: when one failure concerns several callers (a failed write or fsync
/// answers every command of its batch, a failed snapshot every caller that asked for it),
/// each receives the same error, with the same variant, kind and message.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O operation failed.
    Io {
        /// What the engine was doing ("write segment", "fsync snapshot", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error, shared (`io::Error` is not `Clone`): its `kind()` and
        /// message are those of the operation that failed.
        source: Arc<io::Error>,
    },
    /// Bytes on disk break a format rule. The engine refuses to open rather than guess.
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage inside `file`.
        offset: u64,
        /// What rule the bytes break.
        reason: String,
    },
    /// A file was written by a format version this build does not understand.
    UnsupportedVersion {
        /// The file carrying the version.
        file: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A write or fsync failed earlier; the in-memory state may no longer match the disk,
    /// so the engine refuses further writes. Reopening the directory recovers.
    Poisoned {
        /// The error that poisoned the engine.
        cause: String,
    },
    /// Another process holds the data directory's writer lock.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A session, agent chain or checkpoint does not exist.
    NotFound {
        /// What kind of thing was looked up ("session", "checkpoint", ...).
        kind: &'static str,
        /// Its identifier.
        id: String,
    },
    /// An id is already taken.
    AlreadyExists {
        /// What kind of thing ("session").
        kind: &'static str,
        /// The id in use.
        id: String,
    },
    /// Input that breaks a documented rule (unsafe id, oversized value, malformed JSON...).
    InvalidInput {
        /// The field or argument at fault.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The operation is not allowed in the session's current status.
    InvalidState {
        /// The session.
        session: String,
        /// What was attempted.
        op: &'static str,
        /// Why it was refused (usually the current status).
        reason: String,
    },
    /// The engine was opened read-only.
    ReadOnly,
    /// The engine has been closed.
    Closed,
    /// An export bundle was refused (not a bundle, another version, damaged or malformed);
    /// nothing was imported.
    InvalidBundle {
        /// The bundle's file, when it was read from one.
        path: Option<PathBuf>,
        /// Why it was refused.
        reason: crate::export::BundleError,
    },
    /// A seed 003 tracker file (`<agent>_sessions.json`) was refused by `import`: not a
    /// regular file, too large, not JSON, a field missing or of the wrong type, an agent id
    /// that is not a safe file name, or the chain's projection path holding another file.
    /// Nothing was imported.
    InvalidChainFile {
        /// The file (or the directory entry) refused.
        path: PathBuf,
        /// Why.
        reason: crate::import::seed003::ChainFileError,
    },
    /// Paths the JSON projections are written to hold files session-engine did not write
    /// (another tool's: amplihack's `sessions/registry.json`, seed 003's
    /// `chains/<agent>_sessions.json`): the directory is not opened for writing, so they
    /// are never overwritten, and nothing was changed. Adopt them (`session-engine import`)
    /// or use another data directory.
    ForeignFiles {
        /// Every such file found, sorted.
        files: Vec<PathBuf>,
    },
    /// A point-in-time request names an LSN the log does not have.
    LsnOutOfRange {
        /// The LSN asked for.
        requested: Lsn,
        /// The newest LSN in the log.
        last: Lsn,
    },
    /// The data directory writes its projections in another format than the one asked
    /// for (`projection::format`); nothing was changed.
    ProjectionFormatMismatch {
        /// The data directory.
        dir: PathBuf,
        /// The format it records.
        recorded: &'static str,
        /// The format asked for.
        requested: &'static str,
    },
    /// Files to import (another tool's directory) were refused; nothing was imported.
    InvalidImport {
        /// The file or directory at fault.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A remote log backend refused an append because another writer appended first (its
    /// expected last sequence did not hold): nothing of the refused batch was stored.
    LogConflict {
        /// The log (`nats://...` and the stream).
        log: String,
        /// What the log reported.
        reason: String,
    },
    /// A remote log backend could not be reached, or could not store a write, within its
    /// time limit (no server answering, no quorum of replicas, the stream missing, a server
    /// too old). A batch that got this error was not acknowledged; it may or may not be in
    /// the log, and a reopen reads what is.
    LogUnavailable {
        /// The log (`nats://...` and the stream).
        log: String,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// A short stable name for the variant, used in JSON answers and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Corruption { .. } => "corruption",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::Poisoned { .. } => "poisoned",
            Error::Locked { .. } => "locked",
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::InvalidInput { .. } => "invalid_input",
            Error::InvalidState { .. } => "invalid_state",
            Error::ReadOnly => "read_only",
            Error::Closed => "closed",
            Error::LsnOutOfRange { .. } => "lsn_out_of_range",
            Error::InvalidBundle { .. } => "invalid_bundle",
            Error::InvalidChainFile { .. } => "invalid_chain_file",
            Error::ProjectionFormatMismatch { .. } => "projection_format_mismatch",
            Error::InvalidImport { .. } => "invalid_import",
            Error::ForeignFiles { .. } => "foreign_files",
            Error::LogConflict { .. } => "log_conflict",
            Error::LogUnavailable { .. } => "log_unavailable",
        }
    }

    /// True when the error was caused by the caller's input or the current state, not by the
    /// engine or the disk: the command was refused and nothing changed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::NotFound { .. }
                | Error::AlreadyExists { .. }
                | Error::InvalidInput { .. }
                | Error::InvalidState { .. }
                | Error::LsnOutOfRange { .. }
                | Error::InvalidBundle { .. }
                | Error::InvalidChainFile { .. }
                | Error::ProjectionFormatMismatch { .. }
                | Error::InvalidImport { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "I/O error during {op} on {}: {source}", path.display())
            }
            Error::Corruption {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corruption in {} at byte offset {offset}: {reason}; run `session-engine verify` \
                 for a full report and `session-engine repair` to move the damaged bytes aside",
                file.display()
            ),
            Error::UnsupportedVersion {
                file,
                found,
                supported,
            } => write!(
                f,
                "{} has format version {found}, but this build reads versions up to {supported}; \
                 upgrade session-engine",
                file.display()
            ),
            Error::Poisoned { cause } => write!(
                f,
                "engine is poisoned after a failed write ({cause}); it refuses further writes \
                 until the data directory is reopened"
            ),
            Error::Locked { path } => write!(
                f,
                "data directory is in use by another process (lock held on {}); read-only \
                 commands such as verify, replay and export still work",
                path.display()
            ),
            Error::NotFound { kind, id } => write!(f, "{kind} not found: {id}"),
            Error::AlreadyExists { kind, id } => write!(f, "{kind} already exists: {id}"),
            Error::InvalidInput { field, reason } => write!(f, "invalid {field}: {reason}"),
            Error::InvalidState {
                session,
                op,
                reason,
            } => write!(f, "cannot {op} session {session}: {reason}"),
            Error::ReadOnly => write!(f, "engine is open read-only; this operation writes"),
            Error::Closed => write!(f, "engine is closed"),
            Error::InvalidBundle {
                path: Some(path),
                reason,
            } => write!(f, "cannot import {}: {reason}", path.display()),
            Error::InvalidBundle { path: None, reason } => write!(f, "cannot import: {reason}"),
            Error::InvalidChainFile { path, reason } => {
                write!(f, "cannot import {}: {reason}", path.display())
            }
            Error::LsnOutOfRange { requested, last } => write!(
                f,
                "LSN {requested} is beyond the end of the log (last LSN is {last})"
            ),
            Error::ProjectionFormatMismatch {
                dir,
                recorded,
                requested,
            } => write!(
                f,
                "the data directory {} writes its projections in the {recorded} format \
                 (recorded in {}), not {requested}; open it without --projections (or with \
                 --projections {recorded}), or convert it with `session-engine \
                 rebuild-projections --projections {requested}`",
                dir.display(),
                crate::projection::format::FORMAT_FILE
            ),
            Error::InvalidImport { path, reason } => write!(
                f,
                "cannot import {}: {reason}; nothing was imported",
                path.display()
            ),
            Error::LogConflict { log, reason } => write!(
                f,
                "another writer appended to the log {log} first ({reason}); nothing of this \
                 batch was stored; reopen to read what the log holds"
            ),
            Error::LogUnavailable { log, reason } => {
                write!(f, "the log {log} is unavailable: {reason}")
            }
            Error::ForeignFiles { files } => {
                const SHOWN: usize = 5;
                let names: Vec<String> = files
                    .iter()
                    .take(SHOWN)
                    .map(|p| p.display().to_string())
                    .collect();
                write!(f, "{}", names.join(", "))?;
                if files.len() > SHOWN {
                    write!(f, " and {} more", files.len() - SHOWN)?;
                }
                write!(
                    f,
                    " {} not written by session-engine, which would write its projections \
                     there and never replaces another program's file. Adopt the \
                     directory's files with `session-engine import <dir>`, or choose \
                     another data directory with --data-dir",
                    if files.len() == 1 { "was" } else { "were" }
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(&**source),
            Error::InvalidBundle { reason, .. } => Some(reason),
            Error::InvalidChainFile { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloned_io_error_keeps_its_variant_kind_and_message() {
        let e = Error::io(
            "fsync segment",
            "data/wal/x",
            io::Error::new(io::ErrorKind::StorageFull, "no space left on device"),
        );
        let c = e.clone();
        assert_eq!(c.to_string(), e.to_string());
        match (&e, &c) {
            (
                Error::Io { op, path, source },
                Error::Io {
                    op: op2,
                    path: path2,
                    source: source2,
                },
            ) => {
                assert_eq!((op, path), (op2, path2));
                assert_eq!(source.kind(), io::ErrorKind::StorageFull);
                assert_eq!(source2.kind(), io::ErrorKind::StorageFull);
                assert_eq!(source2.to_string(), "no space left on device");
            }
            _ => panic!("{c:?}"),
        }
        let source = std::error::Error::source(&c).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("no space left on device"));
    }

    #[test]
    fn every_variant_clones_to_an_equal_message() {
        let errors = [
            Error::corruption("data/wal/x", 42, "bad frame"),
            Error::Locked {
                path: "data/LOCK".into(),
            },
            Error::invalid("id", "too long"),
            Error::not_found("session", "s1"),
            Error::Closed,
            Error::ForeignFiles {
                files: vec!["a".into(), "b".into()],
            },
            Error::LogConflict {
                log: "nats://x".into(),
                reason: "wrong last sequence".into(),
            },
            Error::LogUnavailable {
                log: "nats://x".into(),
                reason: "no quorum".into(),
            },
        ];
        for e in errors {
            let c = e.clone();
            assert_eq!((c.kind(), c.to_string()), (e.kind(), e.to_string()));
        }
    }
}
