//! The commands that look after the data directory as a whole: `import`, `verify`,
//! `repair`, `snapshot`, `rebuild-projections`, and the first run, `demo`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::json;

use crate::output::Out;
use crate::{Cli, ErrorExt, Opened, progress_bar, report_recovery};
use session_engine::projection::SessionFile;
use session_engine::{
    Command, Error, JsonText, ManagerOptions, NewSession, Outcome, SessionManager,
};

/// `import PATH`: what is at PATH decides what it is read as (`import::detect`).
pub(crate) fn import(cli: &Cli, out: &mut Out, path: &Path) -> Result<u8> {
    use session_engine::import::ImportKind;
    let kind = session_engine::import::detect(&*cli.storage(), path)?;
    if kind == ImportKind::AmplihackRuntime {
        // Read and checked before anything is written; opens the data directory itself
        // (first without projections, which would find amplihack's files in their way).
        let (manager, ids) = session_engine::import::adopt_amplihack(
            &cli.data_dir,
            cli.manager_options(cli.options(), cli.projection_format()),
            path,
        )?;
        let manager = Opened::new(manager);
        report_recovery(manager.engine());
        manager.close()?;
        if cli.json {
            out.json(&json!({
                "adopted": ids.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
                "from": path.display().to_string(),
            }))?;
        } else {
            for id in &ids {
                out.line(id.as_str())?;
            }
        }
        return Ok(0);
    }
    match kind {
        ImportKind::ChainFile | ImportKind::ChainDir => {
            // Without projections first: a tracker file in the data directory's `chains/`
            // is another tool's until the import commits (the check at open would refuse
            // it); reopened with them, the projector takes it over, since it holds
            // exactly what the engine writes for the imported chain.
            let bare = SessionManager::open(
                &cli.data_dir,
                ManagerOptions {
                    engine: cli.options(),
                    projections: None,
                },
            )?;
            let r = bare.import_chains(path);
            bare.close()?;
            let report = r?;
            let manager = cli.open_write()?;
            manager.close()?;
            if cli.json {
                out.json(&serde_json::to_value(&report)?)?;
            } else {
                for agent in &report.imported {
                    out.line(agent.as_str())?;
                }
            }
            for agent in &report.unchanged {
                eprintln!("already imported (unchanged): {agent}");
            }
        }
        _ => {
            let manager = cli.open_write()?;
            let r = manager.import_session(path);
            manager.close()?;
            out.line(r?.session_id().as_str())?;
        }
    }
    Ok(0)
}

