//! An engine node killed with SIGKILL mid-write, again and again, while another node
//! writes into the same sessions: every acknowledged command is in the stream exactly
//! once, each writer's in its order, and a command the killed node had in flight is there
//! at most once.
//!
//! The killed node is this test binary run again as a child process
//! (`a_node_process_that_writes_until_killed`, which does nothing unless
//! `SE_NATS_CHILD_URL` is set): a `Node` on the stream that prints `@@try <session> <action>`
//! before each command and `@@ok <session> <action>` once it is acknowledged.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use session_engine::Engine;
use session_engine_nats::{NatsLog, NatsOptions, Node};

const T: Duration = Duration::from_secs(10);
const SESSIONS: [&str; 2] = ["s0", "s1"];
const ROUNDS: usize = 6;

#[test]
fn a_node_process_that_writes_until_killed() {
    let (Ok(url), Ok(dir), Ok(round)) = (
        std::env::var("SE_NATS_CHILD_URL"),
        std::env::var("SE_NATS_CHILD_DIR"),
        std::env::var("SE_NATS_CHILD_ROUND"),
    ) else {
        return;
    };
    let mut o = NatsOptions::parse(&url).unwrap();
    o.timeout = T;
    let log = NatsLog::new(o).unwrap();
    let node = Node::open(&dir, options(&log), &log).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let s = SESSIONS[i % SESSIONS.len()];
        let a = format!("k{round}-{i}");
        writeln!(out, "@@try {s} {a}").unwrap();
        out.flush().unwrap();
        // A node that lost the race for the stream `MAX_ATTEMPTS` times in a row gives
        // the conflict back (nothing of it stored): this one tries again, a few times.
        let mut lost = 0;
        loop {
            match node.execute(activity_cmd(s, &a)) {
                Ok(_) => break,
                Err(session_engine::Error::LogConflict { .. }) if lost < 20 => lost += 1,
                Err(e) => panic!("{a}: {e}"),
            }
        }
        writeln!(out, "@@ok {s} {a}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_node_killed_mid_write_again_and_again_loses_nothing_acknowledged() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    let url = format!("nats://{}/killed", c.servers()[0]);
    let log = c.log("killed", 1, T);
    let other =
        Arc::new(Node::open_following(root.path().join("other"), options(&log), &log).unwrap());
    for s in SESSIONS {
        other.execute(create_cmd(s)).unwrap();
    }
    // The other node writes all along.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (node, stop) = (Arc::clone(&other), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let s = SESSIONS[i % SESSIONS.len()];
                let a = format!("p-{i}");
                node.execute(activity_cmd(s, &a)).unwrap();
                acked.push((s.to_string(), a));
                i += 1;
                // A node writing back to back with no pause would win nearly every race
                // for the stream (the other's catch-up takes longer than its next
                // append): its pace here is a busy node's, not a synchronisation.
                std::thread::sleep(Duration::from_millis(1));
            }
            acked
        })
    };
    let exe = std::env::current_exe().unwrap();
    let mut child_acked: Vec<(String, String)> = Vec::new();
    let mut in_flight: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "a_node_process_that_writes_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SE_NATS_CHILD_URL", &url)
            .env("SE_NATS_CHILD_DIR", root.path().join("killed"))
            .env("SE_NATS_CHILD_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(root.path().join(format!("child{round}.err"))).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Killed after a number of acknowledgements that differs from round to round,
        // most likely while its next command is in flight.
        let kill_after = 3 + round * 4;
        let mut oks = 0;
        let mut tried: Vec<(String, String)> = Vec::new();
        let mut record = |line: &str, tried: &mut Vec<(String, String)>| -> bool {
            // libtest may have begun the line ("test ... "): the marker starts ours.
            let Some(at) = line.find("@@") else {
                return false;
            };
            let mut parts = line[at + 2..].splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("try"), Some(s), Some(a)) => tried.push((s.into(), a.into())),
                (Some("ok"), Some(s), Some(a)) => {
                    let last = tried.pop().unwrap();
                    assert_eq!(last, (s.to_string(), a.to_string()));
                    child_acked.push(last);
                    return true;
                }
                _ => {}
            }
            false
        };
        for line in lines.by_ref() {
            if record(&line.unwrap(), &mut tried) {
                oks += 1;
                if oks == kill_after {
                    break;
                }
            }
        }
        assert_eq!(
            oks,
            kill_after,
            "round {round}: the child ended early: {}",
            std::fs::read_to_string(root.path().join(format!("child{round}.err"))).unwrap()
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // What it wrote before it died.
        for line in lines {
            record(&line.unwrap(), &mut tried);
        }
        assert!(tried.len() <= 1, "{tried:?}");
        in_flight.extend(tried.into_iter().map(|(_, a)| a));
    }
    stop.store(true, Ordering::SeqCst);
    let other_acked = writer.join().unwrap();
    let fresh = Engine::open(root.path().join("fresh"), options(&log)).unwrap();
    let state = fresh.state();
    let maybe: HashSet<&String> = in_flight.iter().collect();
    for s in SESSIONS {
        let found: Vec<String> = state
            .session(&sid(s))
            .unwrap()
            .body
            .activity_log
            .iter()
            .map(|a| a.action.to_string())
            .collect();
        for (who, acked) in [("k", &child_acked), ("p", &other_acked)] {
            let want: Vec<&String> = acked
                .iter()
                .filter(|(x, _)| x == s)
                .map(|(_, a)| a)
                .collect();
            let got: Vec<&String> = found
                .iter()
                .filter(|a| a.starts_with(who) && !maybe.contains(a))
                .collect();
            // Exactly once each, in its writer's order, and nothing unacknowledged but
            // the commands in flight at a kill.
            assert_eq!(got, want, "{who} in {s}");
        }
        for a in &in_flight {
            assert!(found.iter().filter(|f| *f == a).count() <= 1, "{a} twice");
        }
    }
    eprintln!(
        "child acknowledged {}, in flight at a kill {}, other node acknowledged {} \
         (conflicts {}, catch-ups {}, reopens {})",
        child_acked.len(),
        in_flight.len(),
        other_acked.len(),
        other.conflicts(),
        other.catch_ups(),
        other.reopens()
    );
    // The other node, following, ends up with the fresh replay's state.
    let last = fresh.last_lsn();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while other.last_lsn() < last {
        assert!(
            std::time::Instant::now() < deadline,
            "the other node did not follow"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(*other.state().unwrap(), *state);
}
