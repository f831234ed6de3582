//! `session-engine`: the command line, a thin layer over the library.
//!
//! Exit status: 0 success; 1 failure of the engine or the disk; 2 bad usage; 3 not found;
//! 4 invalid input (including a refused bundle or seed 003 tracker file); 5 refused in the
//! current state (including `import` of a chain the engine has otherwise, or onto a chain
//! file path holding another file); 6 data directory locked by another
//! process (or, with `--log nats://`, another writer appended to the stream first); 7 damaged data (verify: damage found); 8 (verify only) a torn final record;
//! 9 the data directory holds another tool's files where the projections go (nothing
//! was changed: import them, or choose another `--data-dir`).
//! `claude validate` and `claude info` (see `claude.rs`): 7 a transcript has a bad line,
//! else 1 a file or folder could not be read, else 3 a named path does not exist.
//! A closed stdout pipe ends the command quietly with status 0.
//! `apply` exits 0 once every line is answered, refused lines included (each gets an
//! `"ok":false` answer); 1 when the engine failed while applying (a write or fsync error).
//!
//! The status says whether the command was committed: a projection file that cannot be
//! written after the commit is a warning on stderr (and in `stats`), never a failure, so
//! a script that retries on failure never records a command twice.

mod apply;
mod args;
mod claude;
mod claude_import;
mod logging;
mod output;
mod runs;
mod serve;

use std::io::IsTerminal;
use std::mem::ManuallyDrop;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Parser;
use serde_json::{Value, json};

