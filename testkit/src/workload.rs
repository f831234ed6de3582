//! Workloads for the crash, fault and fuzz tests, and a runner that drives the engine with
//! one while checking every answer against the reference [`Model`].
//!
//! The runner keeps the model of everything acknowledged (`model`) and the states the log
//! may also hold because a command failed with an I/O error after its record may have
//! been written (`maybe`). After any recovery the engine's state must equal one of them:
//! every acknowledged command is present, nothing else but the failed ones may be, and the
//! state is the model of a prefix of the submitted commands.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use session_engine::backend::MemLog;
use session_engine::storage::{CrashMode, MemStorage, Storage};
use session_engine::{
    AgentId, Clock, Command, Committed, Durability, Engine, Error, JsonText, ManualClock,
    NewSession, Options, SessionConfig, SessionId, State, Timestamp,
};

use super::model::{Expect, Model};

/// 2025-11-08T10:30:00Z.
pub const START_SECS: i64 = 1_762_597_800;

/// One step of a workload.
#[derive(Clone, Debug)]
pub enum Step {
    /// Execute a command and wait for its answer.
    Cmd(Command),
    /// Move the clock forward.
    Advance(u64),
    /// Take a snapshot and wait for it.
    Snapshot,
    /// Close the engine and open it again on the same storage.
    Reopen,
    /// Several threads execute their commands at once, each on its own sessions and
    /// chains (ids starting with the lane's prefix), so their batches are group-committed
    /// together. The clock does not move meanwhile.
    Parallel(Vec<(String, Vec<Command>)>),
    /// Power cut now: continue on `MemStorage::crash(seed, mode)` of the current storage.
    Crash(u64, CrashMode),
    /// The storage halts after this many more syncs (a power cut in the making; a later
    /// `Crash` step takes its image).
    HaltAfter(u64),
}

/// Engine settings of the workloads.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub segment_bytes: u64,
    pub snapshot_every: u64,
    pub keep_snapshots: usize,
    pub max_batch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            segment_bytes: 4096,
            snapshot_every: 16,
            keep_snapshots: 2,
            max_batch: 64,
        }
    }
}

/// Options for a workload: `Durability::Always`, manual clock, no watchdog.
pub fn workload_options(storage: Arc<dyn Storage>, clock: &ManualClock, s: Settings) -> Options {
    Options {
        durability: Durability::Always,
        segment_bytes: s.segment_bytes,
        snapshot_every: s.snapshot_every,
        keep_snapshots: s.keep_snapshots,
        max_batch: s.max_batch,
        max_batch_bytes: 256 << 10,
        watchdog_interval: None,
        storage,
        clock: Arc::new(clock.clone()),
        log: None,
    }
}

pub fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

