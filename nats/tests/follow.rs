//! Catching up in place: an engine takes in the records another writer appended to the
//! stream without reopening (`Engine::catch_up`), its subscribers receive them like its
//! own commits, a damaged or foreign record is an error that changes nothing, and a
//! following node (`Node::open_following`) is kept current with no `refresh`, while two
//! nodes writing the same sessions at once lose nothing and apply nothing twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use session_engine::{Engine, Error, Event, Lsn};
use session_engine_nats::Node;

const T: Duration = Duration::from_secs(10);
/// How long a condition may take to become true before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `cond` holds, checking it every few milliseconds; fails after [`DEADLINE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every event of the log, in order.
fn events(e: &Engine) -> Vec<(Lsn, Event)> {
    let mut out = Vec::new();
    e.read_log(Lsn(1), e.last_lsn(), |lsn, ev| {
        out.push((lsn, ev));
        Ok(true)
    })
    .unwrap();
    out
}

/// Publishes a raw message on `subject` (with message id `id`, if any) to the server.
fn publish_raw(c: &Cluster, subject: &str, id: Option<&str>, payload: &'static [u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(c.servers()[0].as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut msg =
            async_nats::jetstream::message::PublishMessage::build().payload(payload.into());
        if let Some(id) = id {
            msg = msg.message_id(id);
        }
        js.send_publish(subject.to_string(), msg)
            .await
            .unwrap()
            .await
            .unwrap();
    });
}

#[test]
fn an_engine_catches_up_in_place_and_its_subscribers_receive_the_other_writers_records() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    let a = Engine::open(root.path().join("a"), options(&c.log("inplace", 1, T))).unwrap();
    let b = Engine::open(root.path().join("b"), options(&c.log("inplace", 1, T))).unwrap();
    let mut sub = b.subscribe(Lsn(1));
    a.execute(create_cmd("s")).unwrap();
    for i in 0..10 {
        a.execute(activity_cmd("s", &format!("a{i}"))).unwrap();
    }
    assert_eq!(b.last_lsn(), Lsn::ZERO);
    assert_eq!(b.catch_up().unwrap(), Lsn(11));
    assert_eq!(*b.state(), *a.state());
    assert_eq!(b.stats().caught_up, 11);
    // Nothing more to take in: the same LSN again.
    assert_eq!(b.catch_up().unwrap(), Lsn(11));
    // The subscriber received A's records, in order, as they are in the log.
    let want = events(&a);
    for (lsn, ev) in &want {
        let got = sub.recv_timeout(DEADLINE).unwrap().expect("an event");
        assert_eq!((got.lsn, &*got.event), (*lsn, ev));
    }
    // B writes after them with no conflict, and its subscriber gets its own record next.
    b.execute(activity_cmd("s", "from-b")).unwrap();
    assert_eq!(b.stats().conflicts, 0);
    assert_eq!(sub.recv_timeout(DEADLINE).unwrap().unwrap().lsn, Lsn(12));
    assert_eq!(a.catch_up().unwrap(), Lsn(12));
    assert_eq!(*a.state(), *b.state());
    // A fresh replay of the stream gives the same state.
    let fresh = Engine::open(root.path().join("c"), options(&c.log("inplace", 1, T))).unwrap();
    assert_eq!(*fresh.state(), *a.state());
    // A file log has one writer: nothing to take in, the last LSN.
    let dir = tempfile::tempdir().unwrap();
    let f = Engine::open(dir.path(), session_engine::Options::default()).unwrap();
    f.execute(create_cmd("f")).unwrap();
    assert_eq!(f.catch_up().unwrap(), Lsn(1));
}

#[test]
fn a_damaged_or_foreign_record_stops_a_catch_up_and_changes_nothing() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    for (ds, id) in [
        // An engine's message id, a payload that is no record.
        ("damaged", Some("damaged:2:0123456789abcdef")),
        // Another program's message.
        ("foreign", None),
    ] {
        let e = Engine::open(root.path().join(ds), options(&c.log(ds, 1, T))).unwrap();
        e.execute(create_cmd("s")).unwrap();
        let before = e.state();
        publish_raw(&c, &format!("se.{ds}.x"), id, b"not a record");
        let err = e.catch_up().unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }), "{ds}: {err:?}");
        assert!(err.to_string().contains("nats://"), "{ds}: {err}");
        assert_eq!(*e.state(), *before, "{ds}");
        assert_eq!(e.stats().caught_up, 0, "{ds}");
        // The engine is not poisoned; its next append conflicts (the stream is past it).
        assert!(e.poisoned().is_none(), "{ds}");
        let err = e.execute(activity_cmd("s", "x")).unwrap_err();
        assert!(matches!(err, Error::LogConflict { .. }), "{ds}: {err:?}");
    }
}

