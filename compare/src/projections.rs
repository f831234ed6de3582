//! W8..W12: the engine with its JSON projections on, as users run it (issue 13).
//!
//! Everything here goes through public interfaces only, so the workloads keep measuring
//! the product while the projector's internals change: the `session-engine` binary (its
//! flags, `apply` and the JSON-lines protocol, its exit; see [`crate::cli`]), the
//! library's `SessionManager` with its default projection options, and, as the yardstick,
//! the bare `Engine`. What a run wrote is checked from outside: the projection files are
//! parsed (seed 001's documented format) and the log's frames counted (`docs/format.md`).
//!
//! * W8 `bulk-apply`: one `apply` loads 10k, 100k and 1M activities into one session;
//!   time per activity until it exits, durable and buffered, against SQLite.
//! * W9 `many-sessions`: one durable `apply` loads 10,000 sessions of 10 activities;
//!   time until every file is complete against the seeds' rewrite of a JSON file per
//!   change, and the rate of acknowledgements against SQLite batching as the engine does.
//! * W10 `apply-one-at-a-time`: a script writes one line to `apply` and waits for its
//!   answer, against a raw `pwrite` + `fdatasync` loop.
//! * W11 `manager`: `SessionManager` with projections, one durable activity at a time,
//!   against the bare `Engine::execute`: throughput and p99 latency.
//! * W12 `lag`: how far the projection files trail the log under a writer at full speed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_engine::{Command, Durability, Engine, ManagerOptions, NewSession, SessionManager};

use crate::cli::{self, ApplyRun};
use crate::peers::{SeedsJson, Sqlite, SqliteSync};
use crate::systems::{self, Scratch, Sys};
use crate::workload::{
    action, activity, details_text, engine_options, fresh_dir, median, rate, remove, session_id,
    settle,
};
use crate::{Config, Section, Unit, group};

/// The workloads' ids and their `--only` names.
pub const NAMES: [(&str, &str); 5] = [
    ("W8", "bulk-apply"),
    ("W9", "many-sessions"),
    ("W10", "apply-one-at-a-time"),
    ("W11", "manager"),
    ("W12", "lag"),
];

/// The workloads that run the `session-engine` binary.
const CLI_WORKLOADS: [&str; 3] = ["W8", "W9", "W10"];

fn selected(cfg: &Config) -> Vec<&'static str> {
    NAMES
        .iter()
        .filter(|(id, name)| cfg.wants_named(id, name))
        .map(|(id, _)| *id)
        .collect()
}

/// Whether a selected workload needs the binary.
pub fn needs_cli(cfg: &Config) -> bool {
    selected(cfg).iter().any(|w| CLI_WORKLOADS.contains(w))
}

/// Runs the selected workloads of this module, printing each section as it is done.
pub fn run(cfg: &Config) -> Vec<Section> {
    let bin = needs_cli(cfg).then(|| cli::locate(cfg.cli.as_deref()));
    let mut out = Vec::new();
    for w in selected(cfg) {
        settle();
        let s = match (w, &bin) {
            ("W8", Some(b)) => w8(cfg, b),
            ("W9", Some(b)) => w9(cfg, b),
            ("W10", Some(b)) => w10(cfg, b),
            ("W11", _) => w11(cfg),
            ("W12", _) => w12(cfg),
            _ => unreachable!("a CLI workload without the binary"),
        };
        s.print();
        out.push(s);
    }
    out
}

/// Runs `f(rep)` `reps` times, or fewer once `budget` is used up (at least once). Returns
/// how many times it ran.
fn repeat_within(reps: usize, budget: Duration, mut f: impl FnMut(usize)) -> usize {
    let t = Instant::now();
    let mut done = 0;
    while done < reps.max(1) {
        f(done);
        done += 1;
        if t.elapsed() > budget {
            break;
        }
    }
    done
}

fn reps_note(done: usize, wanted: usize) -> String {
    if done < wanted {
        format!("{done} of {wanted} runs (time budget)")
    } else if done == 1 {
        "1 run".to_owned()
    } else {
        format!("median of {done} runs")
    }
}