use args::{ClaudeCmd, Cli, Cmd, DurabilityArg, ProjectionsArg, StatusArg};
use output::{Out, is_broken_pipe};
use session_engine::import::seed003::ChainFileError;
use session_engine::projection::{ChainFile, ProjectionFormat, ProjectionOptions, SessionFile};
use session_engine::storage::Storage;
use session_engine::{
    AgentId, Command, Durability, Engine, Error, FileStorage, JsonText, Lsn, ManagerOptions,
    NewSession, Options, Outcome, SessionId, SessionManager, Status, protocol,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let writes = cli.command_writes();
    let log_dir = (writes || (cli.command.uses_data_dir() && cli.data_dir.exists()))
        .then(|| cli.data_dir.join("logs"));
    logging::init(&cli.log_level, log_dir.as_deref(), cli.file_storage());
    let mut out = Out::new();
    let result = run(&cli, &mut out).and_then(|code| {
        out.flush()?;
        Ok(code)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // The library's messages already include their cause; anything else is shown
            // with its chain of contexts.
            match e.downcast_ref::<Error>() {
                Some(lib) => eprintln!("error: {lib}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit status for an error (see the module documentation).
fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Error>() {
        Some(Error::NotFound { .. }) => 3,
        Some(Error::InvalidChainFile {
            reason: ChainFileError::TargetTaken { .. },
            ..
        }) => 5,
        Some(
            Error::InvalidInput { .. }
            | Error::InvalidBundle { .. }
            | Error::InvalidChainFile { .. }
            | Error::InvalidImport { .. },
        ) => 4,
        Some(
            Error::InvalidState { .. }
            | Error::AlreadyExists { .. }
            | Error::LsnOutOfRange { .. }
            | Error::ProjectionFormatMismatch { .. },
        ) => 5,
        Some(Error::Locked { .. } | Error::LogConflict { .. }) => 6,
        Some(Error::Corruption { .. } | Error::UnsupportedVersion { .. }) => 7,
        Some(Error::ForeignFiles { .. }) => 9,
        _ => 1,
    }
}

impl Cmd {
    /// Whether the command touches the data directory at all (its log files included).
    fn uses_data_dir(&self) -> bool {
        !matches!(
            self,
            Cmd::Claude(ClaudeCmd::Validate { .. } | ClaudeCmd::Info { .. })
        )
    }
}

impl Cli {
    /// Whether the command writes to the data directory (and may create it).
    fn command_writes(&self) -> bool {
        match &self.command {
            Cmd::Meta { value, remove, .. } => value.is_some() || *remove,
            Cmd::Chain(c) => c.link.is_some() || c.reset,
            Cmd::Claude(c) => matches!(c, ClaudeCmd::Import { .. } | ClaudeCmd::Follow { .. }),
            Cmd::Show { .. }
            | Cmd::List { .. }
            | Cmd::Export { .. }
            | Cmd::Replay { .. }
            | Cmd::Verify
            | Cmd::Runs { .. }
            | Cmd::Cancel { .. }
            | Cmd::Health { .. }
            | Cmd::Logs { .. }
            | Cmd::Stats => false,
            _ => true,
        }
    }

    fn options(&self) -> Options {
        Options {
            durability: match self.durability {
                DurabilityArg::Always => Durability::Always,
                DurabilityArg::Interval => {
                    Durability::Interval(Duration::from_millis(self.sync_interval_ms))
                }
                DurabilityArg::None => Durability::None,
            },
            // A command-line process lives for one command; the watchdog would only race
            // with it. Expiry is recorded by long-running engines (`apply`, services).
            watchdog_interval: None,
            segment_bytes: self.segment_bytes,
            snapshot_every: self.snapshot_every,
            storage: self.storage(),
            log: self
                .log
                .as_ref()
                .map(|l| Arc::new(l.clone()) as Arc<dyn session_engine::backend::LogBackend>),
            ..Options::default()
        }
    }

    fn file_storage(&self) -> FileStorage {
        if self.group_access {
            FileStorage::with_group_access()
        } else {
            FileStorage::new()
        }
    }

    fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(self.file_storage())
    }

    /// Opens the data directory for writing, with its JSON projections.
    fn open_write(&self) -> Result<Opened> {
        self.open_write_with(self.options())
    }

    /// [`Cli::open_write`] with other engine options.
    fn open_write_with(&self, options: Options) -> Result<Opened> {
        self.open_write_as(options, self.projection_format())
    }

    /// [`Cli::open_write`] with other engine options and projections in `format`
    /// (`None`: the recorded one).
    fn open_write_as(&self, options: Options, format: Option<ProjectionFormat>) -> Result<Opened> {
        let manager = SessionManager::open(&self.data_dir, self.manager_options(options, format))?;
        report_recovery(manager.engine());
        Ok(Opened::new(manager))
    }

    fn manager_options(
        &self,
        options: Options,
        format: Option<ProjectionFormat>,
    ) -> ManagerOptions {
        ManagerOptions {
            engine: options,
            projections: Some(ProjectionOptions {
                format,
                ..ProjectionOptions::default()
            }),
        }
    }

    /// The format `--projections` asks for.
    fn projection_format(&self) -> Option<ProjectionFormat> {
        self.projections.map(|p| match p {
            ProjectionsArg::Seed => ProjectionFormat::Seed,
            ProjectionsArg::Amplihack => ProjectionFormat::Amplihack,
        })
    }

    /// Opens the data directory read-only: works while another process writes.
    fn open_read(&self) -> Result<Opened> {
        let manager = SessionManager::open_read_only(&self.data_dir, self.options())?;
        report_recovery(manager.engine());
        Ok(Opened::new(manager))
    }
}

/// The data directory, open for the rest of this process. Dropping it closes it as
/// dropping a [`SessionManager`] does (the log synced, the projections complete, the lock
/// released), but leaves the state's memory to the operating system: the process ends
/// soon after, and freeing a large state one allocation at a time is slow (a state of a
/// million activities took 44-56 ms to free; not freeing it made `show` on such a
/// directory 15% faster: `docs/benchmarks.md`).
pub(crate) struct Opened(ManuallyDrop<SessionManager>, AtomicBool);

impl std::ops::Deref for Opened {
    type Target = SessionManager;

    fn deref(&self) -> &SessionManager {
        &self.0
    }
}

impl Opened {
    fn new(manager: SessionManager) -> Opened {
        Opened(ManuallyDrop::new(manager), AtomicBool::new(false))
    }

    /// Closes the data directory. An error means the log could not be closed (in the
    /// buffered durability modes the last commands may not be durable); projection files
    /// left unwritten are only a warning on stderr (once), since every committed event is
    /// in the log and the next command that opens the directory writes them.
    pub(crate) fn close(&self) -> session_engine::Result<()> {
        let r = self.0.close();
        if !self.1.swap(true, Ordering::SeqCst) {
            warn_if_projections_behind(&self.0);
        }
        r
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the data directory failed");
        }
    }
}

/// After a close: says on stderr that the projection files are behind the log, if they
/// are. Not a failure of the command (see the module documentation).
fn warn_if_projections_behind(manager: &SessionManager) {
    let Some(st) = manager.projection_status() else {
        return;
    };
    if !st.is_behind() && st.last_error.is_none() {
        return;
    }
    let cause = st
        .last_error
        .as_deref()
        .unwrap_or("they could not be written");
    eprintln!(
        "warning: the projection files are behind the log, which has every committed \
         event (up to LSN {}): {cause}; the next command that opens the data directory \
         writes them (or run `session-engine rebuild-projections`)",
        st.received
    );
}

/// Says on stderr what opening the directory cut or skipped.
fn report_recovery(engine: &Engine) {
    let r = engine.recovery_report();
    if let Some(t) = &r.torn_tail {
        let saved = t
            .saved_to
            .as_ref()
            .map(|p| format!("; the damaged bytes were saved to {}", p.display()))
            .unwrap_or_default();
        eprintln!(
            "warning: the log ended with a torn write: cut {} bytes at offset {} of {} \
             (the record that would have been LSN {}: {}){saved}",
            t.bytes,
            t.offset,
            t.file.display(),
            t.lsn,
            t.reason
        );
    }
    for s in &r.skipped_snapshots {
        eprintln!(
            "warning: skipped snapshot {}: {}",
            s.file.display(),
            s.reason
        );
    }
}

fn session_id(s: &str) -> Result<SessionId> {
    Ok(SessionId::new(s)?)
}

/// A value given on the command line: JSON when it parses as JSON, otherwise a string.
/// JSON that breaks a rule of JSON values (nested too deep, a duplicate key) is refused
/// rather than kept as a string.
fn loose_json(field: &'static str, s: &str) -> Result<JsonText> {
    JsonText::parse_or_string(s).map_err(|e| match e {
        Error::InvalidInput { reason, .. } => Error::InvalidInput { field, reason }.into(),
        other => other.into(),
    })
}

fn strict_json(field: &'static str, s: &str) -> Result<JsonText> {
    JsonText::parse(s).map_err(|e| match e {
        Error::InvalidInput { reason, .. } => Error::InvalidInput { field, reason }.into(),
        other => other.into(),
    })
}

fn status(s: StatusArg) -> Status {
    match s {
        StatusArg::Active => Status::Active,
        StatusArg::Paused => Status::Paused,
        StatusArg::Ended => Status::Ended,
        StatusArg::Archived => Status::Archived,
        StatusArg::TimedOut => Status::TimedOut,
    }
}

/// Runs a write command on a freshly opened engine and closes it (so the answer is durable
/// and the projections are complete when the process exits).
fn write(cli: &Cli, cmd: Command) -> Result<session_engine::Committed> {
    let manager = cli.open_write()?;
    let op = cmd.name();
    let r = manager.engine().execute(cmd);
    manager.close()?;
    match &r {
        Ok(c) => tracing::info!(
            op,
            lsn = c.lsn.0,
            appended = c.appended,
            "command committed"
        ),
        Err(e) => tracing::info!(op, error = %e, kind = e.kind(), "command refused"),
    }
    Ok(r?)
}

/// Whether `e` says the data directory does not exist (read commands then show nothing).
fn missing_dir(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<Error>(),
        Some(Error::NotFound {
            kind: "data directory",
            ..
        })
    )
}

fn progress_bar(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    if !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    pb.set_message(what.to_string());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
    ) {
        pb.set_style(style);
    }
    pb
}

