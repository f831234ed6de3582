//! `claude import`, `claude follow`, `claude export` and `claude show`: Claude Code's
//! transcripts in the data directory, through `session_engine::claude::import`.
//!
//! Exit status of `import` (and of `follow` when it stops on an error): 0 every file's new
//! complete lines imported (an incomplete last line is left for the next run); 1 a file
//! could not be read or imported (the others were; what was committed of it stays); else
//! 10 a file no longer started with what was imported of it and was imported as a new
//! version; else 7 a line is not a record (its bytes were imported all the same); else 3 a
//! named path does not exist.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use session_engine::claude::import::{self, Follower, ImportRun};
use session_engine::claude::search;
use session_engine::{Error, FileStorage, SessionId, SessionManager};

use crate::Cli;
use crate::args::{ClaudeCmd, SearchArgs};
use crate::output::Out;

/// `claude ...`: `validate` and `info` read transcripts only (`crate::claude`); the others
/// work on the data directory.
pub(crate) fn run(cli: &Cli, out: &mut Out, c: &ClaudeCmd) -> Result<u8> {
    match c {
        ClaudeCmd::Validate { .. } | ClaudeCmd::Info { .. } => crate::claude::run(cli.json, out, c),
        ClaudeCmd::Import { paths, no_index } => {
            let manager = cli.open_write()?;
            let code = import(cli.json, out, &manager, paths, !no_index)?;
            manager.close()?;
            Ok(code)
        }
        ClaudeCmd::Follow {
            paths,
            interval_ms,
            no_index,
        } => {
            let manager = cli.open_write()?;
            let r = follow(
                cli.json,
                out,
                &manager,
                paths,
                Duration::from_millis(*interval_ms),
                !no_index,
            );
            manager.close()?;
            r
        }
        ClaudeCmd::Export {
            session,
            file,
            output,
        } => {
            let manager = cli.open_read()?;
            export(&manager, session, file.as_deref().or(output.as_deref()))
        }
        ClaudeCmd::Show { session } => {
            let manager = cli.open_read()?;
            show(out, &manager, session)
        }
        ClaudeCmd::Search(a) => run_search(cli, out, a),
    }
}

/// `search ...` and `claude search ...`: the data directory opened read-only (the search
/// writes only its index).
pub(crate) fn run_search(cli: &Cli, out: &mut Out, a: &SearchArgs) -> Result<u8> {
    let manager = cli.open_read()?;
    let q = search_query(
        &a.query, &a.project, &a.session, &a.kinds, &a.since, a.limit,
    )?;
    search(cli.json, out, &manager, &q)
}

/// The paths named, or `~/.claude/projects`.
pub fn default_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if !paths.is_empty() {
        return Ok(paths.to_vec());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no PATH given and HOME is not set (the default is ~/.claude/projects)")?;
    Ok(vec![PathBuf::from(home).join(".claude").join("projects")])
}

fn exit_code(run: &ImportRun) -> u8 {
    let missing = |u: &session_engine::claude::Unreadable| {
        u.named
            && matches!(&u.error, Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound)
    };
    if !run.failed.is_empty()
        || run.chain_error.is_some()
        || run.found.unreadable.iter().any(|u| !missing(u))
    {
        1
    } else if run.files.iter().any(|f| f.new_version.is_some()) {
        10
    } else if run.files.iter().any(|f| f.bad_line_count > 0) {
        7
    } else if !run.found.unreadable.is_empty() {
        3
    } else {
        0
    }
}

fn warn(run: &ImportRun) {
    if let Some(e) = &run.chain_error {
        eprintln!("error: linking resumed sessions into chains: {e}");
    }
    for s in &run.found.skipped {
        eprintln!("warning: {}: {}", s.path.display(), s.reason);
    }
    for u in &run.found.unreadable {
        eprintln!("error: {}", u.error);
    }
    for (path, e) in &run.failed {
        eprintln!("error: {}: {e}", path.display());
    }
    for f in &run.files {
        let path = f.path.display();
        if let (Some(reason), Some(prev)) = (&f.new_version, &f.replaces) {
            eprintln!(
                "warning: {path}: {reason}: imported as a new version, session {} (the \
                 earlier one, {prev}, is kept as it was)",
                f.session
            );
        }
        for b in &f.bad_lines {
            eprintln!(
                "warning: {path}:{}: {} (byte offset {}): kept as bytes, not a record",
                b.line, b.reason, b.offset
            );
        }
        let more = f.bad_line_count.saturating_sub(f.bad_lines.len() as u64);
        if more > 0 {
            eprintln!("warning: {path}: ... and {more} more lines that are not records");
        }
    }
}

fn print(json_out: bool, out: &mut Out, run: &ImportRun, quiet_unchanged: bool) -> Result<()> {
    if json_out {
        out.json(&run.to_json())?;
        return Ok(());
    }
    for c in &run.chained {
        let line = match &c.continues {
            Some(prev) => format!(
                "chain {}: {} continues {prev} (resumed)",
                c.agent, c.session_id
            ),
            None => format!("chain {}: {} starts it", c.agent, c.session_id),
        };
        out.line(&line)?;
    }
    for f in &run.files {
        if quiet_unchanged && f.bytes == 0 && !f.opened {
            continue;
        }
        let mut line = format!(
            "{} -> {}: {} lines ({} bytes) imported, {} bytes in all",
            f.path.display(),
            f.session,
            f.lines,
            f.bytes,
            f.imported_to
        );
        if f.bad_line_count > 0 {
            line.push_str(&format!(", {} not records", f.bad_line_count));
        }
        if f.incomplete_bytes > 0 {
            line.push_str(&format!(
                ", an incomplete last line of {} bytes left for later",
                f.incomplete_bytes
            ));
        }
        out.line(&line)?;
    }
    out.flush()
}

