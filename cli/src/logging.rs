//! Structured logs: JSON lines to `logs/toolkit.log` under the data directory (rotated by
//! size into `logs/archive/`), and human-readable lines on stderr.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use session_engine::FileStorage;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Size at which `toolkit.log` is rotated.
pub const ROTATE_BYTES: u64 = 10 << 20;
/// Rotated logs kept in `logs/archive/`.
pub const KEEP_ROTATED: usize = 10;

struct RotatingFile {
    dir: PathBuf,
    /// Gives the modes of new files and folders, like the data directory's.
    modes: FileStorage,
    file: Option<File>,
    written: u64,
}

impl RotatingFile {
    fn path(&self) -> PathBuf {
        self.dir.join("toolkit.log")
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            self.create_dir_all(&self.dir)?;
            let mut o = OpenOptions::new();
            o.create(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(self.modes.file_mode())
                    .custom_flags(libc::O_NOFOLLOW);
            }
            let f = o.open(self.path())?;
            self.written = f.metadata()?.len();
            self.file = Some(f);
        }
        // `file` was just set if it was missing.
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("log file not open"))
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

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let archive = self.dir.join("archive");
        self.create_dir_all(&archive)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
        fs::rename(self.path(), archive.join(format!("toolkit.{stamp}.log")))?;
        let mut old: Vec<PathBuf> = fs::read_dir(&archive)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("toolkit.") && n.ends_with(".log"))
            })
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
        let f = self.open()?;
        f.write_all(buf)?;
        self.written += buf.len() as u64;
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