pub fn agent(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

pub fn json(s: &str) -> JsonText {
    JsonText::parse(s).unwrap()
}

pub fn create_cmd(id: &str, timeout_secs: u64) -> Command {
    Command::CreateSession(Box::new(NewSession {
        id: Some(sid(id)),
        name: Some(format!("session {id}")),
        timeout_secs,
        agent: Some("claude".into()),
        working_dir: Some(format!("/work/{id}")),
        config: SessionConfig {
            max_retries: 5,
            ..SessionConfig::default()
        },
        metadata: vec![("project".into(), json(r#""session-engine""#))],
    }))
}

pub fn activity_cmd(id: &str, action: &str, pad: usize) -> Command {
    Command::RecordActivity {
        session: sid(id),
        action: action.into(),
        details: Some(json(&format!(
            r#"{{"action":"{action}","pad":"{}"}}"#,
            "x".repeat(pad)
        ))),
    }
}

pub fn meta_cmd(id: &str, key: &str, value: &str) -> Command {
    Command::SetMetadata {
        session: sid(id),
        key: key.into(),
        value: json(value),
    }
}

pub fn link_cmd(agent_id: &str, n: usize) -> Command {
    Command::LinkChain {
        agent: agent(agent_id),
        external_id: format!("ext-{agent_id}-{n}"),
        prompt: format!("prompt {n} {}", "p".repeat(250)),
        response: format!("response {n}"),
        metadata: n
            .is_multiple_of(2)
            .then(|| json(&format!(r#"{{"turn":{n}}}"#))),
    }
}

/// The sequential crash workload: every kind of command (refusals included), checkpoints
/// and restores, manual and automatic snapshots, segment rollovers, chains, clones,
/// expiry, archiving and cleanup, and a clean reopen in the middle.
pub fn sequential_script() -> Vec<Step> {
    use Step::*;
    let mut v = vec![
        Cmd(create_cmd("s1", 3600)),
        Cmd(create_cmd("s2", 3600)),
        Cmd(create_cmd("s3", 60)),
        Cmd(create_cmd("s1", 3600)), // refused: exists
        Cmd(meta_cmd("s1", "branch", r#""main""#)),
        Cmd(meta_cmd("s1", "count", "1")),
        Cmd(Command::RemoveMetadata {
            session: sid("s1"),
            key: "count".into(),
        }),
        Cmd(Command::RemoveMetadata {
            session: sid("s1"),
            key: "count".into(),
        }), // refused: no such key
        Cmd(activity_cmd("nope", "x", 0)), // refused: no such session
        Cmd(activity_cmd("s1", " ", 0)),   // refused: empty action
    ];
    for i in 0..12 {
        v.push(Cmd(activity_cmd("s1", &format!("edit-{i}"), 40 + i * 7)));
        v.push(Advance(1));
    }
    v.extend([
        Cmd(Command::SaveCheckpoint {
            session: sid("s1"),
            label: Some("before refactor".into()),
        }),
        Cmd(activity_cmd("s1", "refactor", 300)),
        Cmd(meta_cmd("s1", "branch", r#""refactor""#)),
        Cmd(Command::RecordCommand {
            session: sid("s1"),
            command: "cargo test".into(),
            args: Some(json(r#"["--release"]"#)),
            success: false,
            error: Some("exit status 101".into()),
            duration_ms: 4200,
        }),
        Cmd(Command::LogDecision {
            session: sid("s1"),
            what: "roll back the refactor".into(),
            why: "the tests fail".into(),
            alternatives: Some("fix forward".into()),
        }),
        Cmd(Command::RestoreCheckpoint {
            session: sid("s1"),
            index: None,
        }),
        Cmd(Command::RestoreCheckpoint {
            session: sid("s1"),
            index: Some(7),
        }), // refused: no such checkpoint
        Snapshot,
        Cmd(Command::Pause(sid("s2"))),
        Cmd(activity_cmd("s2", "while paused", 0)), // refused: paused
        Cmd(Command::Resume(sid("s2"))),
        Cmd(Command::End(sid("s2"))),
        Cmd(Command::Archive(sid("s2"))),
        Cmd(meta_cmd("s2", "k", "1")), // refused: archived
    ]);
    for n in 0..5 {
        v.push(Cmd(link_cmd("agent-a", n)));
    }
    v.extend([
        Cmd(Command::ResetChain(agent("agent-a"))),
        Cmd(link_cmd("agent-a", 9)),
        Cmd(link_cmd("agent-b", 1)),
        Cmd(Command::Clone {
            source: sid("s1"),
            new_id: Some(sid("s4")),
        }),
        Reopen,
        Advance(120),
        Cmd(Command::ExpireIdle),           // s3 times out
        Cmd(Command::ExpireIdle),           // nothing to do
        Cmd(activity_cmd("s3", "late", 0)), // refused: timed out
        Cmd(Command::Resume(sid("s3"))),
    ]);
    for i in 0..40 {
        let s = ["s1", "s3", "s4"][i % 3];
        v.push(Cmd(activity_cmd(s, &format!("bulk-{i}"), (i * 37) % 500)));
        if i % 9 == 0 {
            v.push(Cmd(Command::SaveCheckpoint {
                session: sid(s),
                label: None,
            }));
        }
        if i % 13 == 0 {
            v.push(Snapshot);
        }
    }
    v.extend([
        Advance(3 * 86_400),
        Cmd(create_cmd("s5", 0)),
        Cmd(Command::CleanupOldSessions { max_age_days: 2 }),
        Cmd(Command::CleanupOldSessions { max_age_days: 2 }), // nothing to do
        Cmd(activity_cmd("s5", "still here", 10)),
    ]);
    v
}

/// A lane of a parallel phase: commands on sessions `<prefix>a`, `<prefix>b` and the chain
/// of agent `<prefix>agent`.
fn lane(prefix: &str, round: usize, n: usize) -> Vec<Command> {
    let a = format!("{prefix}a");
    let b = format!("{prefix}b");
    let mut v = Vec::new();
    if round == 0 {
        v.push(create_cmd(&b, 3600));
    }
    for i in 0..n {
        let s = if i % 3 == 2 { &b } else { &a };
        v.push(match i % 5 {
            0 | 1 => activity_cmd(s, &format!("r{round}-{i}"), (i * 53) % 300),
            2 => meta_cmd(s, &format!("k{}", i % 4), &i.to_string()),
            3 => link_cmd(&format!("{prefix}agent"), i),
            _ => Command::SaveCheckpoint {
                session: sid(s),
                label: Some(format!("r{round}-{i}")),
            },
        });
    }
    v
}

/// The concurrent crash workload: four threads at once, twice, around snapshots.
pub fn concurrent_script(lanes: usize, per_lane: usize) -> Vec<Step> {
    use Step::*;
    let prefixes: Vec<String> = (0..lanes).map(|t| format!("p{t}-")).collect();
    let mut v: Vec<Step> = prefixes
        .iter()
        .map(|p| Cmd(create_cmd(&format!("{p}a"), 3600)))
        .collect();
    for round in 0..2 {
        v.push(Parallel(
            prefixes
                .iter()
                .map(|p| (p.clone(), lane(p, round, per_lane)))
                .collect(),
        ));
        v.push(Snapshot);
        v.push(Advance(1));
    }
    v.push(Cmd(activity_cmd("p0-a", "after", 5)));
    v
}

/// Whether `e` is the kind of error a failing disk may cause.
pub fn is_io_failure(e: &Error) -> bool {
    matches!(e, Error::Io { .. } | Error::Poisoned { .. })
}

/// How the engine answered one command.
enum Answer {
    /// Accepted and durable at this LSN.
    Acked(u64),
    /// Refused, or accepted with nothing to write.
    Refused,
    /// Failed because of the disk; with the model including the command if its record
    /// may have been written.
    Failed(Option<Model>, String),
}

/// Drives an engine through a workload, checking each answer against the model.
pub struct Runner {
    pub dir: String,
    pub settings: Settings,
    pub clock: ManualClock,
    /// The storage the engine uses (perhaps a fault-injecting wrapper of `mem`).
    pub storage: Arc<dyn Storage>,
    /// The in-memory file system underneath, for crash steps.
    pub mem: Option<Arc<MemStorage>>,
    pub engine: Option<Engine>,
    /// Everything acknowledged.
    pub model: Model,
    /// States the log may hold besides `model`: with a failed command's record.
    pub maybe: Vec<Model>,
    /// The highest acknowledged LSN.
    pub acked: u64,
    /// Every I/O failure seen, described.
    pub failures: Vec<String>,
    /// Stop the workload as soon as the in-memory storage has halted.
    pub stop_on_halt: bool,
    /// Number of recoveries checked.
    pub recoveries: u64,
    /// Seeds (each with every `CrashMode`) of the power cuts after new writes in
    /// [`Runner::next_writes_survive`].
    pub crash_seeds: u64,
    /// The log, when it is a `MemLog` instead of the data directory's files.
    pub log: Option<MemLog>,
}

impl Runner {
    /// A runner on `storage` (with `mem` underneath, if it is in memory); opens the engine.
    pub fn new(
        storage: Arc<dyn Storage>,
        mem: Option<Arc<MemStorage>>,
        settings: Settings,
    ) -> Runner {
        Runner::with_log(storage, mem, settings, None)
    }

    /// [`Runner::new`] with the engine's log in `log` (a crash step then also takes the
    /// log a power cut would leave).
    pub fn with_log(
        storage: Arc<dyn Storage>,
        mem: Option<Arc<MemStorage>>,
        settings: Settings,
        log: Option<MemLog>,
    ) -> Runner {
        let mut r = Runner {
            dir: "data".into(),
            settings,
            clock: ManualClock::new(Timestamp::from_secs(START_SECS)),
            storage,
            mem,
            engine: None,
            model: Model::new(),
            maybe: Vec::new(),
            acked: 0,
            failures: Vec::new(),
            stop_on_halt: false,
            recoveries: 0,
            crash_seeds: 4,
            log,
        };
        r.open();
        r
    }

    pub fn options(&self) -> Options {
        let mut o = workload_options(Arc::clone(&self.storage), &self.clock, self.settings);
        o.log = self
            .log
            .clone()
            .map(|l| Arc::new(l) as Arc<dyn session_engine::backend::LogBackend>);
        o
    }

    fn now(&self) -> i64 {
        self.clock.now().0
    }

    fn halted(&self) -> bool {
        self.mem.as_ref().is_some_and(|m| m.is_halted())
    }

    /// Opens the engine; on success the recovered state must be one the model allows, and
    /// becomes the model. An open that fails must fail with an I/O error.
    pub fn open(&mut self) -> bool {
        match Engine::open(&self.dir, self.options()) {
            Ok(e) => {
                // The activities' details are read from the log: an injected I/O error
                // there is as if the open had failed (the next attempt reopens).
                let st = match e.state_with_details() {
                    Ok(st) => st,
                    Err(err @ Error::Io { .. }) => {
                        self.failures
                            .push(format!("reading the recovered history: {err}"));
                        drop(e);
                        self.engine = None;
                        return false;
                    }
                    Err(err) => panic!("the recovered history does not read: {err}"),
                };
                if let Err(msg) = self.check_recovered(&st) {
                    panic!(
                        "recovered state is wrong: {msg}\nreport: {:?}\nfailures: {:?}",
                        e.recovery_report(),
                        self.failures
                    );
                }
                self.model = Model::from_state(&st);
                self.maybe.clear();
                self.recoveries += 1;
                self.engine = Some(e);
                true
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::Io { .. }),
                    "open failed with something else than an I/O error: {e}\nfailures: {:?}",
                    self.failures
                );
                self.failures.push(format!("open: {e}"));
                self.engine = None;
                false
            }
        }
    }

    /// Whether `st` is a state the log may legitimately hold now.
    pub fn check_recovered(&self, st: &State) -> Result<(), String> {
        let m = Model::from_state(st);
        if m.last_lsn < self.acked {
            return Err(format!(
                "acknowledged records lost: the log ends at LSN {} but LSN {} was acknowledged",
                m.last_lsn, self.acked
            ));
        }
        if m == self.model || self.maybe.contains(&m) {
            return Ok(());
        }
        let closest = self
            .maybe
            .iter()
            .find(|c| c.last_lsn == m.last_lsn)
            .unwrap_or(&self.model);
        Err(format!(
            "state at LSN {} is not the model of a prefix of the commands (acknowledged up \
             to {}, {} more possible): {}",
            m.last_lsn,
            self.acked,
            self.maybe.len(),
            closest.diff(&m)
        ))
    }

    /// Closes the engine (errors are expected once the disk failed) and forgets it.
    pub fn close(&mut self) {
        if let Some(e) = self.engine.take()
            && let Err(err) = e.close()
        {
            assert!(is_io_failure(&err), "close failed with {err}");
            self.failures.push(format!("close: {err}"));
        }
    }

    /// Runs the steps in order. While the engine cannot be opened, steps other than
    /// `Crash` are skipped. Returns false if a step was skipped or the run stopped early
    /// (the storage halted and `stop_on_halt` is set).
    pub fn run(&mut self, steps: &[Step]) -> bool {
        let mut complete = true;
        for (i, step) in steps.iter().enumerate() {
            if self.engine.is_none() && !matches!(step, Step::Crash(..)) {
                complete = false;
                continue;
            }
            if self.stop_on_halt && self.halted() {
                return false;
            }
            self.step(i, step);
        }
        complete && self.engine.is_some()
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    /// Checks the answer `got` to `cmd` (decided at `now`) against `model`, which it
    /// updates when the command was accepted.
    fn answer(
        engine: &Engine,
        model: &mut Model,
        cmd: &Command,
        now: i64,
        got: &Result<Committed, Error>,
        what: &str,
    ) -> Answer {
        let poisoned = engine.poisoned().is_some();
        match got {
            Err(Error::Poisoned { .. }) => {
                assert!(
                    poisoned,
                    "{what}: Poisoned answer from an engine that is not"
                );
                Answer::Failed(None, format!("{what}: poisoned"))
            }
            Err(e @ Error::Io { .. }) => {
                assert!(
                    poisoned,
                    "{what}: a command failed with an I/O error but the engine is not \
                     poisoned: {e}"
                );
                let mut m = model.clone();
                let expect = m.apply(cmd, now);
                assert!(
                    !matches!(expect, Expect::Refused(_)),
                    "{what}: a command the model refuses ({expect:?}) reached the disk"
                );
                Answer::Failed(
                    (expect == Expect::Appended).then_some(m),
                    format!("{what}: {e}"),
                )
            }
            _ => {
                let expect = model.expect(cmd, now);
                assert!(
                    expect.matches(got),
                    "{what}: the engine answered {got:?}, the model expects {expect:?}"
                );
                model.apply(cmd, now);
                match got {
                    Ok(c) if c.appended => Answer::Acked(c.lsn.0),
                    _ => Answer::Refused,
                }
            }
        }
    }

    fn step(&mut self, i: usize, step: &Step) {
        let what = format!("step {i} {step:?}");
        match step {
            Step::Cmd(cmd) => {
                let now = self.now();
                let before = self.model.last_lsn;
                let got = self.engine().execute(cmd.clone());
                let engine = self.engine.as_ref().expect("open");
                match Self::answer(engine, &mut self.model, cmd, now, &got, &what) {
                    Answer::Acked(lsn) => {
                        assert_eq!(lsn, before + 1, "{what}: LSNs are not dense");
                        self.acked = self.acked.max(lsn);
                    }
                    Answer::Refused => {}
                    Answer::Failed(maybe, msg) => {
                        self.failures.push(msg);
                        if let Some(m) = maybe {
                            assert!(self.maybe.is_empty(), "{what}: two failed writes");
                            self.maybe.push(m);
                        }
                    }
                }
            }
            Step::Advance(secs) => self.clock.advance_secs(*secs),
            Step::Snapshot => match self.engine().snapshot() {
                Ok(lsn) => {
                    assert!(
                        self.maybe.is_empty(),
                        "{what}: snapshot after a failed write"
                    );
                    assert_eq!(lsn.0, self.model.last_lsn, "{what}");
                }
                Err(e) => {
                    assert!(is_io_failure(&e), "{what}: snapshot failed with {e}");
                    self.failures.push(format!("{what}: {e}"));
                }
            },
            Step::Reopen => {
                self.close();
                self.open();
            }
            Step::Parallel(lanes) => self.parallel(lanes, &what),
            Step::Crash(seed, mode) => {
                let mem = Arc::clone(self.mem.as_ref().expect("crash needs a MemStorage"));
                let image = Arc::new(mem.crash(*seed, *mode));
                self.log = self.log.as_ref().map(MemLog::crash);
                // The old engine keeps writing to the old storage, which nobody reads.
                if let Some(e) = self.engine.take() {
                    let _ = e.close();
                }
                self.storage = image.clone();
                self.mem = Some(image);
                let opened = self.open();
                assert!(opened, "{what}: open after a crash failed");
            }
            Step::HaltAfter(n) => {
                if let Some(m) = &self.mem {
                    m.halt_after_syncs(m.sync_count() + n);
                }
            }
        }
    }

    fn parallel(&mut self, lanes: &[(String, Vec<Command>)], what: &str) {
        let now = self.now();
        let engine = self.engine.as_ref().expect("open");
        let results: Vec<Vec<Result<Committed, Error>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = lanes
                .iter()
                .map(|(_, cmds)| {
                    scope.spawn(move || {
                        cmds.iter()
                            .map(|c| engine.execute(c.clone()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let base = self.model.clone();
        let mut acked_lsns: Vec<u64> = Vec::new();
        let mut composed = base.clone();
        let mut failed: Vec<(String, Model)> = Vec::new();
        for ((prefix, cmds), res) in lanes.iter().zip(&results) {
            let mut lane_model = base.clone();
            let mut lane_lsns = Vec::new();
            for (j, (cmd, got)) in cmds.iter().zip(res).enumerate() {
                let what = format!("{what} lane {prefix} command {j}");
                match Self::answer(engine, &mut lane_model, cmd, now, got, &what) {
                    Answer::Acked(lsn) => lane_lsns.push(lsn),
                    Answer::Refused => {}
                    Answer::Failed(maybe, msg) => {
                        self.failures.push(msg);
                        if let Some(m) = maybe {
                            failed.push((prefix.clone(), m));
                        }
                    }
                }
            }
            assert!(
                lane_lsns.windows(2).all(|w| w[0] < w[1]),
                "{what}: lane {prefix}'s commands were applied out of order: {lane_lsns:?}"
            );
            acked_lsns.extend(lane_lsns);
            composed.overlay(prefix, &lane_model);
        }
        acked_lsns.sort_unstable();
        let n = acked_lsns.len() as u64;
        assert_eq!(
            acked_lsns,
            (base.last_lsn + 1..=base.last_lsn + n).collect::<Vec<_>>(),
            "{what}: acknowledged LSNs are not dense and unique"
        );
        composed.last_lsn = base.last_lsn + n;
        self.acked = self.acked.max(composed.last_lsn);
        // Any subset of the failed commands (one per lane at most) may be in the log.
        assert!(failed.len() <= 16, "{what}: too many failed lanes");
        assert!(
            failed.is_empty() || self.maybe.is_empty(),
            "{what}: writes failed in a poisoned engine"
        );
        for mask in 1u32..(1 << failed.len()) {
            let mut m = composed.clone();
            for (k, (prefix, fm)) in failed.iter().enumerate() {
                if mask & (1 << k) != 0 {
                    m.overlay(prefix, fm);
                    m.last_lsn += 1;
                }
            }
            self.maybe.push(m);
        }
        self.model = composed;
    }

    /// A runner with the same expectations on another storage (a crash image), not yet
    /// opened.
    pub fn fork(&self, mem: Arc<MemStorage>) -> Runner {
        Runner {
            dir: self.dir.clone(),
            settings: self.settings,
            clock: ManualClock::new(self.clock.now()),
            storage: mem.clone(),
            mem: Some(mem),
            engine: None,
            model: self.model.clone(),
            maybe: self.maybe.clone(),
            acked: self.acked,
            failures: Vec::new(),
            stop_on_halt: false,
            recoveries: 0,
            crash_seeds: self.crash_seeds,
            log: self.log.as_ref().map(MemLog::crash),
        }
    }

    /// After a recovery: new writes work and survive a clean reopen and a power cut.
    pub fn next_writes_survive(&mut self, tag: &str) {
        let mem = self.mem.clone();
        let failures_before = self.failures.len();
        let steps = [
            Step::Cmd(create_cmd(&format!("after-{tag}"), 3600)),
            Step::Cmd(activity_cmd(&format!("after-{tag}"), "works", 20)),
            Step::Reopen,
        ];
        assert!(self.run(&steps), "next writes failed: {:?}", self.failures);
        assert_eq!(
            self.failures.len(),
            failures_before,
            "next writes failed: {:?}",
            self.failures
        );
        let after = self.model.clone();
        assert_eq!(after.last_lsn, self.acked);
        if let Some(mem) = mem {
            // Everything is acknowledged, so every power cut keeps all of it.
            for seed in 0..self.crash_seeds {
                for mode in CrashMode::ALL {
                    let image: Arc<dyn Storage> = Arc::new(mem.crash(seed, mode));
                    let mut opts = workload_options(image, &self.clock, self.settings);
                    opts.log = self.log.as_ref().map(|l| {
                        Arc::new(l.crash()) as Arc<dyn session_engine::backend::LogBackend>
                    });
                    let e = Engine::open_read_only(&self.dir, opts).unwrap_or_else(|err| {
                        panic!("open after a power cut following new writes: {err}")
                    });
                    let got = Model::from_engine(&e).unwrap();
                    assert!(
                        got == after,
                        "new writes lost in a power cut (seed {seed}, {mode:?}): {}",
                        after.diff(&got)
                    );
                }
            }
        }
    }
}

/// How much to scale the sweeps: `SESSION_ENGINE_SWEEP_SCALE` (default 1). CI runs the
/// default; `SESSION_ENGINE_SWEEP_SCALE=10 cargo test --release --test crash_sweep` runs
/// ten times as many seeds (and flips, and fault points where they are sampled).
pub fn scale() -> u64 {
    std::env::var("SESSION_ENGINE_SWEEP_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &u64| n > 0)
        .unwrap_or(1)
}

/// A wait long enough for any single operation in these tests.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Runs `f`; if it panics, panics again with `ctx` in front of the message, so a sweep's
/// failure names its crash point, seed and mode.
pub fn with_context<T>(ctx: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{}: {msg}", ctx())
        }
    }
}
