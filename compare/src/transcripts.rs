//! W14 and W15: Claude Code transcripts (issue 16), through the library as `claude
//! import` and `claude search` use it, projections on.
//!
//! The transcripts are generated here, seeded (the same bytes every run), in the shapes
//! Claude Code writes (`user` tool results, `assistant` messages with usage, `progress`
//! records, each with `uuid`, `parentUuid`, `sessionId`, `cwd`, `timestamp`), their text
//! drawn from a vocabulary of 4,096 made-up words with a skewed (Zipf-like) frequency,
//! spread over 64 sessions in 4 project folders.
//!
//! * W14 `claude-import`: `import_paths` into a fresh data directory (durable, projections
//!   on) against the floor: reading the same files and parsing every line with
//!   `serde_json` into a `Value`, nothing else. MiB/s, median of the rounds, paired
//!   ratios.
//! * W15 `claude-search`: about 1 GiB imported once, then `search` for a rare word (in
//!   about one record of 5,000), a common one, two words, and a common word in one
//!   session: the first search (which brings the search index up to date with the log)
//!   and the median of the next ones, against reading the same bytes from the page
//!   cache.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use session_engine::claude::import::import_paths;
use session_engine::claude::search::{SearchQuery, search};
use session_engine::{Durability, FileStorage, ManagerOptions, SessionManager};

use crate::workload::{engine_options, fresh_dir, median, remove};
use crate::{Config, Section, Unit};

const SESSIONS: u64 = 64;
const PROJECTS: u64 = 4;
const VOCABULARY: u64 = 4096;

/// xorshift64*: small, seeded, the same numbers on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

/// Word `i` of the vocabulary: letters only, 3 to 10 of them.
fn word(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let len = 3 + (i % 8);
    (0..len)
        .map(|_| {
            x ^= x >> 13;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A word drawn with a skewed frequency: low indexes are common, high ones rare.
fn skewed(rng: &mut Rng) -> u64 {
    let r = rng.below(VOCABULARY) + 1;
    (r * r) / VOCABULARY % VOCABULARY
}

/// A word in about one record of [`NEEDLE_EVERY`] (no word of the vocabulary is that
/// rare: the skewed draw never gives some high indexes and gives the others thousands of
/// times in a GiB).
const NEEDLE: &str = "zqxneedle";
const NEEDLE_EVERY: u64 = 5000;

fn text(rng: &mut Rng, words: u64) -> String {
    let mut s = String::new();
    if rng.below(NEEDLE_EVERY) == 0 {
        s.push_str(NEEDLE);
        s.push(' ');
    }
    for k in 0..words {
        if k > 0 {
            s.push(if k % 13 == 0 { '\n' } else { ' ' });
        }
        s.push_str(&word(skewed(rng)));
    }
    s
}

/// Writes about `mib` MiB of transcripts under `dir`; returns their bytes.
fn generate(dir: &Path, mib: u64) -> u64 {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let target = mib * 1024 * 1024;
    let per_session = target / SESSIONS;
    let mut total = 0;
    for s in 0..SESSIONS {
        let project = format!("-home-dev-proj{}", s % PROJECTS);
        let cwd = format!("/home/dev/proj{}", s % PROJECTS);
        let sid = rng.uuid();
        let folder = dir.join(&project);
        std::fs::create_dir_all(&folder).expect("mkdir");
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(folder.join(format!("{sid}.jsonl"))).expect("create"),
        );
        let (mut parent, mut n, mut size) = (serde_json::Value::Null, 0u64, 0u64);
        while size < per_session {
            let uuid = rng.uuid();
            let kind = ["user", "assistant", "assistant", "progress"][rng.below(4) as usize];
            let mut rec = serde_json::json!({
                "parentUuid": parent, "isSidechain": false, "userType": "external",
                "cwd": cwd, "sessionId": sid, "version": "2.0.74", "gitBranch": "main",
                "type": kind, "uuid": uuid,
                "timestamp": format!("2025-12-{:02}T{:02}:{:02}:{:02}.000Z",
                    1 + s % 28, n / 3600 % 24, n / 60 % 60, n % 60),
            });
            match kind {
                "assistant" => {
                    let words = 20 + rng.below(400);
                    rec["message"] = serde_json::json!({
                        "id": format!("msg_{s}_{}", n / 2), "type": "message",
                        "role": "assistant", "model": "claude-opus-4-5",
                        "content": [{"type": "text", "text": text(&mut rng, words)}],
                        "usage": {"input_tokens": 10, "output_tokens": 200,
                                  "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 5000},
                    });
                }
                "user" => {
                    let words = 10 + rng.below(300);
                    rec["message"] = serde_json::json!({
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": format!("toolu_{n}"),
                                     "content": text(&mut rng, words)}],
                    });
                }
                _ => {
                    let words = 2 + rng.below(30);
                    rec["data"] = serde_json::json!({"type": "bash_progress",
                                                     "output": text(&mut rng, words)});
                }
            }
            let mut line = serde_json::to_vec(&rec).expect("json");
            line.push(b'\n');
            out.write_all(&line).expect("write");
            size += line.len() as u64;
            n += 1;
            parent = serde_json::Value::String(uuid);
        }
        out.flush().expect("flush");
        total += size;
    }
    total
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for p in std::fs::read_dir(dir).expect("list") {
        let p = p.expect("entry").path();
        for f in std::fs::read_dir(&p).expect("list") {
            v.push(f.expect("entry").path());
        }
    }
    v.sort();
    v
}

/// The floor: every file read and every line parsed into a `serde_json::Value`.
fn parse_all(paths: &[PathBuf]) -> u64 {
    let mut records = 0;
    for p in paths {
        let bytes = std::fs::read(p).expect("read");
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).expect("parse");
            records += u64::from(v.is_object());
        }
    }
    records
}