/// Writes `lines` to a new file `name` under `root` and returns its path: the input every
/// engine run of a workload reads, built before any clock starts.
fn input_file(root: &Path, name: &str, lines: impl Iterator<Item = String>) -> std::path::PathBuf {
    let dir = fresh_dir(root, "input");
    let path = dir.join(name);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
    for l in lines {
        std::io::Write::write_all(&mut w, l.as_bytes()).unwrap();
    }
    std::io::Write::flush(&mut w).unwrap();
    drop(w);
    remove(&dir);
    path
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The share of a run's time after its last answer: what the close waits for, the
/// projection files.
fn after_answers(r: &ApplyRun) -> String {
    match r.last_answer {
        Some(a) if !r.stopped => format!(
            "answers done at {:.2} s, exit at {:.2} s",
            secs(a),
            secs(r.total)
        ),
        Some(a) => format!(
            "{} answers by {:.2} s; stopped at the deadline ({:.0} s)",
            group(r.ok as f64),
            secs(a),
            secs(r.total)
        ),
        None => "no answer".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// W8: bulk apply into one session.

/// W8's target: per-activity time at the largest size ÷ at the smallest, at most.
const W8_SCALING: f64 = 1.5;

fn w8(cfg: &Config, bin: &Path) -> Section {
    const ID: &str = "bench-w8";
    // `COMPARE_W8_SIZES=10000,100000` runs only those sizes (while iterating; the targets
    // are about 10k to 1M).
    let sizes: Vec<u64> = match std::env::var("COMPARE_W8_SIZES") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("COMPARE_W8_SIZES: numbers, comma-separated")
            })
            .collect(),
        _ if cfg.quick => vec![1_000, 4_000],
        _ => vec![10_000, 100_000, 1_000_000],
    };
    let root = &cfg.dir;
    let mut sec = Section::new(
        "W8",
        format!(
            "bulk `apply` into one session, projections on: time per activity until `apply` exits \
             (sizes {}; a run is stopped after {} s or once it has missed the {W8_SCALING}× \
             target, whichever is later)",
            sizes
                .iter()
                .map(|n| group(*n as f64))
                .collect::<Vec<_>>()
                .join(", "),
            cfg.deadline.as_secs()
        ),
    );
    let modes = [cli::Durability::Always, cli::Durability::None];
    // What every run pays whatever its size: start the process, open and create the data
    // directory, commit one command, close.
    let mut startup = Vec::new();
    let one = input_file(root, "w8-one.jsonl", std::iter::once(cli::create_line(ID)));
    for _ in 0..if cfg.quick { 1 } else { 3 } {
        let d = fresh_dir(root, "w8-startup");
        let run = cli::apply_file(bin, &d, modes[0], &one, cfg.deadline);
        startup.push(secs(run.total) * 1e3);
        remove(&d);
    }
    // Per size: per mode the per-activity times (µs) and whether a run was stopped; the
    // SQLite times; the paired ratios SQLite ÷ engine buffered.
    struct Size {
        n: u64,
        engine: [Vec<f64>; 2],
        stopped: [bool; 2],
        notes: [String; 2],
        sqlite: Vec<f64>,
        paired: Vec<f64>,
        done: usize,
        wanted: usize,
    }
    let mut results: Vec<Size> = Vec::new();
    for &n in &sizes {
        // Past this a run of `n` has missed the scaling target against the smallest size,
        // so stopping it then still decides the target.
        let deadline = |m: usize| match results.first() {
            Some(first) => cfg.deadline.max(Duration::from_secs_f64(
                median(&mut first.engine[m].clone()) * 1e-6 * n as f64 * W8_SCALING * 1.05,
            )),
            None => cfg.deadline,
        };
        let deadlines = [deadline(0), deadline(1)];
        let wanted = if cfg.quick || n >= 1_000_000 {
            1
        } else if n >= 100_000 {
            cfg.reps.min(3)
        } else {
            cfg.reps
        };
        eprintln!("W8: {n} activities, {wanted} runs per system");
        let input = input_file(
            root,
            "w8.jsonl",
            std::iter::once(cli::create_line(ID)).chain((0..n).map(|i| cli::activity_line(ID, i))),
        );
        let rows: Vec<String> = (0..n).map(details_text).collect();
        let mut r = Size {
            n,
            engine: [Vec::new(), Vec::new()],
            stopped: [false; 2],
            notes: [String::new(), String::new()],
            sqlite: Vec::new(),
            paired: Vec::new(),
            done: 0,
            wanted,
        };
        let done = repeat_within(wanted, Duration::from_secs(120), |rep| {
            // Three systems, the order rotating per run.
            let mut buffered = f64::NAN;
            let mut sq = f64::NAN;
            for k in 0..3 {
                match (rep + k) % 3 {
                    m @ (0 | 1) => {
                        if r.stopped[m] {
                            // Stopped at the deadline once: another run says nothing new.
                            continue;
                        }
                        let d = fresh_dir(root, "w8-engine");
                        let run = cli::apply_file(bin, &d, modes[m], &input, deadlines[m]);
                        let us = secs(run.total) * 1e6 / n as f64;
                        if run.stopped {
                            r.stopped[m] = true;
                        } else {
                            let got = cli::projected_activities(&d, ID);
                            assert_eq!(
                                got,
                                Some(n as usize),
                                "W8: the session file must hold every activity"
                            );
                        }
                        eprintln!(
                            "  engine {:?}: {us:.1} µs/activity ({})",
                            modes[m],
                            after_answers(&run)
                        );
                        r.notes[m] = after_answers(&run);
                        r.engine[m].push(us);
                        if m == 1 {
                            buffered = us;
                        }
                        remove(&d);
                        settle_after(&run);
                    }
                    _ => {
                        let d = fresh_dir(root, "w8-sqlite");
                        let db = Sqlite::open(&d.join("db.sqlite"), SqliteSync::Off);
                        let t = Instant::now();
                        for (i, details) in rows.iter().enumerate() {
                            db.insert_prepared(ID, i as u64, details);
                        }
                        sq = secs(t.elapsed()) * 1e6 / n as f64;
                        drop(db);
                        remove(&d);
                        eprintln!("  SQLite OFF: {sq:.1} µs/activity");
                        r.sqlite.push(sq);
                    }
                }
            }
            if buffered.is_finite() && sq.is_finite() {
                r.paired.push(sq / buffered);
            }
        });
        r.done = done;
        results.push(r);
    }
    let label = |m: usize| match modes[m] {
        cli::Durability::Always => "--durability always",
        cli::Durability::None => "--durability none",
    };
    let mut per_mode = [(0.0, 0.0, false); 2];
    for (m, last) in per_mode.iter_mut().enumerate() {
        let base = median(&mut results[0].engine[m].clone());
        for r in &results {
            let us = median(&mut r.engine[m].clone());
            sec.row(
                format!(
                    "engine `apply` {}, {} activities: per activity",
                    label(m),
                    group(r.n as f64)
                ),
                us,
                Unit::Us,
                Some(base / us),
            );
            let runs = if r.stopped[m] {
                "stopped at the deadline: a lower bound".to_owned()
            } else {
                format!(
                    "{}; session file checked",
                    reps_note(r.engine[m].len(), r.wanted)
                )
            };
            sec.note(format!("{runs}; last run: {}", r.notes[m]));
            *last = (base, us, r.stopped[m]);
        }
    }
    for r in &results {
        let sq = median(&mut r.sqlite.clone());
        let paired = median(&mut r.paired.clone());
        sec.row(
            format!(
                "SQLite WAL, synchronous=OFF, one txn per event, {} activities: per activity",
                group(r.n as f64)
            ),
            sq,
            Unit::Us,
            Some(paired),
        );
        sec.note(format!(
            "vs the engine with --durability none (paired); {}",
            reps_note(r.done, r.wanted)
        ));
    }
    sec.row_plain(
        "engine `apply` --durability always, one command (start, open a new directory, commit, close)",
        median(&mut startup),
        Unit::Ms,
    );
    sec.note("paid once by every run above, whatever its size");
    let (first, last) = (sizes[0], sizes[sizes.len() - 1]);
    for (m, &(base, us, stopped)) in per_mode.iter().enumerate() {
        sec.check_bounded(
            format!(
                "W8 per-activity time {}k ÷ {}k, {}",
                last / 1000,
                first / 1000,
                label(m)
            ),
            us / base,
            W8_SCALING,
            false,
            stopped || results[0].stopped[m],
        );
    }
    for r in &results {
        sec.check_bounded(
            format!(
                "W8 engine --durability none ÷ SQLite OFF one txn per event, {}k",
                r.n / 1000
            ),
            median(&mut r.paired.clone()),
            3.0,
            true,
            r.stopped[1],
        );
    }
    sec
}