fn run(cli: &Cli, out: &mut Out) -> Result<u8> {
    if cli.log.is_some() && matches!(cli.command, Cmd::Verify | Cmd::Repair) {
        // They check and mend the file log's segments; a stream has its own replication.
        return Err(Error::InvalidInput {
            field: "log",
            reason: "verify and repair work on the data directory's write-ahead log;                      run them without --log"
                .into(),
        }
        .into());
    }
    match &cli.command {
        Cmd::Exec(a) => return runs::exec(cli, out, a),
        Cmd::Runs {
            run,
            session,
            status,
        } => {
            return runs::runs(
                cli,
                out,
                run.as_deref(),
                session.as_deref(),
                status.as_deref(),
            );
        }
        Cmd::Cancel { run, all, wait } => {
            return runs::cancel(cli, out, run.as_deref(), *all, *wait);
        }
        Cmd::Health { stale_after } => return runs::health(cli, out, *stale_after),
        Cmd::Logs { run, follow } => return runs::logs(cli, out, run, *follow),
        Cmd::Create(a) => {
            let mut metadata = Vec::new();
            for kv in &a.meta {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    Error::invalid_input("metadata", format!("{kv:?} is not KEY=VALUE"))
                })?;
                metadata.push((k.to_string(), loose_json("meta", v)?));
            }
            let c = write(
                cli,
                Command::CreateSession(Box::new(NewSession {
                    id: a.id.as_deref().map(session_id).transpose()?,
                    name: a.name.clone(),
                    timeout_secs: a.timeout,
                    agent: a.agent.clone(),
                    working_dir: a.working_dir.clone(),
                    metadata,
                    ..NewSession::default()
                })),
            )?;
            if let Outcome::Session(id) = c.outcome {
                out.line(id.as_str())?;
            }
        }
        Cmd::Activity {
            id,
            action,
            details,
        } => {
            let details = details
                .as_deref()
                .map(|d| strict_json("details", d))
                .transpose()?;
            write(
                cli,
                Command::RecordActivity {
                    session: session_id(id)?,
                    action: action.clone(),
                    details,
                },
            )?;
        }
        Cmd::Meta {
            id,
            key,
            value,
            remove,
        } => {
            let session = session_id(id)?;
            if *remove {
                write(
                    cli,
                    Command::RemoveMetadata {
                        session,
                        key: key.clone(),
                    },
                )?;
            } else if let Some(v) = value {
                write(
                    cli,
                    Command::SetMetadata {
                        session,
                        key: key.clone(),
                        value: loose_json("value", v)?,
                    },
                )?;
            } else {
                let manager = cli.open_read()?;
                let state = manager.state();
                let s = state
                    .session(&session)
                    .ok_or_else(|| Error::not_found_session(&session))?;
                let v = s.get_metadata(key).ok_or_else(|| Error::NotFound {
                    kind: "metadata key",
                    id: format!("{key:?} in session {session}"),
                })?;
                out.line(v.as_str())?;
            }
        }
        Cmd::Pause { id } => {
            write(cli, Command::Pause(session_id(id)?))?;
        }
        Cmd::Resume { id } => {
            write(cli, Command::Resume(session_id(id)?))?;
        }
        Cmd::End { id } => {
            write(cli, Command::End(session_id(id)?))?;
        }
        Cmd::Archive { id } => {
            write(cli, Command::Archive(session_id(id)?))?;
        }
        Cmd::Checkpoint { id, label } => {
            let c = write(
                cli,
                Command::SaveCheckpoint {
                    session: session_id(id)?,
                    label: label.clone(),
                },
            )?;
            if let Outcome::Checkpoint(i) = c.outcome {
                out.line(&i.to_string())?;
            }
        }
        Cmd::Restore { id, index } => {
            let c = write(
                cli,
                Command::RestoreCheckpoint {
                    session: session_id(id)?,
                    index: *index,
                },
            )?;
            if cli.json
                && let Outcome::Checkpoint(i) = c.outcome
            {
                out.json(&json!({"restored": i, "lsn": c.lsn.0}))?;
            }
        }
        Cmd::Decision {
            id,
            what,
            why,
            alternatives,
        } => {
            write(
                cli,
                Command::LogDecision {
                    session: session_id(id)?,
                    what: what.clone(),
                    why: why.clone(),
                    alternatives: alternatives.clone(),
                },
            )?;
        }
        Cmd::Command(a) => {
            let args = a
                .args
                .as_deref()
                .map(|s| strict_json("args", s))
                .transpose()?;
            write(
                cli,
                Command::RecordCommand {
                    session: session_id(&a.id)?,
                    command: a.command.clone(),
                    args,
                    success: a.error.is_none(),
                    error: a.error.clone(),
                    duration_ms: a.duration_ms,
                },
            )?;
        }
        Cmd::Chain(a) => {
            let agent = AgentId::new(&a.agent)?;
            if a.reset {
                write(cli, Command::ResetChain(agent))?;
            } else if let Some(link) = &a.link {
                if let Some(projects) = &a.projects {
                    session_engine::claude::find_valid_transcript(
                        &FileStorage::new(),
                        projects,
                        link,
                    )?;
                }
                write(
                    cli,
                    Command::LinkChain {
                        agent,
                        external_id: link.clone(),
                        prompt: a.prompt.clone().unwrap_or_default(),
                        response: a.response.clone().unwrap_or_default(),
                        metadata: None,
                    },
                )?;
            } else {
                let state = match cli.open_read() {
                    Ok(m) => Some(m.state()),
                    Err(e) if missing_dir(&e) => None,
                    Err(e) => return Err(e),
                };
                let chain = state
                    .as_ref()
                    .and_then(|s| s.chain(&agent).cloned())
                    .map(|c| (*c).clone())
                    .unwrap_or_else(|| session_engine::Chain::new(agent.clone()));
                if a.summary {
                    out.json(&serde_json::to_value(chain.summary())?)?;
                } else {
                    out.json(&serde_json::to_value(ChainFile::of(&chain))?)?;
                }
            }
        }
        Cmd::Show { id, at } => {
            let session = session_id(id)?;
            let manager = cli.open_read()?;
            let s = match at {
                Some(lsn) => manager
                    .engine()
                    .session_at(&session, Lsn(*lsn))?
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
        }
        Cmd::List { status: st } => {
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
        }
        Cmd::Cleanup { max_age_days } => {
            let c = write(
                cli,
                Command::CleanupOldSessions {
                    max_age_days: *max_age_days,
                },
            )?;
            let n = match &c.outcome {
                Outcome::Sessions(v) => v.len(),
                _ => 0,
            };
            out.line(&n.to_string())?;
        }
        Cmd::Clone { id, new_id } => {
            let c = write(
                cli,
                Command::Clone {
                    source: session_id(id)?,
                    new_id: new_id.as_deref().map(session_id).transpose()?,
                },
            )?;
            if let Outcome::Session(id) = c.outcome {
                out.line(id.as_str())?;
            }
        }
        Cmd::Export { id, file } => {
            let manager = cli.open_read()?;
            let bundle = manager.export_session(id, file)?;
            if cli.json {
                out.json(&json!({
                    "session_id": bundle.session_id.as_str(),
                    "events": bundle.events.len(),
                    "file": file.display().to_string(),
                }))?;
            }
        }
        Cmd::Import { file } => return import(cli, out, file),
        Cmd::Claude(c) => match c {
            ClaudeCmd::Validate { .. } | ClaudeCmd::Info { .. } => {
                return claude::run(cli.json, out, c);
            }
            ClaudeCmd::Import { paths } => {
                let manager = cli.open_write()?;
                let code = claude_import::import(cli.json, out, &manager, paths)?;
                manager.close()?;
                return Ok(code);
            }
            ClaudeCmd::Follow { paths, interval_ms } => {
                let manager = cli.open_write()?;
                let r = claude_import::follow(
                    cli.json,
                    out,
                    &manager,
                    paths,
                    Duration::from_millis(*interval_ms),
                );
                manager.close()?;
                return r;
            }
            ClaudeCmd::Export {
                session,
                file,
                output,
            } => {
                let manager = cli.open_read()?;
                return claude_import::export(
                    &manager,
                    session,
                    file.as_deref().or(output.as_deref()),
                );
            }
            ClaudeCmd::Show { session } => {
                let manager = cli.open_read()?;
                return claude_import::show(out, &manager, session);
            }
            ClaudeCmd::Search {
                query,
                project,
                session,
                kinds,
                since,
                limit,
            } => {
                let manager = cli.open_read()?;
                let q = claude_import::search_query(query, project, session, kinds, since, *limit)?;
                return claude_import::search(cli.json, out, &manager, &q);
            }
        },
        Cmd::RebuildProjections => {
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
        }
        Cmd::Apply => return apply::run(cli, out),
        Cmd::Replay { from, session } => {
            let session = session.as_deref().map(session_id).transpose()?;
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
                Lsn((*from).max(1)),
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
        }
        Cmd::Verify => return verify(cli, out),
        Cmd::Demo => demo(cli, out)?,
        Cmd::Repair => {
            let report = session_engine::repair(&cli.data_dir, cli.storage())?;
            if !report.was_clean() {
                // The projection files may show records that were just moved aside. The
                // repair is done either way (run again, it would find nothing to do), so
                // a rebuild that fails is a warning that says what to run.
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
        }
        Cmd::Snapshot => {
            let manager = cli.open_write()?;
            let lsn = manager.engine().snapshot();
            manager.close()?;
            let lsn = lsn?;
            if cli.json {
                out.json(&json!({"snapshot_lsn": lsn.0}))?;
            } else {
                out.line(&format!("snapshot at LSN {lsn}"))?;
            }
        }
        Cmd::Serve(a) => return serve::run(cli, out, a),
        Cmd::Stats => {
            let manager = cli.open_read()?;
            out.json(&output::stats_json(manager.engine(), &*cli.storage())?)?;
        }
    }
    Ok(0)
}

/// `import PATH`: what is at PATH decides what it is read as (`import::detect`).
fn import(cli: &Cli, out: &mut Out, path: &std::path::Path) -> Result<u8> {
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
fn demo(cli: &Cli, out: &mut Out) -> Result<()> {
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
    let session = engine
        .state()
        .session(&id)
        .map(|s| (**s).clone())
        .ok_or_else(|| Error::not_found_session(&id))?;
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
    out.json(&serde_json::to_value(SessionFile::of(&session))?)
}

fn verify(cli: &Cli, out: &mut Out) -> Result<u8> {
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

trait ErrorExt {
    fn invalid_input(field: &'static str, reason: String) -> Error;
    fn not_found_session(id: &SessionId) -> Error;
}

impl ErrorExt for Error {
    fn invalid_input(field: &'static str, reason: String) -> Error {
        Error::InvalidInput { field, reason }
    }
    fn not_found_session(id: &SessionId) -> Error {
        Error::NotFound {
            kind: "session",
            id: id.to_string(),
        }
    }
}
