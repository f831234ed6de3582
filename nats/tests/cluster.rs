//! The engine on a three-node JetStream cluster (stream replicas 3): a node killed with
//! SIGKILL while the engine writes loses nothing acknowledged and the writes go on; with
//! two nodes killed, writes fail with a clear error within the time limit, and after the
//! restart every acknowledged command is there, once, in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use session_engine::{Engine, Error, Lsn};

const SESSIONS: [&str; 4] = ["s0", "s.1", "s2", "s3"];

/// The index of the node that leads the stream now.
fn leader(c: &Cluster, stream: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let servers = c.servers();
    rt.block_on(async {
        for _ in 0..100 {
            if let Ok(client) = async_nats::connect(servers.clone()).await {
                let js = async_nats::jetstream::new(client);
                if let Ok(mut s) = js.get_stream(stream).await
                    && let Ok(info) = s.info().await
                    && let Some(name) = info.cluster.as_ref().and_then(|c| c.leader.clone())
                {
                    return name.trim_start_matches('n').parse().unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the stream {stream} has no leader");
    })
}

/// The activities of each session, in log order.
fn activities(e: &Engine) -> BTreeMap<String, Vec<String>> {
    let state = e.state();
    SESSIONS
        .iter()
        .map(|s| {
            let acts = state
                .session(&sid(s))
                .map(|x| {
                    x.body
                        .activity_log
                        .iter()
                        .map(|a| a.action.to_string())
                        .collect()
                })
                .unwrap_or_default();
            (s.to_string(), acts)
        })
        .collect()
}

/// Every acknowledged action is in its session exactly once, each writer's in the order
/// it wrote them (actions are `<writer>-<i>`; two writers' commands in one batch are
/// acknowledged together, so their order between writers is the log's to choose);
/// `maybe` (commands answered with an error) may be there at most once; nothing else is.
fn check(found: &BTreeMap<String, Vec<String>>, acked: &[(String, String)], maybe: &[String]) {
    for s in SESSIONS {
        let got = &found[s];
        let mut want: Vec<&String> = acked
            .iter()
            .filter(|(x, _)| x == s)
            .map(|(_, a)| a)
            .collect();
        let mut kept: Vec<&String> = got.iter().filter(|a| !maybe.contains(a)).collect();
        for writer in ["w0-", "w1-", "a"] {
            let order = |v: &[&String]| -> Vec<u64> {
                v.iter()
                    .filter_map(|a| a.strip_prefix(writer))
                    .map(|i| i.parse().unwrap())
                    .collect()
            };
            let seen = order(&kept);
            assert!(
                seen.is_sorted(),
                "session {s}: {writer} out of order: {seen:?}"
            );
        }
        kept.sort();
        want.sort();
        assert_eq!(
            kept, want,
            "session {s}: not exactly the acknowledged commands"
        );
        for m in maybe {
            assert!(got.iter().filter(|a| *a == m).count() <= 1, "{m} twice");
        }
    }
}

#[test]
fn a_killed_node_loses_nothing_acknowledged_and_the_writes_go_on() {
    let Some(mut c) = Cluster::three() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let log = c.log("c3", 3, Duration::from_secs(30));
    let e = Arc::new(Engine::open(root.path().join("a"), options(&log)).unwrap());
    for s in SESSIONS {
        e.execute(create_cmd(s)).unwrap();
    }
    // Two writer threads; each acknowledged command is reported on the channel.
    let (tx, rx) = mpsc::channel::<(String, String)>();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let e = Arc::clone(&e);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    let s = SESSIONS[(i + w) % SESSIONS.len()];
                    let a = format!("w{w}-{i}");
                    e.execute(activity_cmd(s, &a))
                        .unwrap_or_else(|err| panic!("{a}: {err}"));
                    tx.send((s.to_string(), a)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut acked = Vec::new();
    // Kill the stream's leader after 40 acknowledgements, and the new leader after 140
    // (after restarting the first): every write must go on through the elections.
    let mut killed = None;
    while let Ok(x) = rx.recv() {
        acked.push(x);
        if acked.len() == 40 {
            let l = leader(&c, "SE_c3");
            c.kill(l);
            killed = Some(l);
        }
        if acked.len() == 140 {
            c.restart(killed.unwrap());
            let l = leader(&c, "SE_c3");
            c.kill(l);
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(acked.len(), 300);
    eprintln!(
        "publishes sent again after a lost acknowledgement: {}",
        log.retries()
    );
    assert_eq!(e.last_lsn(), Lsn(304));
    let written = activities(&e);
    check(&written, &acked, &[]);
    e.close().unwrap();
    drop(e);
    // A fresh node (nothing local) reads the same from the two servers left.
    let e = Engine::open(
        root.path().join("b"),
        options(&c.log("c3", 3, Duration::from_secs(30))),
    )
    .unwrap();
    assert_eq!(activities(&e), written);
    assert_eq!(e.last_lsn(), Lsn(304));
}

#[test]
fn without_a_quorum_writes_fail_clearly_and_nothing_acknowledged_is_lost() {
    let Some(mut c) = Cluster::three() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let e = Engine::open(
        root.path().join("a"),
        options(&c.log("q", 3, Duration::from_secs(4))),
    )
    .unwrap();
    let mut acked = Vec::new();
    for s in SESSIONS {
        e.execute(create_cmd(s)).unwrap();
    }
    for i in 0..20 {
        let s = SESSIONS[i % SESSIONS.len()];
        let a = format!("a{i}");
        e.execute(activity_cmd(s, &a)).unwrap();
        acked.push((s.to_string(), a));
    }
    // Two of three nodes die: the one left is a minority.
    let l = leader(&c, "SE_q");
    let other = (l + 1) % 3;
    c.kill(l);
    c.kill(other);
    let err = e.execute(activity_cmd("s0", "in-minority")).unwrap_err();
    assert!(matches!(err, Error::LogUnavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("not acknowledged"), "{err}");
    // Poisoned from then on.
    assert!(e.execute(activity_cmd("s0", "later")).is_err());
    drop(e);
    // A node opening now gets a clear error too, not a hang.
    let err = Engine::open(
        root.path().join("b"),
        options(&c.log("q", 3, Duration::from_secs(3))),
    )
    .unwrap_err();
    assert!(matches!(err, Error::LogUnavailable { .. }), "{err:?}");
    // After the restart, everything acknowledged is there (the refused command perhaps,
    // at most once), and writes go on.
    c.restart(l);
    c.restart(other);
    let e = Engine::open(
        root.path().join("c"),
        options(&c.log("q", 3, Duration::from_secs(30))),
    )
    .unwrap();
    check(&activities(&e), &acked, &["in-minority".to_string()]);
    e.execute(activity_cmd("s0", "after-restart")).unwrap();
    assert_eq!(activities(&e)["s0"].last().unwrap(), "after-restart");
}
