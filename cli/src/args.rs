//! Command-line flags, as parsed by clap. Derived settings live in `main.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use session_engine::engine::{
    DEFAULT_SEGMENT_BYTES, DEFAULT_SNAPSHOT_EVERY, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES,
};

/// An embedded, crash-safe, event-sourced session engine for AI coding agents.
///
/// Every change is appended to a checksummed write-ahead log and made durable before the
/// command answers. The JSON files of the session toolkit (sessions/registry.json,
/// sessions/session_<id>.json, ...) are kept up to date under the data directory.
#[derive(Debug, Parser)]
#[command(name = "session-engine", version, propagate_version = true)]
pub struct Cli {
    /// The data directory.
    #[arg(
        long,
        global = true,
        env = "SESSION_ENGINE_DIR",
        default_value = ".claude/runtime",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// When a command counts as done: after fsync (always), after the write with an fsync
    /// at most --sync-interval-ms later (interval), or after the write (none).
    #[arg(long, global = true, value_enum, default_value_t = DurabilityArg::Always)]
    pub durability: DurabilityArg,

    /// Longest delay before an fsync in --durability interval, from 1 ms (0 is refused:
    /// an fsync after every write is --durability always).
    #[arg(long, global = true, default_value_t = 100, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_interval_ms: u64,

    /// Size of each write-ahead log segment file, in bytes, from 4096 (4K) to 1073741824
    /// (1G); K, M and G (powers of 1024) are accepted. The log starts a new segment when
    /// the next batch does not fit (a segment is made larger when one batch needs it);
    /// segments already written keep their size. Small segments let a short run show a
    /// multi-segment log.
    #[arg(
        long,
        global = true,
        default_value_t = DEFAULT_SEGMENT_BYTES,
        value_name = "BYTES",
        value_parser = parse_segment_bytes
    )]
    pub segment_bytes: u64,

    /// Take a snapshot automatically after this many new events (0: only when asked,
    /// with `snapshot`). Opening replays the log from the newest snapshot on.
    #[arg(long, global = true, default_value_t = DEFAULT_SNAPSHOT_EVERY, value_name = "N")]
    pub snapshot_every: u64,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Create new files in the data directory readable by the owner's group (0640, folders
    /// 0750) instead of by the owner only (0600 and 0700).
    #[arg(long, global = true)]
    pub group_access: bool,

    /// The format of the JSON projections: seed (seed 001's files, the default for a new
    /// directory) or amplihack (the files the amplihack toolkit reads). Recorded in the
    /// data directory at its first writable open; a directory in the other format is
    /// refused. Only `rebuild-projections --projections F` changes it. Without this flag
    /// the recorded format is used.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SESSION_ENGINE_PROJECTIONS",
        value_name = "FORMAT"
    )]
    pub projections: Option<ProjectionsArg>,

    /// Where the engine's log lives: the write-ahead log in the data directory (the
    /// default), or a NATS JetStream stream, `nats://HOST:PORT[,HOST:PORT...][/DATA_SET]
    /// [?replicas=N]` (data set `default`; replicas 3 when three or more servers are named,
    /// else 1; the servers must run with `sync_interval: always`). Snapshots, projections
    /// and the lock stay in the data directory.
    #[arg(
        long,
        global = true,
        env = "SESSION_ENGINE_LOG",
        value_name = "URL",
        value_parser = parse_log
    )]
    pub log: Option<session_engine_nats::NatsLog>,

    /// Log level on stderr (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Cmd,
}

/// `--log`: a NATS JetStream backend (its connection is made at the first open).
fn parse_log(url: &str) -> Result<session_engine_nats::NatsLog, String> {
    let mut o = session_engine_nats::NatsOptions::parse(url).map_err(|e| e.to_string())?;
    if !url.contains("replicas=") && o.servers.len() >= 3 {
        o.replicas = 3;
    }
    session_engine_nats::NatsLog::new(o).map_err(|e| e.to_string())
}

/// `--durability` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Answer after fdatasync; concurrent commands share fsyncs.
    Always,
    /// Answer after the write; fsync within --sync-interval-ms.
    Interval,
    /// Answer after the write; fsync only when the engine closes.
    None,
}

/// `--projections` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProjectionsArg {
    /// Seed 001's files: sessions/session_<id>.json, sessions/registry.json, ...
    Seed,
    /// amplihack's files: sessions/<id>.json, sessions/registry.json, logs/<id>.log, ...
    Amplihack,
}