/// After a run stopped at the deadline, lets the disk write back what it left before the
/// next run is timed.
fn settle_after(run: &ApplyRun) {
    if run.stopped {
        settle();
    }
}

// ---------------------------------------------------------------------------------------
// W9: many sessions through one durable apply.

/// The two orders W9 sends the same commands in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Each session created, then its activities, one session after the other.
    SessionBySession,
    /// Every session created, then one activity in each, ten times over.
    RoundRobin,
}

impl Order {
    fn label(self) -> &'static str {
        match self {
            Order::SessionBySession => "session by session",
            Order::RoundRobin => "round-robin (each round one activity in every session)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Order::SessionBySession => "session by session",
            Order::RoundRobin => "round-robin",
        }
    }

    /// The commands as (session number, activity number or `None` for the create).
    fn commands(self, sessions: u64, per: u64) -> Vec<(u64, Option<u64>)> {
        match self {
            Order::SessionBySession => (0..sessions)
                .flat_map(|s| {
                    std::iter::once((s, None)).chain((0..per).map(move |k| (s, Some(s * per + k))))
                })
                .collect(),
            Order::RoundRobin => (0..sessions)
                .map(|s| (s, None))
                .chain((0..per).flat_map(|k| (0..sessions).map(move |s| (s, Some(s * per + k)))))
                .collect(),
        }
    }
}

/// W9's target: the seeds' time ÷ the engine's, at least.
const W9_VS_SEEDS: f64 = 10.0;

fn w9_id(s: u64) -> String {
    format!("bench-w9-{s:08}")
}

