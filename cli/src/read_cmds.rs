//! The commands that only read the data directory (they work while another process
//! writes): `show`, `history`, `list`, `export`, `replay`, `stats`.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::args::StatusArg;
use crate::output::{self, Out};
use crate::{Cli, ErrorExt, missing_dir, progress_bar, session_id, status};
use session_engine::history::{Entries, Entry};
use session_engine::projection::SessionFile;
use session_engine::{Error, Lsn, protocol};

/// `show ID [--at LSN]`: the session as one JSON object, now or right after LSN.
pub(crate) fn show(cli: &Cli, out: &mut Out, id: &str, at: Option<u64>) -> Result<u8> {
    let session = session_id(id)?;
    let manager = cli.open_read()?;
    let (s, as_of) = match at {
        Some(lsn) => (
            manager
                .engine()
                .session_at(&session, Lsn(lsn))?
                .ok_or_else(|| Error::NotFound {
                    kind: "session",
                    id: format!("{session} at LSN {lsn}"),
                })?,
            Lsn(lsn),
        ),
        None => {
            let state = manager.state();
            let s = state
                .session(&session)
                .map(|s| (**s).clone())
                .ok_or_else(|| Error::not_found_session(&session))?;
            (s, state.last_lsn)
        }
    };
    // The activities' details are read from the log, through the session's history.
    let history = manager.engine().history_of(&s, as_of);
    let activities = history
        .activities()
        .iter()
        .map(|e| e.map(|e| e.value))
        .collect::<session_engine::Result<Vec<_>>>()?;
    out.json(&serde_json::to_value(SessionFile::with_activities(
        &s,
        &activities,
    ))?)?;
    Ok(0)
}

/// Which kind of a session's history `history` prints.
#[derive(Clone, Copy, Debug)]
pub(crate) enum HistoryKind {
    Activities,
    Commands,
    Decisions,
}

/// `history`'s selection.
pub(crate) struct HistoryQuery {
    pub kind: HistoryKind,
    pub from: Option<u64>,
    pub limit: Option<u64>,
    pub newest_first: bool,
    pub at: Option<u64>,
}

/// `history ID [--commands|--decisions] [--from N] [--limit N] [--newest-first] [--at LSN]`:
/// one item per line, through the library's history reader (never the whole session in
/// one document, as `show` prints it).
pub(crate) fn history(cli: &Cli, out: &mut Out, id: &str, q: &HistoryQuery) -> Result<u8> {
    let session = session_id(id)?;
    let manager = cli.open_read()?;
    let h = match q.at {
        Some(lsn) => manager.engine().history_at(&session, Lsn(lsn))?,
        None => manager.engine().history(&session)?,
    };
    let json = cli.json;
    match q.kind {
        HistoryKind::Activities => print_history(
            out,
            json,
            q,
            h.activities(),
            output::activity_line,
            output::activity_json,
        ),
        HistoryKind::Commands => print_history(
            out,
            json,
            q,
            h.commands(),
            output::command_line,
            output::command_json,
        ),
        HistoryKind::Decisions => print_history(
            out,
            json,
            q,
            h.decisions(),
            output::decision_line,
            output::decision_json,
        ),
    }
}