/// `--status` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Accepting activity.
    Active,
    /// Paused.
    Paused,
    /// Ended.
    Ended,
    /// Archived.
    Archived,
    /// Timed out.
    TimedOut,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a session and print its id.
    Create(CreateArgs),
    /// Record an activity in an active session.
    Activity {
        /// The session id.
        id: String,
        /// The activity type (user_input, api_call, ...).
        action: String,
        /// Details as a JSON value.
        #[arg(long, value_name = "JSON")]
        details: Option<String>,
    },
    /// Print a metadata value as JSON, or set it when VALUE is given.
    Meta {
        /// The session id.
        id: String,
        /// The metadata key.
        key: String,
        /// The value: JSON when it parses as JSON, otherwise a string.
        value: Option<String>,
        /// Remove the key instead.
        #[arg(long, conflicts_with = "value")]
        remove: bool,
    },
    /// Pause an active session.
    Pause {
        /// The session id.
        id: String,
    },
    /// Make a paused, ended, timed-out or archived session active again.
    Resume {
        /// The session id.
        id: String,
    },
    /// End a session.
    End {
        /// The session id.
        id: String,
    },
    /// Save a checkpoint and print its index (0-based).
    Checkpoint {
        /// The session id.
        id: String,
        /// A label for the checkpoint.
        #[arg(long)]
        label: Option<String>,
    },
    /// Return a session to a checkpoint (default: the last one).
    Restore {
        /// The session id.
        id: String,
        /// The checkpoint index.
        index: Option<u32>,
    },
    /// Log a decision for the audit trail.
    Decision {
        /// The session id.
        id: String,
        /// What was decided.
        #[arg(long)]
        what: String,
        /// Why.
        #[arg(long)]
        why: String,
        /// Alternatives considered.
        #[arg(long)]
        alternatives: Option<String>,
    },
    /// Record a command the session ran.
    Command(CommandArgs),
    /// Print an agent's session chain as JSON, or add a link to it with --link.
    Chain(ChainArgs),
    /// Print a session as one JSON object.
    Show {
        /// The session id.
        id: String,
        /// Show the session as it was right after this LSN.
        #[arg(long, value_name = "LSN")]
        at: Option<u64>,
    },
    /// Print a session's history one item per line, oldest first: activities, or its
    /// commands or decisions (`INDEX<TAB>TIMESTAMP<TAB>NAME<TAB>DETAILS`, the details as
    /// compact JSON; with --json one object per line), a page at a time for big sessions.
    History {
        /// The session id.
        id: String,
        /// The session's command runs instead of its activities.
        #[arg(long, conflicts_with = "decisions")]
        commands: bool,
        /// The session's decisions instead of its activities.
        #[arg(long)]
        decisions: bool,
        /// Start at the item with this index (0-based, oldest first; indices are printed
        /// and stay the same as the session grows). Default: the oldest, or with
        /// --newest-first the newest.
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// Print at most N items.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Newest first: from the start index down to 0.
        #[arg(long)]
        newest_first: bool,
        /// The history as it was right after this LSN.
        #[arg(long, value_name = "LSN")]
        at: Option<u64>,
    },
    /// List session ids, one per line (with --json, an array of objects).
    List {
        /// Only sessions with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
    },
    /// Move a session to the archive.
    Archive {
        /// The session id.
        id: String,
    },
    /// Archive sessions whose last activity is older than N days; print how many.
    Cleanup {
        /// Age in days.
        #[arg(long, value_name = "N")]
        max_age_days: u32,
    },
    /// Export a session (all its events) to a JSON bundle.
    Export {
        /// The session id.
        id: String,
        /// The bundle file to write.
        file: PathBuf,
    },
    /// Import a bundle file (print the session's id, a new one if the id is taken), seed
    /// 003 tracker files (`<agent>_sessions.json`, or a directory of them such as
    /// `~/.claude-agent/sessions`; print each imported agent), or adopt an amplihack
    /// runtime directory (a folder holding sessions/; print the adopted ids). Importing the
    /// data directory itself adopts amplihack's files in place.
    Import {
        /// A bundle file, a tracker file or a directory of them, or an amplihack runtime
        /// directory.
        #[arg(value_name = "PATH")]
        file: PathBuf,
    },
    /// Copy a session; print the new id.
    Clone {
        /// The session id.
        id: String,
        /// The id of the copy (default: a new UUID v7).
        #[arg(long)]
        new_id: Option<String>,
    },
    /// Read commands as JSON lines on stdin; answer each with one JSON line once durable.
    Apply,
    /// Print the log as JSON lines, one event each.
    Replay {
        /// Start at this LSN.
        #[arg(long, value_name = "LSN", default_value_t = 1)]
        from: u64,
        /// Only events that concern this session.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
    },
    /// Check every segment, record, LSN and snapshot, read-only; exit 0 when intact.
    Verify,
    /// Move damaged bytes aside (into quarantine/) so the directory opens again.
    Repair,
    /// Take a snapshot now.
    Snapshot,
    /// Print statistics as JSON.
    Stats,
    /// Rewrite every JSON projection from the log; with --projections, in that format,
    /// which becomes the directory's (the old format's files are moved aside).
    RebuildProjections,
    /// A first run: create a session, record into it, and show it back.
    Demo,
    /// `claude search`: search the text of imported Claude Code transcripts, ranked (the
    /// same command and flags).
    Search(SearchArgs),
    /// Claude Code's own transcripts (~/.claude/projects/<project>/<session>.jsonl):
    /// check and summarise them (validate, info: read-only, the data directory is not
    /// used), import and follow them into the data directory, export them back.
    #[command(subcommand)]
    Claude(ClaudeCmd),
    /// Serve seed 002's REST API, event streams and metrics over HTTP (until SIGINT or
    /// SIGTERM).
    Serve(ServeArgs),
    /// Run a program for a session under supervision (its own process group, limits,
    /// every step recorded); stream its output; exit with its status (128+N for a
    /// signal, 127 when it could not start). The run's id is printed on stderr at the end.
    Exec(ExecArgs),
    /// List runs (id, session, status, attempts, exit, program), or one run as JSON.
    /// With --resume, start again the runs a restart left `recovering` (safe to repeat),
    /// wait for them, print `RUN<TAB>STATUS` per run; exit 0 when every one completed,
    /// 5 otherwise.
    Runs {
        /// Only this run (printed as JSON).
        #[arg(conflicts_with = "resume")]
        run: Option<String>,
        /// Start the next attempt of every run a restart left `recovering` (those
        /// `exec --safe-to-repeat` ran, with attempts left and no secret in their
        /// environment), wait for their ends and print them.
        #[arg(long, conflicts_with_all = ["session", "status"])]
        resume: bool,
        /// Only runs of this session.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Only runs with this status (pending, running, completed, failed, cancelled,
        /// timeout, recovering, interrupted).
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
    },
    /// Cancel a run, or with --all every unfinished run, that another process
    /// supervises: SIGTERM to its process group, SIGKILL after its grace period; waits
    /// until each is recorded as ended and prints its status (with --all, `ID<TAB>STATUS`
    /// per run). Exits 0 only when every run it targeted ended cancelled, 5 otherwise.
    Cancel {
        /// The run id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        run: Option<String>,
        /// Every unfinished run (pending, running, recovering); finished ones are left
        /// alone, and none is a success.
        #[arg(long)]
        all: bool,
        /// How long to wait, after the runs' longest grace period, for them to be
        /// recorded as ended (seconds).
        #[arg(long, value_name = "S", default_value_t = 10.0)]
        wait: f64,
    },
    /// Seed 004's health metrics over the runs: total, healthy (running, not stale),
    /// stale (running with no output for --stale-after), average peak memory, runs by
    /// status; with --json the seed's field names (totalSessions, healthySessions,
    /// staleSessions, averageMemoryUsage, sessionsByStatus) and staleRuns.
    Health {
        /// A running run with no output (nor start) for longer than this is stale
        /// (seconds, fractions allowed; seed 004's 5 minutes by default).
        #[arg(long, value_name = "S", default_value_t = 300.0)]
        stale_after: f64,
    },
    /// Print a run's output (stdout and stderr in arrival order, head and tail above
    /// its cap).
    Logs {
        /// The run id.
        run: String,
        /// Keep printing new output until the run ends.
        #[arg(long)]
        follow: bool,
    },
}

