//! The full-text index `claude search` queries: a projection of the log's transcript
//! pieces into one SQLite file with an FTS5 table, `<data dir>/index/claude-search.sqlite`.
//!
//! Why SQLite FTS5 (through `rusqlite`, bundled) rather than a hand-written index or
//! tantivy: the index is one file, changed in transactions with SQLite's own rollback
//! journal, so a crash at any moment leaves either the rows of a whole catch-up and the
//! LSN they reach or neither; `bm25()` ranking and `snippet()` are built in; and it is a
//! far smaller build than tantivy (the same crate `compare/` already uses).
//!
//! The file holds, per record of an imported transcript whose text (see
//! [`super::search`]) is not empty: the engine session, the record's `sessionId`, line,
//! offset, `uuid`, `timestamp`, `type`, the LSN of the event holding it (table
//! `records`), and the text (FTS5 table `texts`, tokenizer `unicode61 remove_diacritics
//! 2`, the same rowid); the lines counted so far per engine session (`lines`); and one
//! row (`meta`) with the format version ([`FORMAT_VERSION`]), the last LSN indexed and
//! the time the writer stamped on that event. Every catch-up writes its rows, the line
//! counts and that row in one SQLite transaction.
//!
//! It is derived: a search first reads the events after the recorded LSN (only those)
//! and indexes them; an index that is missing, of another version, damaged (an SQLite
//! error opening or reading it), ahead of the log, or whose last event is not the log's
//! event at that LSN is deleted and rebuilt from the whole log. The engine only ever
//! touches a file it created: it writes `index/claude-search.owner` before it creates the
//! database, and a database (or journal) at that path without that marker is refused
//! ([`Error::ForeignFiles`], nothing changed). On a storage that is not the real file
//! system ([`Storage::is_local_files`] false: the in-memory test storage), or where the
//! data directory cannot be written, the index is built in memory for the one search.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::Value;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::{self, FileKind, OpenMode, Storage};
use crate::types::Lsn;

/// The folder of derived indexes under the data directory.
pub const INDEX_DIR: &str = "index";
/// The index's database file in [`INDEX_DIR`].
pub const INDEX_FILE: &str = "claude-search.sqlite";
/// The marker the engine writes before it creates [`INDEX_FILE`]: the database is its own.
pub const OWNER_FILE: &str = "claude-search.owner";
/// The format of the index (the `meta` row's `version`); another one is rebuilt.
pub const FORMAT_VERSION: i64 = 1;

const OWNER_TEXT: &str = "session-engine created claude-search.sqlite in this folder: a full-text index derived from the log, rebuilt when missing (safe to delete both files)\n";

const SCHEMA: &str = "
CREATE TABLE meta(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL,
    last_lsn INTEGER NOT NULL, last_at INTEGER NOT NULL);
CREATE TABLE lines(session TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE records(id INTEGER PRIMARY KEY, session TEXT NOT NULL, claude_session TEXT,
    line INTEGER NOT NULL, offset INTEGER NOT NULL, uuid TEXT, ts INTEGER, kind TEXT,
    lsn INTEGER NOT NULL);
CREATE INDEX records_session ON records(session);
CREATE VIRTUAL TABLE texts USING fts5(text, tokenize = 'unicode61 remove_diacritics 2');
";

thread_local! {
    /// Test hook: fail a catch-up (before its commit) once this many records are written.
    static FAIL_AFTER: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Test hook (`test-util`): the next catch-ups on this thread fail, before their commit,
/// once `records` records are inserted (`None`: never), as a crash in the middle of one
/// would leave the file (SQLite rolls the transaction back).
#[cfg(feature = "test-util")]
pub fn fail_catch_up_after(records: Option<u64>) {
    FAIL_AFTER.with(|c| c.set(records));
}

/// Where the index is and what opening it did.
#[derive(Debug)]
pub(crate) struct Index {
    pub conn: Connection,
    /// The database file (`None`: in memory).
    pub path: Option<PathBuf>,
    /// Why it was (re)built from the log by this call, if it was.
    pub rebuilt: Option<String>,
}

/// What a catch-up read and wrote.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CatchUp {
    /// Log events read.
    pub events: u64,
    /// Records added to the index.
    pub records: u64,
}

fn sql_err(path: &Option<PathBuf>, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode as C;
    let kind = match e.sqlite_error_code() {
        Some(C::ReadOnly | C::CannotOpen | C::PermissionDenied) => io::ErrorKind::PermissionDenied,
        Some(C::DatabaseBusy | C::DatabaseLocked) => io::ErrorKind::WouldBlock,
        _ => io::ErrorKind::Other,
    };
    Error::io(
        "use the search index",
        path.clone().unwrap_or_else(|| PathBuf::from(":memory:")),
        io::Error::new(kind, e.to_string()),
    )
}

fn lsn_i64(l: Lsn) -> i64 {
    i64::try_from(l.0).unwrap_or(i64::MAX)
}

/// The index of `engine`'s data directory, up to date with `to`.
pub(crate) fn open_current(engine: &Engine, to: Lsn) -> Result<(Index, CatchUp)> {
    let storage = &*engine.options().storage;
    if !storage.is_local_files() {
        return in_memory(
            engine,
            to,
            "the storage is not the file system: built in memory",
        );
    }
    match on_file(engine, storage, to) {
        Err(Error::Io { source, .. })
            if matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            in_memory(
                engine,
                to,
                "the data directory cannot be written: built in memory",
            )
        }
        r => r,
    }
}

