//! Kill loop: the real binary's `apply` with durable answers, killed with SIGKILL at random
//! moments, reopened, and checked: every answered command survived, and what survived is a
//! prefix of what was sent.
//!
//! `KILL_ROUNDS` (default 200) sets the number of rounds.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use session_engine::storage::SplitMix64;
use session_engine::{Engine, Options, SessionId};

const BIN: &str = env!("CARGO_BIN_EXE_session-engine");

fn rounds() -> u64 {
    std::env::var("KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

#[test]
fn sigkill_never_loses_an_acknowledged_command() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut rng = SplitMix64::new(0x5eed);
    let sid = SessionId::new("victim").unwrap();
    // Every action ever sent, in order; the log must hold a prefix of it that includes
    // every acknowledged one.
    let mut sent: Vec<String> = Vec::new();
    let mut acked_total = 0usize;
    let mut kills_mid_stream = 0u64;
    let mut created = false;
    let rounds = rounds();
    for round in 0..rounds {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(&data)
            .arg("apply")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let first_line = !created;
        let lines_this_round = 1 + rng.below(400) as usize;
        let start = sent.len();
        let mut batch = String::new();
        if first_line {
            batch.push_str(r#"{"op":"create","id":"victim","timeout":0}"#);
            batch.push('\n');
        }
        for i in 0..lines_this_round {
            let action = format!("r{round}-{i}");
            batch.push_str(&format!(
                r#"{{"op":"activity","id":"victim","action":"{action}","details":{{"pad":"{}"}}}}"#,
                "x".repeat(rng.below(300) as usize)
            ));
            batch.push('\n');
            sent.push(action);
        }
        // Answers are read on another thread while we decide when to kill.
        let acked = Arc::new(AtomicUsize::new(0));
        let reader = {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut line = String::new();
                let mut n = 0usize;
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    assert!(line.contains(r#""ok":true"#), "refused: {line}");
                    n += 1;
                    acked.store(n, Ordering::SeqCst);
                    line.clear();
                }
            })
        };
        let writer = std::thread::spawn(move || {
            // The child may die mid-write; a broken pipe is expected then.
            let _ = stdin.write_all(batch.as_bytes());
            let _ = stdin.flush();
            stdin
        });
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        drop(writer.join().unwrap());
        reader.join().unwrap();
        let answered = acked.load(Ordering::SeqCst);
        let answered_activities = answered.saturating_sub(usize::from(first_line));
        if answered_activities < lines_this_round {
            kills_mid_stream += 1;
        }
        acked_total += answered_activities;

        // Reopen as the next run would (cutting a torn tail) and check.
        let engine = Engine::open(
            &data,
            Options {
                watchdog_interval: None,
                ..Options::default()
            },
        )
        .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let state = engine.state();
        if first_line && answered == 0 && state.session(&sid).is_none() {
            // Killed before even the create was durable: start over.
            sent.truncate(start);
            engine.close().unwrap();
            drop(engine);
            std::fs::remove_dir_all(&data).ok();
            continue;
        }
        let session = state
            .session(&sid)
            .unwrap_or_else(|| panic!("round {round}: session lost"));
        created = true;
        let log: Vec<String> = session
            .body
            .activity_log
            .iter()
            .map(|a| a.action.to_string())
            .collect();
        assert!(
            log.len() >= start + answered_activities,
            "round {round}: {} activities survived but {} were acknowledged",
            log.len(),
            start + answered_activities
        );
        assert!(
            log.len() <= sent.len(),
            "round {round}: more activities than sent"
        );
        assert_eq!(
            log[..],
            sent[..log.len()],
            "round {round}: not a prefix of what was sent"
        );
        // What was sent but not written is forgotten; the next round continues from here.
        sent.truncate(log.len());
        engine.close().unwrap();
    }
    assert!(
        kills_mid_stream > rounds / 4,
        "only {kills_mid_stream} of {rounds} kills landed mid-stream: the test is not testing"
    );
    eprintln!(
        "kill loop: {rounds} rounds, {kills_mid_stream} killed mid-stream, {acked_total} \
         acknowledged activities, all present"
    );
}