fn w9(cfg: &Config, bin: &Path) -> Section {
    let sessions = cfg.n(10_000, 100);
    let per = 10u64;
    let seeds_sessions = cfg.n(200, 20);
    let events = sessions * (per + 1);
    let root = &cfg.dir;
    let wanted = if cfg.quick { 1 } else { cfg.reps.min(3) };
    let mut sec = Section::new(
        "W9",
        format!(
            "{} sessions × {per} activities through one durable `apply` (a run is stopped after \
             {} s or once it has missed the {W9_VS_SEEDS}× target, whichever is later)",
            group(sessions as f64),
            cfg.deadline.as_secs()
        ),
    );
    let orders = [Order::SessionBySession, Order::RoundRobin];
    let inputs: Vec<_> = orders
        .iter()
        .map(|o| {
            let lines = o.commands(sessions, per).into_iter().map(|(s, a)| match a {
                None => cli::create_line(&w9_id(s)),
                Some(i) => cli::activity_line(&w9_id(s), i),
            });
            input_file(root, "w9.jsonl", lines)
        })
        .collect();
    // Per order: total times (s), ack rates, mean batch, stopped; paired ratios.
    #[derive(Default)]
    struct PerOrder {
        total: Vec<f64>,
        acks: Vec<f64>,
        batch: Vec<f64>,
        sqlite: Vec<f64>,
        vs_seeds: Vec<f64>,
        vs_sqlite: Vec<f64>,
        stopped: bool,
        /// A run was stopped before every command was answered.
        acks_partial: bool,
        note: String,
    }
    let mut per_order: [PerOrder; 2] = Default::default();
    let mut seeds = Vec::new();
    let done = repeat_within(wanted, Duration::from_secs(90), |rep| {
        eprintln!("W9: run {}", rep + 1);
        // The seeds' rewrite on a part of the sessions: it costs the same per change
        // whatever the number of sessions (one small file each), and all of them would
        // take minutes.
        let sd = fresh_dir(root, "w9-seeds");
        let t = Instant::now();
        for s in 0..seeds_sessions {
            let mut j = SeedsJson::named(&sd, &w9_id(s), 0);
            for k in 0..per {
                j.record(s * per + k);
            }
        }
        let per_change = secs(t.elapsed()) / (seeds_sessions * (per + 1)) as f64;
        let seeds_total = per_change * events as f64;
        eprintln!("  seeds: {:.0} µs per change", per_change * 1e6);
        seeds.push(seeds_total);
        remove(&sd);
        for (o, order) in orders.iter().enumerate() {
            let p = &mut per_order[o];
            if p.stopped {
                continue;
            }
            let d = fresh_dir(root, "w9-engine");
            // Past this the run has missed its target against the seeds, so stopping it then
            // still decides the target.
            let deadline = cfg
                .deadline
                .max(Duration::from_secs_f64(seeds_total / W9_VS_SEEDS * 1.05));
            let run = cli::apply_file(bin, &d, cli::Durability::Always, &inputs[o], deadline);
            let scan = crate::raw::scan_log(&d.join("wal"));
            let batch = scan.records as f64 / scan.batches.max(1) as f64;
            p.acks_partial |= run.ok < events;
            if run.stopped {
                p.stopped = true;
            } else {
                for s in 0..sessions {
                    let got = cli::projected_activities(&d, &w9_id(s));
                    assert_eq!(got, Some(per as usize), "W9: session file {s} incomplete");
                }
            }
            let acks = run.ack_rate();
            eprintln!(
                "  engine, {}: {:.2} s, acks {} ev/s, {batch:.1} events per sync ({})",
                order.short(),
                secs(run.total),
                group(acks),
                after_answers(&run)
            );
            p.note = after_answers(&run);
            p.total.push(secs(run.total));
            p.acks.push(acks);
            p.batch.push(batch);
            p.vs_seeds.push(seeds_total / secs(run.total));
            remove(&d);
            settle_after(&run);

            // SQLite FULL, one transaction per batch of the size the engine's group commit
            // reached in this run, on the same commands, rows built before the clock.
            let b = batch.round().max(1.0) as usize;
            let rows: Vec<(String, u64, String)> = order
                .commands(sessions, per)
                .into_iter()
                .map(|(s, a)| {
                    let i = a.unwrap_or(u64::MAX - s);
                    (w9_id(s), i, a.map(details_text).unwrap_or_default())
                })
                .collect();
            let sq = fresh_dir(root, "w9-sqlite");
            let mut db = Sqlite::open(&sq.join("db.sqlite"), SqliteSync::Full);
            let t = Instant::now();
            for chunk in rows.chunks(b) {
                db.insert_rows(chunk);
            }
            let sq_rate = rate(events, t.elapsed());
            drop(db);
            remove(&sq);
            p.sqlite.push(sq_rate);
            p.vs_sqlite.push(acks / sq_rate);
        }
    });
    let seeds_total = median(&mut seeds);
    for (o, order) in orders.iter().enumerate() {
        let p = &per_order[o];
        let total = median(&mut p.total.clone());
        sec.row(
            format!(
                "engine `apply` --durability always, {}: until every projection file is complete",
                order.label()
            ),
            total,
            Unit::Secs,
            (o > 0).then(|| median(&mut per_order[0].total.clone()) / total),
        );
        let runs = if p.stopped {
            "stopped at the deadline: a lower bound".to_owned()
        } else {
            format!(
                "{}; every session file checked",
                reps_note(p.total.len(), wanted)
            )
        };
        sec.note(format!(
            "{runs}; {} events; last run: {}",
            group(events as f64),
            p.note
        ));
    }
    sec.row(
        format!(
            "seeds: rewrite the session's JSON file per change (temp, fsync, rename), {} changes",
            group(events as f64)
        ),
        seeds_total,
        Unit::Secs,
        Some(median(&mut per_order[0].vs_seeds.clone())),
    );
    sec.note(format!(
        "measured on {} of the sessions and scaled to all (a change costs the same per small \
         file); vs round-robin: {:.2}×; {}",
        group(seeds_sessions as f64),
        median(&mut per_order[1].vs_seeds.clone()),
        reps_note(done, wanted)
    ));
    for (o, order) in orders.iter().enumerate() {
        let p = &per_order[o];
        sec.row(
            format!(
                "engine `apply` acknowledgements, {}: commands answered per second (first answer to last)",
                order.short()
            ),
            median(&mut p.acks.clone()),
            Unit::Rate,
            None,
        );
        sec.note(format!(
            "mean group commit {:.1} events per fdatasync (counted in the log's frames, \
             docs/format.md: `stats --json` does not report it)",
            median(&mut p.batch.clone())
        ));
        sec.row(
            format!(
                "SQLite WAL FULL, one txn per batch of the engine's size, {} order",
                order.short()
            ),
            median(&mut p.sqlite.clone()),
            Unit::Rate,
            Some(median(&mut p.vs_sqlite.clone())),
        );
        sec.note("vs the acknowledgements of the row above (paired)");
    }
    for (o, order) in orders.iter().enumerate() {
        let p = &per_order[o];
        sec.check_bounded(
            format!("W9 seeds' rewrite ÷ engine, {}", order.short()),
            median(&mut p.vs_seeds.clone()),
            W9_VS_SEEDS,
            true,
            p.stopped,
        );
    }
    for (o, order) in orders.iter().enumerate() {
        let p = &per_order[o];
        sec.check_bounded(
            format!("W9 engine acks ÷ SQLite FULL batched, {}", order.short()),
            median(&mut p.vs_sqlite.clone()),
            1.0,
            true,
            p.acks_partial,
        );
    }
    sec
}