/// What an SQLite error says of the file.
fn damaged(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        // Another connection holds it, or it cannot be written: not damage.
        Some(
            C::DatabaseBusy
            | C::DatabaseLocked
            | C::ReadOnly
            | C::CannotOpen
            | C::PermissionDenied
            | C::OutOfMemory
            | C::DiskFull
            | C::SystemIoFailure,
        ) => false,
        _ => true,
    }
}

fn on_file(engine: &Engine, storage: &dyn Storage, to: Lsn) -> Result<(Index, CatchUp)> {
    let dir = engine.paths().root.join(INDEX_DIR);
    let mut index = open_file(storage, &dir)?;
    let path = index.path.clone();
    // A current index of this format, not ahead of the log, ending on the log's event
    // (a new, empty file gets its tables first).
    let why = match create_schema(&mut index.conn).and_then(|()| check(&index.conn, engine, to)) {
        Ok(why) => why,
        Err(e) if damaged(&e) => Some(format!("damaged ({e})")),
        Err(e) => return Err(sql_err(&path, e)),
    };
    if let Some(why) = why {
        drop(index);
        index = rebuild_file(storage, &dir, &why)?;
    }
    match catch_up(&mut index.conn, engine, to) {
        Ok(c) => Ok((index, c)),
        Err(CatchUpError::Engine(e)) => Err(e),
        Err(CatchUpError::Sql(e)) if damaged(&e) => {
            // The file failed while being read or written: it is a projection, so it is
            // rebuilt (once; a second failure is the answer).
            let why = format!("damaged ({e})");
            drop(index);
            let mut index = rebuild_file(storage, &dir, &why)?;
            let c = catch_up(&mut index.conn, engine, to).map_err(|e| match e {
                CatchUpError::Engine(e) => e,
                CatchUpError::Sql(e) => sql_err(&path, e),
            })?;
            Ok((index, c))
        }
        Err(CatchUpError::Sql(e)) => Err(sql_err(&path, e)),
    }
}

