//! The commands that only read the data directory (they work while another process
//! writes): `show`, `list`, `export`, `replay`, `stats`.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::args::StatusArg;
use crate::output::{self, Out};
use crate::{Cli, ErrorExt, missing_dir, progress_bar, session_id, status};
use session_engine::projection::SessionFile;
use session_engine::{Error, Lsn, protocol};

/// `show ID [--at LSN]`: the session as one JSON object, now or right after LSN.
pub(crate) fn show(cli: &Cli, out: &mut Out, id: &str, at: Option<u64>) -> Result<u8> {
    let session = session_id(id)?;
    let manager = cli.open_read()?;
    let s = match at {
        Some(lsn) => manager
            .engine()
            .session_at(&session, Lsn(lsn))?
            .ok_or_else(|| Error::NotFound {
                kind: "session",
                id: format!("{session} at LSN {lsn}"),
            })?,
        None => manager
            .state()
            .session(&session)
            .map(|s| (**s).clone())
            .ok_or_else(|| Error::not_found_session(&session))?,
    };
    out.json(&serde_json::to_value(SessionFile::of(&s))?)?;
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
