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
mod maintain;
mod output;
mod read_cmds;
mod runs;
mod serve;
mod write_cmds;

use std::io::IsTerminal;
use std::mem::ManuallyDrop;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use args::{ClaudeCmd, Cli, Cmd, DurabilityArg, ProjectionsArg, StatusArg};
use output::{Out, is_broken_pipe};
use session_engine::import::seed003::ChainFileError;
use session_engine::projection::{ProjectionFormat, ProjectionOptions};
use session_engine::storage::Storage;
use session_engine::{
    Command, Durability, Engine, Error, FileStorage, JsonText, ManagerOptions, Options, SessionId,
    SessionManager, Status,
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
            Cmd::Runs { resume, .. } => *resume,
            Cmd::Show { .. }
            | Cmd::History { .. }
            | Cmd::List { .. }
            | Cmd::Export { .. }
            | Cmd::Replay { .. }
            | Cmd::Verify
            | Cmd::Cancel { .. }
            | Cmd::Health { .. }
            | Cmd::Logs { .. }
            | Cmd::Search(_)
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
/// soon after, and freeing a large state one allocation at a time is slow (measured in
/// `docs/benchmarks.md`, *Notes on the results*).
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
            reason: "verify and repair work on the data directory's write-ahead log; run them without --log"
                .into(),
        }
        .into());
    }
    match &cli.command {
        Cmd::Create(a) => write_cmds::create(cli, out, a),
        Cmd::Activity {
            id,
            action,
            details,
        } => write_cmds::activity(cli, id, action, details.as_deref()),
        Cmd::Meta {
            id,
            key,
            value,
            remove,
        } => write_cmds::meta(cli, out, id, key, value.as_deref(), *remove),
        Cmd::Pause { id } => write(cli, Command::Pause(session_id(id)?)).map(|_| 0),
        Cmd::Resume { id } => write(cli, Command::Resume(session_id(id)?)).map(|_| 0),
        Cmd::End { id } => write(cli, Command::End(session_id(id)?)).map(|_| 0),
        Cmd::Archive { id } => write(cli, Command::Archive(session_id(id)?)).map(|_| 0),
        Cmd::Checkpoint { id, label } => write_cmds::checkpoint(cli, out, id, label.as_deref()),
        Cmd::Restore { id, index } => write_cmds::restore(cli, out, id, *index),
        Cmd::Decision {
            id,
            what,
            why,
            alternatives,
        } => write_cmds::decision(cli, id, what, why, alternatives.as_deref()),
        Cmd::Command(a) => write_cmds::command(cli, a),
        Cmd::Chain(a) => write_cmds::chain(cli, out, a),
        Cmd::Cleanup { max_age_days } => write_cmds::cleanup(cli, out, *max_age_days),
        Cmd::Clone { id, new_id } => write_cmds::clone(cli, out, id, new_id.as_deref()),
        Cmd::Show { id, at } => read_cmds::show(cli, out, id, *at),
        Cmd::History {
            id,
            commands,
            decisions,
            from,
            limit,
            newest_first,
            at,
        } => read_cmds::history(
            cli,
            out,
            id,
            &read_cmds::HistoryQuery {
                kind: if *commands {
                    read_cmds::HistoryKind::Commands
                } else if *decisions {
                    read_cmds::HistoryKind::Decisions
                } else {
                    read_cmds::HistoryKind::Activities
                },
                from: *from,
                limit: *limit,
                newest_first: *newest_first,
                at: *at,
            },
        ),
        Cmd::List { status } => read_cmds::list(cli, out, *status),
        Cmd::Export { id, file } => read_cmds::export(cli, out, id, file),
        Cmd::Replay { from, session } => read_cmds::replay(cli, out, *from, session.as_deref()),
        Cmd::Stats => read_cmds::stats(cli, out),
        Cmd::Import { file } => maintain::import(cli, out, file),
        Cmd::Verify => maintain::verify(cli, out),
        Cmd::Repair => maintain::repair(cli, out),
        Cmd::Snapshot => maintain::snapshot(cli, out),
        Cmd::RebuildProjections => maintain::rebuild_projections(cli, out),
        Cmd::Demo => maintain::demo(cli, out),
        Cmd::Claude(c) => claude_import::run(cli, out, c),
        Cmd::Search(a) => claude_import::run_search(cli, out, a),
        Cmd::Apply => apply::run(cli, out),
        Cmd::Serve(a) => serve::run(cli, out, a),
        Cmd::Exec(a) => runs::exec(cli, out, a),
        Cmd::Runs { resume: true, .. } => runs::resume(cli, out),
        Cmd::Runs {
            run,
            session,
            status,
            ..
        } => runs::runs(
            cli,
            out,
            run.as_deref(),
            session.as_deref(),
            status.as_deref(),
        ),
        Cmd::Cancel { run, all, wait } => runs::cancel(cli, out, run.as_deref(), *all, *wait),
        Cmd::Health { stale_after } => runs::health(cli, out, *stale_after),
        Cmd::Logs { run, follow } => runs::logs(cli, out, run, *follow),
    }
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