/// `claude` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClaudeCmd {
    /// Check that every line of each transcript is a JSON record; report each bad line by
    /// file and line number (exit 7), and an incomplete last line as a write in progress
    /// (exit 0).
    Validate {
        /// Transcript files, or folders walked for *.jsonl (symbolic links inside them are
        /// not followed).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Summarise each transcript: seed 003's get_session_info (session_id, file_path,
    /// size_bytes, message_count, first_timestamp, last_timestamp), records by type, session
    /// ids, cwd, versions, models, and token usage counted once per message.id.
    Info {
        /// Transcript files, or folders walked for *.jsonl (symbolic links inside them are
        /// not followed).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Import transcripts into the data directory: each file one session (its Claude Code
    /// session id; agent-<id> for a subagent beside it, <session>.agent-<id> under
    /// <session>/subagents/), each line one event holding its exact bytes. Only what is
    /// new since the last import is read; a file that no longer starts with what was
    /// imported is reported and imported as a new version <id>.v<n> (exit 10); a line
    /// that is not a record is reported and kept as bytes (exit 7); an incomplete last
    /// line is left for the next import. Then the search index is brought up to date
    /// (when the data directory holds a transcript), so the next search is quick.
    Import {
        /// Transcript files, or folders walked for *.jsonl (default: ~/.claude/projects).
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Leave the search index as it is (the next search catches it up).
        #[arg(long)]
        no_index: bool,
    },
    /// Write an imported transcript back, byte for byte as imported (to stdout without a
    /// file).
    Export {
        /// The session it was imported as.
        session: String,
        /// The file to write (it must not exist).
        #[arg(value_name = "FILE", conflicts_with = "output")]
        file: Option<PathBuf>,
        /// The file to write (it must not exist).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Import transcripts as Claude Code appends to them (as `claude import`, again every
    /// --interval-ms), until interrupted. Safe to kill at any moment: the next run goes on
    /// where the last committed line ends. The search index is brought up to date after
    /// each poll that imported something.
    Follow {
        /// Transcript files, or folders walked for *.jsonl (default: ~/.claude/projects).
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Leave the search index as it is (the next search catches it up).
        #[arg(long)]
        no_index: bool,
        /// How often to look for new lines, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 500,
              value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
        interval_ms: u64,
    },
    /// Print an imported transcript's state as JSON: its file, how much is imported, its
    /// Claude Code session ids, the leaf it ends on, branch points, and its links to other
    /// transcripts (resumed sessions, summaries, compactions, subagents), resolved to the
    /// sessions that hold them.
    Show {
        /// The session it was imported as.
        session: String,
    },
    /// Search the text of imported transcripts (prompts, answers, thinking, tool inputs
    /// and results, summaries): records holding every word of QUERY (case and accents
    /// folded), ranked by relevance (BM25). Prints each hit's session, line, uuid,
    /// timestamp, type and a snippet, best first. Uses the full-text index
    /// DATA_DIR/index/claude-search.sqlite, brought up to date with the log first (built
    /// from the log when missing or damaged).
    Search(SearchArgs),
}

/// `search` and `claude search` flags.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The words to look for (every one required; FTS5 syntax is taken as text).
    pub query: String,
    /// Only this project: a cwd (/home/a/proj) or its folder name (-home-a-proj).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Only this session: an engine session id or a Claude Code session id (with its
    /// subagents).
    #[arg(long, value_name = "S")]
    pub session: Option<String>,
    /// Only records of this type (user, assistant, summary, system, ...); repeatable.
    #[arg(long = "type", value_name = "TYPE")]
    pub kinds: Vec<String>,
    /// Only records written at or after T (RFC 3339, or a day YYYY-MM-DD).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Most hits printed.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on. Any address but a loopback one requires a bearer token.
    #[arg(long, default_value = "127.0.0.1:8082", value_name = "ADDR")]
    pub addr: std::net::SocketAddr,
    /// A file holding the bearer token every request must carry. Without it, a
    /// non-loopback --addr uses DATA_DIR/server-token, generated (mode 0600) if missing.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Requests per second each client IP address may make, sustained (a token bucket);
    /// past it, 429 with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub rate_limit: u32,
    /// Requests a client may make at once after an idle time (the bucket's size), from 1.
    #[arg(long, default_value_t = 2000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,
    /// Longest time for a request's line and headers to arrive, idle keep-alive time
    /// included, in milliseconds from 1; then the connection is closed (slowloris).
    #[arg(long, default_value_t = 10_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
}

/// `exec` flags.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The session the run belongs to.
    pub id: String,
    /// Wall-clock limit in seconds (fractions allowed); then the run is `timeout`.
    #[arg(long, value_name = "S")]
    pub timeout: Option<f64>,
    /// Attempts after a failed first one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Delay before the first retry, in milliseconds (doubled each time, with jitter).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub retry_delay_ms: u64,
    /// Address-space limit of each process, in MiB (RLIMIT_AS).
    #[arg(long, value_name = "MB")]
    pub max_memory: Option<u64>,
    /// CPU-time limit of each process, in seconds (RLIMIT_CPU).
    #[arg(long, value_name = "S")]
    pub max_cpu: Option<u64>,
    /// Output kept in the log and the events (head and tail), in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_output: Option<u64>,
    /// Between SIGTERM and SIGKILL, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub grace_ms: Option<u64>,
    /// Run Claude Code instead of a PROGRAM: `claude -p --output-format json PROMPT`;
    /// print its answer's text, link its session id into the session's agent's chain.
    #[arg(long, value_name = "PROMPT", conflicts_with = "command")]
    pub claude: Option<String>,
    /// With --claude: `--resume` the agent's current chain link (an error if none).
    #[arg(long, requires = "claude")]
    pub resume: bool,
    /// With --claude: the program (default: $SESSION_ENGINE_CLAUDE, else `claude` in PATH).
    #[arg(long, value_name = "PATH", requires = "claude")]
    pub claude_program: Option<String>,
    /// No cgroup v2 per attempt (by default each gets one where it can be created).
    #[arg(long)]
    pub no_cgroup: bool,
    /// The program may run again after a restart interrupted it: the next writable open
    /// leaves it `recovering` (if it has attempts left under --retries and its
    /// environment holds no secret) and `runs --resume` or `serve` starts its next
    /// attempt.
    #[arg(long)]
    pub safe_to_repeat: bool,
    /// The program and its arguments (after `--`).
    #[arg(
        required_unless_present = "claude",
        last = true,
        value_name = "PROGRAM"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The session id (default: a new UUID v7).
    #[arg(long)]
    pub id: Option<String>,
    /// A human-readable name.
    #[arg(long)]
    pub name: Option<String>,
    /// Inactivity timeout in seconds (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub timeout: u64,
    /// The agent the session belongs to.
    #[arg(long)]
    pub agent: Option<String>,
    /// The session's working directory.
    #[arg(long, value_name = "DIR")]
    pub working_dir: Option<String>,
    /// Initial metadata (repeatable); VALUE is JSON when it parses, otherwise a string.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CommandArgs {
    /// The session id.
    pub id: String,
    /// The command that ran.
    pub command: String,
    /// Its arguments as JSON.
    #[arg(long, value_name = "JSON")]
    pub args: Option<String>,
    /// It failed, with this error text.
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
    /// How long it ran, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub duration_ms: u64,
}