// ---------------------------------------------------------------------------------------
// W10: one line at a time through apply.

/// `apply` kept running as a child: each event is one line written to its stdin, and the
/// next is sent once its answer line is read.
struct ApplySys {
    child: Option<cli::ApplyChild>,
    _dir: Scratch,
}

const W10_ID: &str = "bench-w10";

impl ApplySys {
    fn new(root: &Path, bin: &Path) -> ApplySys {
        let dir = Scratch::new(root, "w10-apply");
        let mut child = cli::ApplyChild::start(bin, &dir.0, cli::Durability::Always);
        child.send(&cli::create_line(W10_ID));
        ApplySys {
            child: Some(child),
            _dir: dir,
        }
    }
}

impl Sys for ApplySys {
    fn name(&self) -> String {
        "engine `apply` --durability always, a child process: write one line, wait for its answer"
            .into()
    }

    fn run(&mut self, range: std::ops::Range<u64>) -> Duration {
        let lines: Vec<String> = range.map(|i| cli::activity_line(W10_ID, i)).collect();
        let child = self.child.as_mut().expect("running");
        let t = Instant::now();
        for l in &lines {
            child.send(l);
        }
        t.elapsed()
    }
}

impl Drop for ApplySys {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            c.finish();
        }
    }
}

/// Runs `f` while another thread spins, so that one CPU is busy throughout.
///
/// A diagnostic: on a loaded virtual machine, durable commits beside the projector ran
/// several times faster than the raw loop, which no commit can outrun; one candidate is
/// that a CPU left idle while its process waits for `fdatasync` is slow to run again.
/// Running a plain loop beside a spinning thread shows how much of a ratio that explains.
fn with_busy_cpu<T>(f: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let r = f();
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// Another system, run with [`with_busy_cpu`].
struct BusyCpu<S>(S);

impl<S: Sys> Sys for BusyCpu<S> {
    fn name(&self) -> String {
        format!("{}, another thread spinning (diagnostic)", self.0.name())
    }

    fn run(&mut self, range: std::ops::Range<u64>) -> Duration {
        with_busy_cpu(|| self.0.run(range))
    }
}

fn w10(cfg: &Config, bin: &Path) -> Section {
    let (warmup, rounds, chunk) = if cfg.quick {
        (0, 2, 20)
    } else {
        (1_200, cfg.reps * 4, 100)
    };
    let root = &cfg.dir;
    let cap = (warmup + (rounds as u64 + 1) * chunk) * 400;
    let mut sec = Section::new(
        "W10",
        format!(
            "one at a time, durable, through `apply` ({warmup} warm-up events, then {rounds} \
             interleaved rounds of {chunk} events per system)"
        ),
    );
    let mut sys: Vec<Box<dyn Sys>> = vec![
        Box::new(ApplySys::new(root, bin)),
        Box::new(systems::RawSys::new(
            root,
            systems::RawKind::Overwrite { batch: 1 },
            cap,
        )),
        Box::new(systems::EngineSys::new(
            root,
            "engine in process, no projections, Engine::execute() (W1's setting)",
            Durability::Always,
            1,
        )),
        Box::new(BusyCpu(systems::RawSys::new(
            root,
            systems::RawKind::Overwrite { batch: 1 },
            cap,
        ))),
    ];
    let m = systems::interleave(warmup, rounds, chunk, &mut sys);
    drop(sys);
    for (i, x) in m.iter().enumerate() {
        sec.row(
            x.name.clone(),
            x.rate,
            Unit::Rate,
            (i > 0).then_some(x.first_vs),
        );
    }
    sec.note_at(0, "projections on; the child is started before the clock");
    sec.note_at(
        3,
        format!(
            "the same raw loop, {:.2}× as fast with a CPU kept busy",
            m[1].first_vs / m[3].first_vs
        ),
    );
    sec.check(
        "W10 `apply` one at a time ÷ raw overwrite+fdatasync",
        m[1].first_vs,
        0.8,
        true,
    );
    sec.bound(format!(
        "the raw loop runs {:.2}× as fast beside a spinning thread in this run: what a busy \
         CPU alone (the projector keeps one busy) does to a durable commit here",
        m[1].first_vs / m[3].first_vs
    ));
    sec
}

// ---------------------------------------------------------------------------------------
// W11: SessionManager with projections against the bare engine, in process.

/// One of W11's systems: a way to record one durable activity.
enum InProcess {
    Manager {
        manager: SessionManager,
        session: session_engine::ClaudeSession,
    },
    Engine(Box<Engine>),
}

impl InProcess {
    fn manager(root: &Path, projections: bool) -> (InProcess, std::path::PathBuf) {
        let d = fresh_dir(root, "w11-manager");
        let mut opts = ManagerOptions::with_engine(engine_options(Durability::Always));
        if !projections {
            opts.projections = None;
        }
        let manager = SessionManager::open(&d, opts).unwrap();
        let session = manager
            .create_session(NewSession {
                id: Some(session_id(0)),
                timeout_secs: 0,
                ..NewSession::default()
            })
            .unwrap();
        (InProcess::Manager { manager, session }, d)
    }

    fn engine(root: &Path) -> (InProcess, std::path::PathBuf) {
        let d = fresh_dir(root, "w11-engine");
        let e = crate::workload::engine_with_sessions(&d, Durability::Always, 1);
        (InProcess::Engine(Box::new(e)), d)
    }

    /// Records activities `range`, one at a time, each latency in µs appended to `lat`;
    /// returns the total time. Inputs are built before the clock starts.
    fn run(&self, range: std::ops::Range<u64>, lat: &mut Vec<f64>) -> Duration {
        let mut total = Duration::ZERO;
        match self {
            InProcess::Manager { session, .. } => {
                let inputs: Vec<(u64, serde_json::Value)> = range
                    .map(|i| (i, serde_json::from_str(&details_text(i)).unwrap()))
                    .collect();
                for (i, v) in inputs {
                    let t = Instant::now();
                    session.record_activity(action(i), Some(v)).unwrap();
                    let el = t.elapsed();
                    total += el;
                    lat.push(el.as_secs_f64() * 1e6);
                }
            }
            InProcess::Engine(e) => {
                let s = session_id(0);
                let cmds: Vec<Command> = range.map(|i| activity(&s, i)).collect();
                for c in cmds {
                    let t = Instant::now();
                    e.execute(c).unwrap();
                    let el = t.elapsed();
                    total += el;
                    lat.push(el.as_secs_f64() * 1e6);
                }
            }
        }
        total
    }

    fn close(self) {
        match self {
            InProcess::Manager { manager, .. } => manager.close().unwrap(),
            InProcess::Engine(e) => e.close().unwrap(),
        }
    }
}

fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() as f64 - 1.0) * p).round() as usize;
    xs[i.min(xs.len() - 1)]
}

