//! `claude validate` and `claude info` over several paths: a [`TranscriptInfo`] per
//! transcript found, [`Totals`] over them, what could not be read, the exit status and
//! the one JSON form that the command line and the protocol's `claude_validate` and
//! `claude_info` ops both give.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::{Found, Totals, TranscriptInfo, Unreadable, find_transcripts, summarize};
use crate::error::Error;
use crate::storage::Storage;

/// Every transcript at some paths, read (nothing is written).
#[derive(Debug)]
pub struct Report {
    /// A summary per transcript read, in the order [`find_transcripts`] found them.
    pub infos: Vec<TranscriptInfo>,
    /// What was found, skipped, or could not be read (files that failed to read
    /// included).
    pub found: Found,
    /// Totals over [`Report::infos`].
    pub totals: Totals,
}

/// Which fields [`Report::to_json`] gives of each file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// `claude validate`: seed 003's `validate_session_file` (valid, and the problems).
    Validation,
    /// `claude info`: the whole [`TranscriptInfo`] (seed 003's `get_session_info` and
    /// more).
    Info,
}

impl Report {
    /// Reads every transcript at `paths` (see [`find_transcripts`]).
    pub fn read(storage: &dyn Storage, paths: &[PathBuf]) -> Report {
        let mut found = find_transcripts(storage, paths);
        let mut infos = Vec::with_capacity(found.files.len());
        let mut totals = Totals::default();
        for file in &found.files {
            match summarize(storage, file) {
                Ok(info) => {
                    tracing::info!(
                        path = %file.display(),
                        lines = info.lines,
                        bad_lines = info.bad_lines,
                        "transcript read"
                    );
                    totals.add(&info);
                    infos.push(info);
                }
                Err(error) => found.unreadable.push(Unreadable {
                    path: file.clone(),
                    error,
                    named: paths.contains(file),
                }),
            }
        }
        Report {
            infos,
            found,
            totals,
        }
    }

    /// Whether `u` is a path the user named that does not exist.
    pub fn missing(u: &Unreadable) -> bool {
        u.named
            && matches!(&u.error, Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The command line's exit status: 0 when every transcript was read and every line
    /// is a record (an incomplete last line, a write in progress, still counts as 0); 7
    /// when a transcript has a bad line; else 1 when a file or folder could not be
    /// read; else 3 when a named path does not exist.
    pub fn exit_code(&self) -> u8 {
        if self.infos.iter().any(|i| !i.valid) {
            7
        } else if self.found.unreadable.iter().any(|u| !Report::missing(u)) {
            1
        } else if !self.found.unreadable.is_empty() {
            3
        } else {
            0
        }
    }

    /// Whether every transcript was read and every line of them is a record.
    pub fn valid(&self) -> bool {
        self.exit_code() == 0
    }

    /// The JSON form: `valid`, `files` (each with the fields `detail` asks for),
    /// `totals`, `skipped` (`path`, `reason`) and `unreadable` (`path`, `error`,
    /// `not_found`).
    pub fn to_json(&self, detail: Detail) -> Value {
        let mut m = Map::new();
        m.insert("valid".into(), json!(self.valid()));
        let files: Vec<Value> = match detail {
            Detail::Validation => self.infos.iter().map(validation_json).collect(),
            Detail::Info => self
                .infos
                .iter()
                .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
                .collect(),
        };
        m.insert("files".into(), Value::Array(files));
        m.insert(
            "totals".into(),
            serde_json::to_value(&self.totals).unwrap_or(Value::Null),
        );
        m.insert(
            "skipped".into(),
            self.found
                .skipped
                .iter()
                .map(|s| json!({"path": s.path.to_string_lossy(), "reason": s.reason}))
                .collect(),
        );
        m.insert(
            "unreadable".into(),
            self.found
                .unreadable
                .iter()
                .map(|u| {
                    json!({
                        "path": u.path.to_string_lossy(),
                        "error": u.error.to_string(),
                        "not_found": Report::missing(u),
                    })
                })
                .collect(),
        );
        Value::Object(m)
    }

    /// One line: how many files were valid, bad, being written, unreadable, skipped.
    pub fn summary_line(&self) -> String {
        let t = &self.totals;
        format!(
            "{} files: {} valid, {} with bad lines ({} bad lines), {} being written, {} \
             unreadable, {} skipped",
            t.files,
            t.valid_files,
            t.files - t.valid_files,
            t.bad_lines,
            t.in_progress,
            self.found.unreadable.len(),
            self.found.skipped.len()
        )
    }
}

/// The fields `validate` shows of a file: seed 003's `validate_session_file` (valid, and
/// the first problem) with every problem.
fn validation_json(i: &TranscriptInfo) -> Value {
    json!({
        "file_path": i.file_path.to_string_lossy(),
        "session_id": i.session_id,
        "size_bytes": i.size_bytes,
        "valid": i.valid,
        "lines": i.lines,
        "message_count": i.message_count,
        "bad_lines": i.bad_lines,
        "problems": i.problems,
        "in_progress": i.in_progress,
    })
}
