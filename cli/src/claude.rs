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
use session_engine::FileStorage;
use session_engine::claude::{self, Detail, Report, TranscriptInfo};

use crate::args::ClaudeCmd;
use crate::output::Out;

/// The command line's own lines of a report: what was skipped or could not be read, on
/// stderr.
fn warn(report: &Report) {
    for s in &report.found.skipped {
        eprintln!("warning: {}: {}", s.path.display(), s.reason);
    }
    for u in &report.found.unreadable {
        eprintln!("error: {}", u.error);
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
    let report = Report::read(&FileStorage::new(), paths);
    warn(&report);
    if json_out {
        out.json(&report.to_json(Detail::Validation))?;
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
    let report = Report::read(&FileStorage::new(), paths);
    warn(&report);
    if json_out {
        out.json(&report.to_json(Detail::Info))?;
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