fn w11(cfg: &Config) -> Section {
    let (warmup, rounds, chunk) = if cfg.quick {
        (0, 2, 20)
    } else {
        (1_200, cfg.reps * 4, 100)
    };
    let root = &cfg.dir;
    let mut sec = Section::new(
        "W11",
        format!(
            "in process, one durable activity at a time: SessionManager with projections vs the \
             bare engine ({warmup} warm-up events, then {rounds} interleaved rounds of {chunk} \
             events per system)"
        ),
    );
    let names = [
        "SessionManager, projections on, ClaudeSession::record_activity()",
        "SessionManager, projections off, ClaudeSession::record_activity()",
        "bare engine, Engine::execute()",
        "bare engine, Engine::execute(), another thread spinning (diagnostic)",
    ];
    let mut systems = vec![
        InProcess::manager(root, true),
        InProcess::manager(root, false),
        InProcess::engine(root),
        InProcess::engine(root),
    ];
    // The last one runs beside a spinning thread (see `with_busy_cpu`).
    let busy = systems.len() - 1;
    let k = systems.len();
    let mut next = 0u64;
    let mut scratch = Vec::new();
    for (s, _) in &systems {
        if warmup > 0 {
            s.run(next..next + warmup, &mut scratch);
            next += warmup;
        }
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); k];
    for r in 0..rounds {
        for j in 0..k {
            let i = (j + r) % k;
            let (s, range, l) = (&systems[i].0, next..next + chunk, &mut lat[i]);
            let d = if i == busy {
                with_busy_cpu(|| s.run(range, l))
            } else {
                s.run(range, l)
            };
            next += chunk;
            rates[i].push(rate(chunk, d));
        }
    }
    for (s, d) in systems.drain(..) {
        s.close();
        remove(&d);
    }
    let paired = |i: usize| {
        let mut v: Vec<f64> = rates[0].iter().zip(&rates[i]).map(|(a, b)| a / b).collect();
        median(&mut v)
    };
    let p99: Vec<f64> = lat
        .iter()
        .map(|l| percentile(&mut l.clone(), 0.99))
        .collect();
    let p50: Vec<f64> = lat
        .iter()
        .map(|l| percentile(&mut l.clone(), 0.5))
        .collect();
    for (i, name) in names.iter().enumerate() {
        sec.row(
            format!("{name}: throughput"),
            median(&mut rates[i].clone()),
            Unit::Rate,
            (i > 0).then(|| paired(i)),
        );
    }
    sec.note_at(0, "the product as the seeds' API is used");
    for (i, name) in names.iter().enumerate() {
        sec.row(
            format!("{name}: p99 latency"),
            p99[i],
            Unit::Us,
            (i > 0).then(|| p99[i] / p99[0]),
        );
        sec.note(format!(
            "p50 {:.1} µs, max {:.0} µs, over {} commits",
            p50[i],
            lat[i].iter().copied().fold(0.0, f64::max),
            lat[i].len()
        ));
    }
    sec.check(
        "W11 SessionManager (projections on) ÷ Engine::execute, throughput",
        paired(2),
        0.9,
        true,
    );
    sec.check(
        "W11 SessionManager (projections on) ÷ Engine::execute, p99 latency",
        p99[0] / p99[2],
        1.5,
        false,
    );
    sec.bound(format!(
        "the bare engine runs {:.2}× as fast beside a spinning thread in this run (its p99 ÷ \
         {:.2}): what a busy CPU alone (the projector keeps one busy) does to a durable \
         commit here",
        paired(2) / paired(busy),
        p99[2] / p99[busy]
    ));
    sec
}

