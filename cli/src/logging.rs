//! Structured logs: JSON lines to `logs/toolkit.log` under the data directory (rotated by
//! size into `logs/archive/`), and human-readable lines on stderr.
//!
//! The log file is the engine's only when the engine created it: every log file it creates
//! starts with a header line (a JSON object holding `"session_engine_log": 1`), written
//! before the file gets its name. A `toolkit.log` without that first line belongs to
//! another program (the Python toolkit of seed 001 writes one there): it is never appended
//! to, rotated or pruned, and the log goes to `logs/session-engine.log` instead (under the
//! same rule; when both are foreign, only stderr gets the log). Pruning of `logs/archive/`
//! likewise removes only files that start with the header.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use session_engine::FileStorage;
use session_engine::storage::write_new_atomic;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Size at which the log is rotated.
pub const ROTATE_BYTES: u64 = 10 << 20;
/// Rotated logs kept in `logs/archive/`.
pub const KEEP_ROTATED: usize = 10;
/// The names the log may have in `logs/`, in order of preference.
pub const LOG_NAMES: [&str; 2] = ["toolkit.log", "session-engine.log"];
/// The field of the header line that marks a log file as the engine's.
const HEADER_FIELD: &str = "session_engine_log";
/// How much of a file's start is read to find its header line.
const HEADER_MAX: usize = 4096;

/// The first line of every log file the engine creates.
fn header_line() -> String {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!(
        "{{\"timestamp\":\"{at}\",\"level\":\"INFO\",\"message\":\"session-engine log\",\
         \"{HEADER_FIELD}\":1}}\n"
    )
}

/// Whether `start` (the first bytes of a file) begins with the engine's header line.
pub fn is_own_log(start: &[u8]) -> bool {
    let Some(end) = start.iter().position(|&b| b == b'\n') else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&start[..end]).is_ok_and(|v| v[HEADER_FIELD] == 1)
}

/// The first bytes of the file at `path`, without following a symbolic link.
fn read_start(path: &Path) -> io::Result<Vec<u8>> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    let f = o.open(path)?;
    let mut buf = Vec::with_capacity(HEADER_MAX);
    io::Read::read_to_end(&mut io::Read::take(f, HEADER_MAX as u64), &mut buf)?;
    Ok(buf)
}

struct RotatingFile {
    dir: PathBuf,
    /// Gives the modes of new files and folders, like the data directory's.
    modes: FileStorage,
    /// The file being appended to, and its path.
    file: Option<(File, PathBuf)>,
    written: u64,
    /// Every name in `logs/` is another program's: log to stderr only.
    foreign: bool,
}

impl RotatingFile {
    /// Opens the engine's own log at `path` for appending, creating it (header first) if it
    /// does not exist; `None` when the file there is another program's.
    fn open_own(&self, path: &Path) -> io::Result<Option<File>> {
        match write_new_atomic(&self.modes, path, header_line().as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if !is_own_log(&read_start(path)?) {
            return Ok(None);
        }
        let mut o = OpenOptions::new();
        o.append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.custom_flags(libc::O_NOFOLLOW);
        }
        o.open(path).map(Some)
    }

    fn open(&mut self) -> io::Result<Option<&mut File>> {
        if self.file.is_none() && !self.foreign {
            self.create_dir_all(&self.dir)?;
            // A name that cannot be used (another program's file, a link, an error) passes
            // the log to the next one.
            for name in LOG_NAMES {
                let path = self.dir.join(name);
                if let Ok(Some(f)) = self.open_own(&path) {
                    self.written = f.metadata()?.len();
                    self.file = Some((f, path));
                    break;
                }
            }
            self.foreign = self.file.is_none();
        }
        Ok(self.file.as_mut().map(|(f, _)| f))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(self.modes.dir_mode())
                .create(dir)
        }
        #[cfg(not(unix))]
        fs::create_dir_all(dir)
    }

    /// Moves the current log (the engine's own) into `archive/` and prunes the oldest of
    /// the engine's rotated logs there.
    fn rotate(&mut self) -> io::Result<()> {
        let Some((_, path)) = self.file.take() else {
            return Ok(());
        };
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("toolkit")
            .to_owned();
        let archive = self.dir.join("archive");
        self.create_dir_all(&archive)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
        session_engine::Storage::rename_noreplace(
            &self.modes,
            &path,
            &archive.join(format!("{stem}.{stamp}.log")),
        )?;
        let prefix = format!("{stem}.");
        let mut old: Vec<PathBuf> = fs::read_dir(&archive)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".log"))
            })
            .filter(|p| read_start(p).is_ok_and(|b| is_own_log(&b)))
            .collect();
        old.sort();
        let excess = old.len().saturating_sub(KEEP_ROTATED);
        for p in old.into_iter().take(excess) {
            fs::remove_file(p)?;
        }
        self.written = 0;
        Ok(())
    }

    fn write_line(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.written >= ROTATE_BYTES {
            self.rotate()?;
        }
        if let Some(f) = self.open()? {
            f.write_all(buf)?;
            self.written += buf.len() as u64;
        }
        Ok(())
    }
}

/// A `MakeWriter` for the rotating log file. Logging must never fail a command, so write
/// errors are swallowed (the stderr layer still shows the message).
#[derive(Clone)]
struct FileSink(Arc<Mutex<RotatingFile>>);

struct SinkWriter(Arc<Mutex<RotatingFile>>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_line(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for FileSink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(Arc::clone(&self.0))
    }
}

/// Sets up logging. `log_dir` is `Some` when the command may write to the data directory
/// (read-only commands do not create it).
/// `modes` gives the modes of the files and folders it creates.
pub fn init(level: &str, log_dir: Option<&Path>, modes: FileStorage) {
    let stderr_filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colours only for a terminal: a script or a test reading stderr gets plain text.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false)
        .without_time()
        .with_filter(stderr_filter);
    let file = log_dir.map(|dir| {
        let sink = FileSink(Arc::new(Mutex::new(RotatingFile {
            dir: dir.to_path_buf(),
            modes,
            file: None,
            written: 0,
            foreign: false,
        })));
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(sink)
            .with_filter(EnvFilter::new("info"))
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

use tracing_subscriber::Layer;
