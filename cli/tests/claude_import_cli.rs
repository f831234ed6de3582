//! `session-engine claude import`, `export`, `follow` and `show`, and `chain --link
//! --projects` / `chain --summary`, run as a user runs them (the library's side is in
//! `tests/claude_import.rs`).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/claude")
        .join(rel)
}

fn cmd(data: &Path) -> Process {
    let mut p = Process::new(BIN);
    p.arg("--data-dir")
        .arg(data)
        .env_remove("SESSION_ENGINE_DIR")
        .env_remove("SESSION_ENGINE_CLAUDE_PROJECTS");
    p
}

fn run(data: &Path, args: &[&str]) -> Output {
    cmd(data).args(args).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn show(data: &Path, id: &str) -> Value {
    let o = run(data, &["claude", "show", id]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn complete_prefix(bytes: &[u8]) -> &[u8] {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &[],
    }
}

#[test]
fn import_then_export_gives_every_fixture_back_and_says_what_it_found() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let paths = [fixture("real"), fixture("generated")];
    let o = cmd(&data)
        .args(["--json", "claude", "import"])
        .args(&paths)
        .output()
        .unwrap();
    // bad_middle.jsonl and invalid_utf8.jsonl hold lines that are not records.
    assert_eq!(code(&o), 7, "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("bad_middle.jsonl:3: invalid JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalid_utf8.jsonl:2: invalid UTF-8"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = report["files"].as_array().unwrap();
    assert!(files.len() >= 15);
    for f in files {
        let path = PathBuf::from(f["path"].as_str().unwrap());
        let session = f["session"].as_str().unwrap();
        let original = std::fs::read(&path).unwrap();
        let out = run(&data, &["claude", "export", session]);
        assert_eq!(code(&out), 0);
        assert!(
            out.stdout == complete_prefix(&original),
            "{} does not export back as imported",
            path.display()
        );
        if original.ends_with(b"\n") || original.is_empty() {
            // Written to a file with -o, too.
            let file = dir.path().join(format!("{session}.out"));
            let o = run(
                &data,
                &["claude", "export", session, "-o", file.to_str().unwrap()],
            );
            assert_eq!(code(&o), 0);
            assert_eq!(std::fs::read(&file).unwrap(), original);
            let again = run(
                &data,
                &["claude", "export", session, file.to_str().unwrap()],
            );
            assert_ne!(code(&again), 0, "an existing file is never replaced");
            assert_eq!(std::fs::read(&file).unwrap(), original);
        }
    }
    // A second import finds nothing new: exit 0 would need no bad lines, and none is new.
    let o = cmd(&data)
        .args(["--json", "claude", "import"])
        .args(&paths)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let again: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        again["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["bytes"] == 0 && f["lines"] == 0)
    );
    let s = show(&data, "agent-a434715");
    assert_eq!(s["links"][0]["kind"], "subagent_of");
    assert_eq!(
        s["links"][0]["session"],
        "b3edadab-bca0-4054-9b41-f7ffa6941260"
    );
    // Not a transcript: not found.
    assert_eq!(code(&run(&data, &["claude", "export", "nope"])), 3);
}

#[test]
fn a_rewritten_file_exits_10_and_is_imported_as_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("s1.jsonl");
    std::fs::write(&file, b"{\"type\":\"user\",\"uuid\":\"a\"}\n").unwrap();
    let f = file.to_str().unwrap();
    assert_eq!(code(&run(&data, &["claude", "import", f])), 0);
    std::fs::write(&file, b"{\"type\":\"user\",\"uuid\":\"b\"}\n").unwrap();
    let o = run(&data, &["claude", "import", f]);
    assert_eq!(code(&o), 10, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("new version, session s1.v2"));
    assert_eq!(
        run(&data, &["claude", "export", "s1"]).stdout,
        b"{\"type\":\"user\",\"uuid\":\"a\"}\n"
    );
    assert_eq!(
        run(&data, &["claude", "export", "s1.v2"]).stdout,
        b"{\"type\":\"user\",\"uuid\":\"b\"}\n"
    );
    assert_eq!(show(&data, "s1")["replaced_by"], "s1.v2");
    // A path that does not exist: 3, nothing else happens.
    assert_eq!(
        code(&run(&data, &["claude", "import", "/nonexistent/x.jsonl"])),
        3
    );
}

#[test]
fn chain_link_checks_the_transcript_when_a_projects_folder_is_given_and_summary_prints_seed_003s_fields()
 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let projects = dir.path().join("projects");
    std::fs::create_dir_all(projects.join("-home-dev-proj")).unwrap();
    std::fs::write(
        projects.join("-home-dev-proj/good.jsonl"),
        b"{\"type\":\"user\"}\n",
    )
    .unwrap();
    std::fs::write(
        projects.join("-home-dev-proj/bad.jsonl"),
        b"{\"type\":\n{}\n",
    )
    .unwrap();
    let p = projects.to_str().unwrap();
    let link = |id: &str, with: bool| {
        let mut a = vec![
            "chain",
            "ag",
            "--link",
            id,
            "--prompt",
            "p",
            "--response",
            "r",
        ];
        if with {
            a.extend(["--projects", p]);
        }
        run(&data, &a)
    };
    assert_eq!(code(&link("missing", true)), 3, "no transcript: not linked");
    let bad = link("bad", true);
    assert_eq!(code(&bad), 4, "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad lines"));
    assert_eq!(code(&link("../x", true)), 4);
    let summary = |data: &Path| -> Value {
        let o = run(data, &["chain", "ag", "--summary"]);
        assert_eq!(code(&o), 0);
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(
        summary(&data),
        serde_json::json!({"agent_id": "ag", "total_sessions": 0, "total_interactions": 0})
    );
    assert_eq!(code(&link("good", true)), 0);
    assert_eq!(
        code(&link("unchecked", false)),
        0,
        "without a projects folder, as before"
    );
    assert_eq!(
        summary(&data),
        serde_json::json!({
            "agent_id": "ag", "total_sessions": 2, "total_interactions": 2,
            "first_session": "good", "current_session": "unchecked",
            "session_ids": ["good", "unchecked"],
        })
    );
    // Given by the environment too.
    let o = cmd(&data)
        .env("SESSION_ENGINE_CLAUDE_PROJECTS", &projects)
        .args([
            "chain",
            "ag",
            "--link",
            "missing2",
            "--prompt",
            "p",
            "--response",
            "r",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3);
    assert_eq!(summary(&data)["total_sessions"], 2);
}

/// A tiny deterministic generator (no timing depends on it being random).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn follow_killed_with_sigkill_again_and_again_loses_and_doubles_nothing() {
    const ROUNDS: u32 = 10;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let project = dir.path().join("projects/-home-dev-proj");
    std::fs::create_dir_all(&project).unwrap();
    let file = project.join("0d3b22c1-ba90-4fd3-b8d2-056ffc626725.jsonl");
    std::fs::write(&file, b"").unwrap();
    // The writer appends lines as Claude Code does, each in two writes (so the follower
    // sees half lines), with pauses.
    // It goes on until the kill loop has had its rounds (so every round kills a follower
    // while lines are coming), and says how many lines it wrote.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let file = file.clone();
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut rng = Lcg(7);
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let line = format!(
                    "{{\"type\":\"user\",\"uuid\":\"u{i}\",\"sessionId\":\"0d3b22c1\",\"message\":{{\"content\":\"{}\"}}}}\n",
                    "x".repeat(rng.below(400) as usize)
                );
                let cut = 1 + rng.below(line.len() as u64 - 1) as usize;
                f.write_all(&line.as_bytes()[..cut]).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_micros(rng.below(3000)));
                f.write_all(&line.as_bytes()[cut..]).unwrap();
                f.flush().unwrap();
                if i.is_multiple_of(10) {
                    std::thread::sleep(Duration::from_millis(rng.below(100)));
                }
                i += 1;
            }
            i
        })
    };
    let mut rng = Lcg(42);
    let mut rounds = 0;
    let mut last_imported = 0u64;
    let mut advanced = 0;
    while rounds < ROUNDS {
        let mut child = cmd(&data)
            .args(["claude", "follow", "--interval-ms", "10"])
            .arg(dir.path().join("projects"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Every other round, while lines are still coming, wait until this follower has
        // imported something (it prints a line per file with new lines), then kill it a
        // little later, most likely in the middle of its next batch; the other rounds kill
        // at a random moment, often before it has done anything.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        if !rounds.is_multiple_of(2) {
            let _ = rx.recv_timeout(Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(rng.below(40)));
        } else {
            std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        rounds += 1;
        let o = run(
            &data,
            &["claude", "show", "0d3b22c1-ba90-4fd3-b8d2-056ffc626725"],
        );
        if code(&o) == 0 {
            let s: Value = serde_json::from_slice(&o.stdout).unwrap();
            let now = s["imported_bytes"].as_u64().unwrap();
            assert!(now >= last_imported, "imported bytes went back");
            // What is imported is always a prefix of the file, in whole lines.
            let on_disk = std::fs::read(&file).unwrap();
            let exported = run(
                &data,
                &["claude", "export", "0d3b22c1-ba90-4fd3-b8d2-056ffc626725"],
            );
            assert_eq!(exported.stdout.len() as u64, now);
            assert!(
                on_disk.starts_with(&exported.stdout),
                "round {rounds}: not a prefix"
            );
            assert!(exported.stdout.is_empty() || exported.stdout.ends_with(b"\n"));
            if now > last_imported {
                advanced += 1;
            }
            last_imported = now;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let lines = writer.join().unwrap();
    // One last import picks up what the last follower did not get to.
    let o = run(
        &data,
        &[
            "claude",
            "import",
            dir.path().join("projects").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let exported = run(
        &data,
        &["claude", "export", "0d3b22c1-ba90-4fd3-b8d2-056ffc626725"],
    );
    assert!(
        exported.stdout == std::fs::read(&file).unwrap(),
        "lost or doubled lines"
    );
    let s = show(&data, "0d3b22c1-ba90-4fd3-b8d2-056ffc626725");
    assert_eq!(s["lines"], lines);
    assert_eq!(s["records"], lines);
    assert_eq!(s["version"], 1, "never taken for a rewritten file");
    assert!(advanced >= 1, "no follower ever imported anything");
    eprintln!(
        "follow kill loop: {rounds} SIGKILLs, {advanced} rounds imported new lines, {lines} lines"
    );
}

/// Two sessions of one project, the second resumed from the first.
fn resumed(projects: &Path) {
    let p = projects.join("-home-dev-proj");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("aaaa.jsonl"),
        concat!(
            r#"{"type":"user","uuid":"a1","parentUuid":null,"sessionId":"aaaa","cwd":"/home/dev/proj","timestamp":"2026-01-01T10:00:00Z","message":{"role":"user","content":"Where is the Needle?"}}"#,
            "\n",
            r#"{"type":"assistant","uuid":"a2","parentUuid":"a1","sessionId":"aaaa","timestamp":"2026-01-01T10:00:05Z","message":{"role":"assistant","content":[{"type":"text","text":"In the haystack, needle\tand all."}]}}"#,
            "\n"
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("bbbb.jsonl"),
        concat!(
            r#"{"type":"user","uuid":"b1","parentUuid":"a2","sessionId":"bbbb","cwd":"/home/dev/proj","timestamp":"2026-01-02T10:00:00Z","message":{"role":"user","content":"more needles"}}"#,
            "\n"
        ),
    )
    .unwrap();
}

#[test]
fn search_prints_hits_and_import_links_resumed_sessions_into_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let projects = dir.path().join("projects");
    resumed(&projects);
    let o = run(&data, &["claude", "import", projects.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("chain claude-aaaa: bbbb continues aaaa (resumed)"),
        "{stdout}"
    );
    let o = run(&data, &["chain", "claude-aaaa", "--summary"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["session_ids"], serde_json::json!(["aaaa", "bbbb"]));
    assert_eq!(summary["current_session"], "bbbb");
    // Search, plain text: best first (the shorter text), one line per hit; a word, not
    // a substring ("needles" is another word).
    let o = run(&data, &["claude", "search", "NEEDLE"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "aaaa:1 2026-01-01T10:00:00.000000Z user a1: Where is the Needle?",
            "aaaa:2 2026-01-01T10:00:05.000000Z assistant a2: In the haystack, needle and all.",
        ]
    );
    let o = run(
        &data,
        &[
            "--json",
            "claude",
            "search",
            "needle",
            "--session",
            "aaaa",
            "--type",
            "user",
        ],
    );
    assert_eq!(code(&o), 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["hits"][0]["uuid"], "a1");
    assert_eq!(v["hits"][0]["line"], 1);
    assert_eq!(v["hits"][0]["session"], "aaaa");
    let o = run(&data, &["claude", "search", "needle", "--limit", "1"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("(2 matches in all"));
    // Nothing found: 3; a bad --since: 4.
    assert_eq!(code(&run(&data, &["claude", "search", "absent words"])), 3);
    assert_eq!(
        code(&run(&data, &["claude", "search", "x", "--since", "later"])),
        4
    );
    // The same through apply.
    let mut child = cmd(&data)
        .arg("apply")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            concat!(
                r#"{"op":"claude_search","query":"needles","since":"2026-01-02"}"#,
                "\n",
                r#"{"op":"claude_show","id":"bbbb"}"#,
                "\n",
                r#"{"op":"claude_search","query":""}"#,
                "\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0]["total"], 1, "{}", answers[0]);
    assert_eq!(answers[0]["hits"][0]["uuid"], "b1");
    assert!(
        answers[0]["hits"][0]["score"].as_f64().is_some(),
        "{}",
        answers[0]
    );
    assert_eq!(answers[1]["transcript"]["continues"], "aaaa");
    assert_eq!(answers[2]["kind"], "invalid_input");
}

#[test]
fn top_level_search_ranks_with_scores_and_keeps_its_index_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let projects = dir.path().join("projects");
    resumed(&projects);
    let o = run(
        &data,
        &["claude", "import", "--no-index", projects.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!data.join("index").exists(), "--no-index made an index");
    let o = run(&data, &["--json", "search", "needle"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total"], 2, "{v}");
    assert_eq!(v["indexed"], 3, "built from the log: {v}");
    assert!(v["rebuilt"].as_str().unwrap().contains("missing"), "{v}");
    let hits = v["hits"].as_array().unwrap();
    let uuids: Vec<&str> = hits.iter().map(|h| h["uuid"].as_str().unwrap()).collect();
    assert_eq!(uuids, ["a1", "a2"]);
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores[0] > scores[1], "{scores:?}");
    assert!(data.join("index/claude-search.sqlite").is_file());
    // The same as `claude search`, the index now current.
    let o = run(
        &data,
        &[
            "--json",
            "claude",
            "search",
            "needle",
            "--since",
            "2026-01-01T10:00:01Z",
        ],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["total"].clone(), v["indexed"].clone()),
        (1.into(), 0.into()),
        "{v}"
    );
    assert_eq!(v["hits"][0]["uuid"], "a2");
    // FTS5 syntax is text; an empty query is invalid input (4).
    assert_eq!(code(&run(&data, &["search", "NEAR(needle*"])), 3);
    assert_eq!(code(&run(&data, &["search", "\"needle\""])), 0);
    assert_eq!(code(&run(&data, &["search", " "])), 4);
    // A file of another tool at the index path: refused (9), left as it was.
    let file = data.join("index/claude-search.sqlite");
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_file(data.join("index/claude-search.owner")).unwrap();
    std::fs::write(&file, b"not ours").unwrap();
    let o = run(&data, &["search", "needle"]);
    assert_eq!(code(&o), 9, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&file).unwrap(), b"not ours");
}

#[test]
fn search_killed_with_sigkill_mid_catch_up_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("projects/-home-dev-proj/kkkk.jsonl");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut records = 0u64;
    let mut add = |n: u64| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap();
        for _ in 0..n {
            records += 1;
            let line = serde_json::json!({
                "type": "user", "uuid": format!("u{records}"), "sessionId": "kkkk",
                "timestamp": "2026-01-01T10:00:00Z",
                "message": {"role": "user", "content": format!("alpha beta {records} gamma")},
            });
            writeln!(f, "{line}").unwrap();
        }
        records
    };
    let import = |data: &Path| {
        let o = run(
            data,
            &[
                "--durability",
                "none",
                "claude",
                "import",
                "--no-index",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    };
    let search = |data: &Path| -> Value {
        let o = run(data, &["--json", "search", "alpha", "--limit", "5"]);
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    add(500);
    import(&data);
    assert_eq!(search(&data)["indexed"], 500);
    // Each round: more records in the log than in the index, a search killed after a
    // growing delay (before, during or after its catch-up), then a search that must find
    // every record once.
    let mut before = 500;
    // (A debug build opens the engine in about half a second, then indexes.)
    for (round, delay_ms) in [0u64, 350, 500, 650, 800, 1000, 1300]
        .into_iter()
        .enumerate()
    {
        let total = add(3000);
        import(&data);
        let mut child = cmd(&data)
            .args(["--json", "search", "alpha"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let journal = data.join("index/claude-search.sqlite-journal").exists();
        let v = search(&data);
        eprintln!(
            "round {round}: journal left {journal}, then indexed {}",
            v["indexed"]
        );
        assert_eq!(v["total"], total, "round {round}: {v}");
        let indexed = v["indexed"].as_u64().unwrap();
        assert!(
            indexed == 0 || indexed == total - before || v["rebuilt"].is_string(),
            "round {round}: all of the new records or none: {v}"
        );
        before = total;
    }
    // The same hits as an index built from nothing.
    let kept = search(&data);
    std::fs::remove_dir_all(data.join("index")).unwrap();
    let fresh = search(&data);
    assert!(fresh["rebuilt"].is_string());
    assert_eq!(fresh["hits"], kept["hits"]);
    assert_eq!(fresh["total"], kept["total"]);
}

/// `search --json QUERY`'s answer.
fn search_json(data: &Path, query: &str) -> Value {
    let o = run(data, &["--json", "search", query]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn import_brings_the_search_index_up_to_date_and_a_failure_to_is_only_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let projects = dir.path().join("projects");
    resumed(&projects);
    let o = run(&data, &["claude", "import", projects.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(data.join("index/claude-search.sqlite").is_file());
    // The search finds the index current: nothing rebuilt, no record to add.
    let v = search_json(&data, "needle");
    assert_eq!(v["total"], 2, "{v}");
    assert_eq!(v["rebuilt"], Value::Null, "{v}");
    assert_eq!(
        (v["indexed"].as_u64(), v["events"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    // A later import catches the index up with its own events only.
    let p = projects.join("-home-dev-proj/cccc.jsonl");
    std::fs::write(
        &p,
        concat!(
            r#"{"type":"user","uuid":"c1","sessionId":"cccc","cwd":"/home/dev/proj","timestamp":"2026-01-03T10:00:00Z","message":{"role":"user","content":"a needle again"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let o = run(&data, &["claude", "import", p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let v = search_json(&data, "needle");
    assert_eq!(v["total"], 3, "{v}");
    assert_eq!(
        (v["indexed"].as_u64(), v["rebuilt"].clone()),
        (Some(0), Value::Null),
        "{v}"
    );
    // The index cannot be written (another tool's file where its folder goes): the
    // import succeeds all the same and says so.
    let data2 = dir.path().join("data2");
    std::fs::create_dir_all(&data2).unwrap();
    let o = run(&data2, &["create", "--id", "x"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(data2.join("index"), b"not ours").unwrap();
    let o = run(&data2, &["claude", "import", projects.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), 0, "{stderr}");
    assert!(
        stderr.contains("warning: the search index was not brought up to date"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(data2.join("index")).unwrap(), b"not ours");
    assert_eq!(show(&data2, "cccc")["lines"], 1);
}

#[test]
fn follow_keeps_the_search_index_up_to_date() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let projects = dir.path().join("projects");
    resumed(&projects);
    let mut follow = cmd(&data)
        .args(["--json", "claude", "follow", "--interval-ms", "20"])
        .arg(&projects)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    // The first poll's answer (the index is brought up to date after it) ...
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("aaaa"), "{first}");
    // ... and the next one's, printed only once that is done.
    let p = projects.join("-home-dev-proj/cccc.jsonl");
    std::fs::write(
        &p,
        concat!(
            r#"{"type":"user","uuid":"c1","sessionId":"cccc","cwd":"/home/dev/proj","timestamp":"2026-01-03T10:00:00Z","message":{"role":"user","content":"a needle again"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let second = lines.next().unwrap().unwrap();
    assert!(second.contains("cccc"), "{second}");
    follow.kill().unwrap();
    follow.wait().unwrap();
    let v = search_json(&data, "needle");
    assert_eq!(v["total"], 3, "{v}");
    assert_eq!(
        v["rebuilt"],
        Value::Null,
        "the first search built the index: {v}"
    );
    // At most the second poll's record was left for it.
    assert!(v["indexed"].as_u64().unwrap() <= 1, "{v}");
}