#[test]
fn a_following_node_sees_another_nodes_writes_without_a_refresh() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    let la = c.log("follow", 1, T);
    let lb = c.log("follow", 1, T);
    let a = Node::open(root.path().join("a"), options(&la), &la).unwrap();
    let b = Node::open_following(root.path().join("b"), options(&lb), &lb).unwrap();
    a.execute(create_cmd("s")).unwrap();
    for round in 0..5 {
        for i in 0..4 {
            a.execute(activity_cmd("s", &format!("r{round}-{i}")))
                .unwrap();
        }
        let want = a.last_lsn();
        wait_until("B reaches A's LSN", || b.last_lsn() == want);
        assert_eq!(*b.state().unwrap(), *a.state().unwrap(), "round {round}");
    }
    assert!(b.catch_ups() > 0);
    assert_eq!(b.reopens(), 0);
    assert!(b.follow_error().is_none(), "{:?}", b.follow_error());
    // B writes after what it followed: no conflict.
    b.execute(activity_cmd("s", "from-b")).unwrap();
    assert_eq!(b.conflicts(), 0);
    // Dropping the node stops its follower and closes its engine: the directory is free.
    drop(b);
    let b = Node::open(root.path().join("b"), options(&lb), &lb).unwrap();
    assert_eq!(b.last_lsn(), Lsn(22));
}

#[test]
fn a_subscription_on_a_following_node_receives_the_other_nodes_events() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    let la = c.log("fsub", 1, T);
    let lb = c.log("fsub", 1, T);
    let a = Node::open(root.path().join("a"), options(&la), &la).unwrap();
    let b = Node::open_following(root.path().join("b"), options(&lb), &lb).unwrap();
    let mut sub = b.subscribe(Lsn(1)).unwrap();
    a.execute(create_cmd("s")).unwrap();
    for i in 0..30 {
        a.execute(activity_cmd("s", &format!("a{i}"))).unwrap();
    }
    let fresh = Engine::open(root.path().join("c"), options(&c.log("fsub", 1, T))).unwrap();
    for (lsn, ev) in events(&fresh) {
        let got = sub.recv_timeout(DEADLINE).unwrap().expect("an event");
        assert_eq!((got.lsn, &*got.event), (lsn, &ev));
    }
    b.execute(activity_cmd("s", "from-b")).unwrap();
    let got = sub.recv_timeout(DEADLINE).unwrap().unwrap();
    assert_eq!(got.lsn, Lsn(32));
}

#[test]
fn two_following_nodes_writing_the_same_sessions_at_once_catch_up_in_place() {
    let Some(c) = Cluster::single() else { return };
    let root = tempfile::tempdir().unwrap();
    const SESSIONS: [&str; 3] = ["s0", "s1", "s2"];
    let nodes: Vec<Arc<Node>> = ["a", "b"]
        .iter()
        .map(|n| {
            let log = c.log("both", 1, T);
            Arc::new(Node::open_following(root.path().join(n), options(&log), &log).unwrap())
        })
        .collect();
    nodes[0].execute(create_cmd("s0")).unwrap();
    nodes[1].execute(create_cmd("s1")).unwrap();
    nodes[0].execute(create_cmd("s2")).unwrap();
    // Two threads per node, each recording activities into every session.
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let node = Arc::clone(&nodes[w % 2]);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut acked = Vec::new();
                for i in 0..45 {
                    let s = SESSIONS[i % SESSIONS.len()];
                    let a = format!("w{w}-{i}");
                    node.execute(activity_cmd(s, &a)).unwrap();
                    acked.push((s.to_string(), a));
                }
                acked
            })
        })
        .collect();
    let acked: Vec<Vec<(String, String)>> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let log = c.log("both", 1, T);
    let last = log.last_sequence().unwrap();
    assert_eq!(last, 3 + 4 * 45);
    // Both followers reach the stream's end with no refresh.
    for (i, n) in nodes.iter().enumerate() {
        wait_until("a node reaches the stream's end", || n.last_lsn().0 == last);
        eprintln!(
            "node {i}: conflicts {}, in-place catch-ups {}, reopens {}",
            n.conflicts(),
            n.catch_ups(),
            n.reopens()
        );
        // Every conflict was resolved in place: nothing was reopened.
        assert_eq!(n.reopens(), 0, "node {i}");
        assert!(n.conflicts() == 0 || n.catch_ups() > 0, "node {i}");
    }
    let fresh = Engine::open(root.path().join("fresh"), options(&log)).unwrap();
    let state = fresh.state();
    // Every acknowledged activity exactly once, each writer's in its order, nothing else.
    let mut found: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in SESSIONS {
        found.insert(
            s,
            state
                .session(&sid(s))
                .unwrap()
                .body
                .activity_log
                .iter()
                .map(|a| a.action.to_string())
                .collect(),
        );
    }
    for (w, mine) in acked.iter().enumerate() {
        for s in SESSIONS {
            let want: Vec<&String> = mine
                .iter()
                .filter(|(x, _)| x == s)
                .map(|(_, a)| a)
                .collect();
            let got: Vec<&String> = found[s]
                .iter()
                .filter(|a| a.starts_with(&format!("w{w}-")))
                .collect();
            assert_eq!(got, want, "writer {w}, session {s}");
        }
    }
    let total: usize = found.values().map(Vec::len).sum();
    assert_eq!(total, acked.iter().map(Vec::len).sum::<usize>());
    // Each node's state is the fresh replay's.
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(*n.state().unwrap(), *state, "node {i}");
    }
}