fn in_memory(engine: &Engine, to: Lsn, why: &str) -> Result<(Index, CatchUp)> {
    let path = None;
    let mut conn = Connection::open_in_memory().map_err(|e| sql_err(&path, e))?;
    conn.execute_batch(SCHEMA).map_err(|e| sql_err(&path, e))?;
    conn.execute(
        "INSERT INTO meta(id, version, last_lsn, last_at) VALUES (1, ?1, 0, 0)",
        [FORMAT_VERSION],
    )
    .map_err(|e| sql_err(&path, e))?;
    let c = catch_up(&mut conn, engine, to).map_err(|e| match e {
        CatchUpError::Engine(e) => e,
        CatchUpError::Sql(e) => sql_err(&path, e),
    })?;
    Ok((
        Index {
            conn,
            path,
            rebuilt: Some(why.into()),
        },
        c,
    ))
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

/// Opens the database in `dir`, creating the folder, the marker and an empty database
/// when they are missing; refuses a database or journal the engine did not create.
fn open_file(storage: &dyn Storage, dir: &Path) -> Result<Index> {
    if let Some(k) = storage
        .kind(dir)
        .map_err(io_err("inspect the index folder", dir))?
        && k != FileKind::Dir
    {
        return Err(Error::ForeignFiles {
            files: vec![dir.to_path_buf()],
        });
    }
    storage::create_dir_durable(storage, dir).map_err(io_err("create the index folder", dir))?;
    let db = dir.join(INDEX_FILE);
    let journal = dir.join(format!("{INDEX_FILE}-journal"));
    let owner = dir.join(OWNER_FILE);
    let owned = match storage
        .kind(&owner)
        .map_err(io_err("inspect the index owner marker", &owner))?
    {
        None => false,
        Some(FileKind::File) => true,
        Some(_) => {
            return Err(Error::ForeignFiles { files: vec![owner] });
        }
    };
    let db_kind = storage
        .kind(&db)
        .map_err(io_err("inspect the search index", &db))?;
    let journal_kind = storage
        .kind(&journal)
        .map_err(io_err("inspect the search index", &journal))?;
    let mut foreign = Vec::new();
    for (p, k) in [(&db, db_kind), (&journal, journal_kind)] {
        match k {
            None => {}
            Some(FileKind::File) if owned => {}
            Some(_) => foreign.push(p.clone()),
        }
    }
    if !foreign.is_empty() {
        return Err(Error::ForeignFiles { files: foreign });
    }
    let mut rebuilt = None;
    if db_kind.is_none() {
        if !owned {
            storage::write_new_atomic(storage, &owner, OWNER_TEXT.as_bytes())
                .map_err(io_err("write the index owner marker", &owner))?;
        }
        create_empty(storage, dir, &db, &journal)?;
        rebuilt = Some("missing: built from the log".to_string());
    }
    let mut index = connect(&db)?;
    index.rebuilt = rebuilt;
    Ok(index)
}

/// An empty database file (SQLite takes an empty file as an empty database), created by
/// the engine's storage so it has the engine's permissions; a stale journal of the
/// engine's own is removed first (it would be played into the new file).
fn create_empty(storage: &dyn Storage, dir: &Path, db: &Path, journal: &Path) -> Result<()> {
    if storage
        .kind(journal)
        .map_err(io_err("inspect the search index", journal))?
        .is_some()
    {
        storage
            .remove_file(journal)
            .map_err(io_err("remove the search index journal", journal))?;
    }
    let mut f = storage
        .open(db, OpenMode::CreateNew)
        .map_err(io_err("create the search index", db))?;
    f.sync_all()
        .map_err(io_err("create the search index", db))?;
    storage
        .sync_dir(dir)
        .map_err(io_err("create the search index", dir))?;
    Ok(())
}

fn connect(db: &Path) -> Result<Index> {
    let path = Some(db.to_path_buf());
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(&path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| sql_err(&path, e))?;
    Ok(Index {
        conn,
        path,
        rebuilt: None,
    })
}

/// Deletes the engine's own database (and journal) in `dir` and makes a new one.
fn rebuild_file(storage: &dyn Storage, dir: &Path, why: &str) -> Result<Index> {
    let db = dir.join(INDEX_FILE);
    let journal = dir.join(format!("{INDEX_FILE}-journal"));
    tracing::warn!(index = %db.display(), reason = why, "rebuilding the search index from the log (it is a projection)");
    if storage
        .kind(&db)
        .map_err(io_err("inspect the search index", &db))?
        .is_some()
    {
        storage
            .remove_file(&db)
            .map_err(io_err("remove the search index", &db))?;
    }
    create_empty(storage, dir, &db, &journal)?;
    let mut index = connect(&db)?;
    let path = index.path.clone();
    create_schema(&mut index.conn).map_err(|e| sql_err(&path, e))?;
    index.rebuilt = Some(format!("{why}: rebuilt from the log"));
    Ok(index)
}

fn create_schema(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let empty: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if empty == 0 {
        tx.execute_batch(SCHEMA)?;
        tx.execute(
            "INSERT INTO meta(id, version, last_lsn, last_at) VALUES (1, ?1, 0, 0)",
            [FORMAT_VERSION],
        )?;
    }
    tx.commit()
}

/// Why the index cannot be caught up (it must be rebuilt), or `None`.
fn check(conn: &Connection, engine: &Engine, to: Lsn) -> rusqlite::Result<Option<String>> {
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables == 0 {
        return Ok(Some("empty".into()));
    }
    let (version, last, at): (i64, i64, i64) = conn.query_row(
        "SELECT version, last_lsn, last_at FROM meta WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if version != FORMAT_VERSION {
        return Ok(Some(format!(
            "of format version {version}, this build's is {FORMAT_VERSION}"
        )));
    }
    let last = u64::try_from(last).unwrap_or(u64::MAX);
    if last > to.0 {
        return Ok(Some(format!(
            "ahead of the log (indexed to LSN {last}, the log ends at {})",
            to.0
        )));
    }
    if last > 0 {
        let mut seen = None;
        let read = engine.read_log(Lsn(last), Lsn(last), |_, e| {
            seen = Some(e.at.0);
            Ok(false)
        });
        if read.is_err() || seen != Some(at) {
            return Ok(Some(format!(
                "not of this log (its event at LSN {last} differs)"
            )));
        }
    }
    Ok(None)
}

enum CatchUpError {
    Engine(Error),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for CatchUpError {
    fn from(e: rusqlite::Error) -> Self {
        CatchUpError::Sql(e)
    }
}

/// Indexes the events after the recorded LSN up to `to`, in one transaction.
fn catch_up(
    conn: &mut Connection,
    engine: &Engine,
    to: Lsn,
) -> std::result::Result<CatchUp, CatchUpError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Read again inside the transaction: another search may have caught up meanwhile.
    let last: i64 = tx.query_row("SELECT last_lsn FROM meta WHERE id = 1", [], |r| r.get(0))?;
    let last = Lsn(u64::try_from(last).unwrap_or(0));
    let mut done = CatchUp::default();
    if last >= to {
        tx.commit()?;
        return Ok(done);
    }
    let mut lines: HashMap<String, u64> = HashMap::new();
    let mut last_at = 0i64;
    let mut sql_error: Option<rusqlite::Error> = None;
    let fail_after = FAIL_AFTER.with(Cell::get);
    {
        let mut get_line = tx.prepare("SELECT n FROM lines WHERE session = ?1")?;
        let mut put_record = tx.prepare(
            "INSERT INTO records(session, claude_session, line, offset, uuid, ts, kind, lsn)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut put_text = tx.prepare("INSERT INTO texts(rowid, text) VALUES (?1, ?2)")?;
        let read = engine.read_log(last.next(), to, |lsn, event| {
            done.events += 1;
            last_at = event.at.0;
            let mut each =
                |p: &super::events::ClaudePiece, session: &crate::types::SessionId| -> Result<()> {
                    if sql_error.is_some() || !p.ends_line() {
                        return Ok(());
                    }
                    let n = match lines.get_mut(session.as_str()) {
                        Some(n) => n,
                        None => {
                            let n: Option<i64> = match get_line
                                .query_row([session.as_str()], |r| r.get(0))
                                .optional()
                            {
                                Ok(n) => n,
                                Err(e) => {
                                    sql_error = Some(e);
                                    return Ok(());
                                }
                            };
                            let n = n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                            lines.entry(session.as_str().to_string()).or_insert(n)
                        }
                    };
                    *n += 1;
                    let line = *n;
                    let Some(refs) = &p.refs else { return Ok(()) };
                    let Ok(record) = serde_json::from_slice::<Value>(&p.bytes) else {
                        return Ok(());
                    };
                    let text = super::search::record_text(&record);
                    if text.is_empty() {
                        return Ok(());
                    }
                    if fail_after.is_some_and(|f| done.records >= f) {
                        return Err(Error::io(
                            "catch up the search index",
                            INDEX_FILE,
                            io::Error::other("the test hook stopped it before its commit"),
                        ));
                    }
                    let r = put_record
                        .execute(params![
                            session.as_str(),
                            refs.session_id,
                            i64::try_from(line).unwrap_or(i64::MAX),
                            i64::try_from(p.offset).unwrap_or(i64::MAX),
                            refs.uuid,
                            refs.timestamp.map(|t| t.0),
                            refs.kind,
                            lsn_i64(lsn),
                        ])
                        .and_then(|_| put_text.execute(params![tx.last_insert_rowid(), text]));
                    match r {
                        Ok(_) => done.records += 1,
                        Err(e) => sql_error = Some(e),
                    }
                    Ok(())
                };
            super::import::each_piece_addressed(&event.body, &mut each)?;
            Ok(sql_error.is_none())
        });
        if let Some(e) = sql_error {
            return Err(CatchUpError::Sql(e));
        }
        read.map_err(CatchUpError::Engine)?;
        let mut put_line =
            tx.prepare("INSERT OR REPLACE INTO lines(session, n) VALUES (?1, ?2)")?;
        for (s, n) in &lines {
            put_line.execute(params![s, i64::try_from(*n).unwrap_or(i64::MAX)])?;
        }
    }
    tx.execute(
        "UPDATE meta SET last_lsn = ?1, last_at = ?2 WHERE id = 1",
        params![lsn_i64(to), last_at],
    )?;
    tx.commit()?;
    Ok(done)
}