fn manager(root: &Path, name: &str, durability: Durability) -> (PathBuf, SessionManager) {
    let d = fresh_dir(root, name);
    let m = SessionManager::open(&d, ManagerOptions::with_engine(engine_options(durability)))
        .expect("open manager");
    (d, m)
}

fn import(m: &SessionManager, src: &Path) -> u64 {
    let run = import_paths(m.engine(), &FileStorage::new(), &[src.to_path_buf()]);
    assert!(
        run.failed.is_empty() && run.found.unreadable.is_empty(),
        "import failed: {:?}",
        run.to_json()
    );
    m.flush_projections().expect("projections");
    run.files.iter().map(|f| f.lines).sum()
}

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9)
}

pub fn w14(cfg: &Config) -> Section {
    let rounds = cfg.n(3, 1) as usize;
    let mib = cfg.n(256, 4);
    let src = fresh_dir(&cfg.dir, "w14-transcripts");
    let bytes = generate(&src, mib);
    let paths = files(&src);
    let mut sec = Section::new(
        "W14",
        format!(
            "`claude import` of {:.0} MiB in {} transcripts (generated, seeded), {rounds} \
             rounds, against reading and parsing the same lines with serde_json",
            bytes as f64 / 1048576.0,
            paths.len()
        ),
    );
    parse_all(&paths); // warm the page cache
    let (mut floor, mut durable, mut buffered) = (Vec::new(), Vec::new(), Vec::new());
    let mut lines = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let records = parse_all(&paths);
        floor.push(mib_per_s(bytes, t.elapsed().as_secs_f64()));
        for (durability, out) in [
            (Durability::Always, &mut durable),
            (Durability::None, &mut buffered),
        ] {
            let (d, m) = manager(&cfg.dir, "w14-engine", durability);
            let t = Instant::now();
            lines = import(&m, &src);
            m.close().expect("close");
            out.push(mib_per_s(bytes, t.elapsed().as_secs_f64()));
            assert_eq!(lines, records, "every record imported");
            remove(&d);
        }
    }
    let paired = |e: &[f64]| {
        let mut v: Vec<f64> = e.iter().zip(&floor).map(|(a, b)| a / b).collect();
        median(&mut v)
    };
    let durable_mibs = median(&mut durable.clone());
    sec.row(
        "engine `import_paths`, durable (Always), projections on",
        durable_mibs,
        Unit::MiBps,
        Some(paired(&durable)),
    );
    sec.note(format!(
        "{lines} records, each kept byte for byte; ratio: of the floor"
    ));
    sec.row(
        "engine `import_paths`, buffered (None), projections on",
        median(&mut buffered.clone()),
        Unit::MiBps,
        Some(paired(&buffered)),
    );
    sec.row(
        "floor: read + `serde_json::from_slice::<Value>` per line",
        median(&mut floor),
        Unit::MiBps,
        None,
    );
    remove(&src);
    sec
}

pub fn w15(cfg: &Config) -> Section {
    let mib = cfg.n(1024, 8);
    let reps = cfg.n(5, 2) as usize;
    let src = fresh_dir(&cfg.dir, "w15-transcripts");
    let bytes = generate(&src, mib);
    let paths = files(&src);
    let (d, m) = manager(&cfg.dir, "w15-engine", Durability::None);
    let t = Instant::now();
    import(&m, &src);
    m.engine().sync().expect("sync");
    let import_s = t.elapsed().as_secs_f64();
    let mut sec = Section::new(
        "W15",
        format!(
            "`claude search` over {:.0} MiB of transcripts ({} files) imported once \
             ({import_s:.1} s buffered); first search, then the median of {reps}",
            bytes as f64 / 1048576.0,
            paths.len()
        ),
    );
    // A rare word, a common one, two words, one session.
    let rare = NEEDLE.to_string();
    let common = word(0);
    let two = format!("{} {}", word(1), word(5));
    let session = paths[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("name")
        .to_owned();
    let queries = [
        ("rare word", rare, None),
        ("common word", common.clone(), None),
        ("two words", two, None),
        ("common word, one session", common, Some(session)),
    ];
    let mut first = true;
    for (what, text, session) in queries {
        let q = SearchQuery {
            text,
            session,
            limit: 20,
            ..SearchQuery::default()
        };
        let t = Instant::now();
        let r = search(m.engine(), &q).expect("search");
        let first_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let again = search(m.engine(), &q).expect("search");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(again.total, r.total);
        }
        sec.row_plain(format!("search: {what}"), median(&mut times), Unit::Ms);
        sec.note(format!(
            "{} hits; first search {first_ms:.0} ms{}",
            r.total,
            if first {
                " (the first of the run: builds the search index from the log)"
            } else {
                ""
            }
        ));
        first = false;
    }
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let mut n = 0u64;
        for p in &paths {
            n += std::fs::read(p).expect("read").len() as u64;
        }
        assert_eq!(n, bytes);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    sec.row_plain(
        "reference: reading the same bytes (page cache)",
        median(&mut times),
        Unit::Ms,
    );
    m.close().expect("close");
    remove(&d);
    remove(&src);
    sec
}
