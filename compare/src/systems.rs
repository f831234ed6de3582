//! Systems under test for the write workloads, behind one trait so that a workload can run
//! them interleaved: a round of events on each system in turn, many rounds, so that the
//! drift of a shared disk (other jobs' fsyncs come and go within seconds) hits every
//! system alike and each round gives a paired ratio.
//!
//! Every system gets its input built before the clock starts: the raw loops their frame
//! bytes, the peers their rows and values, the engine its commands.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use session_engine::{Command, Durability, Engine, SessionId};

use crate::peers::{Redb, Sqlite, SqliteSync};
use crate::workload::{
    activity, details_text, engine_with_sessions, frame, fresh_dir, payload, remove, session_id,
};

/// A system that writes events `range` of the workload, one after another.
pub trait Sys {
    /// Its name in the table.
    fn name(&self) -> String;
    /// Writes events `range` and returns the time it took.
    fn run(&mut self, range: Range<u64>) -> Duration;
}

/// Scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory under `root`, named after `name` and made unique.
    pub fn new(root: &Path, name: &str) -> Scratch {
        Scratch(fresh_dir(root, name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// The engine, one caller: `execute` per event, or `submit` with up to `window` commands
/// in flight.
pub struct EngineSys {
    pub label: &'static str,
    pub engine: Engine,
    pub window: usize,
    session: SessionId,
    _dir: Scratch,
}

impl EngineSys {
    pub fn new(
        root: &Path,
        label: &'static str,
        durability: Durability,
        window: usize,
    ) -> EngineSys {
        let dir = Scratch::new(root, &format!("engine-{}", label.replace(' ', "-")));
        EngineSys {
            label,
            engine: engine_with_sessions(&dir.0, durability, 1),
            window,
            session: session_id(0),
            _dir: dir,
        }
    }
}

impl Sys for EngineSys {
    fn name(&self) -> String {
        self.label.to_owned()
    }

    fn run(&mut self, range: Range<u64>) -> Duration {
        let cmds: Vec<Command> = range.map(|i| activity(&self.session, i)).collect();
        let t = Instant::now();
        if self.window <= 1 {
            for c in cmds {
                self.engine.execute(c).expect("execute");
            }
        } else {
            let mut pending = VecDeque::with_capacity(self.window);
            for c in cmds {
                pending.push_back(self.engine.submit(c));
                if pending.len() >= self.window {
                    pending
                        .pop_front()
                        .expect("non-empty")
                        .wait()
                        .expect("commit");
                }
            }
            for p in pending {
                p.wait().expect("commit");
            }
        }
        t.elapsed()
    }
}

/// Raw loops over the engine's own frame bytes.
pub enum RawKind {
    /// `pwrite` into a preallocated zero-filled file, `fdatasync` per `batch` events.
    Overwrite { batch: usize },
    /// `write` appending to a growing file, `fdatasync` per event.
    Append,
    /// `write` per event, no sync.
    Write,
    /// `pwrite` of the 4 KiB blocks an event touches into a preallocated zero-filled file
    /// opened with `O_DIRECT | O_DSYNC`: each write returns once durable, with no separate
    /// sync call (the device is asked for a forced-unit-access write or a cache flush).
    DirectDsync,
}

pub struct RawSys {
    kind: RawKind,
    file: File,
    offset: u64,
    /// For the direct loop: the file's last 4 KiB block and the next, as it writes them.
    staging: Box<crate::raw::Aligned<8192>>,
    _dir: Scratch,
}

impl RawSys {
    /// `capacity`: bytes to preallocate for the overwrite loop.
    pub fn new(root: &Path, kind: RawKind, capacity: u64) -> RawSys {
        let dir = Scratch::new(root, "raw");
        let path = dir.0.join("f");
        let file = match kind {
            RawKind::Overwrite { .. } => crate::raw::preallocated(&path, capacity),
            RawKind::DirectDsync => {
                drop(crate::raw::preallocated(&path, capacity + 8192));
                crate::raw::open_direct_dsync(&path).expect("open with O_DIRECT | O_DSYNC")
            }
            _ => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&path)
                    .expect("create");
                f.sync_all().expect("sync");
                f
            }
        };
        RawSys {
            kind,
            file,
            offset: 0,
            staging: Box::new(crate::raw::Aligned([0; 8192])),
            _dir: dir,
        }
    }
}

impl Sys for RawSys {
    fn name(&self) -> String {
        match self.kind {
            RawKind::Overwrite { batch: 1 } => {
                "raw: overwrite preallocated zeros + fdatasync per event".into()
            }
            RawKind::Overwrite { batch } => {
                format!("raw: overwrite preallocated zeros + fdatasync per {batch} events")
            }
            RawKind::Append => "raw: append (file grows) + fdatasync per event".into(),
            RawKind::Write => "raw: one write() per event, no buffering, no sync".into(),
            RawKind::DirectDsync => {
                "raw: overwrite preallocated zeros, O_DIRECT|O_DSYNC write of the 4 KiB blocks per event".into()
            }
        }
    }

    fn run(&mut self, range: Range<u64>) -> Duration {
        let s = session_id(0);
        let frames: Vec<Vec<u8>> = range.map(|i| frame(&s, i, i + 1)).collect();
        let t = Instant::now();
        match self.kind {
            RawKind::Overwrite { batch } => {
                let mut buf = Vec::new();
                for group in frames.chunks(batch.max(1)) {
                    buf.clear();
                    for f in group {
                        buf.extend_from_slice(f);
                    }
                    self.file.write_all_at(&buf, self.offset).expect("write");
                    self.offset += buf.len() as u64;
                    self.file.sync_data().expect("fdatasync");
                }
            }
            RawKind::Append => {
                for f in &frames {
                    self.file.write_all(f).expect("write");
                    self.file.sync_data().expect("fdatasync");
                }
            }
            RawKind::Write => {
                for f in &frames {
                    self.file.write_all(f).expect("write");
                }
            }
            RawKind::DirectDsync => {
                // The staging buffer mirrors the file from the block the next event starts
                // in; each event rewrites the blocks it touches (the earlier bytes of the
                // first one unchanged), and the buffer moves on a block once one is full.
                for f in &frames {
                    let block = self.offset & !4095;
                    let at = (self.offset - block) as usize;
                    assert!(at + f.len() <= 8192, "an event of at most 4 KiB");
                    self.staging.0[at..at + f.len()].copy_from_slice(f);
                    let end = (at + f.len()).div_ceil(4096) * 4096;
                    self.file
                        .write_all_at(&self.staging.0[..end], block)
                        .expect("direct write");
                    self.offset += f.len() as u64;
                    if self.offset & !4095 != block {
                        self.staging.0.copy_within(4096.., 0);
                        self.staging.0[4096..].fill(0);
                    }
                }
            }
        }
        t.elapsed()
    }
}

/// SQLite, one transaction per event.
pub struct SqliteSys {
    sync: SqliteSync,
    db: Sqlite,
    _dir: Scratch,
}

impl SqliteSys {
    pub fn new(root: &Path, sync: SqliteSync) -> SqliteSys {
        let dir = Scratch::new(root, &format!("sqlite-{sync:?}"));
        SqliteSys {
            sync,
            db: Sqlite::open(&dir.0.join("db.sqlite"), sync),
            _dir: dir,
        }
    }
}

impl Sys for SqliteSys {
    fn name(&self) -> String {
        format!(
            "SQLite WAL, synchronous={}, one txn per event",
            format!("{:?}", self.sync).to_uppercase()
        )
    }

    fn run(&mut self, range: Range<u64>) -> Duration {
        let rows: Vec<(u64, String)> = range.map(|i| (i, details_text(i))).collect();
        let t = Instant::now();
        for (i, d) in &rows {
            self.db.insert_prepared("bench-session", *i, d);
        }
        t.elapsed()
    }
}

/// redb, one write transaction per event.
pub struct RedbSys {
    durable: bool,
    db: Redb,
    _dir: Scratch,
}

impl RedbSys {
    pub fn new(root: &Path, durable: bool) -> RedbSys {
        let dir = Scratch::new(root, "redb");
        RedbSys {
            durable,
            db: Redb::create(&dir.0.join("db.redb")),
            _dir: dir,
        }
    }
}

impl Sys for RedbSys {
    fn name(&self) -> String {
        if self.durable {
            "redb, one durable write txn per event".into()
        } else {
            "redb, one write txn per event, Durability::None".into()
        }
    }

    fn run(&mut self, range: Range<u64>) -> Duration {
        let s = session_id(0);
        let payloads: Vec<Vec<u8>> = range.map(|i| payload(&s, i)).collect();
        let t = Instant::now();
        for p in &payloads {
            self.db.insert(p, self.durable);
        }
        t.elapsed()
    }
}

/// fjall, one insert per event, persisted with `fdatasync` when durable.
#[cfg(feature = "fjall")]
pub struct FjallSys {
    durable: bool,
    db: crate::peers::Fjall,
    _dir: Scratch,
}

#[cfg(feature = "fjall")]
impl FjallSys {
    pub fn new(root: &Path, durable: bool) -> FjallSys {
        let dir = Scratch::new(root, "fjall");
        FjallSys {
            durable,
            db: crate::peers::Fjall::open(&dir.0),
            _dir: dir,
        }
    }
}

#[cfg(feature = "fjall")]
impl Sys for FjallSys {
    fn name(&self) -> String {
        if self.durable {
            "fjall, insert + persist(SyncData) per event".into()
        } else {
            "fjall, insert without persist".into()
        }
    }

    fn run(&mut self, range: Range<u64>) -> Duration {
        let s = session_id(0);
        let payloads: Vec<Vec<u8>> = range.map(|i| payload(&s, i)).collect();
        let t = Instant::now();
        for p in &payloads {
            self.db.insert(p, self.durable);
        }
        t.elapsed()
    }
}

/// What interleaved rounds measured for one system.
pub struct Measured {
    pub name: String,
    /// Median events per second over the rounds.
    pub rate: f64,
    /// Median over the rounds of (first system's rate ÷ this system's rate) in the same
    /// round: the paired ratio, robust to drift between rounds.
    pub first_vs: f64,
}

/// Runs `warmup` untimed events on every system, then `rounds` rounds of `chunk` events on
/// every system in turn (system order rotating each round), and returns the medians.
///
/// The warm-up puts every system in its steady state before the clock starts: SQLite's
/// WAL, for one, grows (and each fsync also updates file metadata) until its first
/// automatic checkpoint at 1,000 pages, and is rewritten in place after that, as the
/// engine's preallocated segments and the raw overwrite loop are from the start.
pub fn interleave(
    warmup: u64,
    rounds: usize,
    chunk: u64,
    systems: &mut [Box<dyn Sys + '_>],
) -> Vec<Measured> {
    let k = systems.len();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut next = 0u64;
    for s in systems.iter_mut() {
        if warmup > 0 {
            s.run(next..next + warmup);
            next += warmup;
        }
    }
    for r in 0..rounds {
        for j in 0..k {
            let i = (j + r) % k;
            let d = systems[i].run(next..next + chunk);
            next += chunk;
            rates[i].push(crate::workload::rate(chunk, d));
        }
    }
    for (i, s) in systems.iter().enumerate() {
        eprintln!(
            "  {}: {}",
            s.name(),
            rates[i]
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    (0..k)
        .map(|i| {
            let mut paired: Vec<f64> = (0..rounds).map(|r| rates[0][r] / rates[i][r]).collect();
            Measured {
                name: systems[i].name(),
                rate: crate::workload::median(&mut rates[i].clone()),
                first_vs: crate::workload::median(&mut paired),
            }
        })
        .collect()
}
