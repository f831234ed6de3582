//! The per-session logs: appends, torn tails, rotation, rebuilding them from the log.

use super::*;

/// Log text a rebuild buffers before appending it to the files.
const REBUILD_BUFFER_BYTES: usize = 8 << 20;

/// The per-session logs' pending work.
#[derive(Default)]
pub(super) struct SessionLogs {
    /// Lines to append, per session.
    pub(super) lines: BTreeMap<SessionId, Vec<LogLine>>,
    /// Bytes of text in `lines`.
    pub(super) pending_bytes: usize,
    /// Logs to write afresh from the log (missing, damaged, or too much pending text).
    pub(super) rebuild: BTreeSet<SessionId>,
    /// What each log ends with, once read.
    pub(super) tails: HashMap<SessionId, Tail>,
}

/// What the last line of a per-session log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tail {
    /// The file (or its newest rotated part) ends with the line at this key.
    Key((Lsn, u32)),
    /// There is no log for the session yet.
    Missing,
    /// The last line is not one of ours.
    Damaged,
}

impl Projection {
    /// Reads what the per-session log of `id` ends with, cutting a torn last line.
    /// Checks first that the log is the engine's: one it did not write is a failure
    /// naming it; its own that no longer starts with what the engine recorded writing
    /// (another program changed it) is moved aside and reported damaged, so it is rebuilt.
    /// Lines after what the manifest records are the engine's own appends whose record a
    /// crash lost, when they carry the engine's keys (checked below); once the tail is
    /// known good the record covers the whole file again.
    pub(super) fn load_tail(&self, id: &SessionId) -> Result<Tail, Failure> {
        let path = self.layout.log_file(id);
        let bytes = match self.storage.read(&path) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return self.rotated_tail(id),
            Err(e) => return Err(failure("read session log", &path)(e)),
        };
        match self.entry(&path)? {
            None => return Err(manifest::foreign(&path)),
            Some(manifest::Entry::Reserved) => {}
            Some(manifest::Entry::Written { len, crc, .. }) => {
                let starts_ours = usize::try_from(len)
                    .ok()
                    .and_then(|n| bytes.get(..n))
                    .is_some_and(|prefix| crc32fast::hash(prefix) == crc);
                if !starts_ours {
                    drop(bytes);
                    self.move_aside(&path, manifest::Why::Changed)?;
                    return Ok(Tail::Damaged);
                }
            }
        }
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        let torn = complete < bytes.len();
        // Lines after the marker's LSN may have been appended without reaching the disk
        // whole before a crash (garbage or zeros in the middle, a valid line after them),
        // so each of them is checked, walking back from the end; the lines the marker
        // vouches for were synced before it was written.
        let mut key = None;
        let mut end = complete;
        let mut later: Option<(Lsn, u32)> = None;
        while end > 0 {
            let body = &bytes[..end - 1];
            let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            match logline::parse_key(&body[start..]) {
                Some(k) if later.is_none_or(|l| k < l) => {
                    key.get_or_insert(Some(k));
                    if k.0 <= self.marker {
                        break;
                    }
                    later = Some(k);
                    end = start;
                }
                _ => {
                    key = Some(None);
                    break;
                }
            }
        }
        let crc = crc32fast::hash(&bytes[..complete]);
        // Release the (possibly mapped) content before the file is shortened.
        drop(bytes);
        if torn {
            let mut f = self
                .storage
                .open(&path, OpenMode::ReadWrite)
                .map_err(failure("open session log", &path))?;
            f.set_len(complete as u64)
                .and_then(|()| f.sync_all())
                .map_err(failure("cut torn session log line", &path))?;
        }
        let tail = match key {
            None => self.rotated_tail(id)?,
            // Lines for records the log does not have (it was repaired, say) are not ours
            // to keep.
            Some(Some(k)) if k.0 > self.engine.last_lsn() => Tail::Damaged,
            Some(Some(k)) => Tail::Key(k),
            Some(None) => Tail::Damaged,
        };
        if tail != Tail::Damaged {
            self.record(&path, complete as u64, crc)?;
        }
        Ok(tail)
    }

    /// The numbers of the rotated parts of `id`'s log, sorted: the engine's own (`true`)
    /// or every file with such a name.
    pub(super) fn rotated_parts(&self, id: &SessionId, own: bool) -> Result<Vec<u64>, Failure> {
        let mut parts = Vec::new();
        for name in list(&*self.storage, &self.paths.logs_archive)? {
            let Some((_, n)) = self.layout.rotated_log_of(&name).filter(|(i, _)| i == id) else {
                continue;
            };
            if !own || self.entry(&self.paths.logs_archive.join(&name))?.is_some() {
                parts.push(n);
            }
        }
        parts.sort_unstable();
        Ok(parts)
    }

    pub(super) fn rotated_tail(&self, id: &SessionId) -> Result<Tail, Failure> {
        let Some(&n) = self.rotated_parts(id, true)?.last() else {
            return Ok(Tail::Missing);
        };
        let path = self.layout.rotated_log_file(id, n);
        let bytes = self
            .storage
            .read(&path)
            .map_err(failure("read rotated session log", &path))?;
        let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let start = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Ok(logline::parse_key(&text[start..]).map_or(Tail::Damaged, Tail::Key))
    }

    pub(super) fn append_log(&mut self, id: &SessionId, lines: &[LogLine]) -> Result<(), Failure> {
        let path = self.layout.log_file(id);
        // The cached tail holds while the file is what the engine last wrote (its stat
        // version); a file changed, rotated or deleted since is read again (and only the
        // rotated parts can say which).
        let tail = match self.logs.tails.get(id).copied() {
            Some(t) if self.unchanged(&path)? => t,
            _ => self.load_tail(id)?,
        };
        let fresh: &[LogLine] = match tail {
            Tail::Damaged => {
                self.logs.rebuild.insert(id.clone());
                return Ok(());
            }
            Tail::Missing => {
                if !lines.first().is_some_and(|l| l.starts) {
                    // The file's history is gone: rebuild it from the log.
                    self.logs.rebuild.insert(id.clone());
                    return Ok(());
                }
                lines
            }
            Tail::Key(k) => {
                let skip = lines.iter().take_while(|l| l.key <= k).count();
                &lines[skip..]
            }
        };
        let Some(last) = fresh.last() else {
            self.logs.tails.insert(id.clone(), tail);
            return Ok(());
        };
        let text: String = fresh.iter().map(|l| l.text.as_str()).collect();
        let mut file = match self.storage.open(&path, OpenMode::ReadWrite) {
            Ok(f) => Some(f),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(failure("open session log", &path)(e)),
        };
        if let (Some(max), Some(f)) = (self.options.log_max_bytes, file.as_mut()) {
            let len = f.len().map_err(failure("stat session log", &path))?;
            if len > 0 && len + text.len() as u64 > max {
                drop(file.take());
                self.rotate(id)?;
            }
        }
        // What the file holds before the append (the manifest's record, which the checks
        // above made exact), to extend the record with the appended text.
        let (mut f, mut hasher) = match file {
            Some(f) => {
                let hasher = match self.entry(&path)? {
                    Some(manifest::Entry::Written { len, crc, .. }) => {
                        crc32fast::Hasher::new_with_initial_len(crc, len)
                    }
                    _ => crc32fast::Hasher::new(),
                };
                (f, hasher)
            }
            None => (self.create_log(&path)?, crc32fast::Hasher::new()),
        };
        let len = f.len().map_err(failure("stat session log", &path))?;
        // Not synced: the checkpoint's `Storage::sync_fs` makes it durable before the
        // marker vouches for these lines, and after a crash the lines past the marker are
        // checked (see `load_tail`).
        f.write_at(len, text.as_bytes())
            .map_err(failure("append to session log", &path))?;
        drop(f);
        let mut appended = crc32fast::Hasher::new();
        appended.update(text.as_bytes());
        hasher.combine(&appended);
        self.record(&path, len + text.len() as u64, hasher.finalize())?;
        self.logs.tails.insert(id.clone(), Tail::Key(last.key));
        Ok(())
    }

    /// Creates the per-session log at `path`, where nothing is: reserved in the manifest
    /// first (durably), created exclusively (a file another program put there meanwhile
    /// fails it, named). Its directory entry is made durable by the next checkpoint.
    pub(super) fn create_log(
        &self,
        path: &Path,
    ) -> Result<Box<dyn crate::storage::StorageFile>, Failure> {
        self.reserve(std::slice::from_ref(&path.to_path_buf()))?;
        if self.entry(path)?.is_none() {
            return Err(manifest::foreign(path));
        }
        let f = match self.in_its_dir(path, || self.storage.open(path, OpenMode::CreateNew)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.forget(path, true)?;
                return Err(manifest::foreign(path));
            }
            Err(e) => return Err(failure("create session log", path)(e)),
        };
        Ok(f)
    }

    pub(super) fn rotate(&self, id: &SessionId) -> Result<(), Failure> {
        let n = self.rotated_parts(id, false)?.last().map_or(1, |n| n + 1);
        let from = self.layout.log_file(id);
        let to = self.layout.rotated_log_file(id, n);
        self.move_own(&from, &to)
    }

    /// Writes the per-session logs of `which` (every session when `None`) afresh from
    /// records `1..=upto`. Returns how many files were written.
    pub(super) fn rebuild_logs_from_wal(
        &mut self,
        which: Option<&BTreeSet<SessionId>>,
        upto: Lsn,
        state: &State,
    ) -> Result<u64, Failure> {
        // A rebuilt log holds the whole history, so rotated parts would repeat it: the
        // engine's own go into the attic.
        for name in list(&*self.storage, &self.paths.logs_archive)? {
            if let Some((id, _)) = self.layout.rotated_log_of(&name)
                && which.is_none_or(|w| w.contains(&id))
            {
                self.remove_if_exists(&self.paths.logs_archive.join(&name))?;
            }
        }
        // Every log that will be written is reserved with one sync.
        let targets: Vec<SessionId> = match which {
            Some(w) => w.iter().cloned().collect(),
            None => state
                .sessions
                .keys()
                .filter(|id| self.layout.writes_log(id))
                .cloned()
                .collect(),
        };
        let paths: Vec<PathBuf> = targets
            .iter()
            .filter(|id| state.session(id).is_some_and(|s| self.wants_log(s)))
            .map(|id| self.layout.log_file(id))
            .collect();
        self.reserve(&paths)?;
        let mut bufs: BTreeMap<SessionId, (String, (Lsn, u32))> = BTreeMap::new();
        let mut started: HashMap<SessionId, (u64, crc32fast::Hasher)> = HashMap::new();
        let mut buffered = 0usize;
        let mut out = Vec::new();
        let mut io_failure: Option<Failure> = None;
        let mut tails: Vec<(SessionId, (Lsn, u32))> = Vec::new();
        let scan = self.engine.read_log(Lsn(1), upto, |lsn, event| {
            out.clear();
            self.layout.log_lines(lsn, &event, state, &mut out);
            for (id, line) in out.drain(..) {
                if which.is_some_and(|w| !w.contains(&id)) {
                    continue;
                }
                buffered += line.text.len();
                let b = bufs.entry(id).or_insert_with(|| (String::new(), line.key));
                b.0.push_str(&line.text);
                b.1 = line.key;
            }
            if buffered >= REBUILD_BUFFER_BYTES {
                if let Err(f) = self.append_buffers(&mut bufs, &mut started, &mut tails) {
                    io_failure = Some(f);
                    return Ok(false);
                }
                buffered = 0;
            }
            Ok(true)
        });
        if let Some(f) = io_failure {
            return Err(f);
        }
        if let Err(e) = scan {
            return Err(Failure {
                op: "read the log to rebuild session logs",
                path: self.engine.paths().wal.clone(),
                kind: io::ErrorKind::InvalidData,
                message: e.to_string(),
            });
        }
        self.append_buffers(&mut bufs, &mut started, &mut tails)?;
        for (id, (len, hasher)) in &started {
            self.record(&self.layout.log_file(id), *len, hasher.clone().finalize())?;
        }
        // A session that produced no line (logging turned off) has no log file.
        for id in &targets {
            if !started.contains_key(id) {
                self.remove_if_exists(&self.layout.log_file(id))?;
                self.logs.tails.insert(id.clone(), Tail::Missing);
            }
        }
        for (id, key) in tails {
            self.logs.tails.insert(id, Tail::Key(key));
        }
        Ok(started.len() as u64)
    }

    /// Appends the buffered text of each session to its log, the first buffer of a log
    /// replacing what the file held: its own unchanged file is truncated, one another
    /// program changed is moved aside first, a new one is created exclusively, and one the
    /// engine did not write fails, named. `started` keeps each written log's length and
    /// CRC-32.
    pub(super) fn append_buffers(
        &self,
        bufs: &mut BTreeMap<SessionId, (String, (Lsn, u32))>,
        started: &mut HashMap<SessionId, (u64, crc32fast::Hasher)>,
        tails: &mut Vec<(SessionId, (Lsn, u32))>,
    ) -> Result<(), Failure> {
        let appends: Vec<_> = std::mem::take(bufs)
            .into_iter()
            .map(|(id, (text, key))| (started.contains_key(&id), id, text, key))
            .collect();
        for (append, id, text, _) in &appends {
            let path = self.layout.log_file(id);
            let mut f = if *append {
                self.storage
                    .open(&path, OpenMode::ReadWrite)
                    .map_err(failure("write session log", &path))?
            } else {
                match self.inspect(&path, manifest::Accept::Exact)? {
                    manifest::Found::Foreign => return Err(manifest::foreign(&path)),
                    manifest::Found::Own => self
                        .storage
                        .open(&path, OpenMode::CreateTruncate)
                        .map_err(failure("write session log", &path))?,
                    manifest::Found::Changed => {
                        self.move_aside(&path, manifest::Why::Changed)?;
                        self.create_log(&path)?
                    }
                    manifest::Found::Absent => self.create_log(&path)?,
                }
            };
            let len = f.len().map_err(failure("stat session log", &path))?;
            f.write_at(len, text.as_bytes())
                .map_err(failure("write session log", &path))?;
        }
        for (_, id, text, key) in appends {
            let entry = started
                .entry(id.clone())
                .or_insert_with(|| (0, crc32fast::Hasher::new()));
            entry.0 += text.len() as u64;
            entry.1.update(text.as_bytes());
            tails.push((id, key));
        }
        Ok(())
    }
}