/// Creates a session, records a short agent turn into it, and prints it back: the engine's
/// main job end to end, on whatever data directory is configured.
pub(crate) fn demo(cli: &Cli, out: &mut Out) -> Result<u8> {
    let manager = cli.open_write()?;
    let engine = manager.engine();
    let c = engine.execute(Command::CreateSession(Box::new(NewSession {
        name: Some("demo".into()),
        agent: Some("claude-code".into()),
        metadata: vec![("user".into(), JsonText::string("alice@example.com")?)],
        ..NewSession::default()
    })))?;
    let Outcome::Session(id) = c.outcome else {
        return Err(anyhow!("create did not return a session id"));
    };
    let steps = [
        Command::RecordActivity {
            session: id.clone(),
            action: "user_input".into(),
            details: Some(JsonText::parse(r#"{"message":"Hello"}"#)?),
        },
        Command::SaveCheckpoint {
            session: id.clone(),
            label: Some("before analysis".into()),
        },
        Command::RecordCommand {
            session: id.clone(),
            command: "analyze_code".into(),
            args: Some(JsonText::parse(r#"{"path":"/project"}"#)?),
            success: true,
            error: None,
            duration_ms: 42,
        },
        Command::LogDecision {
            session: id.clone(),
            what: "keep the session".into(),
            why: "the analysis succeeded".into(),
            alternatives: Some("restore the checkpoint".into()),
        },
        Command::RecordActivity {
            session: id.clone(),
            action: "api_call".into(),
            details: Some(JsonText::parse(r#"{"endpoint":"messages","tokens":128}"#)?),
        },
    ];
    for cmd in steps {
        engine.execute(cmd)?;
    }
    let state = engine.state();
    let session = state
        .session(&id)
        .map(|s| (**s).clone())
        .ok_or_else(|| Error::not_found_session(&id))?;
    let activities = engine
        .history_of(&session, state.last_lsn)
        .activities()
        .iter()
        .map(|e| e.map(|e| e.value))
        .collect::<session_engine::Result<Vec<_>>>()?;
    manager.close()?;
    eprintln!(
        "created session {id} in {} and recorded 5 events into it (log: {}; session file: {})",
        cli.data_dir.display(),
        cli.data_dir.join("wal").display(),
        cli.data_dir
            .join("sessions")
            .join(format!("session_{id}.json"))
            .display()
    );
    out.json(&serde_json::to_value(SessionFile::with_activities(
        &session,
        &activities,
    ))?)?;
    Ok(0)
}

pub(crate) fn verify(cli: &Cli, out: &mut Out) -> Result<u8> {
    let pb = progress_bar(None, "verifying");
    let report = session_engine::verify(&cli.data_dir, &*cli.storage(), |_| pb.inc(1))?;
    pb.finish_and_clear();
    if cli.json {
        out.json(&serde_json::to_value(&report)?)?;
    }
    let mut code = 0;
    if let Some(d) = &report.damage {
        eprintln!(
            "damage: {} at byte offset {}: {}",
            d.file.display(),
            d.offset,
            d.reason
        );
        code = 7;
    }
    for s in report.snapshots.iter().filter(|s| s.problem.is_some()) {
        eprintln!(
            "damaged snapshot: {}: {}",
            s.file.display(),
            s.problem.as_deref().unwrap_or_default()
        );
        code = 7;
    }
    if let Some(t) = &report.torn_tail {
        eprintln!(
            "torn final record: {} at byte offset {} ({} bytes, would have been LSN {}): {}",
            t.file.display(),
            t.offset,
            t.bytes,
            t.lsn,
            t.reason
        );
        if code == 0 {
            code = 8;
        }
    }
    if !cli.json {
        out.line(&format!(
            "{}: {} segments, {} records, last LSN {}, {} snapshots",
            if code == 0 { "intact" } else { "NOT intact" },
            report.segments,
            report.records,
            report.last_lsn,
            report.snapshots.len()
        ))?;
    }
    if code == 7 {
        eprintln!(
            "run `session-engine repair` to move the damaged bytes aside (nothing is deleted)"
        );
    }
    Ok(code)
}

/// `rebuild-projections [--projections F]`: every projection file rewritten from the log
/// (in format F, which becomes the directory's).
pub(crate) fn rebuild_projections(cli: &Cli, out: &mut Out) -> Result<u8> {
    // The directory opens in its recorded format; the rebuild changes it.
    let manager = cli.open_write_as(cli.options(), None)?;
    let pb = progress_bar(None, "rebuilding projections");
    pb.enable_steady_tick(Duration::from_millis(100));
    let r = match cli.projection_format() {
        Some(f) => manager.rebuild_projections_as(f),
        None => manager.rebuild_projections(),
    };
    let format = manager.projection_format().unwrap_or_default();
    pb.finish_and_clear();
    manager.close()?;
    let report = r?;
    if cli.json {
        let mut v = serde_json::to_value(&report)?;
        v["format"] = json!(format.as_str());
        out.json(&v)?;
    } else {
        out.line(&format!(
            "rebuilt the projections at LSN {}: {} session files, {} chain files, \
             {} session logs; moved {} files of its own it no longer writes into \
             projections-attic/ ({format} format)",
            report.lsn, report.sessions, report.chains, report.logs, report.moved_aside
        ))?;
    }
    Ok(0)
}

/// `repair`: damaged bytes moved aside into `quarantine/`, then the projections rebuilt.
pub(crate) fn repair(cli: &Cli, out: &mut Out) -> Result<u8> {
    let report = session_engine::repair(&cli.data_dir, cli.storage())?;
    if !report.was_clean() {
        // The projection files may show records that were just moved aside. The repair is
        // done either way (run again, it would find nothing to do), so a rebuild that
        // fails is a warning that says what to run.
        let manager = cli.open_write()?;
        let rebuilt = manager.rebuild_projections();
        manager.close()?;
        if let Err(e) = rebuilt {
            eprintln!(
                "warning: the log is repaired, but the projection files could not be \
                 rebuilt: {e}; run `session-engine rebuild-projections`"
            );
        }
    }
    if cli.json {
        out.json(&serde_json::to_value(&report)?)?;
    } else if report.was_clean() {
        out.line(&format!(
            "nothing to repair: the log is intact up to LSN {}",
            report.last_lsn
        ))?;
    } else {
        for m in &report.moved {
            out.line(&format!(
                "moved {} bytes from {} at offset {} to {} ({})",
                m.bytes,
                m.file.display(),
                m.offset,
                m.saved_to.display(),
                m.reason
            ))?;
        }
        out.line(&format!(
            "the log now ends at LSN {}; the directory opens again",
            report.last_lsn
        ))?;
    }
    Ok(0)
}

/// `snapshot`: a snapshot now; prints its LSN.
pub(crate) fn snapshot(cli: &Cli, out: &mut Out) -> Result<u8> {
    let manager = cli.open_write()?;
    let lsn = manager.engine().snapshot();
    manager.close()?;
    let lsn = lsn?;
    if cli.json {
        out.json(&json!({"snapshot_lsn": lsn.0}))?;
    } else {
        out.line(&format!("snapshot at LSN {lsn}"))?;
    }
    Ok(0)
}
