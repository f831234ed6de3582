//! What `claude validate` and `claude info` report about a transcript: seed 003's
//! `validate_session_file` and `get_session_info`, with their field names, plus records
//! by type, the ids, directories, versions and models seen, and token usage counted once
//! per message.
//!
//! A streamed assistant message is written as several lines (one per content block), each
//! with the same `message.id` and a copy of the usage; summing every line counts it two
//! to four times. [`TranscriptInfo::usage`] counts each `message.id` once, with the usage
//! of its last line (the most complete: `output_tokens` grows as the message streams).
//! An assistant record without a `message.id` is counted as it is.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::reader::{Entry, LineProblem, ProblemKind, Record, TranscriptReader};
use crate::error::Result;
use crate::storage::Storage;

/// The most line problems a [`TranscriptInfo`] keeps (all are counted in `bad_lines`):
/// a file of garbage does not fill memory with reports.
pub const MAX_REPORTED_PROBLEMS: usize = 100;

/// The key of [`TranscriptInfo::records_by_type`] for records with no string `type`.
pub const UNTYPED: &str = "(none)";

/// Token usage under Claude Code's own names (the `message.usage` of assistant records).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    /// `input_tokens`.
    pub input_tokens: u64,
    /// `output_tokens`.
    pub output_tokens: u64,
    /// `cache_creation_input_tokens`.
    pub cache_creation_input_tokens: u64,
    /// `cache_read_input_tokens`.
    pub cache_read_input_tokens: u64,
}

impl TokenUsage {
    /// The four counts of a `usage` object (a missing or non-integer field counts 0).
    pub fn of(usage: &Value) -> TokenUsage {
        let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
        TokenUsage {
            input_tokens: n("input_tokens"),
            output_tokens: n("output_tokens"),
            cache_creation_input_tokens: n("cache_creation_input_tokens"),
            cache_read_input_tokens: n("cache_read_input_tokens"),
        }
    }

