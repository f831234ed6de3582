//! `claude validate PATH...` and `claude info PATH...`: Claude Code's transcripts, read
//! through `session_engine::claude`. They read only the paths named; the data directory
//! is neither opened nor created.
//!
//! Exit status: 0 when every transcript was read and every line is a record (an
//! incomplete last line, a write in progress, is reported and still 0); 7 when a
//! transcript has a bad line (not UTF-8, not JSON, or over the 64 MiB line limit); else 1
//! when a file or folder could not be read; else 3 when a named path does not exist.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};
use session_engine::claude::{self, Found, Totals, TranscriptInfo, Unreadable};
use session_engine::{Error, FileStorage};

use crate::args::ClaudeCmd;
use crate::output::Out;

/// Everything read: a summary per file, and what could not be.
struct Report {
    infos: Vec<TranscriptInfo>,
    found: Found,
    totals: Totals,
}

impl Report {
    fn read(paths: &[PathBuf]) -> Report {
        let storage = FileStorage::new();
        let mut found = claude::find_transcripts(&storage, paths);
        let mut infos = Vec::with_capacity(found.files.len());
        let mut totals = Totals::default();
        for file in &found.files {
            match claude::summarize(&storage, file) {
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

    fn missing(u: &Unreadable) -> bool {
        u.named
            && matches!(&u.error, Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound)
    }

    fn exit_code(&self) -> u8 {
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

    /// Reports on stderr what was skipped or could not be read.
    fn warn(&self) {
        for s in &self.found.skipped {
            eprintln!("warning: {}: {}", s.path.display(), s.reason);
        }
        for u in &self.found.unreadable {
            eprintln!("error: {}", u.error);
        }
    }

    fn json_common(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("valid".into(), json!(self.exit_code() == 0));
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
        m
    }

    fn summary_line(&self) -> String {
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

pub fn run(json_out: bool, out: &mut Out, cmd: &ClaudeCmd) -> Result<u8> {
    match cmd {
        ClaudeCmd::Validate { paths } => validate(json_out, out, paths),
        ClaudeCmd::Info { paths } => info(json_out, out, paths),
        // Run by `main` with the data directory open.
        _ => unreachable!("claude import, export, follow and show are not read-only"),
    }
}

/// The fields `validate --json` shows of a file: seed 003's `validate_session_file`
/// (valid, and the first problem) with every problem.
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

fn print_problems(out: &mut Out, i: &TranscriptInfo) -> Result<()> {
    let path = i.file_path.display();
    for p in &i.problems {
        out.line(&format!(
            "  {path}:{}: {p} (byte offset {})",
            p.line, p.offset
        ))?;
    }
    let more = i.bad_lines.saturating_sub(i.problems.len() as u64);
    if more > 0 {
        out.line(&format!("  ... and {more} more bad lines"))?;
    }
    if let Some(p) = &i.in_progress {
        out.line(&format!(
            "  {path}:{}: {p} (byte offset {})",
            p.line, p.offset
        ))?;
    }
    Ok(())
}

fn validate(json_out: bool, out: &mut Out, paths: &[PathBuf]) -> Result<u8> {
    let report = Report::read(paths);
    report.warn();
    if json_out {
        let mut m = report.json_common();
        m.insert(
            "files".into(),
            report.infos.iter().map(validation_json).collect(),
        );
        m.insert("totals".into(), serde_json::to_value(&report.totals)?);
        out.json(&Value::Object(m))?;
    } else {
        for i in &report.infos {
            if i.valid {
                out.line(&format!(
                    "ok: {} ({} lines, {} records)",
                    i.file_path.display(),
                    i.lines,
                    i.message_count
                ))?;
            } else {
                out.line(&format!(
                    "BAD: {}: {} bad lines of {}",
                    i.file_path.display(),
                    i.bad_lines,
                    i.lines
                ))?;
            }
            print_problems(out, i)?;
        }
        out.line(&report.summary_line())?;
    }
    Ok(report.exit_code())
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn usage_line(u: &claude::TokenUsage, messages: u64) -> String {
    format!(
        "input_tokens {}, output_tokens {}, cache_creation_input_tokens {}, \
         cache_read_input_tokens {} ({messages} assistant messages, each counted once)",
        u.input_tokens, u.output_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens
    )
}

fn info(json_out: bool, out: &mut Out, paths: &[PathBuf]) -> Result<u8> {
    let report = Report::read(paths);
    report.warn();
    if json_out {
        let mut m = report.json_common();
        m.insert("files".into(), serde_json::to_value(&report.infos)?);
        m.insert("totals".into(), serde_json::to_value(&report.totals)?);
        out.json(&Value::Object(m))?;
        return Ok(report.exit_code());
    }
    for i in &report.infos {
        let opt = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".into());
        out.line(&i.file_path.display().to_string())?;
        out.line(&format!("  session_id: {}", i.session_id))?;
        out.line(&format!("  size_bytes: {}", i.size_bytes))?;
        out.line(&format!("  message_count: {}", i.message_count))?;
        out.line(&format!("  first_timestamp: {}", opt(&i.first_timestamp)))?;
        out.line(&format!("  last_timestamp: {}", opt(&i.last_timestamp)))?;
        out.line(&format!(
            "  lines: {} ({} bad{})",
            i.lines,
            i.bad_lines,
            if i.in_progress.is_some() {
                ", the last being written"
            } else {
                ""
            }
        ))?;
        out.line(&format!("  records: {}", counts(&i.records_by_type)))?;
        if !i.system_subtypes.is_empty() {
            out.line(&format!(
                "  system subtypes: {}",
                counts(&i.system_subtypes)
            ))?;
        }
        out.line(&format!("  session ids: {}", list(&i.session_ids)))?;
        out.line(&format!("  cwd: {}", list(&i.cwds)))?;
        out.line(&format!("  versions: {}", list(&i.versions)))?;
        out.line(&format!("  models: {}", list(&i.models)))?;
        out.line(&format!(
            "  tokens: {}",
            usage_line(&i.usage, i.assistant_messages)
        ))?;
        print_problems(out, i)?;
    }
    if report.infos.len() > 1 {
        let t = &report.totals;
        out.line(&format!(
            "total: {} files, {} bytes, {} records ({})",
            t.files,
            t.size_bytes,
            t.message_count,
            counts(&t.records_by_type)
        ))?;
        out.line(&format!(
            "  tokens: {}",
            usage_line(&t.usage, t.assistant_messages)
        ))?;
    }
    out.line(&report.summary_line())?;
    Ok(report.exit_code())
}