// ---------------------------------------------------------------------------------------
// W12: projection lag under a sustained writer.

/// How far the projection files trailed the log at one moment.
#[derive(Clone, Copy)]
struct Sample {
    /// Since the writer started.
    at: Duration,
    /// Events committed and not yet in the files.
    events: u64,
    /// Age of the oldest of them, ms (0 when there is none).
    age_ms: f64,
}

struct LagRun {
    written: u64,
    writing: Duration,
    samples: Vec<Sample>,
    /// From the last commit until the files reflected it; `None` past the deadline.
    catch_up: Option<Duration>,
    /// What `close()` took after that (it waits for the files to be complete).
    close: Duration,
}

/// A writer records up to `max` activities into one session as fast as it can (stopping
/// after `max_time`), one `record_activity` at a time, while a sampler reads
/// `SessionManager::projection_status()` every `every`.
fn lag_run(
    root: &Path,
    durability: Durability,
    max: u64,
    max_time: Duration,
    every: Duration,
    deadline: Duration,
) -> LagRun {
    let d = fresh_dir(root, "w12");
    let manager =
        SessionManager::open(&d, ManagerOptions::with_engine(engine_options(durability))).unwrap();
    let session = manager
        .create_session(NewSession {
            id: Some(session_id(0)),
            timeout_secs: 0,
            ..NewSession::default()
        })
        .unwrap();
    manager.flush_projections().unwrap();
    // When each LSN was committed (ns since the start, 0: not yet), indexed by LSN.
    let first = manager.last_lsn().0 + 1;
    let committed_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..first + max + 1).map(|_| AtomicU64::new(0)).collect());
    let done = AtomicBool::new(false);
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut written = 0u64;
    let mut writing = Duration::ZERO;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while i < max && t0.elapsed() < max_time {
                let v: serde_json::Value = serde_json::from_str(&details_text(i)).unwrap();
                let lsn = session.record_activity(action(i), Some(v)).unwrap();
                let ns = t0.elapsed().as_nanos() as u64 + 1;
                if let Some(slot) = committed_at.get(lsn.0 as usize) {
                    slot.store(ns, Ordering::Release);
                }
                i += 1;
            }
            written = i;
            writing = t0.elapsed();
            done.store(true, Ordering::Release);
        });
        while !done.load(Ordering::Acquire) {
            let committed = manager.last_lsn().0;
            let projected = manager.projection_status().map_or(0, |st| st.projected.0);
            let events = committed.saturating_sub(projected);
            let now = t0.elapsed();
            let age_ms = if events == 0 {
                0.0
            } else {
                let at = committed_at
                    .get(projected as usize + 1)
                    .map_or(0, |a| a.load(Ordering::Acquire));
                if at == 0 {
                    0.0
                } else {
                    (now.as_nanos() as u64).saturating_sub(at) as f64 / 1e6
                }
            };
            samples.push(Sample {
                at: now,
                events,
                age_ms,
            });
            std::thread::sleep(every);
        }
    });
    let t = Instant::now();
    let caught = manager
        .wait_for_projections(manager.last_lsn(), Some(deadline))
        .unwrap();
    let catch_up = caught.then(|| t.elapsed());
    let t = Instant::now();
    manager.close().unwrap();
    let close = t.elapsed();
    drop(session);
    remove(&d);
    LagRun {
        written,
        writing,
        samples,
        catch_up,
        close,
    }
}