#[derive(Debug, Args)]
pub struct ChainArgs {
    /// The agent id.
    pub agent: String,
    /// Add this external session id to the chain.
    #[arg(long, value_name = "EXTERNAL_ID", requires_all = ["prompt", "response"])]
    pub link: Option<String>,
    /// The prompt of the turn (truncated to 200 characters).
    #[arg(long)]
    pub prompt: Option<String>,
    /// The response of the turn (truncated to 200 characters).
    #[arg(long)]
    pub response: Option<String>,
    /// Reset the chain.
    #[arg(long, conflicts_with = "link")]
    pub reset: bool,
    /// Print seed 003's get_chain_summary (agent_id, total_sessions, total_interactions,
    /// first_session, current_session, session_ids).
    #[arg(long, conflicts_with_all = ["link", "reset"])]
    pub summary: bool,
    /// With --link: Claude Code's projects folder (~/.claude/projects); the transcript
    /// <DIR>/<project>/<EXTERNAL_ID>.jsonl must exist and be valid, else nothing is linked.
    #[arg(long, value_name = "DIR", env = "SESSION_ENGINE_CLAUDE_PROJECTS")]
    pub projects: Option<PathBuf>,
}

/// `--segment-bytes`: a number of bytes, optionally with K, M or G (powers of 1024),
/// between the engine's smallest and largest segment.
pub fn parse_segment_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, 'B'),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a number of bytes (like 65536, 64K or 16M)"))?;
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("unknown unit {unit:?} (use K, M or G)")),
    };
    let bytes = n
        .checked_mul(1 << shift)
        .filter(|b| (MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(b))
        .ok_or_else(|| {
            format!(
                "{text} is not between {MIN_SEGMENT_BYTES} (4K) and {MAX_SEGMENT_BYTES} (1G) \
                 bytes"
            )
        })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes_parse_with_units_and_stay_in_range() {
        assert_eq!(parse_segment_bytes("4096"), Ok(4096));
        assert_eq!(parse_segment_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_segment_bytes("16m"), Ok(DEFAULT_SEGMENT_BYTES));
        assert_eq!(parse_segment_bytes("1G"), Ok(MAX_SEGMENT_BYTES));
        for bad in [
            "",
            "K",
            "4095",
            "2G",
            "-1",
            "1.5M",
            "12X",
            "99999999999999999999G",
        ] {
            assert!(parse_segment_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