/// Prints the items `q` selects from `entries`: from index `q.from` (default the oldest,
/// or the newest with `--newest-first`) on, in the order asked, at most `q.limit`. A start
/// past the end is invalid input (exit 4); oldest first, a start equal to the count (where
/// the next item will be) prints nothing.
fn print_history<T: session_engine::history::Item>(
    out: &mut Out,
    json: bool,
    q: &HistoryQuery,
    entries: Entries<'_, T>,
    line: fn(usize, &T) -> String,
    object: fn(usize, &T) -> Value,
) -> Result<u8> {
    let n = entries.len();
    let from = q.from.map(|f| usize::try_from(f).unwrap_or(usize::MAX));
    let limit = q
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let kind = match q.kind {
        HistoryKind::Activities => "activities",
        HistoryKind::Commands => "commands",
        HistoryKind::Decisions => "decisions",
    };
    let past_end = |f: usize| {
        let has = match n {
            0 => format!("no {kind}"),
            _ => format!("{n} {kind} (indices 0 to {})", n - 1),
        };
        Error::invalid_input(
            "--from",
            format!("{f} is past the end: the session has {has}"),
        )
    };
    let items: Box<dyn Iterator<Item = session_engine::Result<Entry<T>>>> = if q.newest_first {
        match from {
            None => Box::new(entries.iter().rev()),
            Some(f) if f < n => Box::new(entries.range(..=f)?.rev()),
            Some(f) => return Err(past_end(f).into()),
        }
    } else {
        let f = from.unwrap_or(0);
        if f > n {
            return Err(past_end(f).into());
        }
        Box::new(entries.range(f..)?)
    };
    for e in items.take(limit) {
        let e = e?;
        if json {
            out.json(&object(e.index, &e.value))?;
        } else {
            out.line(&line(e.index, &e.value))?;
        }
    }
    Ok(0)
}

/// `list [--status S]`: ids one per line, or with `--json` an array of objects. A data
/// directory that does not exist lists nothing.
pub(crate) fn list(cli: &Cli, out: &mut Out, st: Option<StatusArg>) -> Result<u8> {
    let manager = match cli.open_read() {
        Ok(m) => Some(m),
        Err(e) if missing_dir(&e) => None,
        Err(e) => return Err(e),
    };
    let state = manager.as_ref().map(|m| m.state());
    let now = manager.as_ref().map(|m| m.now()).unwrap_or_default();
    let sessions: Vec<_> = state.iter().flat_map(|s| s.list(st.map(status))).collect();
    if cli.json {
        let items: Vec<Value> = sessions
            .iter()
            .map(|s| output::list_item_json(s, now))
            .collect();
        out.json(&Value::Array(items))?;
    } else {
        for s in sessions {
            out.line(s.id.as_str())?;
        }
    }
    Ok(0)
}

/// `export ID FILE`: the session's events as a bundle.
pub(crate) fn export(cli: &Cli, out: &mut Out, id: &str, file: &Path) -> Result<u8> {
    let manager = cli.open_read()?;
    let bundle = manager.export_session(id, file)?;
    if cli.json {
        out.json(&json!({
            "session_id": bundle.session_id.as_str(),
            "events": bundle.events.len(),
            "file": file.display().to_string(),
        }))?;
    }
    Ok(0)
}

/// `replay [--from LSN] [--session ID]`: the log as JSON lines, through the library's
/// log reader (whatever backend holds the log).
pub(crate) fn replay(cli: &Cli, out: &mut Out, from: u64, session: Option<&str>) -> Result<u8> {
    let session = session.map(session_id).transpose()?;
    let paths = session_engine::Paths::new(&cli.data_dir);
    if !cli.storage().exists(&paths.root).unwrap_or(false) {
        return Err(Error::NotFound {
            kind: "data directory",
            id: paths.root.display().to_string(),
        }
        .into());
    }
    let pb = progress_bar(None, "replaying");
    let mut result = Ok(());
    let options = cli.options();
    session_engine::read_log(
        &paths.root,
        &options,
        Lsn(from.max(1)),
        Lsn(u64::MAX),
        |lsn, event| {
            pb.inc(1);
            if session.as_ref().is_none_or(|id| event.body.touches(id)) {
                let line = protocol::event_json(lsn, &event);
                if let Err(e) = out.json(&line) {
                    result = Err(e);
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )?;
    pb.finish_and_clear();
    result?;
    Ok(0)
}

/// `stats`: the engine's statistics as JSON.
pub(crate) fn stats(cli: &Cli, out: &mut Out) -> Result<u8> {
    let manager = cli.open_read()?;
    out.json(&output::stats_json(manager.engine(), &*cli.storage())?)?;
    Ok(0)
}