    /// Takes away `other`, which was added before (saturating).
    fn sub(&mut self, other: &TokenUsage) {
        self.input_tokens = self.input_tokens.saturating_sub(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_sub(other.output_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_sub(other.cache_creation_input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_sub(other.cache_read_input_tokens);
    }

    /// Adds `other` (saturating).
    pub fn add(&mut self, other: &TokenUsage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(other.cache_creation_input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
    }
}

fn lossy<S: Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What one transcript holds. The first six fields are seed 003's `get_session_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TranscriptInfo {
    /// The session id: the file name without `.jsonl` (Claude Code names a transcript
    /// after its session; seed 003 finds it at `<projects>/<project>/<session_id>.jsonl`).
    pub session_id: String,
    /// The file.
    #[serde(serialize_with = "lossy")]
    pub file_path: PathBuf,
    /// The bytes read (the file's size when nothing was appending).
    pub size_bytes: u64,
    /// The records (lines that are JSON), as seed 003 counts them: every such line.
    pub message_count: u64,
    /// The first record's string `timestamp`, in file order.
    pub first_timestamp: Option<String>,
    /// The last record's string `timestamp`, in file order.
    pub last_timestamp: Option<String>,
    /// Whether every line is a record (an incomplete last line, a write in progress,
    /// does not make a file invalid; a 0-byte file is valid).
    pub valid: bool,
    /// The lines, records and bad ones (and an incomplete last line).
    pub lines: u64,
    /// Lines that are damage: not UTF-8, not JSON, or over the line limit.
    pub bad_lines: u64,
    /// The first [`MAX_REPORTED_PROBLEMS`] of them.
    pub problems: Vec<LineProblem>,
    /// The last line, when it is incomplete (a write in progress).
    pub in_progress: Option<LineProblem>,
    /// Records by `type` ([`UNTYPED`] for records without one).
    pub records_by_type: BTreeMap<String, u64>,
    /// `system` records by `subtype`.
    pub system_subtypes: BTreeMap<String, u64>,
    /// Every distinct `sessionId`, in order of first appearance.
    pub session_ids: Vec<String>,
    /// Every distinct `cwd`, in order of first appearance.
    pub cwds: Vec<String>,
    /// Every distinct Claude Code `version`, in order of first appearance.
    pub versions: Vec<String>,
    /// Every distinct `message.model` of assistant records, in order of first appearance.
    pub models: Vec<String>,
    /// Distinct assistant messages: distinct `message.id`s, plus assistant records
    /// without one.
    pub assistant_messages: u64,
    /// Token usage, each message counted once (see the module documentation).
    pub usage: TokenUsage,
    /// The last usage of each `message.id`, to count a message once across files.
    #[serde(skip)]
    pub(crate) by_message: HashMap<String, TokenUsage>,
    /// The usage of assistant records without a `message.id`.
    #[serde(skip)]
    pub(crate) unkeyed: TokenUsage,
    /// The assistant records without a `message.id`.
    #[serde(skip)]
    pub(crate) unkeyed_records: u64,
}

fn push_new(list: &mut Vec<String>, v: Option<&Value>) {
    if let Some(s) = v.and_then(Value::as_str)
        && !list.iter().any(|x| x == s)
    {
        list.push(s.to_string());
    }
}

impl TranscriptInfo {
    /// An empty summary of `path`.
    pub fn new(path: &Path) -> TranscriptInfo {
        let session_id = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .map(|n| n.strip_suffix(".jsonl").unwrap_or(&n).to_string())
            .unwrap_or_default();
        TranscriptInfo {
            session_id,
            file_path: path.to_path_buf(),
            valid: true,
            ..TranscriptInfo::default()
        }
    }

    /// Takes one entry into account.
    pub fn add(&mut self, entry: &Entry) {
        self.lines += 1;
        match entry {
            Entry::Record(r) => self.add_record(r),
            Entry::Problem(p) if p.kind == ProblemKind::Incomplete => {
                self.in_progress = Some(p.clone());
            }
            Entry::Problem(p) => {
                self.valid = false;
                self.bad_lines += 1;
                if self.problems.len() < MAX_REPORTED_PROBLEMS {
                    self.problems.push(p.clone());
                }
            }
        }
    }

    fn add_record(&mut self, r: &Record) {
        self.message_count += 1;
        let v = &r.value;
        *self
            .records_by_type
            .entry(r.record_type().unwrap_or(UNTYPED).to_string())
            .or_insert(0) += 1;
        if r.record_type() == Some("system") {
            let sub = v.get("subtype").and_then(Value::as_str).unwrap_or(UNTYPED);
            *self.system_subtypes.entry(sub.to_string()).or_insert(0) += 1;
        }
        if let Some(t) = v.get("timestamp").and_then(Value::as_str) {
            if self.first_timestamp.is_none() {
                self.first_timestamp = Some(t.to_string());
            }
            self.last_timestamp = Some(t.to_string());
        }
        push_new(&mut self.session_ids, v.get("sessionId"));
        push_new(&mut self.cwds, v.get("cwd"));
        push_new(&mut self.versions, v.get("version"));
        if r.record_type() == Some("assistant") {
            let message = v.get("message");
            push_new(&mut self.models, message.and_then(|m| m.get("model")));
            let usage = message
                .and_then(|m| m.get("usage"))
                .map(TokenUsage::of)
                .unwrap_or_default();
            match message.and_then(|m| m.get("id")).and_then(Value::as_str) {
                Some(id) => {
                    self.by_message.insert(id.to_string(), usage);
                }
                None => {
                    self.unkeyed.add(&usage);
                    self.unkeyed_records += 1;
                }
            }
        }
    }

    /// Computes the totals once every entry is in; `size_bytes` is what was read.
    pub fn finish(&mut self, size_bytes: u64) {
        self.size_bytes = size_bytes;
        self.assistant_messages =
            (self.by_message.len() as u64).saturating_add(self.unkeyed_records);
        let mut usage = self.unkeyed;
        for u in self.by_message.values() {
            usage.add(u);
        }
        self.usage = usage;
    }
}

/// Reads the transcript at `path` to its end and summarises it. Bad lines are in the
/// summary; the error is only for a file that cannot be opened or read (an error in the
/// middle loses the summary so far: the file could not be read whole).
pub fn summarize(storage: &dyn Storage, path: &Path) -> Result<TranscriptInfo> {
    summarize_reader(TranscriptReader::open(storage, path)?)
}

/// [`summarize`] with a reader the caller set up (another line limit, another file).
pub fn summarize_reader(mut reader: TranscriptReader) -> Result<TranscriptInfo> {
    let mut info = TranscriptInfo::new(reader.path());
    for entry in reader.by_ref() {
        info.add(&entry?);
    }
    info.finish(reader.bytes_read());
    Ok(info)
}

/// Totals over several transcripts, each message counted once across all of them (a
/// resumed session's file may repeat the messages of the one it continues).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Transcripts read.
    pub files: u64,
    /// Those whose every line is a record.
    pub valid_files: u64,
    /// Bytes read.
    pub size_bytes: u64,
    /// Lines.
    pub lines: u64,
    /// Records.
    pub message_count: u64,
    /// Bad lines.
    pub bad_lines: u64,
    /// Files whose last line is being written.
    pub in_progress: u64,
    /// Records by type.
    pub records_by_type: BTreeMap<String, u64>,
    /// Distinct assistant messages.
    pub assistant_messages: u64,
    /// Token usage, each `message.id` once over all the files (its last line in the
    /// last file read).
    pub usage: TokenUsage,
    #[serde(skip)]
    by_message: HashMap<String, TokenUsage>,
    #[serde(skip)]
    unkeyed_records: u64,
}

impl Totals {
    /// Adds one transcript.
    pub fn add(&mut self, info: &TranscriptInfo) {
        self.files += 1;
        self.valid_files += u64::from(info.valid);
        self.size_bytes = self.size_bytes.saturating_add(info.size_bytes);
        self.lines += info.lines;
        self.message_count += info.message_count;
        self.bad_lines += info.bad_lines;
        self.in_progress += u64::from(info.in_progress.is_some());
        for (k, n) in &info.records_by_type {
            *self.records_by_type.entry(k.clone()).or_insert(0) += n;
        }
        for (id, u) in &info.by_message {
            // A message seen in an earlier file counts once, with its latest usage.
            if let Some(old) = self.by_message.insert(id.clone(), *u) {
                self.usage.sub(&old);
            }
            self.usage.add(u);
        }
        self.usage.add(&info.unkeyed);
        self.unkeyed_records += info.unkeyed_records;
        self.assistant_messages =
            (self.by_message.len() as u64).saturating_add(self.unkeyed_records);
    }
}