fn w12(cfg: &Config) -> Section {
    let every = Duration::from_millis(2);
    let root = &cfg.dir;
    let runs = [
        (
            "buffered (Durability::None)",
            Durability::None,
            cfg.n(1_000_000, 20_000),
            Duration::from_secs(if cfg.quick { 2 } else { 10 }),
        ),
        (
            "durable (Durability::Always)",
            Durability::Always,
            cfg.n(1_000_000, 1_000_000),
            Duration::from_millis(if cfg.quick { 300 } else { 10_000 }),
        ),
    ];
    let mut sec = Section::new(
        "W12",
        format!(
            "projection lag under a sustained writer: SessionManager, one session, \
             record_activity() at full speed; projection_status() sampled every {} ms (1 run each)",
            every.as_millis()
        ),
    );
    for (label, durability, max, max_time) in runs {
        eprintln!("W12: {label}");
        settle();
        let r = lag_run(root, durability, max, max_time, every, cfg.deadline);
        let mut ev: Vec<f64> = r.samples.iter().map(|s| s.events as f64).collect();
        let mut age: Vec<f64> = r.samples.iter().map(|s| s.age_ms).collect();
        let half = r.writing / 2;
        let mut age_first: Vec<f64> = r
            .samples
            .iter()
            .filter(|s| s.at < half)
            .map(|s| s.age_ms)
            .collect();
        let mut age_second: Vec<f64> = r
            .samples
            .iter()
            .filter(|s| s.at >= half)
            .map(|s| s.age_ms)
            .collect();
        let max_ev = ev.iter().copied().fold(0.0, f64::max);
        let max_age = age.iter().copied().fold(0.0, f64::max);
        let p99_ev = percentile(&mut ev, 0.99);
        let p99_age = percentile(&mut age, 0.99);
        let (a1, a2) = (
            percentile(&mut age_first, 0.99),
            percentile(&mut age_second, 0.99),
        );
        sec.row_plain(
            format!("{label}: writer, activities per second"),
            rate(r.written, r.writing),
            Unit::Rate,
        );
        sec.note(format!(
            "{} activities in {:.1} s; {} samples",
            group(r.written as f64),
            secs(r.writing),
            r.samples.len()
        ));
        sec.row_plain(format!("{label}: lag, p99"), p99_ev, Unit::Events);
        sec.row_plain(format!("{label}: lag, max"), max_ev, Unit::Events);
        sec.row_plain(
            format!("{label}: age of the oldest unprojected event, p99"),
            p99_age,
            Unit::Ms,
        );
        sec.note(format!(
            "p99 over the first half of the run {a1:.1} ms, over the second half {a2:.1} ms"
        ));
        sec.row_plain(
            format!("{label}: age of the oldest unprojected event, max"),
            max_age,
            Unit::Ms,
        );
        match r.catch_up {
            Some(c) => {
                sec.row_plain(
                    format!("{label}: catch-up after the last commit"),
                    secs(c) * 1e3,
                    Unit::Ms,
                );
                sec.note("until projection_status() says every file reflects the last event");
            }
            None => {
                sec.row_plain(
                    format!("{label}: catch-up after the last commit"),
                    secs(cfg.deadline) * 1e3,
                    Unit::Ms,
                );
                sec.note(format!(
                    "not caught up at the deadline: a lower bound; close() then took {:.1} s",
                    secs(r.close)
                ));
            }
        }
        sec.bound(format!(
            "{label}: with {} activities written in {:.1} s, the files trailed the log by at \
             most {} events and {max_age:.0} ms (p99 {} events, {p99_age:.0} ms; p99 age \
             {a1:.0} ms in the first half of the run, {a2:.0} ms in the second)",
            group(r.written as f64),
            secs(r.writing),
            group(max_ev),
            group(p99_ev)
        ));
    }
    sec
}