/// `claude import PATH...`, then (with `index`) the search index brought up to date.
pub fn import(
    json_out: bool,
    out: &mut Out,
    manager: &SessionManager,
    paths: &[PathBuf],
    index: bool,
) -> Result<u8> {
    let paths = default_paths(paths)?;
    let run = import::import_paths(manager.engine(), &FileStorage::new(), &paths);
    warn(&run);
    print(json_out, out, &run, false)?;
    if index {
        update_index(manager);
    }
    Ok(exit_code(&run))
}

/// After an import: brings the search index up to date when the data directory holds an
/// imported transcript, so that the next `claude search` reads only the events after
/// this (the first one would otherwise build it from the whole log). A failure is a
/// warning, not the import's: the index is a projection the next search catches up.
fn update_index(manager: &SessionManager) {
    if manager.state().claude.is_empty() {
        return;
    }
    if let Err(e) = search::update_index(manager.engine()) {
        eprintln!(
            "warning: the search index was not brought up to date ({e}); the next search \
             will do it"
        );
    }
}

/// `claude follow PATH...`: polls until killed (or a failed write poisons the engine),
/// bringing (with `index`) the search index up to date after the first poll and each
/// one that imported something.
pub fn follow(
    json_out: bool,
    out: &mut Out,
    manager: &SessionManager,
    paths: &[PathBuf],
    interval: Duration,
    index: bool,
) -> Result<u8> {
    let paths = default_paths(paths)?;
    let storage = FileStorage::new();
    let mut follower = Follower::new();
    // The index is brought up to date after the first poll and after each that imported.
    let mut first = true;
    loop {
        let run = follower.poll(manager.engine(), &storage, &paths);
        warn(&run);
        if json_out {
            if run.files.iter().any(|f| f.bytes > 0 || f.opened)
                || !run.failed.is_empty()
                || !run.chained.is_empty()
            {
                print(true, out, &run, true)?;
                out.flush()?;
            }
        } else {
            print(false, out, &run, true)?;
        }
        if let Some(e) = manager.engine().poisoned() {
            return Err(e.into());
        }
        if index && (first || run.files.iter().any(|f| f.bytes > 0 || f.opened)) {
            update_index(manager);
            first = false;
        }
        std::thread::sleep(interval);
    }
}

/// `claude export SESSION [FILE]`: the transcript's imported bytes, to FILE (created; it
/// must not exist) or stdout.
pub fn export(manager: &SessionManager, session: &str, file: Option<&Path>) -> Result<u8> {
    let id = SessionId::new(session)?;
    match file {
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            import::export(manager.engine(), &id, |b| {
                w.write_all(b).map_err(|e| Error::Io {
                    op: "write transcript",
                    path: PathBuf::from("<stdout>"),
                    source: std::sync::Arc::new(e),
                })
            })?;
            w.flush()?;
        }
        Some(path) => {
            import::export_new_file(manager.engine(), &id, &FileStorage::new(), path)?;
        }
    }
    Ok(0)
}

/// `claude show SESSION`.
pub fn show(out: &mut Out, manager: &SessionManager, session: &str) -> Result<u8> {
    let id = SessionId::new(session)?;
    out.json(&import::describe(&manager.state(), &id)?)?;
    Ok(0)
}

/// `claude search`'s arguments as a query.
pub fn search_query(
    query: &str,
    project: &Option<String>,
    session: &Option<String>,
    kinds: &[String],
    since: &Option<String>,
    limit: u64,
) -> Result<search::SearchQuery> {
    Ok(search::SearchQuery {
        text: query.to_string(),
        project: project.clone(),
        session: session.clone(),
        kinds: kinds.to_vec(),
        since: since.as_deref().map(search::parse_since).transpose()?,
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    })
}

/// `claude search QUERY` (and `search QUERY`): the hits best first; exit 0 with hits, 3
/// (not found) without.
pub fn search(
    json_out: bool,
    out: &mut Out,
    manager: &SessionManager,
    q: &search::SearchQuery,
) -> Result<u8> {
    let r = search::search(manager.engine(), q)?;
    if json_out {
        out.json(&json!({
            "total": r.total,
            "indexed": r.indexed,
            "events": r.events,
            "rebuilt": r.rebuilt,
            "hits": session_engine::protocol::hits_json(&r),
        }))?;
    } else {
        for h in &r.hits {
            out.line(&format!(
                "{}:{} {} {} {}: {}",
                h.session,
                h.line,
                h.timestamp
                    .map(|t| t.to_iso8601_micros())
                    .unwrap_or_else(|| "-".into()),
                h.kind.as_deref().unwrap_or("-"),
                h.uuid.as_deref().unwrap_or("-"),
                h.snippet
            ))?;
        }
        if r.total > r.hits.len() as u64 {
            out.line(&format!(
                "({} matches in all; --limit to see more)",
                r.total
            ))?;
        }
    }
    out.flush()?;
    Ok(if r.total == 0 { 3 } else { 0 })
}
