//! The peers a user would pick instead: SQLite, redb, fjall, and the seeds' own approach
//! (rewrite the session's JSON file atomically on every action). Each is set up the way
//! its documentation recommends for an append-heavy log, and writes the same events.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::workload::{action, details_text};

/// SQLite's `synchronous` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqliteSync {
    /// fsync the WAL at every commit.
    Full,
    /// fsync the WAL only at checkpoints (a commit may be lost on power loss).
    Normal,
    /// Never fsync.
    Off,
}

impl SqliteSync {
    fn pragma(self) -> &'static str {
        match self {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
            SqliteSync::Off => "OFF",
        }
    }
}

/// A SQLite database in WAL mode with one table of events, one row per event.
pub struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    /// Opens (creating) the database file `path`.
    pub fn open(path: &Path, sync: SqliteSync) -> Sqlite {
        let conn = rusqlite::Connection::open(path).expect("open sqlite");
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .expect("WAL mode");
        assert_eq!(mode.to_lowercase(), "wal");
        conn.execute_batch(&format!(
            "PRAGMA synchronous={};
             CREATE TABLE IF NOT EXISTS events (
                 lsn INTEGER PRIMARY KEY,
                 session TEXT NOT NULL,
                 action TEXT NOT NULL,
                 at INTEGER NOT NULL,
                 details TEXT
             );",
            sync.pragma()
        ))
        .expect("set up sqlite");
        Sqlite { conn }
    }

    /// Inserts activity `i` with its details text already built, in its own transaction.
    pub fn insert_prepared(&self, session: &str, i: u64, details: &str) {
        self.conn
            .prepare_cached(
                "INSERT INTO events (session, action, at, details) VALUES (?1, ?2, ?3, ?4)",
            )
            .expect("prepare")
            .execute(rusqlite::params![session, action(i), i as i64, details])
            .expect("insert");
    }

    /// Inserts activities `range` of `session` in one transaction.
    pub fn insert_batch(&mut self, session: &str, range: std::ops::Range<u64>) {
        let tx = self.conn.transaction().expect("begin");
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO events (session, action, at, details) VALUES (?1, ?2, ?3, ?4)",
                )
                .expect("prepare");
            for i in range {
                st.execute(rusqlite::params![
                    session,
                    action(i),
                    i as i64,
                    details_text(i)
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }

    /// Inserts `rows` (session, activity number, details text, all built already) in one
    /// transaction.
    pub fn insert_rows(&mut self, rows: &[(String, u64, String)]) {
        let tx = self.conn.transaction().expect("begin");
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO events (session, action, at, details) VALUES (?1, ?2, ?3, ?4)",
                )
                .expect("prepare");
            for (session, i, details) in rows {
                st.execute(rusqlite::params![session, action(*i), *i as i64, details])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
}

const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");

/// A redb database with one table, event LSN to payload.
pub struct Redb {
    db: redb::Database,
    next: AtomicU64,
}

impl Redb {
    /// Creates the database file `path`.
    pub fn create(path: &Path) -> Redb {
        Redb {
            db: redb::Database::create(path).expect("create redb"),
            next: AtomicU64::new(1),
        }
    }

    /// One write transaction holding one event; durable when `durable`.
    pub fn insert(&self, payload: &[u8], durable: bool) {
        let mut tx = self.db.begin_write().expect("begin");
        if !durable {
            tx.set_durability(redb::Durability::None)
                .expect("non-durable commit");
        }
        {
            let mut t = tx.open_table(REDB_TABLE).expect("table");
            let lsn = self.next.fetch_add(1, Ordering::Relaxed);
            t.insert(lsn, payload).expect("insert");
        }
        tx.commit().expect("commit");
    }
}

/// A fjall keyspace with one partition, event LSN (big endian) to payload.
#[cfg(feature = "fjall")]
pub struct Fjall {
    keyspace: fjall::Keyspace,
    part: fjall::PartitionHandle,
    next: AtomicU64,
}

#[cfg(feature = "fjall")]
impl Fjall {
    /// Opens (creating) the keyspace in directory `path`.
    pub fn open(path: &Path) -> Fjall {
        let keyspace = fjall::Config::new(path).open().expect("open fjall");
        let part = keyspace
            .open_partition("events", fjall::PartitionCreateOptions::default())
            .expect("partition");
        Fjall {
            keyspace,
            part,
            next: AtomicU64::new(1),
        }
    }

    /// Inserts one event; when `durable`, persists the journal with `fdatasync` before
    /// returning.
    pub fn insert(&self, payload: &[u8], durable: bool) {
        let lsn = self.next.fetch_add(1, Ordering::Relaxed);
        self.part
            .insert(lsn.to_be_bytes(), payload)
            .expect("insert");
        if durable {
            self.keyspace
                .persist(fjall::PersistMode::SyncData)
                .expect("persist");
        }
    }
}

/// The seeds' approach (seed 001's `SessionManager.save_session`): the whole session is
/// one pretty-printed JSON file, rewritten on every action through a temporary file, an
/// fsync and a rename.
pub struct SeedsJson {
    path: PathBuf,
    tmp: PathBuf,
    session: serde_json::Value,
}

impl SeedsJson {
    /// A session file in `dir` holding `prior` activities.
    pub fn new(dir: &Path, prior: u64) -> SeedsJson {
        SeedsJson::named(dir, "bench-session", prior)
    }

    /// Session `id`'s file in `dir`, holding `prior` activities, written as the seeds'
    /// `create_session` saves a new session.
    pub fn named(dir: &Path, id: &str, prior: u64) -> SeedsJson {
        let activities: Vec<serde_json::Value> = (0..prior).map(seed_activity).collect();
        let session = serde_json::json!({
            "session_id": id,
            "created_at": "2025-11-08T10:30:00Z",
            "last_activity": "2025-11-08T10:30:00Z",
            "status": "active",
            "timeout_seconds": 3600,
            "metadata": {},
            "activity_log": activities,
        });
        let mut s = SeedsJson {
            path: dir.join(format!("session_{id}.json")),
            tmp: dir.join(format!("session_{id}.json.tmp")),
            session,
        };
        s.write();
        s
    }

    /// Records activity `i`: appends it and rewrites the file atomically.
    pub fn record(&mut self, i: u64) {
        if let Some(log) = self.session["activity_log"].as_array_mut() {
            log.push(seed_activity(i));
        }
        self.session["last_activity"] = serde_json::Value::from("2025-11-08T10:35:15Z");
        self.write();
    }

    fn write(&mut self) {
        let bytes = serde_json::to_vec_pretty(&self.session).expect("serialise");
        {
            let mut f = std::fs::File::create(&self.tmp).expect("create temp");
            std::io::Write::write_all(&mut f, &bytes).expect("write");
            f.sync_all().expect("fsync");
        }
        std::fs::rename(&self.tmp, &self.path).expect("rename");
    }
}

fn seed_activity(i: u64) -> serde_json::Value {
    serde_json::json!({
        "action": action(i),
        "timestamp": "2025-11-08T10:30:05Z",
        "details": serde_json::from_str::<serde_json::Value>(&details_text(i)).expect("JSON"),
    })
}
